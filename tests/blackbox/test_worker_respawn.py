"""A DNS worker that dies (kill -9, the OOM killer) is replaced, and /healthz, /v1/status and /metrics say so."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.serverproc import RunningServer, api, start_server, wait_until
from tests.steadyclient import SteadyClient


def worker_pids(server: RunningServer) -> set[int]:
    """The main process's children that are DNS workers (not multiprocessing's resource tracker)."""
    pid = server.proc.pid
    pids = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.add(int(child))
        except OSError:
            continue
    return pids


def workers(server: RunningServer) -> dict[str, int]:
    """What /healthz says of the workers (/v1/status says the same; it also asks each worker for its counters)."""
    _, report = api(server, "GET", "/healthz")
    return dict(report["workers"])


def test_a_killed_worker_is_replaced_and_nothing_goes_unanswered() -> None:
    server = start_server("tests/data/zones", "--workers", "2")
    try:
        first = worker_pids(server)
        assert len(first) == 2
        assert workers(server) == {"expected": 2, "alive": 2, "restarts": 0}
        assert api(server, "GET", "/v1/status")[1]["workers"] == {"expected": 2, "alive": 2, "restarts": 0}
        with SteadyClient(lambda: (server.host, server.port), "mail.example.com") as client:
            time.sleep(0.3)  # the client is under way before the kill
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: workers(server) == {"expected": 2, "alive": 2, "restarts": 1}, 10, "a new worker answers")
            second = worker_pids(server)
            assert len(second) == 2 and victim not in second and first - {victim} < second

            # Killed again soon after its start: the next one waits (backoff), and meanwhile the pool says it is degraded.
            (newcomer,) = second - first
            os.kill(newcomer, signal.SIGKILL)
            wait_until(lambda: workers(server)["alive"] == 1, 5, "the death is seen")
            status, health = api(server, "GET", "/healthz")
            assert status == 200 and health["status"] == "degraded", health
            assert health["workers"] == {"expected": 2, "alive": 1, "restarts": 1}
            wait_until(lambda: workers(server) == {"expected": 2, "alive": 2, "restarts": 2}, 10, "replaced again after the backoff")
            time.sleep(0.3)
        assert client.udp.lost == [] and client.tcp.lost == []
        assert client.udp.answered > 20 and client.tcp.answered > 20
        status, health = api(server, "GET", "/healthz")
        assert status == 200 and health["status"] == "ok"
        assert api(server, "GET", "/v1/status")[1]["workers"] == {"expected": 2, "alive": 2, "restarts": 2}
        status, metrics = api(server, "GET", "/metrics")
        assert "geolb_dns_worker_restarts_total 2.0" in metrics
        assert "geolb_dns_workers_alive 2.0" in metrics
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr()


def test_healthz_is_503_only_when_no_worker_answers() -> None:
    server = start_server("tests/data/zones", "--workers", "1")
    try:
        (only,) = worker_pids(server)
        os.kill(only, signal.SIGKILL)
        wait_until(lambda: api(server, "GET", "/healthz")[0] == 503, 5, "503 with no worker")
        wait_until(lambda: api(server, "GET", "/healthz")[0] == 200, 10, "back once the new worker answers")
        assert server.query("mail.example.com", "A").answer
    finally:
        assert server.stop() == 0


def test_no_worker_is_respawned_once_the_server_stops() -> None:
    """A worker waiting out its backoff when SIGTERM comes is not started: the server exits 0 promptly."""
    server = start_server("tests/data/zones", "--workers", "2")
    try:
        first = worker_pids(server)
        os.kill(min(first), signal.SIGKILL)
        wait_until(lambda: workers(server)["restarts"] == 1 and workers(server)["alive"] == 2, 10, "respawned once")
        (newcomer,) = worker_pids(server) - first
        os.kill(newcomer, signal.SIGKILL)  # dies soon after its start: the next one waits 1 s
        wait_until(lambda: workers(server)["alive"] == 1, 5, "the death is seen")
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5
    finally:
        server.stop()
    log = server.stderr()
    assert log.count("answers in place of") == 1, log
    assert "starting another in 1.0 s" in log and "Traceback" not in log
