"""SPEC §7: reload by SIGHUP, API and file change; a broken edit keeps the old zone; no query fails meanwhile."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.backends import free_port
from tests.serverproc import RunningServer, start_server, wait_for


def zone_text(address: str, extra: str = "") -> str:
    return f"""nameservers:
  ns1.r.example.: [192.0.2.53]
records:
  www:
    - {{type: A, value: {address}, ttl: 5}}
{extra}"""


def a_records(server: RunningServer, name: str = "www.r.example") -> set[str]:
    response = server.query(name, "A")
    return {r.to_text() for rrset in response.answer for r in rrset}


def serial(server: RunningServer) -> int:
    return int(server.query("r.example", "SOA").answer[0][0].serial)


def post(server: RunningServer, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"{server.http_url}{path}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def get(server: RunningServer, path: str) -> Any:
    with urllib.request.urlopen(f"{server.http_url}{path}", timeout=10) as reply:
        return json.load(reply)


def write(path: Path, text: str) -> None:
    """Write and move the mtime forward, so a derived serial changes even within one second."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    directory = tmp_path / "zones"
    directory.mkdir()
    write(directory / "r.example.yaml", zone_text("192.0.2.1"))
    return directory


def test_reload_on_sighup(zones: Path, tmp_path: Path) -> None:
    server = start_server(zones, "--watch-interval", "0", tmp=tmp_path)
    try:
        assert a_records(server) == {"192.0.2.1"}
        before = serial(server)
        write(zones / "r.example.yaml", zone_text("192.0.2.2"))
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: a_records(server) == {"192.0.2.2"}, timeout=5)
        assert serial(server) > before
    finally:
        assert server.stop() == 0


def test_reload_through_the_api(zones: Path, tmp_path: Path) -> None:
    server = start_server(zones, "--watch-interval", "0", tmp=tmp_path)
    try:
        write(zones / "r.example.yaml", zone_text("192.0.2.3"))
        code, body = post(server, "/v1/reload")
        assert code == 200
        assert body["serials"]["r.example."] == serial(server)
        assert a_records(server) == {"192.0.2.3"}  # at once: the reply comes after the swap
    finally:
        assert server.stop() == 0


def test_reload_when_a_file_changes(zones: Path, tmp_path: Path) -> None:
    server = start_server(zones, "--watch-interval", "0.2", tmp=tmp_path)
    try:
        write(zones / "r.example.yaml", zone_text("192.0.2.4"))
        wait_for(lambda: a_records(server) == {"192.0.2.4"}, timeout=10)
        write(zones / "s.example.yaml", "nameservers: {ns1.s.example.: [192.0.2.53]}\nrecords: {www: [{type: A, value: 192.0.2.5}]}\n")
        wait_for(lambda: a_records(server, "www.s.example") == {"192.0.2.5"}, timeout=10)
        (zones / "s.example.yaml").unlink()
        wait_for(lambda: server.query("www.s.example", "A").rcode() == dns.rcode.REFUSED, timeout=10)
    finally:
        assert server.stop() == 0


def test_broken_edit_keeps_the_old_zone_and_reports(zones: Path, tmp_path: Path) -> None:
    server = start_server(zones, "--watch-interval", "0", tmp=tmp_path)
    try:
        before = serial(server)
        write(zones / "r.example.yaml", zone_text("192.0.2.999"))
        code, body = post(server, "/v1/reload")
        assert code == 422
        assert any(e.startswith(f"{zones / 'r.example.yaml'}:5:") and "192.0.2.999" in e for e in body["errors"]), body
        assert a_records(server) == {"192.0.2.1"}
        assert serial(server) == before
        status = get(server, "/v1/status")
        assert status["reload"]["ok"] is False
        assert any("192.0.2.999" in e for e in status["reload"]["errors"])
        assert "192.0.2.999" in server.stderr()
        write(zones / "r.example.yaml", zone_text("192.0.2.6"))
        assert post(server, "/v1/reload")[0] == 200
        assert a_records(server) == {"192.0.2.6"}
        assert get(server, "/v1/status")["reload"]["ok"] is True
    finally:
        assert server.stop() == 0


def test_twenty_reloads_under_steady_queries(zones: Path, tmp_path: Path) -> None:
    server = start_server(zones, "--watch-interval", "0", tmp=tmp_path)
    failures: list[str] = []
    answers = 0
    stop = threading.Event()

    def ask() -> None:
        nonlocal answers
        while not stop.is_set():
            try:
                response = dns.query.udp(dns.message.make_query("www.r.example", "A"), server.host, port=server.port, timeout=1)
            except dns.exception.Timeout:
                failures.append("timeout")
                continue
            got = {r.to_text() for rrset in response.answer for r in rrset}
            if response.rcode() != dns.rcode.NOERROR or got not in ({"192.0.2.1"}, {"192.0.2.2"}):
                failures.append(f"{dns.rcode.to_text(response.rcode())} {got}")
            answers += 1

    workers = [threading.Thread(target=ask) for _ in range(3)]
    try:
        for worker in workers:
            worker.start()
        for i in range(20):
            write(zones / "r.example.yaml", zone_text("192.0.2.2" if i % 2 == 0 else "192.0.2.1"))
            assert post(server, "/v1/reload")[0] == 200
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        assert server.stop() == 0
    assert failures == []
    assert answers > 100


def test_new_health_targets_are_checked_before_they_go_live(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    dead_port = free_port(["127.0.0.81"])  # nothing listens there: connection refused
    base = """nameservers: {ns1.h.example.: [192.0.2.53]}
pools:
  p:
    regions:
%s      backup:
        health: {type: none}
        endpoints: [127.0.0.82]
records:
  www: [{type: GEO, pool: p}]
"""
    dead = f"      dead:\n        health: {{type: tcp, port: {dead_port}, timeout: 0.5}}\n        endpoints: [127.0.0.81]\n"
    write(zones / "h.example.yaml", base % "")
    server = start_server(zones, "--watch-interval", "0", tmp=tmp_path)
    try:
        assert a_records(server, "www.h.example") == {"127.0.0.82"}
        write(zones / "h.example.yaml", base % dead)
        assert post(server, "/v1/reload")[0] == 200
        # The dead region comes first in file order, but it was checked before going live.
        for _ in range(20):
            assert a_records(server, "www.h.example") == {"127.0.0.82"}
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_a_tcp_answer_in_flight(zones: Path, tmp_path: Path) -> None:
    server = start_server(zones, "--watch-interval", "0", tmp=tmp_path)
    query = dns.message.make_query("www.r.example", "A").to_wire()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        server.proc.send_signal(signal.SIGTERM)
        length = struct.unpack("!H", sock.recv(2))[0]
        data = b""
        while len(data) < length:
            data += sock.recv(length - len(data))
        assert dns.message.from_wire(data).rcode() == dns.rcode.NOERROR
    assert server.proc.wait(timeout=10) == 0


def test_a_derived_serial_never_goes_back_across_restarts(tmp_path: Path) -> None:
    """A file restored with an old time (cp -p, rsync -t, git checkout) must not take the serial back after a restart."""
    zones, cache = tmp_path / "zones", tmp_path / "cache"
    zones.mkdir()
    path = zones / "r.example.yaml"
    path.write_text(zone_text("192.0.2.1"))
    with_cache = ("--cache-dir", str(cache))

    def served_serial() -> int:
        server = start_server(zones, *with_cache, tmp=tmp_path)
        try:
            return serial(server)
        finally:
            assert server.stop() == 0

    first = served_serial()
    path.write_text(zone_text("192.0.2.2"))
    os.utime(path, (1577836800, 1577836800))  # 2020-01-01: far behind what was served
    second = served_serial()
    assert second > first
    assert served_serial() == second  # the same text again: the same serial
    # `geolb check` shows the serial a server on that cache would answer.
    checked = subprocess.run(
        [sys.executable, "-m", "geolb", "check", "--zones", str(zones)],
        capture_output=True, text=True, env={**os.environ, "GEOLB_CACHE_DIR": str(cache)}, check=True,
    )  # fmt: skip
    assert f"serial {second})" in checked.stdout
