"""SPEC §4 and §6 with real backends: checks, rise/fall, failover, fail open, forced states, API, metrics."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import Backends, self_signed
from tests.serverproc import DATA, RunningServer, api, geolb_command, start_server, wait_until

INTERVAL, TIMEOUT, FALL, RISE = 0.5, 0.3, 2, 2
LEAVE = INTERVAL * FALL + TIMEOUT + 1.5  # seconds until a failed endpoint must be gone
RETURN = INTERVAL * RISE + 1.5
EAST = ["127.0.0.11", "127.0.0.12"]
WEST = ["127.0.0.21"]
SOUTH = ["127.0.0.31"]
ALL = EAST + WEST + SOUTH
WEB_ENDPOINTS = [("east", a) for a in EAST] + [("west", a) for a in WEST] + [("south", a) for a in SOUTH]


def zone(port: int, extra: str = "") -> str:
    return f"""
nameservers:
  ns1.hc.example.: [192.0.2.53]
health:
  type: http
  port: {port}
  path: /health
  host: www.hc.example
  expect_body: healthy
  interval: {INTERVAL}
  timeout: {TIMEOUT}
  fall: {FALL}
  rise: {RISE}
pools:
  web:
    regions:
      east:
        location: [39.04, -77.49]
        endpoints: [{", ".join(EAST)}]
      west:
        location: [45.6, -121.2]
        endpoints: [{", ".join(WEST)}]
      south:
        location: [-23.5, -46.6]
        endpoints: [{", ".join(SOUTH)}]
  mirror:            # lists east's first endpoint again: the same check target
    regions:
      only:
        endpoints: [{EAST[0]}]
{extra}
records:
  www:
    - {{type: GEO, pool: web, ttl: 5}}
  mirror:
    - {{type: GEO, pool: mirror}}
"""


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    running = Backends(ALL)
    yield running
    running.close()


@pytest.fixture
def hc(backends: Backends, tmp_path: Path) -> Iterator[RunningServer]:
    backends.set("ok")
    for address in ALL:
        if address not in backends._runners:
            backends.start(address)
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "hc.example.yaml").write_text(zone(backends.port))
    server = start_server(zones, "--api-token", "s3cret", tmp=tmp_path)
    yield server
    assert server.stop() == 0


def answered(server: RunningServer, name: str = "www.hc.example") -> set[str]:
    response = server.query(name, "A")  # from 127.0.0.1: no location, regions in file order
    assert response.rcode() == dns.rcode.NOERROR
    return {rdata.to_text() for rrset in response.answer for rdata in rrset}


def endpoint_status(server: RunningServer, pool: str, region: str, address: str) -> dict[str, Any]:
    _, report = api(server, "GET", "/v1/status")
    for endpoint in report["pools"][pool]["regions"][region]["endpoints"]:
        if endpoint["address"] == address:
            return dict(endpoint)
    raise AssertionError(f"{address} not in /v1/status")


def test_healthy_start_answers_the_first_region(hc: RunningServer) -> None:
    assert answered(hc) == set(EAST)


def test_one_failing_endpoint_leaves_and_comes_back(hc: RunningServer, backends: Backends) -> None:
    backends.set("fail", EAST[1])
    wait_until(lambda: answered(hc) == {EAST[0]}, LEAVE, "failed endpoint leaves the answers")
    backends.set("ok", EAST[1])
    wait_until(lambda: answered(hc) == set(EAST), RETURN, "endpoint comes back")


def test_region_down_fails_over_to_the_next_and_back(hc: RunningServer, backends: Backends) -> None:
    backends.set("fail", *EAST)
    took = wait_until(lambda: answered(hc) == set(WEST), LEAVE, "failover to west")
    # Not before `fall` failures: the first may come at once, the others an interval (±10 %) apart.
    assert took >= INTERVAL * (FALL - 1) * 0.85, took
    backends.set("ok", *EAST)
    wait_until(lambda: answered(hc) == set(EAST), RETURN, "failback to east")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("fail", "status 503"),
        ("body", "body does not contain 'healthy'"),
        ("hang", "timeout after 0.3 s"),
        ("stopped", "connection refused"),
    ],
)
def test_each_kind_of_failure_takes_the_region_out(hc: RunningServer, backends: Backends, mode: str, reason: str) -> None:
    if mode == "stopped":
        backends.stop(WEST[0])
    else:
        backends.set(mode, WEST[0])
    backends.set("fail", *EAST)  # so that west would answer if it were up
    wait_until(lambda: answered(hc) == set(SOUTH), LEAVE, f"{mode}: west leaves")
    status = endpoint_status(hc, "web", "west", WEST[0])
    assert status["state"] == "down"
    assert status["last_error"] == reason
    assert status["failures"] >= FALL


def test_everything_down_fails_open(hc: RunningServer, backends: Backends) -> None:
    backends.set("fail")
    wait_until(lambda: all(endpoint_status(hc, "web", r, a)["state"] == "down" for r, a in WEB_ENDPOINTS), LEAVE, "all down")
    assert answered(hc) == set(EAST)  # as if all were healthy: the first region in order
    _, metrics = api(hc, "GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    fail_open = {s.labels["pool"]: s.value for s in families["geolb_geo_fail_open_answers"].samples if s.name.endswith("_total")}
    assert fail_open["web"] >= 1


def test_a_dead_endpoint_is_never_answered_not_even_first(backends: Backends, tmp_path: Path) -> None:
    backends.set("ok")
    backends.stop(EAST[1])
    try:
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "hc.example.yaml").write_text(zone(backends.port))
        server = start_server(zones, tmp=tmp_path)
        try:
            assert answered(server) == {EAST[0]}  # the very first query
            assert endpoint_status_token_free(server, EAST[1])["last_error"] == "connection refused"
        finally:
            server.stop()
    finally:
        backends.start(EAST[1])


def endpoint_status_token_free(server: RunningServer, address: str) -> dict[str, Any]:
    """The status of an east endpoint, read without a token (reading needs none)."""
    code, report = api(server, "GET", "/v1/status", token=None)
    assert code == 200
    return next(e for e in report["pools"]["web"]["regions"]["east"]["endpoints"] if e["address"] == address)


def test_forced_states_override_checks_and_survive_reload(hc: RunningServer, backends: Backends) -> None:
    path = f"/v1/endpoints/web/east/{EAST[0]}/force"
    assert api(hc, "POST", path, {"state": "down"})[0] == 200
    assert answered(hc) == {EAST[1]}  # at once: no wait for a check
    status = endpoint_status(hc, "web", "east", EAST[0])
    assert (status["state"], status["forced"], status["checked_state"]) == ("down", "down", "up")
    assert answered(hc, "mirror.hc.example") == {EAST[0]}  # forcing one pool's endpoint leaves other pools alone

    code, body = api(hc, "POST", "/v1/reload")
    assert code == 200, body
    assert answered(hc) == {EAST[1]}
    assert endpoint_status(hc, "web", "east", EAST[0])["forced"] == "down"

    backends.set("fail", EAST[1])
    wait_until(lambda: endpoint_status(hc, "web", "east", EAST[1])["state"] == "down", LEAVE, "east[1] down")
    assert api(hc, "POST", f"/v1/endpoints/web/east/{EAST[1]}/force", {"state": "up"})[0] == 200
    assert answered(hc) == {EAST[1]}  # forced up although its checks fail

    assert api(hc, "POST", path, {"state": None})[0] == 200
    assert api(hc, "POST", f"/v1/endpoints/web/east/{EAST[1]}/force", {"state": None})[0] == 200
    assert answered(hc) == {EAST[0]}  # back to the checks: east[1] is failing
    assert endpoint_status(hc, "web", "east", EAST[0])["forced"] is None


def test_force_errors(hc: RunningServer) -> None:
    for path, code in (
        ("/v1/endpoints/nope/east/127.0.0.11/force", 404),
        ("/v1/endpoints/web/nowhere/127.0.0.11/force", 404),
        ("/v1/endpoints/web/east/127.0.0.99/force", 404),
        ("/v1/endpoints/web/east/not-an-ip/force", 404),
    ):
        status, body = api(hc, "POST", path, {"state": "down"})
        assert status == code and "error" in body, (path, status, body)
    assert api(hc, "POST", "/v1/endpoints/web/east/127.0.0.11/force", {"state": "sideways"})[0] == 400
    assert api(hc, "POST", "/v1/endpoints/web/east/127.0.0.11/force", "up")[0] == 400


def test_token_guards_mutating_calls(hc: RunningServer) -> None:
    path = f"/v1/endpoints/web/east/{EAST[0]}/force"
    assert api(hc, "POST", path, {"state": "down"}, token=None)[0] == 401
    assert api(hc, "POST", path, {"state": "down"}, token="guess")[0] == 403
    assert api(hc, "POST", "/v1/reload", token=None)[0] == 401
    assert answered(hc) == set(EAST)  # nothing was forced
    assert api(hc, "GET", "/v1/status", token=None)[0] == 200  # reading needs no token
    assert api(hc, "GET", "/metrics", token=None)[0] == 200


def test_status_reports_every_endpoint(hc: RunningServer) -> None:
    code, report = api(hc, "GET", "/v1/status")
    assert code == 200
    assert report["zones"][0]["name"] == "hc.example."
    assert isinstance(report["zones"][0]["serial"], int)
    endpoint = report["pools"]["web"]["regions"]["east"]["endpoints"][0]
    assert endpoint["address"] == EAST[0]
    assert endpoint["state"] == "up" and endpoint["forced"] is None
    assert endpoint["successes"] >= 1 and endpoint["failures"] == 0
    assert endpoint["last_check"] is not None and endpoint["last_error"] is None
    assert endpoint["check"]["type"] == "http"
    assert report["health_checks_scheduled"] == len(ALL)


def test_checks_send_host_and_user_agent(hc: RunningServer, backends: Backends) -> None:
    headers = backends.last_headers[EAST[0]]
    assert headers["Host"] == "www.hc.example"
    assert headers["User-Agent"].startswith("geolb/")


def test_a_shared_target_is_probed_once_per_interval(hc: RunningServer, backends: Backends) -> None:
    before = dict(backends.hits)
    started = time.monotonic()
    wait_until(lambda: backends.hits[EAST[1]] - before.get(EAST[1], 0) >= 6, 10 * INTERVAL, "six checks of a lone target")
    shared = backends.hits[EAST[0]] - before.get(EAST[0], 0)  # in two pools
    alone = backends.hits[EAST[1]] - before.get(EAST[1], 0)
    assert abs(shared - alone) <= 2, (shared, alone)  # once per interval, not once per pool
    assert time.monotonic() - started >= 4 * INTERVAL  # and not faster than the interval


def test_metrics_parse_and_move(hc: RunningServer, backends: Backends) -> None:
    for _ in range(5):
        answered(hc)
    backends.set("fail", WEST[0])
    wait_until(lambda: endpoint_status(hc, "web", "west", WEST[0])["state"] == "down", LEAVE, "west down")
    _, text = api(hc, "GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    queries = {
        (s.labels["zone"], s.labels["qtype"], s.labels["rcode"]): s.value
        for s in families["geolb_dns_queries"].samples
        if s.name.endswith("_total")
    }
    assert queries[("hc.example.", "A", "NOERROR")] >= 5
    answers = {(s.labels["pool"], s.labels["region"]): s.value for s in families["geolb_geo_answers"].samples if s.name.endswith("_total")}
    assert answers[("web", "east")] >= 5
    up = {s.labels["address"]: s.value for s in families["geolb_endpoint_up"].samples if s.labels["pool"] == "web"}
    assert up[WEST[0]] == 0 and up[EAST[0]] == 1
    transitions = [s for s in families["geolb_health_transitions"].samples if s.name.endswith("_total") and s.labels["state"] == "down"]
    assert any(WEST[0] in s.labels["target"] for s in transitions)
    probes = [s for s in families["geolb_health_check_duration_seconds"].samples if s.name.endswith("_count")]
    assert sum(s.value for s in probes) >= len(ALL)


def tcp_zone(check: str, port: int) -> str:
    return f"""
nameservers:
  ns1.t.example.: [192.0.2.53]
health: {{{check}, port: {port}, interval: {INTERVAL}, timeout: {TIMEOUT}, fall: {FALL}, rise: {RISE}}}
pools:
  p:
    regions:
      first:
        endpoints: [127.0.0.41]
      second:
        endpoints: [127.0.0.42]
        health: {{type: none}}
records:
  www: [{{type: GEO, pool: p}}]
"""


def test_tcp_checks_and_none(tmp_path: Path) -> None:
    tcp = Backends(["127.0.0.41"])
    try:
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "t.example.yaml").write_text(tcp_zone("type: tcp", tcp.port))
        server = start_server(zones, tmp=tmp_path)
        try:
            assert answered(server, "www.t.example") == {"127.0.0.41"}
            tcp.stop("127.0.0.41")
            wait_until(lambda: answered(server, "www.t.example") == {"127.0.0.42"}, LEAVE, "tcp check fails")  # none: always up
            tcp.start("127.0.0.41")
            wait_until(lambda: answered(server, "www.t.example") == {"127.0.0.41"}, RETURN, "tcp check passes again")
        finally:
            assert server.stop() == 0
    finally:
        tcp.close()


@pytest.mark.parametrize(("verify", "up"), [("false", True), ("true", False)])
def test_https_self_signed(tmp_path: Path, verify: str, up: bool) -> None:
    backend = Backends(["127.0.0.51"], tls=self_signed(tmp_path))
    try:
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "t.example.yaml").write_text(
            tcp_zone(f"type: https, tls_verify: {verify}, path: /health, host: backend.test", backend.port).replace(
                "127.0.0.41", "127.0.0.51"
            )
        )
        server = start_server(zones, tmp=tmp_path)
        try:
            assert answered(server, "www.t.example") == ({"127.0.0.51"} if up else {"127.0.0.42"})
            _, report = api(server, "GET", "/v1/status", token=None)
            endpoint = report["pools"]["p"]["regions"]["first"]["endpoints"][0]
            if up:
                assert backend.last_headers["127.0.0.51"]["Host"] == "backend.test"
            else:
                assert "certificate" in (endpoint["last_error"] or "").lower(), endpoint
        finally:
            assert server.stop() == 0
    finally:
        backend.close()


def test_checks_leave_from_the_probe_source(tmp_path: Path) -> None:
    """SPEC §4 --probe-source: http checks and tcp connects come from the chosen address."""
    backend = Backends(["127.0.0.43"])
    listener = socket.socket()
    listener.bind(("127.0.0.44", 0))
    listener.listen(16)
    listener.settimeout(10)
    try:
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "src.example.yaml").write_text(f"""
nameservers:
  ns1.src.example.: [192.0.2.53]
health: {{interval: {INTERVAL}, timeout: {TIMEOUT}}}
pools:
  p:
    regions:
      only:
        endpoints:
          - {{address: 127.0.0.43, health: {{type: http, port: {backend.port}}}}}
          - {{address: 127.0.0.44, health: {{type: tcp, port: {listener.getsockname()[1]}}}}}
records:
  www: [{{type: GEO, pool: p}}]
""")
        server = start_server(zones, "--probe-source", "127.0.0.9", tmp=tmp_path)
        try:
            assert backend.last_remote["127.0.0.43"] == "127.0.0.9"  # the check before the first answer
            connection, peer = listener.accept()
            connection.close()
            assert peer[0] == "127.0.0.9"
        finally:
            assert server.stop() == 0
    finally:
        listener.close()
        backend.close()


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (["127.0.0.9", "127.0.0.10"], "--probe-source: one address per family"),
        (["192.0.2.1"], "--probe-source 192.0.2.1: cannot send from it"),
    ],
)
def test_probe_source_errors(tmp_path: Path, sources: list[str], message: str) -> None:
    args = [a for source in sources for a in ("--probe-source", source)]
    result = subprocess.run(
        geolb_command("serve", "--zones", str(DATA / "zones"), "--http", "off", "--listen", "127.0.0.1:0", *args),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and message in result.stderr
