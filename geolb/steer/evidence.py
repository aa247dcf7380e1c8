"""PoolEvidence: what the answer path knows of measured round-trip times for one pool. Plain frozen data.

Made by the aggregator (steer/aggregate.py) and the vantage book (steer/vantage.py)
in the main process, carried to the DNS workers in a Snapshot, and laid over the
region maps there (steer/overlay.py). Nothing here changes after it is made: new
evidence is a new PoolEvidence with a new `version`.

Every figure is already judged: a region's RTT is None (NaN in the arrays) where it
lacks `min_samples` samples in the window, a country is present only with
`min_networks` networks behind it. What is left to the answer path is the order:
  - the regions a figure covers come first within each §3 preference tier, fastest
    first, except that the incumbent keeps the lead unless another covered region
    `Latency.beats` it; the incumbent is `leader` when that is >= 0 and covered,
    else the first covered region in the distance order;
  - the regions it does not cover follow, by distance, as today.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from geolb import model

V4_PREFIX = 24  # a client network with its own evidence (SPEC §10 evidence 1)
V6_PREFIX = 48


@dataclass(frozen=True)
class Figures:
    """Measured RTTs of one client key (a resolver, a country) to each region of PoolEvidence.regions."""

    rtt: tuple[float | None, ...]  # median ms per region; None: not enough samples for that region
    samples: tuple[int, ...]  # samples behind each figure (for a country: networks)
    leader: int = -1  # region index holding the lead under the margin; -1: the distance order's first covered region

    @property
    def covered(self) -> bool:
        return any(r is not None for r in self.rtt)


@dataclass(frozen=True)
class NetworkTable:
    """Evidence of the client networks of one IP version, as arrays: a million networks in tens of megabytes.

    Row i is the network `keys[i] << (width - prefix)` / prefix (IPv4 /24, IPv6 /48).
    """

    version: int  # 4 or 6
    keys: npt.NDArray[np.uint64]  # network address >> (width - prefix), sorted ascending, unique
    rtt: npt.NDArray[np.float32]  # [n, regions] median ms; NaN: fewer than min_samples
    samples: npt.NDArray[np.uint32]  # [n, regions]
    leader: npt.NDArray[np.int16]  # [n]: as Figures.leader

    @property
    def prefix(self) -> int:
        return V4_PREFIX if self.version == 4 else V6_PREFIX

    def __len__(self) -> int:
        return len(self.keys)

    def row_of(self, address: model.IPAddress) -> int | None:
        """The row of the network an address is in, None when that network has no evidence."""
        if address.version != self.version or not len(self.keys):
            return None
        key = int(address) >> ((32 if self.version == 4 else 128) - self.prefix)
        row = int(np.searchsorted(self.keys, np.uint64(key)))
        return row if row < len(self.keys) and int(self.keys[row]) == key else None

    def figures(self, row: int) -> Figures:
        rtt = tuple(None if np.isnan(v) else float(v) for v in self.rtt[row])
        return Figures(rtt, tuple(int(s) for s in self.samples[row]), int(self.leader[row]))

    @classmethod
    def empty(cls, version: int, regions: int) -> NetworkTable:
        return cls(
            version,
            np.zeros(0, dtype=np.uint64),
            np.zeros((0, regions), dtype=np.float32),
            np.zeros((0, regions), dtype=np.uint32),
            np.zeros(0, dtype=np.int16),
        )


@dataclass(frozen=True)
class Vantage:
    """One geolb instance's own RTTs to the regions (`--location`): its best healthy endpoint's median of 5 checks."""

    instance: str
    location: tuple[float, float]  # latitude, longitude
    rtt: tuple[float | None, ...]  # per region of PoolEvidence.regions; None: not measured


@dataclass(frozen=True)
class PoolEvidence:
    """Everything measured for one pool, by kind, strongest first (SPEC §10): networks, resolvers, countries, vantages."""

    pool: str
    regions: tuple[str, ...]  # the columns of every figure; mapped to the pool's current regions by name
    v4: NetworkTable
    v6: NetworkTable
    resolvers: Mapping[model.IPAddress, Figures] = field(default_factory=lambda: MappingProxyType({}))
    countries: Mapping[str, Figures] = field(default_factory=lambda: MappingProxyType({}))
    vantages: tuple[Vantage, ...] = ()
    version: int = 0  # differs whenever anything above does: caches of answers key on (pool, version)

    @classmethod
    def empty(cls, pool: str, regions: tuple[str, ...]) -> PoolEvidence:
        return cls(pool, regions, NetworkTable.empty(4, len(regions)), NetworkTable.empty(6, len(regions)))

    @property
    def networks(self) -> int:
        return len(self.v4) + len(self.v6)

    def table(self, version: int) -> NetworkTable:
        return self.v4 if version == 4 else self.v6


Evidence = Mapping[str, PoolEvidence]  # by pool name; pools without evidence are absent
NO_EVIDENCE: Evidence = MappingProxyType({})


def answer_digest(evidence: PoolEvidence) -> bytes:
    """A digest of what the answers depend on: which regions each key covers, its leader and its regions' order
    by RTT, and the vantage figures. New samples that move no order leave it alone, so the DNS workers are not
    sent (and do not rebuild maps for) evidence that answers exactly as before."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x00".join(evidence.regions).encode())
    for table in (evidence.v4, evidence.v6):
        digest.update(np.ascontiguousarray(table.keys).tobytes())
        digest.update(np.ascontiguousarray(table.leader).tobytes())
        if len(table):
            rtt = np.where(np.isnan(table.rtt), np.float32(np.inf), table.rtt)
            digest.update(np.ascontiguousarray(np.argsort(rtt, axis=1, kind="stable").astype(np.int16)).tobytes())
            digest.update(np.packbits(np.isnan(table.rtt)).tobytes())
    keyed: list[tuple[str, str, Figures]] = [("r", str(k), f) for k, f in evidence.resolvers.items()]
    keyed += [("c", k, f) for k, f in evidence.countries.items()]
    for kind, key, entry in sorted(keyed, key=lambda item: (item[0], item[1])):
        order = sorted((r is None, r or 0.0, i) for i, r in enumerate(entry.rtt))
        digest.update(repr((kind, key, entry.leader, [(gone, i) for gone, _r, i in order])).encode())
    digest.update(repr([(v.instance, v.location, v.rtt) for v in evidence.vantages]).encode())
    return digest.digest()
