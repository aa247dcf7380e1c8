"""GET / (the operator's status page, every asset from package data) and GET /v1/events (what the page follows)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from geolb.http.control import Control
from geolb.http.feed import FeedEvent

HEARTBEAT = 15.0  # seconds between keep-alive comments on an idle event stream
# Nothing but geolb itself: no script, style, font or connection to another host, even by mistake.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSETS = {"page.js": "text/javascript", "page.css": "text/css", "world.svg": "image/svg+xml"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class PageFiles:
    """The page's files, read once from the package."""

    template: str
    world_path: str  # the land outline's SVG path data, inlined into the page's map
    assets: dict[str, Asset]


def load_page_files() -> PageFiles:
    folder = resources.files("geolb").joinpath("http/static")
    assets = {}
    for name, content_type in ASSETS.items():
        body = folder.joinpath(name).read_bytes()
        assets[name] = Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    world = folder.joinpath("world.svg").read_text(encoding="utf-8")
    found = re.search(r'<path class="land" d="([^"]+)"', world)
    if found is None:
        raise RuntimeError("geolb/http/static/world.svg has no land path")
    return PageFiles(folder.joinpath("index.html").read_text(encoding="utf-8"), found.group(1), assets)


def render_page(files: PageFiles, status: dict[str, Any]) -> str:
    """The page with the status it opens on (the same report as /v1/status) in it: the first paint needs no request."""
    data = json.dumps(status, separators=(",", ":")).replace("<", "\\u003c")  # no "</script>" inside the data block
    asset_version = {name: asset.etag.strip('"') for name, asset in files.assets.items()}
    return (
        files.template.replace("{{world}}", html.escape(files.world_path))
        .replace("{{status}}", data)
        .replace("{{js}}", asset_version["page.js"])
        .replace("{{css}}", asset_version["page.css"])
    )


def add_page_routes(app: web.Application, server_key: web.AppKey[Control], report: Callable[[Control], Awaitable[dict[str, Any]]]) -> None:
    """Routes of the page: `report(server)` is the coroutine that makes /v1/status's body."""
    files = load_page_files()

    async def index(request: web.Request) -> web.Response:
        status = await report(request.app[server_key])
        return web.Response(
            text=render_page(files, status),
            content_type="text/html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    async def asset(request: web.Request) -> web.Response:
        found = files.assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        headers = {"ETag": found.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("If-None-Match") == found.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body, content_type=found.content_type, headers=headers)

    async def events(request: web.Request) -> web.StreamResponse:
        return await stream_events(request, request.app[server_key])

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/v1/events", events)


async def stream_events(request: web.Request, server: Control) -> web.StreamResponse:
    """Server-sent events: `feed` (a state change, reload or database change: the backlog first, then live,
    resumed after Last-Event-ID) and `generation` (something the status shows changed: fetch it again)."""
    try:
        last_id = int(request.headers.get("Last-Event-ID") or request.query.get("after") or 0)
    except ValueError:
        last_id = 0
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    feed = server.feed
    queue = feed.subscribe()
    try:
        await response.prepare(request)
        backlog = "".join(_feed_message(event) for event in feed.since(last_id))
        await response.write(f"retry: 1000\n\n{backlog}event: generation\ndata: {feed.generation}\n\n".encode())
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), HEARTBEAT)
            except TimeoutError:
                await response.write(b": idle\n\n")
                continue
            if item is None:
                break
            if isinstance(item, int):
                await response.write(f"event: generation\ndata: {item}\n\n".encode())
            else:
                await response.write(_feed_message(item).encode())
    except ConnectionError:
        pass  # the page went away
    finally:
        feed.unsubscribe(queue)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


def _feed_message(event: FeedEvent) -> str:
    return f"id: {event.id}\nevent: feed\ndata: {json.dumps(event.as_json(), separators=(',', ':'))}\n\n"
