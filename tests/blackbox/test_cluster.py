"""SPEC §8 with a real etcd and three geolb instances probing from 127.0.0.21, .22, .23 (--probe-source)."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import Backends
from tests.etcdproc import Etcd
from tests.serverproc import RunningServer, api, start_server, wait_until

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server is not installed (.ci/run installs it)")

FIRST, SECOND = "127.0.0.91", "127.0.0.92"
SOURCES = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
NAMES = ["a", "b", "c"]


def zone(port: int, quorum: str) -> str:
    return f"""
nameservers:
  ns1.cl.example.: [127.0.0.1]
health: {{type: http, port: {port}, path: /health, interval: 0.3, timeout: 0.3, fall: 1, rise: 1, quorum: {quorum}}}
pools:
  web:
    regions:
      first:
        endpoints: [{FIRST}]
      second:
        endpoints: [{SECOND}]
records:
  www:
    - {{type: GEO, pool: web, ttl: 5}}
"""


@dataclass
class Cluster:
    etcd: Etcd
    backends: Backends
    zones: Path
    tmp: Path
    servers: list[RunningServer]

    def start(self, index: int) -> RunningServer:
        server = start_server(
            self.zones,
            "--workers", "1", "--cluster", self.etcd.url, "--cluster-prefix", f"/test-{id(self)}",
            "--instance", NAMES[index], "--probe-source", SOURCES[index], "--api-token", "s3cret",
            tmp=self.tmp,
        )  # fmt: skip
        self.servers[index] = server
        return server

    def answers(self) -> list[set[str]]:
        return [{r.to_text() for rrset in s.query("www.cl.example", "A").answer for r in rrset} for s in self.servers]

    def all_answer(self, address: str) -> bool:
        return all(answer == {address} for answer in self.answers())

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    quorum = getattr(request, "param", "majority")
    etcd = Etcd(tmp_path / "etcd")
    etcd.start()
    backends = Backends([FIRST, SECOND])
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "cl.example.yaml").write_text(zone(backends.port, quorum))
    running = Cluster(etcd, backends, zones, tmp_path, [None, None, None])  # type: ignore[list-item]
    try:
        for index in range(3):
            running.start(index)
        wait_until(lambda: all(_instances(s) == 3 for s in running.servers), 5, "every instance sees the others")
        yield running
    finally:
        for server in running.servers:
            if server is not None:
                server.stop()
        backends.close()
        etcd.kill()


def _status(server: RunningServer) -> dict[str, object]:
    return api(server, "GET", "/v1/status")[1]  # type: ignore[no-any-return]


def _instances(server: RunningServer) -> int:
    cluster = _status(server)["cluster"]
    assert isinstance(cluster, dict)
    return len(cluster["instances"]) if cluster["connected"] else 0


def _view(server: RunningServer, name: str) -> str | None:
    report = _status(server)
    endpoint = report["pools"]["web"]["regions"]["first"]["endpoints"][0]  # type: ignore[index]
    return endpoint.get("instances", {}).get(name)  # type: ignore[no-any-return]


def stays(predicate: object, seconds: float) -> None:
    """`predicate` holds every time it is looked at for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()  # type: ignore[operator]
        time.sleep(0.1)


def test_majority_one_failing_view_is_outvoted_two_fail_over(cluster: Cluster) -> None:
    assert cluster.all_answer(FIRST)
    cluster.backends.fail_for(FIRST, SOURCES[0])
    wait_until(lambda: _view(cluster.servers[1], "a") == "down", 3, "b learns a's view")
    stays(lambda: cluster.all_answer(FIRST), 1.5)  # one of three: not a majority
    cluster.backends.fail_for(FIRST, SOURCES[0], SOURCES[1])
    wait_until(lambda: cluster.all_answer(SECOND), 3, "two of three: every instance fails over")
    cluster.backends.fail_for(FIRST)
    wait_until(lambda: cluster.all_answer(FIRST), 3, "back")


@pytest.mark.parametrize("cluster", ["any"], indirect=True)
def test_quorum_any_one_failing_view_is_enough(cluster: Cluster) -> None:
    cluster.backends.fail_for(FIRST, SOURCES[2])
    wait_until(lambda: cluster.all_answer(SECOND), 3, "any: one view takes it out everywhere")


@pytest.mark.parametrize("cluster", ["all"], indirect=True)
def test_quorum_all_needs_every_view(cluster: Cluster) -> None:
    cluster.backends.fail_for(FIRST, SOURCES[0], SOURCES[1])
    wait_until(lambda: _view(cluster.servers[2], "b") == "down", 3, "c learns b's view")
    stays(lambda: cluster.all_answer(FIRST), 1.0)
    cluster.backends.fail_for(FIRST, *SOURCES)
    wait_until(lambda: cluster.all_answer(SECOND), 3, "all three: down")


def test_identical_answers_for_random_clients(cluster: Cluster) -> None:
    clients = [f"{11 + i % 200}.{i * 7 % 256}.{i * 13 % 256}.0/24" for i in range(200)]
    cluster.backends.fail_for(FIRST, SOURCES[0], SOURCES[2])
    wait_until(lambda: cluster.all_answer(SECOND), 3, "failover")
    time.sleep(1.0)  # "within 1 s after each change"
    for ecs in clients:
        answers = [sorted(r.to_text() for rrset in s.query("www.cl.example", "A", ecs=ecs).answer for r in rrset) for s in cluster.servers]
        assert answers[0] == answers[1] == answers[2], ecs


def test_a_forced_state_reaches_every_instance_and_survives_restarts(cluster: Cluster) -> None:
    path = f"/v1/endpoints/web/first/{FIRST}/force"
    assert api(cluster.servers[0], "POST", path, {"state": "down"})[0] == 200
    wait_until(lambda: cluster.all_answer(SECOND), 1.0, "forced down through a, obeyed by b and c")
    cluster.stop()
    for index in range(3):
        cluster.start(index)
    assert cluster.all_answer(SECOND)  # from the first answer after the restart
    assert api(cluster.servers[2], "POST", path, {"state": None})[0] == 200
    wait_until(lambda: cluster.all_answer(FIRST), 1.0, "cleared through c")


def test_a_killed_instance_leaves_the_quorum_when_its_lease_ends(cluster: Cluster) -> None:
    cluster.backends.fail_for(FIRST, SOURCES[1], SOURCES[2])
    wait_until(lambda: cluster.all_answer(SECOND), 3, "b and c see it down: a majority")
    cluster.servers[2].proc.send_signal(signal.SIGKILL)
    cluster.servers[2].proc.wait(timeout=5)
    live = cluster.servers[:2]
    # a (up) and b (down): one of two is not more than half; c's vote goes when its 10 s lease ends.
    wait_until(lambda: all(_instances(s) == 2 for s in live), 15, "c drops out")
    wait_until(lambda: all({r.to_text() for rrset in s.query("www.cl.example").answer for r in rrset} == {FIRST} for s in live), 2, "a+b")
    cluster.servers = [*live, cluster.start(2)]  # for the fixture's clean-up


def test_etcd_down_instances_keep_answering_and_rejoin(cluster: Cluster) -> None:
    cluster.etcd.kill()
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        for server in cluster.servers:
            response = server.query("www.cl.example", "A")
            assert response.rcode() == 0 and response.answer
    wait_until(lambda: all(_instances(s) == 0 for s in cluster.servers), 5, "they notice")
    cluster.backends.fail_for(FIRST, *SOURCES)  # everyone's own probes see it down
    wait_until(lambda: cluster.all_answer(SECOND), 20, "own probes decide once the lease is past")
    cluster.backends.fail_for(FIRST)
    cluster.etcd.start()
    wait_until(lambda: all(_instances(s) == 3 for s in cluster.servers), 15, "rejoin")
    wait_until(lambda: cluster.all_answer(FIRST), 3, "shared again")
    for server in cluster.servers:
        assert "Traceback" not in server.stderr()
