"""aiohttp routes: they read the runtime's snapshot; changes go through the server's own calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from geolb.server import Server

SERVER_KEY: web.AppKey[Server] = web.AppKey("server")


def build_app(server: Server) -> web.Application:
    app = web.Application()
    app[SERVER_KEY] = server
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/reload", reload)
    return app


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    if not server.dns_addresses:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ok", "zones": len(server.runtime.snapshot.zones.zones)})


async def reload(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    result = server.reload()
    serials = {zone.name: zone.serial for zone in result.zoneset.zones.values()}
    if result.ok:
        return web.json_response({"status": "ok", "serials": serials})
    errors = [str(error) for error in result.errors]
    return web.json_response({"status": "error", "errors": errors, "serials": serials}, status=422)
