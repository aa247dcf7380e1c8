"""Nothing a client sends may crash the server or stall other clients (SPEC §5)."""

from __future__ import annotations

import json
import random
import socket
import struct
import urllib.request

import dns.message
import dns.rcode

from tests.serverproc import RunningServer


def test_random_and_truncated_packets_leave_the_server_answering(server: RunningServer) -> None:
    rng = random.Random(7)
    valid = [
        dns.message.make_query(name, rdtype, use_edns=0).to_wire()
        for name, rdtype in (("www.example.com", "A"), ("example.com", "SOA"), ("x.static.example.com", "TXT"))
    ]
    packets: list[bytes] = []
    for _ in range(2000):
        packets.append(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80))))
    for packet in valid:
        packets.extend(packet[:cut] for cut in range(len(packet)))  # every truncation
        for _ in range(300):  # single-byte corruptions keep most of the structure
            mutated = bytearray(packet)
            mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
            packets.append(bytes(mutated))
    # Header claims counts it does not carry, and compression pointers that loop.
    packets.append(struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1))
    packets.append(struct.pack("!HHHHHH", 2, 0, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF))

    # Several sockets, so that SO_REUSEPORT spreads the garbage over every worker.
    for start in range(0, len(packets), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in packets[start : start + 200]:
                sock.sendto(packet, (server.host, server.port))
    assert_every_worker_answers(server)


def assert_every_worker_answers(server: RunningServer) -> None:
    """Every DNS process is alive and none was ever replaced (/healthz says "degraded" or 503 otherwise) and answers;
    no traceback anywhere."""
    for _ in range(20):  # a new socket each: any worker may answer
        assert server.query("mail.example.com", "A").rcode() == dns.rcode.NOERROR
    with urllib.request.urlopen(f"{server.http_url}/healthz", timeout=5) as reply:
        assert reply.status == 200
        health = json.loads(reply.read())
    assert health["status"] == "ok" and health["workers"]["restarts"] == 0, health
    assert server.proc.poll() is None
    assert "Traceback" not in server.stderr()


def test_random_tcp_streams_leave_the_server_answering(server: RunningServer) -> None:
    rng = random.Random(11)
    for _ in range(50):
        with socket.create_connection((server.host, server.port), timeout=2) as sock:
            sock.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))))
    assert server.query("mail.example.com", "A", tcp=True).rcode() == dns.rcode.NOERROR
    assert_every_worker_answers(server)
