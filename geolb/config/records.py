"""Records: static RRs from `value:` and GEO records naming a pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from geolb import model
from geolb.config.context import ZoneContext
from geolb.config.marks import scalar_text
from geolb.config.values import parse_int, parse_rdata, parse_ttl
from geolb.dns.names import absolute, check_name, is_at_or_below
from geolb.errors import Where

RECORD_KEYS = ("type", "value", "ttl", "pool", "max_answers")
STATIC_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR")
DEFAULT_GEO_TTL = 30


@dataclass
class Record:
    """One static record as read, before RRsets are formed."""

    rtype: str
    rdata: model.Rdata
    ttl: int  # -1: not set, the zone default applies
    where: Where


def read_records(
    ctx: ZoneContext, node: yaml.Node, pools: Mapping[str, model.Pool]
) -> tuple[dict[str, list[Record]], dict[str, model.GeoRecord]]:
    records: dict[str, list[Record]] = {}
    geos: dict[str, model.GeoRecord] = {}
    for key, key_node, value in ctx.entries(node, "records"):
        owner = absolute(key, ctx.origin)
        problem = check_name(owner, wildcard_ok=True)
        if problem:
            ctx.error(key_node, problem)
            continue
        if not is_at_or_below(owner, ctx.origin):
            ctx.error(key_node, f"{owner} is outside the zone {ctx.origin}")
            continue
        items = [value] if isinstance(value, yaml.MappingNode) else ctx.items(value, f"records of {key}")
        for item in items:
            read_record(ctx, owner, item, records, geos)
    return records, geos


def read_record(ctx: ZoneContext, owner: str, node: yaml.Node, records: dict[str, list[Record]], geos: dict[str, model.GeoRecord]) -> None:
    fields = {key: v for key, _k, v in ctx.mapping(node, f"record of {owner}", RECORD_KEYS)}
    if not isinstance(node, yaml.MappingNode):
        return
    rtype_text = scalar_text(fields["type"]) if "type" in fields else None
    if rtype_text is None:
        ctx.error(node, f"record of {owner} needs a type")
        return
    rtype = rtype_text.strip().upper()
    ttl_node = fields.get("ttl")
    if rtype == "GEO":
        for key in ("value",):
            if key in fields:
                ctx.error(fields[key], "GEO records take pool:, not value:")
        if "pool" not in fields:
            ctx.error(node, f"GEO record of {owner} needs a pool")
            return
        pool = scalar_text(fields["pool"]) or ""
        ctx.geo_refs.append((pool, ctx.at(fields["pool"])))
        ttl = ctx.convert(ttl_node, "ttl", parse_ttl) if ttl_node is not None else DEFAULT_GEO_TTL
        max_answers = None
        if "max_answers" in fields:
            max_answers = ctx.convert(fields["max_answers"], "max_answers", lambda v: parse_int(v, "max_answers", 1, 64))
        if owner in geos:
            ctx.error(node, f"{owner} already has a GEO record (line {geos[owner].where.line})")
            return
        if ttl is not None:
            geos[owner] = model.GeoRecord(pool, ttl, max_answers, ctx.at(node))
        return
    for key in ("pool", "max_answers"):
        if key in fields:
            ctx.error(fields[key], f"{key}: only applies to GEO records")
    if rtype == "SOA":
        ctx.error(node, "the SOA record comes from the soa: section")
        return
    if rtype not in STATIC_TYPES:
        ctx.error(fields["type"], f"unsupported record type '{rtype_text}' (supported: {', '.join(STATIC_TYPES)}, GEO)")
        return
    if "value" not in fields:
        ctx.error(node, f"{rtype} record of {owner} needs a value")
        return
    value_node = fields["value"]
    raw: object
    if isinstance(value_node, yaml.SequenceNode):
        raw = [scalar_text(item) for item in value_node.value]
    else:
        raw = scalar_text(value_node) if rtype not in ("TXT",) else (scalar_text(value_node) or "")
    try:
        rdata = parse_rdata(rtype, raw, ctx.origin)
    except ValueError as exc:
        ctx.error(value_node, str(exc))
        return
    ttl = ctx.convert(ttl_node, "ttl", parse_ttl) if ttl_node is not None else None
    if ttl_node is not None and ttl is None:
        return
    records.setdefault(owner, []).append(Record(rtype, rdata, ttl if ttl is not None else -1, ctx.at(node)))
