"""SPEC §3 rules 6-7 over real sockets: round robin, consistent hashing, load shedding (checks and the API)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import Backends
from tests.serverproc import DATA, RunningServer, api, running, start_server, wait_until

POLICY_ZONES = DATA / "policy-zones"
HASHED = [f"127.0.0.{i}" for i in range(51, 61)]  # ten endpoints of one consistent region
NEAR = ["127.0.0.61", "127.0.0.62"]
FAR = ["127.0.0.63"]
INTERVAL = 0.3


def answers(server: RunningServer, name: str, ecs: str | None = None, rdtype: str = "A") -> list[str]:
    response = server.query(name, rdtype, ecs=ecs)
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def client_networks(count: int) -> list[str]:
    """`count` distinct /24s spread over public IPv4 space."""
    return [f"{23 + (i % 150)}.{(i * 7) % 256}.{(i * 13) % 256}.0/24" for i in range(count)]


# --- round robin ---------------------------------------------------------------------------


def test_round_robin_cycles_in_weight_proportion() -> None:
    """Weights 1:2:3 over 1,200 answers (two workers, each with its own cycle), within 2 %."""
    with running(POLICY_ZONES, "--workers", "2") as server:
        firsts = collections.Counter(answers(server, "rr-one.policy.example", ecs)[0] for ecs in client_networks(1200))
        for address, weight in (("192.0.2.11", 1), ("192.0.2.12", 2), ("192.0.2.13", 3)):
            assert abs(firsts[address] / 1200 - weight / 6) <= 0.02, firsts
        # Without max_answers every endpoint is listed; the first place moves on every answer.
        orders = [answers(server, "rr.policy.example") for _ in range(12)]
        assert all(sorted(order) == ["192.0.2.11", "192.0.2.12", "192.0.2.13"] for order in orders)
        assert len({order[0] for order in orders}) == 3


# --- consistent ----------------------------------------------------------------------------


def test_consistent_answers_are_the_same_from_two_processes() -> None:
    networks = client_networks(300)
    with running(POLICY_ZONES, "--workers", "1") as first, running(POLICY_ZONES, "--workers", "2") as second:
        hashed = 0
        for ecs in networks:
            one = answers(first, "sticky.policy.example", ecs)
            others = answers(second, "sticky.policy.example", ecs), answers(second, "sticky.policy.example", ecs.replace(".0/24", ".77/32"))
            if one[0].startswith("198.51.100."):  # europe hashes; america is random (its own selection)
                hashed += 1
                assert all(other == one for other in others), ecs  # the same order, and the same for the whole /24
            else:
                assert all(sorted(other) == sorted(one) for other in others), ecs
        assert hashed >= 50
        v6 = [f"2a02:{i:x}:{i * 3 % 65536:x}::/56" for i in range(1, 100)]
        for ecs in v6:
            assert answers(first, "sticky.policy.example", ecs, "AAAA") == answers(second, "sticky.policy.example", ecs, "AAAA")
        response = first.query("sticky.policy.example", ecs="81.2.69.0/24")  # GB: europe, four endpoints
        assert [o.scopelen for o in response.options] == [24]


def test_weighted_consistent_shares_follow_the_weights() -> None:
    with running(POLICY_ZONES, "--workers", "1") as server:
        firsts = collections.Counter(answers(server, "heavy.policy.example", ecs)[0] for ecs in client_networks(5000))
    for index, weight in enumerate((1, 2, 3, 4)):
        assert abs(firsts[f"192.0.2.3{index + 1}"] / 5000 - weight / 10) <= 0.03, firsts


def hashed_zone(port: int) -> str:
    return f"""
nameservers:
  ns1.hash.example.: [127.0.0.1]
health: {{type: http, port: {port}, path: /health, interval: {INTERVAL}, timeout: 0.3, fall: 1, rise: 1}}
pools:
  hashed:
    selection: consistent
    regions:
      only:
        endpoints: [{", ".join(HASHED)}]
records:
  www:
    - {{type: GEO, pool: hashed, max_answers: 1}}
"""


def test_a_failed_endpoint_moves_only_its_clients_and_they_come_back(tmp_path: Path) -> None:
    backends = Backends(HASHED)
    try:
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "hash.example.yaml").write_text(hashed_zone(backends.port))
        with running(zones, "--workers", "2", tmp=tmp_path) as server:
            networks = client_networks(5000)

            def mapping() -> list[str]:
                return [answers(server, "www.hash.example", ecs)[0] for ecs in networks]

            before = mapping()
            assert len(set(before)) == 10
            gone = HASHED[4]
            backends.stop(gone)
            wait_until(lambda: gone not in {answers(server, "www.hash.example", ecs)[0] for ecs in networks[:200]}, 5, "endpoint down")
            during = mapping()
            moved = [b for b, d in zip(before, during, strict=True) if b != d]
            assert set(moved) == {gone} and gone not in during  # only the clients it served, all of them
            assert len(moved) / len(networks) <= 0.1 + 0.02
            backends.start(gone)
            wait_until(lambda: answers(server, "www.hash.example", networks[before.index(gone)])[0] == gone, 5, "endpoint back")
            assert mapping() == before  # exactly the earlier mapping
    finally:
        backends.close()


# --- load shedding ---------------------------------------------------------------------------


def shed_zone(port: int) -> str:
    return f"""
nameservers:
  ns1.load.example.: [127.0.0.1]
health: {{type: http, port: {port}, path: /health, interval: {INTERVAL}, timeout: 0.3, fall: 1, rise: 1}}
pools:
  shedding:
    shed_load: {{high: 0.9, low: 0.5}}
    regions:
      near:
        endpoints: [{", ".join(NEAR)}]
      far:
        endpoints: [{", ".join(FAR)}]
  pushed:
    health: {{type: none, interval: 0.5}}
    shed_load: {{high: 90%, low: 50%}}
    regions:
      one:
        endpoints: [127.0.0.71, 127.0.0.72]
  rotating:
    health: {{type: none}}
    selection: round-robin
    regions:
      one:
        endpoints: [127.0.0.81, 127.0.0.82]
records:
  www:
    - {{type: GEO, pool: shedding, ttl: 5}}
  pushed:
    - {{type: GEO, pool: pushed}}
  rr:
    - {{type: GEO, pool: rotating, max_answers: 1}}
"""


@pytest.fixture
def shedding(tmp_path: Path) -> Iterator[tuple[RunningServer, Backends]]:
    backends = Backends(NEAR + FAR)
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "load.example.yaml").write_text(shed_zone(backends.port))
    server = start_server(zones, "--workers", "2", "--api-token", "s3cret", tmp=tmp_path)
    try:
        yield server, backends
    finally:
        server.stop()
        backends.close()


def answered(server: RunningServer, name: str = "www.load.example") -> set[str]:
    return set(answers(server, name))  # from 127.0.0.1: no location, regions in file order


def status_of(server: RunningServer, pool: str, region: str, address: str) -> dict[str, object]:
    _, report = api(server, "GET", "/v1/status")
    return next(e for e in report["pools"][pool]["regions"][region]["endpoints"] if e["address"] == address)


def test_a_busy_endpoint_leaves_and_returns_only_at_low(shedding: tuple[RunningServer, Backends]) -> None:
    server, backends = shedding
    assert answered(server) == set(NEAR)
    backends.set_load("0.95", NEAR[0])
    wait_until(lambda: answered(server) == {NEAR[1]}, 3, "busy endpoint leaves")
    assert status_of(server, "shedding", "near", NEAR[0])["busy"] is True
    assert status_of(server, "shedding", "near", NEAR[0])["state"] == "up"
    backends.set_load("70%", NEAR[0])  # below high, above low: still busy
    wait_until(lambda: status_of(server, "shedding", "near", NEAR[0])["load"] == 0.7, 3, "load 0.7 seen")
    assert status_of(server, "shedding", "near", NEAR[0])["busy"] is True
    assert answered(server) == {NEAR[1]}
    backends.set_load("0.5", NEAR[0])
    wait_until(lambda: answered(server) == set(NEAR), 3, "endpoint back at low")


def test_a_busy_region_spills_over_and_busy_comes_before_fail_open(shedding: tuple[RunningServer, Backends]) -> None:
    server, backends = shedding
    backends.set_load("0.95", *NEAR)
    wait_until(lambda: answered(server) == set(FAR), 3, "spill to the next region")
    _, report = api(server, "GET", "/v1/explain?name=www.load.example&type=A&client=127.0.0.1")
    assert report["geo"]["region"] == "far"
    assert report["geo"]["skipped"] == [{"region": "near", "reason": "every IPv4 endpoint is busy (shedding load)"}]
    backends.set_load("1", *FAR)
    wait_until(lambda: answered(server) == set(NEAR), 3, "everything busy: busy endpoints of the first region")
    _, report = api(server, "GET", "/v1/explain?name=www.load.example&type=A&client=127.0.0.1")
    assert report["geo"]["tier"] == "busy" and not report["geo"]["failed_open"]
    backends.set("fail", *NEAR)  # down beats busy: the busy but up far region answers, nobody fails open
    wait_until(lambda: answered(server) == set(FAR), 3, "busy but up before down")
    _, text = api(server, "GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    busy_answers = {s.labels["pool"]: s.value for s in families["geolb_geo_busy_answers"].samples if s.name.endswith("_total")}
    assert busy_answers["shedding"] >= 2
    loads = {s.labels["address"]: s.value for s in families["geolb_endpoint_load"].samples}
    assert loads[FAR[0]] == 1.0
    busy = {s.labels["address"]: s.value for s in families["geolb_endpoint_busy"].samples}
    assert busy[FAR[0]] == 1.0


def test_pushed_loads_shed_and_expire(shedding: tuple[RunningServer, Backends]) -> None:
    server, _ = shedding
    path = "/v1/endpoints/pushed/one/127.0.0.71/load"
    assert api(server, "POST", path, {"load": 0.95}, token=None)[0] == 401
    status, reply = api(server, "POST", path, {"load": 0.95})
    assert status == 200 and reply["busy"] is True and reply["load"] == 0.95
    assert answered(server, "pushed.load.example") == {"127.0.0.72"}  # the very next answer, from any worker
    assert status_of(server, "pushed", "one", "127.0.0.71")["load_source"] == "api"
    # interval 0.5 s: the report is forgotten after 1.5 s, and with it the busy state.
    wait_until(lambda: answered(server, "pushed.load.example") == {"127.0.0.71", "127.0.0.72"}, 4, "report expires")
    assert status_of(server, "pushed", "one", "127.0.0.71")["load"] is None
    assert api(server, "POST", path, {"load": "73%"})[1]["load"] == 0.73
    assert api(server, "POST", path, {"load": 1.5})[0] == 400
    assert api(server, "POST", path, {"weight": 1})[0] == 400
    assert api(server, "POST", "/v1/endpoints/pushed/one/127.0.0.99/load", {"load": 0.1})[0] == 404
    assert api(server, "POST", "/v1/endpoints/nope/one/127.0.0.71/load", {"load": 0.1})[0] == 404


def test_load_scales_round_robin_weights(shedding: tuple[RunningServer, Backends]) -> None:
    server, _ = shedding
    assert api(server, "POST", "/v1/endpoints/rotating/one/127.0.0.81/load", {"load": 0.5})[0] == 200
    # Weights 1:1 become 0.5:1; a load change alone is published within a second.
    wait_until(
        lambda: collections.Counter(answers(server, "rr.load.example", ecs)[0] for ecs in client_networks(60))["127.0.0.81"] <= 24,
        4,
        "load-scaled weights",
    )
    firsts = collections.Counter(answers(server, "rr.load.example", ecs)[0] for ecs in client_networks(600))
    assert abs(firsts["127.0.0.81"] / 600 - 1 / 3) <= 0.02, firsts
