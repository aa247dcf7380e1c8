"""A DNS response's content as geolb builds it: rcode, AA, sections of RRsets, ECS scope. Knows nothing of geo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from geolb import model


class QueryKey(NamedTuple):
    """What answers are counted by (geolb_dns_queries_total): the zone ("" when refused), type and rcode."""

    zone: str
    qtype: int
    rcode: int


@dataclass(frozen=True)
class Reply:
    """What `wire.to_wire` encodes (answer.Answer adds how a GEO part was chosen)."""

    rcode: int
    aa: bool
    answer: tuple[model.RRset, ...] = ()
    authority: tuple[model.RRset, ...] = ()
    additional: tuple[model.RRset, ...] = ()
    ecs_scope: int = 0  # SCOPE PREFIX-LENGTH to echo when the query carried ECS
    glue_required: bool = False  # a referral: its glue may not be dropped to fit
