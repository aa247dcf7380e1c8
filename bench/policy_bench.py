"""Selection policies: how many clients move when an endpoint fails, and what each policy costs per answer.

Part 1 (in-process, seconds): for N = 2, 5, 10, 50 endpoints and 100,000 client /24s,
the share of clients whose first endpoint changes when one endpoint goes down, under
geolb's weighted rendezvous hashing (geo/select.py), against the ideal 1/N and
against `hash mod N` (the endpoint list shrinks by one, every index shifts).

Part 2 (dnsperf, minutes; --cpu): the shared bench harness (../shared/bench) on its
scenario zone, with the pool's `selection:` set to each policy in turn, and gdnsd
(no health checks) in the same sitting for the ratio. Each run prints the harness's
own result lines; the table at the end reads them back from its results file.

    .venv/bin/python bench/policy_bench.py
    SCENARIOS="mixed wide" .venv/bin/python bench/policy_bench.py --cpu --workers 1
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geolb.geo.select import endpoint_salt, network_hash, rendezvous_order  # noqa: E402

POLICIES = ("random", "round-robin", "consistent")


def clients(count: int, seed: int = 1) -> list[int]:
    """`count` distinct client /24s, hashed as geolb hashes them."""
    rng = random.Random(seed)
    networks = {rng.randrange(1 << 24) << 8 for _ in range(count * 2)}
    return [network_hash(n, 4, 24) for n in sorted(networks)[:count]]


def moved_fractions(n: int, hashes: list[int]) -> tuple[float, float]:
    """(rendezvous, mod N): the share of clients whose first endpoint changes when endpoint n // 2 goes down."""
    salts = [endpoint_salt(ipaddress.ip_address(f"10.0.{i >> 8}.{i & 255}")) for i in range(n)]
    gone = n // 2
    kept = [i for i in range(n) if i != gone]
    weights = [1] * n
    hrw_moved = mod_moved = 0
    for h in hashes:
        before = rendezvous_order(weights, salts, h, 1)[0]
        after = kept[rendezvous_order(weights[:-1], [salts[i] for i in kept], h, 1)[0]]
        hrw_moved += before != after
        mod_moved += (h % n) != kept[h % (n - 1)]
    return hrw_moved / len(hashes), mod_moved / len(hashes)


def movement_table(count: int) -> None:
    hashes = clients(count)
    print(f"Clients moved when 1 of N endpoints goes down ({count:,} client /24s, max_answers 1)")
    print("| N | ideal 1/N | rendezvous (geolb consistent) | hash mod N |")
    print("|---|---|---|---|")
    for n in (2, 5, 10, 50):
        hrw, mod = moved_fractions(n, hashes)
        print(f"| {n} | {1 / n:.1%} | {hrw:.1%} | {mod:.1%} |")


def policy_zones(harness: Path, policy: str, into: Path) -> Path:
    """The harness's scenario zone with `selection: <policy>` on its pool."""
    text = (harness / "geolb" / "zones" / "example.com.yaml").read_text()
    text, found = re.subn(r"^(  web:\n)", rf"\1    selection: {policy}\n", text, flags=re.M)
    if not found:
        raise SystemExit("cannot find pool web in the harness zone")
    zones = into / policy
    zones.mkdir(parents=True)
    (zones / "example.com.yaml").write_text(text)
    return zones


def cpu_runs(harness: Path, workers: int, port: int, policies: list[str]) -> None:
    results = Path(tempfile.mkdtemp(prefix="policy-bench-")) / "results.tsv"
    env = {**os.environ, "RESULTS": str(results), "SCENARIOS": os.environ.get("SCENARIOS", "mixed wide")}
    subprocess.run([str(harness / "run-anchor.sh"), "gdnsd-nohc"], env=env, check=True)
    geolb = shutil.which("geolb", path=str(ROOT / ".venv" / "bin")) or "geolb"
    with tempfile.TemporaryDirectory(prefix="policy-zones-") as tmp:
        for policy in policies:
            zones = policy_zones(harness, policy, Path(tmp))
            command = (
                f"{geolb} serve --zones {zones} --geoip /tmp/bench-geo/GeoLite2-City.mmdb --listen 127.0.0.1:{port} "
                f"--http 127.0.0.1:{port + 1} --workers {workers}"
            )
            subprocess.run([str(harness / "run-cmd.sh"), command, str(port), f"geolb-{policy}"], env=env, check=True)
    summarize(results)


def summarize(results: Path) -> None:
    """Server CPU per query of each run, and its ratio to gdnsd's in the same scenario."""
    with open(results) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    throughput = [r for r in rows if r.get("kind", "throughput") == "throughput" and r.get("srv_us_per_q")]
    print("\n| server | scenario | qps | server CPU µs/query | ratio to gdnsd |")
    print("|---|---|---|---|---|")
    reference = {r["scen"]: float(r["srv_us_per_q"]) for r in throughput if r["name"] == "gdnsd-nohc"}
    for r in throughput:
        us = float(r["srv_us_per_q"])
        ratio = f"{us / reference[r['scen']]:.2f}x" if r["scen"] in reference else "-"
        print(f"| {r['name']} | {r['scen']} | {r.get('qps', '?')} | {us:.1f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--cpu", action="store_true", help="also run part 2 (dnsperf through the shared harness)")
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared" / "bench")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=15380)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    args = parser.parse_args()
    movement_table(args.clients)
    if args.cpu:
        cpu_runs(args.harness, args.workers, args.port, args.policies)


if __name__ == "__main__":
    main()
