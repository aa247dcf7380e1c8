"""Real aiohttp backends on distinct loopback addresses (127.0.0.11, .12, ...) with a switchable /health.

They run on an event loop of their own in a helper thread, so that tests can flip
them while the geolb subprocess probes them.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import subprocess
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from aiohttp import web

MODES = ("ok", "fail", "body", "hang")


def free_port(addresses: Iterable[str]) -> int:
    """A TCP port free on every one of `addresses`."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((next(iter(addresses)), 0))
            port = int(probe.getsockname()[1])
        try:
            for address in addresses:
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server context with a throwaway self-signed certificate (openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=backend.test",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class Backends:
    """One aiohttp server per address, all on `port`."""

    def __init__(self, addresses: Iterable[str], tls: ssl.SSLContext | None = None) -> None:
        self.addresses = list(addresses)
        self.port = free_port(self.addresses)
        self.tls = tls
        self.modes = dict.fromkeys(self.addresses, "ok")
        self.loads: dict[str, str | None] = dict.fromkeys(self.addresses)  # X-Load header values; None: no header
        self.failing_for: dict[str, set[str]] = {a: set() for a in self.addresses}  # check sources each one fails
        self.delays: dict[str, dict[str, float]] = {a: {} for a in self.addresses}  # source -> seconds before answering
        self.hits: Counter[str] = Counter()
        self.last_headers: dict[str, dict[str, str]] = {}
        self.last_remote: dict[str, str | None] = {}  # the address each backend's last check came from
        self._runners: dict[str, web.AppRunner] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        for address in self.addresses:
            self.start(address)

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    def set(self, mode: str, *addresses: str) -> None:
        """Switch /health of these backends (all when none named) to ok, fail (503), body (wrong body) or hang."""
        assert mode in MODES
        for address in addresses or self.addresses:
            self.modes[address] = mode

    def fail_for(self, address: str, *sources: str) -> None:
        """Answer 503 to checks from these source addresses only (none: to nobody in particular)."""
        self.failing_for[address] = set(sources)

    def delay_for(self, address: str, source: str, seconds: float) -> None:
        """Answer checks from `source` only after `seconds` (a far-away vantage point, seen from here)."""
        self.delays[address][source] = seconds

    def set_load(self, value: str | None, *addresses: str) -> None:
        """The X-Load header /health answers with ("0.95", "42%"), or none."""
        for address in addresses or self.addresses:
            self.loads[address] = value

    def start(self, address: str) -> None:
        self._call(self._start(address))

    def stop(self, address: str) -> None:
        """Close the listener: connections are refused."""
        runner = self._runners.pop(address, None)
        if runner is not None:
            self._call(runner.cleanup())

    async def _start(self, address: str) -> None:
        app = web.Application()
        app.router.add_get("/health", functools.partial(self._health, address))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, address, self.port, ssl_context=self.tls, reuse_address=True)
        await site.start()
        self._runners[address] = runner

    async def _health(self, address: str, request: web.Request) -> web.Response:
        self.hits[address] += 1
        self.last_headers[address] = dict(request.headers)
        self.last_remote[address] = request.remote
        delay = self.delays[address].get(request.remote or "")
        if delay:
            await asyncio.sleep(delay)
        mode = self.modes[address]
        if request.remote in self.failing_for[address]:
            mode = "fail"
        if mode == "hang":
            await asyncio.sleep(30)
        if mode == "fail":
            return web.Response(status=503, text="unavailable")
        load = self.loads[address]
        headers = {} if load is None else {"X-Load": load}
        if mode == "body":
            return web.Response(text="maintenance", headers=headers)
        return web.Response(text="healthy and serving", headers=headers)

    def close(self) -> None:
        for address in list(self._runners):
            self.stop(address)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
