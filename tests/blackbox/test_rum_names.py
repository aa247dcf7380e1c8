"""Resolver discovery (SPEC §10): "<token>.rum.<zone>" answers with the --rum-address addresses over real DNS,
and the main process remembers which resolver, and which ECS network, asked for each token."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.rcode
import dns.rdatatype

from tests.serverproc import RunningServer, api, running, wait_until

ZONE = """\
nameservers:
  ns1.rum-test.example.: [127.0.0.1]
health: {type: none}
rum_name: rum
pools:
  web:
    steering: latency
    regions:
      eu:
        location: [53.3, -6.3]
        rum_url: https://eu.rum-test.example/rum.gif
        endpoints: [127.0.0.11]
records:
  www: [{type: GEO, pool: web}]
  probe: [{type: CNAME, value: chained.rum}]
"""


def sighting(server: RunningServer, token: str) -> dict[str, object] | None:
    status, body = api(server, "GET", f"/v1/rum/tokens/{token}", token=None)
    return body if status == 200 else None


def test_token_names_answer_with_the_rum_addresses_and_are_recorded(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "rum-test.example.yaml").write_text(ZONE)
    rum = ("--rum-address", "127.0.0.53", "--rum-address", "::1", "--rum-address", "127.0.0.54")
    with running(zones, *rum, "--workers", "2", tmp=tmp_path) as server:
        reply = server.query("Tok3n.rum.rum-test.example", "A")
        assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
        (rrset,) = reply.answer
        assert sorted(r.address for r in rrset) == ["127.0.0.53", "127.0.0.54"]
        assert rrset.ttl <= 5
        six = server.query("tok3n.rum.rum-test.example", "AAAA", tcp=True)
        assert [r.address for r in six.answer[0]] == ["::1"]
        wait_until(lambda: sighting(server, "tok3n") is not None, 5, "the token's sighting in the main process")
        seen = sighting(server, "TOK3N")
        assert seen is not None and seen["resolver"] == "127.0.0.1" and seen["network"] is None

        # With ECS: the network is remembered; asking again (same bytes, another ECS) is recorded every time.
        for network in ("81.2.69.0/24", "89.160.20.0/24"):
            reply = server.query("second.rum.rum-test.example", "A", ecs=network)
            assert [r.address for r in reply.answer[0]] == ["127.0.0.53", "127.0.0.54"]
            wait_until(lambda n=network: (sighting(server, "second") or {}).get("network") == n, 5, f"sighting with {network}")

        # Through a CNAME: the chain, then the addresses, and the token is recorded.
        chained = server.query("probe.rum-test.example", "A")
        assert [rrset.rdtype for rrset in chained.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
        wait_until(lambda: sighting(server, "chained") is not None, 5, "the chained token's sighting")

        # Other types and the rum name itself: NODATA with the SOA; deeper names: NXDOMAIN.
        for name, rdtype in (("tok3n.rum.rum-test.example", "TXT"), ("rum.rum-test.example", "A")):
            reply = server.query(name, rdtype)
            assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
            assert reply.authority[0].rdtype == dns.rdatatype.SOA
        assert server.query("a.b.rum.rum-test.example", "A").rcode() == dns.rcode.NXDOMAIN
        assert sighting(server, "never-asked") is None


def test_latency_pool_without_evidence_answers_by_distance_and_says_so(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "rum-test.example.yaml").write_text(ZONE)
    with running(zones, "--workers", "1", tmp=tmp_path) as server:
        for _ in range(3):  # the full path once, then the packet cache
            reply = server.query("www.rum-test.example", "A", ecs="81.2.69.0/24")
            assert [r.address for r in reply.answer[0]] == ["127.0.0.11"]
        status, report = api(server, "GET", "/v1/explain?name=www.rum-test.example&type=A&client=81.2.69.0/24", token=None)
        assert status == 200
        assert report["geo"]["evidence"] == {"kind": "distance", "text": "distance", "rtt_ms": {}}
        _, metrics = api(server, "GET", "/metrics", token=None)
        assert 'geolb_geo_answers_by_evidence_total{kind="distance",pool="web"} 3.0' in metrics


def test_without_rum_addresses_a_token_gets_nodata_but_is_recorded(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "rum-test.example.yaml").write_text(ZONE)
    with running(zones, "--workers", "1", tmp=tmp_path) as server:
        reply = server.query("lonely.rum.rum-test.example", "A")
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
        wait_until(lambda: sighting(server, "lonely") is not None, 5, "the token's sighting")
