"""A zone's records as RRsets, checked by the rules that span records: CNAME alone, delegations, glue, GEO placement."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

import yaml

from geolb import model
from geolb.config.context import ZoneContext
from geolb.config.pools import networks_for
from geolb.config.records import Record
from geolb.dns.names import is_at_or_below, parent
from geolb.errors import ConfigError, Where


def build_zone(
    ctx: ZoneContext,
    default_ttl: int,
    soa: model.RRset,
    nameservers: Mapping[str, tuple[list[model.IPAddress], Where]],
    networks: list[tuple[model.NetworkRule, yaml.Node]],
    pools: Mapping[str, model.Pool],
    records: dict[str, list[Record]],
    geos: dict[str, model.GeoRecord],
) -> model.Zone | None:
    origin = ctx.origin
    for ns, (addresses, at) in nameservers.items():
        for address in addresses:
            records.setdefault(ns, []).append(Record(model.address_rtype(address), model.address_rdata(address), default_ttl, at))
    if origin in records and any(r.rtype == "NS" for r in records[origin]):
        first = next(r for r in records[origin] if r.rtype == "NS")
        ctx.errors.append(ConfigError(first.where, "the apex NS records come from the nameservers: section"))

    rrsets: dict[str, dict[str, model.RRset]] = {}
    for owner, owned in records.items():
        by_type: dict[str, list[Record]] = {}
        for record in owned:
            by_type.setdefault(record.rtype, []).append(record)
        for rtype, group in by_type.items():
            explicit = {r.ttl for r in group if r.ttl >= 0}
            if len(explicit) > 1:
                ctx.errors.append(
                    ConfigError(group[-1].where, f"records of one RRset ({owner} {rtype}) must share one TTL, got {sorted(explicit)}")
                )
            ttl = min(explicit) if explicit else default_ttl
            unique: list[model.Rdata] = []
            for record in group:
                if record.rdata in unique:
                    ctx.errors.append(ConfigError(record.where, f"duplicate {rtype} record at {owner}"))
                else:
                    unique.append(record.rdata)
            rrsets.setdefault(owner, {})[rtype] = model.RRset(owner, rtype, ttl, tuple(unique))

    delegations = frozenset(owner for owner, types in rrsets.items() if "NS" in types and owner != origin)
    for owner, types in rrsets.items():
        first_where = records[owner][0].where
        if "CNAME" in types:
            if owner == origin:
                ctx.errors.append(ConfigError(first_where, "a CNAME cannot stand at the zone apex (SOA and NS live there)"))
            if len(types["CNAME"].rdatas) > 1:
                ctx.errors.append(ConfigError(first_where, f"{owner} has more than one CNAME"))
            if len(types) > 1 or owner in geos:
                others = sorted(set(types) - {"CNAME"} | ({"GEO"} if owner in geos else set()))
                ctx.errors.append(ConfigError(first_where, f"CNAME at {owner} cannot have other data beside it ({', '.join(others)})"))
        if owner in geos and ({"A", "AAAA"} & set(types)):
            ctx.errors.append(
                ConfigError(
                    geos[owner].where,
                    f"GEO at {owner} answers A and AAAA; remove the static {'/'.join(sorted({'A', 'AAAA'} & set(types)))}",
                )
            )
        if owner in delegations and set(types) - {"NS"} - ({"A", "AAAA"} if owner in nameservers else set()):
            ctx.errors.append(ConfigError(first_where, f"{owner} is delegated (NS); only NS can stand at a delegation point"))
        cut = cut_above(owner, delegations, origin)
        if cut is not None and set(types) - {"A", "AAAA"}:
            ctx.errors.append(ConfigError(first_where, f"{owner} is below the delegation {cut}; only glue (A/AAAA) may stand there"))
    for owner, geo in geos.items():
        if geo.pool not in pools:
            continue  # may be a pool of another zone; the zone set checks it exists
        cut = cut_above(owner, delegations, origin) or (owner if owner in delegations else None)
        if cut is not None:
            ctx.errors.append(ConfigError(geo.where, f"GEO at {owner} is hidden by the delegation {cut}"))
    for ns, (addresses, at) in nameservers.items():
        if is_at_or_below(ns, origin) and not addresses and not ({"A", "AAAA"} & set(rrsets.get(ns, {}))):
            ctx.errors.append(ConfigError(at, f"nameserver {ns} is inside the zone and needs addresses (glue)"))
    for owner, types in rrsets.items():
        if owner in delegations:
            for rdata in types["NS"].rdatas:
                assert isinstance(rdata, model.NS)
                if is_at_or_below(rdata.target, owner) and not ({"A", "AAAA"} & set(rrsets.get(rdata.target, {}))):
                    ctx.errors.append(
                        ConfigError(
                            records[owner][0].where,
                            f"delegation {owner} names {rdata.target}, which is below it and needs glue (A/AAAA records)",
                        )
                    )
    if ctx.errors:
        return None

    ns_rrset = model.RRset(origin, "NS", default_ttl, tuple(model.NS(ns) for ns in nameservers))
    nodes: dict[str, model.Node] = {}
    for owner in set(rrsets) | set(geos) | {origin}:
        node_rrsets = dict(rrsets.get(owner, {}))
        if owner == origin:
            node_rrsets["SOA"] = soa
            node_rrsets["NS"] = ns_rrset
        nodes[owner] = model.Node(owner, MappingProxyType(node_rrsets), geos.get(owner))
    ents: set[str] = set()
    for owner in nodes:
        name = owner
        while name != origin:
            name = parent(name)
            if name not in nodes:
                ents.add(name)
    pool_networks = {name: networks_for(pool, [rule for rule, _ in networks]) for name, pool in pools.items()}
    final_pools = {name: dataclasses.replace(pool, networks=pool_networks[name]) for name, pool in pools.items()}
    return model.Zone(
        name=origin,
        file=ctx.path,
        soa=soa,
        ns=ns_rrset,
        nodes=MappingProxyType(nodes),
        empty_nonterminals=frozenset(ents),
        delegations=delegations,
        pools=MappingProxyType(final_pools),
        digest=ctx.digest,
    )


def cut_above(owner: str, delegations: frozenset[str], origin: str) -> str | None:
    """The delegation point strictly above `owner`, if any."""
    name = owner
    while name != origin and name != ".":
        name = parent(name)
        if name in delegations:
            return name
    return None
