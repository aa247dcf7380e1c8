"""RFC 7766 over a real TCP socket: pipelining, idle timeout, connection cap."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest

from tests.serverproc import RunningServer, start_server


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[RunningServer]:
    # One DNS process: the connection cap is per process.
    running = start_server("tests/data/zones", "--tcp-idle-timeout", "0.5", "--tcp-max-connections", "4", "--workers", "1")
    yield running
    assert running.stop() == 0


def framed(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


def read_message(sock: socket.socket) -> dns.message.Message:
    length = struct.unpack("!H", read_exactly(sock, 2))[0]
    return dns.message.from_wire(read_exactly(sock, length))


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def connect(server: RunningServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=3)
    return sock


def test_pipelined_queries_on_one_connection_are_all_answered(tcp_server: RunningServer) -> None:
    queries = [dns.message.make_query(name, "A") for name in ("mail.example.com", "www.example.com", "nope.example.com")]
    with connect(tcp_server) as sock:
        sock.sendall(b"".join(framed(q) for q in queries))  # all three in one write
        answers = {m.id: m for m in (read_message(sock) for _ in queries)}
    assert set(answers) == {q.id for q in queries}
    assert answers[queries[2].id].rcode() == dns.rcode.NXDOMAIN


def test_a_message_split_across_writes_is_reassembled(tcp_server: RunningServer) -> None:
    query = dns.message.make_query("mail.example.com", "A")
    data = framed(query)
    with connect(tcp_server) as sock:
        for i in range(len(data)):
            sock.sendall(data[i : i + 1])
        assert read_message(sock).id == query.id


def test_idle_connection_is_closed(tcp_server: RunningServer) -> None:
    with connect(tcp_server) as sock:
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closes it
        assert time.monotonic() - started < 4


def test_at_the_cap_a_new_connection_closes_the_least_recently_active(tcp_server: RunningServer) -> None:
    held = [connect(tcp_server) for _ in range(4)]
    try:
        for sock in held:  # accepted, and active in this order: held[0] has waited longest
            sock.sendall(framed(dns.message.make_query("mail.example.com", "A")))
            read_message(sock)
        with connect(tcp_server) as extra:
            extra.sendall(framed(dns.message.make_query("mail.example.com", "A")))
            assert read_message(extra).rcode() == dns.rcode.NOERROR  # the newcomer is served...
        held[0].settimeout(3)
        with pytest.raises((ConnectionError, OSError, AssertionError)):  # ...and the longest idle one is gone
            held[0].sendall(framed(dns.message.make_query("mail.example.com", "A")))
            read_message(held[0])
        for sock in held[1:]:  # the others still work
            sock.sendall(framed(dns.message.make_query("mail.example.com", "A")))
            assert read_message(sock).rcode() == dns.rcode.NOERROR
    finally:
        for sock in held:
            sock.close()


def test_a_client_dribbling_bytes_is_closed_at_the_idle_timeout(tcp_server: RunningServer) -> None:
    """The idle timer counts from the last complete question, not the last byte (RFC 7766 §6.2.3)."""
    data = framed(dns.message.make_query("mail.example.com", "A"))
    with connect(tcp_server) as sock:
        started = time.monotonic()
        with pytest.raises((ConnectionError, OSError)):
            for i in range(len(data)):
                sock.sendall(data[i : i + 1])  # a byte every 0.2 s: the whole question would take seconds
                time.sleep(0.2)
            sock.settimeout(3)
            assert sock.recv(1) != b""  # not reached: the server closes first
            raise AssertionError("answered a dribbling client")
        assert time.monotonic() - started < 3  # idle timeout 0.5 s


def test_garbage_on_tcp_does_not_hurt_the_next_connection(tcp_server: RunningServer) -> None:
    with connect(tcp_server) as sock:
        sock.sendall(struct.pack("!H", 5) + b"\xff" * 5 + struct.pack("!H", 0))
        sock.sendall(framed(dns.message.make_query("mail.example.com", "A")))
        assert read_message(sock).rcode() == dns.rcode.NOERROR


def test_workers_answer_alike_on_udp_and_tcp() -> None:
    """With several DNS processes, every answer is the same whichever process takes it."""
    running = start_server("tests/data/zones", "--workers", "3")
    try:
        assert "3 DNS workers" in running.ready_line
        answers = set()
        for i in range(60):
            response = running.query("mail.example.com", "A", tcp=i % 2 == 1)
            answers.add(tuple(sorted(r.to_text() for rrset in response.answer for r in rrset)))
        assert answers == {("192.0.2.25",)}
    finally:
        assert running.stop() == 0
