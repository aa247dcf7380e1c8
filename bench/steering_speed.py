"""What latency steering costs (SPEC §10): DNS CPU with evidence loaded, worker memory per network, RUM ingest.

1. `cpu`: the shared harness (../shared/bench, `run-cmd.sh`) on its `wide` and `mixed` scenarios against the
   bench zone (copied, pool `web` set to `steering: latency`) with evidence for 100,000 of the `wide` query
   file's /24s loaded, against the same zone with `steering: geo`, alternating, in one sitting: server CPU
   per query and the ratio (target <= 1.10). The evidence is made once: a server on a fresh cache directory
   takes `--samples` beacons per network through POST /v1/rum and saves them there on SIGTERM; each
   latency run starts on a copy of that directory and measures only once /v1/status shows the networks.
2. `memory`: RSS of the DNS worker (`--workers 1`) of one server as evidence grows, 0 -> 100k -> 1M networks
   (/24s of the GeoIP database; `min_samples` set to `--samples`, default 1, so a million networks take a
   million beacons): MB per million networks (target <= 100).
3. `ingest`: beacons a second the RUM listener takes (a lean keep-alive HTTP/1.1 client, 32 connections)
   while dnsperf sends `wide` queries at 5,000 qps; dnsperf's p50/p99 (target >= 5,000 beacons/s, p99 < 1 ms),
   and the p99 without beacons in the same sitting.

    .venv/bin/python bench/steering_speed.py cpu [--networks 100000] [--rounds 2]
    .venv/bin/python bench/steering_speed.py memory [--steps 0 100000 1000000]
    .venv/bin/python bench/steering_speed.py ingest [--seconds 15] [--rate 5000]
    .venv/bin/python bench/steering_speed.py all
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import steering_bench as world  # noqa: E402

SHARED = Path(os.environ.get("BENCH_SHARED", "/work/shared/bench"))
GEOIP = "/tmp/bench-geo/GeoLite2-City.mmdb"
QDIR = Path(os.environ.get("QDIR", "/tmp/bench-queries"))
QDIR_WIDE = Path(os.environ.get("QDIR_WIDE", "/tmp/bench-queries-wide"))
WORK = Path(os.environ.get("STEERING_SPEED_DIR", "/tmp/geolb-steering-speed"))
BENCH_REGIONS = {"us-east": (39.04, -77.49), "us-west": (45.6, -121.2), "eu-west": (53.35, -6.26), "ap-southeast": (1.29, 103.85)}
FIGURES: list[tuple[str, str, str]] = []  # (figure, value, target) for the closing table
COMMANDS: list[str] = []


@dataclass(frozen=True)
class Client:
    """A client /24 and where GeoIP puts it."""

    address: int
    latitude: float
    longitude: float


def wide_clients(limit: int) -> list[Client]:
    """The first `limit` /24s of the shared `wide` query file's subnets (a random order already)."""
    clients: list[Client] = []
    with open(QDIR_WIDE / "subnets.tsv") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            first = row["prefix"].split("/")[0].split(".")
            address = int(first[0]) << 24 | int(first[1]) << 16 | int(first[2]) << 8
            clients.append(Client(address, float(row["lat"]), float(row["lon"])))
            if len(clients) >= limit:
                break
    return clients


def geoip_clients(count: int, seed: int) -> list[Client]:
    networks = world.pick_networks(count, seed, GEOIP)
    return [
        Client(int(a), float(lat), float(lon))
        for a, lat, lon in zip(networks.address.tolist(), networks.latitude.tolist(), networks.longitude.tolist(), strict=True)
    ]


def bench_rtt(clients: Sequence[Client], seed: int) -> np.ndarray:
    """[n, 4] true ms to the bench scenario's regions: distance x a per-network route inflation (lognormal), plus
    access time; the measured order differs from the distance order for some networks, as it would."""
    rng = np.random.default_rng(seed)
    lat = np.array([c.latitude for c in clients])
    lon = np.array([c.longitude for c in clients])
    km = np.stack([world.great_circle_km(lat, lon, la, lo) for la, lo in BENCH_REGIONS.values()], axis=1)
    inflation = np.exp(rng.normal(np.log(1.5), 0.25, size=km.shape))
    return np.asarray(km / 100 * inflation + rng.uniform(2, 30, size=(len(clients), 1)), dtype=np.float64)


def beacon_requests(clients: Sequence[Client], rtt: np.ndarray, samples: int, pool: str, seed: int) -> Iterator[tuple[str, bytes]]:
    """`samples` beacons per client, clients interleaved (a beacon from .1-.254 of the /24, jittered times)."""
    rng = np.random.default_rng(seed + 1)
    names = list(BENCH_REGIONS)
    for round_number in range(samples):
        jitter = np.exp(rng.normal(0.0, 0.2, size=rtt.shape))
        hosts = rng.integers(1, 255, size=len(clients))
        for index, client in enumerate(clients):
            address = client.address + int(hosts[index])
            text = f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}"
            yield text, world.beacon_body(pool, np.round(rtt[index] * jitter[index], 1).tolist(), names, f"s{round_number}-{index}")


async def post_lean(
    host: str, port: int, requests: Iterator[tuple[str, bytes]], connections: int = 32, until: float | None = None
) -> tuple[dict[int, int], float]:
    """POST /v1/rum over `connections` keep-alive HTTP/1.1 connections, one request at a time on each; much less
    client CPU than aiohttp's client, so the listener, not the client, sets the rate. Stops at `until`
    (time.monotonic()) if given. Returns the count of each status (0: connection failed) and the seconds spent."""
    statuses: dict[int, int] = {}
    started = time.monotonic()

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        for client, body in requests:
            if until is not None and time.monotonic() >= until:
                break
            status = 0
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(
                    b"POST /v1/rum HTTP/1.1\r\nHost: rum\r\nContent-Type: application/json\r\nX-Forwarded-For: "
                    + client.encode()
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if found:
                    await reader.readexactly(int(found.group(1)))
                if re.search(rb"(?i)\r\nconnection: *close", head):
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                if writer is not None:
                    writer.close()
                reader = writer = None
            statuses[status] = statuses.get(status, 0) + 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return statuses, time.monotonic() - started


def latency_zone(target: Path, steering: str, min_samples: int | None = None) -> Path:
    """The shared bench zone with pool `web` set to `steering` (and `latency: {min_samples}`), in `target`."""
    target.mkdir(parents=True, exist_ok=True)
    text = (SHARED / "geolb" / "zones" / "example.com.yaml").read_text()
    settings = f"\n    latency: {{min_samples: {min_samples}}}" if min_samples is not None else ""
    changed = text.replace("\n  web:\n", f"\n  web:\n    steering: {steering}{settings}\n", 1)
    assert changed != text, "the bench zone has no pool `web`"
    (target / "example.com.yaml").write_text(changed)
    return target


def networks_in_status(numbers: dict[str, float]) -> float:
    """The pool's count of networks with evidence, as /v1/status names it (the largest "…networks…" figure)."""
    counts = [v for k, v in numbers.items() if "network" in k.lower() and "max" not in k.lower() and not math.isnan(v)]
    return max(counts, default=0.0)


async def wait_networks(http: str, pool: str, at_least: int, timeout: float) -> dict[str, float]:
    """Poll /v1/status until the pool shows `at_least` networks with evidence; the pool's numbers."""
    deadline = time.monotonic() + timeout
    numbers: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            numbers = world.status_numbers(await world.fetch_status(http), pool)
        except Exception as error:  # not up yet, or a shape this bench does not know: try again
            numbers = {"error": math.nan}
            print(f"  /v1/status: {error!r}", file=sys.stderr)
        if networks_in_status(numbers) >= at_least:
            return numbers
        await asyncio.sleep(1.0)
    raise SystemExit(f"{pool}: fewer than {at_least:,} networks with evidence after {timeout:.0f} s: {numbers}")


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its children (the DNS workers)."""
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    for each in pids:
        try:
            total += cpu_seconds(each)
        except OSError:
            continue
    return total


async def wait_idle(pid: int, timeout: float, busy_share: float = 0.05) -> tuple[float, float]:
    """Until the server's processes use less than `busy_share` of a core for a second: what they do with new
    evidence (the workers lay it over the region maps) must not land in the measurement. (seconds, CPU seconds)."""
    started, cpu_before = time.monotonic(), tree_cpu_seconds(pid)
    last = cpu_before
    while time.monotonic() - started < timeout:
        await asyncio.sleep(1.0)
        now = tree_cpu_seconds(pid)
        if now - last < busy_share:
            break
        last = now
    return time.monotonic() - started, tree_cpu_seconds(pid) - cpu_before


async def feed(server: world.Server, clients: Sequence[Client], samples: int, seed: int, pool: str = "web") -> None:
    rtt = bench_rtt(clients, seed)
    host, port = server.rum.rsplit(":", 1)
    statuses, took = await post_lean(host, int(port), beacon_requests(clients, rtt, samples, pool, seed))
    total = sum(statuses.values())
    print(f"  {total:,} beacons for {len(clients):,} networks in {took:.1f} s ({total / took:,.0f}/s): {statuses}")
    await wait_networks(server.http, pool, int(0.99 * len(clients)), timeout=600)


def prepare_evidence(networks: int, samples: int) -> Path:
    """A cache directory holding evidence for `networks` of the wide file's /24s (made once, then reused)."""
    cache = WORK / f"evidence-{networks}-{samples}"
    if (cache / ".complete").exists():
        return cache
    shutil.rmtree(cache, ignore_errors=True)
    zones = latency_zone(WORK / f"prepare-zones-{samples}", "latency", samples)
    server = world.start_server(zones, cache, ["--rum-max-networks", str(max(networks, 1_000_000))], geoip=GEOIP)
    try:
        asyncio.run(feed(server, wide_clients(networks), samples, 22))
    finally:
        server.stop()
    (cache / ".complete").write_text("")
    return cache


def harness_run(name: str, zones: Path, cache: Path | None, round_number: int, scenarios: str, hook: Path | None) -> dict[str, float]:
    """One run of the shared harness; server CPU µs per query by scenario."""
    port = 15380
    command = (
        f"{sys.executable} -m geolb serve --zones {zones} --geoip {GEOIP} --listen 127.0.0.1:{port} "
        f"--http 127.0.0.1:{port + 1} --workers 1 --log-level warning" + (f" --cache-dir {cache}" if cache else "")
    )
    env = {**os.environ, "SCENARIOS": scenarios, "ROUND": str(round_number), "LAT_QPS": "0", "CHECK": "0"}
    env["RESULTS"] = str(WORK / "results.tsv")
    if hook is not None:
        env["POST_READY_HOOK"] = str(hook)
    COMMANDS.append(f"SCENARIOS='{scenarios}' LAT_QPS=0 CHECK=0 {SHARED}/run-cmd.sh '{command}' {port} {name}")
    done = subprocess.run([str(SHARED / "run-cmd.sh"), command, str(port), name], env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if "scen=" in line]
    lines += [line for line in done.stderr.splitlines() if line.startswith("[steering]")]
    print("\n".join(f"    {line}" for line in lines))
    costs = {}
    for line in lines:
        scen = re.search(r"scen=(\S+)", line)
        cost = re.search(r"srv_us_per_q=([\d.]+)", line)
        if scen and cost:
            costs[scen.group(1)] = float(cost.group(1))
    if not costs:
        print(done.stderr[-3000:], file=sys.stderr)
    return costs


def cpu(networks: int, samples: int, rounds: int, scenarios: str, cold: bool) -> None:
    print(f"cpu: evidence for {networks:,} of the wide file's /24s ({samples} beacon(s) each)")
    evidence = prepare_evidence(networks, samples)
    geo_zones = latency_zone(WORK / "zones-geo", "geo")
    lat_zones = latency_zone(WORK / "zones-latency", "latency", samples)
    hooks = {}
    for steering, expected in (("geo", 0), ("latency", int(0.99 * networks))):
        hook = hooks[steering] = WORK / f"wait-{steering}.sh"
        hook.write_text(
            f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} wait --http 127.0.0.1:15381 --pool web "
            f'--networks {expected} --port "$1" --pid "$2"{"" if cold else " --warm"}\n'
        )
        hook.chmod(0o755)
    costs: dict[str, dict[str, list[float]]] = {"geo": {}, "latency": {}}
    for round_number in range(1, rounds + 1):
        for steering in ("geo", "latency") if round_number % 2 else ("latency", "geo"):
            cache = WORK / f"run-cache-{steering}"
            shutil.rmtree(cache, ignore_errors=True)
            if steering == "latency":
                shutil.copytree(evidence, cache)
            zones = lat_zones if steering == "latency" else geo_zones
            found = harness_run(f"geolb-{steering}", zones, cache, round_number, scenarios, hooks[steering])
            for scen, cost in found.items():
                costs[steering].setdefault(scen, []).append(cost)
    for scen in scenarios.split():
        geo, lat = costs["geo"].get(scen), costs["latency"].get(scen)
        if geo and lat:
            ratio = statistics.median(lat) / statistics.median(geo)
            FIGURES.append(
                (
                    f"server CPU per query, `{scen}`, latency ({networks // 1000}k networks) / geo",
                    f"{statistics.median(lat):.1f} / {statistics.median(geo):.1f} µs = {ratio:.2f}x "
                    f"(runs: {', '.join(f'{v:.1f}' for v in lat)} / {', '.join(f'{v:.1f}' for v in geo)})",
                    "<= 1.10",
                )
            )


def worker_rss_mb(server: world.Server) -> tuple[float, float]:
    """(RSS of the largest child: the DNS worker, RSS of the main process) in MB."""

    def rss(pid: int) -> float:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    children: list[int] = []
    for task in Path(f"/proc/{server.proc.pid}/task").glob("*"):
        try:
            children.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return max((rss(c) for c in children), default=0.0), rss(server.proc.pid)


def memory(steps: Sequence[int], samples: int) -> None:
    print(f"memory: DNS worker RSS at {', '.join(f'{s:,}' for s in steps)} networks with evidence ({samples} beacon(s) each)")
    zones = latency_zone(WORK / f"memory-zones-{samples}", "latency", samples)
    cache = WORK / "memory-cache"
    shutil.rmtree(cache, ignore_errors=True)
    clients = geoip_clients(max(steps), 23) if max(steps) else []
    probe = [c.address for c in clients[:: max(1, len(clients) // 20_000)]] or [0x51024500]
    server = world.start_server(zones, cache, ["--workers", "1", "--rum-max-networks", str(max(max(steps), 1_000_000))], geoip=GEOIP)
    COMMANDS.append(" ".join(server.proc.args if isinstance(server.proc.args, list) else [str(server.proc.args)]))
    figures: list[tuple[int, float, float]] = []
    try:
        done = 0
        for step in sorted(steps):
            if step > done:
                asyncio.run(feed(server, clients[done:step], samples, 23 + done))
                done = step
            took, spent = asyncio.run(wait_idle(server.proc.pid, timeout=600))
            asyncio.run(world.ask_all(server.dns_port, "www.example.com", probe))  # every answer path touched
            worker, main = worker_rss_mb(server)
            print(f"  evidence of {step:,} networks: processes busy {took:.1f} s after it showed ({spent:.1f} CPU s)")
            figures.append((step, worker, main))
            print(f"  {step:>9,} networks: DNS worker {worker:.1f} MB, main process {main:.1f} MB")
    finally:
        server.stop()
    restarted(zones, cache, max(steps), probe, figures[0][1])
    base = figures[0]
    for step, worker, main in figures[1:]:
        if step > base[0]:
            per_million = (worker - base[1]) / (step - base[0]) * 1e6
            FIGURES.append(
                (
                    f"DNS worker RSS, {base[0]:,} -> {step:,} networks",
                    f"{base[1]:.0f} -> {worker:.0f} MB: {per_million:.0f} MB per million (main process {base[2]:.0f} -> {main:.0f} MB)",
                    "<= 100 MB per million",
                )
            )


def restarted(zones: Path, cache: Path, networks: int, probe: Sequence[int], baseline: float) -> None:
    """The DNS worker's RSS when the server starts on a cache directory that holds `networks` networks' evidence:
    one load, no growth along the way (what is left after a restart, as against what beacons grew to)."""
    server = world.start_server(zones, cache, ["--workers", "1", "--rum-max-networks", str(max(networks, 1_000_000))], geoip=GEOIP)
    try:
        asyncio.run(wait_networks(server.http, "web", int(0.99 * networks), timeout=600))
        asyncio.run(wait_idle(server.proc.pid, timeout=600))
        asyncio.run(world.ask_all(server.dns_port, "www.example.com", probe))
        worker, main = worker_rss_mb(server)
    finally:
        server.stop()
    print(f"  restarted on the cache ({networks:,} networks): DNS worker {worker:.1f} MB, main process {main:.1f} MB")
    FIGURES.append(
        (
            f"DNS worker RSS after a restart on {networks:,} networks' evidence",
            f"{worker:.0f} MB: {(worker - baseline) / max(networks, 1) * 1e6:.0f} MB per million over the {baseline:.0f} MB of none "
            f"(main process {main:.0f} MB)",
            "<= 100 MB per million",
        )
    )


def dnsperf_percentiles(log: str) -> tuple[float, float, float, int]:
    """(achieved qps, p50 ms, p99 ms, lost) from a `dnsperf -v` log."""
    latencies = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", log, re.M))

    def pct(p: float) -> float:
        if not latencies:
            return math.nan
        return 1000 * latencies[min(len(latencies) - 1, max(0, round(p / 100 * len(latencies) + 0.5) - 1))]

    qps = re.search(r"Queries per second:\s+([\d.]+)", log)
    lost = re.search(r"Queries lost:\s+(\d+)", log)
    return float(qps.group(1)) if qps else math.nan, pct(50), pct(99), int(lost.group(1)) if lost else -1


async def dnsperf_while(server: world.Server, seconds: float, rate: int, beacons: Iterator[tuple[str, bytes]] | None) -> str:
    log = WORK / "dnsperf-ingest.log"
    command = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.dns_port), "-B", "-d", str(QDIR_WIDE / "mixed.bin"), "-n", "1"]
    command += ["-l", str(int(seconds)), "-c", "4", "-q", "100", "-Q", str(rate), "-v"]
    COMMANDS.append(" ".join(command))
    with open(log, "w") as out:
        perf = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=subprocess.STDOUT)
        worker_before = tree_cpu_seconds(server.proc.pid) - cpu_seconds(server.proc.pid)
        if beacons is not None:
            host, port = server.rum.rsplit(":", 1)
            main_before, client_before = cpu_seconds(server.proc.pid), time.process_time()
            statuses, took = await post_lean(host, int(port), beacons, until=time.monotonic() + seconds)
            main_cpu, client_cpu = cpu_seconds(server.proc.pid) - main_before, time.process_time() - client_before
            accepted = sum(v for k, v in statuses.items() if 200 <= k < 300)
            print(
                f"  beacons: {statuses} in {took:.1f} s: {accepted / took:,.0f} accepted/s; CPU per beacon: main process "
                f"{1e6 * main_cpu / max(accepted, 1):.0f} µs, this client {1e6 * client_cpu / max(accepted, 1):.0f} µs"
            )
            FIGURES.append(
                (
                    "RUM ingest while dnsperf sends `wide`",
                    f"{accepted / took:,.0f} beacons/s; {1e6 * main_cpu / max(accepted, 1):.0f} µs main-process CPU a beacon",
                    ">= 5,000/s",
                )
            )
        await perf.wait()
    worker = tree_cpu_seconds(server.proc.pid) - cpu_seconds(server.proc.pid) - worker_before
    print(f"  DNS worker CPU {worker:.2f} s over {seconds:.0f} s at {rate:,} qps: {1e6 * worker / (seconds * rate):.1f} µs a query")
    return log.read_text()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ingest(seconds: float, rate: int) -> None:
    print(f"ingest: beacons as fast as the listener takes them, dnsperf `wide` at {rate:,} qps, {seconds:.0f} s")
    zones = latency_zone(WORK / "ingest-zones", "latency")
    cache = WORK / "ingest-cache"
    shutil.rmtree(cache, ignore_errors=True)
    clients = wide_clients(200_000)
    server = world.start_server(zones, cache, ["--workers", "1"], geoip=GEOIP)
    try:
        asyncio.run(dnsperf_while(server, 5, rate, None))  # warm-up: first answers, collections
        COMMANDS.pop()
        quiet = dnsperf_percentiles(asyncio.run(dnsperf_while(server, seconds, rate, None)))
        rtt = bench_rtt(clients, 24)
        busy = dnsperf_percentiles(asyncio.run(dnsperf_while(server, seconds, rate, beacon_requests(clients, rtt, 5, "web", 24))))
    finally:
        server.stop()
    for label, (qps, p50, p99, lost) in (("no beacons", quiet), ("with beacons", busy)):
        print(f"  dnsperf {label}: {qps:,.0f} qps, p50 {p50:.3f} ms, p99 {p99:.3f} ms, lost {lost}")
    FIGURES.append(
        ("DNS p99 at 5,000 qps `wide`, with / without beacons", f"{busy[2]:.3f} / {quiet[2]:.3f} ms (p50 {busy[1]:.3f})", "< 1 ms")
    )


def report() -> None:
    print(f"\n{load()} (2 cores shared with other work: compare figures of one sitting only)")
    if FIGURES:
        print("\n| figure | measured | target |\n|---|---|---|")
        for figure, value, target in FIGURES:
            print(f"| {figure} | {value} | {target} |")
    if COMMANDS:
        print("\ncommand lines:")
        for command in COMMANDS:
            print(f"    {command}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("cpu", "all"):
        sub = commands.add_parser(name)
        sub.add_argument("--networks", type=int, default=100_000)
        sub.add_argument("--rounds", type=int, default=2)
        sub.add_argument("--scenarios", default="wide mixed")
        sub.add_argument("--cold", action="store_true", help="measure from the first query (default: after one query and idle)")
        sub.add_argument("--samples", type=int, default=1, help="beacons per network (and the zone's min_samples)")
    for name in ("memory", "all"):
        sub = commands.add_parser(name) if name != "all" else commands.choices["all"]
        sub.add_argument("--steps", type=int, nargs="+", default=[0, 100_000, 1_000_000])
        if name != "all":
            sub.add_argument("--samples", type=int, default=1, help="beacons per network (and the zone's min_samples)")
    again = commands.add_parser("restart", help="memory's last step alone: restart on the cache `memory` left")
    again.add_argument("--networks", type=int, default=1_000_000)
    again.add_argument("--baseline", type=float, required=True, help="the worker's MB with no evidence (memory's first line)")
    for name in ("ingest", "all"):
        sub = commands.add_parser(name) if name != "all" else commands.choices["all"]
        sub.add_argument("--seconds", type=float, default=15)
        sub.add_argument("--rate", type=int, default=5000)
    wait = commands.add_parser("wait", help="(the harness's post-ready hook) until /v1/status shows the networks")
    wait.add_argument("--http", required=True)
    wait.add_argument("--networks", type=int, required=True)
    wait.add_argument("--pool", default="web")
    wait.add_argument("--pid", type=int, required=True, help="the server's: wait until it and its workers are idle")
    wait.add_argument("--port", type=int, default=0, help="with --warm: the DNS port to send the first query to")
    wait.add_argument("--warm", action="store_true", help="send one query and wait for idle again before the harness measures")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.command == "wait":
        numbers = asyncio.run(wait_networks(args.http, args.pool, args.networks, timeout=300))
        took, spent = asyncio.run(wait_idle(args.pid, timeout=300))
        print(f"[steering] evidence loaded: {numbers}; busy {took:.1f} s after ({spent:.1f} CPU s)", file=sys.stderr)
        if args.warm:
            # The first answer for a latency pool may build what the evidence needs in the worker: once, not per query.
            before, started = tree_cpu_seconds(args.pid), time.monotonic()
            first = asyncio.run(world.ask_all(args.port, "www.example.com", [0x51024500], timeout=60))
            answered = time.monotonic() - started
            asyncio.run(wait_idle(args.pid, timeout=300))
            print(
                f"[steering] first query answered ({first.tolist()}) in {answered:.2f} s; "
                f"{tree_cpu_seconds(args.pid) - before:.1f} CPU s until idle",
                file=sys.stderr,
            )
        return
    if not (QDIR_WIDE / "mixed.bin").exists() or not Path(GEOIP).exists():
        raise SystemExit(f"run {SHARED}/setup.sh first (query files, {GEOIP})")
    if args.command in ("cpu", "all"):
        cpu(args.networks, args.samples, args.rounds, args.scenarios, args.cold)
    if args.command in ("memory", "all"):
        memory(args.steps, 1 if args.command == "all" else args.samples)
    if args.command == "restart":
        clients = geoip_clients(args.networks, 23)
        probe = [c.address for c in clients[:: max(1, len(clients) // 20_000)]]
        restarted(WORK / "memory-zones-1", WORK / "memory-cache", args.networks, probe, args.baseline)
    if args.command in ("ingest", "all"):
        ingest(args.seconds, args.rate)
    report()


if __name__ == "__main__":
    main()
