"""The health checks' HTTP client: its response parser against aiohttp's, and kept-alive checks against real servers on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParserPy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geolb import model
from geolb.health.httpcheck import HttpChecker, HttpError, framing, parse_head
from geolb.health.probe import probe

# --- the parser, against aiohttp's -----------------------------------------------------------

NAMES = ["Content-Type", "X-Load", "x-load", "Server", "Cache-Control", "X-Custom-Thing", "Connection", "Date"]
VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def aiohttp_parse(data: bytes) -> tuple[int, int, dict[str, str | None], bytes] | None:
    """(minor version, status, the NAMES' values, body) as aiohttp reads `data`; None when it refuses it."""

    async def parse() -> tuple[int, int, dict[str, str | None], bytes] | None:
        loop = asyncio.get_running_loop()
        parser = HttpResponseParserPy(BaseProtocol(loop), loop, 2**16, auto_decompress=False)
        try:
            messages, _, _ = parser.feed_data(data)
        except HttpProcessingError:
            return None
        if not messages:
            return None
        message, payload = messages[0]
        body = await payload.read() if payload.is_eof() else b""
        return message.version.minor, message.code, {n.lower(): message.headers.get(n) for n in NAMES}, body

    return asyncio.run(parse())


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    minor = draw(st.sampled_from([0, 1]))
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    reason = draw(st.sampled_from(["OK", "Service Unavailable", "", "Weird  reason text"]))
    fields = draw(
        st.lists(
            st.tuples(
                st.sampled_from(NAMES[:-2]),
                st.text(VALUE_CHARS, max_size=12),
                st.sampled_from(["", " ", "  ", "\t"]),
                st.sampled_from(["", " ", "\t"]),
            ),
            max_size=6,
        )
    )
    body = draw(st.binary(max_size=64))
    lines = [f"HTTP/1.{minor} {status}" + (f" {reason}" if reason else "")]
    lines += [f"{name}:{before}{value}{after}" for name, value, before, after in fields]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
def test_parser_reads_what_aiohttp_reads(data: bytes) -> None:
    expected = aiohttp_parse(data)
    assert expected is not None, data
    parsed = parse_head(data)
    assert parsed is not None
    head, used = parsed
    frame = framing(head)
    assert frame.kind == "length"
    body = data[used : used + frame.length]
    assert (head.version, head.status, {n.lower(): head.header(n) for n in NAMES}, body) == expected


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 200))
def test_parser_never_fails_but_with_http_error(noise: bytes, cut: int) -> None:
    """Random bytes, and valid responses cut short or with bytes flipped: HttpError, None or a head."""
    for data in (noise, b"HTTP/1.1 200 OK\r\n" + noise, (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + noise)[:cut]):
        try:
            parsed = parse_head(data)
        except HttpError:
            continue
        if parsed is not None:
            head, used = parsed
            assert 100 <= head.status <= 999 and used <= len(data)
            with suppress(HttpError):
                framing(head)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",  # a space in the name
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",  # a bare CR in a value
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",  # obsolete line folding
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ],
)
def test_malformed_heads_are_refused_like_aiohttp_does(data: bytes) -> None:
    assert aiohttp_parse(data) is None
    with pytest.raises(HttpError):
        parse_head(data)


def test_content_length_forms() -> None:
    def length(value: str) -> int:
        parsed = parse_head(f"HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n".encode())
        assert parsed is not None
        return framing(parsed[0]).length

    assert length("12") == 12
    assert length("3, 3") == 3
    for bad in ("3, 4", "-1", "x", "１"):
        with pytest.raises(HttpError):
            length(bad)


# --- checks over real sockets ----------------------------------------------------------------


def key(port: int, path: str = "/health", expect_body: str | None = None, timeout: float = 1.0) -> model.HealthKey:
    check = model.HealthCheck("http", port, path, None, (200,), expect_body, 1.0, timeout, 3, 2, True)
    return model.HealthKey(ipaddress.ip_address("127.0.0.1"), check)


@asynccontextmanager
async def raw_server(respond: Callable[[bytes], bytes | None]) -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback server that answers each request with `respond(request)` (None: close the connection);
    yields its port and a list with the number of connections it accepted."""
    accepted = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                answer = respond(request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, accepted
    finally:
        server.close()


async def test_one_connection_carries_every_check() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Load: 40%\r\n\r\nhealthy"
    async with raw_server(lambda _: ok) as (port, accepted):
        checker = HttpChecker()
        for _ in range(5):
            outcome = await probe(checker, key(port, expect_body="healthy"))
            assert outcome.ok and outcome.load == 0.4
        assert accepted[0] == 1
        checker.close()


@pytest.mark.parametrize(
    ("response", "expect_body", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nheal\r\n3;ext=1\r\nthy\r\n0\r\nX-Trailer: 1\r\n\r\n", "healthy", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nmain\r\n0\r\n\r\n", "healthy", "body does not contain 'healthy'"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None, None),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", None, "status 503"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", None, None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Header: 1\r\n\r\nok", None, "bad response: malformed header line"),
    ],
)
async def test_responses_the_fast_path_hands_to_the_full_reader(response: bytes, expect_body: str | None, error: str | None) -> None:
    async with raw_server(lambda _: response) as (port, _):
        checker = HttpChecker()
        for _ in range(3):
            outcome = await probe(checker, key(port, expect_body=expect_body))
            assert outcome.error == error
        checker.close()


async def test_a_body_without_length_is_read_to_the_close() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nall is healthy here")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    checker = HttpChecker()
    for _ in range(2):
        assert (await probe(checker, key(port, expect_body="healthy"))).ok
    checker.close()
    server.close()


async def test_a_server_that_closes_idle_connections_never_fails_a_check() -> None:
    """aiohttp's server with a keep-alive timeout shorter than the interval: each check finds its
    connection closed, and a new one is opened without a failure."""
    app = web.Application()
    hits: list[str] = []

    async def health(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    checker = HttpChecker()
    try:
        for _ in range(4):
            assert (await probe(checker, key(port))).error is None
            await asyncio.sleep(0.15)
        assert len(hits) == 4
    finally:
        checker.close()
        await runner.cleanup()


async def test_a_silent_server_times_out_and_the_connection_is_not_reused() -> None:
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    async with raw_server(lambda _: next(answers)) as (port, accepted):
        checker = HttpChecker()
        assert (await probe(checker, key(port, timeout=0.2))).ok
        assert (await probe(checker, key(port, timeout=0.2))).error == "timeout after 0.2 s"
        assert (await probe(checker, key(port, timeout=0.2))).ok
        assert accepted[0] == 2
        checker.close()


async def test_fast_checks_run_on_callbacks_and_time_out() -> None:
    """HttpChecker.start(): the prober's path once a connection is kept; results and timeouts by callback."""
    replies = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b""])
    async with raw_server(lambda _: next(replies)) as (port, _):
        checker = HttpChecker()
        target_key = key(port, timeout=0.2)
        assert (await probe(checker, target_key)).ok  # opens and keeps the connection
        target = checker.target(target_key)
        results: asyncio.Queue[tuple[str | None, str | None, bool]] = asyncio.Queue()
        assert checker.start(target, lambda *result: results.put_nowait(result))
        assert await asyncio.wait_for(results.get(), 1) == (None, None, False)
        assert checker.start(target, lambda *result: results.put_nowait(result))
        deadline = time.monotonic() + 1
        while results.empty() and time.monotonic() < deadline:
            checker.expire(time.monotonic())  # the prober calls this every tick
            await asyncio.sleep(0.01)
        assert results.get_nowait() == ("timeout after 0.2 s", None, False)
        assert not checker.start(target, lambda *result: None)  # that connection is gone
        checker.close()
