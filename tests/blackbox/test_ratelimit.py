"""Response rate limiting over UDP: a flood from one /24 is limited with slip; another /24, TCP and cookie holders are not."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode

from tests.serverproc import DATA, RunningServer, api, running

RATE, WINDOW = 5, 1.0  # 5 answers a second, a burst of 5


def flood(server: RunningServer, source: str, count: int, *, cookie: bytes | None = None) -> tuple[int, int, int]:
    """`count` UDP queries from `source` as fast as they go: (full answers, truncated answers, nothing)."""
    options = [] if cookie is None else [dns.edns.GenericOption(dns.edns.COOKIE, cookie)]
    full = slipped = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)  # every answer fits while we are still sending
        sock.bind((source, 0))
        sock.settimeout(0.3)
        for number in range(count):
            query = dns.message.make_query("www.example.com", "A", use_edns=0, options=options)
            query.id = number
            sock.sendto(query.to_wire(), (server.host, server.port))
        seen: set[int] = set()
        try:
            while len(seen) < count:
                response = dns.message.from_wire(sock.recv(4096))
                seen.add(response.id)
                if response.flags & dns.flags.TC:
                    assert not response.answer
                    slipped += 1
                else:
                    assert response.rcode() == dns.rcode.NOERROR and response.answer
                    full += 1
        except TimeoutError:
            pass
    return full, slipped, count - full - slipped


def test_a_flood_from_one_network_is_limited_and_others_are_not(tmp_path: Path) -> None:
    args = ("--rrl-rate", str(RATE), "--rrl-window", str(WINDOW), "--rrl-slip", "2", "--workers", "1")
    with running(DATA / "zones", *args, tmp=tmp_path) as server:
        full, slipped, lost = flood(server, "127.0.0.1", 200)
        assert RATE <= full <= RATE + 5  # the burst, and what the bucket refilled meanwhile
        assert slipped >= 80 and lost >= 80 and abs(slipped - lost) <= 10  # every 2nd limited one goes out truncated
        # Another /24 is a bucket of its own: every answer.
        assert flood(server, "127.0.1.1", 5) == (5, 0, 0)
        # TCP is never limited.
        for _ in range(20):
            assert server.query("www.example.com", "A", tcp=True).answer
        # A client that shows a valid server cookie is never limited either.
        client = os.urandom(8)
        first = server.query("www.example.com", "A")  # from the limited network: this one may be limited...
        query = dns.message.make_query("www.example.com", "A", use_edns=0, options=[dns.edns.GenericOption(dns.edns.COOKIE, client)])
        answer = server.send(query, tcp=True)  # ...so learn the server cookie over TCP
        cookie = next(o for o in answer.options if o.otype == dns.edns.COOKIE).to_wire()
        assert flood(server, "127.0.0.1", 50, cookie=cookie) == (50, 0, 0)
        assert first is not None
        _, metrics = api(server, "GET", "/metrics")
        assert f'geolb_rrl_limited_total{{action="slipped",kind="answer"}} {float(slipped)}' in metrics
        assert f'geolb_rrl_limited_total{{action="dropped",kind="answer"}} {float(lost)}' in metrics


def test_without_a_rate_nothing_is_limited(tmp_path: Path) -> None:
    with running(DATA / "zones", "--workers", "1", tmp=tmp_path) as server:
        assert flood(server, "127.0.0.1", 150) == (150, 0, 0)
