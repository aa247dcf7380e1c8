"""The answer to one question for one client, and the reasoning, as plain data (for `resolve` and /v1/explain). Pure."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from typing import Any

from geolb import model
from geolb.answer import Answer, build_answer
from geolb.dns.lookup import RUM_TTL, lookup, rum_answer
from geolb.geo.choose import GeoAnswers, answering_endpoints
from geolb.geo.locate import Locator
from geolb.geo.rank import Decision, Location, RankedRegion, RegionRanking, choose, rank_regions
from geolb.steer.evidence import Figures, PoolEvidence
from geolb.steer.overlay import describe, evidence_figures


class ExplainError(ValueError):
    """A question that cannot be explained: bad name, type or client."""


def parse_client(text: str) -> model.IPNetwork:
    """`IP` or `IP/PREFIX`, as a network (host bits dropped, like an ECS source)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ExplainError(f"client {text!r} is not an IP address or prefix") from None


def explain(
    zoneset: model.ZoneSet,
    geo: GeoAnswers,
    locator: Locator,
    name: str,
    qtype: str,
    client: model.IPNetwork,
    resolver: bool = False,
    rum_addresses: Sequence[model.IPAddress] | None = None,
) -> dict[str, Any]:
    """What `client` (an ECS subnet, or one address) gets for `name`/`qtype`, and why.
    `resolver`: the client is a resolver asking without ECS (its own latency evidence may apply).
    `rum_addresses`: what "<token>.<rum_name>" answers (the server's --rum-address); None: not known here (resolve).

    The answer and scope come from the same maps the DNS path reads; the reasoning
    (location, ranking, skips) is worked out the straightforward way beside it.
    """
    qtype = qtype.upper()
    if qtype not in model.RTYPE_CODES:
        raise ExplainError(f"unsupported type {qtype!r}")
    qname = name.strip().lower().rstrip(".") + "."
    found = lookup(zoneset, qname, model.RTYPE_CODES[qtype])
    note = None
    target = found.rum
    if target is not None:
        found = rum_answer(found, target, rum_addresses or ())
        if not target.token:
            note = f"{target.owner} is the zone's rum name: NODATA, as the server answers it"
        elif rum_addresses is None:
            note = (
                f"{target.owner} is a RUM token name (SPEC §10 resolver discovery): the server answers A/AAAA with its"
                f" --rum-address addresses (or its --rum-listen address), TTL {RUM_TTL}, NODATA for other types;"
                " they are not known here, so the answer is shown without them"
            )
        else:
            shown = ", ".join(str(a) for a in rum_addresses) or "none: NODATA for A and AAAA"
            note = f"{target.owner} is a RUM token name (SPEC §10 resolver discovery): answered with --rum-address ({shown}), TTL {RUM_TTL}"
    address = client.network_address
    answer = build_answer(found, address, zoneset, geo, random.Random(), resolver=resolver)
    reasoning = None
    evidence = None
    if answer.choice is not None:
        pool = zoneset.pools[answer.choice.pool]
        location = locator.locate(address)
        ranking = rank_regions(pool, address, location)
        if pool.steering == "latency":
            kind = answer.choice.evidence
            pool_evidence = geo.evidence.get(pool.name)
            evidence = describe(pool_evidence, pool, kind, address, location.country, location.coordinates)
            found_figures = None
            if pool_evidence is not None:
                found_figures = evidence_figures(pool_evidence, pool, kind, address, location.country, location.coordinates)
            if kind != "distance" and pool_evidence is not None and found_figures is not None:
                _tier, endpoints = answering_endpoints(pool, answer.choice.family, geo.health)
                usable = {region.name for region, chosen in zip(pool.regions, endpoints, strict=True) if chosen}
                ranking = latency_ranking(pool, ranking, location, pool_evidence, found_figures[1], usable)
        reasoning = choose(pool, address, location, ranking, answer.choice.family, geo.health)
    return {
        "query": {"name": qname, "type": qtype},
        "note": note,
        "client": {"address": str(client.network_address), "prefix": client.prefixlen},
        "rcode": model.RCODE_NAMES.get(answer.rcode, str(answer.rcode)),
        "authoritative": answer.aa,
        "ecs_scope": min(answer.ecs_scope, client.prefixlen),
        "answer": _records(answer.answer),
        "authority": _records(answer.authority),
        "additional": _records(answer.additional),
        "geo": _geo(answer, reasoning, geo, evidence),
    }


def latency_ranking(
    pool: model.Pool, ranking: RegionRanking, location: Location, evidence: PoolEvidence, figures: Figures, usable: set[str]
) -> RegionRanking:
    """The order that decided a latency pool's answer (steer/evidence.py, overlay.compose): within each §3 tier the
    covered regions by RTT, the incumbent (the leader, else the first covered by distance) first unless the fastest
    usable one `beats` it, behind any faster region that cannot answer; the uncovered regions after them by
    distance. `networks` regions stay first. Its first region in `usable` is the one compose answers with."""
    rtt = {name: value for name, value in zip(evidence.regions, figures.rtt, strict=True) if value is not None}
    leader = evidence.regions[figures.leader] if 0 <= figures.leader < len(evidence.regions) else None
    index = {region.name: i for i, region in enumerate(pool.regions)}

    def level(ranked: RankedRegion) -> int:
        region = ranked.region
        if ranked.reason.startswith("networks "):
            return -1
        if not location.known:
            return 0  # rule 2c: every region alike
        if location.country is not None and location.country in region.countries:
            return 0
        return 1 if location.continent is not None and location.continent in region.continents else 2

    tiers: dict[int, list[RankedRegion]] = {}
    for ranked in ranking.regions:
        tiers.setdefault(level(ranked), []).append(ranked)
    ordered: list[RankedRegion] = []
    for tier, members in sorted(tiers.items()):
        covered = [r for r in members if r.region.name in rtt]
        if tier < 0 or not covered:
            ordered.extend(members)
            continue
        names = [r.region.name for r in covered]
        incumbent = leader if leader in names else names[0]
        fastest = min((n for n in names if n in usable), key=lambda n: (rtt[n], index[n]), default=None)
        lead = fastest if fastest is not None and pool.latency.beats(rtt[fastest], rtt[incumbent]) else incumbent
        # A region that cannot answer and is faster than the lead goes ahead of it: passed over (skipped), as an
        # operator reads it; the first region able to answer is the same either way.
        ahead = [
            r for r in covered if r.region.name not in usable and (rtt[r.region.name], index[r.region.name]) < (rtt[lead], index[lead])
        ]
        rank = {id(r): (0 if r in ahead else 1 if r.region.name == lead else 2, rtt[r.region.name], index[r.region.name]) for r in covered}
        by_rtt = sorted(covered, key=lambda r: rank[id(r)])
        for ranked in by_rtt:
            name = ranked.region.name
            why = f"{rtt[name]:.0f} ms"
            if name == lead:
                why += ", holds the lead" if lead == incumbent else f", beats {incumbent} ({rtt[incumbent]:.0f} ms) by the margin"
            ordered.append(RankedRegion(ranked.region, why, ranked.distance_km))
        ordered.extend(RankedRegion(r.region, f"not measured: {r.reason}", r.distance_km) for r in members if r.region.name not in rtt)
    return RegionRanking(f"latency within {ranking.rule} tiers", tuple(ordered), ranking.scope)


def _records(rrsets: tuple[model.RRset, ...]) -> list[dict[str, Any]]:
    return [
        {"name": rrset.name, "type": rrset.rtype, "ttl": rrset.ttl, "data": rdata_text(rdata)} for rrset in rrsets for rdata in rrset.rdatas
    ]


def rdata_text(rdata: model.Rdata) -> str:
    """Presentation format, as dig prints it."""
    match rdata:
        case model.TXT(strings):
            return " ".join('"' + s.decode("utf-8", "replace").replace('"', '\\"') + '"' for s in strings)
        case model.CAA(flags, tag, value):
            return f'{flags} {tag} "{value}"'
        case model.HINFO(cpu, os):
            return f'"{cpu}" "{os}"'
        case model.Opaque(data):
            return f"\\# {len(data)} {data.hex()}"  # RFC 3597's generic form
    return " ".join(str(getattr(rdata, name)) for name in rdata.__dataclass_fields__)


def _geo(answer: Answer, decision: Decision | None, geo: GeoAnswers, evidence: dict[str, object] | None) -> dict[str, Any] | None:
    choice = answer.choice
    if choice is None or decision is None:
        return None
    location = decision.location
    health = geo.health
    selection = choice.region.selection if choice.region is not None else None
    return {
        "pool": choice.pool,
        "family": f"IPv{choice.family}",
        "client": str(decision.client),
        "location": {
            "source": location.source,
            "network": str(location.network),
            "country": location.country,
            "continent": location.continent,
            "latitude": location.latitude,
            "longitude": location.longitude,
        },
        "rule": decision.ranking.rule,
        # latency steering (SPEC §10): the evidence that ordered the regions ({"kind", "text", "rtt_ms"}); None: `steering: geo`
        "evidence": evidence,
        "ranking": [
            {
                "region": ranked.region.name,
                "reason": ranked.reason,
                "distance_km": None if ranked.distance_km is None else round(ranked.distance_km, 1),
            }
            for ranked in decision.ranking.regions
        ],
        "skipped": [{"region": region, "reason": why} for region, why in decision.skipped],
        "region": choice.region.name if choice.region else None,
        "failed_open": choice.failed_open,
        "tier": choice.tier,
        "selection": None
        if selection is None
        else {
            "policy": selection.policy,
            "hash_prefix": selection.prefix(decision.client.version) if selection.policy == "consistent" else None,
        },
        "candidates": [str(e.address) for e in choice.candidates],
        "endpoints": [
            {
                "address": str(e.address),
                "weight": e.weight,
                "up": health.is_up(choice.pool, region.name, e),
                "busy": health.is_busy(choice.pool, region.name, e),
                "load": health.load(choice.pool, region.name, e),
            }
            for region in ([choice.region] if choice.region is not None else [])
            for e in region.endpoints
            if e.address.version == choice.family
        ],
    }


def render_text(report: dict[str, Any]) -> str:
    """`report` for a terminal, dig-like."""
    query, client = report["query"], report["client"]
    lines = [
        f";; {query['name']} {query['type']} for client {client['address']}/{client['prefix']}",
        f";; status {report['rcode']}, ECS scope /{report['ecs_scope']}",
    ]
    if report.get("note"):
        lines.append(f";; note: {report['note']}")
    for section in ("answer", "authority", "additional"):
        if report[section]:
            lines.append(f";; {section.upper()}")
            lines.extend(f"{r['name']}\t{r['ttl']}\tIN\t{r['type']}\t{r['data']}" for r in report[section])
    geo = report["geo"]
    if geo is not None:
        where = geo["location"]
        place = ", ".join(
            str(part)
            for part in (
                where["country"],
                where["continent"],
                f"{where['latitude']}, {where['longitude']}" if where["latitude"] is not None else None,
            )
            if part
        )
        lines.append(f";; GEO pool {geo['pool']} ({geo['family']}); location: {place or 'unknown'} [{where['source']}, {where['network']}]")
        lines.append(f";; regions by {geo['rule']}:")
        if geo["evidence"] is not None:
            lines.append(f";; latency evidence: {geo['evidence']['text']}")
        lines.extend(f";;   {i}. {r['region']} ({r['reason']})" for i, r in enumerate(geo["ranking"], 1))
        lines.extend(f";; skipped {s['region']}: {s['reason']}" for s in geo["skipped"])
        if geo["region"] is None:
            lines.append(f";; no {geo['family']} endpoint in the pool: NODATA")
        else:
            notes = {
                "fail open": " (fail open: no healthy endpoint anywhere)",
                "busy": " (every endpoint up is busy: answering busy ones before failing open)",
            }
            selection = geo["selection"]
            how = selection["policy"] + (f", hash /{selection['hash_prefix']}" if selection["hash_prefix"] is not None else "")
            lines.append(f";; answered from {geo['region']}{notes.get(geo['tier'], '')}, selection {how}")
            for e in geo["endpoints"]:
                state = "up" if e["up"] else "down"
                if e["busy"]:
                    state += ", busy"
                lines.append(f";;   {e['address']} weight {e['weight']} load {e['load']:.2f} ({state})")
    return "\n".join(lines)
