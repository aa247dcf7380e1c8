"""Vantage points (SPEC §10): this instance's check times per endpoint -> per-region RTTs, shared and joined to evidence. Pure.

An instance started with `--location LAT,LON` is a vantage point. Each successful
health check's round-trip time (from the check's start to the first response byte
for http/https, to the open connection for tcp: health/probe.py Outcome.rtt) goes
into a VantageBook. An endpoint's RTT is the median of its last SAMPLES checks; a
region's RTT is its best healthy endpoint's (None when no healthy endpoint has been
measured, e.g. health type none).

A VantageReport is one instance's figures for one pool keyed by region name, the form
that crosses the cluster (a peer's zone may list the pool's regions differently). The
VantageBoard holds every instance's reports (own and peers') and lays them over a
pool's evidence as PoolEvidence.vantages, giving the result a version of its own that
changes exactly when the evidence or the vantages do.

Nothing here imports asyncio or talks to the network.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from geolb import model
from geolb.health.state import HealthView
from geolb.steer.evidence import PoolEvidence, Vantage

SAMPLES = 5  # an endpoint's RTT is the median of its last this many checks
# A republished report must differ from the last one by more than this (or in what it covers):
# every new report is a new evidence version, and medians of live checks jitter by fractions
# of a millisecond. The answer path's margin (10 %, 5 ms) is far coarser.
MOVE_SHARE, MOVE_MS = 0.05, 1.0


class VantageBook:
    """The last SAMPLES check times of every endpoint this instance measures (milliseconds)."""

    def __init__(self, samples: int = SAMPLES) -> None:
        self.samples = samples
        self._times: dict[model.HealthKey, deque[float]] = {}

    def record(self, key: model.HealthKey, ms: float) -> None:
        """One successful check of `key` that took `ms` to its first response byte (or connection)."""
        if not math.isfinite(ms) or ms < 0:
            return
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self.samples)
        times.append(ms)

    def rtt(self, key: model.HealthKey) -> float | None:
        """The median of the endpoint's last checks; None before its first measured check."""
        times = self._times.get(key)
        return statistics.median(times) if times else None

    def forget(self, keep: Iterable[model.HealthKey]) -> None:
        """Drop the times of checks no zone uses any more."""
        wanted = set(keep)
        for key in [k for k in self._times if k not in wanted]:
            del self._times[key]

    def region_rtt(self, pool: model.Pool, region: model.Region, health: HealthView) -> float | None:
        """The region's RTT: its fastest healthy measured endpoint's median; None when there is none."""
        best: float | None = None
        for endpoint in region.endpoints:
            if not health.is_up(pool.name, region.name, endpoint):
                continue
            rtt = self.rtt(endpoint.key)
            if rtt is not None and (best is None or rtt < best):
                best = rtt
        return best

    def vantage(self, pool: model.Pool, health: HealthView, instance: str, location: tuple[float, float]) -> Vantage:
        """This instance's figures for `pool`, one per region of the pool in its order (None: not measured)."""
        return Vantage(instance, location, tuple(self.region_rtt(pool, region, health) for region in pool.regions))


@dataclass(frozen=True)
class VantageReport:
    """One instance's vantage figures for one pool, by region name: what the cluster shares."""

    instance: str
    location: tuple[float, float]  # latitude, longitude
    rtt: tuple[tuple[str, float], ...]  # (region name, ms) for the measured regions, sorted by name

    @classmethod
    def of(cls, vantage: Vantage, regions: Sequence[str]) -> VantageReport:
        """The report of a Vantage whose figures follow `regions` (RTTs kept to 0.1 ms)."""
        rtt = sorted((name, round(ms, 1)) for name, ms in zip(regions, vantage.rtt, strict=True) if ms is not None)
        return cls(vantage.instance, vantage.location, tuple(rtt))

    def vantage(self, regions: Sequence[str]) -> Vantage:
        """The figures laid on `regions` (a pool's or an evidence's columns): None where not measured."""
        by_name = dict(self.rtt)
        return Vantage(self.instance, self.location, tuple(by_name.get(name) for name in regions))

    @property
    def covered(self) -> bool:
        return bool(self.rtt)

    def to_bytes(self) -> bytes:
        return json.dumps({"location": list(self.location), "rtt": dict(self.rtt)}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, instance: str, data: bytes) -> VantageReport:
        """A report as to_bytes wrote it; ValueError when it is not one."""
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(value, dict) or set(value) != {"location", "rtt"}:
            raise ValueError("not a vantage report")
        location, rtt = value["location"], value["rtt"]
        if not (isinstance(location, list) and len(location) == 2 and all(_number(v) for v in location)):
            raise ValueError("bad location")
        latitude, longitude = float(location[0]), float(location[1])
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError("location out of range")
        if not isinstance(rtt, dict) or not all(isinstance(k, str) and _number(v) and v >= 0 for k, v in rtt.items()):
            raise ValueError("bad rtt")
        return cls(instance, (latitude, longitude), tuple(sorted((k, float(v)) for k, v in rtt.items())))


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def moved(old: VantageReport | None, new: VantageReport | None) -> bool:
    """True when `new` is worth publishing over `old`: other place or regions, or an RTT moved by
    more than MOVE_SHARE and MOVE_MS."""
    if old is None or new is None:
        return old is not new
    if old.instance != new.instance or old.location != new.location:
        return True
    before, after = dict(old.rtt), dict(new.rtt)
    if before.keys() != after.keys():
        return True
    return any(abs(after[name] - ms) > max(MOVE_MS, MOVE_SHARE * ms) for name, ms in before.items())


class VantageBoard:
    """Every instance's latest report per pool (this one's and, in a cluster, its peers'), laid over evidence."""

    def __init__(self) -> None:
        self._reports: dict[str, dict[str, VantageReport]] = {}  # pool -> instance -> report
        # pool -> (what the evidence was made of, the evidence handed out): the same inputs give the same object
        self._made: dict[str, tuple[tuple[object, ...], PoolEvidence]] = {}
        self._version = 0

    def put(self, pool: str, instance: str, report: VantageReport | None) -> bool:
        """An instance's report for a pool (None: it has none any more). True when the board changed."""
        reports = self._reports.setdefault(pool, {})
        if report is None or not report.covered:
            changed = reports.pop(instance, None) is not None
        else:
            changed = reports.get(instance) != report
            reports[instance] = report
        if not reports:
            del self._reports[pool]
        return changed

    def report(self, pool: str, instance: str) -> VantageReport | None:
        return self._reports.get(pool, {}).get(instance)

    def reports(self, pool: str) -> Mapping[str, VantageReport]:
        return dict(self._reports.get(pool, {}))

    def pools_of(self, instance: str) -> set[str]:
        """The pools an instance has a report for."""
        return {pool for pool, reports in self._reports.items() if instance in reports}

    def keep(self, pools: Iterable[str]) -> None:
        """Forget the evidence made for pools not in `pools` (gone in a reload). Reports stay: a peer's
        report of a pool this instance does not serve counts once a reload brings that pool here."""
        wanted = set(pools)
        for name in [p for p in self._made if p not in wanted]:
            del self._made[name]

    def vantages(self, pool: str, regions: Sequence[str]) -> tuple[Vantage, ...]:
        """The reports of `pool` laid on `regions`, by instance name (every instance orders them alike);
        instances that measured none of these regions are left out."""
        reports = self._reports.get(pool, {})
        laid = (reports[name].vantage(regions) for name in sorted(reports))
        return tuple(v for v in laid if any(ms is not None for ms in v.rtt))

    def attach(self, evidence: PoolEvidence) -> PoolEvidence:
        """`evidence` with the board's vantages for its pool, under a version that is new exactly when
        the evidence (its version or columns) or the vantages changed since the last call for that pool."""
        vantages = self.vantages(evidence.pool, evidence.regions)
        inputs = (evidence.version, evidence.regions, vantages)
        made = self._made.get(evidence.pool)
        if made is not None and made[0] == inputs:
            return made[1]
        self._version += 1
        result = dataclasses.replace(evidence, vantages=vantages, version=self._version)
        self._made[evidence.pool] = (inputs, result)
        return result
