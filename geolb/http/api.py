"""aiohttp routes: they read the runtime's snapshot; changes go through the Control calls (see control.py)."""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from geolb import model
from geolb.config.values import parse_fraction
from geolb.explain import ExplainError, explain, parse_client
from geolb.geo.locate import GeoIPLocator
from geolb.handler import AnswerKey
from geolb.health.probe import url_of
from geolb.health.state import HealthView
from geolb.http.control import Control
from geolb.http.page import add_page_routes
from geolb.steer.evidence import PoolEvidence

SERVER_KEY: web.AppKey[Control] = web.AppKey("server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def build_app(server: Control) -> web.Application:
    app = web.Application(middlewares=[_errors_as_json])
    app[SERVER_KEY] = server
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/explain", explain_query)
    app.router.add_get("/v1/rum/tokens/{token}", rum_token)
    app.router.add_post("/v1/reload", _mutating(reload))
    app.router.add_post("/v1/endpoints/{pool}/{region}/{address}/force", _mutating(force))
    app.router.add_post("/v1/endpoints/{pool}/{region}/{address}/load", _mutating(push_load))
    add_page_routes(app, SERVER_KEY, full_status)
    return app


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return json_error(exc.status, exc.reason)
        raise


def _mutating(handler: Handler) -> Handler:
    """With a token configured, require `Authorization: Bearer <token>` (401 without, 403 wrong)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app[SERVER_KEY].api_token
        if token:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given:
                response = json_error(401, "this call needs Authorization: Bearer <token>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="geolb"'
                return response
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                return json_error(403, "wrong token")
        return await handler(request)

    return guarded


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    workers = _workers(server)
    if not server.answering:
        return web.json_response({"status": "not answering DNS", "workers": workers}, status=503)
    status = "degraded" if server.workers.degraded else "ok"  # some DNS workers are down; the others answer
    return web.json_response({"status": status, "zones": len(server.runtime.snapshot.zones.zones), "workers": workers}, status=200)


def _workers(server: Control) -> dict[str, int]:
    report = server.workers
    return {"expected": report.expected, "alive": report.alive, "restarts": report.restarts}


async def metrics(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    server.scraped_stats = await server.query_stats()  # every worker's counters, gathered now
    body = server.metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="milliseconds")


def _forced_text(forced: bool | None) -> str | None:
    return None if forced is None else ("up" if forced else "down")


def status_report(server: Control, recent: tuple[Mapping[AnswerKey, int], float] = ({}, 0.0)) -> dict[str, Any]:
    """Zones, and for every pool, region and endpoint: state, forced state, counters, last check;
    with `recent` (GEO answers per pool and region, and the seconds they span) each region's answers."""
    snapshot = server.runtime.snapshot
    answers, window = recent
    health = server.health
    evidence = snapshot.evidence
    pools: dict[str, Any] = {}
    for pool in snapshot.zones.pools.values():
        regions: dict[str, Any] = {}
        failing = failing_open(pool, snapshot.health)
        for region in pool.regions:
            endpoints = []
            for endpoint in region.endpoints:
                check = health.check(endpoint.key) if endpoint.health.type != "none" else None
                endpoints.append(
                    {
                        "address": str(endpoint.address),
                        "weight": endpoint.weight,
                        "state": "up" if snapshot.health.is_up(pool.name, region.name, endpoint) else "down",
                        "checked_state": None if check is None else ("up" if check.up else "down"),
                        "forced": _forced_text(health.forced((pool.name, region.name, endpoint.address))),
                        "check": {
                            "type": endpoint.health.type,
                            "target": None if endpoint.health.type == "none" else url_of(endpoint.key),
                            "interval": endpoint.health.interval,
                            "timeout": endpoint.health.timeout,
                            "fall": endpoint.health.fall,
                            "rise": endpoint.health.rise,
                        },
                        "successes": check.successes if check else 0,
                        "failures": check.failures if check else 0,
                        "last_check": _time(check.last_check) if check else None,
                        "last_error": check.last_error if check else None,
                        "last_latency_ms": None if check is None or check.last_latency is None else round(check.last_latency * 1000, 3),
                        **_load_report(server, (pool.name, region.name, endpoint.address)),
                        **_instance_views(server, endpoint),
                    }
                )
            regions[region.name] = {
                "location": region.location,
                "rum_url": region.rum_url,
                "rtt_by_country": _rtt_by_country(evidence.get(pool.name), region.name),
                # Down, yet answered: every endpoint of a family it serves is down in the whole pool (SPEC §3 rule 4).
                "failing_open": any(model.address_rtype(e.address) in failing for e in region.endpoints),
                "selection": _selection(region.selection),
                "answers_last_minute": answers.get(AnswerKey(pool.name, region.name), 0),
                "endpoints": endpoints,
            }
        shed = pool.shed_load
        pools[pool.name] = {
            "zone": pool.zone,
            "selection": _selection(pool.selection),
            "shed_load": None if shed is None else {"high": shed.high, "low": shed.low},
            "failing_open": sorted(failing),
            "answers_last_minute": sum(r["answers_last_minute"] for r in regions.values()),
            "steering": pool.steering,
            "latency": _latency(server, pool, evidence.get(pool.name)),
            "regions": regions,
        }
    last = server.last_reload
    return {
        "time": _time(time.time()),
        "generation": snapshot.generation,
        "zones": [{"name": z.name, "file": z.file, "serial": z.serial} for z in snapshot.zones.zones.values()],
        "pools": pools,
        "reload": {"ok": last.ok, "errors": [str(e) for e in last.errors], "warnings": [str(w) for w in last.warnings]},
        "health_checks_scheduled": server.checks_scheduled,
        "workers": _workers(server),
        "cluster": _cluster(server),
        "rum": _rum(server),
        "geoip": geoip_report(server),
        "answers_window_seconds": round(window, 1),
        "api_token_required": bool(server.api_token),
    }


def failing_open(pool: model.Pool, health: HealthView) -> set[str]:
    """The record types ("A", "AAAA") the pool has endpoints for but none of them up: answered as if all were."""
    families: dict[str, bool] = {}
    for region in pool.regions:
        for endpoint in region.endpoints:
            rtype = model.address_rtype(endpoint.address)
            families[rtype] = families.get(rtype, False) or health.is_up(pool.name, region.name, endpoint)
    return {rtype for rtype, any_up in families.items() if not any_up}


def geoip_report(server: Control) -> dict[str, Any]:
    """The database answering (file, type, build date, digest, when loaded) and the last file refused, if any."""
    locator = server.locator
    report = server.geoip
    if not isinstance(locator, GeoIPLocator):
        return {"file": None, "description": locator.description, "error": report.error}
    return {
        "file": locator.source,
        "type": locator.database_type,
        "built": _time(locator.build_epoch),
        "digest": locator.digest,
        "loaded": _time(report.loaded),
        "error": report.error,
        "error_since": _time(report.error_since),
    }


def _cluster(server: Control) -> dict[str, Any] | None:
    member = server.cluster
    if member is None:
        return None
    status = member.status
    return {
        "instance": member.instance,
        "connected": status.connected,
        "instances": sorted(status.instances),
        "last_error": status.last_error,
        "since": _time(status.since),
    }


def _instance_views(server: Control, endpoint: model.Endpoint) -> dict[str, Any]:
    """In a cluster: what each live instance sees of the endpoint's check (ours included), decided by quorum."""
    if server.cluster is None or endpoint.health.type == "none":
        return {}
    views = server.cluster.views(endpoint.key)
    return {"instances": {name: "up" if up else "down" for name, up in views.items()}, "quorum": endpoint.health.quorum}


def _latency(server: Control, pool: model.Pool, evidence: PoolEvidence | None) -> dict[str, Any]:
    """SPEC §10 per pool: what holds evidence (only `steering: latency` pools' is published) and its beacons."""
    settings = pool.latency
    return {
        "min_samples": settings.min_samples,
        "min_networks": settings.min_networks,
        "window": settings.window,
        "margin": settings.margin,
        "margin_ms": settings.margin_ms,
        "vantage_radius": settings.vantage_radius,
        "evidence_version": None if evidence is None else evidence.version,
        "networks": 0 if evidence is None else evidence.networks,
        "resolvers": 0 if evidence is None else len(evidence.resolvers),
        "countries": 0 if evidence is None else len(evidence.countries),
        "vantages": 0 if evidence is None else len(evidence.vantages),
        "beacons": None if server.rum is None else server.rum.counts.of_pool(pool.name),
        "measured": server.rum_store.stats(pool.name),  # rows held (judged or not), beacons folded, peers merged
    }


def _rtt_by_country(evidence: PoolEvidence | None, region: str) -> dict[str, dict[str, float | int]]:
    """The region's RTT from each country with evidence for it: median of the networks' medians, and how many."""
    if evidence is None or region not in evidence.regions:
        return {}
    column = evidence.regions.index(region)
    found = {}
    for country, figures in sorted(evidence.countries.items()):
        ms = figures.rtt[column]
        if ms is not None:
            found[country] = {"ms": round(ms, 1), "networks": figures.samples[column]}
    return found


def _rum(server: Control) -> dict[str, Any] | None:
    """The RUM listener: where, and its beacons by result (accepted, bad_request, not_found, rate_limited)."""
    if server.rum is None:
        return None
    return {"listen": server.rum_address, **server.rum.report()}


def _selection(selection: model.Selection) -> dict[str, Any]:
    return {"policy": selection.policy, "hash_prefix": list(selection.hash_prefix)}


def _load_report(server: Control, ref: tuple[str, str, model.IPAddress]) -> dict[str, Any]:
    """The load that counts for an endpoint: its value, where it came from, when, and the busy state it gives."""
    load, source, at = server.health.endpoint_load(ref)
    return {"load": load, "load_source": source, "load_reported": _time(at), "busy": server.health.is_busy(ref)}


async def full_status(server: Control) -> dict[str, Any]:
    """/v1/status's body, with each region's GEO answers over the last minute (asked of every DNS worker)."""
    return status_report(server, await server.recent_answers())


async def status(request: web.Request) -> web.Response:
    """GET /v1/status; each region's `answers_last_minute` counts its GEO answers over `answers_window_seconds`."""
    return web.json_response(await full_status(request.app[SERVER_KEY]))


async def rum_token(request: web.Request) -> web.Response:
    """GET /v1/rum/tokens/{token}: who looked up "<token>.<rum_name>" in the last minute (resolver discovery, SPEC §10)."""
    token = request.match_info["token"].lower()
    sighting = request.app[SERVER_KEY].tokens.find(token)
    if sighting is None:
        return json_error(404, f"token {token!r} was not looked up in the last minute")
    network = None if sighting.network is None else str(sighting.network)
    age = round(max(0.0, time.monotonic() - sighting.at), 3)
    return web.json_response({"token": token, "resolver": str(sighting.resolver), "network": network, "age_seconds": age})


async def explain_query(request: web.Request) -> web.Response:
    """GET /v1/explain?name=&type=&client=[&resolver=1]: the DNS path's own decision, with live health and evidence.
    `resolver=1`: the client is a resolver asking without ECS (latency steering's resolver evidence may apply)."""
    server = request.app[SERVER_KEY]
    name = request.query.get("name")
    client_text = request.query.get("client")
    if not name or not client_text:
        return json_error(400, "name and client are required, e.g. ?name=www.example.com&type=A&client=81.2.69.0/24")
    snapshot = server.runtime.snapshot
    try:
        client = parse_client(client_text)
        resolver = request.query.get("resolver", "").lower() in ("1", "true", "yes")
        qtype = request.query.get("type", "A")
        report = explain(snapshot.zones, server.geo_answers(), server.locator, name, qtype, client, resolver, server.rum_addresses)
    except ExplainError as exc:
        return json_error(400, str(exc))
    if report["rcode"] == "REFUSED":
        return json_error(404, f"{report['query']['name']} is in no zone served here")
    report["generation"] = snapshot.generation
    return web.json_response(report)


async def reload(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    result = await server.reload_all()  # the zones, and the GeoIP database if its file changed
    await server.settled()  # every worker answers from the new zones before we say so
    serials = {zone.name: zone.serial for zone in result.zoneset.zones.values()}
    geoip = geoip_report(server)
    warnings = [str(w) for w in result.warnings]  # look-alike files ignored; which zones keep their last good version
    if result.ok and geoip["error"] is None:
        return web.json_response({"status": "ok", "serials": serials, "warnings": warnings, "geoip": geoip})
    if result.ok:
        return json_error(
            422, "the GeoIP database file was refused; the database in use keeps answering", serials=serials, warnings=warnings, geoip=geoip
        )
    return json_error(
        422,
        "some zone files have errors; every zone they involve keeps its last good version",
        errors=[str(e) for e in result.errors],
        warnings=warnings,
        serials=serials,
        geoip=geoip,
    )


def _endpoint(server: Control, request: web.Request) -> tuple[str, str, model.Endpoint] | web.Response:
    """The endpoint a /v1/endpoints/{pool}/{region}/{address}/... path names, or the 404 to send."""
    pool_name, region_name, address_text = (request.match_info[k] for k in ("pool", "region", "address"))
    pool = server.runtime.snapshot.zones.pools.get(pool_name)
    if pool is None:
        return json_error(404, f"no pool {pool_name!r}")
    region = pool.region(region_name)
    if region is None:
        return json_error(404, f"pool {pool_name!r} has no region {region_name!r}")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        return json_error(404, f"{address_text!r} is not an address")
    endpoint = next((e for e in region.endpoints if e.address == address), None)
    if endpoint is None:
        return json_error(404, f"region {region_name!r} of pool {pool_name!r} has no endpoint {address}")
    return pool_name, region_name, endpoint


def _endpoint_state(server: Control, pool: str, region: str, endpoint: model.Endpoint) -> dict[str, Any]:
    health = server.runtime.snapshot.health
    reported = server.health.view  # a load change alone reaches answers within a second (see Server.publish_health)
    return {
        "pool": pool,
        "region": region,
        "address": str(endpoint.address),
        "state": "up" if health.is_up(pool, region, endpoint) else "down",
        "forced": _forced_text(server.health.forced((pool, region, endpoint.address))),
        "load": reported.load(pool, region, endpoint),
        "busy": reported.is_busy(pool, region, endpoint),
    }


async def _json_field(request: web.Request, field: str) -> dict[str, Any] | None:
    """The request's JSON object when it has `field`; None for anything else (the caller says what it wants)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and field in body else None


async def _change_endpoint(
    request: web.Request, field: str, usage: str, read: Callable[[Any], T], apply: Callable[[Control, str, str, model.IPAddress, T], None]
) -> web.Response:
    """The endpoint the path names, `field` of the JSON body read (ValueError: 400 with `usage`), the
    change applied; the answer waits until every worker answers with it ("the very next answer")."""
    server = request.app[SERVER_KEY]
    found = _endpoint(server, request)
    if isinstance(found, web.Response):
        return found
    pool_name, region_name, endpoint = found
    body = await _json_field(request, field)
    if body is None:
        return json_error(400, usage)
    try:
        value = read(body[field])
    except ValueError:
        return json_error(400, usage)
    apply(server, pool_name, region_name, endpoint.address, value)
    await server.settled()
    return web.json_response(_endpoint_state(server, pool_name, region_name, endpoint))


def _forced_state(value: Any) -> bool | None:
    if value not in ("up", "down", None):
        raise ValueError(value)
    return None if value is None else value == "up"


async def force(request: web.Request) -> web.Response:
    """POST /v1/endpoints/{pool}/{region}/{address}/force {"state": "up"|"down"|null}."""
    usage = 'body must be {"state": "up" | "down" | null}'
    return await _change_endpoint(request, "state", usage, _forced_state, lambda server, *change: server.force(*change))


async def push_load(request: web.Request) -> web.Response:
    """POST /v1/endpoints/{pool}/{region}/{address}/load {"load": 0.0-1.0 or "73%"}."""
    usage = 'body must be {"load": a number from 0 to 1, or a percentage such as "73%"}'
    return await _change_endpoint(request, "load", usage, parse_fraction, lambda server, *change: server.push_load(*change))
