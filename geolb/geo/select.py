"""Which endpoints of the answering region an answer lists, and in what order (SPEC §3 rule 6). Pure.

The full path and the packet cache both take their orders from here, so the two
can never disagree on what `random` or weight 0 means.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

from geolb import model

MAX_VARIANTS = 120  # every order of up to 5 endpoints is kept ready


def standby_aware(weights: Sequence[int]) -> list[int]:
    """Indices that may answer: weight 0 is standby, used only when every weight is 0."""
    return [i for i, weight in enumerate(weights) if weight > 0] or list(range(len(weights)))


def weighted_indices(weights: Sequence[int], limit: int | None, rng: random.Random) -> list[int]:
    """A weighted random order without replacement (Efraimidis-Spirakis keys u^(1/w)), `limit` long."""
    eligible = standby_aware(weights)
    if len(eligible) > 1:
        eligible.sort(key=lambda i: rng.random() ** (1.0 / (weights[i] or 1)), reverse=True)
    return eligible if limit is None else eligible[:limit]


def weighted_order(endpoints: Sequence[model.Endpoint], limit: int | None, rng: random.Random) -> tuple[model.Endpoint, ...]:
    """The endpoints in weighted random order (see weighted_indices)."""
    return tuple(endpoints[i] for i in weighted_indices([e.weight for e in endpoints], limit, rng))


def every_order(weights: Sequence[int], limit: int | None) -> list[tuple[int, ...]] | None:
    """All the orders a weighted random pick can give, when they are equally likely (equal weights among
    the eligible) and few; a uniform pick among them is then the weighted order. None otherwise."""
    eligible = standby_aware(weights)
    size = len(eligible) if limit is None else min(len(eligible), limit)
    if len({weights[i] for i in eligible}) > 1 or math.perm(len(eligible), size) > MAX_VARIANTS:
        return None
    return list(itertools.permutations(eligible, size))
