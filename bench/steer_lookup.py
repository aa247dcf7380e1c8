"""Latency steering's cost on the answer path: AnswerMap lookups with and without spliced network evidence.

Builds a 6-region pool's map over the bundled GeoLite2 City database twice, once
`steering: geo` and once `steering: latency`, lays evidence for N IPv4 /24s (and
N/5 IPv6 /48s) of public space over the latency one, and prints the build time,
the ranges, the time per `AnswerMap.lookup` (timeit over random addresses, and over
addresses inside the evidence networks) and the resident memory the steered map adds.

    .venv/bin/python bench/steer_lookup.py --networks 100000
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import ipaddress
import random
import resource
import sys
import tempfile
import time
import timeit
import tracemalloc
from pathlib import Path
from types import MappingProxyType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geolb import model  # noqa: E402
from geolb.errors import Where  # noqa: E402
from geolb.geo.choose import AnswerMemo, GeoAnswers  # noqa: E402
from geolb.geo.locate import GeoIPLocator, bundled_database  # noqa: E402
from geolb.geo.store import MapStore  # noqa: E402
from geolb.health.state import ALL_UP  # noqa: E402
from geolb.steer.evidence import NetworkTable, PoolEvidence  # noqa: E402

HERE = Where("bench", 1)
CHECK = model.HealthCheck("none", 80, "/", None, (200,), None, 10.0, 2.0, 3, 2, True)
PLACES = {
    "us-east": (39.0, -77.5),
    "us-west": (45.6, -121.2),
    "eu-west": (53.3, -6.3),
    "eu-central": (50.1, 8.7),
    "ap-northeast": (35.7, 139.7),
    "sa-east": (-23.5, -46.6),
}


def rss_kib() -> int:
    """Anonymous resident memory (not the memory-mapped region maps) after a collection, freed heap handed back."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


def pool(steering: str) -> model.Pool:
    regions = tuple(
        model.Region(
            name, place, frozenset(), frozenset(), (model.Endpoint(ipaddress.ip_address(f"192.0.2.{i + 1}"), 1, CHECK, HERE),), HERE
        )
        for i, (name, place) in enumerate(PLACES.items())
    )
    return model.Pool(f"bench-{steering}", "bench.example.", regions, (), HERE, steering=steering)


def table(version: int, count: int, regions: int, rng: np.random.Generator) -> NetworkTable:
    low, high = (1 << 16, 224 << 16) if version == 4 else (0x2000 << 32, 0x3FFF << 32)  # public unicast, roughly
    keys = np.unique(rng.integers(low, high, size=count, dtype=np.uint64))[:count]
    rtt = rng.uniform(5, 250, size=(len(keys), regions)).astype(np.float32)
    rtt[rng.random(size=rtt.shape) < 0.3] = np.nan
    samples = np.where(np.isnan(rtt), 0, 20).astype(np.uint32)
    return NetworkTable(version, keys, rtt, samples, np.full(len(keys), -1, dtype=np.int16))


def per_lookup(lookup: object, addresses: list[tuple[int, int]]) -> float:
    """Seconds per lookup, best of 5 passes over the addresses."""
    timer = timeit.Timer("for a, v in addresses: lookup(a, v)", globals={"lookup": lookup, "addresses": addresses})
    return min(timer.repeat(5, 1)) / len(addresses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=100_000, help="IPv4 /24s with evidence (IPv6 /48s: a fifth)")
    parser.add_argument("--geoip", default=bundled_database(), help="database (default: the bundled GeoLite2 City)")
    args = parser.parse_args()
    locator = GeoIPLocator(args.geoip)
    geo_pool, steered_pool = pool("geo"), pool("latency")
    zones = model.ZoneSet(zones={}, pools={geo_pool.name: geo_pool, steered_pool.name: steered_pool})
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        maps = MapStore(cache).maps_for(zones, locator)
        print(f"maps built in {time.perf_counter() - started:.1f} s")
        geo_map, steered_map = maps[geo_pool.name], maps[steered_pool.name]
        sizes = {name: f"{len(m.v4)} v4 / {len(m.v6)} v6" for name, m in (("geo", geo_map), ("latency", steered_map))}
        print(f"region map ranges: geo {sizes['geo']}, latency {sizes['latency']}")
        rng = np.random.default_rng(1)
        names = tuple(PLACES)
        evidence = PoolEvidence(
            steered_pool.name,
            names,
            table(4, args.networks, len(names), rng),
            table(6, args.networks // 5, len(names), rng),
            version=1,
        )
        before = rss_kib()
        started = time.perf_counter()
        plain = GeoAnswers(maps, ALL_UP, AnswerMemo()).pool_family(geo_pool, 4).answers
        assert plain is not None
        print(f"geo AnswerMap: built in {time.perf_counter() - started:.2f} s, RSS +{(rss_kib() - before) / 1024:.1f} MiB")
        before = rss_kib()
        started = time.perf_counter()
        steered_answers = GeoAnswers(maps, ALL_UP, AnswerMemo(), MappingProxyType({steered_pool.name: evidence}))
        steered = steered_answers.pool_family(steered_pool, 4).answers
        built = time.perf_counter() - started
        assert steered is not None
        grown = rss_kib() - before
        tracemalloc.start()  # a second build, traced: what the build needs at its peak
        GeoAnswers(maps, ALL_UP, AnswerMemo(), MappingProxyType({steered_pool.name: evidence})).pool_family(steered_pool, 4)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"steered AnswerMap with {evidence.networks} networks: built in {built:.2f} s, RSS +{grown / 1024:.1f} MiB kept, "
            f"{peak / 1048576:.0f} MiB at the peak of the build"
        )
        print(f"AnswerMap ranges: geo {plain.ranges[0]} v4 / {plain.ranges[1]} v6, steered {steered.ranges[0]} v4 / {steered.ranges[1]} v6")
        unsteered = GeoAnswers(maps, ALL_UP, AnswerMemo()).pool_family(steered_pool, 4).answers  # latency pool, no evidence
        assert unsteered is not None
        draw = random.Random(2)
        anywhere = [(draw.getrandbits(32), 4) for _ in range(200_000)]
        keys = evidence.v4.keys
        inside = [((int(keys[draw.randrange(len(keys))]) << 8) | draw.randrange(256), 4) for _ in range(200_000)]
        anywhere6 = [((0x2000 + draw.randrange(0x1FFF)) << 112 | draw.getrandbits(112), 6) for _ in range(100_000)]
        for label, addresses in (("random IPv4", anywhere), ("IPv4 in evidence /24s", inside), ("random IPv6", anywhere6)):
            times = [per_lookup(answers.lookup, addresses) for answers in (plain, unsteered, steered)]
            print(f"lookup, {label}: geo map {times[0] * 1e9:.0f} ns, latency map without evidence {times[1] * 1e9:.0f} ns, "
                  f"with evidence {times[2] * 1e9:.0f} ns")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of this process: {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
