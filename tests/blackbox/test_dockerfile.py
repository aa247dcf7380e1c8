"""The Dockerfile: its shape; its install steps, entrypoint, CMD and HEALTHCHECK replayed in a fresh venv; and
the image itself built and run where a Docker engine answers (this machine has none: that test says so)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
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


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in instructions("ENV"):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def healthcheck_command() -> list[str]:
    text = instructions("HEALTHCHECK")[0]
    return list(json.loads(text[text.index("CMD") + 3 :]))


def test_dockerfile_shape() -> None:
    assert instructions("FROM")[0].startswith("python:3.11-slim")
    assert instructions("USER") == ["geolb"]
    runs = " ".join(instructions("RUN"))
    assert "setcap" not in runs and "libcap" not in runs  # no capability on the interpreter: 5353 needs none
    assert set(instructions("EXPOSE")[0].split()) == {"5353/udp", "5353/tcp", "8053"}
    assert json.loads(instructions("VOLUME")[0]) == ["/zones", "/geoip", "/var/cache/geolb"]
    assert not any(copy.split()[-1] == "/zones" for copy in instructions("COPY"))  # no demo zones to fall back on
    cmd = json.loads(instructions("CMD")[0])
    assert "0.0.0.0:5353" in cmd and "[::]:5353" in cmd  # IPv4 and IPv6
    assert "--http" not in cmd  # the address comes from GEOLB_HTTP, which the HEALTHCHECK reads too
    assert image_env()["GEOLB_HTTP"] == "0.0.0.0:8053"
    assert "GEOLB_HTTP" in " ".join(healthcheck_command()) and "8053" not in " ".join(healthcheck_command())


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's files, as far as they come from this repository: COPY replayed, `pip install .` in a venv at
    ROOT/venv (its bin/ stands for the image's PATH)."""
    root = tmp_path_factory.mktemp("image")
    workdir = root / "src"
    for copy in instructions("COPY"):
        *sources, target = copy.split()
        dest = root / target.lstrip("/") if target.startswith("/") else workdir / target
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, dest, dirs_exist_ok=True)
            elif len(sources) == 1 and not target.endswith("/"):
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest)
            else:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(workdir)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    yield root


def container_env(root: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **image_env(), **extra}
    env["PATH"] = f"{root / 'venv' / 'bin'}:{root / 'usr' / 'local' / 'bin'}:{os.environ['PATH']}"
    env["GEOLB_CACHE_DIR"] = str(root / "cache")
    return env


def entrypoint(root: Path) -> list[str]:
    (command,) = json.loads(instructions("ENTRYPOINT")[0])
    return [str(root / "usr" / "local" / "bin" / command)]


def cmd_with(zones: Path) -> list[str]:
    """The default CMD on this machine: the zones directory given, loopback and free ports for 0.0.0.0/[::]:5353."""
    cmd = [str(zones) if arg == "/zones" else arg for arg in json.loads(instructions("CMD")[0])]
    return [arg.replace("0.0.0.0:5353", "127.0.0.1:0").replace("[::]:5353", "[::1]:0") for arg in cmd]


def test_install_entrypoint_cmd_and_healthcheck_in_a_fresh_venv(image_root: Path) -> None:
    """`pip install .` as the image does, then the entrypoint with the default CMD (your zones mounted on /zones):
    it answers on IPv4 and IPv6, and the HEALTHCHECK, reading the same GEOLB_HTTP, passes."""
    geolb = str(image_root / "venv" / "bin" / "geolb")
    assert subprocess.run([geolb, "--version"], capture_output=True, text=True, check=True).stdout.startswith("geolb ")
    zones = image_root / "zones"
    shutil.copytree(ROOT / "zones", zones, dirs_exist_ok=True)
    env = container_env(image_root, GEOLB_HTTP="127.0.0.1:0")
    proc = subprocess.Popen([*entrypoint(image_root), *cmd_with(zones)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = READY.match(line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        assert "GeoLite2-City" in line  # the bundled database came along
        addresses = match.group("dns").split()
        assert [address.rpartition(":")[0] for address in addresses] == ["127.0.0.1", "[::1]"]
        for address in addresses:
            host, _, port = address.rpartition(":")
            response = dns.query.udp(dns.message.make_query("example.com", "SOA"), host.strip("[]"), port=int(port), timeout=3)
            assert response.rcode() == dns.rcode.NOERROR
        check = subprocess.run(healthcheck_command(), env={**env, "GEOLB_HTTP": match.group("http")}, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_without_zones_mounted_the_entrypoint_exits_with_a_clear_message(image_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "zones"  # what an unmounted VOLUME is
    empty.mkdir()
    result = subprocess.run(
        [*entrypoint(image_root), *cmd_with(empty)], capture_output=True, text=True, env=container_env(image_root), timeout=30
    )
    assert result.returncode == 1
    assert f"no zone files (*.yaml) in {empty}" in result.stderr and "-v" in result.stderr
    assert "geolb ready" not in result.stdout


def docker_unavailable() -> str | None:
    """Why the image cannot be built here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker command on this machine"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"no Docker engine answers `docker info`: {reason}"
    return None


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def test_the_image_builds_and_runs_unprivileged() -> None:
    """Build the image; without zones it exits 1 and says why; with them, under --cap-drop ALL and
    no-new-privileges (Kubernetes' allowPrivilegeEscalation: false), it answers DNS and is healthy."""
    unavailable = docker_unavailable()
    if unavailable:
        pytest.skip(unavailable)
    tag = f"geolb-test:{uuid.uuid4().hex[:8]}"
    build = docker("build", "-t", tag, str(ROOT), timeout=1800)
    assert build.returncode == 0, build.stderr[-3000:]
    name = f"geolb-test-{uuid.uuid4().hex[:8]}"
    try:
        bare = docker("run", "--rm", tag)
        assert bare.returncode == 1 and "no zone files" in bare.stderr, bare.stderr
        started = docker(
            "run", "-d", "--name", name, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-p", "127.0.0.1::5353/udp", "-v", f"{ROOT / 'zones'}:/zones:ro", tag,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        port = int(docker("port", name, "5353/udp").stdout.strip().splitlines()[0].rpartition(":")[2])
        deadline = 90.0
        while deadline > 0:
            logs = docker("logs", name)
            if "geolb ready" in logs.stdout:
                break
            assert docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true", logs.stderr
            time.sleep(0.5)
            deadline -= 0.5
        response = dns.query.udp(dns.message.make_query("example.com", "SOA"), "127.0.0.1", port=port, timeout=3)
        assert response.rcode() == dns.rcode.NOERROR
        assert docker("exec", name, *healthcheck_command()).returncode == 0
    finally:
        docker("rm", "-f", name)
        docker("rmi", "-f", tag)
