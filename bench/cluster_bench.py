"""Failover across a cluster (SPEC §8), measured with a real etcd and three geolb instances on loopback.

Each instance probes from its own address (127.0.0.21, .22, .23, --probe-source); the check
has interval 1 s, timeout 0.5 s, fall 3, rise 2, quorum majority. A trial stops the first
region's backends at a random point of the check cycle and times how long until all three
instances answer with the second region; then the backends come back and every instance
must return to the first region before the next trial.

    .venv/bin/python bench/cluster_bench.py [--trials 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.backends import Backends  # noqa: E402
from tests.etcdproc import Etcd  # noqa: E402
from tests.serverproc import RunningServer, start_server  # noqa: E402

FIRST, SECOND = ["127.0.0.61", "127.0.0.62"], ["127.0.0.71"]
SOURCES = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]


def zone(port: int) -> str:
    return f"""
nameservers: {{ns1.bench.example.: [127.0.0.1]}}
health: {{type: http, port: {port}, path: /health, interval: 1, timeout: 0.5, fall: 3, rise: 2, quorum: majority}}
pools:
  web:
    regions:
      first: {{endpoints: [{", ".join(FIRST)}]}}
      second: {{endpoints: [{", ".join(SECOND)}]}}
records:
  www: [{{type: GEO, pool: web, ttl: 5}}]
"""


def answer(server: RunningServer) -> set[str]:
    try:
        return {r.to_text() for rrset in server.query("www.bench.example", "A").answer for r in rrset}
    except Exception:  # a timeout counts as no answer
        return set()


def wait_all(servers: list[RunningServer], wanted: set[str], limit: float) -> float:
    """Seconds until every instance answers `wanted` (polled every 10 ms); the time the last one did."""
    started = time.monotonic()
    pending = set(range(len(servers)))
    while pending:
        if time.monotonic() - started > limit:
            raise RuntimeError(f"instances {sorted(pending)} did not answer {wanted} within {limit} s")
        for index in list(pending):
            if answer(servers[index]) == wanted:
                pending.discard(index)
        time.sleep(0.01)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(2026)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        etcd = Etcd(work / "etcd")
        etcd.start()
        backends = Backends(FIRST + SECOND)
        zones = work / "zones"
        zones.mkdir()
        (zones / "bench.example.yaml").write_text(zone(backends.port))
        servers: list[RunningServer] = []
        try:
            for index, source in enumerate(SOURCES):
                servers.append(
                    start_server(
                        zones, "--workers", "1", "--cluster", etcd.url, "--instance", f"i{index}", "--probe-source", source, tmp=work
                    )
                )
            times: list[float] = []
            for trial in range(args.trials):
                wait_all(servers, set(FIRST), 20)
                time.sleep(2 + rng.uniform(0, 1))  # stop at a different point of the check cycle each time
                for address in FIRST:
                    backends.stop(address)
                times.append(wait_all(servers, set(SECOND), 30))
                print(f"  trial {trial + 1}: all three instances on the next region after {times[-1]:.2f} s", flush=True)
                for address in FIRST:
                    backends.start(address)
        finally:
            for server in servers:
                server.stop()
            backends.close()
            etcd.kill()
    print(
        f"cluster failover (3 instances, interval 1 s, fall 3, timeout 0.5 s, {args.trials} trials): "
        f"median {statistics.median(times):.2f} s, max {max(times):.2f} s"
    )


if __name__ == "__main__":
    main()
