"""One zone file to one `model.Zone`, with every problem reported as FILE:LINE: message.

The sections are read by their own modules (apex, health, pools, records) into one
ZoneContext that collects every problem; integrity.py forms the RRsets and applies
the rules that span records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import yaml

from geolb import model
from geolb.config.apex import read_nameservers, read_soa
from geolb.config.context import ZoneContext
from geolb.config.dnssec import read_dnssec, with_keys
from geolb.config.health import DEFAULT_HEALTH, read_health
from geolb.config.integrity import build_zone
from geolb.config.marks import compose_file, is_null
from geolb.config.pools import check_networks, read_networks, read_pools
from geolb.config.records import Record, read_records
from geolb.config.serials import Served, serial_after
from geolb.config.values import parse_ttl
from geolb.dns.names import absolute, check_name
from geolb.errors import ConfigError, Where

ZONE_KEYS = ("zone", "ttl", "soa", "nameservers", "health", "networks", "pools", "records", "dnssec", "rum_name")
DEFAULT_TTL = 3600


@dataclass
class ZoneFileResult:
    """A zone, or None when any error was found; warnings never stop a zone."""

    zone: model.Zone | None
    errors: list[ConfigError]
    warnings: list[ConfigError] = field(default_factory=list)
    # Kept even when the file fails, so cross-file checks can still run on it.
    pools_declared: Mapping[str, Where] = field(default_factory=dict)
    geo_refs: tuple[tuple[str, Where], ...] = ()
    origin: str | None = None  # the zone the file declares, once its name was read
    origin_at: Where | None = None


def read_zone_file(path: str, *, previous_serial: int | None = None, served: Served | None = None) -> ZoneFileResult:
    """Parse one `<zone>.yaml`; `previous_serial` (this process's) and `served` (remembered across restarts)
    keep a derived serial moving forward."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        return ZoneFileResult(None, [ConfigError(Where(path, 1), f"cannot read zone file: {exc.strerror}")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return ZoneFileResult(None, [ConfigError(Where(path, line), "zone file is not valid UTF-8")])
    ctx = ZoneContext(path, hashlib.sha256(data).hexdigest(), mtime, previous_serial)
    try:
        root = compose_file(path, text)
    except ConfigError as exc:
        return ZoneFileResult(None, [exc])
    zone = read_zone(ctx, root)
    pools, refs = dict(ctx.pools_declared), tuple(ctx.geo_refs)
    origin = ctx.origin if ctx.origin_at is not None else None
    if ctx.errors:
        return ZoneFileResult(None, ctx.errors, ctx.warnings, pools, refs, origin, ctx.origin_at)
    if zone is not None and ctx.serial_derived and served:
        # Only now is the digest whole (DNSSEC keys count): the same text keeps its serial.
        serial = serial_after(zone.serial, served.get(zone.name), zone.digest, first_read=previous_serial is None)
        if serial != zone.serial:
            zone = with_serial(zone, serial)
    return ZoneFileResult(zone, [], ctx.warnings, pools, refs, origin, ctx.origin_at)


def with_serial(zone: model.Zone, serial: int) -> model.Zone:
    """The zone with another SOA serial (the SOA RRset stands in the zone and at its apex node)."""
    old = zone.soa.rdatas[0]
    assert isinstance(old, model.SOA)
    soa = dataclasses.replace(zone.soa, rdatas=(dataclasses.replace(old, serial=serial),))
    apex = zone.nodes[zone.name]
    nodes = {**zone.nodes, zone.name: dataclasses.replace(apex, rrsets=MappingProxyType({**apex.rrsets, "SOA": soa}))}
    return dataclasses.replace(zone, soa=soa, nodes=MappingProxyType(nodes))


def read_zone(ctx: ZoneContext, root: yaml.Node | None) -> model.Zone | None:
    """Every section of the file, each read even when another failed, so that every problem is reported."""
    if root is None or is_null(root):
        ctx.errors.append(ConfigError(Where(ctx.path, 1), "zone file is empty"))
        return None
    sections = {key: (key_node, value) for key, key_node, value in ctx.mapping(root, "the zone file", ZONE_KEYS)}
    if not isinstance(root, yaml.MappingNode):
        return None

    origin_at: Where | None = Where(ctx.path, 1)
    if "zone" in sections:
        text = ctx.text(sections["zone"][1], "zone")
        origin_at = ctx.at(sections["zone"][0]) if text is not None else None
        if text is not None:
            ctx.origin = absolute(text, ".")
    problem = check_name(ctx.origin)
    if problem or ctx.origin == ".":
        ctx.errors.append(ConfigError(origin_at or Where(ctx.path, 1), f"bad zone name: {problem or 'the root'}"))
        return None
    ctx.origin_at = origin_at

    default_ttl = DEFAULT_TTL
    if "ttl" in sections:
        default_ttl = ctx.convert(sections["ttl"][1], "ttl", parse_ttl) or DEFAULT_TTL

    nameservers = read_nameservers(ctx, sections.get("nameservers"), root)
    soa = read_soa(ctx, sections.get("soa"), nameservers, default_ttl)
    zone_health = read_health(ctx, sections["health"][1], DEFAULT_HEALTH) if "health" in sections else DEFAULT_HEALTH
    networks = read_networks(ctx, sections["networks"][1]) if "networks" in sections else []
    pools = read_pools(ctx, sections["pools"][1], zone_health) if "pools" in sections else {}
    check_networks(ctx, networks, pools)
    records, geos = read_records(ctx, sections["records"][1], pools) if "records" in sections else ({}, {})
    signing = read_dnssec(ctx, *sections["dnssec"]) if "dnssec" in sections else None
    rum_name = read_rum_name(ctx, sections["rum_name"][1], records, geos) if "rum_name" in sections else None

    if soa is None or nameservers is None:
        return None
    zone = build_zone(ctx, default_ttl, soa, nameservers, networks, pools, records, geos)
    if zone is not None and rum_name is not None:
        zone = dataclasses.replace(zone, rum_name=rum_name)
    return zone if zone is None or signing is None else with_keys(zone, signing)


def read_rum_name(ctx: ZoneContext, node: yaml.Node, records: Mapping[str, list[Record]], geo_owners: Iterable[str]) -> str | None:
    """`rum_name: rum`: the name under which "<token>.rum.<zone>" answers with the RUM listener (SPEC §10).
    A name relative to the zone (one or more labels), below the apex; it owns its subtree, so no record may sit under it."""
    name = ctx.name(node, "rum_name")
    if name is None:
        return None
    if name == ctx.origin or not name.endswith("." + ctx.origin):
        ctx.error(node, f"rum_name must be a name below the zone {ctx.origin}, got {name}")
        return None
    clash = sorted(owner for owner in (*records, *geo_owners) if owner == name or owner.endswith("." + name))
    if clash:
        ctx.error(node, f"rum_name {name} answers every name under it, but the zone has records at {clash[0]}")
        return None
    cuts = sorted(
        owner
        for owner, held in records.items()
        if owner != ctx.origin and name.endswith("." + owner) and any(r.rtype == "NS" for r in held)
    )
    if cuts:
        ctx.error(node, f"rum_name {name} is below the delegation {cuts[0]}: the child zone answers there")
        return None
    return name
