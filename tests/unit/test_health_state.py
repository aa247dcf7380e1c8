"""Rise, fall and forced states, with an explicit clock: no sleeping."""

from __future__ import annotations

import dataclasses
import ipaddress

from geolb import model
from geolb.health.probe import parse_load
from geolb.health.state import HealthState, LoadRule

CHECK = model.HealthCheck("http", 80, "/health", None, (200,), None, 1.0, 0.5, 3, 2, True)
KEY = model.HealthKey(ipaddress.ip_address("127.0.0.11"), CHECK)
ENDPOINT = model.Endpoint(KEY.address, 1, CHECK, model.Where("test", 1))


def up(state: HealthState) -> bool:
    return state.view.is_up("web", "eu", ENDPOINT)


def test_the_first_result_sets_the_state_then_fall_and_rise_count() -> None:
    state = HealthState()
    state.set_targets([KEY])
    assert state.record(KEY, False, "refused", 0.001, now=1.0) is not None  # first result: down at once
    assert not up(state)
    assert state.record(KEY, True, None, 0.001, now=2.0) is None  # 1 of rise 2
    assert not up(state)
    transition = state.record(KEY, True, None, 0.001, now=3.0)
    assert transition is not None and transition.up and up(state)
    for now in (4.0, 5.0):
        assert state.record(KEY, False, "status 503", 0.001, now=now) is None  # 1 and 2 of fall 3
        assert up(state)
    transition = state.record(KEY, False, "status 503", 0.001, now=6.0)
    assert transition is not None and not transition.up and "3 checks failed" in transition.reason
    check = state.check(KEY)
    assert check is not None and check.last_check == 6.0 and check.last_error == "status 503"


def test_a_success_between_failures_starts_the_count_again() -> None:
    state = HealthState()
    state.set_targets([KEY])
    state.record(KEY, True, None, 0.001, now=0.0)
    for now, ok in ((1.0, False), (2.0, False), (3.0, True), (4.0, False), (5.0, False)):
        state.record(KEY, ok, None if ok else "timeout", 0.001, now=now)
    assert up(state)


def test_forced_states_override_checks_and_publish_a_new_view_only_on_change() -> None:
    state = HealthState()
    state.set_targets([KEY])
    state.record(KEY, True, None, 0.001, now=0.0)
    view = state.view
    assert state.force(("web", "eu", KEY.address), False)
    assert state.view is not view and not up(state)
    assert not state.force(("web", "eu", KEY.address), False)  # no change, no new view
    assert state.view.is_up("other-pool", "eu", ENDPOINT)  # another pool sharing the address is left alone
    assert state.force(("web", "eu", KEY.address), None)
    assert up(state)


# --- load reports and busy states (SPEC §3 rule 7) -----------------------------------------

REF = ("web", "eu", KEY.address)
SHED = model.ShedLoad(high=0.9, low=0.5)


def loaded(shed: model.ShedLoad | None = SHED) -> HealthState:
    state = HealthState()
    state.set_targets([KEY])
    state.set_endpoints({REF: LoadRule(KEY, shed)})
    state.record(KEY, True, None, 0.001, now=0.0)
    return state


def busy(state: HealthState) -> bool:
    return state.view.is_busy("web", "eu", ENDPOINT)


def test_busy_from_high_until_low() -> None:
    state = loaded()
    state.record(KEY, True, None, 0.001, now=1.0, load=0.89)
    assert not busy(state) and state.view.load("web", "eu", ENDPOINT) == 0.89
    state.record(KEY, True, None, 0.001, now=2.0, load=0.95)
    assert busy(state) and up(state)  # busy is not down
    state.record(KEY, True, None, 0.001, now=3.0, load=0.7)
    assert busy(state)  # between low and high: stays busy
    state.record(KEY, True, None, 0.001, now=4.0, load=0.5)
    assert not busy(state)
    state.record(KEY, True, None, 0.001, now=4.5, load=0.7)
    assert not busy(state)  # between: stays not busy


def test_no_shed_load_means_never_busy_but_the_load_still_counts() -> None:
    state = loaded(shed=None)
    state.record(KEY, True, None, 0.001, now=1.0, load=1.0)
    assert not busy(state) and state.view.load("web", "eu", ENDPOINT) == 1.0


def test_a_check_without_a_load_keeps_the_last_report_until_it_is_stale() -> None:
    state = loaded()
    state.record(KEY, True, None, 0.001, now=1.0, load=0.95)
    state.record(KEY, True, None, 0.001, now=2.0)  # no header this time: reports nothing
    assert busy(state)
    assert not state.expire_loads(now=3.9)  # interval 1 s: stale after 3 s
    assert state.expire_loads(now=4.1)
    assert not busy(state) and state.view.load("web", "eu", ENDPOINT) == 0.0
    assert state.endpoint_load(REF) == (None, None, None)


def test_the_newest_report_from_either_source_counts() -> None:
    state = loaded()
    state.record(KEY, True, None, 0.001, now=1.0, load=0.2)
    assert state.push_load(REF, 0.95, now=2.0)
    assert busy(state) and state.endpoint_load(REF) == (0.95, "api", 2.0)
    state.record(KEY, True, None, 0.001, now=3.0, load=0.1)
    assert not busy(state) and state.endpoint_load(REF) == (0.1, "check", 3.0)
    assert not state.push_load(("web", "eu", ipaddress.ip_address("127.0.0.99")), 1.0, now=3.0)  # no such endpoint


def test_load_only_changes_keep_the_states() -> None:
    state = loaded()
    before = state.view
    state.record(KEY, True, None, 0.001, now=1.0, load=0.3)
    assert state.view is not before and state.view.same_states(before)
    state.record(KEY, True, None, 0.001, now=1.5, load=0.301)
    assert state.view.load("web", "eu", ENDPOINT) == 0.3  # 1 % steps: no new view for noise
    busier = state.view
    state.record(KEY, True, None, 0.001, now=2.0, load=0.99)
    assert not state.view.same_states(busier)


def test_a_reload_forgets_endpoints_that_are_gone() -> None:
    state = loaded()
    state.push_load(REF, 0.95, now=1.0)
    assert busy(state)
    state.set_endpoints({})
    assert not busy(state) and state.endpoint_load(REF) == (None, None, None)


def test_load_header_values() -> None:
    assert parse_load("0.42") == 0.42
    assert parse_load(" 73% ") == 0.73
    assert parse_load("1") == 1.0 and parse_load("0") == 0.0
    for unreadable in (None, "", "busy", "1.5", "-0.1", "nan", "120%"):
        assert parse_load(unreadable) is None, unreadable


# --- cluster votes (SPEC §8) ------------------------------------------------------------------


def voted(quorum: str, own_up: bool, peers: dict[str, bool]) -> bool:
    check = dataclasses.replace(CHECK, quorum=quorum)
    key = model.HealthKey(KEY.address, check)
    state = HealthState()
    state.set_targets([key])
    state.record(key, own_up, None if own_up else "refused", 0.001, now=0.0)
    state.set_peer_votes({key: peers})
    return key not in state.view.down


def test_quorum_decides_from_every_live_view() -> None:
    assert voted("majority", False, {"b": True, "c": True})  # 1 of 3 down: up
    assert not voted("majority", False, {"b": False, "c": True})  # 2 of 3
    assert voted("majority", False, {"b": True})  # 1 of 2 is not more than half
    assert not voted("any", True, {"b": True, "c": False})
    assert voted("all", False, {"b": False, "c": True})
    assert not voted("all", False, {"b": False, "c": False})
    assert not voted("majority", False, {})  # alone: our own checks
