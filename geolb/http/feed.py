"""What the status page follows live: endpoint state changes found between snapshots, and answers per region over a minute."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from geolb import model
from geolb.handler import AnswerKey
from geolb.health.state import HealthView, Transition
from geolb.runtime import Runtime, Snapshot

FEED_LENGTH = 200  # events kept for a page opened later
SUBSCRIBER_BACKLOG = 256  # events a slow page may fall behind by before it is dropped (its browser reconnects)
ANSWER_WINDOW = 60.0  # seconds of answers per region the page shows shares of
ANSWER_SAMPLE = 5.0  # how often answer counters are sampled; the window is this exact


@dataclass(frozen=True)
class FeedEvent:
    """One line of the live feed: an endpoint answered up or down from now on, or a reload or database change."""

    id: int
    at: float  # wall-clock seconds
    kind: str  # "state" | "reload" | "geoip"
    text: str
    pool: str | None = None
    region: str | None = None
    address: str | None = None
    state: str | None = None  # "up" | "down" for a state change
    forced: str | None = None  # "up" | "down" when an operator's forced state caused it

    def as_json(self) -> dict[str, object]:
        return asdict(self)


Endpoints = dict[model.HealthKey, list[tuple[str, str, model.Endpoint]]]


class StatusFeed:
    """Watches the snapshots the main process publishes; keeps the recent events and wakes the pages that follow."""

    def __init__(self) -> None:
        self.events: collections.deque[FeedEvent] = collections.deque(maxlen=FEED_LENGTH)
        self.generation = 0
        self._next_id = 1
        self._last: Snapshot | None = None
        self._by_key: tuple[model.ZoneSet, Endpoints] | None = None
        self._reasons: dict[model.HealthKey, str] = {}
        self._subscribers: set[asyncio.Queue[FeedEvent | int | None]] = set()
        self._closed = False

    # --- what goes in -------------------------------------------------------------------------

    def note_transition(self, transition: Transition) -> None:
        """The prober's reason for a check changing state, shown when the next snapshot carries it."""
        self._reasons[transition.key] = transition.reason

    def add(self, kind: str, text: str, **where: str | None) -> FeedEvent:
        """A reload or database event: kept, and sent to every follower."""
        event = self._record(kind, text, **where)
        self._send(event)
        return event

    def _record(self, kind: str, text: str, **where: str | None) -> FeedEvent:
        event = FeedEvent(self._next_id, time.time(), kind, text, **where)
        self._next_id += 1
        self.events.append(event)
        return event

    def follow(self, runtime: Runtime) -> None:
        """Watch `runtime` from its current snapshot on."""
        self._last = runtime.snapshot
        self.generation = runtime.snapshot.generation
        runtime.on_swap(self.on_swap)

    def on_swap(self, snapshot: Snapshot) -> None:
        """A new generation: the endpoints whose answered state changed become events; pages are told to refresh."""
        previous, self._last = self._last, snapshot
        self.generation = snapshot.generation
        if previous is not None and snapshot.health is not previous.health and snapshot.zones is previous.zones:
            for event in self._state_changes(snapshot, previous.health):
                self._send(event)
        self._send(snapshot.generation)

    def _state_changes(self, snapshot: Snapshot, before: HealthView) -> Iterator[FeedEvent]:
        after = snapshot.health
        keys = before.down ^ after.down
        forced = {ref for ref in set(before.forced) | set(after.forced) if before.forced.get(ref) != after.forced.get(ref)}
        if not keys and not forced:
            return
        by_key = self._endpoints_by_key(snapshot.zones)
        candidates = [entry for key in keys for entry in by_key.get(key, ())]
        candidates += [
            (pool, region, endpoint)
            for pool, region, address in forced
            for endpoint in self._endpoints_at(snapshot.zones, pool, region, address)
        ]
        seen: set[tuple[str, str, model.IPAddress]] = set()
        for pool, region, endpoint in candidates:
            ref = (pool, region, endpoint.address)
            if ref in seen:
                continue
            seen.add(ref)
            was, now = before.is_up(pool, region, endpoint), after.is_up(pool, region, endpoint)
            forced_now = after.forced.get(ref)
            if ref in forced:
                reason = "forced state cleared: back to its checks" if forced_now is None else "forced by an operator"
            elif was == now:
                continue
            else:
                reason = self._reasons.get(endpoint.key, "decided with the other instances")
            yield self._record(
                "state",
                reason,
                pool=pool,
                region=region,
                address=str(endpoint.address),
                state="up" if now else "down",
                forced=None if forced_now is None else ("up" if forced_now else "down"),
            )

    def _endpoints_by_key(self, zones: model.ZoneSet) -> Endpoints:
        if self._by_key is None or self._by_key[0] is not zones:
            index: Endpoints = {}
            for pool in zones.pools.values():
                for region in pool.regions:
                    for endpoint in region.endpoints:
                        index.setdefault(endpoint.key, []).append((pool.name, region.name, endpoint))
            self._by_key = (zones, index)
            self._reasons = {key: reason for key, reason in self._reasons.items() if key in index}
        return self._by_key[1]

    @staticmethod
    def _endpoints_at(zones: model.ZoneSet, pool_name: str, region_name: str, address: model.IPAddress) -> list[model.Endpoint]:
        pool = zones.pools.get(pool_name)
        region = pool.region(region_name) if pool is not None else None
        return [e for e in region.endpoints if e.address == address] if region is not None else []

    # --- who follows ----------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[FeedEvent | int | None]:
        """A queue of events (FeedEvent), new generations (int) and, at the end, None."""
        queue: asyncio.Queue[FeedEvent | int | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        if self._closed:
            queue.put_nowait(None)
        else:
            self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FeedEvent | int | None]) -> None:
        self._subscribers.discard(queue)

    def since(self, last_id: int) -> list[FeedEvent]:
        return [event for event in self.events if event.id > last_id]

    def close(self) -> None:
        """Shutting down: every follower's stream ends."""
        self._closed = True
        for queue in self._subscribers:
            _put_last(queue)
        self._subscribers.clear()

    def _send(self, item: FeedEvent | int) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)  # too far behind: its stream ends, the browser reconnects
                _put_last(queue)


def _put_last(queue: asyncio.Queue[FeedEvent | int | None]) -> None:
    while True:
        try:
            queue.put_nowait(None)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


class AnswerWindow:
    """GEO answers per (pool, region) over the last minute, from the DNS workers' running totals."""

    def __init__(self, window: float = ANSWER_WINDOW) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, collections.Counter[AnswerKey]]] = collections.deque()

    def sample(self, totals: collections.Counter[AnswerKey], now: float) -> None:
        self._samples.append((now, collections.Counter(totals)))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()  # the next one is old enough to be the baseline

    def recent(self, totals: collections.Counter[AnswerKey], now: float) -> tuple[dict[AnswerKey, int], float]:
        """Answers since the baseline (the newest sample at least a window old, else the oldest), and over how long."""
        if not self._samples:
            return {}, 0.0
        since, baseline = self._samples[0]
        return {key: count - baseline.get(key, 0) for key, count in totals.items() if count > baseline.get(key, 0)}, now - since
