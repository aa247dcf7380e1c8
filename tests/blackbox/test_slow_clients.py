"""2,000 TCP clients that send nothing or a byte a second: the cap and the idle timeout hold, and UDP and new
well-behaved TCP clients are answered all along."""

from __future__ import annotations

import contextlib
import resource
import socket
import statistics
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.serverproc import DATA, running

SLOW_CLIENTS = 2000
IDLE_TIMEOUT = 2.0
SIEGE = 6.0  # seconds of checking while the slow clients hold on


def test_slow_and_idle_tcp_clients_do_not_starve_anyone(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SLOW_CLIENTS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    args = ("--workers", "1", "--tcp-idle-timeout", str(IDLE_TIMEOUT), "--tcp-max-connections", "1024")
    with running(DATA / "zones", *args, tmp=tmp_path) as server:
        slow: list[socket.socket] = []
        stop = threading.Event()

        def dribble() -> None:
            message = dns.message.make_query("mail.example.com", "A").to_wire()
            data = len(message).to_bytes(2, "big") + message
            position = 0
            while not stop.wait(1.0):  # one byte a second on every other connection
                for sock in slow[1::2]:
                    with contextlib.suppress(OSError):  # closed by the server already
                        sock.send(data[position % len(data) : position % len(data) + 1])
                position += 1

        try:
            for _ in range(SLOW_CLIENTS):
                sock = socket.create_connection((server.host, server.port), timeout=5)
                sock.setblocking(False)
                slow.append(sock)
            dribbler = threading.Thread(target=dribble)
            dribbler.start()
            udp_times: list[float] = []
            tcp_failures = udp_failures = 0
            deadline = time.monotonic() + SIEGE
            while time.monotonic() < deadline:
                query = dns.message.make_query("www.example.com", "A")
                started = time.monotonic()
                try:
                    response = dns.query.udp(query, server.host, port=server.port, timeout=1)
                    assert response.rcode() == dns.rcode.NOERROR
                    udp_times.append(time.monotonic() - started)
                except dns.exception.Timeout:
                    udp_failures += 1
                try:
                    assert dns.query.tcp(query, server.host, port=server.port, timeout=2).rcode() == dns.rcode.NOERROR
                except (OSError, dns.exception.DNSException):
                    tcp_failures += 1
                time.sleep(0.05)
            assert udp_failures == 0 and tcp_failures == 0, (udp_failures, tcp_failures)
            assert len(udp_times) > 30
            # Nobody got an answer on a slow connection, and all of them are closed by now
            # (evicted at the cap, or at the idle timeout: a byte does not count as activity).
            closed = 0
            for sock in slow:
                sock.setblocking(True)
                sock.settimeout(0.01)
                try:
                    closed += sock.recv(1) == b""
                except (ConnectionError, OSError):
                    closed += 1
            assert closed == SLOW_CLIENTS
            p50, p99 = statistics.median(udp_times), statistics.quantiles(udp_times, n=100)[98]
            print(f"UDP during the siege: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms over {len(udp_times)} queries")
        finally:
            stop.set()
            for sock in slow:
                sock.close()
