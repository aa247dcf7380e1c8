"""Endpoint health: rise/fall per HealthKey, forced states and load per endpoint, published as a HealthView. Pure."""

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
    loads: Mapping[EndpointRef, float] = field(default_factory=lambda: MappingProxyType({}))  # fresh, > 0, in 1 % steps
    busy: frozenset[EndpointRef] = frozenset()  # shedding load (SPEC §3 rule 7)

    def is_up(self, pool: str, region: str, endpoint: model.Endpoint) -> bool:
        if self.forced:
            forced = self.forced.get((pool, region, endpoint.address))
            if forced is not None:
                return forced
        return endpoint.key not in self.down

    def is_busy(self, pool: str, region: str, endpoint: model.Endpoint) -> bool:
        return bool(self.busy) and (pool, region, endpoint.address) in self.busy

    def load(self, pool: str, region: str, endpoint: model.Endpoint) -> float:
        return self.loads.get((pool, region, endpoint.address), 0.0) if self.loads else 0.0

    def same_states(self, other: HealthView) -> bool:
        """True when only loads differ: no endpoint changed up/down, forced or busy."""
        return self.down == other.down and self.busy == other.busy and dict(self.forced) == dict(other.forced)


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
class LoadRule:
    """What decides one endpoint's load and busy state: its check (reports, staleness) and its pool's thresholds."""

    key: model.HealthKey
    shed: model.ShedLoad | None


STALE_INTERVALS = 3  # a load report older than this many check intervals is forgotten (SPEC §3 rule 7)


@dataclass(frozen=True)
class LoadReport:
    load: float
    at: float  # wall-clock seconds


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
        self._rules: dict[EndpointRef, LoadRule] = {}
        self._refs_of: dict[model.HealthKey, list[EndpointRef]] = {}
        self._checked_load: dict[model.HealthKey, LoadReport] = {}  # from the check's load header
        self._pushed_load: dict[EndpointRef, LoadReport] = {}  # from POST .../load
        self._loads: dict[EndpointRef, float] = {}  # the report that counts, per endpoint, while fresh
        self._busy: set[EndpointRef] = set()
        self._peer_votes: dict[model.HealthKey, dict[str, bool]] = {}  # other live instances' states (cluster)
        # What the next view shows, kept up to date change by change: with 10,000 checks a
        # result must not cost a pass over all of them.
        self._down: set[model.HealthKey] = set()
        self._shown_loads: dict[EndpointRef, float] = {}
        self._view = ALL_UP
        self._dirty = False  # something the view shows changed since it was built

    @property
    def view(self) -> HealthView:
        """The current picture; built on first read after a change (a new object exactly when it changed)."""
        if self._dirty:
            self._dirty = False
            forced, loads = MappingProxyType(dict(self._forced)), MappingProxyType(dict(self._shown_loads))
            self._view = HealthView(frozenset(self._down), forced, loads, frozenset(self._busy))
        return self._view

    @property
    def changed(self) -> bool:
        """True when the view has changed since it was last read."""
        return self._dirty

    def check(self, key: model.HealthKey) -> CheckState | None:
        return self._checks.get(key)

    def forced(self, ref: EndpointRef) -> bool | None:
        return self._forced.get(ref)

    def forced_states(self) -> list[tuple[EndpointRef, bool]]:
        return list(self._forced.items())

    def set_peer_votes(self, votes: dict[model.HealthKey, dict[str, bool]]) -> None:
        """The states other live instances see for each check (SPEC §8); decided with ours by the check's quorum."""
        self._peer_votes = votes
        self._decide_all()

    def peer_votes(self, key: model.HealthKey) -> dict[str, bool]:
        return dict(self._peer_votes.get(key, {}))

    def decided_up(self, key: model.HealthKey) -> bool:
        """Our own state, or with peers: `majority` down when more than half see it down, `any` when one
        does, `all` only when every one does. An instance that has not checked yet does not vote."""
        state = self._checks.get(key)
        own = [state.up] if state is not None and state.checked else []
        peers = self._peer_votes.get(key)
        if not peers:
            return state.up if state is not None else True
        votes = own + list(peers.values())
        down = votes.count(False)
        quorum = key.check.quorum
        if quorum == "any":
            return down == 0
        if quorum == "all":
            return down < len(votes)
        return down * 2 <= len(votes)

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
        self._decide_all()

    def set_endpoints(self, rules: Mapping[EndpointRef, LoadRule]) -> None:
        """The endpoints the zones name, with what decides their load; reports of endpoints gone are dropped."""
        self._rules = dict(rules)
        refs_of: dict[model.HealthKey, list[EndpointRef]] = {}
        for ref, rule in self._rules.items():
            refs_of.setdefault(rule.key, []).append(ref)
        self._refs_of = refs_of
        self._checked_load = {k: v for k, v in self._checked_load.items() if k in refs_of}
        self._pushed_load = {k: v for k, v in self._pushed_load.items() if k in self._rules}
        self._loads = {k: v for k, v in self._loads.items() if k in self._rules}
        shown = {k: v for k, v in self._shown_loads.items() if k in self._rules}
        busy = self._busy & set(self._rules)
        if shown != self._shown_loads or busy != self._busy:
            self._shown_loads, self._busy = shown, busy
            self._dirty = True
        for ref in self._rules:
            self._update_busy(ref)

    def endpoint_load(self, ref: EndpointRef) -> tuple[float | None, str | None, float | None]:
        """(load, source "check" | "api", report time) of the report that counts; (None, None, None) without one."""
        if ref not in self._loads:
            return None, None, None  # none, or forgotten
        report, source = self._current_report(ref, self._rules.get(ref))
        return (None, None, None) if report is None else (report.load, source, report.at)

    def is_busy(self, ref: EndpointRef) -> bool:
        return ref in self._busy

    def push_load(self, ref: EndpointRef, load: float, now: float) -> bool:
        """A load report from the API; True when the published view changed."""
        if ref not in self._rules:
            return False
        self._pushed_load[ref] = LoadReport(load, now)
        return self._reconsider([ref], now)

    def expire_loads(self, now: float) -> bool:
        """Forget reports older than 3 check intervals; True when the published view changed."""
        return self._reconsider(list(self._loads), now)

    def _current_report(self, ref: EndpointRef, rule: LoadRule | None, now: float | None = None) -> tuple[LoadReport | None, str | None]:
        """The newer of the check's and the API's reports, if it is fresh at `now` (any age when None)."""
        if rule is None:
            return None, None
        checked = self._checked_load.get(rule.key)
        pushed = self._pushed_load.get(ref)
        report, source = (pushed, "api") if checked is None or (pushed is not None and pushed.at >= checked.at) else (checked, "check")
        if report is None:
            return None, None
        if now is not None and now - report.at > STALE_INTERVALS * rule.key.check.interval:
            return None, None
        return report, source

    def _reconsider(self, refs: Iterable[EndpointRef], now: float) -> bool:
        """Take the reports that count now; True when that changed the view."""
        changed = False
        for ref in refs:
            report, _source = self._current_report(ref, self._rules.get(ref), now)
            if report is None:
                self._loads.pop(ref, None)
                self._pushed_load.pop(ref, None)  # stale: forgotten
            else:
                self._loads[ref] = report.load
            shown = round(self._loads.get(ref, 0.0), 2)  # the view shows loads in 1 % steps, and none of 0
            if shown != self._shown_loads.get(ref, 0.0):
                if shown > 0:
                    self._shown_loads[ref] = shown
                else:
                    self._shown_loads.pop(ref, None)
                changed = True
            changed = self._update_busy(ref) or changed
        self._dirty = self._dirty or changed
        return changed

    def _update_busy(self, ref: EndpointRef) -> bool:
        """Hysteresis: busy from `high` up, until the load is `low` or less; never busy without shed_load.
        True when the busy state changed."""
        rule = self._rules.get(ref)
        load = self._loads.get(ref, 0.0)
        was = ref in self._busy
        if rule is None or rule.shed is None:
            self._busy.discard(ref)
        elif was:
            if load <= rule.shed.low:
                self._busy.discard(ref)
        elif load >= rule.shed.high:
            self._busy.add(ref)
        if (ref in self._busy) == was:
            return False
        self._dirty = True
        return True

    def record(
        self, key: model.HealthKey, ok: bool, error: str | None, latency: float, now: float, load: float | None = None
    ) -> Transition | None:
        """One probe result (with the load its response reported, if any). Returns the transition when the
        check changes state; a load that changes only the view is published without one."""
        state = self._checks.get(key)
        if state is None:
            return None  # a check no zone uses any more
        if load is not None:
            self._checked_load[key] = LoadReport(load, now)
            self._reconsider(self._refs_of.get(key, ()), now)
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
        self._decide(key)
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
        self._dirty = True
        return True

    def _decide(self, key: model.HealthKey) -> None:
        """One check's state (own, or by quorum with the peers) into the next view."""
        down = not self.decided_up(key)
        if down != (key in self._down):
            if down:
                self._down.add(key)
            else:
                self._down.discard(key)
            self._dirty = True

    def _decide_all(self) -> None:
        down = {key for key in self._checks if not self.decided_up(key)}
        if down != self._down:
            self._down = down
            self._dirty = True


def load_rules(zones: model.ZoneSet) -> dict[EndpointRef, LoadRule]:
    """Every endpoint the zones name, with its check and its pool's shed_load."""
    return {
        (pool.name, region.name, endpoint.address): LoadRule(endpoint.key, pool.shed_load)
        for pool in zones.pools.values()
        for region in pool.regions
        for endpoint in region.endpoints
    }


def health_keys(zones: model.ZoneSet) -> frozenset[model.HealthKey]:
    """Every check the zones ask for (`none` checks need no probing)."""
    return frozenset(
        endpoint.key
        for pool in zones.pools.values()
        for region in pool.regions
        for endpoint in region.endpoints
        if endpoint.health.type != "none"
    )
