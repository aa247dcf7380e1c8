"""SPEC §7 (and issue 21 #12): a map build that fails or whose process dies fails that reload with the reason; the old zones keep
serving and later changes are still noticed. A real 1,000-region pool on the bundled GeoLite2 City database
keeps the map builder busy for seconds: long enough to find it (a child of the server) and kill it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from geolb.geo.locate import bundled_database
from tests.blackbox.test_reload import get, write
from tests.geomaps import CACHE
from tests.serverproc import DATA, ROOT, RunningServer, geolb_command, running, wait_until

big_database = pytest.mark.skipif(bundled_database() is None, reason="maxminddb-geolite2 (the bundled database) is not installed")

START_TIMEOUT = 90  # the first start of a test run flattens the bundled database (seconds)


def zone(regions: list[tuple[str, float, float, str]]) -> str:
    lines = ["nameservers:", "  ns1.m.example.: [192.0.2.53]", "health: {type: none}", "pools:", "  web:", "    regions:"]
    for name, latitude, longitude, address in regions:
        lines += [f"      {name}:", f"        location: [{latitude:.4f}, {longitude:.4f}]", f"        endpoints: [{address}]"]
    lines += ["records:", "  www:", "    - {type: GEO, pool: web, ttl: 5}", "  plain:", "    - {type: TXT, value: served}"]
    return "\n".join(lines) + "\n"


SMALL = [("a", 50.0, 8.0, "127.0.0.11")]
SMALL_EDITED = [("a", 50.0, 8.0, "127.0.0.12")]


def big_pool(count: int = 1000) -> list[tuple[str, float, float, str]]:
    """Regions at places never ranked before (so no cached map exists: the build really runs)."""
    rng = random.Random(time.time_ns())
    return [(f"r{i}", rng.uniform(-60, 70), rng.uniform(-180, 180), f"127.0.{1 + i // 250}.{1 + i % 250}") for i in range(count)]


def post(server: RunningServer, path: str) -> tuple[int, Any]:
    """POST with time for a 1,000-region build (seconds; more on a busy machine)."""
    request = urllib.request.Request(f"{server.http_url}{path}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=180) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def children(pid: int) -> set[int]:
    """Child processes of every thread of `pid` (the builder is started from a thread of the server)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def kill_new_child(server: RunningServer, before: set[int]) -> int:
    """Wait for the map builder (a child of the server that was not there before) and kill -9 it."""
    found: set[int] = set()

    def started() -> bool:
        found.update(children(server.proc.pid) - before)
        return bool(found)

    wait_until(started, 30, "the map builder starts")
    builder = min(found)
    os.kill(builder, signal.SIGKILL)
    return builder


def answers(server: RunningServer) -> set[str]:
    return {r.to_text() for rrset in server.query("www.m.example", "A").answer for r in rrset}


def reloads_failed(server: RunningServer) -> float:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    lines = [line for line in text.splitlines() if line.startswith('geolb_reloads_total{result="error"}')]
    return float(lines[0].split()[-1]) if lines else 0.0


@big_database
def test_a_killed_map_builder_fails_the_reload_and_the_watcher_keeps_working(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones / "m.example.yaml", zone(SMALL))
    with running(zones, "--watch-interval", "0.2", timeout=START_TIMEOUT, tmp=tmp_path) as server:
        assert answers(server) == {"127.0.0.11"}
        before = children(server.proc.pid)
        write(zones / "m.example.yaml", zone(big_pool()))
        kill_new_child(server, before)
        wait_until(lambda: not get(server, "/v1/status")["reload"]["ok"], 30, "the reload fails")
        errors = get(server, "/v1/status")["reload"]["errors"]
        assert len(errors) == 1 and "m.example.yaml:" in errors[0] and "killed by SIGKILL" in errors[0], errors
        assert "ERROR" in server.stderr() and "killed by SIGKILL" in server.stderr()
        assert reloads_failed(server) >= 1
        assert answers(server) == {"127.0.0.11"}  # the old zone keeps serving, over UDP
        write(zones / "m.example.yaml", zone(SMALL_EDITED))  # a later valid edit, through the watcher
        wait_until(lambda: answers(server) == {"127.0.0.12"}, 30, "the next edit is served")
        assert get(server, "/v1/status")["reload"]["ok"]


@big_database
def test_a_killed_map_builder_fails_the_api_reload_with_the_reason(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones / "m.example.yaml", zone(SMALL))
    with running(zones, "--watch-interval", "0", timeout=START_TIMEOUT, tmp=tmp_path) as server:
        before = children(server.proc.pid)
        write(zones / "m.example.yaml", zone(big_pool()))
        reply: list[tuple[int, Any]] = []
        request = threading.Thread(target=lambda: reply.append(post(server, "/v1/reload")))
        request.start()
        kill_new_child(server, before)
        request.join(60)
        status, body = reply[0]
        assert status == 422, body
        assert any("region map not built" in e and "killed by SIGKILL" in e for e in body["errors"]), body
        assert answers(server) == {"127.0.0.11"}
        assert server.query("plain.m.example", "TXT").answer  # the zone itself is still there


@big_database
def test_a_zones_directory_put_back_cancels_the_map_build(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    original = zone(SMALL)
    write(zones / "m.example.yaml", original)
    with running(zones, "--watch-interval", "0.2", timeout=START_TIMEOUT, tmp=tmp_path) as server:
        before = children(server.proc.pid)
        write(zones / "m.example.yaml", zone(big_pool()))
        wait_until(lambda: children(server.proc.pid) - before, 30, "the map builder starts")
        write(zones / "m.example.yaml", original)  # the edit undone (a new modification time, the same text)
        wait_until(lambda: "build cancelled" in server.stderr(), 15, "the build is cancelled")
        wait_until(lambda: not children(server.proc.pid) - before, 15, "the map builder is gone")
        wait_until(lambda: get(server, "/v1/status")["reload"]["ok"], 15, "the put-back directory reloads fine")
        assert answers(server) == {"127.0.0.11"}


@big_database
def test_a_big_pool_builds_serves_and_tells_how_far_along_it_is(tmp_path: Path) -> None:
    """200 regions (a few seconds; bench/big_pool.py measures 1,000)."""
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones / "m.example.yaml", zone(SMALL))
    with running(zones, "--watch-interval", "0", timeout=START_TIMEOUT, tmp=tmp_path) as server:
        regions = big_pool(200)
        write(zones / "m.example.yaml", zone(regions))
        status, body = post(server, "/v1/reload")
        assert status == 200, body
        assert answers(server) <= {address for *_, address in regions} and answers(server)
        log = server.stderr()
        assert "building the region map of pool web: 200 regions" in log
        steps = [line for line in log.splitlines() if "region map of pool web: locations ranked:" in line]
        assert [line.split("ranked: ")[1].split(" %")[0] for line in steps] == ["25", "50", "75", "100"], steps  # not a terminal: log lines
        assert "\r" not in log


def test_a_first_start_tells_how_far_flattening_the_database_is(tmp_path: Path) -> None:
    """Not on a terminal: plain log lines, what is done and how far along (a fresh cache: the database is flattened)."""
    database = DATA / "GeoIP2-City-Test.mmdb"
    with running(DATA / "zones", "--cache-dir", str(tmp_path / "cache"), geoip=database, tmp=tmp_path) as server:
        log = server.stderr()
    assert f"flattening the GeoIP database {database} (once per database file" in log
    assert "flattening the GeoIP database: records decoded: 100 %" in log
    assert "\r" not in log


def builder_of(pid: int) -> int | None:
    """The map builder: the one child started from a thread other than the main one (DNS workers come from that)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        if task.name == str(pid):
            continue
        try:
            started = task.joinpath("children").read_text().split()
        except OSError:
            continue
        if started:
            return int(started[0])
    return None


@big_database
def test_a_map_build_that_dies_at_start_up_is_a_clear_error_and_exit_1(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones / "m.example.yaml", zone(big_pool()))
    command = geolb_command("serve", "--zones", str(zones), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
    env = {**os.environ, "GEOLB_CACHE_DIR": str(CACHE)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        wait_until(lambda: builder_of(proc.pid) is not None, START_TIMEOUT, "the map builder starts")
        builder = builder_of(proc.pid)
        assert builder is not None
        os.kill(builder, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "geolb ready" not in stdout
    assert "geolb: region map of pool web not built: the map builder process was killed by SIGKILL" in stderr, stderr
