"""Health-check figures, measured against a running geolb on loopback (run by hand, not a test).

1. failover: interval 1 s, fall 3, timeout 0.5 s; a region's backends are stopped and we time
   how long until the first answer comes from the next region (10 trials: median, max).
2. scale: N check targets (distinct paths on one loopback backend process) at a 1 s interval;
   the share probed on schedule over a window, and DNS latency percentiles meanwhile.

    .venv/bin/python bench/health_bench.py failover
    .venv/bin/python bench/health_bench.py scale --targets 100 1000 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.backends import Backends  # noqa: E402


def start_geolb(zones: Path) -> tuple[subprocess.Popen[str], int, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geolb",
            "serve",
            "--zones",
            str(zones),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.match(r"geolb ready: dns 127.0.0.1:(\d+) \(udp\+tcp\), http (\S+),", line)
    assert match, line
    return proc, int(match.group(1)), match.group(2)


def answer(port: int) -> set[str]:
    query = dns.message.make_query("www.bench.example", "A")
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
    except dns.exception.Timeout:
        return set()
    return {r.to_text() for rrset in response.answer for r in rrset}


def failover(trials: int) -> None:
    first, second = ["127.0.0.61", "127.0.0.62"], ["127.0.0.71"]
    backends = Backends(first + second)
    zone = f"""
nameservers: {{ns1.bench.example.: [192.0.2.53]}}
health: {{type: http, port: {backends.port}, path: /health, interval: 1, timeout: 0.5, fall: 3, rise: 2}}
pools:
  web:
    regions:
      first: {{endpoints: [{", ".join(first)}]}}
      second: {{endpoints: [{", ".join(second)}]}}
records:
  www: [{{type: GEO, pool: web, ttl: 5}}]
"""
    with tempfile.TemporaryDirectory() as tmp:
        zones = Path(tmp)
        (zones / "bench.example.yaml").write_text(zone)
        proc, port, _ = start_geolb(zones)
        times: list[float] = []
        try:
            for trial in range(trials):
                for address in first:
                    if address not in backends._runners:
                        backends.start(address)
                deadline = time.monotonic() + 10
                while answer(port) != set(first):
                    assert time.monotonic() < deadline, "first region did not come back"
                    time.sleep(0.05)
                time.sleep(1.0 + (trial % 5) * 0.2)  # kill at different points of the check cycle
                killed = time.monotonic()
                for address in first:
                    backends.stop(address)
                while answer(port) != set(second):
                    time.sleep(0.01)
                times.append(time.monotonic() - killed)
                print(f"  trial {trial + 1}: {times[-1]:.2f} s", flush=True)
        finally:
            proc.terminate()
            proc.wait()
            backends.close()
    print(
        f"failover (interval 1 s, fall 3, timeout 0.5 s, {trials} trials): median {statistics.median(times):.2f} s, max {max(times):.2f} s"
    )


def _backend_process(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    from aiohttp import web

    hits: dict[str, int] = {}

    async def health(request: web.Request) -> web.Response:
        path = request.path
        hits[path] = hits.get(path, 0) + 1
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(hits)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/stats", stats)
        app.router.add_get("/health/{n}", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        ready.set()
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def latency(port: int, rate: int, seconds: float) -> list[float]:
    """Send `rate` queries a second for `seconds` from one UDP socket; RTT of each answered one."""
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}
    rtts: list[float] = []

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            qid = int.from_bytes(data[:2], "big")
            started = sent.pop(qid, None)
            if started is not None:
                rtts.append(time.perf_counter() - started)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    wire = bytearray(dns.message.make_query("www.bench.example", "A").to_wire())
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        qid = i & 0xFFFF
        wire[0:2] = qid.to_bytes(2, "big")
        sent[qid] = time.perf_counter()
        transport.sendto(bytes(wire))
    await asyncio.sleep(1.0)
    transport.close()
    lost = total - len(rtts)
    if lost:
        print(f"    {lost} of {total} queries unanswered")
    return rtts


def scale(counts: list[int], window: float) -> None:
    port = free_port()
    ready = multiprocessing.Event()
    backend = multiprocessing.Process(target=_backend_process, args=(port, ready), daemon=True)
    backend.start()
    ready.wait(10)
    try:
        for count in counts:
            regions = "\n".join(f"      r{i}: {{endpoints: [{{address: 127.0.0.1, health: {{path: /health/{i}}}}}]}}" for i in range(count))
            zone = f"""
nameservers: {{ns1.bench.example.: [192.0.2.53]}}
health: {{type: http, port: {port}, interval: 1, timeout: 2, fall: 3, rise: 2}}
pools:
  web:
    regions:
{regions}
records:
  www: [{{type: GEO, pool: web, ttl: 5}}]
"""
            with tempfile.TemporaryDirectory() as tmp:
                zones = Path(tmp)
                (zones / "bench.example.yaml").write_text(zone)
                started = time.monotonic()
                proc, dns_port, http = start_geolb(zones)
                print(f"{count} targets: ready after {time.monotonic() - started:.1f} s (initial round included)", flush=True)
                try:
                    time.sleep(2.0)  # let the schedule settle past the first spread
                    before = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats"))
                    rtts = asyncio.run(latency(dns_port, 2000, window))
                    after = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats"))
                    status = json.load(urllib.request.urlopen(f"http://{http}/v1/status"))
                finally:
                    proc.terminate()
                    proc.wait()
            per_target = [after.get(f"/health/{i}", 0) - before.get(f"/health/{i}", 0) for i in range(count)]
            expected = window + 1.0  # the latency run lasts window + 1 s
            on_schedule = sum(1 for hits in per_target if hits >= 0.9 * expected - 1) / count
            down = sum(1 for p in status["pools"].values() for r in p["regions"].values() for e in r["endpoints"] if e["state"] == "down")
            rtts.sort()
            pct = {p: 1000 * rtts[min(len(rtts) - 1, int(p / 100 * len(rtts)))] for p in (50, 90, 99, 99.9)}
            print(
                f"  checks/s {sum(per_target) / expected:.0f} (wanted {count}); on schedule {100 * on_schedule:.1f} %; "
                f"endpoints down {down}; DNS at 2000 qps: "
                f"p50 {pct[50]:.2f} ms p90 {pct[90]:.2f} ms p99 {pct[99]:.2f} ms p99.9 {pct[99.9]:.2f} ms",
                flush=True,
            )
    finally:
        backend.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("failover")
    f.add_argument("--trials", type=int, default=10)
    s = sub.add_parser("scale")
    s.add_argument("--targets", type=int, nargs="+", default=[100, 1000, 5000])
    s.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.what == "failover":
        failover(args.trials)
    else:
        scale(args.targets, args.window)


if __name__ == "__main__":
    main()
