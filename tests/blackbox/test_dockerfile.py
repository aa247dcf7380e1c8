"""The Dockerfile, as far as this machine (no Docker engine) can check it: its install steps in a fresh venv."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.serverproc import READY, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_dockerfile_shape() -> None:
    assert instructions("FROM")[0].startswith("python:3.11-slim")
    assert instructions("USER") == ["geolb"]
    assert set(instructions("EXPOSE")[0].split()) == {"53/udp", "53/tcp", "8053"}
    assert "/healthz" in instructions("HEALTHCHECK")[0]
    assert json.loads(instructions("VOLUME")[0]) == ["/zones", "/geoip", "/var/cache/geolb"]
    assert any("setcap cap_net_bind_service" in run for run in instructions("RUN"))


@pytest.mark.skipif(shutil.which("python3") is None, reason="no python3 on PATH")
def test_install_steps_in_a_fresh_venv(tmp_path: Path) -> None:
    """COPY what the Dockerfile copies, `pip install .` it into a new venv, and serve with its CMD."""
    src = tmp_path / "src"
    src.mkdir()
    for copy in instructions("COPY"):
        *sources, target = copy.split()
        base = tmp_path / target.lstrip("/") if target.startswith("/") else src / target  # /zones, or under WORKDIR /src
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, base, dirs_exist_ok=True)
            else:
                base.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, base)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    geolb = str(venv / "bin" / "geolb")
    assert subprocess.run([geolb, "--version"], capture_output=True, text=True, check=True).stdout.startswith("geolb ")
    zones = tmp_path / "zones"
    check = subprocess.run([geolb, "check", "--zones", str(zones)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    cmd = json.loads(instructions("CMD")[0])
    cmd = [str(zones) if arg == "/zones" else arg for arg in cmd]
    cmd = [re.sub(r":(53|8053)$", ":0", arg).replace("0.0.0.0:", "127.0.0.1:") for arg in cmd]  # loopback, free ports
    proc = subprocess.Popen([geolb, "serve", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = READY.match(line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        host, port = match.group("dns").split()[0].rsplit(":", 1)
        response = dns.query.udp(dns.message.make_query("example.com", "SOA"), host, port=int(port), timeout=3)
        assert response.rcode() == dns.rcode.NOERROR
        assert "GeoLite2-City" in line  # the bundled database came along
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
