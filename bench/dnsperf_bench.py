"""Drive a geolb with dnsperf on loopback: qps, server CPU per query (from /proc), latency percentiles.

Generates an ECS-spread query file in dnsperf's binary format (-B) from the GeoIP
database: 80 % GEO A with ECS from public /24s in 100+ countries, 10 % static A,
5 % NXDOMAIN, 5 % GEO AAAA. Starts `geolb serve` (pinned to core 0 and dnsperf to
core 1 with --pin), warms it, runs a saturating throughput test and a fixed-rate
latency test. With --probe-targets N it also serves a zone of N http check targets
(on a loopback backend process, 1 s interval), to see DNS latency while probing.

    apt-get install dnsperf
    .venv/bin/python bench/dnsperf_bench.py --zones ../shared/bench/geolb/zones --workers 1 --pin
    .venv/bin/python bench/dnsperf_bench.py --zones ../shared/bench/geolb/zones --probe-targets 100 --pin --workers 1
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import dns.edns
import dns.message
import maxminddb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from geo_accuracy import pick_subnets  # noqa: E402
from health_bench import _backend_process  # noqa: E402

from geolb.geo.locate import bundled_database  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def query_file(path: Path, geoip: str, name: str, static: str, zone: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    subnets = pick_subnets(maxminddb.open_database(geoip), 2000, 20, seed)
    with open(path, "wb") as out:
        for i in range(count):
            roll = rng.random()
            net = subnets[i % len(subnets)][0]
            ecs = [dns.edns.ECSOption(str(net.network_address), 24)]
            if roll < 0.80:
                message = dns.message.make_query(name, "A", use_edns=0, options=ecs)
            elif roll < 0.90:
                message = dns.message.make_query(static, "A", use_edns=0, options=ecs)
            elif roll < 0.95:
                message = dns.message.make_query(f"x{rng.getrandbits(40):x}.nx.{zone}", "A", use_edns=0, options=ecs)
            else:
                message = dns.message.make_query(name, "AAAA", use_edns=0, options=ecs)
            message.id = 0
            message.flags = 0
            wire = message.to_wire()
            out.write(struct.pack("!H", len(wire)) + wire)


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` and its direct children (DNS workers)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dnsperf(args: list[str], pin: bool) -> str:
    command = ["dnsperf", *args]
    if pin:
        command = ["taskset", "-c", "1", *command]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zones", default=str(ROOT.parent / "shared" / "bench" / "geolb" / "zones"))
    parser.add_argument("--geoip", default=None, help="default: the bundled GeoLite2 City")
    parser.add_argument("--name", default="www.example.com")
    parser.add_argument("--static", default="static.example.com")
    parser.add_argument("--zone", default="example.com")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pin", action="store_true", help="server on core 0, dnsperf on core 1")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rate", type=int, default=5000, help="queries per second for the latency run")
    parser.add_argument("--probe-targets", type=int, default=0)
    parser.add_argument("--probe-interval", type=float, default=1.0)
    parser.add_argument("--geolb", nargs="*", default=[], help="more `geolb serve` arguments")
    args = parser.parse_args()
    if shutil.which("dnsperf") is None:
        sys.exit("dnsperf is not installed (apt-get install dnsperf)")
    geoip = args.geoip or bundled_database()
    assert geoip

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        queries = work / "mixed.bin"
        query_file(queries, geoip, args.name, args.static, args.zone, 20000, 2026)
        zones = work / "zones"
        shutil.copytree(args.zones, zones)
        backend = None
        if args.probe_targets:
            port = free_port()
            ready = multiprocessing.Event()
            backend = multiprocessing.Process(target=_backend_process, args=(port, ready), daemon=True)
            backend.start()
            ready.wait(10)
            regions = "\n".join(
                f"      r{i}: {{endpoints: [{{address: 127.0.0.1, health: {{path: /health/{i}}}}}]}}" for i in range(args.probe_targets)
            )
            (zones / "probe.example.yaml").write_text(
                "nameservers: {ns1.probe.example.: [192.0.2.53]}\n"
                f"health: {{type: http, port: {port}, interval: {args.probe_interval}, timeout: 1}}\n"
                f"pools:\n  probed:\n    regions:\n{regions}\nrecords:\n  www: [{{type: GEO, pool: probed}}]\n"
            )
        dns_port = free_port()
        command = [sys.executable, "-m", "geolb", "serve", "--zones", str(zones), "--geoip", geoip, "--listen", f"127.0.0.1:{dns_port}"]
        command += ["--http", "off", "--workers", str(args.workers), "--log-level", "warning", *args.geolb]
        if args.pin:
            command = ["taskset", "-c", "0", *command]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            assert line.startswith("geolb ready"), line
            print(line.strip())
            common = ["-s", "127.0.0.1", "-p", str(dns_port), "-B", "-d", str(queries), "-c", "4"]
            dnsperf([*common, "-l", "5", "-q", "100"], args.pin)  # warm every cache
            before = cpu_ticks(server.pid)
            out = dnsperf([*common, "-l", str(args.duration), "-q", "100", "-S", "1"], args.pin)
            ticks = cpu_ticks(server.pid) - before
            completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
            lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            us_per_query = 1e6 * ticks / CLK_TCK / max(completed, 1)
            print(f"throughput: {qps:,.0f} qps, server CPU {us_per_query:.1f} µs per query, lost {lost}")
            out = dnsperf([*common, "-l", "10", "-q", "100", "-Q", str(args.rate), "-v"], args.pin)
            latencies = sorted(float(m) * 1000 for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.M))
            lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            print(
                f"latency at {args.rate} qps: n={len(latencies)} lost={lost} mean {statistics.fmean(latencies):.3f} ms, "
                + ", ".join(f"p{p} {percentile(latencies, p):.3f} ms" for p in (50, 90, 99, 99.9))
            )
        finally:
            server.terminate()
            server.wait(10)
            if backend is not None:
                backend.terminate()


if __name__ == "__main__":
    main()
