"""Lookup + client -> Answer: fills in GEO records; shared by the DNS path, /v1/explain and `resolve`. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass

from geolb import model
from geolb.dns.lookup import Lookup
from geolb.dns.message import Reply
from geolb.geo.choose import GeoAnswers, GeoChoice
from geolb.model import NOERROR


@dataclass(frozen=True)
class Answer(Reply):
    """A reply, plus how its GEO part was chosen (for stats, the packet cache and /v1/explain)."""

    choice: GeoChoice | None = None
    max_answers: int | None = None  # of the GEO record, when there is one


def build_answer(
    found: Lookup, client: model.IPAddress, zoneset: model.ZoneSet, geo: GeoAnswers, rng: random.Random, resolver: bool = False
) -> Answer:
    """The full answer for a lookup; a GEO record gets the endpoints chosen for `client`.
    `resolver`: the client is the query's source (it sent no ECS), so a latency pool may use resolver evidence."""
    target = found.geo
    if target is None:
        return Answer(found.rcode, found.aa, found.answer, found.authority, found.additional, 0, found.referral)
    pool = zoneset.pools[target.record.pool]
    choice = geo.choose(pool, 4 if target.rtype == "A" else 6, client, resolver)
    if choice.region is None:
        # No endpoint of this family anywhere in the pool: NODATA, whoever asks.
        return Answer(NOERROR, True, found.answer, (target.negative_soa,), choice=choice)
    rdatas = tuple(model.address_rdata(e.address) for e in choice.endpoints(client, target.record.max_answers, rng))
    rrset = model.RRset(target.owner, target.rtype, target.record.ttl, rdatas)
    return Answer(
        NOERROR,
        True,
        (*found.answer, rrset),
        found.authority,
        found.additional,
        choice.scope,
        choice=choice,
        max_answers=target.record.max_answers,
    )
