"""aiohttp routes: they read the runtime's snapshot; changes go through the server's own calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from geolb.explain import ExplainError, explain, parse_client

if TYPE_CHECKING:
    from geolb.server import Server

SERVER_KEY: web.AppKey[Server] = web.AppKey("server")


def build_app(server: Server) -> web.Application:
    app = web.Application()
    app[SERVER_KEY] = server
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/explain", explain_query)
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


async def explain_query(request: web.Request) -> web.Response:
    """GET /v1/explain?name=&type=&client=: the DNS path's own decision, with live health."""
    server = request.app[SERVER_KEY]
    name = request.query.get("name")
    client_text = request.query.get("client")
    if not name or not client_text:
        return json_error(400, "name and client are required, e.g. ?name=www.example.com&type=A&client=81.2.69.0/24")
    snapshot = server.runtime.snapshot
    try:
        client = parse_client(client_text)
        report = explain(snapshot.zones, server.handler.decider(snapshot), name, request.query.get("type", "A"), client)
    except ExplainError as exc:
        return json_error(400, str(exc))
    if report["rcode"] == "REFUSED":
        return json_error(404, f"{report['query']['name']} is in no zone served here")
    report["generation"] = snapshot.generation
    return web.json_response(report)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
