"""What signing costs (run by hand, not a test).

1. warm: the shared harness's `mixed` scenario (../shared/bench) against geolb twice per round in one
   sitting: the bench zone unsigned with the scenario's queries as they are, and the same zone signed
   (`dnssec: {}`) with every query carrying DO; server CPU per query of each and their ratio.
2. cold: what one new RRset signature costs in one process, per algorithm (the Signer, as the DNS
   workers use it: dnspython's canonical form and RRSIG, `cryptography`'s signature).

    .venv/bin/python bench/dnssec_bench.py cold
    .venv/bin/python bench/dnssec_bench.py warm --rounds 2      # needs ../shared/bench set up
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geolb import model  # noqa: E402
from geolb.config.zoneset import load_zoneset  # noqa: E402
from geolb.dnssec.keys import generate  # noqa: E402
from geolb.dnssec.sign import Signer  # noqa: E402

SHARED = ROOT.parent / "shared" / "bench"
WORK = Path("/tmp/geolb-dnssec-bench")
QUERIES = Path(os.environ.get("QDIR", "/tmp/bench-queries"))


def signed_zones(algorithm: str) -> Path:
    """The bench scenario's zone, signed with a new key of `algorithm`."""
    zones = WORK / f"zones-{algorithm}"
    shutil.rmtree(zones, ignore_errors=True)
    shutil.copytree(SHARED / "geolb" / "zones", zones)
    for path in zones.glob("*.yaml"):
        with open(path, "a") as handle:
            handle.write(f"dnssec: {{algorithm: {algorithm}}}\n")
    generate(str(zones / "keys"), "example.com.", algorithm)
    return zones


def queries_with_do() -> Path:
    """The scenario's query files, every query with the DO bit (dnsperf's -B format: length, then the message)."""
    target = WORK / "queries-do"
    target.mkdir(parents=True, exist_ok=True)
    for path in QUERIES.iterdir():
        if path.name != "mixed.bin":
            shutil.copy(path, target / path.name)
    data = (QUERIES / "mixed.bin").read_bytes()
    out = bytearray()
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 2], "big")
        message = dns.message.from_wire(data[offset + 2 : offset + 2 + size])
        message.want_dnssec(True)
        packet = message.to_wire()
        out += len(packet).to_bytes(2, "big") + packet
        offset += 2 + size
    (target / "mixed.bin").write_bytes(bytes(out))
    return target


def run(name: str, zones: Path, qdir: Path, round_number: int, workers: int) -> float | None:
    """One harness run; the server CPU µs per query it printed."""
    command = (
        f"{sys.executable} -m geolb serve --zones {zones} --geoip /tmp/bench-geo/GeoLite2-City.mmdb "
        f"--listen 127.0.0.1:15370 --http 127.0.0.1:15371 --workers {workers} --log-level warning"
    )
    env = {**os.environ, "QDIR": str(qdir), "SCENARIOS": "mixed", "ROUND": str(round_number), "LAT_QPS": "0"}
    done = subprocess.run([str(SHARED / "run-cmd.sh"), command, "15370", name], env=env, capture_output=True, text=True, cwd=ROOT)
    print("\n".join(line for line in done.stdout.splitlines() if "scen=" in line))
    found = re.search(r"srv_us_per_q=([\d.]+)", done.stdout)
    if found is None:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return float(found.group(1))


def warm(rounds: int, workers: int) -> None:
    zones = signed_zones("ECDSAP256SHA256")
    with_do = queries_with_do()
    plain_costs, signed_costs = [], []
    for round_number in range(1, rounds + 1):
        plain = run("geolb-unsigned", SHARED / "geolb" / "zones", QUERIES, round_number, workers)
        signed = run("geolb-signed-do", zones, with_do, round_number, workers)
        if plain and signed:
            plain_costs.append(plain)
            signed_costs.append(signed)
            print(f"round {round_number}: unsigned {plain:.1f} µs/query, signed with DO {signed:.1f} µs/query: {signed / plain:.2f}x")
    if plain_costs:
        print(f"median: unsigned {statistics.median(plain_costs):.1f}, signed {statistics.median(signed_costs):.1f} µs/query")


def cold(count: int) -> None:
    for algorithm in ("ECDSAP256SHA256", "ED25519"):
        zone = load_zoneset(str(signed_zones(algorithm))).zoneset.zones["example.com."]
        signer = Signer(limit=count * 2)
        rrsets = [model.RRset(f"n{n}.example.com.", "A", 30, (model.A(ipaddress.IPv4Address(0xC0000200 + n % 250)),)) for n in range(count)]
        started = time.process_time()
        for rrset in rrsets:
            signer.signatures(rrset, zone)
        spent = time.process_time() - started
        started = time.process_time()
        for rrset in rrsets:
            signer.signatures(rrset, zone)
        reused = time.process_time() - started
        print(
            f"{algorithm}: a new RRset signature costs {spent / count * 1e6:.0f} µs of CPU; "
            f"a cached one {reused / count * 1e6:.1f} µs ({count} RRsets)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("warm")
    measure.add_argument("--rounds", type=int, default=2)
    measure.add_argument("--workers", type=int, default=1)
    once = commands.add_parser("cold")
    once.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.command == "warm":
        warm(args.rounds, args.workers)
    else:
        cold(args.count)


if __name__ == "__main__":
    main()
