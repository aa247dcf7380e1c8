"""SPEC §7: a replaced GeoIP database is taken without a restart; a broken one keeps the old answering."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.rcode
import pytest

from tests.serverproc import DATA, RunningServer, api, start_server, wait_until

CITY = DATA / "GeoIP2-City-Test.mmdb"  # 214.0.0.0/24 is in Singapore, 2.2.3.0/24 in Britain
LITE = DATA / "GeoLite2-City-Test.mmdb"  # neither is in it: unknown clients get the first region
ZONE = """nameservers:
  ns1.swap.example.: [192.0.2.53]
health: {type: none}
pools:
  web:
    regions:
      virginia: {location: [39.04, -77.49], endpoints: [192.0.2.10]}
      london: {location: [51.5, -0.12], endpoints: [192.0.2.20]}
      singapore: {location: [1.29, 103.85], endpoints: [192.0.2.30]}
records:
  www: {type: GEO, pool: web}
"""
SINGAPORE, VIRGINIA, LONDON = {"192.0.2.30"}, {"192.0.2.10"}, {"192.0.2.20"}
SWAP_DEADLINE = 2.0  # the figure: answers change within 2 s of the file's replacement


def answer(server: RunningServer, client: str = "214.0.0.0/24") -> set[str]:
    response = server.query("www.swap.example", "A", ecs=client)
    return {r.to_text() for rrset in response.answer for r in rrset}


@pytest.fixture
def geo(tmp_path: Path) -> tuple[Path, Path]:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "swap.example.yaml").write_text(ZONE)
    database = tmp_path / "geoip" / "GeoIP2-City.mmdb"
    database.parent.mkdir()
    shutil.copyfile(CITY, database)
    return zones, database


@contextmanager
def serving(geo: tuple[Path, Path], tmp_path: Path, workers: int = 1) -> Iterator[RunningServer]:
    """geolb on the zone and the database (a cache of its own: pruning must not touch the suite's), stopped cleanly."""
    zones, database = geo
    server = start_server(zones, "--workers", str(workers), "--cache-dir", str(tmp_path / "cache"), geoip=database, tmp=tmp_path)
    try:
        yield server
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr()


def replace_like_geoipupdate(database: Path, new: Path) -> None:
    """geoipupdate writes a temporary file beside the database and renames it over."""
    temporary = database.with_suffix(".mmdb.temporary")
    shutil.copyfile(new, temporary)
    os.replace(temporary, database)


class SteadyQueries:
    """Three threads asking all along; every answer must come, NOERROR, from one of `allowed`."""

    def __init__(self, server: RunningServer, allowed: list[set[str]]) -> None:
        self.server, self.allowed = server, allowed
        self.failures: list[str] = []
        self.answers = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask) for _ in range(3)]

    def _ask(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.server.query("www.swap.example", "A", ecs="214.0.0.0/24")
            except dns.exception.Timeout:
                self.failures.append("timeout")
                continue
            got = {r.to_text() for rrset in response.answer for r in rrset}
            if response.rcode() != dns.rcode.NOERROR or got not in self.allowed:
                self.failures.append(f"{dns.rcode.to_text(response.rcode())} {got}")
            self.answers += 1

    def __enter__(self) -> SteadyQueries:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_a_replaced_database_changes_answers_without_dropping_a_query(geo: tuple[Path, Path], tmp_path: Path) -> None:
    database = geo[1]
    with serving(geo, tmp_path, workers=2) as server:
        assert "GeoIP2-City.mmdb (GeoIP2-City, built 2026-02-04)" in server.ready_line
        assert answer(server) == SINGAPORE
        assert answer(server, "2.2.3.0/24") == LONDON
        before = api(server, "GET", "/v1/status")[1]["geoip"]
        with SteadyQueries(server, [SINGAPORE, VIRGINIA]) as steady:
            replace_like_geoipupdate(database, LITE)
            took = wait_until(lambda: answer(server) == VIRGINIA, SWAP_DEADLINE, "answers from the new database")
            assert answer(server, "2.2.3.0/24") == VIRGINIA
            # Written over in place (cp): the old file's pages change under any reader that maps it.
            shutil.copyfile(CITY, database)
            wait_until(lambda: answer(server) == SINGAPORE, SWAP_DEADLINE, "answers from the database copied over")
        assert steady.failures == []
        assert steady.answers > 50
        status = api(server, "GET", "/v1/status")[1]["geoip"]
        assert status["file"] == str(database)
        assert status["type"] == "GeoIP2-City"
        assert status["error"] is None
        assert status["digest"] == before["digest"]  # the first database again
        assert status["loaded"] > before["loaded"]
        _, metrics = api(server, "GET", "/metrics")
        assert 'geolb_geoip_reloads_total{result="ok"} 2.0' in metrics
        print(f"answers changed {took:.2f} s after the database was replaced")


def test_a_truncated_database_keeps_the_old_one_and_is_reported(geo: tuple[Path, Path], tmp_path: Path) -> None:
    database = geo[1]
    with serving(geo, tmp_path) as server:
        with SteadyQueries(server, [SINGAPORE]) as steady:
            database.write_bytes(LITE.read_bytes()[:5000])  # in place, as a copy cut short would leave it
            wait_until(lambda: api(server, "GET", "/v1/status")[1]["geoip"]["error"] is not None, 5, "the refused file reported")
            assert answer(server) == SINGAPORE
        assert steady.failures == []
        report = api(server, "GET", "/v1/status")[1]["geoip"]
        assert str(database) in report["error"]
        assert report["type"] == "GeoIP2-City" and report["error_since"] is not None
        _, metrics = api(server, "GET", "/metrics")
        assert "geolb_geoip_load_error 1.0" in metrics
        assert 'geolb_geoip_reloads_total{result="error"} 1.0' in metrics
        assert f"GeoIP database {database}" in server.stderr()
        status, reply = api(server, "POST", "/v1/reload", token=None)
        assert status == 422 and reply["geoip"]["error"] == report["error"]  # the same file: not read again, still refused
        replace_like_geoipupdate(database, LITE)
        wait_until(lambda: answer(server) == VIRGINIA, 5, "a good file after the bad one")
        assert api(server, "GET", "/v1/status")[1]["geoip"]["error"] is None
        assert "geolb_geoip_load_error 0.0" in api(server, "GET", "/metrics")[1]


def test_a_broken_tree_is_refused_before_it_answers(geo: tuple[Path, Path], tmp_path: Path) -> None:
    database = geo[1]
    with serving(geo, tmp_path) as server:
        replace_like_geoipupdate(database, DATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
        wait_until(lambda: api(server, "GET", "/v1/status")[1]["geoip"]["error"] is not None, 5, "the broken database reported")
        assert answer(server) == SINGAPORE
        assert "Traceback" not in server.stderr()
        assert not [p for p in (tmp_path / "cache" / "databases").iterdir() if p.is_dir()][1:], "a refused database left in the cache"
