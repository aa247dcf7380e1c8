"""Zone files -> model: good files parse, every bad one is reported with its line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from geolb import model
from geolb.config.zonefile import read_zone_file
from geolb.config.zoneset import load_zoneset

HEAD = "nameservers:\n  ns1.example.com.: [192.0.2.53]\nhealth: {type: none}\n"


def write(tmp_path: Path, text: str, name: str = "example.com.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    result = read_zone_file(path)
    assert result.zone is None, "expected the zone to be rejected"
    return [str(e).replace(path, "FILE") for e in result.errors]


def test_spec_example_parses(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "data" / "spec-example.com.yaml").read_text()
    result = read_zone_file(write(tmp_path, text))
    assert result.errors == []
    zone = result.zone
    assert zone is not None
    assert zone.name == "example.com."
    assert zone.serial == 2026112201
    web = zone.pools["web"]
    us_east = web.region("us-east")
    assert us_east is not None
    assert us_east.countries == {"US", "CA"}
    assert [e.weight for e in us_east.endpoints] == [1, 2, 1]
    assert us_east.endpoints[2].health.port == 8081  # endpoint override
    assert us_east.endpoints[0].health.port == 8080  # pool override
    assert us_east.endpoints[0].health.host == "www.example.com"
    assert us_east.endpoints[0].health.interval == 10.0
    assert us_east.endpoints[0].health.load_header == "X-Load" and us_east.endpoints[0].health.quorum == "majority"
    assert web.selection == us_east.selection == model.Selection("random", (24, 56))
    assert web.shed_load == model.ShedLoad(high=0.9, low=0.75)
    assert web.networks[1].regions == ("us-east", "eu-west")
    assert zone.nodes["www.example.com."].geo == model.GeoRecord("web", 30, None, zone.nodes["www.example.com."].geo.where)  # type: ignore[union-attr]
    api = zone.nodes["api.example.com."].geo
    assert api is not None and api.max_answers == 1 and api.ttl == 20
    assert "*.static.example.com." in zone.nodes
    assert zone.nodes["mail.example.com."].rrsets["A"].ttl == 300
    assert zone.nodes["example.com."].rrsets["MX"].ttl == 3600


def test_defaults(tmp_path: Path) -> None:
    zone = read_zone_file(write(tmp_path, HEAD + "records:\n  www: [{type: A, value: 192.0.2.1}]\n")).zone
    assert zone is not None
    soa = zone.soa.rdatas[0]
    assert isinstance(soa, model.SOA)
    assert (soa.mname, soa.rname) == ("ns1.example.com.", "hostmaster.example.com.")
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum) == (7200, 3600, 1209600, 60)
    assert zone.soa.ttl == 3600
    assert zone.negative_ttl == 60


def test_derived_serial_changes_when_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD)
    first = load_zoneset(str(tmp_path))
    Path(path).write_text(HEAD + "records:\n  www: [{type: A, value: 192.0.2.1}]\n")
    second = load_zoneset(str(tmp_path), previous=first.zoneset)
    assert second.zoneset.zones["example.com."].serial > first.zoneset.zones["example.com."].serial
    third = load_zoneset(str(tmp_path), previous=second.zoneset)
    assert third.zoneset.zones["example.com."].serial == second.zoneset.zones["example.com."].serial


def test_country_codes_are_read_as_written(tmp_path: Path) -> None:
    text = HEAD + "pools:\n  p:\n    regions:\n      r:\n        countries: [NO, se, gb]\n        endpoints: [192.0.2.1]\n"
    zone = read_zone_file(write(tmp_path, text)).zone
    assert zone is not None
    assert zone.pools["p"].regions[0].countries == {"NO", "SE", "GB"}


def test_durations(tmp_path: Path) -> None:
    text = (
        "nameservers: {ns1.example.com.: [192.0.2.53]}\n"
        "health: {type: tcp, interval: 500ms, timeout: 0.25, fall: 1}\n"
        "pools:\n  p:\n    regions:\n      r:\n        health: {interval: 2m}\n        endpoints: [127.0.0.11]\n"
    )
    zone = read_zone_file(write(tmp_path, text)).zone
    assert zone is not None
    check = zone.pools["p"].regions[0].endpoints[0].health
    assert (check.type, check.interval, check.timeout, check.fall, check.port) == ("tcp", 120.0, 0.25, 1, 80)


def test_networks_rule_naming_a_missing_region_is_passed_over_for_that_pool(tmp_path: Path) -> None:
    text = HEAD + (
        "networks:\n  10.1.0.0/16: eu-west\n  10.2.0.0/16: [eu-west, us-east]\n"
        "pools:\n  a:\n    regions:\n      us-east: {endpoints: [192.0.2.1]}\n"
        "  b:\n    regions:\n      eu-west: {endpoints: [192.0.2.2]}\n"
    )
    zone = read_zone_file(write(tmp_path, text)).zone
    assert zone is not None
    assert [(str(r.network), r.regions) for r in zone.pools["a"].networks] == [("10.2.0.0/16", ("us-east",))]
    assert [(str(r.network), r.regions) for r in zone.pools["b"].networks] == [("10.1.0.0/16", ("eu-west",)), ("10.2.0.0/16", ("eu-west",))]
    assert zone.pools["a"].networks[0].network == ipaddress.ip_network("10.2.0.0/16")


BAD = [
    ("unknown top-level key", HEAD + "recrods: {}\n", "FILE:4: unknown key 'recrods' in the zone file"),
    ("yaml syntax", HEAD + "records:\n  www: [{type: A, value: 192.0.2.1}\n", "FILE:6: YAML syntax error"),
    ("duplicate key", HEAD + "records:\n  www: []\n  www: []\n", "FILE:6: duplicate key 'www' (first at line 5)"),
    (
        "bad A address",
        HEAD + "records:\n  www:\n    - {type: A, value: 192.0.2.300}\n",
        "FILE:6: '192.0.2.300' is not an IPv4 or IPv6 address",
    ),
    ("AAAA with v4", HEAD + "records:\n  www:\n    - {type: AAAA, value: 192.0.2.1}\n", "FILE:6: AAAA records take IPv6 addresses"),
    (
        "negative ttl",
        HEAD + "records:\n  www:\n    - {type: A, value: 192.0.2.1, ttl: -5}\n",
        "FILE:6: ttl: TTL must be between 0 and 2147483647, got -5",
    ),
    ("huge ttl", HEAD + "ttl: 99999999999\n", "FILE:4: ttl: TTL must be between"),
    ("text ttl", HEAD + "records:\n  www:\n    - {type: A, value: 192.0.2.1, ttl: soon}\n", "FILE:6: ttl: expected a duration"),
    (
        "cname beside data",
        HEAD + "records:\n  www:\n    - {type: CNAME, value: other}\n    - {type: TXT, value: hi}\n",
        "FILE:6: CNAME at www.example.com. cannot have other data beside it (TXT)",
    ),
    ("cname at apex", HEAD + "records:\n  '@':\n    - {type: CNAME, value: other.net.}\n", "FILE:6: a CNAME cannot stand at the zone apex"),
    (
        "out of zone",
        HEAD + "records:\n  www.example.org.:\n    - {type: A, value: 192.0.2.1}\n",
        "FILE:5: www.example.org. is outside the zone example.com.",
    ),
    ("unknown type", HEAD + "records:\n  www:\n    - {type: LOC, value: x}\n", "FILE:6: unsupported record type 'LOC'"),
    (
        "record unknown key",
        HEAD + "records:\n  www:\n    - {type: A, value: 192.0.2.1, weight: 3}\n",
        "FILE:6: unknown key 'weight' in record of www.example.com.",
    ),
    (
        "geo with value",
        HEAD + "pools: {p: {regions: {r: {endpoints: [192.0.2.1]}}}}\nrecords:\n  www:\n    - {type: GEO, pool: p, value: x}\n",
        "FILE:7: GEO records take pool:, not value:",
    ),
    (
        "geo beside a",
        HEAD
        + "pools: {p: {regions: {r: {endpoints: [192.0.2.1]}}}}\n"
        + "records:\n  www:\n    - {type: GEO, pool: p}\n    - {type: A, value: 192.0.2.9}\n",
        "FILE:7: GEO at www.example.com. answers A and AAAA; remove the static A",
    ),
    (
        "bad endpoint",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        endpoints: [192.0.2.1, not-an-ip]\n",
        "FILE:8: 'not-an-ip' is not an IPv4 or IPv6 address",
    ),
    (
        "duplicate endpoint",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        endpoints: [192.0.2.1, 192.0.2.1]\n",
        "FILE:8: endpoint 192.0.2.1 is listed twice in region r",
    ),
    (
        "no endpoints",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        location: [1, 2]\n",
        "FILE:7: region r of pool p has no endpoints",
    ),
    (
        "bad location",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        location: [91, 0]\n        endpoints: [192.0.2.1]\n",
        "FILE:8: location [91.0, 0.0] is off the globe",
    ),
    (
        "bad continent",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        continents: [EUROPE]\n        endpoints: [192.0.2.1]\n",
        "FILE:8: continents: 'EUROPE' is not a continent code (AF, AN, AS, EU, NA, OC, SA)",
    ),
    (
        "country for a continent",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        continents: [US]\n        endpoints: [192.0.2.1]\n",
        "FILE:8: continents: 'US' is not a continent code (AF, AN, AS, EU, NA, OC, SA); US is a country: put it under countries:",
    ),
    (
        "UK is GB",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        countries: [US, UK]\n        endpoints: [192.0.2.1]\n",
        "FILE:8: countries: 'UK' is not an ISO 3166-1 country code: use GB",
    ),
    (
        "EL is GR",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        countries: [el]\n        endpoints: [192.0.2.1]\n",
        "FILE:8: countries: 'el' is not an ISO 3166-1 country code: use GR",
    ),
    (
        "ZZ is no country",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        countries: [ZZ]\n        endpoints: [192.0.2.1]\n",
        "FILE:8: countries: 'ZZ' is not an ISO 3166-1 alpha-2 country code",
    ),
    (
        "ON is no country",
        HEAD + "pools:\n  p:\n    regions:\n      r:\n        countries: [ON]\n        endpoints: [192.0.2.1]\n",
        "FILE:8: countries: 'ON' is not an ISO 3166-1 alpha-2 country code",
    ),
    (
        "bad health type",
        "nameservers: {ns1.example.com.: [192.0.2.53]}\nhealth: {type: icmp}\n",
        "FILE:2: health type must be one of http, https, tcp, none, got 'icmp'",
    ),
    (
        "bad health key",
        "nameservers: {ns1.example.com.: [192.0.2.53]}\nhealth: {type: tcp, interval_s: 3}\n",
        "FILE:2: unknown key 'interval_s' in health",
    ),
    (
        "bad port",
        "nameservers: {ns1.example.com.: [192.0.2.53]}\nhealth: {type: tcp, port: 70000}\n",
        "FILE:2: health port must be between 1 and 65535",
    ),
    ("bad network", HEAD + "networks:\n  10.1.0.1/16: r\n", "FILE:5: networks: '10.1.0.1/16' is not a network prefix"),
    ("no nameservers", "records: {}\n", "FILE:1: nameservers: at least one nameserver is required"),
    (
        "glueless in-zone ns",
        "nameservers:\n  ns1.example.com.: []\n",
        "FILE:2: nameserver ns1.example.com. is inside the zone and needs addresses (glue)",
    ),
    (
        "apex NS record",
        HEAD + "records:\n  '@':\n    - {type: NS, value: ns9.example.net.}\n",
        "FILE:6: the apex NS records come from the nameservers: section",
    ),
    (
        "data below delegation",
        HEAD + "records:\n  sub: [{type: NS, value: ns.example.net.}]\n  x.sub: [{type: TXT, value: hidden}]\n",
        "FILE:6: x.sub.example.com. is below the delegation sub.example.com.",
    ),
    ("mx shape", HEAD + "records:\n  '@':\n    - {type: MX, value: mail.example.com.}\n", 'FILE:6: expected "PREFERENCE EXCHANGE"'),
    (
        "ttl mismatch in rrset",
        HEAD + "records:\n  www:\n    - {type: A, value: 192.0.2.1, ttl: 60}\n    - {type: A, value: 192.0.2.2, ttl: 70}\n",
        "FILE:7: records of one RRset (www.example.com. A) must share one TTL",
    ),
    ("unknown selection", HEAD + "pools:\n  p:\n    selection: least-conn\n", "FILE:6: selection must be one of random, round-robin"),
    (
        "hash prefix range",
        HEAD + "pools:\n  p:\n    hash_prefix: [33, 56]\n",
        "FILE:6: hash_prefix: the IPv4 hash prefix must be",
    ),
    ("hash prefix shape", HEAD + "pools:\n  p:\n    hash_prefix: 24\n", "FILE:6: hash_prefix must be [IPv4 prefix, IPv6 prefix]"),
    ("shed low above high", HEAD + "pools:\n  p:\n    shed_load: {high: 0.5, low: 0.8}\n", "FILE:6: shed_load needs 0 < low < high <= 1"),
    ("shed high above 1", HEAD + "pools:\n  p:\n    shed_load: {high: 1.5, low: 0.8}\n", "FILE:6: shed_load high: expected a number"),
    ("shed low missing", HEAD + "pools:\n  p:\n    shed_load: {high: 90%}\n", "FILE:6: shed_load needs both high and low"),
    ("shed low zero", HEAD + "pools:\n  p:\n    shed_load: {high: 0.9, low: 0}\n", "FILE:6: shed_load needs 0 < low"),
    ("region selection", HEAD + "pools:\n  p:\n    regions:\n      r:\n        selection: hash\n", "FILE:8: selection must be one of"),
    ("quorum", "nameservers:\n  ns1.example.com.: [192.0.2.53]\nhealth: {type: none, quorum: most}\n", "FILE:3: quorum must be one of"),
    ("load header", "nameservers:\n  ns1.example.com.: [192.0.2.53]\nhealth: {load_header: 'X Load'}\n", "FILE:3: load_header must be"),
    ("bad label", HEAD + "records:\n  'bad label':\n    - {type: A, value: 192.0.2.1}\n", "FILE:5: label 'bad label'"),
    (
        "wildcard inside",
        HEAD + "records:\n  'a.*.b':\n    - {type: A, value: 192.0.2.1}\n",
        "FILE:5: '*' is only allowed as the leftmost label",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD], ids=[n for n, _, _ in BAD])
def test_bad_zone_is_reported_with_its_line(tmp_path: Path, text: str, expected: str) -> None:
    messages = errors_of(tmp_path, text)
    assert any(m.startswith(expected) for m in messages), messages


def test_geo_naming_a_missing_pool_is_reported_with_its_line(tmp_path: Path) -> None:
    # A cross-file check: pools may come from any zone file, so the zone set reports it.
    write(tmp_path, HEAD + "records:\n  www:\n    - {type: GEO, pool: nope}\n")
    messages = [str(e) for e in load_zoneset(str(tmp_path)).errors]
    assert any(":6: GEO record names pool 'nope', which no zone file defines" in m for m in messages), messages


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = HEAD + "bogus: 1\nrecords:\n  www:\n    - {type: A, value: 1.2.3}\n  mail:\n    - {type: AAAA, value: nope}\n"
    messages = errors_of(tmp_path, text)
    assert len(messages) == 3, messages
    assert [m.split(":")[1] for m in messages] == ["4", "7", "9"]


def test_duplicate_zones_and_pools_across_files(tmp_path: Path) -> None:
    pool = "pools: {web: {regions: {r: {endpoints: [192.0.2.1]}}}}\n"
    write(tmp_path, HEAD + pool, "a.example.yaml")
    write(tmp_path, "zone: a.example\n" + HEAD, "b.example.yaml")
    write(tmp_path, HEAD + pool, "c.example.yaml")
    result = load_zoneset(str(tmp_path))
    messages = [str(e) for e in result.errors]
    assert any("b.example.yaml:1: zone a.example. is also declared at" in m and "a.example.yaml" in m for m in messages), messages
    assert any("a.example.yaml:1: zone a.example. is also declared at" in m and "b.example.yaml:1" in m for m in messages), messages
    assert any("c.example.yaml:4: pool 'web' is also defined at" in m and "a.example.yaml:4" in m for m in messages), messages


def test_networks_naming_no_pool_region_is_a_warning(tmp_path: Path) -> None:
    text = HEAD + "networks:\n  10.0.0.0/8: mars\npools: {p: {regions: {r: {endpoints: [192.0.2.1]}}}}\n"
    result = read_zone_file(write(tmp_path, text))
    assert result.zone is not None
    assert [str(w).split(": ", 1)[1] for w in result.warnings] == [
        "warning: networks: 10.0.0.0/8 names region 'mars', which no pool in this zone has"
    ]
