"""Rise, fall and forced states, with an explicit clock: no sleeping."""

from __future__ import annotations

import ipaddress

from geolb import model
from geolb.health.state import HealthState

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
