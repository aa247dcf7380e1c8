"""Geo accuracy and cost: 2,000 public /24s from the GeoIP database, asked through a running geolb.

Picks /24s from random public addresses that the database places (at most 20 per
country, 100+ countries), computes the truly nearest region of a zone's pool by
great-circle distance from the database's coordinates, asks a real `geolb serve`
for each with ECS, and prints the share answered from the nearest region, the mean
ECS scope, the in-process cost of a geo choice (a region-map lookup, the same for a
client seen before or not), and how long building the maps took.

    .venv/bin/python bench/geo_accuracy.py --zones ../shared/bench/geolb/zones --name www.example.com --pool web
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import maxminddb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geolb.config.zoneset import load_zoneset  # noqa: E402
from geolb.geo.choose import GeoAnswers  # noqa: E402
from geolb.geo.locate import GeoIPLocator, bundled_database, special_network  # noqa: E402
from geolb.geo.rank import great_circle_km  # noqa: E402
from geolb.geo.store import MapStore, default_cache_dir  # noqa: E402
from geolb.health.state import ALL_UP  # noqa: E402


def pick_subnets(
    reader: maxminddb.Reader, count: int, per_country: int, seed: int
) -> list[tuple[ipaddress.IPv4Network, str, float, float]]:
    rng = random.Random(seed)
    picked: list[tuple[ipaddress.IPv4Network, str, float, float]] = []
    seen: set[ipaddress.IPv4Network] = set()
    countries: Counter[str] = Counter()
    for _ in range(5_000_000):
        if len(picked) >= count:
            break
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        net = ipaddress.ip_network((address, 24), strict=False)
        if special_network(net.network_address) is not None or net in seen:
            continue
        record = reader.get(net.network_address)
        if not isinstance(record, dict):
            continue
        country = (record.get("country") or {}).get("iso_code")
        where = record.get("location") or {}
        if not country or where.get("latitude") is None or countries[country] >= per_country:
            continue
        seen.add(net)
        countries[country] += 1
        picked.append((net, country, float(where["latitude"]), float(where["longitude"])))
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zones", default=str(ROOT.parent / "shared" / "bench" / "geolb" / "zones"))
    parser.add_argument("--name", default="www.example.com")
    parser.add_argument("--pool", default="web")
    parser.add_argument("--geoip", default=None, help="default: the bundled GeoLite2 City")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    geoip = args.geoip or bundled_database()
    assert geoip, "no GeoIP database"

    reader = maxminddb.open_database(geoip)
    subnets = pick_subnets(reader, args.count, 20, args.seed)
    zoneset = load_zoneset(args.zones).zoneset
    pool = zoneset.pools[args.pool]
    located = [r for r in pool.regions if r.location is not None]
    by_address = {str(e.address): r.name for r in pool.regions for e in r.endpoints}
    print(f"{len(subnets)} /24s in {len({c for _, c, _, _ in subnets})} countries; pool {pool.name}: {[r.name for r in pool.regions]}")

    server = subprocess.Popen(
        [sys.executable, "-m", "geolb", "serve", "--zones", args.zones, "--geoip", geoip, "--listen", "127.0.0.1:0", "--http", "off"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        port = int(ready.split("dns ")[1].split(" ")[0].rsplit(":", 1)[1])
        right = 0
        scopes: list[int] = []
        wrong: list[str] = []
        for net, country, lat, lon in subnets:
            expected = min(located, key=lambda r: great_circle_km((lat, lon), r.location)).name  # type: ignore[arg-type]
            query = dns.message.make_query(args.name, "A", use_edns=0, options=[dns.edns.ECSOption(str(net.network_address), 24)])
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=3)
            regions = {by_address[r.to_text()] for rrset in response.answer for r in rrset}
            scopes.extend(o.scopelen for o in response.options if isinstance(o, dns.edns.ECSOption))
            if regions == {expected}:
                right += 1
            else:
                wrong.append(f"{net} {country} expected {expected} got {regions}")
    finally:
        server.terminate()
        server.wait()
    print(f"nearest region: {right}/{len(subnets)} = {100 * right / len(subnets):.2f} %")
    for line in wrong[:10]:
        print("  wrong:", line)
    print(
        f"ECS scope: mean /{statistics.mean(scopes):.1f}, median /{statistics.median(scopes):.0f}, min /{min(scopes)}, max /{max(scopes)}"
    )

    locator = GeoIPLocator(geoip)
    clients = [net.network_address for net, _, _, _ in subnets]
    maps = MapStore(default_cache_dir()).maps_for(zoneset, locator)
    answers = GeoAnswers(maps, ALL_UP)
    answers.choose(pool, 4, clients[0])  # the AnswerMap for "all up" is built here, once
    started = time.perf_counter()
    for client in clients:
        answers.choose(pool, 4, client)
    elapsed = time.perf_counter() - started
    print(f"geo choice (region-map lookup, any client): {1e6 * elapsed / len(clients):.2f} µs per query")
    locate_started = time.perf_counter()
    for client in clients:
        locator.locate(client)
    print(f"GeoIP lookup alone: {1e6 * (time.perf_counter() - locate_started) / len(clients):.1f} µs per query")


if __name__ == "__main__":
    main()
