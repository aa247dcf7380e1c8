"""Memory and time of a big pool (SPEC §7: 1,000 regions build and serve within 1 GiB beyond the serving processes).

Starts `geolb serve` with an empty cache on a zone with one small pool, waits for it to
serve (the first start flattens the database: its peak is reported too), then rewrites
the zone with a pool of N regions spread over the world (loopback endpoints, health
none) and reloads it through the API. Meanwhile the whole process tree (server, DNS
workers, map builder and its decoders) is sampled every 20 ms, both as the sum of RSS
and as the sum of PSS (/proc/PID/smaps_rollup: shared pages, such as the memory-mapped
region maps every worker reads, counted once in all). Finally one region is forced down
and the time until a client it answered gets the next region is measured. With
--at-start the big pool is there from the start instead (flattening and build in one go).

    .venv/bin/python bench/big_pool.py --regions 1000 --database /tmp/bench-geo/GeoLite2-City.mmdb
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"http (\S+),")
DNS = re.compile(r"dns (\S+):(\d+) ")


def zone(regions: list[tuple[str, float, float, str]]) -> str:
    lines = ["nameservers:", "  ns1.big.example.: [192.0.2.53]", "health: {type: none}", "pools:", "  web:", "    regions:"]
    for name, latitude, longitude, address in regions:
        lines += [f"      {name}:", f"        location: [{latitude:.4f}, {longitude:.4f}]", f"        endpoints: [{address}]"]
    lines += ["records:", "  www:", "    - {type: GEO, pool: web, ttl: 5}"]
    return "\n".join(lines) + "\n"


def spread(count: int, seed: int) -> list[tuple[str, float, float, str]]:
    rng = random.Random(seed)
    return [
        (f"r{i}", rng.uniform(-55, 70), rng.uniform(-180, 180), f"127.{1 + i // 62500}.{i // 250 % 250}.{1 + i % 250}")
        for i in range(count)
    ]


def tree(pid: int) -> list[int]:
    """`pid` and every descendant (children of every thread)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(p) for p in (task / "children").read_text().split())
            except OSError:
                continue
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KB; zeros for one that is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class Sampler:
    """The tree's summed RSS and PSS every `interval` seconds, in a thread; peaks since the last reset."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> tuple[int, int, int]:
        pids = tree(self.pid)
        sizes = [memory_kb(p) for p in pids]
        return sum(r for r, _ in sizes), sum(p for _, p in sizes), len(pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, count = self.now()
            self.peak_rss, self.peak_pss, self.processes = max(self.peak_rss, rss), max(self.peak_pss, pss), max(self.processes, count)
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak_rss = self.peak_pss = self.processes = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def post(url: str, body: Any = None, timeout: float = 600) -> tuple[int, Any]:
    data = b"" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def answer(host: str, port: int, client: str) -> str:
    query = dns.message.make_query("www.big.example", "A", use_edns=0, options=[dns.edns.ECSOption(client, 24)])
    response = dns.query.udp(query, host, port=port, timeout=3)
    return response.answer[0][0].to_text() if response.answer else ""


def mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=1000)
    parser.add_argument("--database", default="/tmp/bench-geo/GeoLite2-City.mmdb", help="GeoIP database (default: the shared bench's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--at-start", action="store_true", help="start with the big pool (flattening and build in one go), then stop")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geolb-big-pool-"))
    zones = work / "zones"
    zones.mkdir()
    regions = spread(args.regions, args.seed)
    (zones / "big.example.yaml").write_text(zone(regions if args.at_start else [("only", 50.1, 8.7, "127.0.0.11")]))
    command = [sys.executable, "-m", "geolb", "serve", "--zones", str(zones), "--geoip", args.database, "--cache-dir", str(work / "cache")]
    command += ["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--workers", str(args.workers), "--watch-interval", "0"]
    log_path = work / "stderr.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    sampler = Sampler(proc.pid)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        http, dns_at = READY.search(ready), DNS.search(ready)
        if http is None or dns_at is None:
            raise SystemExit(f"geolb did not start:\n{log_path.read_text()}")
        base, host, port = f"http://{http.group(1)}", dns_at.group(1), int(dns_at.group(2))
        print(f"first start (empty cache: database flattened) ready in {time.monotonic() - started:.1f} s; tree peak meanwhile "
              f"RSS {mb(sampler.peak_rss)}, PSS {mb(sampler.peak_pss)}, {sampler.processes} processes")  # fmt: skip
        answer(host, port, "8.8.8.0")
        time.sleep(1.0)
        rss0, pss0, count0 = sampler.now()
        if args.at_start:
            built = re.findall(r"region map for pool web built in ([\d.]+) s", log_path.read_text())
            took = built[-1] if built else "?"
            print(f"{args.regions} regions from the start: map built in {took} s; serving: RSS {mb(rss0)}, PSS {mb(pss0)}")
            return
        print(f"serving baseline (small pool): RSS {mb(rss0)}, PSS {mb(pss0)}, {count0} processes")
        (zones / "big.example.yaml").write_text(zone(regions))
        sampler.reset()
        asked = time.monotonic()
        status, body = post(f"{base}/v1/reload")
        reloaded = time.monotonic() - asked
        if status != 200:
            raise SystemExit(f"reload failed ({status}): {body}")
        clients = [f"{a}.{b}.{c}.0" for a, b, c in ((8, 8, 8), (1, 1, 1), (81, 2, 69), (200, 160, 0), (41, 0, 0), (133, 1, 1), (5, 255, 0))]
        firsts = {client: answer(host, port, client) for client in clients}  # every worker builds its AnswerMap
        served = time.monotonic() - asked
        time.sleep(0.5)
        built = re.findall(r"region map for pool web built in ([\d.]+) s", log_path.read_text())
        print(f"{args.regions} regions: map built in {built[-1] if built else '?'} s; reload answered in {reloaded:.1f} s; "
              f"serving the big pool {served:.1f} s after the reload was asked")  # fmt: skip
        print(f"  tree peak during build and first answers: RSS {mb(sampler.peak_rss)} (+{mb(sampler.peak_rss - rss0)}), "
              f"PSS {mb(sampler.peak_pss)} (+{mb(sampler.peak_pss - pss0)}), up to {sampler.processes} processes")  # fmt: skip
        rss1, pss1, count1 = sampler.now()
        print(f"  serving the big pool: RSS {mb(rss1)} (+{mb(rss1 - rss0)}), PSS {mb(pss1)} (+{mb(pss1 - pss0)}), {count1} processes")
        client = clients[0]
        region = next(name for name, *_, address in regions if address == firsts[client])
        sampler.reset()
        forced = time.monotonic()
        post(f"{base}/v1/endpoints/web/{region}/{firsts[client]}/force", {"state": "down"})
        while answer(host, port, client) == firsts[client]:
            if time.monotonic() - forced > 60:
                raise SystemExit("the forced-down region kept answering")
        print(f"  health change (region {region} forced down): next region answers {client}/24 after {time.monotonic() - forced:.2f} s; "
              f"tree peak RSS +{mb(sampler.peak_rss - rss0)}, PSS +{mb(sampler.peak_pss - pss0)}")  # fmt: skip
    finally:
        sampler.stop()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
