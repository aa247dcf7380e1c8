"""RumStore: robust medians, min_samples/min_networks, the window, the margin, bounded memory, save/load, export/merge."""

from __future__ import annotations

import ipaddress
import logging
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from geolb import model
from geolb.errors import Where
from geolb.steer.aggregate import RING, RumStore, ring_medians, weighted_medians
from geolb.steer.evidence import Figures, PoolEvidence

HERE = Where("test", 1)
NOW = 1_800_000_000.0
DAY = 86400.0


def make_pool(*regions: str, name: str = "web", **latency: float) -> model.Pool:
    made = tuple(model.Region(r, (0.0, 0.0), frozenset(), frozenset(), (), HERE) for r in regions)
    return model.Pool(name, "example.com.", made, (), HERE, steering="latency", latency=model.Latency(**latency))  # type: ignore[arg-type]


POOL = make_pool("east", "west")


def net(text: str) -> model.IPNetwork:
    return ipaddress.ip_network(text)


def measure(
    store: RumStore,
    network: str,
    rtt: Mapping[str, float],
    count: int = 5,
    at: float = NOW,
    pool: model.Pool = POOL,
    country: str | None = None,
    resolver: str | None = None,
) -> None:
    for i in range(count):
        store.add(pool, net(network), rtt, at + i, country, ipaddress.ip_address(resolver) if resolver else None)


def figures(evidence: PoolEvidence, network: str) -> Figures | None:
    address = net(network).network_address
    table = evidence.table(address.version)
    row = table.row_of(address)
    return None if row is None else table.figures(row)


def rtts(evidence: PoolEvidence, network: str) -> tuple[float | None, ...] | None:
    found = figures(evidence, network)
    return None if found is None else found.rtt


def test_median_is_not_moved_by_outliers() -> None:
    store = RumStore()
    for ms in (20.0, 21.0, 5000.0, 19.0, 4000.0, 20.0, 22.0, 20.0, 9000.0):
        store.add(POOL, net("192.0.2.0/24"), {"east": ms, "west": 80.0}, NOW)
    evidence = store.evidence(POOL, NOW)
    found = figures(evidence, "192.0.2.0/24")
    assert found is not None
    east, west = found.rtt
    assert east is not None and 19.0 <= east <= 22.0
    assert west == 80.0
    assert found.samples == (9, 9)


def test_a_network_counts_only_with_min_samples_per_region() -> None:
    store = RumStore()
    measure(store, "192.0.2.0/24", {"east": 30.0}, count=4)
    assert store.evidence(POOL, NOW + 10).networks == 0
    measure(store, "192.0.2.0/24", {"east": 30.0, "west": 90.0}, count=1, at=NOW + 20)
    found = figures(store.evidence(POOL, NOW + 30), "192.0.2.0/24")
    assert found is not None
    assert found.rtt == (30.0, None)  # west has 1 sample of 5
    assert found.samples == (5, 1)


def test_ipv6_networks_are_slash_48_and_addresses_inside_find_them() -> None:
    store = RumStore()
    measure(store, "2001:db8:1::/48", {"west": 40.0})
    measure(store, "2001:db8:1:ff00::/56", {"west": 40.0})  # the same /48
    evidence = store.evidence(POOL, NOW + 10)
    assert len(evidence.v6) == 1 and len(evidence.v4) == 0
    assert evidence.v6.figures(0).samples == (0, 10)
    assert evidence.v6.row_of(ipaddress.ip_address("2001:db8:1:abcd::1")) == 0


def test_samples_older_than_the_window_drop_out() -> None:
    pool = make_pool("east", "west", window=8 * DAY)  # buckets of a day
    store = RumStore()
    measure(store, "192.0.2.0/24", {"east": 30.0}, count=5, pool=pool)
    measure(store, "198.51.100.0/24", {"east": 30.0}, count=3, pool=pool)
    measure(store, "198.51.100.0/24", {"east": 60.0}, count=3, at=NOW + 4 * DAY, pool=pool)
    evidence = store.evidence(pool, NOW + 5 * DAY)
    assert rtts(evidence, "192.0.2.0/24") == (30.0, None)
    assert figures(evidence, "198.51.100.0/24") == Figures((45.0, None), (6, 0), 0)
    later = store.evidence(pool, NOW + 9 * DAY + 10)  # the first samples' day is out of the window
    assert rtts(later, "192.0.2.0/24") is None
    assert later.networks == 0  # 3 samples left behind 198.51.100.0/24: under min_samples
    assert store.stats("web")["networks"] == 2  # still remembered until evicted


def test_a_country_whose_networks_all_left_the_window_has_no_figures(tmp_path: Path) -> None:
    """It once crashed every evidence build (and `geolb serve` at start-up, from the saved file) with IndexError."""
    store = RumStore()
    measure(store, "192.0.2.0/24", {"east": 30.0}, country="GB")
    measure(store, "198.51.100.0/24", {"east": 40.0}, at=NOW + 8 * DAY, country="US")
    evidence = store.evidence(POOL, NOW + 8 * DAY + 10)
    assert "GB" not in evidence.countries
    assert rtts(evidence, "198.51.100.0/24") == (40.0, None)
    store.save(tmp_path)
    loaded = RumStore()
    loaded.load(tmp_path)
    assert loaded.evidence(POOL, NOW + 8 * DAY + 10).countries == evidence.countries


def test_a_new_window_keeps_the_samples_it_still_covers() -> None:
    store = RumStore()
    measure(store, "192.0.2.0/24", {"east": 30.0}, pool=make_pool("east", "west", window=8 * DAY))
    measure(store, "198.51.100.0/24", {"east": 40.0}, at=NOW + 6 * DAY, pool=make_pool("east", "west", window=8 * DAY))
    longer = make_pool("east", "west", window=16 * DAY)
    assert store.evidence(longer, NOW + 12 * DAY).networks == 2
    shorter = make_pool("east", "west", window=4 * DAY)
    evidence = store.evidence(shorter, NOW + 7 * DAY)
    assert rtts(evidence, "192.0.2.0/24") is None
    assert rtts(evidence, "198.51.100.0/24") == (40.0, None)


def test_a_country_needs_min_networks_each_counted_once() -> None:
    store = RumStore()
    measure(store, "10.0.0.0/24", {"east": 10.0}, count=50, country="DE")  # one busy network ...
    for i in range(1, 4):
        measure(store, f"10.0.{i}.0/24", {"east": 50.0 + i}, country="DE")
    measure(store, "10.0.9.0/24", {"east": 10.0}, count=2, country="DE")  # under min_samples: not one of them
    evidence = store.evidence(POOL, NOW + 100)
    assert "DE" not in evidence.countries
    measure(store, "10.0.4.0/24", {"east": 54.0, "west": 70.0}, country="DE")
    evidence = store.evidence(POOL, NOW + 100)
    assert evidence.countries["DE"] == Figures((52.0, None), (5, 1), 0)  # ... weighs as one of five networks


def test_resolvers_carry_the_beacons_of_the_networks_behind_them() -> None:
    store = RumStore()
    measure(store, "192.0.2.0/24", {"east": 20.0, "west": 90.0}, count=3, resolver="203.0.113.53")
    measure(store, "198.51.100.0/24", {"east": 30.0, "west": 60.0}, count=3, resolver="203.0.113.53")
    evidence = store.evidence(POOL, NOW + 10)
    assert evidence.networks == 0
    assert evidence.resolvers == {ipaddress.ip_address("203.0.113.53"): Figures((25.0, 75.0), (6, 6), 0)}
    assert store.stats("web") == {"networks": 2, "resolvers": 1, "countries": 0, "beacons": 6, "peers": 0}


class GeoOrderBook:
    """A geo_order that puts `first` first for every address, and records its calls."""

    def __init__(self, first: int, regions: int) -> None:
        self.order = [first, *(i for i in range(regions) if i != first)]
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, pool: model.Pool, version: int, addresses: npt.NDArray[np.uint64]) -> npt.NDArray[np.int16]:
        self.calls.append((version, [int(a) for a in addresses]))
        return np.tile(np.array(self.order, dtype=np.int16), (len(addresses), 1))


def leader(store: RumStore, now: float, geo: GeoOrderBook | None = None, network: str = "192.0.2.0/24") -> str:
    evidence = store.evidence(POOL, now, geo)
    found = figures(evidence, network)
    assert found is not None
    return evidence.regions[found.leader]


def test_the_margin_keeps_the_incumbent_until_another_region_is_clearly_faster() -> None:
    store = RumStore()
    geo = GeoOrderBook(first=1, regions=2)  # west is nearer
    measure(store, "192.0.2.0/24", {"east": 50.0, "west": 53.0}, count=8)
    assert leader(store, NOW + 10, geo) == "west"  # 3 ms faster is not enough: the distance order's first holds
    assert geo.calls == [(4, [int(ipaddress.ip_address("192.0.2.0"))])]
    measure(store, "192.0.2.0/24", {"east": 40.0, "west": 53.0}, count=8, at=NOW + 100)
    assert leader(store, NOW + 200, geo) == "east"  # 13 ms and 25 % faster
    assert len(geo.calls) == 1  # not asked again for a network that has a leader
    measure(store, "192.0.2.0/24", {"east": 40.0, "west": 37.0}, count=8, at=NOW + 300)
    assert leader(store, NOW + 400, geo) == "east"  # west is faster now, but not by the margin
    measure(store, "192.0.2.0/24", {"east": 40.0, "west": 34.0}, count=8, at=NOW + 500)
    assert leader(store, NOW + 600, geo) == "west"  # 6 ms and 15 %


def test_without_a_geo_order_the_first_leader_is_the_fastest() -> None:
    store = RumStore()
    measure(store, "192.0.2.0/24", {"east": 50.0, "west": 48.0})
    measure(store, "2001:db8::/48", {"east": 50.0, "west": 52.0})
    assert leader(store, NOW + 10) == "west"
    assert leader(store, NOW + 10, network="2001:db8::/48") == "east"


def test_geo_order_is_asked_about_new_networks_of_each_family_once_per_build() -> None:
    store = RumStore()
    geo = GeoOrderBook(first=0, regions=2)
    measure(store, "192.0.2.0/24", {"east": 50.0, "west": 48.0})
    measure(store, "198.51.100.0/24", {"east": 50.0, "west": 48.0})
    measure(store, "2001:db8:aa::/48", {"east": 50.0, "west": 48.0})
    evidence = store.evidence(POOL, NOW + 10, geo)
    assert sorted(geo.calls) == [
        (4, [int(ipaddress.ip_address("192.0.2.0")), int(ipaddress.ip_address("198.51.100.0"))]),
        (6, [int(ipaddress.ip_address("2001:db8:aa::")) >> 64]),
    ]
    assert set(evidence.v4.leader.tolist()) == {0} and evidence.v6.leader.tolist() == [0]


def test_country_and_resolver_leaders_keep_the_margin_too() -> None:
    store = RumStore()
    for i in range(5):
        measure(store, f"10.0.{i}.0/24", {"east": 50.0, "west": 45.0}, country="FR", resolver="203.0.113.1")
    evidence = store.evidence(POOL, NOW + 10)
    assert evidence.countries["FR"].leader == 1  # the fastest first
    resolver = ipaddress.ip_address("203.0.113.1")
    assert evidence.resolvers[resolver].leader == 1
    for i in range(5):
        measure(store, f"10.0.{i}.0/24", {"east": 42.0, "west": 45.0}, count=8, at=NOW + 100, country="FR", resolver="203.0.113.1")
    evidence = store.evidence(POOL, NOW + 200)
    assert evidence.countries["FR"].rtt == (42.0, 45.0) and evidence.countries["FR"].leader == 1
    assert evidence.resolvers[resolver].leader == 1


def test_version_changes_with_the_content_only() -> None:
    store = RumStore()
    assert not store.dirty("web", NOW)
    assert store.evidence(POOL, NOW).version == 0  # nothing yet: the empty evidence's version
    measure(store, "192.0.2.0/24", {"east": 50.0})
    assert store.dirty("web", NOW + 10)
    first = store.evidence(POOL, NOW + 10)
    assert first.version == 1 and not store.dirty("web", NOW + 10)
    assert store.evidence(POOL, NOW + 20) is first
    measure(store, "198.51.100.0/24", {"east": 50.0}, count=1, at=NOW + 30)  # not enough to show
    assert store.dirty("web", NOW + 40)
    assert store.evidence(POOL, NOW + 40).version == 1
    measure(store, "192.0.2.0/24", {"east": 70.0}, count=5, at=NOW + 50)
    assert store.evidence(POOL, NOW + 60).version == 2
    assert store.dirty("web", NOW + POOL.latency.window)  # a bucket boundary passed: samples may have aged out


def test_regions_are_matched_by_name_across_reorders_and_removals() -> None:
    store = RumStore()
    three = make_pool("a", "b", "c")
    measure(store, "192.0.2.0/24", {"a": 30.0, "b": 20.0, "c": 10.0}, pool=three)
    evidence = store.evidence(three, NOW + 10)
    assert rtts(evidence, "192.0.2.0/24") == (30.0, 20.0, 10.0)
    assert evidence.regions[evidence.v4.leader[0]] == "c"
    reordered = make_pool("c", "d", "a")
    evidence = store.evidence(reordered, NOW + 20)
    assert evidence.regions == ("c", "d", "a")
    assert rtts(evidence, "192.0.2.0/24") == (10.0, None, 30.0)
    assert evidence.regions[evidence.v4.leader[0]] == "c"
    measure(store, "192.0.2.0/24", {"d": 5.0}, pool=reordered, at=NOW + 30)
    assert rtts(store.evidence(reordered, NOW + 40), "192.0.2.0/24") == (10.0, 5.0, 30.0)
    assert rtts(store.evidence(three, NOW + 50), "192.0.2.0/24") == (30.0, None, 10.0)  # b's samples went with b


def test_memory_is_bounded_dropping_the_least_recently_measured_first() -> None:
    store = RumStore(max_networks=3)
    for i, network in enumerate(("10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24")):
        measure(store, network, {"east": 30.0}, at=NOW + 10 * i)
    measure(store, "10.0.1.0/24", {"east": 30.0}, count=1, at=NOW + 100)
    measure(store, "10.0.4.0/24", {"east": 30.0}, at=NOW + 200)
    evidence = store.evidence(POOL, NOW + 300)
    assert [str(ipaddress.IPv4Address(int(k) << 8)) for k in evidence.v4.keys] == ["10.0.1.0", "10.0.3.0", "10.0.4.0"]
    measure(store, "10.0.5.0/24", {"east": 30.0}, at=NOW + 400)
    assert rtts(store.evidence(POOL, NOW + 500), "10.0.3.0/24") is None
    assert store.stats("web")["networks"] == 3


def test_memory_per_network_and_region_stays_small() -> None:
    regions = 5
    pool = make_pool(*(f"r{i}" for i in range(regions)))
    store = RumStore()
    measure(store, "10.255.0.0/24", {"r0": 1.0}, count=1, pool=pool)  # the pool's bookkeeping, outside the measure
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        networks = 3000  # rows for 4096 are allocated: a realistic fill
        rtt = {f"r{i}": 10.0 + i for i in range(regions)}
        for i in range(networks):
            store.add(pool, ipaddress.IPv4Network((0x0A000000 + 256 * i, 24)), rtt, NOW + i, "US")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_cell = (after - before) / (networks * regions)
    print(f"{per_cell:.0f} bytes per (network, region)")
    assert per_cell < 200, per_cell


def evidence_fields(evidence: PoolEvidence) -> tuple[object, ...]:
    """Everything of an evidence but its version, comparable with ==."""
    tables = tuple(
        (t.keys.tolist(), np.nan_to_num(t.rtt, nan=-1).tolist(), t.samples.tolist(), t.leader.tolist()) for t in (evidence.v4, evidence.v6)
    )
    return (evidence.regions, tables, dict(evidence.resolvers), dict(evidence.countries))


def busy_store(instance: str = "", offset: float = 0.0, skew: float = 0.0) -> RumStore:
    store = RumStore(instance=instance)
    for i in range(7):  # 5 networks with enough samples: NL has evidence
        rtt = {"east": 30.0 + i + skew, "west": 60.0 - i}
        measure(store, f"10.0.{i}.0/24", rtt, count=3 + i, at=NOW + offset, country="NL", resolver="203.0.113.1")
    measure(store, "2001:db8:5::/48", {"west": 33.3 + skew}, count=7, at=NOW + offset, resolver="2001:db8::53")
    return store


def test_save_and_load_give_the_same_evidence(tmp_path: Path) -> None:
    store = busy_store()
    measure(store, "192.0.2.0/24", {"a": 5.0, "b": 6.0, "c": 50.0}, pool=make_pool("a", "b", "c", name="api"))
    before = store.evidence(POOL, NOW + 100)
    assert before.networks and before.countries and before.resolvers
    store.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.npz", "web.npz"]
    loaded = RumStore()
    loaded.load(tmp_path)
    assert evidence_fields(loaded.evidence(POOL, NOW + 100)) == evidence_fields(before)
    assert loaded.stats("web") == store.stats("web")
    assert rtts(loaded.evidence(make_pool("a", "b", "c", name="api"), NOW + 100), "192.0.2.0/24") == (5.0, 6.0, 50.0)
    measure(loaded, "10.0.5.0/24", {"east": 99.0}, count=8, at=NOW + 200)  # a loaded store goes on measuring
    assert rtts(loaded.evidence(POOL, NOW + 300), "10.0.5.0/24") == (99.0, 55.0)
    loaded.retain(["web"])
    loaded.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.npz"]  # api's file went with the pool


def test_corrupt_or_foreign_files_are_passed_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    busy_store().save(tmp_path)
    good = (tmp_path / "web.npz").read_bytes()
    (tmp_path / "web.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "old.npz", meta=np.frombuffer(b'{"format": 0}', dtype=np.uint8))
    store = RumStore()
    with caplog.at_level(logging.WARNING, logger="geolb.steer"):
        store.load(tmp_path)
    assert store.evidence(POOL, NOW).networks == 0
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 3
    store.load(tmp_path / "missing")  # no folder yet: nothing to load


def test_merged_exports_give_every_instance_the_same_figures() -> None:
    a = busy_store("a")
    b = busy_store("b", offset=50, skew=4.0)
    measure(b, "192.0.2.0/24", {"east": 70.0}, count=3, at=NOW + 50)
    measure(a, "192.0.2.0/24", {"east": 10.0}, count=3)  # 3 + 3 samples: enough together, not apart
    at = NOW + 100
    export_a, export_b = a.export("web", now=at), b.export("web", now=at)
    a.merge("b", "web", export_b)
    b.merge("a", "web", export_a)
    c = RumStore(instance="c")  # measures nothing itself
    c.merge("b", "web", export_b)
    c.merge("a", "web", export_a)
    seen = [evidence_fields(s.evidence(POOL, at)) for s in (a, b, c)]
    assert seen[0] == seen[1] == seen[2]
    merged = c.evidence(POOL, at)
    assert figures(merged, "192.0.2.0/24") == Figures((10.0, None), (6, 0), 0)  # a's 3 weigh as b's 3: the lower
    v6 = figures(merged, "2001:db8:5::/48")
    assert v6 is not None and v6.rtt == (None, pytest.approx(33.3)) and v6.samples == (0, 14)  # shared in 1/10 ms
    assert c.stats("web")["peers"] == 2
    c.merge("a", "web", None)
    assert RumStore().export("web", now=at) == b""  # nothing measured in that pool ...
    c.merge("b", "web", b"")  # ... is as good as gone
    assert c.evidence(POOL, at).networks == 0
    assert c.stats("web")["peers"] == 0


def test_the_same_aggregates_export_as_the_same_bytes() -> None:
    one, other = RumStore(instance="a"), RumStore(instance="a")
    measure(one, "192.0.2.0/24", {"east": 20.0}, country="US", resolver="2001:db8::53")
    measure(one, "198.51.100.0/24", {"west": 30.0}, country="FR", resolver="203.0.113.9")
    measure(other, "198.51.100.0/24", {"west": 30.0}, country="FR", resolver="203.0.113.9")  # the other way round
    measure(other, "192.0.2.0/24", {"east": 20.0}, country="US", resolver="2001:db8::53")
    assert one.export("web", now=NOW + 10) == other.export("web", now=NOW + 10) == one.export("web", now=NOW + 10)
    measure(other, "192.0.2.0/24", {"east": 20.0}, count=1, at=NOW + 20)
    assert one.export("web", now=NOW + 30) != other.export("web", now=NOW + 30)


def test_a_delta_export_updates_what_a_peer_holds() -> None:
    a = RumStore(instance="a")
    measure(a, "192.0.2.0/24", {"east": 20.0})
    measure(a, "198.51.100.0/24", {"east": 30.0}, at=NOW + 1000)
    c = RumStore(instance="c")
    c.merge("a", "web", a.export("web", now=NOW + 2000))
    measure(a, "198.51.100.0/24", {"east": 90.0}, count=8, at=NOW + 3000)
    delta = a.export("web", since=NOW + 2500, now=NOW + 4000)
    c.merge("a", "web", delta)
    evidence = c.evidence(POOL, NOW + 4000)
    assert rtts(evidence, "192.0.2.0/24") == (20.0, None)
    assert figures(evidence, "198.51.100.0/24") == Figures((90.0, None), (13, 0), 0)
    assert evidence_fields(evidence) == evidence_fields(a.evidence(POOL, NOW + 4000))


def test_a_bad_export_is_passed_over(caplog: pytest.LogCaptureFixture) -> None:
    c = RumStore(instance="c")
    with caplog.at_level(logging.WARNING, logger="geolb.steer"):
        c.merge("a", "web", b"junk")
        c.merge("a", "web", busy_store().export("web", now=NOW)[:-10])
        c.merge("a", "api", busy_store().export("web", now=NOW))  # another pool's
    assert c.evidence(POOL, NOW).networks == 0
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize(
    ("values", "weights", "median"),
    [
        ([10.0, 20.0], [1, 1], 10.0),
        ([10.0, 20.0], [1, 2], 20.0),
        ([30.0, 10.0, 20.0], [1, 1, 1], 20.0),
        ([30.0, 10.0, 20.0], [5, 1, 1], 30.0),
        ([10.0, 10.0, 50.0], [1, 1, 1], 10.0),
        ([float("nan"), 40.0], [0, 3], 40.0),
        ([float("nan"), 40.0], [0, 0], None),
    ],
)
def test_weighted_medians(values: list[float], weights: list[int], median: float | None) -> None:
    med, total = weighted_medians(np.array([values], dtype=np.float32), np.array([weights], dtype=np.uint32))
    assert (None if np.isnan(med[0]) else float(med[0])) == median
    assert int(total[0]) == sum(weights)


def test_ring_medians_match_numpy_for_any_valid_subset() -> None:
    rng = np.random.default_rng(7)
    values = rng.uniform(1, 500, (RING, 2000, 3)).astype(np.float32)
    valid = rng.random((RING, 2000, 3)) < 0.6
    expected = np.full((2000, 3), np.nan, dtype=np.float32)
    for row in range(2000):
        for column in range(3):
            picked = values[valid[:, row, column], row, column]
            if len(picked):
                expected[row, column] = np.median(picked)
    np.testing.assert_allclose(ring_medians(values.copy(), valid), expected, rtol=1e-6)


def test_every_measured_region_renamed_leaves_no_figures_and_no_error(tmp_path: Path) -> None:
    """An operator renames a latency pool's regions: the old measurements name none of the new regions; evidence
    builds (and a save and load) go on with nothing measured, and the new names are measured afresh."""
    store = RumStore()
    for n in range(6):  # countries too: min_networks networks in GB
        measure(store, f"81.2.{69 + n}.0/24", {"east": 50, "west": 10}, country="GB", resolver="127.0.0.53")
    assert store.evidence(POOL, NOW + 10).networks == 6
    renamed = make_pool("x1", "x2")
    evidence = store.evidence(renamed, NOW + 20)
    assert evidence.networks == 0 and not evidence.countries and not evidence.resolvers
    store.save(tmp_path)
    again = RumStore()
    again.load(tmp_path)
    assert again.evidence(renamed, NOW + 30).networks == 0
    assert again.evidence(POOL, NOW + 30).networks == 0  # the old names came back: their figures were dropped
    measure(again, "81.2.69.0/24", {"x1": 20, "x2": 80}, at=NOW + 40, pool=renamed)
    assert rtts(again.evidence(renamed, NOW + 50), "81.2.69.0/24") == (20.0, 80.0)
