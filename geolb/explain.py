"""The answer to one question for one client, and the reasoning, as plain data (for `resolve` and /v1/explain). Pure."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from geolb import model
from geolb.answer import Answer, build_answer
from geolb.dns.lookup import lookup
from geolb.geo.choose import GeoAnswers
from geolb.geo.locate import Locator
from geolb.geo.rank import Decision, choose, rank_regions
from geolb.steer.overlay import describe


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
) -> dict[str, Any]:
    """What `client` (an ECS subnet, or one address) gets for `name`/`qtype`, and why.
    `resolver`: the client is a resolver asking without ECS (its own latency evidence may apply).

    The answer and scope come from the same maps the DNS path reads; the reasoning
    (location, ranking, skips) is worked out the straightforward way beside it.
    """
    qtype = qtype.upper()
    if qtype not in model.RTYPE_CODES:
        raise ExplainError(f"unsupported type {qtype!r}")
    qname = name.strip().lower().rstrip(".") + "."
    found = lookup(zoneset, qname, model.RTYPE_CODES[qtype])
    address = client.network_address
    answer = build_answer(found, address, zoneset, geo, random.Random(), resolver=resolver)
    reasoning = None
    evidence = None
    if answer.choice is not None:
        pool = zoneset.pools[answer.choice.pool]
        location = locator.locate(address)
        ranking = rank_regions(pool, address, location)
        reasoning = choose(pool, address, location, ranking, answer.choice.family, geo.health)
        if pool.steering == "latency":
            place = None if location.latitude is None or location.longitude is None else (location.latitude, location.longitude)
            kind = answer.choice.evidence
            evidence = describe(geo.evidence.get(pool.name), pool, kind, address, location.country, place)
    return {
        "query": {"name": qname, "type": qtype},
        "client": {"address": str(client.network_address), "prefix": client.prefixlen},
        "rcode": model.RCODE_NAMES.get(answer.rcode, str(answer.rcode)),
        "authoritative": answer.aa,
        "ecs_scope": min(answer.ecs_scope, client.prefixlen),
        "answer": _records(answer.answer),
        "authority": _records(answer.authority),
        "additional": _records(answer.additional),
        "geo": _geo(answer, reasoning, geo, evidence),
    }


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
