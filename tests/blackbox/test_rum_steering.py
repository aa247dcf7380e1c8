"""SPEC §10 end to end: beacons on the RUM listener move DNS answers of a `steering: latency` pool, and only where
they have evidence for: one network, a country with enough networks, a resolver without ECS; kept across a restart."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest
from selenium.webdriver.common.by import By

from tests.backends import Backends
from tests.browser import console_errors, headless, poll
from tests.serverproc import ROOT, RunningServer, api, geolb_command, own_cache, start_server, wait_until

NEAR, FAR = "127.0.0.12", "127.0.0.11"  # eu-west, near to GB clients by distance, and us-east
MIN_SAMPLES = 3
MIN_NETWORKS = 2
POOLS = ("net", "samples", "country", "resolver", "restart", "explain")  # one pool per test: their evidence is apart
FAST = {"us-east": 20.0, "eu-west": 95.0}  # what the beacons say: us-east is much faster, whatever the distance
FOLLOW = 3.0  # seconds within which an answer follows new evidence (debounce + rebuild + workers: ~1 s when idle)
DNS_TIMEOUT = 3.0  # as every other test's: laying new evidence over the maps never holds a query up


def zone(port: int) -> str:
    pools = "\n".join(
        f"""  {name}:
    steering: latency
    latency: {{min_samples: {MIN_SAMPLES}, min_networks: {MIN_NETWORKS}}}
    regions:
      eu-west:
        location: [53.35, -6.26]
        rum_url: http://127.0.0.12:{port}/rum.gif
        endpoints: [{NEAR}]
      us-east:
        location: [39.04, -77.49]
        rum_url: http://127.0.0.11:{port}/rum.gif
        endpoints: [{FAR}]"""
        for name in POOLS
    )
    records = "\n".join(f"  {name}: {{type: GEO, pool: {name}, ttl: 5}}" for name in POOLS)
    return f"""nameservers:
  ns1.steer.example.: [192.0.2.53]
rum_name: rum
health: {{type: http, port: {port}, path: /health, interval: 1, timeout: 0.5}}
pools:
{pools}
records:
{records}
"""


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    running = Backends([FAR, NEAR])
    yield running
    running.close()


@pytest.fixture(scope="module")
def zones(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("steer-zones")
    (folder / "steer.example.yaml").write_text(zone(backends.port))
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return own_cache(tmp_path_factory.mktemp("steer-cache"))


def serve(zones: Path, cache: Path) -> RunningServer:
    return start_server(
        zones,
        "--rum-listen",
        "127.0.0.1:0",
        "--rum-address",
        "127.0.0.1",
        "--rum-trusted-proxy",
        "127.0.0.1/32",
        "--rum-rate",
        "10000",
        "--workers",
        "1",
        "--cache-dir",
        str(cache),
    )


@pytest.fixture(scope="module")
def server(zones: Path, cache: Path) -> Iterator[RunningServer]:
    running = serve(zones, cache)
    yield running
    assert running.stop() == 0


def rum_url(server: RunningServer) -> str:
    found = re.search(r", rum (\S+)$", server.ready_line.strip())
    assert found, server.ready_line
    return f"http://{found.group(1)}/v1/rum"


def beacon(server: RunningServer, pool: str, client: str, rtt: dict[str, float] = FAST, token: str | None = None) -> None:
    """One beacon for `client` (through the trusted proxy 127.0.0.1: X-Forwarded-For names it)."""
    body: dict[str, Any] = {"zone": "steer.example", "pool": pool, "rtt": rtt}
    if token is not None:
        body["token"] = token
    request = urllib.request.Request(rum_url(server), data=json.dumps(body).encode(), method="POST")
    request.add_header("X-Forwarded-For", client)
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 204


def answer(server: RunningServer, pool: str, ecs: str | None = None, source: str | None = None) -> set[str]:
    """The A records of <pool>.steer.example for a client subnet (ECS), or without ECS from `source`."""
    options = []
    if ecs is not None:
        address, prefix = ecs.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(f"{pool}.steer.example", "A", use_edns=0, options=options)
    reply = dns.query.udp(query, server.host, port=server.port, timeout=DNS_TIMEOUT, source=source)
    return {item.address for rrset in reply.answer for item in rrset if rrset.rdtype == dns.rdatatype.A}


def follows(server: RunningServer, pool: str, expected: str, what: str, **client: str) -> None:
    wait_until(lambda: answer(server, pool, **client) == {expected}, FOLLOW, what)


def stays(server: RunningServer, pool: str, expected: str, seconds: float = 1.5, **client: str) -> None:
    """A bounded negative: the answer stays put for longer than evidence takes to reach the answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert answer(server, pool, **client) == {expected}
        time.sleep(0.1)


def test_beacons_move_their_network_and_only_it(server: RunningServer) -> None:
    assert answer(server, "net", ecs="81.2.69.0/24") == {NEAR}  # GB: eu-west by distance
    for _ in range(MIN_SAMPLES):
        beacon(server, "net", "81.2.69.10")
    follows(server, "net", FAR, "the measured network follows its beacons", ecs="81.2.69.0/24")
    assert answer(server, "net", ecs="81.2.69.77/32") == {FAR}  # the whole /24
    assert answer(server, "net", ecs="81.2.70.0/24") == {NEAR}  # its neighbour keeps the distance order
    assert answer(server, "net", ecs="81.2.68.0/24") == {NEAR}
    reply = server.query("net.steer.example", "A", ecs="81.2.69.0/24")
    assert reply.options[0].scopelen >= 24  # a scope true for the network measured


def test_fewer_than_min_samples_change_nothing(server: RunningServer) -> None:
    for _ in range(MIN_SAMPLES - 1):
        beacon(server, "samples", "81.2.72.10")
    stays(server, "samples", NEAR, ecs="81.2.72.0/24")
    beacon(server, "samples", "81.2.72.10")
    follows(server, "samples", FAR, "the min_samples-th sample makes the evidence count", ecs="81.2.72.0/24")


def test_country_evidence_after_min_networks(server: RunningServer) -> None:
    """GB clients without evidence of their own follow GB's once min_networks GB networks measured."""
    networks = ["2.24.0.1", "2.25.0.1"]
    for _ in range(MIN_SAMPLES):
        beacon(server, "country", networks[0])
    follows(server, "country", FAR, "the first network", ecs="2.24.0.0/24")
    stays(server, "country", NEAR, ecs="2.26.0.0/24")  # one network is not a country
    for _ in range(MIN_SAMPLES):
        beacon(server, "country", networks[1])
    follows(server, "country", FAR, "GB's other networks follow the country", ecs="2.26.0.0/24")
    assert answer(server, "country", ecs="2a02:c7f::/48") == {FAR}  # a GB IPv6 network too


def test_status_metrics_and_page_show_the_evidence(server: RunningServer) -> None:
    """After the country test: GB's RTT per region in /v1/status, on the status page, and counts in /metrics."""
    status, body = api(server, "GET", "/v1/status")
    assert status == 200
    pool = body["pools"]["country"]
    assert pool["steering"] == "latency"
    assert pool["latency"]["networks"] == 2 and pool["latency"]["countries"] == 1
    assert pool["latency"]["measured"]["networks"] == 2
    assert pool["latency"]["beacons"]["accepted"] == 2 * MIN_SAMPLES
    assert pool["regions"]["us-east"]["rtt_by_country"]["GB"] == {"ms": 20.0, "networks": 2}
    assert pool["regions"]["eu-west"]["rtt_by_country"]["GB"]["ms"] == 95.0
    status, text = api(server, "GET", "/metrics")
    assert 'geolb_steering_networks{pool="country"} 2.0' in text
    assert 'geolb_steering_countries{pool="country"} 1.0' in text
    assert re.search(r'geolb_geo_answers_by_evidence_total\{kind="country",pool="country"\} [1-9]', text), "answers by evidence kind"
    with headless() as driver:
        driver.get(server.http_url + "/")
        cell = '.pool[data-pool="country"] .rtt-table tr[data-region="us-east"] td[data-country="GB"]'
        poll(driver, lambda d: d.find_element(By.CSS_SELECTOR, cell).text == "20 ms", 5, "GB's RTT to us-east on the page")
        assert console_errors(driver) == []


def test_resolver_without_ecs_follows_the_networks_behind_it(server: RunningServer) -> None:
    resolver = "127.0.0.53"
    assert answer(server, "resolver", source=resolver) == {NEAR}  # no location: the pool's file order
    token = "tok-resolver-1"
    query = dns.message.make_query(f"{token}.rum.steer.example", "A", use_edns=0)  # the browser's lookup, via its resolver
    reply = dns.query.udp(query, server.host, port=server.port, timeout=3, source=resolver)
    assert {item.address for rrset in reply.answer for item in rrset} == {"127.0.0.1"}
    for n in range(MIN_SAMPLES):
        beacon(server, "resolver", f"51.140.{n}.9", token=token)  # networks behind that resolver
    follows(server, "resolver", FAR, "queries without ECS from the resolver", source=resolver)
    assert answer(server, "resolver", source="127.0.0.54") == {NEAR}  # another resolver: no evidence


def explained(server: RunningServer, name: str, qtype: str = "A", client: str = "81.2.69.0/24") -> dict[str, Any]:
    status, report = api(server, "GET", f"/v1/explain?name={name}&type={qtype}&client={client}", token=None)
    assert status == 200, report
    return dict(report)


def dns_records(server: RunningServer, name: str, qtype: str, ecs: str | None = None) -> tuple[list[tuple[str, str, int, str]], list[str]]:
    """(answer records as (name, type, ttl, data), authority types) over UDP, as explain lists them."""
    options = [] if ecs is None else [dns.edns.ECSOption(ecs.split("/")[0], int(ecs.split("/")[1]))]
    query = dns.message.make_query(name, qtype, use_edns=0, options=options)
    reply = dns.query.udp(query, server.host, port=server.port, timeout=DNS_TIMEOUT)
    records = [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype), r.ttl, item.to_text()) for r in reply.answer for item in r]
    return sorted(records), [dns.rdatatype.to_text(r.rdtype) for r in reply.authority]


def report_records(report: dict[str, Any]) -> tuple[list[tuple[str, str, int, str]], list[str]]:
    return sorted((r["name"], r["type"], r["ttl"], r["data"]) for r in report["answer"]), [r["type"] for r in report["authority"]]


def test_explain_shows_the_latency_order_and_what_it_skipped(server: RunningServer, zones: Path, tmp_path: Path) -> None:
    """Explain ranks by the evidence that decided the answer, and names a measured region passed over as down."""
    name, client = "explain.steer.example", "81.2.69.0/24"
    before = explained(server, name)
    assert [r["region"] for r in before["geo"]["ranking"]] == ["eu-west", "us-east"]  # GB, no evidence: by distance
    for _ in range(MIN_SAMPLES):
        beacon(server, "explain", "81.2.69.10", rtt={"us-east": 20.0, "eu-west": 120.0})
    follows(server, "explain", FAR, "the measured network follows its beacons", ecs=client)
    report = explained(server, name)
    geo = report["geo"]
    assert geo["evidence"]["kind"] == "network" and geo["region"] == "us-east"
    assert [r["region"] for r in geo["ranking"]] == ["us-east", "eu-west"]  # the measured-faster region first
    assert geo["ranking"][0]["reason"].startswith("20 ms") and geo["skipped"] == []
    assert report_records(report) == dns_records(server, name, "A", client)
    status, _ = api(server, "POST", f"/v1/endpoints/explain/us-east/{FAR}/force", {"state": "down"})
    assert status == 200
    try:
        assert answer(server, "explain", ecs=client) == {NEAR}  # the API answers once the workers answer so
        report = explained(server, name)
        geo = report["geo"]
        assert geo["region"] == "eu-west" and geo["evidence"]["kind"] == "network"
        assert [r["region"] for r in geo["ranking"]] == ["us-east", "eu-west"]
        assert geo["skipped"] == [{"region": "us-east", "reason": "every IPv4 endpoint is down"}]
        assert report_records(report) == dns_records(server, name, "A", client)
    finally:
        status, _ = api(server, "POST", f"/v1/endpoints/explain/us-east/{FAR}/force", {"state": None})
        assert status == 200
    follows(server, "explain", FAR, "back to the checks", ecs=client)
    # A token name: what DNS answers (the --rum-address, TTL 5; NODATA with the SOA for other types).
    token = "tok-explain.rum.steer.example"
    for qtype in ("A", "AAAA", "TXT"):
        report = explained(server, token, qtype)
        assert report["rcode"] == "NOERROR" and report["note"] and "RUM token" in report["note"]
        assert report_records(report) == dns_records(server, token, qtype), qtype
    assert report_records(explained(server, token, "A"))[0] == [("tok-explain.rum.steer.example.", "A", 5, "127.0.0.1")]
    assert report_records(explained(server, token, "AAAA")) == ([], ["SOA"])
    # `geolb resolve` cannot know the --rum-address: it says so.
    command = geolb_command("resolve", token, "--client", client, "--zones", str(zones), "--cache-dir", str(own_cache(tmp_path)))
    resolved = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert resolved.returncode == 0, resolved.stderr
    assert "RUM token name" in resolved.stdout and "--rum-address" in resolved.stdout, resolved.stdout


def test_evidence_survives_a_restart(zones: Path, cache: Path, server: RunningServer) -> None:
    for _ in range(MIN_SAMPLES):
        beacon(server, "restart", "81.2.70.10")
    follows(server, "restart", FAR, "before the restart", ecs="81.2.70.0/24")
    status, body = api(server, "GET", "/v1/status")
    assert status == 200 and body["pools"]["restart"]["latency"]["networks"] == 1
    assert server.stop() == 0
    # `geolb resolve` answers from the measurements the server saved, and names them.
    command = geolb_command(
        "resolve", "restart.steer.example", "--client", "81.2.70.0/24", "--zones", str(zones), "--cache-dir", str(cache)
    )
    resolved = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert resolved.returncode == 0, resolved.stderr
    assert FAR in resolved.stdout and "rum 81.2.70.0/24: us-east 20 ms" in resolved.stdout, resolved.stdout
    again = serve(zones, cache)
    try:
        assert answer(again, "restart", ecs="81.2.70.0/24") == {FAR}  # from the first answer on
        assert answer(again, "restart", ecs="81.2.71.0/24") == {NEAR}  # the next /24 has no evidence of its own
    finally:
        assert again.stop() == 0


def test_a_pool_removed_by_a_reload_takes_its_evidence_along(backends: Backends, tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    path = zones / "steer.example.yaml"
    path.write_text(zone(backends.port))
    running = serve(zones, own_cache(tmp_path / "cache"))
    try:
        for _ in range(MIN_SAMPLES):
            beacon(running, "net", "81.2.69.10")
        follows(running, "net", FAR, "measured", ecs="81.2.69.0/24")
        text = path.read_text()
        without = re.sub(r"  net:\n(    .*\n)+", "", text).replace("  net: {type: GEO, pool: net, ttl: 5}\n", "")
        path.write_text(without)
        status, _ = api(running, "POST", "/v1/reload")
        assert status == 200
        status, body = api(running, "GET", "/v1/status")
        assert "net" not in body["pools"]
        _, text_metrics = api(running, "GET", "/metrics")
        assert 'geolb_steering_networks{pool="net"}' not in text_metrics
        path.write_text(text)  # back: a new pool of that name starts from nothing
        status, _ = api(running, "POST", "/v1/reload")
        assert status == 200
        assert answer(running, "net", ecs="81.2.69.0/24") == {NEAR}
        status, body = api(running, "GET", "/v1/status")
        assert body["pools"]["net"]["latency"]["networks"] == 0
    finally:
        assert running.stop() == 0
