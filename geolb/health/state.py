"""Endpoint health: rise/fall counters per HealthKey and forced states per endpoint, published as a HealthView. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from geolb import model

EndpointRef = tuple[str, str, model.IPAddress]  # pool, region, address: what an operator can force


@dataclass(frozen=True)
class HealthView:
    """An immutable picture of health; the DNS path reads only this.

    `down` holds the checks that are failing; `forced` overrides them per endpoint
    (pool, region, address), so forcing one pool's endpoint leaves another pool that
    shares the address alone.
    """

    down: frozenset[model.HealthKey] = frozenset()
    forced: Mapping[EndpointRef, bool] = field(default_factory=lambda: MappingProxyType({}))

    def is_up(self, pool: str, region: str, endpoint: model.Endpoint) -> bool:
        if self.forced:
            forced = self.forced.get((pool, region, endpoint.address))
            if forced is not None:
                return forced
        return endpoint.key not in self.down


ALL_UP = HealthView()


@dataclass
class CheckState:
    """What the prober knows of one check target. Mutable, private to HealthState."""

    up: bool = True
    checked: bool = False  # False until the first result sets the state
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    last_check: float | None = None  # wall-clock seconds
    last_error: str | None = None
    last_latency: float | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Transition:
    key: model.HealthKey
    up: bool
    reason: str


class HealthState:
    """Rise/fall bookkeeping. Only the prober records results and only the API forces states."""

    def __init__(self) -> None:
        self._checks: dict[model.HealthKey, CheckState] = {}
        self._forced: dict[EndpointRef, bool] = {}
        self._view = ALL_UP

    @property
    def view(self) -> HealthView:
        return self._view

    def check(self, key: model.HealthKey) -> CheckState | None:
        return self._checks.get(key)

    def forced(self, ref: EndpointRef) -> bool | None:
        return self._forced.get(ref)

    def targets(self) -> frozenset[model.HealthKey]:
        return frozenset(self._checks)

    def set_targets(self, keys: Iterable[model.HealthKey]) -> None:
        """Track exactly these checks (new ones start up and unchecked; gone ones are dropped).

        Forced states are kept: they name endpoints, not checks, and survive reloads.
        """
        wanted = set(keys)
        for key in list(self._checks):
            if key not in wanted:
                del self._checks[key]
        for key in wanted:
            self._checks.setdefault(key, CheckState())
        self._publish()

    def record(self, key: model.HealthKey, ok: bool, error: str | None, latency: float, now: float) -> Transition | None:
        """One probe result. Returns the transition when the check changes state."""
        state = self._checks.get(key)
        if state is None:
            return None  # a check no zone uses any more
        state.last_check = now
        state.last_latency = latency
        state.last_error = None if ok else error
        if ok:
            state.successes += 1
            state.failures = 0
        else:
            state.failures += 1
            state.successes = 0
        was = state.up
        if not state.checked:
            state.checked = True  # the first result sets the state (SPEC §4)
            state.up = ok
        elif state.up and state.failures >= key.check.fall:
            state.up = False
        elif not state.up and state.successes >= key.check.rise:
            state.up = True
        if state.up == was:
            return None
        state.transitions += 1
        self._publish()
        reason = "check passed" if ok else (error or "check failed")
        if ok and state.successes > 1:
            reason = f"{state.successes} checks passed"
        elif not ok and state.failures > 1:
            reason = f"{state.failures} checks failed, last: {error}"
        return Transition(key, state.up, reason)

    def force(self, ref: EndpointRef, up: bool | None) -> bool:
        """Force an endpoint up or down, or (None) hand it back to its checks; True if that changed anything."""
        before = self._forced.get(ref)
        if up is None:
            self._forced.pop(ref, None)
        else:
            self._forced[ref] = up
        if before == up:
            return False
        self._publish()
        return True

    def _publish(self) -> None:
        down = frozenset(key for key, state in self._checks.items() if not state.up)
        forced = MappingProxyType(dict(self._forced))
        if down != self._view.down or dict(forced) != dict(self._view.forced):
            self._view = HealthView(down, forced)


def health_keys(zones: model.ZoneSet) -> frozenset[model.HealthKey]:
    """Every check the zones ask for (`none` checks need no probing)."""
    return frozenset(
        endpoint.key
        for pool in zones.pools.values()
        for region in pool.regions
        for endpoint in region.endpoints
        if endpoint.health.type != "none"
    )
