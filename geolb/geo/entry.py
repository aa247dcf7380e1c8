"""GEO answers in the packet cache: every region's records ready, the region picked per query from the AnswerMap,
the order from the region's selection (geo/select.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from geolb.dns.cache import BYTE, ECS_HEAD, ecs_echo
from geolb.dns.message import QueryKey
from geolb.geo.choose import PoolFamily
from geolb.geo.select import Order, Rotation, cycle_order, every_order

MAX_CYCLE_VARIANTS = 256  # round-robin cycles up to this long keep every position's answer ready
MAX_MEMO = 1024  # consistent: answers kept per distinct order


class GeoEntry:
    """A GEO answer for any client: per region, its records in every order (or per query)."""

    __slots__ = (
        "_lookup",
        "_lookup4",
        "_lookup_peer",
        "_peer_address",
        "choices",
        "counts",
        "hits",
        "names",
        "opt_head",
        "pool",
        "regions",
        "stats",
        "tail_plain",
    )

    def __init__(
        self,
        choices: PoolFamily,
        regions: Sequence[RegionRecords | None],
        opt_head: bytes | None,
        stats: QueryKey,
        peer_address: Callable[[str], tuple[int, int]],
    ) -> None:
        self.choices = choices
        # By answer: the region index, repeated per evidence kind for a latency pool (kind * width + region),
        # so that the region and the count come from the one lookup. None for a region that never answers this family.
        regions = list(regions) * choices.kinds
        self.regions = regions
        self.opt_head = opt_head
        self.tail_plain = b"" if opt_head is None else opt_head + b"\x00\x00"
        self.stats = stats
        self.pool = choices.pool.name
        self.names = tuple(r.name for r in choices.pool.regions)
        self.counts = [0] * len(regions)  # answers per region (and evidence kind) since the last fold
        self.hits = 0
        self._peer_address = peer_address
        assert choices.answers is not None
        self._lookup = choices.answers.lookup
        self._lookup4 = choices.answers.lookup4
        self._lookup_peer = self._lookup if not any(choices.resolvers) else self._lookup_resolver

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes:
        source = query[ecs_at + 2] if ecs_at >= 0 else 0
        if source:
            end = ecs_at + 4 + ((source + 7) >> 3)
            value = int.from_bytes(query[ecs_at + 4 : end], "big")
            if query[ecs_at + 1] == 1:
                version, address = 4, value << (32 - 8 * (end - ecs_at - 4))
                index, scope = self._lookup4(address)
            else:
                version, address = 6, value << (128 - 8 * (end - ecs_at - 4))
                index, scope = self._lookup(address, 6)
            records = self.regions[index]
            assert records is not None
            floor = records.scope_floor[version]
            if scope < floor:
                scope = floor
            # The OPT RDLENGTH and ECS option: the query's, with our SCOPE PREFIX-LENGTH (see ecs_echo).
            echo = b"".join(
                (ECS_HEAD[source], query[ecs_at : ecs_at + 3], BYTE[scope if scope < source else source], query[ecs_at + 4 : end])
            )
        else:
            version, address = self._peer_address(peer)
            index, _scope = self._lookup_peer(address, version)
            records = self.regions[index]
            assert records is not None
            echo = b"\x00\x00" if ecs_at < 0 else ecs_echo(query, ecs_at, 0)
        self.counts[index] += 1
        head, answers = records.pick(address, version, rng)
        if self.opt_head is None:
            return b"".join((query[:2], head, query[12:qend], answers))
        return b"".join((query[:2], head, query[12:qend], answers, self.opt_head, echo))

    def _lookup_resolver(self, address: int, version: int) -> tuple[int, int]:
        """A query without ECS to a latency pool with resolver evidence: the resolver's answer, else the address's."""
        found = self.choices.resolvers[version == 6].get(address)
        return self._lookup(address, version) if found is None else (found, 0)

    def pinned(self, query: bytes, qend: int, ecs_at: int, rng: random.Random) -> PinnedEntry | None:
        """A ready entry for these exact query bytes (ECS address and all), when its region's orders allow one."""
        source = query[ecs_at + 2]
        size = (source + 7) >> 3
        value = int.from_bytes(query[ecs_at + 4 : ecs_at + 4 + size], "big")
        version = 4 if query[ecs_at + 1] == 1 else 6
        address = value << ((32 if version == 4 else 128) - 8 * size)
        index, scope = self.choices.choose(address, version)
        records = self.regions[index]
        if records is None or self.opt_head is None:
            return None
        if records.order.policy == "consistent":
            variants: Sequence[tuple[bytes, bytes]] = (records.pick(address, version, rng),)  # its one order
        elif records.variants:
            variants = records.variants
        else:
            return None
        echo = self.opt_head + ecs_echo(query, ecs_at, scope if scope < source else source)
        rotation = records.order.rotation
        return PinnedEntry(variants[0][0], tuple(answers + echo for _head, answers in variants), self.counts, index, rotation)


class PinnedEntry:
    """One GEO entry's answer for one exact query (its ECS address fixed): ready packets, counted on the parent.

    `tails` are the answers a pick chooses from: uniformly (random), by the region's
    round-robin position, or just one (consistent, or a single order).
    """

    __slots__ = ("counts", "head", "index", "rotation", "tails")

    def __init__(self, head: bytes, tails: tuple[bytes, ...], counts: list[int], index: int, rotation: Rotation | None) -> None:
        self.head = head
        self.tails = tails
        self.counts = counts
        self.index = index
        self.rotation = rotation

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes:
        self.counts[self.index] += 1
        tails = self.tails
        if len(tails) == 1:
            tail = tails[0]
        elif self.rotation is not None:
            tail = tails[self.rotation.advance() % len(tails)]
        else:
            tail = tails[int(rng.random() * len(tails))]
        return query[:2] + self.head + query[12:qend] + tail


class RegionRecords:
    """One region's answer records and its Order: answers ready when there are few, else put together per query.

    `variants` hold every answer a pick can give when they are few: all the orders
    of equal weights (random, picked uniformly), or one per place in a round-robin
    cycle (picked by the region's position). Consistent orders are memoized as met.
    """

    __slots__ = ("_memo", "_tail", "flags", "max_answers", "order", "records", "scope_floor", "signatures", "variants")

    def __init__(
        self,
        flags: bytes,
        arcount: int,
        records: Sequence[bytes],
        order: Order,
        max_answers: int | None,
        signatures: Callable[[Sequence[int]], tuple[int, bytes]] | None = None,
    ) -> None:
        self.flags = flags
        self.signatures = signatures  # signed zones: (count, RRSIG records) for the records at these indices
        self.records = tuple(records)
        self.order = order
        self.max_answers = max_answers
        self.scope_floor = {4: order.scope_floor(4), 6: order.scope_floor(6)}
        self._tail = b"\x00\x00" + arcount.to_bytes(2, "big")
        self._memo: dict[tuple[int, ...], tuple[bytes, bytes]] = {}
        self.variants: tuple[tuple[bytes, bytes], ...] = ()
        if order.policy == "random":
            orders = every_order(order.weights, max_answers)
            if orders is not None:
                self.variants = tuple(self._packet(o) for o in orders)
        elif order.policy == "round-robin" and len(order.cycle) <= MAX_CYCLE_VARIANTS:
            size = order.size(max_answers)
            self.variants = tuple(self._packet(cycle_order(order.cycle, p, size)) for p in range(len(order.cycle)))

    def _packet(self, indices: Sequence[int]) -> tuple[bytes, bytes]:
        """(header from the flags on, the answer records) for one order; signed, the RRSIG of their set follows."""
        count, signatures = (0, b"") if self.signatures is None else self.signatures(indices)
        head = self.flags + b"\x00\x01" + (len(indices) + count).to_bytes(2, "big") + self._tail
        return head, b"".join(self.records[i] for i in indices) + signatures

    def pick(self, address: int, version: int, rng: random.Random) -> tuple[bytes, bytes]:
        variants = self.variants
        order = self.order
        if variants:
            if order.rotation is not None:
                return variants[order.rotation.advance() % len(variants)]
            return variants[0] if len(variants) == 1 else variants[int(rng.random() * len(variants))]
        indices = order.indices(address, version, self.max_answers, rng)
        if order.policy != "consistent":
            return self._packet(indices)
        known = self._memo.get(indices)
        if known is None:
            if len(self._memo) >= MAX_MEMO:
                self._memo.clear()
            known = self._memo[indices] = self._packet(indices)
        return known
