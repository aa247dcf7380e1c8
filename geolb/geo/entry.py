"""GEO answers in the packet cache: every region's records ready, the region picked per query from the AnswerMap."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from geolb.dns.cache import BYTE, ECS_HEAD, ecs_echo
from geolb.dns.message import QueryKey
from geolb.geo.choose import PoolFamily
from geolb.geo.select import every_order, weighted_indices


class GeoEntry:
    """A GEO answer for any client: per region, its records in every order (or per query, weighted)."""

    __slots__ = (
        "_lookup",
        "_lookup4",
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
        self.regions = regions  # by region index; None for a region that never answers this family
        self.opt_head = opt_head
        self.tail_plain = b"" if opt_head is None else opt_head + b"\x00\x00"
        self.stats = stats
        self.pool = choices.pool.name
        self.names = tuple(r.name for r in choices.pool.regions)
        self.counts = [0] * len(self.names)  # answers per region since the last fold
        self.hits = 0
        self._peer_address = peer_address
        assert choices.answers is not None
        self._lookup = choices.answers.lookup
        self._lookup4 = choices.answers.lookup4

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes:
        source = query[ecs_at + 2] if ecs_at >= 0 else 0
        if source:
            end = ecs_at + 4 + ((source + 7) >> 3)
            value = int.from_bytes(query[ecs_at + 4 : end], "big")
            if query[ecs_at + 1] == 1:
                index, scope = self._lookup4(value << (32 - 8 * (end - ecs_at - 4)))
            else:
                index, scope = self._lookup(value << (128 - 8 * (end - ecs_at - 4)), 6)
            # The OPT RDLENGTH and ECS option: the query's, with our SCOPE PREFIX-LENGTH (see ecs_echo).
            echo = b"".join(
                (ECS_HEAD[source], query[ecs_at : ecs_at + 3], BYTE[scope if scope < source else source], query[ecs_at + 4 : end])
            )
        else:
            version, value = self._peer_address(peer)
            index, _scope = self._lookup(value, version)
            echo = b"\x00\x00" if ecs_at < 0 else ecs_echo(query, ecs_at, 0)
        self.counts[index] += 1
        records = self.regions[index]
        assert records is not None
        variants = records.variants
        if variants:
            head, answers = variants[0] if len(variants) == 1 else variants[int(rng.random() * len(variants))]
        else:
            head, answers = records.pick(rng)
        if self.opt_head is None:
            return b"".join((query[:2], head, query[12:qend], answers))
        return b"".join((query[:2], head, query[12:qend], answers, self.opt_head, echo))

    def pinned(self, query: bytes, qend: int, ecs_at: int) -> PinnedEntry | None:
        """A ready entry for these exact query bytes (ECS address and all), when its region has fixed orders."""
        source = query[ecs_at + 2]
        size = (source + 7) >> 3
        value = int.from_bytes(query[ecs_at + 4 : ecs_at + 4 + size], "big")
        if query[ecs_at + 1] == 1:
            index, scope = self.choices.choose(value << (32 - 8 * size), 4)
        else:
            index, scope = self.choices.choose(value << (128 - 8 * size), 6)
        records = self.regions[index]
        if records is None or not records.variants or self.opt_head is None:
            return None
        echo = self.opt_head + ecs_echo(query, ecs_at, scope if scope < source else source)
        return PinnedEntry(records.variants[0][0], tuple(answers + echo for _head, answers in records.variants), self.counts, index)


class PinnedEntry:
    """One GEO entry's answer for one exact query (its ECS address fixed): ready packets, counted on the parent."""

    __slots__ = ("counts", "head", "index", "tails")

    def __init__(self, head: bytes, tails: tuple[bytes, ...], counts: list[int], index: int) -> None:
        self.head = head
        self.tails = tails
        self.counts = counts
        self.index = index

    def respond(self, query: bytes, qend: int, ecs_at: int, peer: str, rng: random.Random) -> bytes:
        self.counts[self.index] += 1
        tails = self.tails
        return query[:2] + self.head + query[12:qend] + (tails[0] if len(tails) == 1 else tails[int(rng.random() * len(tails))])


class RegionRecords:
    """One region's answer records: all orders ready when they are equally likely, else ordered per query."""

    __slots__ = ("_tail", "flags", "max_answers", "records", "variants", "weights")

    def __init__(self, flags: bytes, arcount: int, records: Sequence[bytes], weights: Sequence[int], max_answers: int | None) -> None:
        self.flags = flags
        self.records = tuple(records)
        self.weights = tuple(weights)
        self.max_answers = max_answers
        orders = every_order(self.weights, max_answers)
        tail = b"\x00\x00" + arcount.to_bytes(2, "big")
        self.variants: tuple[tuple[bytes, bytes], ...] = ()
        if orders is not None:
            self.variants = tuple(
                (flags + b"\x00\x01" + len(order).to_bytes(2, "big") + tail, b"".join(self.records[i] for i in order)) for order in orders
            )
        self._tail = tail

    def pick(self, rng: random.Random) -> tuple[bytes, bytes]:
        variants = self.variants
        if variants:
            return variants[0] if len(variants) == 1 else variants[int(rng.random() * len(variants))]
        chosen = weighted_indices(self.weights, self.max_answers, rng)
        return self.flags + b"\x00\x01" + len(chosen).to_bytes(2, "big") + self._tail, b"".join(self.records[i] for i in chosen)
