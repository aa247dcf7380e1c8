"""Which endpoints of the answering region an answer lists, and in what order (SPEC §3 rules 6-7). Pure but for
the round-robin position, which a process keeps per region and family.

The full path and the packet cache both take their orders from an `Order` made
here, so the two can never disagree on what `random`, `round-robin`, `consistent`,
weight 0 or a load report means.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from geolb import model

MAX_VARIANTS = 120  # every order of up to 5 endpoints is kept ready
MAX_CYCLE = 4096  # places in a round-robin cycle; longer weight sums are scaled down to fit
LOAD_STEPS = 100  # weights scale by 1 - load in 1 % steps, at least one step (SPEC §3 rule 7: "at least 1 %")
MASK64 = (1 << 64) - 1


def standby_aware(weights: Sequence[float]) -> list[int]:
    """Indices that may answer: weight 0 is standby, used only when every weight is 0."""
    return [i for i, weight in enumerate(weights) if weight > 0] or list(range(len(weights)))


def weighted_indices(weights: Sequence[float], limit: int | None, rng: random.Random) -> list[int]:
    """A weighted random order without replacement (Efraimidis-Spirakis keys u^(1/w)), `limit` long."""
    eligible = standby_aware(weights)
    if len(eligible) > 1:
        eligible.sort(key=lambda i: rng.random() ** (1.0 / (weights[i] or 1)), reverse=True)
    return eligible if limit is None else eligible[:limit]


def every_order(weights: Sequence[float], limit: int | None) -> list[tuple[int, ...]] | None:
    """All the orders a weighted random pick can give, when they are equally likely (equal weights among
    the eligible) and few; a uniform pick among them is then the weighted order. None otherwise."""
    eligible = standby_aware(weights)
    size = len(eligible) if limit is None else min(len(eligible), limit)
    if len({weights[i] for i in eligible}) > 1 or math.perm(len(eligible), size) > MAX_VARIANTS:
        return None
    return list(itertools.permutations(eligible, size))


def load_scaled(weights: Sequence[int], loads: Sequence[float]) -> tuple[int, ...]:
    """Weights scaled by 1 - load in 1 % steps (at least one step), reduced by their common divisor.

    Without load reports the weights come back as they were (x100, then /100).
    """
    if not any(loads):
        return tuple(weights)
    scaled = [w * max(1, round(LOAD_STEPS * (1.0 - load))) for w, load in zip(weights, loads, strict=True)]
    divisor = math.gcd(*scaled) or 1
    return tuple(w // divisor for w in scaled)


def smooth_cycle(weights: Sequence[int]) -> tuple[int, ...]:
    """Smooth weighted round robin (nginx's): a cycle in which index i takes weights[i] places, spread out.

    Standby endpoints (weight 0) join only when every weight is 0 (then once each).
    Weight sums above MAX_CYCLE are scaled down to fit, each eligible endpoint keeping a place.
    """
    eligible = standby_aware(weights)
    shares = [weights[i] or 1 for i in eligible]
    total = sum(shares)
    if total > MAX_CYCLE:
        shares = [max(1, round(share * MAX_CYCLE / total)) for share in shares]
        total = sum(shares)
    current = [0] * len(shares)
    cycle = []
    for _ in range(total):
        for j, share in enumerate(shares):
            current[j] += share
        best = max(range(len(shares)), key=current.__getitem__)  # the first of equals: file order breaks ties
        current[best] -= total
        cycle.append(eligible[best])
    return tuple(cycle)


def cycle_order(cycle: Sequence[int], position: int, size: int) -> tuple[int, ...]:
    """The first `size` distinct indices of the cycle read from `position` on (wrapping)."""
    order: list[int] = []
    length = len(cycle)
    for step in range(length):
        index = cycle[(position + step) % length]
        if index not in order:
            order.append(index)
            if len(order) == size:
                break
    return tuple(order)


HASH_SEED = 0x9E3779B97F4A7C15  # any fixed constant; changing it would move every consistent client


def network_hash(address: int, version: int, prefix: int) -> int:
    """A 64-bit hash of the client network (the address cut to `prefix`): integer arithmetic only, so the
    same in every process, Python version and machine (Python's hash() is salted per process)."""
    width = 32 if version == 4 else 128
    network = (address >> (width - prefix)) << (width - prefix)
    if version == 4:
        return mix64(network ^ _hash_tag(version, prefix))
    return mix64((network & MASK64) ^ mix64((network >> 64) ^ _hash_tag(version, prefix)))


@functools.cache
def _hash_tag(version: int, prefix: int) -> int:
    return mix64(HASH_SEED ^ (version << 8 | prefix))


def endpoint_salt(address: model.IPAddress) -> int:
    """A 64-bit constant per endpoint address that mixes with a client's hash (computed once per snapshot)."""
    return int.from_bytes(hashlib.blake2b(address.packed, digest_size=8, person=b"geolb-endpoint").digest(), "big")


def mix64(value: int) -> int:
    """SplitMix64's finalizer: every input bit flips about half the output bits."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & MASK64
    return value ^ (value >> 31)


def rendezvous_order(
    weights: Sequence[int],
    salts: Sequence[int],
    client: int,
    size: int,
    eligible: Sequence[int] | None = None,
    equal: bool | None = None,
) -> tuple[int, ...]:
    """Weighted rendezvous hashing: indices by score -w / ln(u), u uniform in (0, 1) from (client, endpoint).

    An endpoint's score for a client never depends on the other endpoints, so
    removing one moves only the clients whose first choice it was. With equal
    weights the score orders as u does, so the logarithms are skipped (same order).
    """
    if eligible is None:
        eligible = standby_aware(weights)
    if len(eligible) == 1:
        return (eligible[0],)
    if equal if equal is not None else len({weights[i] for i in eligible}) == 1:
        if size == 1:
            return (max(eligible, key=lambda i: (mix64(client ^ salts[i]) >> 11, i)),)
        drawn = sorted(((mix64(client ^ salts[i]) >> 11, i) for i in eligible), reverse=True)
        return tuple(i for _u, i in drawn[:size])
    scored = []
    for i in eligible:
        u = ((mix64(client ^ salts[i]) >> 11) + 0.5) / 9007199254740992.0  # 53 bits, never 0 or 1
        scored.append((-(weights[i] or 1) / math.log(u), i))
    scored.sort(reverse=True)
    return tuple(i for _score, i in scored[:size])


@dataclass
class Rotation:
    """A round-robin position: where the next answer starts in its region's cycle. One per process."""

    position: int = 0

    def advance(self) -> int:
        position = self.position
        self.position = position + 1
        return position


@dataclass(frozen=True)
class Order:
    """How one region orders its candidates for one family under one HealthView (SPEC §3 rules 6-7).

    `weights` are the ones answers use: load-scaled under random and round-robin,
    as configured under consistent (load moves nobody's hash).
    """

    policy: str
    weights: tuple[int, ...]
    prefixes: tuple[int, int] = (32, 128)  # consistent: bits of an IPv4 / IPv6 client address hashed
    salts: tuple[int, ...] = ()  # consistent
    rotation: Rotation | None = None  # round-robin
    cycle: tuple[int, ...] = ()  # round-robin
    eligible: tuple[int, ...] = field(init=False)  # the indices that may answer (standby only when all are)
    equal: bool = field(init=False)  # every eligible weight the same

    def __post_init__(self) -> None:
        eligible = tuple(standby_aware(self.weights))
        object.__setattr__(self, "eligible", eligible)
        object.__setattr__(self, "equal", len({self.weights[i] for i in eligible}) == 1)

    def scope_floor(self, version: int) -> int:
        """The shortest ECS scope that is true for the order, for a client of this IP version: a consistent
        pick among several endpoints differs from one hashed network to the next, so it holds for the
        hash prefix at most."""
        if self.policy != "consistent" or len(self.eligible) < 2:
            return 0
        return self.prefixes[0] if version == 4 else self.prefixes[1]

    def size(self, limit: int | None) -> int:
        """How many endpoints an answer lists under `max_answers` = `limit`."""
        count = len(self.eligible)
        return count if limit is None else min(count, limit)

    def indices(self, address: int, version: int, limit: int | None, rng: random.Random) -> tuple[int, ...]:
        """The candidates' indices for one answer (`limit` = max_answers) to a client at `address`."""
        size = self.size(limit)
        if self.policy == "consistent":
            prefix = self.prefixes[0] if version == 4 else self.prefixes[1]  # the client's version, not the answer's
            if len(self.eligible) == 1:
                return self.eligible  # nothing to hash
            return rendezvous_order(self.weights, self.salts, network_hash(address, version, prefix), size, self.eligible, self.equal)
        if self.policy == "round-robin":
            assert self.rotation is not None
            return cycle_order(self.cycle, self.rotation.advance() % len(self.cycle), size)
        return tuple(weighted_indices(self.weights, limit, rng))


def region_order(
    region: model.Region,
    candidates: Sequence[model.Endpoint],
    loads: Sequence[float],
    rotation: Rotation | None,
) -> Order:
    """The Order for a region's candidates (their loads in the same order)."""
    selection = region.selection
    configured = tuple(e.weight for e in candidates)
    if selection.policy == "consistent":
        salts = tuple(endpoint_salt(e.address) for e in candidates)
        return Order("consistent", configured, prefixes=selection.hash_prefix, salts=salts)
    weights = load_scaled(configured, loads)
    if selection.policy == "round-robin":
        return Order("round-robin", weights, rotation=rotation or Rotation(), cycle=smooth_cycle(weights))
    return Order("random", weights)
