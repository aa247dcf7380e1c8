"""One health check attempt -> Outcome(ok, latency, error), over aiohttp (http/https) or a TCP connect."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass

import aiohttp

from geolb import __version__, model
from geolb.config.values import parse_fraction

USER_AGENT = f"geolb/{__version__} (health check)"
BODY_LIMIT = 4096  # bytes of the body read for expect_body


@dataclass(frozen=True)
class Outcome:
    ok: bool
    latency: float  # seconds
    error: str | None = None  # why it failed, for logs and /v1/status
    load: float | None = None  # what the load header said (http/https), when it said something readable


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


_NO_VERIFY = ssl.create_default_context()
_NO_VERIFY.check_hostname = False
_NO_VERIFY.verify_mode = ssl.CERT_NONE


async def probe(session: aiohttp.ClientSession, key: model.HealthKey, source: str | None = None) -> Outcome:
    """Run one check (tcp checks leave from `source`; http ones from the session's); failures become Outcomes."""
    check = key.check
    started = time.monotonic()
    load: float | None = None
    try:
        async with asyncio.timeout(check.timeout):
            if check.type in ("http", "https"):
                error, load = await _http(session, key)
            elif check.type == "tcp":
                error = await _tcp(key, source)
            else:
                error = None
    except TimeoutError:
        error = f"timeout after {check.timeout:g} s"
    except aiohttp.ClientConnectorCertificateError as exc:
        error = f"TLS certificate: {exc.certificate_error}"
    except aiohttp.ClientConnectorError as exc:
        error = _connect_error(exc.os_error)
    except (aiohttp.ClientError, OSError) as exc:
        error = _connect_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
    return Outcome(error is None, time.monotonic() - started, error, load)


async def _http(session: aiohttp.ClientSession, key: model.HealthKey) -> tuple[str | None, float | None]:
    """(why the check failed or None, the load the response reported); the load never fails a check."""
    check = key.check
    headers = {"User-Agent": USER_AGENT, "Host": check.host or _host_header(key)}
    tls: ssl.SSLContext | bool = True
    if check.type == "https" and not check.tls_verify:
        tls = _NO_VERIFY
    async with session.get(
        url_of(key),
        headers=headers,
        allow_redirects=False,
        ssl=tls if check.type == "https" else False,
        server_hostname=check.host if check.type == "https" and check.host else None,
    ) as response:
        load = parse_load(response.headers.get(check.load_header))
        if response.status not in check.expect_status:
            return f"status {response.status}", load
        if check.expect_body is not None:
            body = await response.content.read(BODY_LIMIT)
            if check.expect_body.encode() not in body:
                return f"body does not contain {check.expect_body!r}", load
    return None, load


def _host_header(key: model.HealthKey) -> str:
    address = f"[{key.address}]" if key.address.version == 6 else str(key.address)
    default = 443 if key.check.type == "https" else 80
    return address if key.check.port == default else f"{address}:{key.check.port}"


async def _tcp(key: model.HealthKey, source: str | None) -> str | None:
    local = None if source is None else (source, 0)
    _reader, writer = await asyncio.open_connection(str(key.address), key.check.port, local_addr=local)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _connect_error(exc: OSError | None) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc is None:
        return "connection failed"
    return exc.strerror or str(exc) or type(exc).__name__
