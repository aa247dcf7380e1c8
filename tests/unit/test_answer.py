"""answer.py and explain.py: a lookup and a client become an answer, and its reasoning, from the region maps."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

from geolb import model
from geolb.answer import build_answer
from geolb.config.zoneset import load_zoneset
from geolb.dns.lookup import lookup
from geolb.explain import explain
from geolb.geo.choose import GeoAnswers
from geolb.geo.locate import GeoIPLocator
from geolb.health.state import ALL_UP, HealthView
from tests.geomaps import region_maps

DATA = Path(__file__).resolve().parent.parent / "data"
ZONES = load_zoneset(str(DATA / "zones")).zoneset
LOCATOR = GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb"))
LONDON = ipaddress.ip_address("81.2.69.160")  # GB in the test database: eu-west is nearest


def answers(health: HealthView = ALL_UP) -> GeoAnswers:
    return GeoAnswers(region_maps(ZONES, LOCATOR), health)


def addresses(answer: object) -> set[str]:
    rrsets = getattr(answer, "answer", ())
    return {str(r.address) for rrset in rrsets for r in rrset.rdatas if isinstance(r, model.A | model.AAAA)}


def test_geo_answer_comes_from_the_nearest_region_with_a_true_scope() -> None:
    answer = build_answer(lookup(ZONES, "www.example.com.", 1), LONDON, ZONES, answers(), random.Random(1))
    assert addresses(answer) == {"198.51.100.10"}
    assert answer.choice is not None and answer.choice.region is not None and answer.choice.region.name == "eu-west"
    assert 0 < answer.ecs_scope <= LOCATOR.locate(LONDON).network.prefixlen  # at least the database's own network
    assert answer.answer[-1].ttl == 30


def test_a_down_region_moves_the_answer_and_everything_down_fails_open() -> None:
    pool = ZONES.pools["web"]
    eu = pool.region("eu-west")
    assert eu is not None
    down = HealthView(frozenset(e.key for e in eu.endpoints))
    answer = build_answer(lookup(ZONES, "www.example.com.", 1), LONDON, ZONES, answers(down), random.Random(1))
    assert addresses(answer) == {"192.0.2.10", "192.0.2.11"}
    everything = HealthView(frozenset(e.key for r in pool.regions for e in r.endpoints))
    answer = build_answer(lookup(ZONES, "www.example.com.", 1), LONDON, ZONES, answers(everything), random.Random(1))
    assert addresses(answer) == {"198.51.100.10"} and answer.choice is not None and answer.choice.failed_open


def test_no_endpoint_of_the_family_is_nodata_with_the_soa() -> None:
    answer = build_answer(lookup(ZONES, "v4.example.com.", 28), LONDON, ZONES, answers(), random.Random(1))
    assert answer.rcode == model.NOERROR and not answer.answer
    assert [r.rtype for r in answer.authority] == ["SOA"] and answer.ecs_scope == 0


def test_a_cname_to_a_geo_name_answers_both() -> None:
    answer = build_answer(lookup(ZONES, "docs.example.com.", 1), LONDON, ZONES, answers(), random.Random(1))
    assert [r.rtype for r in answer.answer] == ["CNAME", "A"]
    assert addresses(answer) == {"198.51.100.10"}


def test_explain_reports_the_dns_answer_and_its_reasoning() -> None:
    report = explain(ZONES, answers(), LOCATOR, "www.example.com", "A", ipaddress.ip_network("81.2.69.160/27"))
    assert report["rcode"] == "NOERROR" and {r["data"] for r in report["answer"]} == {"198.51.100.10"}
    geo = report["geo"]
    assert geo["region"] == "eu-west" and geo["location"]["country"] == "GB" and geo["rule"] == "geoip"
    assert [r["region"] for r in geo["ranking"]] == ["eu-west", "us-east"]
    assert report["ecs_scope"] <= 27
    static = explain(ZONES, answers(), LOCATOR, "mail.example.com", "A", ipaddress.ip_network("81.2.69.160/27"))
    assert static["geo"] is None and static["ecs_scope"] == 0
