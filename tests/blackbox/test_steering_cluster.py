"""SPEC §10 with §8: vantage points (--location) and steering figures shared through a real etcd.

Two regions on loopback backends that answer each instance's checks (--probe-source) after a
different delay, as if the instances stood in different places; clients placed by ECS with the
GeoIP test database (81.2.69.160/27 is London, 216.160.83.56/29 is Milton, WA).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from geolb.cluster.etcd import EtcdClient
from geolb.cluster.member import RUM_CHUNK, ClusterMember
from geolb.health.state import HealthState
from geolb.steer.vantage import VantageReport
from tests.backends import Backends
from tests.etcdproc import Etcd
from tests.serverproc import DATA, RunningServer, start_server, wait_until

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server is not installed (.ci/run installs it)")


CITY_DB = DATA / "GeoIP2-City-Test.mmdb"
EAST, WEST = "127.0.0.11", "127.0.0.12"  # regions in Frankfurt and Virginia
LONDON, MILTON = "81.2.69.160/27", "216.160.83.56/29"  # Frankfurt is nearer London, Virginia nearer Milton
# Instance a stands in London and b in Milton; each sees the far region's backend fast and the near one slow,
# so that measured figures turn the distance order round for the clients near each.
INSTANCES = {
    "a": {"location": "51.5,-0.1", "source": "127.0.0.2", "delays": {EAST: 0.15, WEST: 0.01}},
    "b": {"location": "47.3,-122.3", "source": "127.0.0.3", "delays": {EAST: 0.01, WEST: 0.15}},
}


def zone(port: int) -> str:
    return f"""
nameservers:
  ns1.steer.example.: [127.0.0.1]
health: {{type: http, port: {port}, path: /health, interval: 0.3, timeout: 1, fall: 2, rise: 1}}
pools:
  web:
    steering: latency
    regions:
      east:
        location: [50.11, 8.68]
        endpoints: [{EAST}]
      west:
        location: [39.04, -77.49]
        endpoints: [{WEST}]
records:
  www:
    - {{type: GEO, pool: web, ttl: 5}}
"""


def answer(server: RunningServer, ecs: str) -> set[str]:
    return {r.to_text() for rrset in server.query("www.steer.example", "A", ecs=ecs).answer for r in rrset}


@pytest.fixture
def backends() -> Iterator[Backends]:
    running = Backends([EAST, WEST])
    for spec in INSTANCES.values():
        for address, seconds in spec["delays"].items():  # type: ignore[attr-defined]
            running.delay_for(address, str(spec["source"]), seconds)
    yield running
    running.close()


@pytest.fixture
def zones(tmp_path: Path, backends: Backends) -> Path:
    folder = tmp_path / "zones"
    folder.mkdir()
    (folder / "steer.example.yaml").write_text(zone(backends.port))
    return folder


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    running = Etcd(tmp_path / "etcd")
    running.start()
    yield running
    running.kill()


def start(zones: Path, tmp: Path, name: str, *extra: str) -> RunningServer:
    spec = INSTANCES[name]
    return start_server(
        zones,
        "--workers", "1", "--instance", name, "--location", str(spec["location"]), "--probe-source", str(spec["source"]), *extra,
        geoip=CITY_DB, tmp=tmp,
    )  # fmt: skip


def etcd_values(etcd: Etcd, prefix: str) -> dict[str, bytes]:
    """Every key under `prefix` and its value, read through etcd's JSON gateway."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode()})
    request = urllib.request.Request(f"http://127.0.0.1:{etcd.client_port}/v3/kv/range", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        kvs = json.loads(reply.read()).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")) for kv in kvs}


# --- vantage points ------------------------------------------------------------------------


def test_each_instance_orders_the_clients_near_it_by_its_own_figures(zones: Path, tmp_path: Path) -> None:
    """Alone, each instance's figures speak only for clients within vantage_radius of it: a's London clients
    go west (a measured it fast), its Milton clients by distance (west); b the other way round."""
    a = start(zones, tmp_path, "a")
    b = start(zones, tmp_path, "b")
    try:
        wait_until(lambda: answer(a, LONDON) == {WEST} and answer(b, MILTON) == {EAST}, 10, "clients near each instance by its figures")
        assert answer(a, MILTON) == {WEST}  # nothing measured near Milton on a: distance
        assert answer(b, LONDON) == {EAST}  # nor near London on b
    finally:
        a.stop()
        b.stop()


def test_clustered_instances_order_clients_near_each_by_that_ones_figures(zones: Path, tmp_path: Path, etcd: Etcd) -> None:
    prefix = f"/steer-{os.getpid()}"
    cluster = ("--cluster", etcd.url, "--cluster-prefix", prefix)
    a = start(zones, tmp_path, "a", *cluster)
    b = start(zones, tmp_path, "b", *cluster)
    try:
        wait_until(
            lambda: all(answer(s, LONDON) == {WEST} and answer(s, MILTON) == {EAST} for s in (a, b)),
            10,
            "every instance orders London's clients by a's figures and Milton's by b's",
        )
        # What went through etcd: each instance's small report, on its lease, with its own view of the regions.
        values = etcd_values(etcd, f"{prefix}/steering/")
        reports = {name: VantageReport.from_bytes(name, values[f"{prefix}/steering/web/{name}/vantage"]) for name in INSTANCES}
        assert dict(reports["a"].rtt)["west"] < 100 < dict(reports["a"].rtt)["east"]
        assert dict(reports["b"].rtt)["east"] < 100 < dict(reports["b"].rtt)["west"]
        assert all(len(value) < 200 for key, value in values.items() if key.endswith("/vantage"))
        # b stops: its lease ends with it, and with its report Milton's clients go back to distance on a.
        b.stop()
        wait_until(lambda: answer(a, MILTON) == {WEST}, 5, "b's figures gone with it")
        assert f"{prefix}/steering/web/b/vantage" not in etcd_values(etcd, f"{prefix}/steering/")
        assert answer(a, LONDON) == {WEST}
    finally:
        a.stop()
        b.stop()


# --- RUM figures -----------------------------------------------------------------------------


def test_beacons_to_one_instance_steer_all_three_alike_within_a_second(zones: Path, tmp_path: Path, etcd: Etcd) -> None:
    cluster = ("--cluster", etcd.url, "--cluster-prefix", f"/steer-rum-{os.getpid()}")
    rum = ("--rum-listen", "127.0.0.1:0", "--rum-trusted-proxy", "127.0.0.0/8")
    servers = [start_server(zones, "--workers", "1", "--instance", name, *cluster, *rum, geoip=CITY_DB, tmp=tmp_path) for name in "abc"]
    try:
        assert all(answer(s, LONDON) == {EAST} for s in servers)  # distance: no instance has a --location
        found = re.search(r", rum (\S+)$", servers[0].ready_line.strip())
        assert found, servers[0].ready_line
        body = json.dumps({"zone": "steer.example", "pool": "web", "rtt": {"east": 150, "west": 20}}).encode()
        for _ in range(5):  # min_samples
            request = urllib.request.Request(f"http://{found.group(1)}/v1/rum", data=body, method="POST")
            request.add_header("Content-Type", "text/plain")
            request.add_header("X-Forwarded-For", "81.2.69.142")
            with urllib.request.urlopen(request, timeout=5) as reply:
                assert reply.status in (200, 202, 204)
        wait_until(lambda: answer(servers[0], LONDON) == {WEST}, 5, "the instance that took the beacons follows them")
        wait_until(lambda: all(answer(s, LONDON) == {WEST} for s in servers), 1.0, "the others within a second")
        assert all(answer(s, MILTON) == {WEST} for s in servers)  # only that network moved (Milton: distance, west)
        assert all(answer(s, "2.125.160.216/29") == {EAST} for s in servers)
    finally:
        for server in servers:
            server.stop()


async def test_a_peer_gets_whole_rum_exports_in_pieces_and_loses_them_with_the_lease(etcd: Etcd) -> None:
    """ClusterMember on a real etcd: an export of several RUM_CHUNK pieces arrives whole and only whole;
    a change re-sends only the pieces that changed; a late joiner reads what is there; a stop withdraws all."""
    endpoints = [f"http://127.0.0.1:{etcd.client_port}"]
    prefix = f"/members-{os.getpid()}"
    heard: dict[str, asyncio.Queue[tuple[str, str, str, object]]] = {"b": asyncio.Queue(), "c": asyncio.Queue()}

    def member(name: str) -> ClusterMember:
        queue = heard.get(name)
        return ClusterMember(
            EtcdClient(endpoints),
            prefix,
            name,
            HealthState(),
            lambda: None,
            on_rum=None if queue is None else lambda *args: queue.put_nowait(("rum", *args)),
            on_vantage=None if queue is None else lambda *args: queue.put_nowait(("vantage", *args)),
        )

    async def next_heard(name: str) -> tuple[str, str, str, object]:
        return await asyncio.wait_for(heard[name].get(), 5)

    members = {name: member(name) for name in ("a", "b")}
    tasks = {name: asyncio.create_task(m.run()) for name, m in members.items()}
    try:
        assert all([await m.connected(5) for m in members.values()])
        export = os.urandom(2 * RUM_CHUNK + 1000)  # three pieces
        report = VantageReport("a", (51.5, -0.1), (("east", 150.0), ("west", 10.0)))
        members["a"].publish_rum("web", export)
        members["a"].publish_vantage("web", report)
        assert {await next_heard("b") for _ in range(2)} == {("rum", "a", "web", export), ("vantage", "a", "web", report)}

        async def latest(kind: str) -> object:
            client = EtcdClient(endpoints)
            try:
                kvs, _ = await client.range_prefix(f"{prefix}/steering/web/a/{kind}")
                return {kv.key.rsplit("/", 1)[-1]: kv.mod_revision for kv in kvs}
            finally:
                await client.close()

        before = await latest("rum")
        assert set(before) == {"rum", "0", "1", "2"}
        changed = export[: RUM_CHUNK + 10] + bytes([export[RUM_CHUNK + 10] ^ 1]) + export[RUM_CHUNK + 11 :]
        members["a"].publish_rum("web", changed)
        assert await next_heard("b") == ("rum", "a", "web", changed)  # no half-way export in between
        after = await latest("rum")
        assert after["0"] == before["0"] and after["2"] == before["2"] and after["1"] > before["1"]

        members["c"] = member("c")  # a late joiner reads what etcd holds
        tasks["c"] = asyncio.create_task(members["c"].run())
        assert {await next_heard("c") for _ in range(2)} == {("rum", "a", "web", changed), ("vantage", "a", "web", report)}

        members["a"].publish_rum("web", b"small")
        assert await next_heard("b") == ("rum", "a", "web", b"small")
        assert await next_heard("c") == ("rum", "a", "web", b"small")
        deadline = time.monotonic() + 5  # the pieces no longer needed go after the head that no longer names them
        while set(await latest("rum")) != {"rum", "0"}:
            assert time.monotonic() < deadline, await latest("rum")
            await asyncio.sleep(0.05)

        tasks.pop("a").cancel()
        await members["a"].stop()  # revokes its lease: everything it published goes
        assert {await next_heard("b") for _ in range(2)} == {("rum", "a", "web", None), ("vantage", "a", "web", None)}
        assert {await next_heard("c") for _ in range(2)} == {("rum", "a", "web", None), ("vantage", "a", "web", None)}
    finally:
        for name, task in tasks.items():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await members[name].stop()
