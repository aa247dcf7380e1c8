"""One health check attempt -> Outcome(ok, latency, error, load, rtt): http/https through HttpChecker, or a TCP connect."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass

from geolb import model
from geolb.config.values import parse_fraction
from geolb.health.httpcheck import HttpChecker, HttpError, timed_out


@dataclass(frozen=True)
class Outcome:
    ok: bool
    latency: float  # seconds
    error: str | None = None  # why it failed, for logs and /v1/status
    load: float | None = None  # what the load header said (http/https), when it said something readable
    # Seconds from the check's start to the first response byte (http/https) or to the open connection (tcp),
    # for a successful check; None otherwise. A vantage point's RTT to the endpoint (SPEC §10): the server's
    # think time counts (it is what a client waits for), the body's transfer does not.
    rtt: float | None = None


def parse_load(text: str | None) -> float | None:
    """A load header's value: "0.42" or "42%" -> 0.42; missing, unreadable or outside 0..1 -> None."""
    if text is None:
        return None
    try:
        return parse_fraction(text)
    except ValueError:
        return None


def url_of(key: model.HealthKey) -> str:
    check = key.check
    host = f"[{key.address}]" if key.address.version == 6 else str(key.address)
    return f"{check.type}://{host}:{check.port}{check.path}"


async def probe(http: HttpChecker, key: model.HealthKey, source: str | None = None) -> Outcome:
    """Run one check (tcp checks leave from `source`; http ones from the checker's); failures become Outcomes.

    The timeout is one timer that cancels this task, as asyncio.timeout() does, without
    its bookkeeping: at 10,000 checks a second that was the prober's largest cost.
    """
    check = key.check
    started = time.monotonic()
    load: float | None = None
    reached: float | None = None  # time.monotonic() of the first response byte or the connection
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(check.timeout, expire)
    try:
        if check.type in ("http", "https"):
            error, load_text = await http.check(key)
            load = parse_load(load_text)
            reached = http.target(key).answered
        elif check.type == "tcp":
            reached = await _tcp(key, source)
            error = None
        else:
            error = None
    except asyncio.CancelledError:
        if not expired or task.uncancel() > 0:
            raise  # cancelled from outside (shutdown, a target no zone uses any more)
        error = timed_out(check)
    except HttpError as exc:
        error = f"bad response: {exc}"
    except ssl.SSLCertVerificationError as exc:
        error = f"TLS certificate: {exc.verify_message}"
    except ssl.SSLError as exc:
        error = f"TLS: {exc.reason or exc}"
    except OSError as exc:
        error = _connect_error(exc)
    finally:
        timer.cancel()
    rtt = reached - started if error is None and reached is not None and reached >= started else None
    return Outcome(error is None, time.monotonic() - started, error, load, rtt)


async def _tcp(key: model.HealthKey, source: str | None) -> float:
    """Open and close a connection; when it opened (time.monotonic())."""
    local = None if source is None else (source, 0)
    _reader, writer = await asyncio.open_connection(str(key.address), key.check.port, local_addr=local)
    opened = time.monotonic()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return opened


def _connect_error(exc: OSError | None) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc is None:
        return "connection failed"
    return exc.strerror or str(exc) or type(exc).__name__
