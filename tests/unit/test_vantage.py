"""steer/vantage.py: endpoint medians, region figures from healthy endpoints, reports across the cluster, evidence versions;
and the check time a vantage point records (health/probe.py Outcome.rtt)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from types import MappingProxyType

import pytest
from aiohttp import web

from geolb import model
from geolb.health.httpcheck import HttpChecker
from geolb.health.probe import probe
from geolb.health.state import HealthView
from geolb.steer.aggregate import RumStore
from geolb.steer.evidence import PoolEvidence, Vantage
from geolb.steer.feed import EXPORT_SPACING, RumShare
from geolb.steer.vantage import VantageBoard, VantageBook, VantageReport, moved

HERE = model.Where("test.yaml", 1)


def check(kind: str = "http", port: int = 80, timeout: float = 2.0) -> model.HealthCheck:
    return model.HealthCheck(kind, port, "/health", None, (200,), None, 1.0, timeout, 2, 2, True)


def endpoint(address: str, kind: str = "http") -> model.Endpoint:
    return model.Endpoint(ipaddress.ip_address(address), 1, check(kind), HERE)


def region(name: str, *addresses: str) -> model.Region:
    return model.Region(name, None, frozenset(), frozenset(), tuple(endpoint(a) for a in addresses), HERE)


POOL = model.Pool(
    "web",
    "example.com.",
    (region("eu", "192.0.2.1", "192.0.2.2"), region("us", "198.51.100.1"), region("ap", "203.0.113.1")),
    (),
    HERE,
    steering="latency",
)
AMS = (52.4, 4.9)


def key(address: str) -> model.HealthKey:
    return endpoint(address).key


# --- the book --------------------------------------------------------------------------


def test_an_endpoint_rtt_is_the_median_of_its_last_five_checks() -> None:
    book = VantageBook()
    assert book.rtt(key("192.0.2.1")) is None
    for ms in (10, 11, 500, 12, 9):  # one slow check does not move the figure
        book.record(key("192.0.2.1"), ms)
    assert book.rtt(key("192.0.2.1")) == 11
    for ms in (40, 41, 42):  # the oldest drop out: 12 9 40 41 42
        book.record(key("192.0.2.1"), ms)
    assert book.rtt(key("192.0.2.1")) == 40
    book.record(key("192.0.2.1"), float("nan"))  # never a figure
    book.record(key("192.0.2.1"), -1.0)
    assert book.rtt(key("192.0.2.1")) == 40


def test_a_region_is_as_fast_as_its_best_healthy_measured_endpoint() -> None:
    book = VantageBook()
    for _ in range(5):
        book.record(key("192.0.2.1"), 30.0)
        book.record(key("192.0.2.2"), 20.0)
        book.record(key("198.51.100.1"), 80.0)
    all_up = HealthView()
    assert book.vantage(POOL, all_up, "a", AMS) == Vantage("a", AMS, (20.0, 80.0, None))  # ap: never measured
    second_down = HealthView(down=frozenset({key("192.0.2.2")}))
    assert book.vantage(POOL, second_down, "a", AMS).rtt == (30.0, 80.0, None)
    # forced down counts as down: the region has no healthy endpoint left
    forced = HealthView(
        down=frozenset({key("192.0.2.2")}),
        forced=MappingProxyType({("web", "eu", ipaddress.ip_address("192.0.2.1")): False}),
    )
    assert book.vantage(POOL, forced, "a", AMS).rtt == (None, 80.0, None)


def test_forgotten_checks_lose_their_times() -> None:
    book = VantageBook()
    book.record(key("192.0.2.1"), 5.0)
    book.record(key("192.0.2.2"), 6.0)
    book.forget({key("192.0.2.2")})
    assert book.rtt(key("192.0.2.1")) is None
    assert book.rtt(key("192.0.2.2")) == 6.0


# --- reports ---------------------------------------------------------------------------


def test_a_report_is_keyed_by_region_name_and_lays_on_any_region_order() -> None:
    vantage = Vantage("a", AMS, (20.04, 80.0, None))
    report = VantageReport.of(vantage, ("eu", "us", "ap"))
    assert report == VantageReport("a", AMS, (("eu", 20.0), ("us", 80.0)))
    assert report.vantage(("us", "new", "eu")) == Vantage("a", AMS, (80.0, None, 20.0))
    assert VantageReport.from_bytes("a", report.to_bytes()) == report


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"location": [52.4], "rtt": {}}',
        b'{"location": [95, 0], "rtt": {}}',
        b'{"location": [0, 0], "rtt": {"eu": -1}}',
        b'{"location": [0, 0], "rtt": {"eu": true}}',
        b'{"location": [0, 0], "rtt": {"eu": "5"}}',
        b'{"location": [0, 0], "rtt": {}, "more": 1}',
        b"\xff\xfe",
    ],
)
def test_a_bad_report_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        VantageReport.from_bytes("a", data)


@pytest.mark.parametrize(
    ("before", "after", "publish"),
    [
        ({"eu": 20.0}, {"eu": 20.5}, False),  # jitter
        ({"eu": 20.0}, {"eu": 21.5}, True),  # > 5 % and > 1 ms
        ({"eu": 200.0}, {"eu": 208.0}, False),  # 4 %
        ({"eu": 200.0}, {"eu": 211.0}, True),
        ({"eu": 0.3}, {"eu": 1.2}, False),  # < 1 ms on loopback
        ({"eu": 20.0}, {"eu": 20.0, "us": 90.0}, True),  # a region newly measured
        ({"eu": 20.0, "us": 90.0}, {"eu": 20.0}, True),  # or no longer
    ],
)
def test_only_real_moves_are_republished(before: dict[str, float], after: dict[str, float], publish: bool) -> None:
    old = VantageReport("a", AMS, tuple(sorted(before.items())))
    new = VantageReport("a", AMS, tuple(sorted(after.items())))
    assert moved(old, new) is publish
    assert moved(None, new) and moved(old, None) and not moved(None, None)
    assert moved(old, VantageReport("a", (0.0, 0.0), old.rtt))


# --- the board -------------------------------------------------------------------------


def test_the_board_orders_instances_by_name_and_versions_evidence_by_content() -> None:
    board = VantageBoard()
    regions = ("eu", "us")
    base = PoolEvidence.empty("web", regions)
    assert board.put("web", "b", VantageReport("b", (40.7, -74.0), (("us", 10.0),)))
    assert board.put("web", "a", VantageReport("a", AMS, (("eu", 12.0), ("us", 90.0))))
    assert not board.put("web", "a", VantageReport("a", AMS, (("eu", 12.0), ("us", 90.0))))  # the same again
    assert not board.put("web", "c", VantageReport("c", AMS, ()))  # measured nothing: not a vantage
    first = board.attach(base)
    assert first.vantages == (Vantage("a", AMS, (12.0, 90.0)), Vantage("b", (40.7, -74.0), (None, 10.0)))
    assert board.attach(base) is first  # nothing changed: same evidence, same version
    assert board.attach(PoolEvidence.empty("web", ("us", "eu"))).vantages[0].rtt == (90.0, 12.0)  # columns by name
    board.put("web", "b", None)  # its lease ended
    second = board.attach(base)
    assert second.vantages == (Vantage("a", AMS, (12.0, 90.0)),) and second.version != first.version
    newer = board.attach(PoolEvidence("web", regions, base.v4, base.v6, version=7))  # the RUM figures changed
    assert newer.version not in (first.version, second.version) and newer.vantages == second.vantages
    # regions none of the reports measured: no vantage at all
    assert board.attach(PoolEvidence.empty("web", ("ap",))).vantages == ()
    board.keep(["other"])  # web gone in a reload, and back in the next: the reports held still count
    again = board.attach(base)
    assert again.vantages == second.vantages and again.version > newer.version


# --- what a check records ----------------------------------------------------------------


async def test_a_check_records_the_time_to_the_first_response_byte() -> None:
    """An http check's rtt runs to the response's first byte: a server that thinks for 150 ms
    before answering measures about 150 ms, however long the body takes after that."""
    think, trickle = 0.15, 0.3

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(think)
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"o")
        await asyncio.sleep(trickle)
        await response.write(b"k")
        return response

    app = web.Application()
    app.router.add_get("/health", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    checker = HttpChecker()
    try:
        target = model.HealthKey(ipaddress.ip_address("127.0.0.1"), check("http", port))
        started = time.monotonic()
        outcome = await probe(checker, target)
        assert outcome.ok and outcome.rtt is not None
        assert think <= outcome.rtt < think + trickle / 2 <= time.monotonic() - started
        refused = model.HealthKey(ipaddress.ip_address("127.0.0.1"), check("http", 1))
        assert (await probe(checker, refused)).rtt is None  # a failed check measures nothing
        tcp = await probe(checker, model.HealthKey(ipaddress.ip_address("127.0.0.1"), check("tcp", port)))
        assert tcp.ok and tcp.rtt is not None and 0 <= tcp.rtt < think
    finally:
        checker.close()
        await runner.cleanup()


# --- RUM aggregates to and from the cluster ----------------------------------------------------


class Store:
    """A RumStore's sharing side: numbered exports, merges remembered."""

    def __init__(self) -> None:
        self.exports = 0
        self.merged: list[tuple[str, str, bytes | None]] = []

    def export(self, pool_name: str) -> bytes:
        self.exports += 1
        return f"{pool_name} {self.exports}".encode()

    def merge(self, instance: str, pool_name: str, data: bytes | None) -> None:
        self.merged.append((instance, pool_name, data))


async def test_own_beacons_are_exported_together_at_most_every_spacing() -> None:
    store = Store()
    published: list[tuple[str, bytes | None]] = []
    changed: list[str] = []
    share = RumShare(store, lambda pool, data: published.append((pool, data)), changed.append)
    try:
        started = time.monotonic()
        share.beacon_added("web")
        share.beacon_added("web")
        share.beacon_added("api")
        while len(published) < 2:
            await asyncio.sleep(0.01)
        assert sorted(published) == [("api", b"api 1"), ("web", b"web 2")]  # one export per pool for the three
        share.beacon_added("web")
        while len(published) < 3:
            assert time.monotonic() - started < 2
            await asyncio.sleep(0.01)
        assert published[2] == ("web", b"web 3") and time.monotonic() - started >= EXPORT_SPACING
        share.peer_rum("b", "web", b"theirs")
        assert store.merged == [("b", "web", b"theirs")] and changed == ["web"]
        share.keep(["web"])  # api gone in a reload: our export withdrawn
        assert published[3:] == [("api", None)]
    finally:
        share.close()


async def test_a_peer_merging_the_exports_sees_the_same_networks() -> None:
    """RumShare between two real RumStores (what etcd carries in between): b's evidence holds a's networks."""
    a, b = RumStore(instance="a"), RumStore(instance="b")
    now = time.time()
    for sample in range(5):
        a.add(POOL, ipaddress.ip_network("81.2.69.0/24"), {"eu": 20.0 + sample, "us": 90.0}, now)
    done = asyncio.Event()

    def carry(pool: str, data: bytes | None) -> None:
        b.merge("a", pool, data)
        done.set()

    share = RumShare(a, carry, lambda pool: None)
    try:
        share.beacon_added("web")
        await asyncio.wait_for(done.wait(), 2)
    finally:
        share.close()
    theirs = b.evidence(POOL, now)
    assert theirs.networks == 1 and theirs.v4.figures(0).rtt[:2] == a.evidence(POOL, now).v4.figures(0).rtt[:2] == (22.0, 90.0)
