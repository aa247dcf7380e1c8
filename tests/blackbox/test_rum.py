"""SPEC §10 RUM listener: GET /rum.js and POST /v1/rum only, strict beacons, client networks, rate limits, counters."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.backends import free_port
from tests.serverproc import RunningServer, api, own_cache, start_server

TRUSTED_PROXY = "127.0.2.1"  # the peer address of requests that come "through the proxy"
RATE = 5
ZONES = {
    "rum.example.yaml": """nameservers:
  ns1.rum.example.: [192.0.2.53]
health: {type: none}
pools:
  web:
    regions:
      us-east:
        location: [39.04, -77.49]
        endpoints: [127.0.0.11]
      eu-west:
        location: [53.35, -6.26]
        endpoints: [127.0.0.12]
records:
  www: {type: GEO, pool: web, ttl: 5}
""",
    "other.example.yaml": """nameservers:
  ns1.other.example.: [192.0.2.53]
health: {type: none}
pools:
  api:
    regions:
      only:
        endpoints: [127.0.0.13]
records:
  api: {type: GEO, pool: api}
""",
}


def rum_url(server: RunningServer) -> str:
    found = re.search(r", rum (\S+)$", server.ready_line.strip())
    assert found, server.ready_line
    return f"http://{found.group(1)}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    zones = tmp_path_factory.mktemp("rum-zones")
    for name, text in ZONES.items():
        (zones / name).write_text(text)
    cache = own_cache(tmp_path_factory.mktemp("rum-cache"))
    running = start_server(
        zones,
        "--rum-listen",
        "127.0.0.1:0",
        "--rum-rate",
        str(RATE),
        "--rum-trusted-proxy",
        f"{TRUSTED_PROXY}/32",
        "--rum-trusted-proxy",
        "10.0.0.0/8",
        "--workers",
        "1",
        "--cache-dir",
        str(cache),
    )
    yield running
    assert running.stop() == 0


def beacon(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"zone": "rum.example", "pool": "web", "rtt": {"us-east": 21.5, "eu-west": 88}}
    body.update(changes)
    return body


async def post(server: RunningServer, body: Any, *, source: str = "127.0.0.1", xff: str | None = None) -> int:
    """POST /v1/rum from `source` (a loopback address), with an X-Forwarded-For header when given."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "text/plain"} if xff is None else {"Content-Type": "text/plain", "X-Forwarded-For": xff}
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{rum_url(server)}/v1/rum", data=data, headers=headers) as reply,
    ):
        await reply.read()
        return reply.status


def counts(server: RunningServer) -> dict[str, int]:
    status, body = api(server, "GET", "/v1/status")
    assert status == 200
    beacons: dict[str, int] = body["rum"]["beacons"]
    return beacons


BAD_BODIES: list[tuple[str, bytes]] = [
    ("not JSON", b"zone=rum.example"),
    ("not UTF-8", b'{"zone": "\xff"}'),
    ("empty", b""),
    ("a JSON array", b"[]"),
    ("a JSON string", b'"rum.example"'),
    ("no zone", json.dumps({"pool": "web", "rtt": {"us-east": 20}}).encode()),
    ("zone not a string", json.dumps(beacon(zone=7)).encode()),
    ("no pool", json.dumps({"zone": "rum.example", "rtt": {"us-east": 20}}).encode()),
    ("no rtt", json.dumps({"zone": "rum.example", "pool": "web"}).encode()),
    ("rtt empty", json.dumps(beacon(rtt={})).encode()),
    ("rtt a list", json.dumps(beacon(rtt=[20, 30])).encode()),
    ("rtt a string", json.dumps(beacon(rtt={"us-east": "20"})).encode()),
    ("rtt true", json.dumps(beacon(rtt={"us-east": True})).encode()),
    ("rtt null", json.dumps(beacon(rtt={"us-east": None})).encode()),
    ("rtt zero", json.dumps(beacon(rtt={"us-east": 0})).encode()),
    ("rtt negative", json.dumps(beacon(rtt={"us-east": -3})).encode()),
    ("rtt over a minute", json.dumps(beacon(rtt={"us-east": 60000.5})).encode()),
    ("rtt NaN", b'{"zone": "rum.example", "pool": "web", "rtt": {"us-east": NaN}}'),
    ("rtt Infinity", b'{"zone": "rum.example", "pool": "web", "rtt": {"us-east": Infinity}}'),
    ("more regions than the pool", json.dumps(beacon(rtt={"us-east": 1, "eu-west": 2, "ap-south": 3})).encode()),
    ("token upper case", json.dumps(beacon(token="ABC")).encode()),
    ("token with a dot", json.dumps(beacon(token="a.b")).encode()),
    ("token over 63", json.dumps(beacon(token="a" * 64)).encode()),
    ("token empty", json.dumps(beacon(token="")).encode()),
    ("token a number", json.dumps(beacon(token=12)).encode()),
    ("an unknown key", json.dumps(beacon(extra=1)).encode()),
    ("a client address in the body", json.dumps(beacon(client="198.51.100.7")).encode()),
    ("over 4 kB", json.dumps(beacon(token="a", rtt={"us-east": 20}, zone="rum.example" + " " * 4100)).encode()),
]


@pytest.mark.parametrize(("why", "body"), BAD_BODIES, ids=[why for why, _ in BAD_BODIES])
async def test_bad_bodies_get_400_and_are_not_counted(server: RunningServer, why: str, body: bytes) -> None:
    before = counts(server)
    assert await post(server, body, source="127.0.4.1") == 400, why
    after = counts(server)
    assert after["bad_request"] == before["bad_request"] + 1
    assert after["accepted"] == before["accepted"]


NOT_FOUND: list[tuple[str, dict[str, Any]]] = [
    ("unknown zone", beacon(zone="nowhere.example")),
    ("unknown pool", beacon(pool="nope")),
    ("a pool of another zone", beacon(pool="api")),
    ("unknown region", beacon(rtt={"ap-south": 30})),
    ("a known and an unknown region", beacon(rtt={"us-east": 30, "ap-south": 30})),
]


@pytest.mark.parametrize(("why", "body"), NOT_FOUND, ids=[why for why, _ in NOT_FOUND])
async def test_unknown_zone_pool_or_region_get_404(server: RunningServer, why: str, body: dict[str, Any]) -> None:
    before = counts(server)
    assert await post(server, body, source="127.0.4.1") == 404, why
    after = counts(server)
    assert after["not_found"] == before["not_found"] + 1
    assert after["accepted"] == before["accepted"]


async def test_a_valid_beacon_is_accepted_zone_name_any_case(server: RunningServer) -> None:
    before = counts(server)
    assert await post(server, beacon(zone="RUM.Example."), source="127.0.5.1") == 204
    assert await post(server, beacon(rtt={"eu-west": 60000}, token="tok-1"), source="127.0.5.1") == 204
    assert counts(server)["accepted"] == before["accepted"] + 2


async def test_rate_limit_per_network_and_not_counted(server: RunningServer) -> None:
    """More than --rum-rate beacons a minute from one /24 get 429; another /24 is not affected."""
    before = counts(server)
    for _ in range(RATE):
        assert await post(server, beacon(), source="127.0.6.1") == 204
    assert await post(server, beacon(), source="127.0.6.1") == 429
    assert await post(server, beacon(), source="127.0.6.200") == 429  # the same /24
    assert await post(server, beacon(), source="127.0.7.1") == 204  # another /24
    after = counts(server)
    assert after["accepted"] == before["accepted"] + RATE + 1
    assert after["rate_limited"] == before["rate_limited"] + 2
    # A beacon refused for its body does not spend the network's allowance, nor does it get 429 instead.
    assert await post(server, b"[]", source="127.0.6.1") == 400


async def test_untrusted_peer_x_forwarded_for_is_ignored(server: RunningServer) -> None:
    """A peer that is no trusted proxy speaks for its own network, whatever X-Forwarded-For says."""
    for n in range(RATE):
        assert await post(server, beacon(), source="127.0.8.1", xff=f"198.18.{n}.1") == 204
    assert await post(server, beacon(), source="127.0.8.1", xff="198.18.99.1") == 429
    # ... and those networks named in the header were never charged.
    assert await post(server, beacon(), source=TRUSTED_PROXY, xff="198.18.0.1") == 204


async def test_trusted_proxy_x_forwarded_for_names_the_client(server: RunningServer) -> None:
    """Behind a trusted proxy the client is the left-most X-Forwarded-For address not in a trusted CIDR."""
    for n in range(RATE):  # different clients of one /24, each behind the proxy, seen through other proxies
        assert await post(server, beacon(), source=TRUSTED_PROXY, xff=f"203.0.113.{n + 1}, 10.1.2.3") == 204
    assert await post(server, beacon(), source=TRUSTED_PROXY, xff="203.0.113.77") == 429
    # Left-most not trusted: trusted hops on the left are passed over, later entries are not the client.
    assert await post(server, beacon(), source=TRUSTED_PROXY, xff="10.9.9.9, 203.0.113.200, 192.0.2.1") == 429
    assert await post(server, beacon(), source=TRUSTED_PROXY, xff="192.0.2.1, 203.0.113.200") == 204
    # Another network through the same proxy is its own, IPv6 by /48.
    for n in range(RATE):
        assert await post(server, beacon(), source=TRUSTED_PROXY, xff=f"[2001:db8:aa:{n}::1]:443") == 204
    assert await post(server, beacon(), source=TRUSTED_PROXY, xff="2001:db8:aa:ffff::9") == 429
    assert await post(server, beacon(), source=TRUSTED_PROXY, xff="2001:db8:ab::9") == 204


async def test_trusted_proxy_without_a_client_is_refused(server: RunningServer) -> None:
    before = counts(server)
    assert await post(server, beacon(), source=TRUSTED_PROXY) == 400
    assert await post(server, beacon(), source=TRUSTED_PROXY, xff="10.0.0.1, unknown") == 400
    assert counts(server)["bad_request"] == before["bad_request"] + 2


async def test_only_rum_js_and_beacons_are_served(server: RunningServer) -> None:
    """The API is never reachable on the RUM listener."""
    base = rum_url(server)
    async with aiohttp.ClientSession() as session:
        for method, path in [
            ("GET", "/v1/status"),
            ("GET", "/metrics"),
            ("GET", "/healthz"),
            ("GET", "/"),
            ("GET", "/v1/explain?name=www.rum.example&client=192.0.2.1"),
            ("GET", "/v1/events"),
            ("GET", "/static/page.js"),
            ("POST", "/v1/reload"),
            ("POST", "/v1/endpoints/web/us-east/127.0.0.11/force"),
            ("GET", "/v1/rum"),
            ("PUT", "/v1/rum"),
            ("POST", "/rum.js"),
        ]:
            async with session.request(method, base + path) as reply:
                assert reply.status == 404, (method, path)
        async with session.options(base + "/v1/rum", headers={"Origin": "https://www.example.org"}) as reply:
            assert reply.status == 204
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in reply.headers["Access-Control-Allow-Methods"]


async def test_rum_js_is_served_small_and_configured_per_pool(server: RunningServer) -> None:
    base = rum_url(server)
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/rum.js") as reply:
            assert reply.status == 200
            assert reply.content_type == "text/javascript"
            script = await reply.read()
            etag = reply.headers["ETag"]
        assert 0 < len(script) < 4096
        assert b"sendBeacon" in script and b"getEntriesByName" in script
        async with session.get(base + "/rum.js", headers={"If-None-Match": etag}) as reply:
            assert reply.status == 304
        async with session.get(base + "/rum.js", params={"zone": "rum.example", "pool": "web"}) as reply:
            assert reply.status == 200
            configured = (await reply.read()).decode()
        found = re.search(r"\}\)\((\{.*\})\);\s*$", configured)
        assert found, configured[-300:]
        assert json.loads(found.group(1)) == {"zone": "rum.example", "pool": "web", "rum_name": None, "regions": {}}
        for params in ({"zone": "rum.example", "pool": "api"}, {"zone": "nowhere.example", "pool": "web"}):
            async with session.get(base + "/rum.js", params=params) as reply:
                assert reply.status == 404


def test_status_and_metrics_show_beacons(server: RunningServer) -> None:
    status, body = api(server, "GET", "/v1/status")
    assert status == 200
    assert body["rum"]["listen"] == rum_url(server).removeprefix("http://")
    pool = body["pools"]["web"]
    assert pool["steering"] == "geo"
    assert set(pool["latency"]["beacons"]) == {"accepted", "bad_request", "not_found", "rate_limited"}
    status, text = api(server, "GET", "/metrics")
    assert status == 200
    for result in ("accepted", "bad_request", "not_found", "rate_limited"):
        assert f'geolb_rum_beacons_total{{result="{result}"}}' in text


def test_listener_off_by_default(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    for name, text in ZONES.items():
        (zones / name).write_text(text)
    running = start_server(zones, "--workers", "1", "--cache-dir", str(own_cache(tmp_path / "cache")))
    try:
        assert ", rum " not in running.ready_line
        status, body = api(running, "GET", "/v1/status")
        assert status == 200 and body["rum"] is None
    finally:
        assert running.stop() == 0


def test_replace_takes_over_the_rum_address(tmp_path: Path) -> None:
    """--replace: the new instance binds the RUM address once the old one has exited, and says so when ready."""
    zones = tmp_path / "zones"
    zones.mkdir()
    for name, text in ZONES.items():
        (zones / name).write_text(text)
    port = free_port(["127.0.0.1"])
    rum = f"127.0.0.1:{port}"
    old = start_server(zones, "--workers", "1", "--rum-listen", rum, "--cache-dir", str(own_cache(tmp_path / "old")))
    try:
        dns_address = f"127.0.0.1:{old.port}"
        new = start_server(
            zones, "--workers", "1", "--replace", "--rum-listen", rum, "--cache-dir", str(own_cache(tmp_path / "new")),
            listen=(dns_address,), timeout=40,
        )  # fmt: skip
        try:
            assert old.proc.wait(timeout=20) == 0
            assert rum_url(new) == f"http://{rum}"
            assert asyncio.run(post(new, beacon(), source="127.0.9.1")) == 204
            status, body = api(new, "GET", "/v1/status")
            assert status == 200 and body["rum"]["beacons"]["accepted"] == 1  # the new instance took it
        finally:
            assert new.stop() == 0
    finally:
        old.stop()


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
async def test_compressed_beacons_get_400_without_a_traceback(server: RunningServer, encoding: str) -> None:
    """Junk claiming a Content-Encoding is a bad beacon like any other: 400, counted as such, not a 500."""
    before = counts(server)
    connector = aiohttp.TCPConnector(local_addr=("127.0.4.2", 0))
    headers = {"Content-Type": "text/plain", "Content-Encoding": encoding}
    async with (
        aiohttp.ClientSession(connector=connector, auto_decompress=False) as session,
        session.post(f"{rum_url(server)}/v1/rum", data=b"junk", headers=headers) as reply,
    ):
        assert reply.status == 400
    after = counts(server)
    assert after["bad_request"] == before["bad_request"] + 1 and after["accepted"] == before["accepted"]
