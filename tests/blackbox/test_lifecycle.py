"""Start-up, ready line, signals and start-up errors of `geolb serve`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dns.rcode
import pytest

from tests.geomaps import CACHE
from tests.serverproc import DATA, ROOT, geolb_command, start_server


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_zero(sig: int) -> None:
    server = start_server()
    assert server.query("mail.example.com", "A").rcode() == dns.rcode.NOERROR
    assert server.stop(sig) == 0
    assert "Traceback" not in server.stderr()


def test_ready_line_names_every_listener() -> None:
    server = start_server(listen=("127.0.0.1:0", "[::1]:0"))
    try:
        assert [host for host, _ in server.dns] == ["127.0.0.1", "::1"]
        assert all(port > 0 for _, port in server.dns)
        assert server.http is not None and server.http.startswith("127.0.0.1:")
    finally:
        server.stop()


def run_serve(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GEOLB_CACHE_DIR": str(CACHE)}  # the test run's cache, not the user's (maps, serials)
    return subprocess.run(geolb_command("serve", *args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_invalid_zone_at_start_up_names_file_and_line(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "bad.example.yaml").write_text(
        "nameservers:\n  ns1.bad.example.: [192.0.2.1]\nrecords:\n  www:\n    - {type: A, value: 300.1.1.1}\n"
    )
    result = run_serve("--zones", str(zones), "--listen", "127.0.0.1:0", "--http", "off")
    assert result.returncode != 0
    assert f"{zones / 'bad.example.yaml'}:5:" in result.stderr
    assert "300.1.1.1" in result.stderr
    assert "geolb ready" not in result.stdout


def test_missing_geoip_database_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "GeoIP2-City.mmdb"
    result = run_serve("--zones", str(DATA / "zones"), "--geoip", str(missing), "--listen", "127.0.0.1:0", "--http", "off")
    assert result.returncode != 0
    assert str(missing) in result.stderr


def test_corrupt_geoip_database_names_the_path() -> None:
    broken = DATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
    result = run_serve("--zones", str(DATA / "zones"), "--geoip", str(broken), "--listen", "127.0.0.1:0", "--http", "off")
    assert result.returncode != 0
    assert str(broken) in result.stderr


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_serve("--zones", str(DATA / "zones"), "--listen", f"127.0.0.1:{port}", "--http", "off")
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_zones_directory_is_an_error(tmp_path: Path) -> None:
    result = run_serve("--zones", str(tmp_path / "absent"), "--listen", "127.0.0.1:0", "--http", "off")
    assert result.returncode != 0
    assert str(tmp_path / "absent") in result.stderr


def test_demo_zones_load(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "zones", tmp_path / "zones")
    server = start_server(tmp_path / "zones")
    try:
        response = server.query("example.com", "SOA")
        assert response.rcode() == dns.rcode.NOERROR
        assert server.query("www.example.com", "A").answer
    finally:
        assert server.stop() == 0


def test_dns_is_answered_by_workers_while_the_main_process_is_frozen() -> None:
    """The prober, the API and reloads live in the main process; DNS in its workers (even with
    --workers 1), so nothing the main process does can hold up an answer: stopped outright, it
    still may not."""
    server = start_server("tests/data/zones", "--workers", "1")
    try:
        assert "1 DNS worker" in server.ready_line
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        assert children, "the DNS worker runs as a child process"
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(20):
                started = time.monotonic()
                assert server.query("mail.example.com", "A").rcode() == dns.rcode.NOERROR
                assert time.monotonic() - started < 0.5
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert server.query("mail.example.com", "A").rcode() == dns.rcode.NOERROR
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(shutil.which("taskset") is None, reason="no taskset")
def test_default_workers_follow_the_cpu_affinity() -> None:
    """`taskset -c 0 geolb serve` may use one CPU: one DNS worker, not one per CPU of the host."""
    server = start_server(prefix=("taskset", "-c", "0"))
    try:
        assert "1 DNS worker" in server.ready_line and "1 DNS workers" not in server.ready_line
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_run_takes_listen_and_http() -> None:
    def command(*variables: str) -> str:
        return subprocess.run(["make", "-n", "run", *variables], capture_output=True, text=True, cwd=ROOT, check=True).stdout

    assert "--listen 127.0.0.1:5300 --http off" in command("LISTEN=127.0.0.1:5300", "HTTP=off")
    assert "--listen 127.0.0.1:5353 --http 127.0.0.1:8053" in command()
