"""One geolb per address: a second one exits 1 naming it, unless started with --replace, which takes over
from the running one without a lost query (SPEC §7)."""

from __future__ import annotations

import os
import socket
import subprocess

import dns.rcode
import pytest

from tests.geomaps import CACHE
from tests.serverproc import DATA, ROOT, api, geolb_command, start_server, wait_until
from tests.steadyclient import SteadyClient


def free_port() -> int:
    """A port free on UDP and TCP on 127.0.0.1 (nothing else binds it in the moment before geolb does)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = geolb_command("serve", "--zones", str(DATA / "zones"), *args)
    env = {**os.environ, "GEOLB_CACHE_DIR": str(CACHE)}  # the test run's cache, not the user's (maps, serials)
    return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)


def test_a_second_instance_on_the_same_address_exits_1_and_the_first_answers_everything() -> None:
    address = f"127.0.0.1:{free_port()}"
    first = start_server(listen=(address,), http="off")
    try:
        second = serve("--listen", address, "--http", "off")
        assert second.returncode == 1
        assert f"cannot listen on {address}" in second.stderr and "address in use" in second.stderr
        assert "geolb ready" not in second.stdout and "Traceback" not in second.stderr
        for _ in range(20):  # a new socket each: SO_REUSEPORT would have spread them over both
            assert first.query("mail.example.com", "A").rcode() == dns.rcode.NOERROR
            assert first.query("mail.example.com", "A", tcp=True).rcode() == dns.rcode.NOERROR
    finally:
        assert first.stop() == 0


def test_an_http_address_in_use_is_one_line_naming_it() -> None:
    first = start_server()
    try:
        http = first.http
        second = serve("--listen", f"127.0.0.1:{free_port()}", "--http", str(http))
    finally:
        assert first.stop() == 0
    assert second.returncode == 1
    # One line names the address (before it, at most what start-up logs as it goes, e.g. a map built).
    assert second.stderr.splitlines()[-1] == f"geolb: cannot listen on {http} (http): address in use", second.stderr
    assert "stopping" not in second.stderr and "Traceback" not in second.stderr


def test_replace_onto_an_http_address_another_program_holds_stops_nothing() -> None:
    """The old instance is stopped only once the new one can take its place: an HTTP address held by some
    other program is an error before that, and the old instance goes on answering."""
    address = f"127.0.0.1:{free_port()}"
    first = start_server(listen=(address,))
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            replace = serve("--listen", address, "--http", f"127.0.0.1:{taken.getsockname()[1]}", "--replace")
        assert replace.returncode == 1 and "address in use" in replace.stderr, replace.stderr
        assert first.proc.poll() is None, "the old instance was stopped"
        assert first.query("mail.example.com", "A").rcode() == dns.rcode.NOERROR
    finally:
        assert first.stop() == 0


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_an_address_another_program_holds_is_refused_even_with_replace(kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another DNS server may: still refused
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        plain = serve("--listen", address, "--http", "off")
        replace = serve("--listen", address, "--http", "off", "--replace")
    assert plain.returncode == 1 and f"cannot listen on {address}" in plain.stderr and "address in use" in plain.stderr
    assert replace.returncode == 1 and "not a geolb" in replace.stderr, replace.stderr


def test_replace_takes_over_without_a_lost_query() -> None:
    address = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    old = start_server(DATA / "zones", "--workers", "2", listen=(address,), http=http)
    try:
        with SteadyClient(lambda: (old.host, old.port), "mail.example.com") as client:
            new = start_server(DATA / "zones", "--workers", "2", "--replace", listen=(address,), http=http, timeout=40)
            try:
                assert old.proc.wait(timeout=20) == 0  # it exited before the new one said it was ready
                assert new.http == http  # the replaced instance's HTTP address
                assert "replacing geolb" in new.stderr() and f"geolb {old.proc.pid} has exited" in new.stderr()
                udp, tcp = client.udp.answered, client.tcp.answered
                assert new.query("mail.example.com", "A").rcode() == dns.rcode.NOERROR
                wait_until(lambda: client.udp.answered > udp + 20 and client.tcp.answered > tcp + 20, 10, "answered by the new one alone")
            except BaseException:
                new.stop()
                raise
        assert client.udp.lost == [] and client.tcp.lost == [], f"udp: {client.udp}; tcp: {client.tcp}"
        assert client.udp.retried == 0 and client.tcp.retried == 0, f"udp: {client.udp}; tcp: {client.tcp}"
        status, health = api(new, "GET", "/healthz")
        assert status == 200 and health["status"] == "ok"
        assert new.stop() == 0
    finally:
        old.stop()
    assert "Traceback" not in old.stderr() + new.stderr()
