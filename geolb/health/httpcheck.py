"""HTTP(S) health checks on kept-alive connections: a prebuilt GET, a strict parse of the response, a bounded body.

Why not aiohttp's client here: measured on the 2-core development machine against a
minimal loopback responder, a check through aiohttp costs 444 µs of CPU with a new
connection and 220 µs kept alive; this client costs 23 µs kept alive (user + system),
which is what lets one process hold 10,000 targets at a 1 s interval
(`bench/health_bench.py scale`). The parser is tested against aiohttp's own on random
responses (tests/unit/test_httpcheck.py).

A connection is kept per check target, as Envoy's health checker does: one request at a
time, reused while the server keeps it open and the response was read to its end; a reused
connection that turns out closed is retried once on a new one, so a server's idle timeout
never fails a check.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import cast

from geolb import __version__, model

USER_AGENT = f"geolb/{__version__} (health check)"
BODY_LIMIT = 4096  # bytes of the body kept for expect_body
HEAD_LIMIT = 16384  # a longer status line + headers is an error
EXPIRY_TICK = 0.01  # seconds: fast checks' deadlines are kept in slots this long
DRAIN_LIMIT = 65536  # a longer body is not read to its end: the connection is closed instead

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?")
# A header field: a token, a colon, the value without surrounding blanks and without control
# characters other than tab, then CRLF.
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x1f\x7f \t])?)[ \t]*\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")


class HttpError(Exception):
    """The response is not HTTP/1.x as RFC 9112 writes it (the check fails with this message)."""


class ResponseHead:
    """Status line and header fields of a response (a plain class: one is made per check)."""

    __slots__ = ("headers", "status", "version")

    def __init__(self, version: int, status: int, headers: dict[str, str]) -> None:
        self.version = version  # 0 or 1 (HTTP/1.0, HTTP/1.1)
        self.status = status
        self.headers = headers  # lower-case names; the first of repeated fields, as aiohttp's .get() gives

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_head(data: bytes | bytearray) -> tuple[ResponseHead, int] | None:
    """The response head at the start of `data` and its length, or None while it is incomplete."""
    end = data.find(b"\r\n\r\n", 0, HEAD_LIMIT + 4)
    if end < 0:
        if len(data) > HEAD_LIMIT:
            raise HttpError("response head too long")
        return None
    first = data.find(b"\r\n", 0, end + 2)
    match = _STATUS_LINE.fullmatch(data, 0, first)
    if match is None:
        raise HttpError("not an HTTP/1.x status line")
    headers: dict[str, str] = {}
    # One pass of one pattern over all the fields; they must cover the block exactly, so a
    # line that is not `token ":" value` (or holds a bare CR or LF) cannot slip through.
    covered = first + 2
    for field in _FIELD.finditer(data, covered, end + 2):
        if field.start() != covered:
            break
        covered = field.end()
        headers.setdefault(field.group(1).decode("ascii").lower(), field.group(2).decode("latin-1"))
    if covered != end + 2:
        raise HttpError("malformed header line")
    return ResponseHead(int(match.group(1)), int(match.group(2)), headers), end + 4


class Framing:
    """How the body ends (RFC 9112 §6.3): `length` bytes, chunks, or the connection's end."""

    __slots__ = ("kind", "length")

    def __init__(self, kind: str, length: int = 0) -> None:
        self.kind = kind  # "none" | "length" | "chunked" | "close"
        self.length = length


_NO_BODY = Framing("none")
_CHUNKED = Framing("chunked")
_TO_CLOSE = Framing("close")


def framing(head: ResponseHead) -> Framing:
    status = head.status
    if status < 200 or status == 204 or status == 304:
        return _NO_BODY
    headers = head.headers
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        return _CHUNKED if encoding.rsplit(",", 1)[-1].strip().lower() == "chunked" else _TO_CLOSE
    length = headers.get("content-length")
    if length is None:
        return _TO_CLOSE
    if length.isdigit() and length.isascii():
        return Framing("length", int(length))
    values = {v.strip() for v in length.split(",")}  # "2, 2" is allowed; "2, 3" is not
    value = values.pop()
    if values or not value.isdigit() or not value.isascii():
        raise HttpError("bad Content-Length")
    return Framing("length", int(value))


def keeps_alive(head: ResponseHead) -> bool:
    connection = head.headers.get("connection")
    if connection is None:
        return head.version == 1
    tokens = {t.strip().lower() for t in connection.split(",")}
    if "close" in tokens:
        return False
    return head.version == 1 or "keep-alive" in tokens


def request_bytes(key: model.HealthKey) -> bytes:
    """The whole GET for a check: built once per target."""
    check = key.check
    address = f"[{key.address}]" if key.address.version == 6 else str(key.address)
    default = 443 if check.type == "https" else 80
    host = check.host or (address if check.port == default else f"{address}:{check.port}")
    path = urllib.parse.quote(check.path, safe="/?&=:@!$'()*+,;~%-._[]")
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n").encode(
        "latin-1", "replace"
    )


class Connection(asyncio.Protocol):
    """One kept-alive connection to a target: bytes in, a waiter woken on every arrival."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.reused = False  # has answered a request before
        self.listener: Callable[[], None] | None = None  # a FastCheck waiting on this connection
        self.first_byte = 0.0  # time.monotonic() of the first byte after the request was sent; 0.0: none yet
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.monotonic()
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.listener is not None:
            self.listener()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> bool:
        """Wait for more bytes; False when the connection has ended instead."""
        if self.closed:
            return False
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        return True

    @property
    def idle_ok(self) -> bool:
        """Fit to carry the next request: open, and nothing unasked-for waiting."""
        return not self.closed and not self.buffer and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class StaleConnection(Exception):
    """A reused connection ended before any byte of the response: try once more on a new one."""


async def read_response(conn: Connection, keep: int) -> tuple[ResponseHead, bytes, bool]:
    """The response to the request just sent: head, the first `keep` bytes of the body, and whether
    the connection can carry another request."""
    while True:
        parsed = parse_head(conn.buffer)
        if parsed is not None:
            head, used = parsed
            del conn.buffer[:used]
            if 100 <= head.status < 200 and head.status != 101:
                continue  # an interim response: the real one follows
            break
        if not await conn.more():
            if conn.reused and not conn.buffer:
                raise StaleConnection
            raise HttpError("connection closed before the response")
    frame = framing(head)
    reusable = keeps_alive(head) and frame.kind in ("none", "length", "chunked") and head.status != 101
    if frame.kind == "none":
        return head, b"", reusable
    if frame.kind == "length":
        body, complete = await _read_length(conn, frame.length, keep)
    elif frame.kind == "chunked":
        body, complete = await _read_chunked(conn, keep)
    else:
        body, complete = await _read_to_close(conn, keep)
    return head, body, reusable and complete


async def _read_length(conn: Connection, length: int, keep: int) -> tuple[bytes, bool]:
    want = min(length, max(keep, DRAIN_LIMIT))  # read past `keep` only to reuse the connection
    while len(conn.buffer) < want:
        if not await conn.more():
            if len(conn.buffer) >= keep or len(conn.buffer) >= length:
                break
            raise HttpError("connection closed inside the body")
    body = bytes(conn.buffer[: min(keep, length)])
    complete = len(conn.buffer) >= length
    del conn.buffer[: min(len(conn.buffer), length)]
    return body, complete


async def _read_chunked(conn: Connection, keep: int) -> tuple[bytes, bool]:
    body = bytearray()
    seen = 0
    while True:
        line = await _line(conn)
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise HttpError("bad chunk size")
        size = int(match.group(1), 16)
        if size == 0:
            while await _line(conn):  # trailer fields, up to the empty line
                pass
            return bytes(body[:keep]), True
        seen += size
        if seen > DRAIN_LIMIT:
            if len(body) >= keep:
                return bytes(body[:keep]), False
            raise HttpError("chunked body too long")
        while len(conn.buffer) < size + 2:
            if not await conn.more():
                raise HttpError("connection closed inside the body")
        if conn.buffer[size : size + 2] != b"\r\n":
            raise HttpError("chunk not followed by CRLF")
        if len(body) < keep:
            body += conn.buffer[:size]
        del conn.buffer[: size + 2]


async def _line(conn: Connection) -> bytes:
    while True:
        end = conn.buffer.find(b"\r\n")
        if end >= 0:
            line = bytes(conn.buffer[:end])
            del conn.buffer[: end + 2]
            return line
        if len(conn.buffer) > HEAD_LIMIT:
            raise HttpError("chunk line too long")
        if not await conn.more():
            raise HttpError("connection closed inside the body")


async def _read_to_close(conn: Connection, keep: int) -> tuple[bytes, bool]:
    while len(conn.buffer) < keep and await conn.more():
        pass
    return bytes(conn.buffer[:keep]), False


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class HttpChecker:
    """Runs http/https checks, keeping one idle connection per target for the next one."""

    def __init__(self, sources: Mapping[int, str] | None = None, max_idle: int = 100_000) -> None:
        self.sources = dict(sources or {})  # IP version -> the address checks leave from
        self.max_idle = max_idle  # kept-alive connections at most (each is a file descriptor)
        self._targets: dict[model.HealthKey, CheckTarget] = {}
        self._idle = 0  # connections kept open between checks
        self._fast: set[FastCheck] = set()  # under way
        self._deadlines: dict[int, list[FastCheck]] = {}  # by deadline in whole ticks, for expire()
        self._tls = {True: _tls_context(True), False: _tls_context(False)}

    def target(self, key: model.HealthKey) -> CheckTarget:
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = CheckTarget(key)
        return target

    async def check(self, key: model.HealthKey) -> tuple[str | None, str | None]:
        """(why the check failed or None, the load header's text if there was one).
        Raises HttpError, OSError, ssl.SSLError or the caller's timeout as they come."""
        check = key.check
        target = self.target(key)
        conn = self._take_idle(target)
        for attempt in range(2):
            if conn is None:
                conn = await self._connect(key)
            try:
                assert conn.transport is not None
                conn.first_byte = 0.0
                conn.transport.write(target.request)
                head, body, reusable = await read_response(conn, target.keep)
                target.answered = conn.first_byte
                break
            except StaleConnection:
                conn.close()
                conn = None
                if attempt:
                    raise HttpError("connection closed before the response") from None
            except BaseException:  # a timeout or an error: the connection is in an unknown state
                conn.close()
                raise
        assert conn is not None
        self._release(target, conn, reusable)
        return judge(check, head, body)

    def start(self, target: CheckTarget, done: FastDone) -> bool:
        """The fast path: send the check on the target's idle kept-alive connection and return True;
        `done` is called once from the loop. False (no idle connection, or the target's responses
        need the full reader): run check() in a task instead."""
        if target.slow:
            return False
        conn = self._take_idle(target)
        if conn is None:
            return False
        assert conn.transport is not None
        fast = FastCheck(self, target, conn, done, time.monotonic() + target.key.check.timeout)
        self._fast.add(fast)
        self._deadlines.setdefault(int(fast.deadline / EXPIRY_TICK) + 1, []).append(fast)
        conn.listener = fast.on_data
        conn.first_byte = 0.0
        conn.transport.write(target.request)
        return True

    def _take_idle(self, target: CheckTarget) -> Connection | None:
        """The target's kept connection, if it is still fit to carry a request."""
        conn = target.idle
        if conn is None:
            return None
        target.idle = None
        self._idle -= 1
        if not conn.idle_ok:
            conn.close()
            return None
        return conn

    def _release(self, target: CheckTarget, conn: Connection, reusable: bool) -> None:
        conn.reused = True
        conn.listener = None
        if reusable and self._idle < self.max_idle and target.idle is None and self._targets.get(target.key) is target:
            target.idle = conn
            self._idle += 1
        else:
            conn.close()

    async def _connect(self, key: model.HealthKey) -> Connection:
        check = key.check
        source = self.sources.get(key.address.version)
        loop = asyncio.get_running_loop()
        tls = self._tls[check.tls_verify] if check.type == "https" else None
        transport, conn = await loop.create_connection(
            Connection,
            str(key.address),
            check.port,
            ssl=tls,
            server_hostname=(check.host or str(key.address)) if tls is not None else None,
            local_addr=None if source is None else (source, 0),
        )
        conn.transport = transport  # uvloop calls connection_made on its next turn
        return conn

    def forget(self, keep: set[model.HealthKey]) -> None:
        """Close the connections of targets no longer checked."""
        for key in [k for k in self._targets if k not in keep]:
            conn = self._take_idle(self._targets.pop(key))
            if conn is not None:
                conn.close()

    def expire(self, now: float) -> None:
        """End the fast checks past their deadline (called every few milliseconds by the prober:
        one timer per check cost more than the rest of the check)."""
        for slot in [s for s in self._deadlines if s <= int(now / EXPIRY_TICK)]:
            for fast in self._deadlines.pop(slot):
                if fast in self._fast:
                    fast.expire()

    def close(self) -> None:
        self._deadlines.clear()
        for fast in list(self._fast):
            fast.abandon()
        for target in self._targets.values():
            conn = self._take_idle(target)
            if conn is not None:
                conn.close()


def judge(check: model.HealthCheck, head: ResponseHead, body: bytes) -> tuple[str | None, str | None]:
    """(why the check failed or None, the load header's text) for a response read."""
    load = head.header(check.load_header)
    if head.status not in check.expect_status:
        return f"status {head.status}", load
    if check.expect_body is not None and check.expect_body.encode() not in body:
        return f"body does not contain {check.expect_body!r}", load
    return None, load


def timed_out(check: model.HealthCheck) -> str:
    return f"timeout after {check.timeout:g} s"


class CheckTarget:
    """What the checker keeps per target: its request, ready to send; its idle connection; and
    whether its responses need the full reader. The prober holds these, so that a check does
    not hash a HealthKey (a tree of dataclasses) again and again."""

    __slots__ = ("answered", "idle", "keep", "key", "request", "slow")

    def __init__(self, key: model.HealthKey) -> None:
        self.key = key
        self.request = request_bytes(key)
        self.keep = BODY_LIMIT if key.check.expect_body is not None else 0  # body bytes to read for expect_body
        self.idle: Connection | None = None
        self.slow = False
        # time.monotonic() when the latest response's first byte arrived: a check's round-trip time for
        # vantage points (SPEC §10) runs from its start to here, not to the end of the body.
        self.answered = 0.0


FastDone = Callable[[str | None, str | None, bool], None]  # (error, load text, run check() instead)


class FastCheck:
    """One check on a kept-alive connection, driven by callbacks: no task, no coroutine.

    It reads only a response that arrives whole with a Content-Length (or no body); anything
    else (chunks, a closed connection, a malformed head) hands the check back to the full
    reader, which then runs it from the start on a new connection.
    """

    __slots__ = ("checker", "conn", "deadline", "done", "target")

    def __init__(self, checker: HttpChecker, target: CheckTarget, conn: Connection, done: FastDone, deadline: float) -> None:
        self.checker = checker
        self.target = target
        self.conn = conn
        self.done = done
        self.deadline = deadline  # time.monotonic(); HttpChecker.expire() ends it then

    def on_data(self) -> None:
        conn = self.conn
        try:
            parsed = parse_head(conn.buffer)
            if parsed is None:
                if conn.closed:
                    self.hand_back(slow=False)  # the server closed an idle connection: a new one will do
                return
            head, used = parsed
            frame = framing(head)
        except HttpError:
            self.hand_back(slow=True)
            return
        if head.status < 200 or frame.kind not in ("none", "length") or frame.length > DRAIN_LIMIT:
            self.hand_back(slow=True)
            return
        if len(conn.buffer) - used < frame.length:
            if conn.closed:
                self.hand_back(slow=True)
            return  # the rest of the body is on its way
        body = bytes(conn.buffer[used : used + min(self.target.keep, frame.length)])
        del conn.buffer[: used + frame.length]
        self.target.answered = conn.first_byte
        self.end()
        self.checker._release(self.target, conn, keeps_alive(head) and not conn.closed)
        error, load = judge(self.target.key.check, head, body)
        self.done(error, load, False)

    def expire(self) -> None:
        self.end()
        self.conn.close()
        self.done(timed_out(self.target.key.check), None, False)

    def hand_back(self, *, slow: bool) -> None:
        self.end()
        self.conn.close()
        if slow:
            self.target.slow = True
        self.done(None, None, True)

    def abandon(self) -> None:
        """Shutting down: no result."""
        self.end()
        self.conn.close()

    def end(self) -> None:
        self.conn.listener = None
        self.checker._fast.discard(self)
