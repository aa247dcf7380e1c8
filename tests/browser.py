"""A real headless browser for the status page: Debian's chromium, driven through chromium-driver by selenium."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium never reports usage anywhere
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_or_skip() -> None:
    """Fail in CI (.ci/run installs chromium), skip on a developer's machine without it."""
    if shutil.which(os.path.basename(CHROMIUM)) and shutil.which(os.path.basename(CHROMEDRIVER)):
        return
    message = "the status page tests need Debian's chromium and chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run installs them)")
    pytest.skip(message)


@contextmanager
def headless(width: int = 1280, height: int = 800, extra: tuple[str, ...] = ()) -> Iterator[WebDriver]:
    """`extra`: more chromium switches (e.g. --host-resolver-rules to send a name to loopback)."""
    browser_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        *extra,
    ):
        options.add_argument(argument)
    # Console messages, and every request the page makes (to find any to another host).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # a given driver: selenium downloads nothing
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: WebDriver) -> list[str]:
    """Every URL the page asked for since the last call (from the DevTools network log)."""
    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver: WebDriver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]  # type: ignore[no-untyped-call]


def poll(driver: WebDriver, read: Callable[[WebDriver], Any], timeout: float, what: str) -> float:
    """Seconds until `read(driver)` is truthy (an element not there yet, or replaced meanwhile, is looked for again)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if read(driver):
                return time.monotonic() - started
        except (StaleElementReferenceException, NoSuchElementException):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.1f} s")
