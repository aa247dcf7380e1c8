"""The status page's feed: which endpoint changes successive snapshots make, and answers over a minute. No server."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
from pathlib import Path

import pytest

from geolb import model
from geolb.config.zoneset import load_zoneset
from geolb.handler import AnswerKey
from geolb.health.state import HealthState, health_keys
from geolb.http.feed import AnswerWindow, FeedEvent, StatusFeed
from geolb.runtime import Runtime

ZONE = """nameservers:
  ns1.feed.example.: [192.0.2.53]
health: {type: http, port: 8080, path: /health}
pools:
  web:
    regions:
      east: {endpoints: [127.0.0.11, 127.0.0.12]}
      west: {endpoints: [127.0.0.21]}
  mirror:
    regions:
      only: {endpoints: [127.0.0.11]}   # the same check as web/east's first endpoint
records:
  www: {type: GEO, pool: web}
"""


@pytest.fixture
def zones(tmp_path: Path) -> model.ZoneSet:
    (tmp_path / "feed.example.yaml").write_text(ZONE)
    result = load_zoneset(str(tmp_path))
    assert result.ok, result.errors
    return result.zoneset


def key_of(zones: model.ZoneSet, address: str) -> model.HealthKey:
    return next(k for k in health_keys(zones) if k.address == ipaddress.ip_address(address))


def watched(zones: model.ZoneSet) -> tuple[HealthState, Runtime, StatusFeed]:
    """Health for the zones' checks, a runtime, and a feed following it."""
    state = HealthState()
    state.set_targets(health_keys(zones))
    runtime = Runtime(zones, state.view)
    feed = StatusFeed()
    feed.follow(runtime)
    return state, runtime, feed


def published(feed: StatusFeed, queue: asyncio.Queue[FeedEvent | int | None]) -> list[FeedEvent | int | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_a_failing_check_is_one_event_per_endpoint_that_uses_it(zones: model.ZoneSet) -> None:
    state, runtime, feed = watched(zones)
    queue = feed.subscribe()
    key = key_of(zones, "127.0.0.11")
    state.record(key, True, None, 0.001, now=1.0)
    transition = state.record(key, False, "HTTP 503", 0.001, now=2.0)
    assert transition is None  # fall 3 by default: not yet
    for now in (3.0, 4.0):
        transition = state.record(key, False, "HTTP 503", 0.001, now=now)
    assert transition is not None
    feed.note_transition(transition)
    runtime.publish(health=state.view)
    items = published(feed, queue)
    events = [i for i in items if isinstance(i, FeedEvent)]
    assert {(e.pool, e.region, e.address, e.state) for e in events} == {
        ("web", "east", "127.0.0.11", "down"),
        ("mirror", "only", "127.0.0.11", "down"),
    }
    assert all(e.text == "3 checks failed, last: HTTP 503" and e.kind == "state" for e in events)
    assert items[-1] == runtime.snapshot.generation  # then: fetch the status again
    assert [e.id for e in feed.since(0)] == sorted(e.id for e in events)
    assert feed.since(max(e.id for e in events)) == []


async def test_forcing_names_the_operator_and_only_the_endpoint_forced(zones: model.ZoneSet) -> None:
    state, runtime, feed = watched(zones)
    address = ipaddress.ip_address("127.0.0.11")
    state.force(("web", "east", address), False)
    runtime.publish(health=state.view)
    state.force(("web", "east", address), True)  # forced up while its check says up: no change of state, still news
    runtime.publish(health=state.view)
    state.force(("web", "east", address), None)
    runtime.publish(health=state.view)
    lines = [(e.pool, e.region, e.state, e.forced, e.text) for e in feed.since(0)]
    assert lines == [
        ("web", "east", "down", "down", "forced by an operator"),
        ("web", "east", "up", "up", "forced by an operator"),
        ("web", "east", "up", None, "forced state cleared: back to its checks"),
    ]


async def test_a_slow_follower_is_dropped_and_its_stream_ends(zones: model.ZoneSet) -> None:
    feed = StatusFeed()
    queue = feed.subscribe()
    for n in range(300):
        feed.add("reload", f"reload {n}")
    items = published(feed, queue)
    assert items[-1] is None  # the stream ends; the browser reconnects with Last-Event-ID
    assert len(feed.events) == 200
    feed.close()
    late = feed.subscribe()
    assert late.get_nowait() is None


def test_answers_over_the_last_minute_come_from_running_totals() -> None:
    window = AnswerWindow(window=60)
    east, west = AnswerKey("web", "east"), AnswerKey("web", "west")
    totals: collections.Counter[AnswerKey] = collections.Counter()
    window.sample(totals, now=0.0)
    for second in range(5, 125, 5):
        totals[east] += 10  # 2 a second all along
        if second > 100:
            totals[west] += 50  # 10 a second in the last 20 s
        window.sample(totals, now=float(second))
    recent, span = window.recent(totals, now=122.0)
    assert span == pytest.approx(62.0)  # the newest sample at least a minute old: at 60 s
    assert recent[east] == 120  # 12 samples of 10 since then
    assert recent[west] == 200
    assert AnswerWindow().recent(totals, now=1.0) == ({}, 0.0)
