"""Queries lost while geolb is restarted under load: `serve --replace` against a plain stop and start.

dnsperf sends a steady --rate of the shared bench's `wide` query file (binary, each
query from a /24 of its own) to geolb on the bench scenario; --at seconds in, geolb is
restarted (--mode), either with `--replace` (the new instance answers beside the old one, then
stops it) or by SIGTERM, wait for the exit, start again. Prints dnsperf's "Queries
lost" for each, and how long the restart took (from asking to the new ready line).

    .venv/bin/python bench/replace_bench.py                      # both, 5,000 qps for 20 s each
    .venv/bin/python bench/replace_bench.py --mode replace --rounds 3
    BENCH_SHARED=/work/shared/bench .venv/bin/python bench/replace_bench.py   # from a worktree elsewhere
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BENCH_SHARED", ROOT.parent / "shared" / "bench"))  # /work/shared/bench from /work/main
READY = re.compile(r"geolb ready: dns (\S+) ")


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port + 1))
                tcp.close()
                with socket.socket() as same:
                    same.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def start(args: argparse.Namespace, port: int, *extra: str) -> subprocess.Popen[str]:
    """`geolb serve` on the bench scenario; returns once it printed its ready line."""
    command = [
        sys.executable, "-m", "geolb", "serve", "--zones", args.zones, "--geoip", args.geoip,
        "--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{port + 1}", "--workers", str(args.workers),
        "--watch-interval", "0", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if READY.search(line):
            return proc
    raise SystemExit(f"geolb did not start: exit {proc.wait()}")


def dnsperf(args: argparse.Namespace, port: int, out: dict[str, str]) -> None:
    command = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-B", "-d", args.queries, "-l", str(args.seconds)]
    # -q: room for every query of a long outage to be outstanding (dnsperf stops sending at that many)
    command += ["-Q", str(args.rate), "-q", str(args.rate * 10), "-c", "8", "-t", "5", "-S", "5"]
    out["text"] = subprocess.run(command, capture_output=True, text=True, check=True).stdout


def field(text: str, name: str) -> str:
    match = re.search(rf"{name}:\s+([\d.]+)", text)
    return match.group(1) if match else "?"


def one_round(args: argparse.Namespace, mode: str) -> tuple[str, str, float]:
    """(queries sent, queries lost, seconds from asking for the restart to the new ready line)."""
    port = free_port()
    old = start(args, port)
    result: dict[str, str] = {}
    load = threading.Thread(target=dnsperf, args=(args, port, result))
    load.start()
    time.sleep(args.at)
    asked = time.monotonic()
    if mode == "replace":
        new = start(args, port, "--replace")
        old.wait(timeout=30)
    elif mode == "none":
        new = old
    else:
        old.send_signal(signal.SIGTERM)
        old.wait(timeout=30)
        new = start(args, port)
    took = time.monotonic() - asked
    load.join()
    new.send_signal(signal.SIGTERM)
    new.wait(timeout=30)
    text = result.get("text", "")
    return field(text, "Queries sent"), field(text, "Queries lost"), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zones", default=str(SHARED / "geolb" / "zones"))
    parser.add_argument("--geoip", default="/tmp/bench-geo/GeoLite2-City.mmdb")
    parser.add_argument("--queries", default="/tmp/bench-queries-wide/mixed.bin")
    parser.add_argument("--rate", type=int, default=5000, help="queries per second dnsperf sends (default 5000)")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--at", type=float, default=5.0, help="seconds into the run the restart begins")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=["replace", "restart", "none", "both"], default="both", help="none: no restart (baseline)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    modes = ["replace", "restart"] if args.mode == "both" else [args.mode]
    for _ in range(args.rounds):
        for mode in modes:
            sent, lost, took = one_round(args, mode)
            label = {"replace": "--replace", "restart": "stop+start", "none": "no restart"}[mode]
            print(f"{label:>10}: {sent} queries sent at {args.rate}/s, {lost} lost; restart {took:.1f} s to the new ready line", flush=True)


if __name__ == "__main__":
    main()
