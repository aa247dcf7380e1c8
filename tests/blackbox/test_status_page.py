"""SPEC §6 `GET /`: the status page in a real headless browser, against real backends on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.backends import Backends
from tests.browser import console_errors, headless, poll, requested_urls
from tests.serverproc import DATA, RunningServer, api, start_server, wait_until

TOKEN = "page-s3cret"
REGIONS = {"ashburn": ["127.0.0.61"], "dublin": ["127.0.0.62", "127.0.0.63"], "singapore": ["127.0.0.64"]}
LOCATIONS = {"ashburn": "[39.04, -77.49]", "dublin": "[53.35, -6.26]", "singapore": "[1.29, 103.85]"}
ALL = [a for addresses in REGIONS.values() for a in addresses]
PAGE_DEADLINE = 2.0  # the figure: the page shows a change within 2 s


def zone(port: int) -> str:
    regions = "\n".join(
        f"      {name}:\n        location: {LOCATIONS[name]}\n        endpoints: [{', '.join(addresses)}]"
        for name, addresses in REGIONS.items()
    )
    return f"""nameservers:
  ns1.page.example.: [192.0.2.53]
health: {{type: http, port: {port}, path: /health, interval: 0.2, timeout: 0.4, fall: 2, rise: 2}}
pools:
  web:
    regions:
{regions}
  docs:
    regions:
      nowhere:
        endpoints: [{REGIONS["dublin"][0]}]
records:
  www: {{type: GEO, pool: web, ttl: 5}}
  docs: {{type: GEO, pool: docs}}
"""


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    running = Backends(ALL)
    yield running
    running.close()


@pytest.fixture(scope="module")
def server(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("page")
    zones = tmp / "zones"
    zones.mkdir()
    (zones / "page.example.yaml").write_text(zone(backends.port))
    running = start_server(zones, "--api-token", TOKEN, "--workers", "1", geoip=DATA / "GeoIP2-City-Test.mmdb", tmp=tmp)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless() as driver:
        yield driver


@pytest.fixture
def page(server: RunningServer, backends: Backends, browser: WebDriver) -> WebDriver:
    backends.set("ok")
    for address in ALL:
        api(server, "POST", f"/v1/endpoints/web/{region_of(address)}/{address}/force", {"state": None}, token=TOKEN)
    wait_until(lambda: all(e["state"] == "up" for e in endpoints(server)), 5, "every endpoint up")
    browser.get(server.http_url + "/")
    poll(browser, lambda d: d.find_element(By.ID, "live").text == "live", 5, "the event stream open")
    return browser


def region_of(address: str) -> str:
    return next(name for name, addresses in REGIONS.items() if address in addresses)


def endpoints(server: RunningServer) -> list[dict[str, object]]:
    report = api(server, "GET", "/v1/status")[1]
    return [e for region in report["pools"]["web"]["regions"].values() for e in region["endpoints"]]


def marker(driver: WebDriver, region: str, pool: str = "web") -> dict[str, str | None]:
    found = driver.find_element(By.CSS_SELECTOR, f'circle.marker[data-pool="{pool}"][data-region="{region}"]')
    return {"state": found.get_attribute("data-state"), "class": found.get_attribute("class")}


def endpoint_row(driver: WebDriver, address: str, pool: str = "web") -> dict[str, str | None]:
    row = driver.find_element(By.CSS_SELECTOR, f'tr.endpoint-row[data-pool="{pool}"][data-address="{address}"]')
    return {"state": row.get_attribute("data-state"), "forced": row.get_attribute("data-forced"), "text": row.text}


def click(driver: WebDriver, address: str, action: str) -> None:
    selector = f'tr.endpoint-row[data-pool="web"][data-address="{address}"] button[data-action="{action}"]'
    driver.find_element(By.CSS_SELECTOR, selector).click()


def test_the_page_loads_everything_from_geolb_without_errors(server: RunningServer, page: WebDriver) -> None:
    urls = requested_urls(page)
    assert urls, "no request seen at all: the network log is not working"
    foreign = [url for url in urls if not (url.startswith(server.http_url + "/") or url.startswith("data:"))]
    assert foreign == []
    assert console_errors(page) == []
    assert {u.split("?")[0].removeprefix(server.http_url) for u in urls} >= {"/", "/static/page.js", "/static/page.css", "/v1/events"}
    # Every pool, region and endpoint, and a marker for each region with a location.
    rows = page.find_elements(By.CSS_SELECTOR, "tr.endpoint-row")
    assert len(rows) == len(ALL) + 1
    markers = page.find_elements(By.CSS_SELECTOR, "circle.marker")
    assert sorted(m.get_attribute("data-region") for m in markers) == sorted(REGIONS)
    assert all(marker(page, name)["state"] == "up" for name in REGIONS)
    assert "docs/nowhere" in page.find_element(By.ID, "unplaced").text
    last_check = page.find_element(By.CSS_SELECTOR, 'tr.endpoint-row[data-address="127.0.0.61"] td:nth-child(6)').text
    assert re.fullmatch(r"just now|[\d.]+ s ago", last_check), last_check
    Select(page.find_element(By.ID, "pool-filter")).select_by_value("docs")
    assert all(not m.is_displayed() for m in page.find_elements(By.CSS_SELECTOR, 'circle.marker[data-pool="web"]'))


def test_a_failing_backend_shows_on_the_map_and_in_the_table(server: RunningServer, backends: Backends, page: WebDriver) -> None:
    address = REGIONS["singapore"][0]
    backends.set("fail", address)
    failed = time.monotonic()
    took = poll(page, lambda d: marker(d, "singapore")["state"] == "down", PAGE_DEADLINE + 1.0, "singapore red on the map")
    assert endpoint_row(page, address)["state"] == "down"
    assert "503" in endpoint_row(page, address)["text"]
    # The page shows it within 2 s of the backend failing (two checks 0.2 s apart make it down).
    assert time.monotonic() - failed < PAGE_DEADLINE, f"{time.monotonic() - failed:.2f} s"
    feed = page.find_element(By.ID, "feed").text
    assert f"web/singapore {address}: down — 2 checks failed, last: " in feed
    # One of two endpoints down: dublin is partly down.
    backends.set("fail", REGIONS["dublin"][1])
    poll(page, lambda d: marker(d, "dublin")["state"] == "partial", PAGE_DEADLINE + 1.0, "dublin partly down")
    backends.set("ok")
    poll(page, lambda d: marker(d, "singapore")["state"] == "up", PAGE_DEADLINE + 1.0, "singapore back")
    print(f"the page showed the failure {took:.2f} s after the backend began failing")


def test_a_pool_failing_open_says_so_on_the_pool_and_its_regions(server: RunningServer, backends: Backends, page: WebDriver) -> None:
    """Every endpoint down: the pool answers as if all were up (SPEC §3 rule 4); the page must not show a dead pool."""
    badge = 'span.failing-open[data-pool="web"]'
    assert not page.find_element(By.CSS_SELECTOR, badge).is_displayed()
    assert api(server, "GET", "/v1/status")[1]["pools"]["web"]["failing_open"] == []
    backends.set("fail")
    poll(page, lambda d: d.find_element(By.CSS_SELECTOR, badge).is_displayed(), PAGE_DEADLINE + 1.0, "the pool's failing-open badge")
    assert page.find_element(By.CSS_SELECTOR, badge).text == "failing open (A)"
    report = api(server, "GET", "/v1/status")[1]["pools"]["web"]
    assert report["failing_open"] == ["A"]
    assert all(region["failing_open"] for region in report["regions"].values())
    region_row = 'tr.region-row[data-pool="web"][data-region="singapore"]'
    poll(page, lambda d: "down, failing open" in d.find_element(By.CSS_SELECTOR, region_row).text, PAGE_DEADLINE, "the region's state")
    # Still answered: DNS fails open to the first region in order.
    assert server.query("www.page.example", "A", ecs="214.0.0.0/24").answer[0][0].address == REGIONS["singapore"][0]
    # One answer is "1 answer", not "1 answers" (nothing else asks for docs).
    server.query("docs.page.example", "A")
    docs_row = 'tr.region-row[data-pool="docs"][data-region="nowhere"]'
    poll(page, lambda d: "(1 answer in " in d.find_element(By.CSS_SELECTOR, docs_row).text, 5, "one answer, singular")
    backends.set("ok")
    poll(page, lambda d: not d.find_element(By.CSS_SELECTOR, badge).is_displayed(), PAGE_DEADLINE + 1.0, "the badge gone")
    assert "failing open" not in page.find_element(By.CSS_SELECTOR, region_row).text


def test_force_buttons_ask_for_the_token_and_show_the_refusal(server: RunningServer, page: WebDriver) -> None:
    address = REGIONS["ashburn"][0]
    click(page, address, "down")
    poll(page, lambda d: d.find_element(By.ID, "notice").is_displayed(), 2, "the refusal shown")
    notice = page.find_element(By.ID, "notice").text
    assert "401" in notice and "Authorization: Bearer" in notice  # the API's own error
    assert page.find_element(By.ID, "token").is_displayed()
    assert endpoint_row(page, address)["forced"] == ""
    # A wrong token: the API's 403 is shown too.
    page.find_element(By.ID, "token").send_keys("not-it")
    page.find_element(By.CSS_SELECTOR, "#token-form button").click()
    click(page, address, "down")
    poll(page, lambda d: "wrong token" in d.find_element(By.ID, "notice").text, 2, "the 403 shown")
    # The right one: forced down on the map and in the table within 2 s.
    page.find_element(By.ID, "token").send_keys(TOKEN)
    page.find_element(By.CSS_SELECTOR, "#token-form button").click()
    clicked = time.monotonic()
    click(page, address, "down")
    poll(page, lambda d: marker(d, "ashburn")["state"] == "forced", PAGE_DEADLINE, "ashburn forced on the map")
    poll(page, lambda d: endpoint_row(d, address) == {**endpoint_row(d, address), "state": "down", "forced": "down"}, PAGE_DEADLINE, "row")
    assert "forced" in (marker(page, "ashburn")["class"] or "") and "down" in (marker(page, "ashburn")["class"] or "")
    assert time.monotonic() - clicked < PAGE_DEADLINE
    assert [e["forced"] for e in endpoints(server) if e["address"] == address] == ["down"]
    click(page, address, "clear")
    poll(page, lambda d: marker(d, "ashburn")["state"] == "up", PAGE_DEADLINE, "ashburn back to its checks")
    feed = page.find_element(By.ID, "feed").text
    assert f"web/ashburn {address}: down — forced by an operator" in feed
    assert f"web/ashburn {address}: up — forced state cleared: back to its checks" in feed


def test_the_explain_form_shows_the_region_dig_gets(server: RunningServer, page: WebDriver) -> None:
    for client in ("214.0.0.0/24", "2.2.3.0/24", "216.160.83.64/29"):  # Singapore, Britain, Washington in the test database
        dig = subprocess.run(
            ["dig", "+short", "+norecurse", f"+subnet={client}", "-p", str(server.port), f"@{server.host}", "www.page.example", "A"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        answered = {line for line in dig.stdout.split() if re.fullmatch(r"[\d.]+", line)}
        expected = {region_of(a) for a in answered}
        assert len(expected) == 1, dig.stdout
        name_box = page.find_element(By.ID, "explain-name")
        name_box.clear()
        name_box.send_keys("www.page.example")
        client_box = page.find_element(By.ID, "explain-client")
        client_box.clear()
        client_box.send_keys(client)
        page.find_element(By.CSS_SELECTOR, "#explain-form button").click()
        poll(page, lambda d, client=client: client.split("/")[0] in d.find_element(By.ID, "explain-summary").text, 3, "the explanation")
        assert page.find_element(By.ID, "explain-region").text == expected.pop()
        ranking = page.find_elements(By.CSS_SELECTOR, "#explain-ranking tbody tr")
        assert sorted(r.get_attribute("data-region") for r in ranking) == sorted(REGIONS)
    # A question the API refuses: its error, readable.
    page.find_element(By.ID, "explain-name").clear()
    page.find_element(By.ID, "explain-name").send_keys("www.elsewhere.test")
    page.find_element(By.CSS_SELECTOR, "#explain-form button").click()
    poll(page, lambda d: "in no zone served here" in d.find_element(By.ID, "explain-result").text, 3, "the error")


def test_answers_per_region_over_the_last_minute(server: RunningServer, page: WebDriver) -> None:
    for _ in range(30):
        server.query("www.page.example", "A", ecs="214.0.0.0/24")  # Singapore
    for _ in range(10):
        server.query("www.page.example", "A", ecs="2.2.3.0/24")  # Britain: Dublin
    report = api(server, "GET", "/v1/status")[1]
    regions = report["pools"]["web"]["regions"]
    assert regions["singapore"]["answers_last_minute"] >= 30
    assert regions["dublin"]["answers_last_minute"] >= 10
    assert report["pools"]["web"]["answers_last_minute"] >= 40
    row = 'tr.region-row[data-pool="web"][data-region="singapore"]'

    def shown(driver: WebDriver) -> int:
        found = re.search(r"\d+ % \((\d+) answers", driver.find_element(By.CSS_SELECTOR, row).text)
        return int(found.group(1)) if found else 0

    poll(page, lambda d: shown(d) >= 30, 5, "singapore's answers on the page")  # the page refreshes them every 3 s


def test_a_large_zone_renders_in_the_browser(tmp_path: Path, browser: WebDriver) -> None:
    """50 regions of 10 endpoints (health off: nothing probed); the render time goes to the log."""

    def addresses(r: int) -> str:
        return ", ".join(f"192.0.2.{e}" if r % 2 else f"198.51.100.{e}" for e in range(10 * (r % 20), 10 * (r % 20) + 10))

    regions = "\n".join(
        f"      r{r:02d}:\n        location: [{-50 + 2 * r}, {-170 + 7 * r}]\n        endpoints: [{addresses(r)}]" for r in range(50)
    )
    zones = tmp_path / "zones"
    zones.mkdir()
    text = f"nameservers:\n  ns1.big.example.: [192.0.2.53]\nhealth: {{type: none}}\npools:\n  big:\n    regions:\n{regions}\n"
    (zones / "big.example.yaml").write_text(text + "records:\n  www: {type: GEO, pool: big}\n")
    big = start_server(zones, "--workers", "1", tmp=tmp_path)
    try:
        console_errors(browser)  # drained: the earlier tests' refused calls are logged by the browser too
        started = time.monotonic()
        browser.get(big.http_url + "/")
        poll(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.endpoint-row")) == 500, 10, "500 endpoint rows")
        loaded = time.monotonic() - started
        assert len(browser.find_elements(By.CSS_SELECTOR, "circle.marker")) == 50
        render_ms = float(browser.execute_script("return document.body.dataset.renderMs"))
        assert console_errors(browser) == []
        print(f"50 regions x 10 endpoints: first render {render_ms:.1f} ms in the page, page ready {loaded:.2f} s")
    finally:
        assert big.stop() == 0


def read_events(stream: IO[bytes], until: str = "feed") -> list[tuple[str, str, str]]:
    """(id, event, data) of the events on an open /v1/events stream, up to the first of kind `until`."""
    events: list[tuple[str, str, str]] = []
    fields: dict[str, str] = {}
    while not events or events[-1][1] != until:
        line = stream.readline().decode().rstrip("\n")  # the stream's socket timeout bounds the wait
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif "event" in fields:
            events.append((fields.get("id", ""), fields["event"], fields["data"]))
            fields = {}
    return events


def test_the_event_stream_sends_changes_and_resumes_after_the_last_event_id(server: RunningServer) -> None:
    address = REGIONS["dublin"][0]
    path = f"/v1/endpoints/web/dublin/{address}/force"
    with urllib.request.urlopen(f"{server.http_url}/v1/events", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        read_events(stream, until="generation")  # the backlog of earlier tests' changes comes first
        assert api(server, "POST", path, {"state": "down"}, token=TOKEN)[0] == 200
        *_, (last_id, _, data) = read_events(stream)
        assert json.loads(data) | {"at": 0, "id": 0} == {
            "id": 0, "at": 0, "kind": "state", "text": "forced by an operator", "pool": "web", "region": "dublin",
            "address": address, "state": "down", "forced": "down",
        }  # fmt: skip
    assert api(server, "POST", path, {"state": None}, token=TOKEN)[0] == 200
    request = urllib.request.Request(f"{server.http_url}/v1/events", headers={"Last-Event-ID": last_id})
    with urllib.request.urlopen(request, timeout=10) as stream:
        (next_id, _, data), *_ = read_events(stream)
    assert int(next_id) == int(last_id) + 1  # what happened while away, and nothing from before
    assert json.loads(data)["text"] == "forced state cleared: back to its checks"


def test_sigterm_ends_the_pages_event_streams(tmp_path: Path) -> None:
    server = start_server(DATA / "zones", "--workers", "1", tmp=tmp_path)
    with urllib.request.urlopen(f"{server.http_url}/v1/events", timeout=10) as stream:
        assert stream.readline() == b"retry: 1000\n"
        started = time.monotonic()
        assert server.stop(timeout=10) == 0
        assert time.monotonic() - started < 3.0  # not aiohttp's 60 s wait for handlers
        assert stream.read() is not None
