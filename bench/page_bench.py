"""The status page in a real browser (headless chromium): render times at 50 regions x 500 endpoints,
and the README's screenshot. Run by hand, not a test.

    .venv/bin/python bench/page_bench.py render
    .venv/bin/python bench/page_bench.py screenshot --out docs/status-page.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from tests.backends import Backends  # noqa: E402
from tests.browser import headless, poll  # noqa: E402
from tests.serverproc import DATA, RunningServer, api, start_server  # noqa: E402

DOCUMENTATION_NETS = ("192.0.2", "198.51.100", "203.0.113")  # health none: nothing is probed


def big_zone(regions: int, per_region: int) -> str:
    blocks = []
    for r in range(regions):
        addresses = [f"{DOCUMENTATION_NETS[(r * per_region + e) // 250]}.{(r * per_region + e) % 250 + 1}" for e in range(per_region)]
        location = f"[{-40 + 1.7 * r:.1f}, {-160 + 6.5 * r:.1f}]"
        blocks.append(f"      r{r:02d}:\n        location: {location}\n        endpoints: [{', '.join(addresses)}]")
    return (
        "nameservers:\n  ns1.big.example.: [192.0.2.53]\nhealth: {type: none}\npools:\n  big:\n    regions:\n"
        + "\n".join(blocks)
        + "\nrecords:\n  www: {type: GEO, pool: big}\n"
    )


def render(regions: int, per_region: int, changes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        zones = Path(tmp) / "zones"
        zones.mkdir()
        (zones / "big.example.yaml").write_text(big_zone(regions, per_region))
        server = start_server(zones, "--workers", "1", tmp=Path(tmp))
        try:
            status = api(server, "GET", "/v1/status")[1]
            endpoints = [(region, e["address"]) for region, body in status["pools"]["big"]["regions"].items() for e in body["endpoints"]]
            timings = []
            for _ in range(20):
                started = time.perf_counter()
                with urllib.request.urlopen(f"{server.http_url}/v1/status") as reply:
                    size = len(reply.read())
                timings.append(time.perf_counter() - started)
            median = statistics.median(timings) * 1000
            print(f"{regions} regions x {per_region} endpoints: /v1/status {size / 1024:.0f} KiB, median {median:.1f} ms")
            with headless() as driver:
                started = time.perf_counter()
                driver.get(server.http_url + "/")
                poll(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.endpoint-row")) == len(endpoints), 20, "every row")
                ready = time.perf_counter() - started
                poll(driver, lambda d: d.find_element(By.ID, "live").text == "live", 5, "event stream")
                first = float(driver.execute_script("return document.body.dataset.firstRenderMs"))
                navigation = driver.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0]; return [n.domContentLoadedEventEnd, n.loadEventEnd];"
                )
                print(
                    f"page: first render {first:.1f} ms (building every row and marker); DOMContentLoaded {navigation[0]:.0f} ms, "
                    f"load {navigation[1]:.0f} ms; all rows seen by the driver after {ready * 1000:.0f} ms"
                )
                shown, updates = [], []
                for region, address in endpoints[:: max(1, len(endpoints) // changes)][:changes]:
                    started = time.perf_counter()
                    api(server, "POST", f"/v1/endpoints/big/{region}/{address}/force", {"state": "down"})
                    poll(driver, lambda d, a=address: _forced(d, a), 5, "forced state on the page")
                    shown.append(time.perf_counter() - started)
                    updates.append(float(driver.execute_script("return document.body.dataset.renderMs")))
                print(
                    f"{changes} forced states: on the page after median {statistics.median(shown) * 1000:.0f} ms, "
                    f"max {max(shown) * 1000:.0f} ms (API call included); an update renders in median "
                    f"{statistics.median(updates):.1f} ms, max {max(updates):.1f} ms"
                )
        finally:
            server.stop()


def _forced(driver: WebDriver, address: str) -> bool:
    row = driver.find_element(By.CSS_SELECTOR, f'tr.endpoint-row[data-address="{address}"]')
    return row.get_attribute("data-forced") == "down"


DEMO = """nameservers:
  ns1.demo.example.: [192.0.2.53]
health: {{type: http, port: {port}, path: /health, interval: 0.5, timeout: 0.4, fall: 2, rise: 2}}
pools:
  web:
    regions:
      ashburn: {{location: [39.04, -77.49], endpoints: [127.0.0.71, 127.0.0.72]}}
      oregon: {{location: [45.6, -121.2], endpoints: [127.0.0.73]}}
      sao-paulo: {{location: [-23.55, -46.63], endpoints: [127.0.0.74]}}
      dublin: {{location: [53.35, -6.26], endpoints: [127.0.0.75, 127.0.0.76]}}
      frankfurt: {{location: [50.11, 8.68], endpoints: [127.0.0.77]}}
      mumbai: {{location: [19.08, 72.88], endpoints: [127.0.0.78]}}
      singapore: {{location: [1.29, 103.85], endpoints: [127.0.0.79]}}
      sydney: {{location: [-33.87, 151.21], endpoints: [127.0.0.80]}}
records:
  www: {{type: GEO, pool: web, ttl: 30}}
"""


def screenshot(out: Path) -> None:
    addresses = [f"127.0.0.{n}" for n in range(71, 81)]
    backends = Backends(addresses)
    with tempfile.TemporaryDirectory() as tmp:
        zones = Path(tmp) / "zones"
        zones.mkdir()
        (zones / "demo.example.yaml").write_text(DEMO.format(port=backends.port))
        server = start_server(zones, "--workers", "1", geoip=DATA / "GeoIP2-City-Test.mmdb", tmp=Path(tmp))
        try:
            for client, count in (("2.2.3.0/24", 40), ("214.0.0.0/24", 25), ("216.160.83.64/29", 30), ("214.0.1.0/24", 12)):
                for _ in range(count):
                    server.query("www.demo.example", "A", ecs=client)
            backends.set("fail", "127.0.0.76")  # dublin: one of two down
            backends.stop("127.0.0.78")  # mumbai: down, connection refused
            _await(server, lambda s: _state(s, "dublin", "127.0.0.76") == "down" and _state(s, "mumbai", "127.0.0.78") == "down")
            api(server, "POST", "/v1/endpoints/web/frankfurt/127.0.0.77/force", {"state": "down"})
            with headless(1280, 800) as driver:
                metrics = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
                driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # type: ignore[attr-defined]
                driver.get(server.http_url + "/")
                poll(driver, lambda d: d.find_element(By.ID, "live").text == "live", 5, "event stream")
                driver.find_element(By.ID, "explain-name").send_keys("www.demo.example")
                driver.find_element(By.ID, "explain-client").send_keys("214.0.0.0/24")
                driver.find_element(By.CSS_SELECTOR, "#explain-form button").click()
                poll(driver, lambda d: d.find_element(By.ID, "explain-region").text, 5, "explanation")
                time.sleep(3.5)  # one periodic refresh: answer shares and "last check" settle
                driver.save_screenshot(str(out))
                print(f"screenshot: {out}")
        finally:
            server.stop()
            backends.close()


def _state(server: RunningServer, region: str, address: str) -> str:
    report = api(server, "GET", "/v1/status")[1]
    return next(e["state"] for e in report["pools"]["web"]["regions"][region]["endpoints"] if e["address"] == address)


def _await(server: RunningServer, ready: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(server):  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(json.dumps(api(server, "GET", "/v1/status")[1])[:500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("render", help="render times with many regions and endpoints")
    measure.add_argument("--regions", type=int, default=50)
    measure.add_argument("--per-region", type=int, default=10)
    measure.add_argument("--changes", type=int, default=10)
    shot = commands.add_parser("screenshot", help="the README's screenshot at 1280x800")
    shot.add_argument("--out", type=Path, default=ROOT / "docs" / "status-page.png")
    args = parser.parse_args()
    if args.command == "render":
        render(args.regions, args.per_region, args.changes)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(args.out)


if __name__ == "__main__":
    main()
