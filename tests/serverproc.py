"""Start the real `geolb serve` in a subprocess on ephemeral loopback ports and talk DNS to it."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from tests.geomaps import CACHE

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
READY = re.compile(r"^geolb ready: dns (?P<dns>.*?) \(udp\+tcp\), http (?P<http>\S+?),")


@dataclass
class RunningServer:
    proc: subprocess.Popen[str]
    dns: list[tuple[str, int]]
    http: str | None
    stderr_path: Path
    ready_line: str = ""

    @property
    def host(self) -> str:
        return self.dns[0][0]

    @property
    def port(self) -> int:
        return self.dns[0][1]

    @property
    def http_url(self) -> str:
        assert self.http is not None
        return f"http://{self.http}"

    def query(
        self,
        name: str,
        rdtype: str | int = "A",
        *,
        tcp: bool = False,
        ecs: str | None = None,
        edns: bool = True,
        payload: int = 1232,
        host: str | None = None,
        port: int | None = None,
    ) -> dns.message.Message:
        """One query with dnspython, RD clear; `ecs` is "ADDRESS/PREFIX"."""
        options = []
        if ecs is not None:
            address, _, prefix = ecs.partition("/")
            options.append(dns.edns.ECSOption(address, int(prefix)))
        message = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=payload, options=options)
        message.flags &= ~dns.flags.RD
        return self.send(message, tcp=tcp, host=host, port=port)

    def send(
        self, message: dns.message.Message, *, tcp: bool = False, host: str | None = None, port: int | None = None
    ) -> dns.message.Message:
        where, to = host or self.host, port or self.port
        if tcp:
            return dns.query.tcp(message, where, port=to, timeout=3)
        return dns.query.udp(message, where, port=to, timeout=3, ignore_trailing=True)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def geolb_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "geolb", *args]


def start_server(
    zones: Path | str = DATA / "zones",
    *extra: str,
    geoip: Path | str | None = None,
    listen: Sequence[str] = ("127.0.0.1:0",),
    http: str = "127.0.0.1:0",
    tmp: Path | None = None,
    timeout: float = 20,
    prefix: Sequence[str] = (),
) -> RunningServer:
    """`prefix`: a command to run geolb under (e.g. `taskset -c 0`)."""
    args = ["serve", "--zones", str(zones), "--http", http, *extra]
    for address in listen:
        args += ["--listen", address]
    if geoip is not None:
        args += ["--geoip", str(geoip)]
    stderr_dir = tmp or Path(os.environ.get("TMPDIR", "/tmp"))
    stderr_path = stderr_dir / f"geolb-stderr-{os.getpid()}-{time.monotonic_ns()}.log"
    env = {**os.environ, "GEOLB_CACHE_DIR": str(CACHE)}  # maps built once per test run, not in the user's cache
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([*prefix, *geolb_command(*args)], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            match = READY.match(line)
            if match:
                dns_addrs = [_split(a) for a in match.group("dns").split()]
                return RunningServer(proc, dns_addrs, None if match.group("http") == "off" else match.group("http"), stderr_path, line)
            if not line and proc.poll() is not None:
                break
    proc.kill()
    proc.wait()
    raise RuntimeError(f"geolb did not become ready:\n{stderr_path.read_text()}")


def own_cache(folder: Path) -> Path:
    """A cache directory of a server's own (RUM measurements, remembered serials) that shares the run's GeoIP copies
    and region maps (content-addressed, slow to make) through symlinks."""
    folder.mkdir(parents=True, exist_ok=True)
    for shared in ("databases", "maps"):
        (CACHE / shared).mkdir(parents=True, exist_ok=True)
        if not (folder / shared).exists():
            (folder / shared).symlink_to(CACHE / shared, target_is_directory=True)
    return folder


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@contextmanager
def running(*args: object, **kwargs: object) -> Iterator[RunningServer]:
    server = start_server(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate: object, timeout: float = 5.0, interval: float = 0.05) -> None:
    """Poll `predicate` until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.1f} s")


def api(server: RunningServer, method: str, path: str, body: Any = None, token: str | None = "s3cret") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.http_url}{path}", data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            payload = reply.read()
            status = reply.status
    except urllib.error.HTTPError as exc:
        payload, status = exc.read(), exc.code
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode()
