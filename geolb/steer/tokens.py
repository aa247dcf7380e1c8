"""Resolver discovery (SPEC §10): which resolver, and which ECS network, asked for a "<token>.rum.<zone>" name.

The DNS workers see the queries and pass sightings up to the main process in
batches; the RUM listener there links a beacon's token to the resolver that
looked it up. A sighting is kept for TOKEN_TTL seconds, and the book never holds
more than `limit` of them (oldest dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from geolb import model

TOKEN_TTL = 60.0
TOKEN_LIMIT = 200_000
TOKEN_MAX_LENGTH = 63  # one DNS label


@dataclass(frozen=True)
class Sighting:
    """One lookup of a token's name: who asked (the resolver) and for whom (its ECS network, when it sent one)."""

    token: str
    resolver: model.IPAddress
    network: model.IPNetwork | None
    at: float  # time.monotonic() in the process that saw it; TokenBook re-stamps on arrival


class TokenBook:
    """token -> the latest Sighting, for a minute."""

    def __init__(self, ttl: float = TOKEN_TTL, limit: int = TOKEN_LIMIT, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.limit = limit
        self._clock = clock
        self._seen: OrderedDict[str, Sighting] = OrderedDict()

    def note(self, sightings: Iterable[Sighting]) -> None:
        now = self._clock()
        for sighting in sightings:
            self._seen.pop(sighting.token, None)
            self._seen[sighting.token] = Sighting(sighting.token, sighting.resolver, sighting.network, now)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        self._expire(now)

    def find(self, token: str) -> Sighting | None:
        now = self._clock()
        self._expire(now)
        return self._seen.get(token)

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            first = next(iter(self._seen.values()))
            if now - first.at <= self.ttl:
                break
            self._seen.popitem(last=False)
