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
from tests.backends import free_port as free_port_on  # noqa: E402


def start_geolb(zones: Path, *extra: str) -> tuple[subprocess.Popen[str], int, str]:
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
            "warning",
            *extra,
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
    """The check targets: one loopback HTTP/1.1 responder that counts hits per path (GET /stats: the counts).

    A bare asyncio protocol, not an aiohttp server: at 10,000 checks a second an aiohttp
    server would take a core of this 2-core machine from the prober it is measuring.
    """
    hits: dict[str, int] = {}
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

    class Responder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                path = head.split(b" ", 2)[1].decode()
                if path == "/stats":
                    body = json.dumps(hits).encode()
                    self.transport.write(  # type: ignore[attr-defined]
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body)
                    )
                    self.transport.close()
                    return
                hits[path] = hits.get(path, 0) + 1
                self.transport.write(ok)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for address in ["127.0.0.1", *BACKEND_ADDRESSES]:
            await loop.create_server(Responder, address, port, backlog=4096)
        ready.set()
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def free_port() -> int:
    return free_port_on(["127.0.0.1", *BACKEND_ADDRESSES])


BACKEND_ADDRESSES = [f"127.0.0.{101 + i}" for i in range(10)]  # a region's endpoints (distinct addresses)
PLACES = ["[40.7, -74.0]", "[51.5, -0.1]", "[35.7, 139.7]", "[-33.9, 151.2]"]


def probe_zone(count: int, port: int, interval: float = 1.0, timeout: float = 2.0) -> str:
    """`count` http check targets laid out as operators have them: pools of 4 regions (the same 4 places,
    so one region map serves them all) of 10 endpoints, each endpoint with a path of its own."""
    per_pool = len(PLACES) * len(BACKEND_ADDRESSES)
    lines = [
        "nameservers: {ns1.bench.example.: [192.0.2.53]}",
        f"health: {{type: http, port: {port}, interval: {interval:g}, timeout: {timeout:g}, fall: 3, rise: 2}}",
        "pools:",
    ]
    for pool in range((count + per_pool - 1) // per_pool):
        lines += [f"  p{pool}:", "    regions:"]
        for r, place in enumerate(PLACES):
            first = pool * per_pool + r * len(BACKEND_ADDRESSES)
            endpoints = ", ".join(
                f"{{address: {address}, health: {{path: /health/{first + i}}}}}"
                for i, address in enumerate(BACKEND_ADDRESSES)
                if first + i < count
            )
            if endpoints:
                lines.append(f"      r{r}: {{location: {place}, endpoints: [{endpoints}]}}")
    lines.append("records:")
    lines += [
        f"  {'www' if pool == 0 else f'p{pool}'}: [{{type: GEO, pool: p{pool}, ttl: 5}}]"
        for pool in range((count + per_pool - 1) // per_pool)
    ]
    return "\n".join(lines) + "\n"


def latency(port: int, rate: int, seconds: float) -> list[float]:
    """dnsperf at `rate` queries a second for `seconds` (www.bench.example A); each answered query's RTT in ms."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as queries:
        queries.write("www.bench.example A\n")
        queries.flush()
        out = subprocess.run(
            [
                "dnsperf",
                "-s",
                "127.0.0.1",
                "-p",
                str(port),
                "-d",
                queries.name,
                "-l",
                str(seconds),
                "-Q",
                str(rate),
                "-c",
                "4",
                "-q",
                "200",
                "-v",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    if lost:
        print(f"    {lost} queries unanswered")
    return sorted(float(m) * 1000 for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.M))


def scale(counts: list[int], window: float, rate: int, workers: int) -> None:
    port = free_port()
    ready = multiprocessing.Event()
    backend = multiprocessing.Process(target=_backend_process, args=(port, ready), daemon=True)
    backend.start()
    ready.wait(10)
    try:
        for count in counts:
            zone = probe_zone(count, port)
            with tempfile.TemporaryDirectory() as tmp:
                zones = Path(tmp)
                (zones / "bench.example.yaml").write_text(zone)
                started = time.monotonic()
                proc, dns_port, http = start_geolb(zones, "--workers", str(workers))
                print(f"{count} targets: ready after {time.monotonic() - started:.1f} s (initial round included)", flush=True)
                try:
                    time.sleep(2.0)  # let the schedule settle past the first spread
                    before = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats"))
                    measured_from = time.monotonic()
                    rtts = latency(dns_port, rate, window)
                    after = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats"))
                    expected = time.monotonic() - measured_from
                    status = json.load(urllib.request.urlopen(f"http://{http}/v1/status"))
                finally:
                    proc.terminate()
                    proc.wait()
            per_target = [after.get(f"/health/{i}", 0) - before.get(f"/health/{i}", 0) for i in range(count)]
            on_schedule = sum(1 for hits in per_target if hits >= 0.9 * expected - 1) / count
            down = sum(1 for p in status["pools"].values() for r in p["regions"].values() for e in r["endpoints"] if e["state"] == "down")
            pct = {p: rtts[min(len(rtts) - 1, int(p / 100 * len(rtts)))] for p in (50, 90, 99, 99.9)}
            print(
                f"  checks/s {sum(per_target) / expected:.0f} (wanted {count}); on schedule {100 * on_schedule:.1f} %; "
                f"endpoints down {down}; DNS at {rate} qps: "
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
    s.add_argument("--rate", type=int, default=5000, help="DNS queries per second meanwhile")
    s.add_argument("--workers", type=int, default=1, help="DNS workers of the geolb under test")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.what == "failover":
        failover(args.trials)
    else:
        scale(args.targets, args.window, args.rate, args.workers)


if __name__ == "__main__":
    main()
