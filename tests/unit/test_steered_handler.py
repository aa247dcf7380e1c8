"""Latency evidence through the DNS handler: the packet cache's answers equal the full path's and the pure choice,
ECS scopes are echoed true, resolvers without ECS get their own evidence, and answers are counted by evidence kind."""

from __future__ import annotations

import ipaddress
import pickle
import random
from pathlib import Path
from types import MappingProxyType

import dns.edns
import dns.message
import pytest

from geolb import model
from geolb.config.zoneset import load_zoneset
from geolb.geo.choose import AnswerMemo, GeoAnswers
from geolb.geo.locate import GeoIPLocator
from geolb.handler import QueryHandler
from geolb.health.state import ALL_UP
from geolb.runtime import Runtime
from geolb.steer.evidence import Evidence, Figures, NetworkTable, PoolEvidence
from geolb.workers import Generation
from tests.geomaps import region_maps
from tests.unit.test_overlay import random_table

DATA = Path(__file__).resolve().parent.parent / "data"
ZONE = """\
nameservers:
  ns1.steer.example.: [192.0.2.53]
health: {type: none}
pools:
  steered:
    steering: latency
    regions:
      us-east: {location: [39.0, -77.5], endpoints: [192.0.2.1, "2001:db8::1"]}
      eu-west: {location: [53.3, -6.3], continents: [EU], endpoints: [192.0.2.2, "2001:db8::2"]}
      gb: {location: [51.5, -0.1], countries: [GB], endpoints: [192.0.2.3]}
      ap: {location: [35.7, 139.7], endpoints: [192.0.2.4, "2001:db8::4"]}
records:
  www: [{type: GEO, pool: steered, ttl: 30}]
"""
BY_ADDRESS = {"192.0.2.1": "us-east", "192.0.2.2": "eu-west", "192.0.2.3": "gb", "192.0.2.4": "ap"}
BY_ADDRESS.update({"2001:db8::1": "us-east", "2001:db8::2": "eu-west", "2001:db8::4": "ap"})


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> tuple[model.ZoneSet, dict[str, object], Evidence]:
    zones = tmp_path_factory.mktemp("zones")
    (zones / "steer.example.yaml").write_text(ZONE)
    zoneset = load_zoneset(str(zones)).zoneset
    assert zoneset is not None
    maps = region_maps(zoneset, GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb")))
    rng = random.Random(5)
    regions = ("ap", "eu-west", "us-east", "gb")
    near4 = [int(ipaddress.ip_address(a)) for a in ("81.2.69.160", "216.160.83.56", "89.160.20.112")]
    near6 = [int(ipaddress.ip_address(a)) for a in ("2001:218::1", "2a02:cf40::1")]
    evidence = PoolEvidence(
        "steered",
        regions,
        random_table(4, len(regions), rng, 200, near4),
        random_table(6, len(regions), rng, 200, near6),
        MappingProxyType({ipaddress.ip_address("8.8.8.8"): Figures((3.0, 90.0, 40.0, None), (9, 9, 9, 0))}),
        MappingProxyType({"SE": Figures((None, 80.0, 10.0, None), (0, 7, 7, 0))}),
        version=1,
    )
    return zoneset, dict(maps), MappingProxyType({"steered": evidence})


def handler(setting: tuple[model.ZoneSet, dict[str, object], Evidence], fast: bool) -> QueryHandler:
    zoneset, maps, evidence = setting
    runtime = Runtime(zoneset, maps=maps)  # type: ignore[arg-type]
    runtime.publish(evidence=evidence)
    return QueryHandler(runtime, random.Random(1), fast_path=fast)


def query(name: str, rdtype: str, ecs: str | None) -> bytes:
    options = []
    if ecs is not None:
        address, _, prefix = ecs.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    return dns.message.make_query(name, rdtype, use_edns=0, payload=1232, options=options).to_wire()


def region_and_scope(response: bytes | None) -> tuple[str, int]:
    assert response is not None
    message = dns.message.from_wire(response)
    (rrset,) = message.answer
    ecs = [o for o in message.options if isinstance(o, dns.edns.ECSOption)]
    return BY_ADDRESS[str(next(iter(rrset)))], ecs[0].scopelen if ecs else -1


def test_cached_answers_equal_full_answers_and_the_choice(setting: tuple[model.ZoneSet, dict[str, object], Evidence]) -> None:
    zoneset, maps, evidence = setting
    fast, full = handler(setting, True), handler(setting, False)
    pool = zoneset.pools["steered"]
    answers = GeoAnswers(maps, ALL_UP, AnswerMemo(), evidence)  # type: ignore[arg-type]
    table: NetworkTable = evidence["steered"].v4
    rng = random.Random(9)
    clients = [f"{ipaddress.IPv4Address((int(k) << 8) + rng.randrange(256))}/24" for k in table.keys[:40]]
    clients += ["81.2.69.160/27", "89.160.20.112/28", "216.160.83.56/29", "10.1.0.0/16", "2001:218::/32", "2a02:cf40::/48"]
    clients += [f"{ipaddress.IPv4Address(rng.getrandbits(32))}/32" for _ in range(40)]
    kinds = set()
    for client in clients:
        data = query("www.steer.example", "A", client)
        want = region_and_scope(full.handle(data, "127.0.0.1", False))
        for _ in range(3):  # the cache, then an exact hit, then a pinned entry
            assert region_and_scope(fast.handle(data, "127.0.0.1", False)) == want, client
        address = ipaddress.ip_network(client, strict=False).network_address
        choice = answers.choose(pool, 4, address)
        assert choice.region is not None and choice.region.name == want[0], client
        assert want[1] == min(choice.scope, ipaddress.ip_network(client, strict=False).prefixlen)
        kinds.add(choice.evidence)
    assert {"network", "distance"} <= kinds
    counted = fast.fold_stats().evidence
    assert sum(counted.values()) == 3 * len(clients)
    assert {kind for (pool_name, kind) in counted if pool_name == "steered"} == kinds


def test_resolvers_without_ecs_get_their_own_evidence(setting: tuple[model.ZoneSet, dict[str, object], Evidence]) -> None:
    fast, full = handler(setting, True), handler(setting, False)
    data = query("www.steer.example", "A", None)
    for peer in ("8.8.8.8", "8.8.4.4", "81.2.69.161", "8.8.8.8"):
        assert region_and_scope(fast.handle(data, peer, False)) == region_and_scope(full.handle(data, peer, False)), peer
    assert region_and_scope(fast.handle(data, "8.8.8.8", False))[0] == "ap"  # 3 ms from its users' networks
    # With ECS the client's network decides, never its resolver's measurements.
    with_ecs = query("www.steer.example", "A", "8.8.8.0/24")
    assert region_and_scope(full.handle(with_ecs, "8.8.8.8", False)) == region_and_scope(full.handle(with_ecs, "127.0.0.1", False))
    assert full.fold_stats().evidence[("steered", "resolver")] == 2


def test_evidence_travels_to_workers_intact(setting: tuple[model.ZoneSet, dict[str, object], Evidence]) -> None:
    _zones, _maps, evidence = setting
    generation = Generation(3, None, ALL_UP, None, evidence)
    back = pickle.loads(pickle.dumps(generation))
    assert back.evidence is not None
    got, sent = back.evidence["steered"], evidence["steered"]
    assert got.regions == sent.regions and got.resolvers == sent.resolvers and got.countries == sent.countries
    assert (got.v4.keys == sent.v4.keys).all() and got.version == sent.version


def test_steered_maps_are_built_ahead_and_kept_within_bounds(setting: tuple[model.ZoneSet, dict[str, object], Evidence]) -> None:
    zoneset, maps, evidence = setting
    fast = handler(setting, True)
    jobs = fast.steer_jobs(zoneset, maps, ALL_UP, evidence)  # type: ignore[arg-type]
    assert len(jobs) == 2  # IPv4 may answer from every region, IPv6 not from gb: two usable sets
    fast.adopt_steered(jobs, [job.run() for job in jobs])
    assert fast.steer_jobs(zoneset, maps, ALL_UP, evidence) == []  # type: ignore[arg-type]
    memo = AnswerMemo(steered=1)
    for job in jobs:
        memo.add_steered(job.key, job.run())
    assert not memo.has_steered(jobs[0].key) and memo.has_steered(jobs[1].key)  # the newest kept


def test_rum_addresses_default_to_a_specific_rum_listener() -> None:
    from geolb.net.listeners import HostPort
    from geolb.server import ServeOptions, rum_addresses

    given = (ipaddress.ip_address("192.0.2.80"),)
    assert rum_addresses(ServeOptions(rum_addresses=given, rum_listen=HostPort("127.0.0.9", 8080))) == given
    assert rum_addresses(ServeOptions(rum_listen=HostPort("127.0.0.9", 8080))) == (ipaddress.ip_address("127.0.0.9"),)
    assert rum_addresses(ServeOptions(rum_listen=HostPort("0.0.0.0", 8080))) == ()
    assert rum_addresses(ServeOptions(rum_listen=HostPort("localhost", 8080))) == ()
    assert rum_addresses(ServeOptions()) == ()


def test_token_names_in_a_signed_zone_validate_and_their_nsec_names_the_rum_families(tmp_path: Path) -> None:
    import dns.rdatatype

    from tests.unit.test_dnssec import ask, dnskeys, signed_zones, validate_all

    zones = signed_zones(tmp_path)
    with open(zones / "example.com.yaml", "a") as handle:
        handle.write("rum_name: rum\n")
    zoneset = load_zoneset(str(zones)).zoneset
    maps = region_maps(zoneset, GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb")))
    signed = QueryHandler(Runtime(zoneset, maps=maps), random.Random(1), rum_addresses=[ipaddress.ip_address("192.0.2.80")])
    keys = dnskeys(signed)
    answer = dns.message.from_wire(ask(signed, "tok.rum.example.com", "A"))
    assert [str(r) for rrset in answer.answer for r in rrset if rrset.rdtype == dns.rdatatype.A] == ["192.0.2.80"]
    assert validate_all(answer, keys) == ["tok.rum.example.com. A"]
    nodata = dns.message.from_wire(ask(signed, "tok.rum.example.com", "AAAA"))
    assert validate_all(nodata, keys) == ["example.com. SOA", "tok.rum.example.com. NSEC"]
    (nsec,) = [rrset for rrset in nodata.authority if rrset.rdtype == dns.rdatatype.NSEC]
    assert " A " in f" {nsec[0].to_text()} " and "AAAA" not in nsec[0].to_text()  # A exists, AAAA does not


def test_explain_names_the_evidence(setting: tuple[model.ZoneSet, dict[str, object], Evidence]) -> None:
    from geolb.explain import explain, render_text

    zoneset, maps, evidence = setting
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    answers = GeoAnswers(maps, ALL_UP, AnswerMemo(), evidence)  # type: ignore[arg-type]
    networks = [ipaddress.ip_network((int(key) << 8, 24)) for key in evidence["steered"].v4.keys]
    pool = zoneset.pools["steered"]
    measured = next(n for n in networks if answers.choose(pool, 4, n.network_address).evidence == "network")
    report = explain(zoneset, answers, locator, "www.steer.example", "A", measured)
    assert report["geo"]["evidence"]["kind"] == "network"
    assert report["geo"]["evidence"]["text"].startswith(f"rum {measured}: ")
    assert f";; latency evidence: rum {measured}: " in render_text(report)
    resolver = explain(zoneset, answers, locator, "www.steer.example", "A", ipaddress.ip_network("8.8.8.8/32"), resolver=True)
    assert resolver["geo"]["evidence"]["text"] == "resolver 8.8.8.8: ap 3 ms (9 samples), us-east 40 ms (9), eu-west 90 ms (9)"
    assert resolver["geo"]["region"] == "ap"
    plain = explain(zoneset, answers, locator, "www.steer.example", "A", ipaddress.ip_network("10.0.0.0/8"))
    assert plain["geo"]["evidence"] == {"kind": "distance", "text": "distance", "rtt_ms": {}}


def test_explain_ranks_and_skips_as_the_answer_was_decided(setting: tuple[model.ZoneSet, dict[str, object], Evidence]) -> None:
    """Measured networks and a resolver, with regions forced down: explain's ranking, read down to the region the
    DNS path answered from, passes over exactly the regions it lists as skipped, all of them unable to answer."""
    from geolb.explain import explain
    from geolb.health.state import HealthView

    zoneset, maps, evidence = setting
    locator = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
    pool = zoneset.pools["steered"]
    networks = [ipaddress.ip_network((int(key) << 8, 24)) for key in evidence["steered"].v4.keys[:40]]
    outages: list[tuple[str, ...]] = [(), ("us-east",), ("eu-west",), ("gb",), ("ap",), ("us-east", "ap"), ("eu-west", "gb")]
    steered = 0
    for down in outages:
        forced = MappingProxyType({("steered", r.name, e.address): False for r in pool.regions if r.name in down for e in r.endpoints})
        answers = GeoAnswers(maps, HealthView(forced=forced), AnswerMemo(), evidence)  # type: ignore[arg-type]
        for network in networks:
            geo = explain(zoneset, answers, locator, "www.steer.example", "A", network)["geo"]
            order = [r["region"] for r in geo["ranking"]]
            assert [s["region"] for s in geo["skipped"]] == order[: order.index(geo["region"])], (network, down, geo)
            assert all(s["reason"] == "every IPv4 endpoint is down" for s in geo["skipped"])
            steered += geo["evidence"]["kind"] != "distance"
        resolver = explain(zoneset, answers, locator, "www.steer.example", "A", ipaddress.ip_network("8.8.8.8/32"), resolver=True)["geo"]
        assert [r["region"] for r in resolver["ranking"]][:3] == ["ap", "us-east", "eu-west"]  # ap 3 ms, us-east 40, eu-west 90
        assert resolver["region"] == next(r for r in ("ap", "us-east", "eu-west") if r not in down)
    assert steered > len(networks)  # the evidence decided most of them
