"""Throughput while a region flaps: dnsperf over many client networks, steady and with a region forced down/up.

Starts `geolb serve` on the bench scenario, runs dnsperf once steady and once while
a region's endpoints are forced down and back up through the API every --period
seconds. Meanwhile a checker asks from client networks near that region and counts
answers that name it while the API has it forced down (a query counts only when it
was sent after the API confirmed "down" and answered before the next change was
asked for). Prints qps of both runs, their ratio and the violations (must be 0).

    .venv/bin/python bench/flap_bench.py --workers 1 --pin
    .venv/bin/python bench/flap_bench.py --workers 1 --pin --loop     # 15 s of traffic: 7 flips

The default query file is the shared bench's `wide` scenario (200,000 /24s, each once).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import dns.edns
import dns.message
import dns.query

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "bench"
READY = re.compile(r"geolb ready: dns (\S+) .*http (\S+),")


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int, str]:
    command = [
        sys.executable, "-m", "geolb", "serve", "--zones", args.zones, "--listen", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--workers", str(args.workers), "--watch-interval", "0",
    ]  # fmt: skip
    if args.geoip:
        command += ["--geoip", args.geoip]
    if args.pin:
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = READY.search(line)
        if match:
            return proc, int(match.group(1).rpartition(":")[2]), f"http://{match.group(2)}"
    raise SystemExit("geolb did not start")


def dnsperf(args: argparse.Namespace, port: int) -> float:
    command = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-B", "-d", args.queries, "-l", str(args.seconds)]
    command += ["-c", "4", "-q", "100", "-S", "1"] + (["-n", "1"] if args.once else [])
    if args.pin:
        command = ["taskset", "-c", "1", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    print(f"  dnsperf: {match.group(1) if match else '?'} qps, lost {lost.group(1) if lost else '?'}")
    return float(match.group(1)) if match else 0.0


def force(api: str, pool: str, region: str, address: str, state: str | None) -> None:
    body = json.dumps({"state": state}).encode()
    request = urllib.request.Request(f"{api}/v1/endpoints/{pool}/{region}/{address}/force", body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


class Flapper:
    """Forces the region's endpoints down and up in turn; `epoch` changes whenever its state is in doubt."""

    def __init__(self, api: str, args: argparse.Namespace) -> None:
        self.api = api
        self.args = args
        self.epoch = 0
        self.down = False  # known state; only meaningful for the current epoch
        self.flips = 0
        self.stop = threading.Event()

    def run(self) -> None:
        state = "down"
        while not self.stop.wait(self.args.period):
            self.epoch += 1  # in doubt from the moment we ask
            for address in self.args.addresses:
                force(self.api, self.args.pool, self.args.region, address, state)
            self.down = state == "down"
            self.epoch += 1
            self.flips += 1
            state = "up" if state == "down" else "down"
        for address in self.args.addresses:
            force(self.api, self.args.pool, self.args.region, address, None)


def check(flapper: Flapper, port: int, args: argparse.Namespace, counts: dict[str, int]) -> None:
    """Ask from near the region; an answer naming it while it is known forced down is a violation."""
    subnets = args.near
    index = 0
    while not flapper.stop.is_set():
        subnet = subnets[index % len(subnets)]
        index += 1
        address, _, prefix = subnet.partition("/")
        query = dns.message.make_query(args.name, "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))])
        epoch, down = flapper.epoch, flapper.down
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
        except dns.exception.Timeout:
            counts["timeouts"] += 1
            continue
        if epoch % 2 or flapper.epoch != epoch:
            continue  # the state changed (or was changing) while this query was out
        answered = {r.to_text() for rrset in response.answer for r in rrset}
        named = bool(answered & set(args.addresses))
        counts["checked_down" if down else "checked_up"] += 1
        if down and named:
            counts["violations"] += 1
        time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zones", default=str(SHARED / "geolb" / "zones"))
    parser.add_argument("--geoip", default="/tmp/bench-geo/GeoLite2-City.mmdb")
    parser.add_argument("--queries", default="/tmp/bench-queries-wide/mixed.bin")
    parser.add_argument(
        "--loop", dest="once", action="store_false", help="dnsperf cycles the query file for --seconds (default: each query once)"
    )
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pin", action="store_true", help="server on core 0, dnsperf on core 1")
    parser.add_argument("--period", type=float, default=2.0)
    parser.add_argument("--name", default="www.example.com")
    parser.add_argument("--pool", default="web")
    parser.add_argument("--region", default="eu-west")
    parser.add_argument("--addresses", nargs="+", default=["198.51.100.10", "2001:db8:3::10"])
    parser.add_argument("--near", nargs="+", default=["81.2.69.0/24", "193.0.6.0/24", "2.2.3.0/24", "80.0.0.0/16"])
    args = parser.parse_args()

    proc, port, api = start_server(args)
    try:
        print("steady:")
        steady = dnsperf(args, port)
        print(f"flapping {args.region} every {args.period:g} s:")
        flapper = Flapper(api, args)
        counts = {"checked_down": 0, "checked_up": 0, "violations": 0, "timeouts": 0}
        threads = [threading.Thread(target=flapper.run), threading.Thread(target=check, args=(flapper, port, args, counts))]
        for thread in threads:
            thread.start()
        try:
            flapping = dnsperf(args, port)
        finally:
            flapper.stop.set()
            for thread in threads:
                thread.join()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    print(f"steady {steady:.0f} qps, flapping {flapping:.0f} qps: {100 * flapping / steady:.1f} % of steady; {flapper.flips} flips")
    print(
        f"checker: {counts['checked_down']} answers while forced down, {counts['checked_up']} while up, "
        f"{counts['violations']} named the forced-down region, {counts['timeouts']} timeouts"
    )


if __name__ == "__main__":
    main()
