"""With several DNS workers, a forced state or a reload is in the very next answer from every worker."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import pytest

from tests.serverproc import DATA, RunningServer, start_server

CITY_DB = DATA / "GeoIP2-City-Test.mmdb"
DUBLIN = {"198.51.100.10"}
NEAR_DUBLIN = "81.2.69.160/27"  # GB in the test database: Dublin is the nearest region of pool "web"


@pytest.fixture(scope="module")
def two_workers() -> Iterator[RunningServer]:
    running = start_server(DATA / "geo-zones", "--workers", "2", geoip=CITY_DB)
    assert "2 DNS workers" in running.ready_line
    yield running
    assert running.stop() == 0


def post(server: RunningServer, path: str, body: object) -> int:
    request = urllib.request.Request(f"{server.http_url}{path}", json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()
        return int(reply.status)


def answers_near_dublin(server: RunningServer, count: int) -> list[set[str]]:
    """`count` answers, each asked from a new socket so that SO_REUSEPORT spreads them over the workers."""
    address, _, prefix = NEAR_DUBLIN.partition("/")
    out = []
    for _ in range(count):
        query = dns.message.make_query("www.geo.example", "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))])
        response = dns.query.udp(query, server.host, port=server.port, timeout=3)
        out.append({r.to_text() for rrset in response.answer for r in rrset})
    return out


def test_a_forced_state_is_in_the_very_next_answer_from_every_worker(two_workers: RunningServer) -> None:
    force = "/v1/endpoints/web/dublin/198.51.100.10/force"
    try:
        for _ in range(5):
            assert post(two_workers, force, {"state": "down"}) == 200
            after_down = answers_near_dublin(two_workers, 40)
            assert all(not answer & DUBLIN for answer in after_down), after_down
            assert post(two_workers, force, {"state": None}) == 200
            after_up = answers_near_dublin(two_workers, 40)
            assert all(answer == DUBLIN for answer in after_up), after_up
    finally:
        post(two_workers, force, {"state": None})


ZONE = """
nameservers:
  ns1.flip.example.: [192.0.2.53]
health: {{type: none}}
pools:
  flip:
    regions:
      only:
        location: [53.35, -6.26]
        endpoints: [{endpoints}]
records:
  www:
    - {{type: GEO, pool: flip, ttl: 5}}
"""
VERSIONS = (["192.0.2.1", "192.0.2.2"], ["192.0.2.3", "192.0.2.4"])


def test_reloads_under_queries_never_mix_two_versions(tmp_path: Path) -> None:
    """200 reloads alternate the endpoints; 3 clients asking all along only ever see one whole version."""
    zones = tmp_path / "zones"
    zones.mkdir()
    zone_file = zones / "flip.example.yaml"
    zone_file.write_text(ZONE.format(endpoints=", ".join(VERSIONS[0])))
    server = start_server(zones, "--workers", "2", "--watch-interval", "0", geoip=CITY_DB, tmp=tmp_path)
    stop = threading.Event()
    seen: list[frozenset[str]] = []
    failures: list[str] = []

    def ask() -> None:
        while not stop.is_set():
            query = dns.message.make_query("www.flip.example", "A")
            try:
                response = dns.query.udp(query, server.host, port=server.port, timeout=3)
            except Exception as exc:  # a timeout or a broken answer: the test fails on it below
                failures.append(repr(exc))
                continue
            seen.append(frozenset(r.to_text() for rrset in response.answer for r in rrset))

    clients = [threading.Thread(target=ask) for _ in range(3)]
    try:
        for client in clients:
            client.start()
        for n in range(200):
            zone_file.write_text(ZONE.format(endpoints=", ".join(VERSIONS[(n + 1) % 2])))
            assert post(server, "/v1/reload", {}) == 200
            expected = frozenset(VERSIONS[(n + 1) % 2])
            after = answers_after_reload(server)
            assert after == expected, (n, after)
    finally:
        stop.set()
        for client in clients:
            client.join()
        assert server.stop() == 0
    assert not failures, failures[:5]
    assert len(seen) > 200
    assert set(seen) <= {frozenset(VERSIONS[0]), frozenset(VERSIONS[1])}, set(seen) - {frozenset(v) for v in VERSIONS}
    assert set(seen) == {frozenset(VERSIONS[0]), frozenset(VERSIONS[1])}


def answers_after_reload(server: RunningServer) -> frozenset[str]:
    """One answer right after a reload returned, from a new socket (any worker): it must be the new version."""
    response = dns.query.udp(dns.message.make_query("www.flip.example", "A"), server.host, port=server.port, timeout=3)
    return frozenset(r.to_text() for rrset in response.answer for r in rrset)


CHECKED_ZONE = """
nameservers:
  ns1.checked.example.: [192.0.2.53]
health: {{type: tcp, port: {port}, interval: 1, timeout: 0.5}}
pools:
  checked:
    regions:
      only:
        location: [53.35, -6.26]
        endpoints:
          - {{address: 127.0.0.61, health: {{type: none}}}}
{extra}
records:
  www:
    - {{type: GEO, pool: checked, ttl: 5}}
"""


def test_an_endpoint_that_fails_its_pre_live_check_is_never_answered(tmp_path: Path, unused_tcp_port: int) -> None:
    """A reload adds an endpoint whose check fails (nothing listens): no worker ever answers it."""
    zones = tmp_path / "zones"
    zones.mkdir()
    zone_file = zones / "checked.example.yaml"
    zone_file.write_text(CHECKED_ZONE.format(port=unused_tcp_port, extra=""))
    server = start_server(zones, "--workers", "2", "--watch-interval", "0", geoip=CITY_DB, tmp=tmp_path)
    try:
        zone_file.write_text(CHECKED_ZONE.format(port=unused_tcp_port, extra="          - 127.0.0.62"))
        assert post(server, "/v1/reload", {}) == 200
        for _ in range(40):  # fresh sockets: both workers
            response = dns.query.udp(dns.message.make_query("www.checked.example", "A"), server.host, port=server.port, timeout=3)
            assert {r.to_text() for rrset in response.answer for r in rrset} == {"127.0.0.61"}
    finally:
        assert server.stop() == 0
