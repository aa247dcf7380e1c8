"""SPEC §10 in a real browser: a page embeds rum.js, chromium times two regions' rum_url (10 ms and 150 ms away),
posts its beacon, and the DNS answers for that browser's network follow the faster region."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import pytest
from aiohttp import web

from tests.backends import free_port
from tests.browser import console_errors, headless, requested_urls
from tests.serverproc import RunningServer, api, own_cache, start_server, wait_until

FAST, SLOW = "127.0.0.21", "127.0.0.22"  # where each region's rum_url is served
DELAY = {FAST: 0.010, SLOW: 0.150}
PAGE = "127.0.0.1"
GIF = (  # one transparent pixel
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


class Site:
    """The site embedding rum.js (on 127.0.0.1) and the regions' rum_url objects, on a loop in a helper thread."""

    def __init__(self) -> None:
        self.port = free_port([PAGE, FAST, SLOW])
        self.rum_js = ""
        self.hits: dict[str, int] = dict.fromkeys(DELAY, 0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._call(self._start())

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/rum.gif", self._object)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for address in (PAGE, FAST, SLOW):
            await web.TCPSite(self._runner, address, self.port).start()

    async def _page(self, request: web.Request) -> web.Response:
        html = f"""<!doctype html><html><head><title>a site</title><link rel="icon" href="data:,"></head><body><p>Hello.</p>
<script async src="{self.rum_js}" data-zone="browser.example" data-pool="web"></script></body></html>"""
        return web.Response(text=html, content_type="text/html")

    async def _object(self, request: web.Request) -> web.Response:
        host = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        self.hits[host] = self.hits.get(host, 0) + 1
        await asyncio.sleep(DELAY.get(host, 0.0))  # a region far away: the first byte comes late
        return web.Response(body=GIF, content_type="image/gif", headers={"Timing-Allow-Origin": "*", "Cache-Control": "no-store"})

    def close(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    running = Site()
    yield running
    running.close()


def zone(port: int, rum_name: bool = False) -> str:
    # No locations: every client gets the file order (slow first) until it has measured.
    return f"""nameservers:
  ns1.browser.example.: [192.0.2.53]
{"rum_name: rum" if rum_name else ""}
health: {{type: none}}
pools:
  web:
    steering: latency
    latency: {{min_samples: 1}}
    regions:
      slow:
        rum_url: http://{SLOW}:{port}/rum.gif
        endpoints: [127.0.0.12]
      fast:
        rum_url: http://{FAST}:{port}/rum.gif
        endpoints: [127.0.0.11]
records:
  www: {{type: GEO, pool: web, ttl: 5}}
"""


@pytest.fixture(scope="module")
def server(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    zones = tmp_path_factory.mktemp("browser-zones")
    (zones / "browser.example.yaml").write_text(zone(site.port))
    running = start_server(
        zones, "--rum-listen", "127.0.0.1:0", "--workers", "1", "--cache-dir", str(own_cache(tmp_path_factory.mktemp("c")))
    )
    address = running.ready_line.strip().rsplit(", rum ", 1)[1]
    site.rum_js = f"http://{address}/rum.js"
    yield running
    assert running.stop() == 0


def a_records(server: RunningServer, ecs: str) -> set[str]:
    address, prefix = ecs.split("/")
    query = dns.message.make_query("www.browser.example", "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))])
    reply = dns.query.udp(query, server.host, port=server.port, timeout=3)
    return {item.address for rrset in reply.answer for item in rrset}


def test_a_browser_beacon_moves_its_network(site: Site, server: RunningServer, tmp_path: Path) -> None:
    browser_network, other = "127.0.0.0/24", "127.0.1.0/24"
    assert a_records(server, browser_network) == {"127.0.0.12"}  # file order: slow first
    with headless() as driver:
        driver.get(f"http://{PAGE}:{site.port}/")
        wait_until(lambda: api(server, "GET", "/v1/status")[1]["rum"]["beacons"]["accepted"] >= 1, 10, "the browser's beacon")
        assert console_errors(driver) == []
    assert site.hits[FAST] >= 1 and site.hits[SLOW] >= 1  # each region's object fetched, past any cache
    wait_until(lambda: a_records(server, browser_network) == {"127.0.0.11"}, 3, "the browser's network follows its beacon")
    assert a_records(server, other) == {"127.0.0.12"}  # another network: as before
    _, status = api(server, "GET", "/v1/status")
    assert status["pools"]["web"]["latency"]["networks"] == 1
    _, explained = api(server, "GET", "/v1/explain?name=www.browser.example&type=A&client=127.0.0.0/24")
    rtt = explained["geo"]["evidence"]["rtt_ms"]  # what the browser measured: the objects' delays, and a little more
    assert DELAY[FAST] * 1000 <= rtt["fast"] < 100 <= DELAY[SLOW] * 1000 <= rtt["slow"] < 1000, explained["geo"]["evidence"]


def test_with_rum_name_the_beacon_goes_through_its_token_name(site: Site, server: RunningServer, tmp_path: Path) -> None:
    """A zone with rum_name: the script posts to <token>.rum.<zone> on the listener's port (the name a resolver
    looks up: resolver discovery), with that token in the beacon. Chromium is told the name is on loopback."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "browser.example.yaml").write_text(zone(site.port, rum_name=True))
    named = start_server(zones, "--rum-listen", "127.0.0.1:0", "--workers", "1", "--cache-dir", str(own_cache(tmp_path / "cache")))
    try:
        port = named.ready_line.strip().rsplit(", rum ", 1)[1].rsplit(":", 1)[1]
        site.rum_js = f"http://127.0.0.1:{port}/rum.js"
        with headless(extra=("--host-resolver-rules=MAP *.rum.browser.example 127.0.0.1",)) as driver:
            driver.get(f"http://{PAGE}:{site.port}/")
            wait_until(lambda: api(named, "GET", "/v1/status")[1]["rum"]["beacons"]["accepted"] >= 1, 10, "the beacon")
            beacons = [url for url in requested_urls(driver) if url.endswith("/v1/rum")]
            assert console_errors(driver) == []
        assert len(beacons) == 1 and re.fullmatch(rf"http://[a-z0-9]{{20}}\.rum\.browser\.example:{port}/v1/rum", beacons[0]), beacons
    finally:
        assert named.stop() == 0
