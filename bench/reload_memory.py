"""Resident memory of a running geolb across many reloads: a leak shows as steady growth.

Starts `geolb serve` on the demo zones (no workers), reloads through the API N times
after W warm-up reloads, touching the zone file between reloads so every one of them
re-reads it, and prints the main process's RSS before and after.

    .venv/bin/python bench/reload_memory.py --reloads 300 --warmup 20
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zones", default=str(ROOT / "zones"))
    parser.add_argument("--reloads", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="geolb-reload-"))
    zones = workdir / "zones"
    shutil.copytree(args.zones, zones)
    command = [sys.executable, "-m", "geolb", "serve", "--zones", str(zones), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    command += ["--workers", "1", "--watch-interval", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        http = ""
        for line in proc.stdout:
            match = re.search(r"http (\S+),", line)
            if match:
                http = match.group(1)
                break
        files = sorted(zones.glob("*.yaml"))

        def reload(n: int) -> None:
            for path in files:  # a changed file, so the reload reads and swaps it
                os.utime(path, (time.time(), time.time() + n))
                path.write_text(path.read_text().rstrip("\n") + "\n" + ("# again\n" if n % 2 else ""))
            request = urllib.request.Request(f"http://{http}/v1/reload", b"", method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()

        for n in range(args.warmup):
            reload(n)
        before = rss_kb(proc.pid)
        for n in range(args.reloads):
            reload(args.warmup + n)
        after = rss_kb(proc.pid)
        print(f"RSS after {args.warmup} warm-up reloads: {before / 1024:.1f} MB; after {args.reloads} more: {after / 1024:.1f} MB")
        print(f"growth: {(after - before) / 1024:.2f} MB ({(after - before) / args.reloads:.1f} KB per reload)")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
