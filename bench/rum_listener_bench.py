"""Beacons a second the RUM listener takes (SPEC §10: at least 5,000/s), and the server's CPU per beacon.

A lean load generator: raw keep-alive connections, requests pipelined in batches (the client
costs little next to the server), every beacon valid and from a network of its own behind a
trusted proxy (X-Forwarded-For), so none is refused for the rate. Loopback only.

    .venv/bin/python bench/rum_listener_bench.py [--seconds 5] [--connections 8] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.serverproc import api, own_cache, start_server

ZONE = """nameservers:
  ns1.bench.example.: [192.0.2.53]
health: {type: none}
pools:
  web:
    regions:
      us-east: {location: [39.04, -77.49], endpoints: [127.0.0.11]}
      eu-west: {location: [53.35, -6.26], endpoints: [127.0.0.12]}
      ap-south: {location: [1.29, 103.85], endpoints: [127.0.0.13]}
records:
  www: {type: GEO, pool: web, ttl: 5}
"""


def request(host: str, n: int) -> bytes:
    body = json.dumps({"zone": "bench.example", "pool": "web", "rtt": {"us-east": 20 + n % 7, "eu-west": 80.5, "ap-south": 190}})
    client = f"{1 + (n >> 16) % 223}.{(n >> 8) % 256}.{n % 256}.9"  # a /24 each, spread over the address space
    return (
        f"POST /v1/rum HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nX-Forwarded-For: {client}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def connection(host: str, port: int, batch: int, deadline: float, requests: list[bytes], statuses: dict[str, int]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    sent = 0
    carry = b""  # the end of the last read: a status line cut in two is still found
    while time.monotonic() < deadline:
        at = sent % (len(requests) - batch)
        writer.write(b"".join(requests[at : at + batch]))
        answered = 0
        while answered < batch:
            chunk = await reader.read(262144)
            if not chunk:
                raise RuntimeError("connection closed")
            data = carry + chunk
            for status in re.findall(rb"HTTP/1\.1 (\d{3})", data):
                statuses[status.decode()] = statuses.get(status.decode(), 0) + 1
                answered += 1
            carry = data[-11:]  # too short to hold a whole status line already counted
        sent += batch
    writer.close()
    return sent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(host: str, port: int, seconds: float, connections: int, batch: int) -> tuple[int, dict[str, int]]:
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    sent = await asyncio.gather(
        *(
            connection(host, port, batch, deadline, [request(host, (i << 16) + n) for n in range(20000)], statuses)
            for i in range(connections)
        )
    )
    return sum(sent), statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        zones = Path(folder) / "zones"
        zones.mkdir()
        (zones / "bench.example.yaml").write_text(ZONE)
        cache = str(own_cache(Path(folder) / "cache"))  # measurements of its own, never left in the tests' cache
        args_ = ["--rum-listen", "127.0.0.1:0", "--rum-trusted-proxy", "127.0.0.0/8", "--workers", "1", "--cache-dir", cache]
        server = start_server(zones, *args_)
        try:
            found = re.search(r", rum (\S+):(\d+)$", server.ready_line.strip())
            assert found, server.ready_line
            host, port = found.group(1), int(found.group(2))
            cpu_before = cpu_seconds(server.proc.pid)
            started = time.monotonic()
            sent, statuses = asyncio.run(load(host, port, args.seconds, args.connections, args.batch))
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(server.proc.pid) - cpu_before
            _, status = api(server, "GET", "/v1/status")
            print(f"beacons: {sent} in {elapsed:.2f} s = {sent / elapsed:,.0f}/s; replies {statuses}")
            print(f"server main process CPU: {cpu:.2f} s = {1e6 * cpu / max(sent, 1):.0f} us per beacon")
            print(f"status: {status['rum']['beacons']}; networks with evidence: {status['pools']['web']['latency']['networks']}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
