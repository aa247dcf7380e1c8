"""The RUM aggregator (geolb/steer/aggregate.py) at scale, in-process: beacon cost, memory, evidence build, export size.

N client /24s (default 100,000) with R regions (default 5) each send 5 beacons; then:
  - add: microseconds per beacon;
  - memory: bytes per (network, region) held by the store (tracemalloc, a second fill);
  - evidence: the first build, a build after one new beacon (the steady case: best of 7),
    a build after a bucket boundary (window/8: rows whose oldest samples left are recomputed);
  - export: bytes per network, and a build combining this instance with one peer;
  - save/load: file size and times.
Times are CPU time of this process (the build is single-threaded): wall time is the same on an idle machine.

    .venv/bin/python bench/rum_bench.py [--networks 100000] [--regions 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geolb import model  # noqa: E402
from geolb.errors import Where  # noqa: E402
from geolb.steer.aggregate import RumStore  # noqa: E402

NOW = 1_800_000_000.0
BEACONS = 5


def make_pool(regions: int) -> model.Pool:
    here = Where("bench", 1)
    made = tuple(model.Region(f"r{i}", (0.0, 0.0), frozenset(), frozenset(), (), here) for i in range(regions))
    return model.Pool("web", "example.com.", made, (), here, steering="latency")


def fill(store: RumStore, pool: model.Pool, networks: int, seed: int = 1) -> float:
    """Every network's beacons into the store; seconds per beacon."""
    names = [region.name for region in pool.regions]
    rtt = np.random.default_rng(seed).uniform(10, 200, (networks, len(names)))
    countries = ("US", "DE", "FR", "JP", "BR")
    started = time.perf_counter()
    for i in range(networks):
        network = ipaddress.IPv4Network((0x0A000000 + 256 * i, 24))
        beacon = dict(zip(names, rtt[i].tolist(), strict=True))
        for k in range(BEACONS):
            store.add(pool, network, beacon, NOW + i * 0.001 + k, countries[i % len(countries)])
    return (time.perf_counter() - started) / (networks * BEACONS)


def timed(call: object) -> float:
    """CPU seconds of a call: steadier than wall time on a shared machine (the build is single-threaded numpy)."""
    assert callable(call)
    started = time.process_time()
    call()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=100_000)
    parser.add_argument("--regions", type=int, default=5)
    args = parser.parse_args()
    pool = make_pool(args.regions)
    cells = args.networks * args.regions

    store = RumStore(instance="a")
    per_beacon = fill(store, pool, args.networks)
    print(f"add: {per_beacon * 1e6:.1f} us per beacon")

    tracemalloc.start()
    held = RumStore()
    before, _ = tracemalloc.get_traced_memory()
    fill(held, pool, args.networks)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del held
    print(f"memory: {(after - before) / 1e6:.1f} MB, {(after - before) / cells:.0f} bytes per (network, region)")

    first = timed(lambda: store.evidence(pool, NOW + 3600))
    steady = []
    for r in range(7):
        store.add(pool, ipaddress.ip_network("10.0.0.0/24"), {"r0": 50.0}, NOW + 4000 + r)
        steady.append(timed(lambda r=r: store.evidence(pool, NOW + 4000 + r)))
    boundary = timed(lambda: store.evidence(pool, NOW + 86400))
    evidence = store.evidence(pool, NOW + 86400)
    print(
        f"evidence ({evidence.networks} networks, {len(evidence.countries)} countries): first {first * 1e3:.0f} ms, "
        f"after a beacon {min(steady) * 1e3:.0f} ms (best of 7), after a bucket boundary {boundary * 1e3:.0f} ms"
    )

    exports: list[bytes] = []
    exporting = timed(lambda: exports.append(store.export("web", now=NOW + 86400)))
    export = exports[0]
    peer = RumStore(instance="b")
    fill(peer, pool, args.networks, seed=2)
    store.merge("b", "web", peer.export("web", now=NOW + 86400))
    combined = timed(lambda: store.evidence(pool, NOW + 86400))
    print(
        f"export: {exporting * 1e3:.0f} ms, {len(export)} bytes, {len(export) / args.networks:.1f} per network; "
        f"evidence with one peer {combined * 1e3:.0f} ms"
    )

    with tempfile.TemporaryDirectory() as folder:
        saved = timed(lambda: store.save(Path(folder)))
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
        loaded = RumStore()
        load = timed(lambda: loaded.load(Path(folder)))
    print(f"save: {saved * 1e3:.0f} ms, {size / args.networks:.1f} bytes per network; load {load * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
