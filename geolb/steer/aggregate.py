"""Beacons -> per-pool figures (SPEC §10): robust medians per network, resolver and country, with a decaying window,
bounded memory, the margin's leaders, saved under the cache directory and shared as aggregates through etcd.

Each (key, region) cell keeps a ring of its last RING RTTs and BUCKETS counters of samples per window/BUCKETS
of time. Its sample count is the sum of the counters still in the window (so a sample drops out up to
window/BUCKETS late, and figures change only on a new beacon or at a bucket boundary); its figure is the median
of the newest min(count, RING) RTTs of the ring (a 5000 ms sample among 20 ms ones does not move it).
All of it is numpy arrays, [slot, row, region], rows reused and doubled as needed: about 100 bytes a cell.

Privacy: a client is only ever kept as its network (IPv4 /24, IPv6 /48), in memory, on disk and in what is
shared with peers; never a full client address. Resolver addresses (the DNS server's own clients) are kept whole.
Peers share aggregates (per cell: median, count, and per row the last beacon time), never raw beacons.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import math
import os
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, ClassVar, Generic, TypeVar
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from geolb import model
from geolb.steer.evidence import V4_PREFIX, V6_PREFIX, Figures, NetworkTable, PoolEvidence

log = logging.getLogger("geolb.steer")

# geo_order(pool, version, addresses) -> int16 [n, k]: for each address (the network's first address: the whole of
# it for IPv4, its upper 64 bits for IPv6, as uint64) the pool's region indices in §3 rule-2 order (-1 padded, k <= 32).
# The margin's incumbent for a network measured for the first time is the first covered region in this order.
# Provided by steer/overlay.py (`geo_rankings`), vectorized: called once per evidence build for new rows only.
GeoOrder = Callable[[model.Pool, int, npt.NDArray[np.uint64]], npt.NDArray[np.int16]]

RING = 8  # samples kept per (key, region): the median of these is the figure
BUCKETS = 8  # sample counters per (key, region), each window/BUCKETS long
FORMAT = 1  # of saved files and exports
V6_FLAG = np.uint64(1 << 62)  # a network code with this bit is an IPv6 /48, else an IPv4 /24
NO_MEDIAN = 0xFFFF  # quantized median: none
COUNT_MAX = 0xFFFF
QUANTUM = 10.0  # quantized medians are in 1/10 ms

F32 = npt.NDArray[np.float32]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I16 = npt.NDArray[np.int16]
Bools = npt.NDArray[np.bool_]
KeyT = TypeVar("KeyT", bound=Hashable)


def network_code(network: model.IPNetwork) -> int:
    """The row key of the /24 or /48 a network is in: its prefix bits, with V6_FLAG for IPv6."""
    if network.version == 4:
        return int(network.network_address) >> (32 - V4_PREFIX)
    return (int(network.network_address) >> (128 - V6_PREFIX)) | int(V6_FLAG)


def tenths(ms: F32) -> U16:
    """Milliseconds as kept and shared: 1/10 ms in a uint16, from 0.1 to 6553.4 ms."""
    q: U16 = np.clip(np.rint(np.nan_to_num(ms, nan=0.0) * QUANTUM), 1, NO_MEDIAN - 1).astype(np.uint16)
    return q


def quantize(median: F32, count: npt.NDArray[Any]) -> U16:
    """Medians as they are shared: `tenths`, NO_MEDIAN where there is no sample."""
    q = tenths(median)
    q[(count == 0) | np.isnan(median)] = NO_MEDIAN
    return q


def dequantize(q: U16) -> F32:
    out = q.astype(np.float32) / np.float32(QUANTUM)
    out[q == NO_MEDIAN] = np.nan
    return out


def sorted_medians(ordered: F32, n: npt.NDArray[np.int64], axis: int) -> F32:
    """Medians along `axis` of values sorted ascending there, of which the first `n` count (NaN where n == 0)."""
    lo = np.expand_dims(np.maximum((n - 1) // 2, 0), axis)
    hi = np.expand_dims(np.maximum(n // 2, 0), axis)
    a = np.take_along_axis(ordered, lo, axis).squeeze(axis)
    b = np.take_along_axis(ordered, hi, axis).squeeze(axis)
    med = ((a + b) / 2).astype(np.float32)
    med[n == 0] = np.nan
    return med


def any_in_row(values: npt.NDArray[Any]) -> Bools:
    """Per row of [n, r]: whether any value is nonzero (a loop over the few columns beats numpy's reduce along rows)."""
    found = np.zeros(len(values), dtype=np.bool_)
    for column in range(values.shape[1]):
        found |= values[:, column] != 0
    return found


def column_medians(values: F32) -> tuple[F32, npt.NDArray[np.int64]]:
    """Per column: the median of the non-NaN values, and how many there are (NaN and 0 for no rows at all)."""
    if not len(values):  # a country whose networks all left the window: nothing to take a median of
        return np.full(values.shape[1], np.nan, dtype=np.float32), np.zeros(values.shape[1], dtype=np.int64)
    columns = np.ascontiguousarray(values.T)  # sorting contiguous rows is much faster than along axis 0
    n = (~np.isnan(columns)).sum(axis=1).astype(np.int64)
    return sorted_medians(np.sort(columns, axis=1), n, 1), n  # np.sort puts NaN last


def weighted_medians(values: F32, weights: U32) -> tuple[F32, U32]:
    """Along the (short) last axis: the lower weighted median of `values` (NaN where the weights sum to 0), and the sum.

    The value v_s with less than half the weight below it and at least half at or below it; O(S²) but no sort.
    """
    filled = np.where(weights > 0, np.nan_to_num(values, nan=np.inf), np.inf).astype(np.float32)
    total = weights.sum(axis=-1, dtype=np.uint64)
    med = np.full(total.shape, np.nan, dtype=np.float32)
    for s in range(values.shape[-1]):
        candidate = filled[..., s]
        below = np.zeros(total.shape, dtype=np.uint64)
        upto = np.zeros(total.shape, dtype=np.uint64)
        for t in range(values.shape[-1]):
            other = filled[..., t]
            below += np.where(other < candidate, weights[..., t], 0)
            upto += np.where(other <= candidate, weights[..., t], 0)
        hit = (weights[..., s] > 0) & (2 * below < total) & (2 * upto >= total)
        med[hit] = candidate[hit]
    return med, np.minimum(total, np.iinfo(np.uint32).max).astype(np.uint32)


def union(keys: Sequence[U64]) -> tuple[U64, list[npt.NDArray[np.intp]]]:
    """The sorted distinct keys of several unique-key arrays, and where each array's keys are in it."""
    joined = np.concatenate([*keys, np.zeros(0, dtype=np.uint64)])
    order = np.argsort(joined, kind="stable")
    ordered = joined[order]
    first = np.ones(len(ordered), dtype=np.bool_)
    first[1:] = ordered[1:] != ordered[:-1]
    position = np.empty(len(joined), dtype=np.intp)
    position[order] = np.cumsum(first) - 1
    bounds = np.cumsum([0] + [len(k) for k in keys])
    return ordered[first], [position[a:b] for a, b in itertools.pairwise(bounds)]


def choose_leaders(rtt: F32, previous: I16, latency: model.Latency, incumbent: I16 | None = None) -> I16:
    """The margin (SPEC §10) per row: the previous leader stays unless a covered region `beats` it.

    A row without a covered previous leader starts from `incumbent` (when covered) or its fastest region.
    """
    n = len(rtt)
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    rows = np.arange(n)
    covered = ~np.isnan(rtt)
    filled = np.where(covered, rtt, np.inf)
    fastest = np.zeros(n, dtype=np.int16)  # argmin, as a loop over the few columns (faster than along short rows)
    best = filled[:, 0].copy()
    for column in range(1, rtt.shape[1]):
        better = filled[:, column] < best
        fastest[better] = column
        best[better] = filled[better, column]
    lead = previous.astype(np.int16, copy=True)
    lost = (lead < 0) | (lead >= rtt.shape[1]) | ~covered[rows, np.clip(lead, 0, rtt.shape[1] - 1)]
    lead[lost] = fastest[lost]
    if incumbent is not None:
        usable = lost & (incumbent >= 0) & covered[rows, np.clip(incumbent, 0, rtt.shape[1] - 1)]
        lead[usable] = incumbent[usable]
    held = rtt[rows, lead]
    gain = held - best
    switch = (gain > latency.margin_ms) & (gain > latency.margin * held)
    lead[switch] = fastest[switch]
    return lead


# compare-exchange pairs that sort 8 values (Knuth's 19-comparator network): a vectorized sort of the rings
# fmt: off
SORT8 = (
    (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7), (0, 1), (2, 3),
    (4, 5), (6, 7), (2, 4), (3, 5), (1, 4), (3, 6), (1, 2), (3, 4), (5, 6),
)
# fmt: on


def ring_medians(values: F32, valid: Bools) -> F32:
    """Per cell of [RING, n, r] samples: the median of the valid ones (NaN where none is). Overwrites `values`."""
    values[~valid] = np.inf  # sorted last
    slots = list(values)
    if len(slots) == 8:
        for i, j in SORT8:
            low = np.minimum(slots[i], slots[j])
            np.maximum(slots[i], slots[j], out=slots[j])
            slots[i] = low
    else:
        slots = list(np.sort(values, axis=0))
    n = np.zeros(slots[0].shape, dtype=np.int8)
    for k in range(len(slots)):
        n += valid[k]
    low_index, high_index = (n - 1) // 2, n // 2
    low_value, high_value = slots[0].copy(), slots[0].copy()
    for k in range(1, len(slots)):
        np.copyto(low_value, slots[k], where=low_index == k)
        np.copyto(high_value, slots[k], where=high_index == k)
    med: F32 = ((low_value + high_value) / 2).astype(np.float32)
    med[n == 0] = np.nan
    return med


class _Rings(Generic[KeyT]):
    """Rows of per-region sample rings and counters for one kind of key (networks or resolvers), in numpy arrays.

    Ring slots and counters are the leading axis ([RING, rows, regions]), so each is one contiguous array to sort.
    """

    ROW_AXIS: ClassVar[frozenset[str]] = frozenset({"ring_rtt", "counts"})  # [slot, row, region]; others [row, ...]
    ARRAYS = ("used", "code", "last", "country", "epoch", "ring_rtt", "ring_pos", "counts", "median", "count", "stale")
    SAVED = ("code", "last", "country", "epoch", "ring_rtt", "ring_pos", "counts")

    def __init__(self, regions: int) -> None:
        self.regions = regions
        self.index: dict[KeyT, int] = {}
        self.keys: list[KeyT | None] = []
        self.free: list[int] = []
        self._allocate(0)

    def _allocate(self, cap: int) -> None:
        r = self.regions
        self.used = np.zeros(cap, dtype=np.bool_)
        self.code = np.zeros(cap, dtype=np.uint64)  # networks: network_code; resolvers: unused
        self.last = np.zeros(cap, dtype=np.float64)  # time of the row's latest beacon
        self.country = np.full(cap, -1, dtype=np.int16)
        self.epoch = np.zeros(cap, dtype=np.int64)  # the latest bucket epoch the row's counters were advanced to
        self.ring_rtt = np.full((RING, cap, r), NO_MEDIAN, dtype=np.uint16)  # 1/10 ms, as exports carry them
        self.ring_pos = np.zeros((cap, r), dtype=np.uint8)
        self.counts = np.zeros((BUCKETS, cap, r), dtype=np.uint16)  # slot: epoch % BUCKETS
        # figures as of `cache_epoch`, recomputed for stale rows only
        self.median = np.full((cap, r), np.nan, dtype=np.float32)
        self.count = np.zeros((cap, r), dtype=np.uint16)
        self.stale = np.zeros(cap, dtype=np.bool_)
        self.cache_epoch: int | None = None

    @property
    def cap(self) -> int:
        return len(self.used)

    def __len__(self) -> int:
        return len(self.index)

    def _grow(self) -> None:
        old = {name: getattr(self, name) for name in self.ARRAYS}
        cache_epoch = self.cache_epoch
        cap = self.cap
        self._allocate(max(16, 2 * cap))
        for name, array in old.items():
            if name in self.ROW_AXIS:
                getattr(self, name)[:, :cap] = array
            else:
                getattr(self, name)[:cap] = array
        self.cache_epoch = cache_epoch
        self.keys.extend([None] * (self.cap - cap))
        self.free.extend(range(self.cap - 1, cap - 1, -1))  # popped from the end: lowest row first

    def row(self, key: KeyT, now: float, epoch: int, limit: int) -> int:
        """The row of `key`, made (dropping the least recently measured rows when at `limit`) if new."""
        row = self.index.get(key)
        if row is not None:
            return row
        if len(self.index) >= limit:
            self.evict(max(1, limit // 64) + len(self.index) - limit)
        if not self.free:
            self._grow()
        row = self.free.pop()
        self.index[key] = row
        self.keys[row] = key
        self.used[row] = True
        self.last[row] = now
        self.country[row] = -1
        self.epoch[row] = epoch
        self.ring_rtt[:, row] = NO_MEDIAN
        self.ring_pos[row] = 0
        self.counts[:, row] = 0
        self.median[row] = np.nan
        self.count[row] = 0
        self.stale[row] = True
        return row

    def evict(self, n: int) -> None:
        """Drop the `n` least recently measured rows (ties: the lower row first)."""
        rows = np.flatnonzero(self.used)
        if n <= 0 or not len(rows):
            return
        if n < len(rows):
            rows = rows[np.argsort(self.last[rows], kind="stable")[:n]]
        for row in rows.tolist():
            self.drop(row)

    def drop(self, row: int) -> None:
        key = self.keys[row]
        if key is not None:
            del self.index[key]
        self.keys[row] = None
        self.used[row] = False
        self.stale[row] = False
        self.free.append(row)

    def fold(self, row: int, columns: npt.NDArray[np.intp], values: U16, second: int, epoch: int) -> None:
        """One beacon's RTTs (as `tenths`) at whole second `second`, bucket epoch `epoch`, into a row."""
        behind = epoch - int(self.epoch[row])
        if behind > 0:  # the counters of epochs that fell out of the window start again at 0
            if behind >= BUCKETS:
                self.counts[:, row] = 0
            else:
                self.counts[[(int(self.epoch[row]) + i) % BUCKETS for i in range(1, behind + 1)], row] = 0
            self.epoch[row] = epoch
        elif behind <= -BUCKETS:
            return  # older than the window already
        pos = self.ring_pos[row, columns].astype(np.intp)
        self.ring_rtt[pos, row, columns] = values
        self.ring_pos[row, columns] = (pos + 1) % RING
        slot = epoch % BUCKETS
        self.counts[slot, row, columns] = np.minimum(self.counts[slot, row, columns].astype(np.uint32) + 1, COUNT_MAX)
        self.last[row] = max(float(self.last[row]), second)
        self.stale[row] = True

    def figures(self, epoch: int) -> tuple[npt.NDArray[np.intp], F32, U16]:
        """(rows in use, their medians [n, regions] (NaN: no sample in the window), their counts in the window)."""
        if self.cache_epoch is None or epoch < self.cache_epoch:
            self.stale[:] = self.used
        elif epoch > self.cache_epoch:  # only rows with samples in the epochs that left the window change
            rows = np.flatnonzero(self.used & ~self.stale)
            last = self.epoch[rows]
            left = np.zeros(len(rows), dtype=np.bool_)
            for slot in range(BUCKETS):
                slot_epoch = last - ((last - slot) % BUCKETS)
                gone = (slot_epoch <= epoch - BUCKETS) & (slot_epoch > self.cache_epoch - BUCKETS)
                left |= gone & any_in_row(self.counts[slot][rows])
            self.stale[rows[left]] = True
        self.cache_epoch = epoch
        stale = np.flatnonzero(self.stale)
        if len(stale):
            last = self.epoch[stale]
            slot_epoch = last[None, :] - ((last[None, :] - np.arange(BUCKETS)[:, None]) % BUCKETS)  # [BUCKETS, n]
            live = slot_epoch > epoch - BUCKETS
            counted = np.zeros((len(stale), self.regions), dtype=np.uint32)
            for slot in range(BUCKETS):
                counted += np.where(live[slot][:, None], self.counts[slot, stale], 0)
            # the rings fill in time order: the newest `counted` samples of a ring are the ones in the window
            ring = self.ring_rtt[:, stale]
            newest = self.ring_pos[stale].astype(np.int16) - 1
            age = (newest[None, :, :] - np.arange(RING, dtype=np.int16)[:, None, None]) % RING  # [RING, n, r]: 0 newest
            self.median[stale] = ring_medians(dequantize(ring), (age < counted[None, :, :]) & (ring != NO_MEDIAN))
            self.count[stale] = np.minimum(counted, COUNT_MAX)
            self.stale[stale] = False
        rows = np.flatnonzero(self.used)
        return rows, self.median[rows], self.count[rows]

    def set_columns(self, order: Sequence[int]) -> None:
        """Rearrange the region columns: new column j is old column order[j], or empty when that is -1."""
        take = np.array([max(o, 0) for o in order], dtype=np.intp)
        empty = np.array([o < 0 for o in order], dtype=np.bool_)
        self.regions = len(order)
        for name, fill in (("ring_rtt", NO_MEDIAN), ("ring_pos", 0), ("counts", 0), ("median", np.nan), ("count", 0)):
            array = getattr(self, name)
            if array.shape[-1] == 0:
                moved = np.zeros((*array.shape[:-1], len(order)), dtype=array.dtype)
                moved[...] = fill
            else:
                moved = array[..., take]
                moved[..., empty] = fill
            setattr(self, name, moved)
        self.stale[:] = self.used

    def rebucket(self, old_len: float, new_len: float) -> None:
        """Counters for a new window: each old bucket's count moves to the new bucket of its middle."""
        rows = np.flatnonzero(self.used)
        last = self.epoch[rows]
        new_last = np.floor((last + 0.5) * old_len / new_len).astype(np.int64)
        counts = np.zeros_like(self.counts[:, rows])
        for slot in range(BUCKETS):
            slot_epoch = last - ((last - slot) % BUCKETS)
            moved = np.floor((slot_epoch + 0.5) * old_len / new_len).astype(np.int64)
            keep = np.flatnonzero(moved > new_last - BUCKETS)
            np.add.at(counts, (moved[keep] % BUCKETS, keep), self.counts[slot, rows[keep]])
        self.counts[:, rows] = counts
        self.epoch[rows] = new_last
        self.stale[:] = self.used
        self.cache_epoch = None

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """The rows in use, as arrays to save (figure caches left out)."""
        rows = np.flatnonzero(self.used)
        return {name: getattr(self, name)[:, rows] if name in self.ROW_AXIS else getattr(self, name)[rows] for name in self.SAVED}

    def restore(self, keys: Sequence[KeyT], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        n = len(keys)
        cap = 16
        while cap < n:
            cap *= 2
        self.regions = arrays["ring_rtt"].shape[2]
        self._allocate(cap)
        for name in self.SAVED:
            if name in self.ROW_AXIS:
                getattr(self, name)[:, :n] = arrays[name].astype(getattr(self, name).dtype, casting="safe")
            else:
                getattr(self, name)[:n] = arrays[name].astype(getattr(self, name).dtype, casting="safe")
        self.used[:n] = True
        self.stale[:n] = True
        self.keys = [*keys, *([None] * (cap - n))]
        self.index = {key: row for row, key in enumerate(keys)}
        self.free = list(range(cap - 1, n - 1, -1))


@dataclass
class _Aggregates:
    """One instance's aggregates of a pool: what export() carries and evidence() combines."""

    regions: tuple[str, ...]
    countries: tuple[str, ...]
    net_code: U64  # [m], unique
    net_last: U32  # [m] seconds
    net_country: I16  # [m] index in countries, -1: unknown
    net_median: U16  # [m, regions] quantized
    net_count: U16
    resolvers: tuple[model.IPAddress, ...]
    res_last: U32
    res_median: U16
    res_count: U16

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            name: getattr(self, name)
            for name in ("net_code", "net_last", "net_country", "net_median", "net_count", "res_last", "res_median", "res_count")
        }

    def check(self) -> None:
        """ValueError unless the arrays fit together."""
        m, r, k = len(self.net_code), len(self.regions), len(self.resolvers)
        shapes = {
            "net_last": (m,),
            "net_country": (m,),
            "net_median": (m, r),
            "net_count": (m, r),
            "res_last": (k,),
            "res_median": (k, r),
            "res_count": (k, r),
        }
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, not {shape}")
        if len(self.net_country) and int(self.net_country.max(initial=-1)) >= len(self.countries):
            raise ValueError("country index out of range")
        if len(np.unique(self.net_code)) != m or len(set(self.resolvers)) != k:
            raise ValueError("duplicate keys")

    def upsert(self, newer: _Aggregates) -> _Aggregates:
        """These aggregates with the rows of `newer` (a delta export of the same instance) replacing or added."""
        if newer.regions != self.regions:
            return newer
        countries = tuple(sorted(set(self.countries) | set(newer.countries)))
        ours = _remap_countries(self.net_country, self.countries, countries)
        theirs = _remap_countries(newer.net_country, newer.countries, countries)
        keep = ~np.isin(self.net_code, newer.net_code)
        fresh = set(newer.resolvers)
        keep_res = np.array([a not in fresh for a in self.resolvers], dtype=np.bool_)
        return _Aggregates(
            self.regions,
            countries,
            np.concatenate([self.net_code[keep], newer.net_code]),
            np.concatenate([self.net_last[keep], newer.net_last]),
            np.concatenate([ours[keep], theirs]),
            np.concatenate([self.net_median[keep], newer.net_median]),
            np.concatenate([self.net_count[keep], newer.net_count]),
            tuple(a for a, k in zip(self.resolvers, keep_res.tolist(), strict=True) if k) + newer.resolvers,
            np.concatenate([self.res_last[keep_res], newer.res_last]),
            np.concatenate([self.res_median[keep_res], newer.res_median]),
            np.concatenate([self.res_count[keep_res], newer.res_count]),
        )


def _remap_countries(index: I16, old: Sequence[str], new: Sequence[str]) -> I16:
    position = {c: i for i, c in enumerate(new)}
    table = np.array([position[c] for c in old] + [-1], dtype=np.int16)  # -1 indexes the trailing -1
    return table[index.astype(np.intp)]


def _address_order(address: model.IPAddress) -> tuple[int, int]:
    return (address.version, int(address))


@dataclass
class _PoolRum:
    """One pool's own rows, its peers' aggregates and what the last evidence build decided."""

    name: str
    regions: tuple[str, ...]
    window: float
    networks: _Rings[int]
    resolvers: _Rings[model.IPAddress]
    countries: list[str] = field(default_factory=list)
    country_index: dict[str, int] = field(default_factory=dict)
    peers: dict[str, _Aggregates] = field(default_factory=dict)
    beacons: int = 0
    changed: bool = True  # since the last evidence build
    built_epoch: int | None = None
    version: int = 0
    built: PoolEvidence | None = None
    built_latency: model.Latency | None = None
    lead_codes: U64 = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # sorted network codes ...
    lead_regions: I16 = field(default_factory=lambda: np.zeros(0, dtype=np.int16))  # ... and their leaders
    resolver_leads: dict[model.IPAddress, int] = field(default_factory=dict)
    country_leads: dict[str, int] = field(default_factory=dict)

    @property
    def epoch_len(self) -> float:
        return self.window / BUCKETS

    def epoch(self, now: float) -> int:
        return math.floor(now / self.epoch_len)

    def sync(self, pool: model.Pool) -> None:
        """Columns in the pool's region order (by name; gone regions dropped) and counters for its window."""
        names = tuple(region.name for region in pool.regions)
        if names != self.regions:
            order = [self.regions.index(n) if n in self.regions else -1 for n in names]
            self.networks.set_columns(order)
            self.resolvers.set_columns(order)
            moved = np.array([names.index(n) if n in names else -1 for n in self.regions] + [-1], dtype=np.int16)
            self.lead_regions = moved[self.lead_regions.astype(np.intp)]
            self.resolver_leads = {k: int(moved[v]) for k, v in self.resolver_leads.items()}
            self.country_leads = {k: int(moved[v]) for k, v in self.country_leads.items()}
            self.regions = names
            self.changed = True
        window = pool.latency.window
        if window != self.window:
            old_len = self.epoch_len
            self.window = window
            self.networks.rebucket(old_len, self.epoch_len)
            self.resolvers.rebucket(old_len, self.epoch_len)
            self.changed = True

    def country_of(self, country: str) -> int:
        index = self.country_index.get(country)
        if index is None:
            index = self.country_index[country] = len(self.countries)
            self.countries.append(country)
        return index

    def own(self, now: float) -> _Aggregates:
        """This instance's aggregates as of `now`: rows with a sample in the window."""
        epoch = self.epoch(now)
        rows, median, count = self.networks.figures(epoch)
        keep = any_in_row(count)
        rows, median, count = rows[keep], median[keep], count[keep]
        res_rows, res_median, res_count = self.resolvers.figures(epoch)
        res_keep = any_in_row(res_count)
        res_rows, res_median, res_count = res_rows[res_keep], res_median[res_keep], res_count[res_keep]
        resolvers: list[model.IPAddress] = []
        for row in res_rows.tolist():
            key = self.resolvers.keys[row]
            assert key is not None
            resolvers.append(key)
        return _Aggregates(
            self.regions,
            tuple(self.countries),
            self.networks.code[rows],
            self.networks.last[rows].astype(np.uint32),
            self.networks.country[rows],
            quantize(median, count),
            count,
            tuple(resolvers),
            self.resolvers.last[res_rows].astype(np.uint32),
            quantize(res_median, res_count),
            res_count,
        )


def _columns(regions: Sequence[str], source: Sequence[str]) -> list[tuple[int, int]]:
    """(our column, the source's column) for each region both have."""
    at = {name: i for i, name in enumerate(source)}
    return [(j, at[name]) for j, name in enumerate(regions) if name in at]


def _combine(rows: int, regions: Sequence[str], parts: Sequence[tuple[npt.NDArray[np.intp], _Aggregates, U16, U16]]) -> tuple[F32, U32]:
    """Per cell of `rows` union rows: the count-weighted median of the parts' medians, and their summed counts.

    parts: (union row of each of the part's rows, the part, its medians, its counts), in instance-name order.
    """
    width = len(regions)
    if len(parts) == 1:
        inverse, source, median, count = parts[0]
        out_median = np.full((rows, width), np.nan, dtype=np.float32)
        out_count = np.zeros((rows, width), dtype=np.uint32)
        for j, c in _columns(regions, source.regions):
            out_median[inverse, j] = dequantize(median[:, c])
            out_count[inverse, j] = np.where(median[:, c] == NO_MEDIAN, 0, count[:, c])
        return out_median, out_count
    values = np.full((rows, width, len(parts)), np.nan, dtype=np.float32)
    weights = np.zeros((rows, width, len(parts)), dtype=np.uint32)
    for s, (inverse, source, median, count) in enumerate(parts):
        for j, c in _columns(regions, source.regions):
            values[inverse, j, s] = dequantize(median[:, c])
            weights[inverse, j, s] = np.where(median[:, c] == NO_MEDIAN, 0, count[:, c])
    return weighted_medians(values, weights)


def _networks(
    regions: Sequence[str], sources: Sequence[_Aggregates], oldest: float, latency: model.Latency
) -> tuple[U64, F32, U32, I16, list[str]]:
    """The union of the sources' networks seen since `oldest`: codes (sorted), RTTs judged by min_samples, counts,
    and each network's country (an index in the returned list; the freshest source's, ties to the first source)."""
    live = [(source, source.net_last >= oldest) for source in sources]
    codes, inverses = union([s.net_code[keep] for s, keep in live])
    countries = sorted({c for s, _ in live for c in s.countries})
    net_country = np.full(len(codes), -1, dtype=np.int16)
    country_last = np.full(len(codes), -1, dtype=np.int64)
    parts = []
    for (source, keep), inverse in zip(live, inverses, strict=True):
        parts.append((inverse, source, source.net_median[keep], source.net_count[keep]))
        theirs = _remap_countries(source.net_country[keep], source.countries, countries)
        seen = np.where(theirs >= 0, source.net_last[keep].astype(np.int64), -1)
        newer = seen > country_last[inverse]
        net_country[inverse[newer]] = theirs[newer]
        country_last[inverse[newer]] = seen[newer]
    median, count = _combine(len(codes), regions, parts)
    rtt = np.where(count >= latency.min_samples, median, np.float32(np.nan)).astype(np.float32)
    return codes, rtt, count, net_country, countries


def _countries(rum: _PoolRum, rtt: F32, net_country: I16, countries: Sequence[str], latency: model.Latency) -> dict[str, Figures]:
    """Per country: the median of its networks' figures, each network once, where min_networks have one."""
    names: list[str] = []
    figures: list[F32] = []
    networks: list[npt.NDArray[np.int64]] = []
    with_country = np.flatnonzero(net_country >= 0)
    by_country = with_country[np.argsort(net_country[with_country], kind="stable")]
    bounds = np.searchsorted(net_country[by_country], np.arange(len(countries) + 1))
    for c, name in enumerate(countries):
        med, n = column_medians(rtt[by_country[bounds[c] : bounds[c + 1]]])
        med[n < latency.min_networks] = np.nan
        if not np.isnan(med).all():
            names.append(name)
            figures.append(med)
            networks.append(n)
    if not names:
        rum.country_leads = {}
        return {}
    previous = np.array([rum.country_leads.get(name, -1) for name in names], dtype=np.int16)
    leads = choose_leaders(np.stack(figures), previous, latency)
    rum.country_leads = dict(zip(names, leads.tolist(), strict=True))
    return {
        name: Figures(_optional(med), tuple(int(x) for x in n), lead)
        for name, med, n, lead in zip(names, figures, networks, leads.tolist(), strict=True)
    }


def _resolvers(rum: _PoolRum, sources: Sequence[_Aggregates], oldest: float, latency: model.Latency) -> dict[model.IPAddress, Figures]:
    """Per resolver seen since `oldest`: as a network, combined over the sources, leaders kept across builds."""
    addresses = sorted(
        {a for s in sources for a, last in zip(s.resolvers, s.res_last.tolist(), strict=True) if last >= oldest}, key=_address_order
    )
    position = {a: i for i, a in enumerate(addresses)}
    parts = []
    for source in sources:
        keep = source.res_last >= oldest
        inverse = np.array([position[a] for a, k in zip(source.resolvers, keep.tolist(), strict=True) if k], dtype=np.intp)
        parts.append((inverse, source, source.res_median[keep], source.res_count[keep]))
    median, count = _combine(len(addresses), rum.regions, parts)
    rtt = np.where(count >= latency.min_samples, median, np.float32(np.nan)).astype(np.float32)
    covered = np.flatnonzero(any_in_row(~np.isnan(rtt)))
    keys = [addresses[i] for i in covered.tolist()]
    previous = np.array([rum.resolver_leads.get(a, -1) for a in keys], dtype=np.int16)
    leads = choose_leaders(rtt[covered], previous, latency)
    rum.resolver_leads = dict(zip(keys, leads.tolist(), strict=True))
    return {
        a: Figures(_optional(rtt[i]), tuple(int(x) for x in count[i]), lead)
        for a, i, lead in zip(keys, covered.tolist(), leads.tolist(), strict=True)
    }


class RumStore:
    """Every pool's beacons, folded as they arrive; `evidence` makes the PoolEvidence the answer path reads.

    `instance` names this instance's aggregates among its peers' (the same name the peers merge them under).
    """

    def __init__(self, max_networks: int = 1_000_000, instance: str = "") -> None:
        self.max_networks = max_networks
        self.instance = instance
        self._pools: dict[str, _PoolRum] = {}

    def _pool(self, pool: model.Pool) -> _PoolRum:
        rum = self._pools.get(pool.name)
        if rum is None:
            regions = tuple(region.name for region in pool.regions)
            rum = _PoolRum(pool.name, regions, pool.latency.window, _Rings(len(regions)), _Rings(len(regions)))
            self._pools[pool.name] = rum
        rum.sync(pool)
        return rum

    def add(
        self,
        pool: model.Pool,
        network: model.IPNetwork,  # the client's /24 or /48
        rtt: Mapping[str, float],  # region name -> ms, already validated against the pool
        now: float,  # time.time()
        country: str | None = None,  # the client network's GeoIP country
        resolver: model.IPAddress | None = None,  # from resolver discovery, when the token was seen
    ) -> None:
        rum = self._pool(pool)
        at = {name: i for i, name in enumerate(rum.regions)}
        pairs = [(at[name], ms) for name, ms in rtt.items() if name in at and math.isfinite(ms) and ms > 0]
        if not pairs:
            return
        columns = np.array([c for c, _ in pairs], dtype=np.intp)
        values = np.array([min(max(round(ms * QUANTUM), 1), NO_MEDIAN - 1) for _, ms in pairs], dtype=np.uint16)  # tenths
        second = min(max(int(now), 0), 2**32 - 1)  # as exports carry it
        epoch = rum.epoch(second)
        row = rum.networks.row(network_code(network), second, epoch, self.max_networks)
        rum.networks.code[row] = network_code(network)
        rum.networks.fold(row, columns, values, second, epoch)
        if country:
            rum.networks.country[row] = rum.country_of(country)
        if resolver is not None:
            rum.resolvers.fold(rum.resolvers.row(resolver, second, epoch, self.max_networks), columns, values, second, epoch)
        rum.beacons += 1
        rum.changed = True

    def dirty(self, pool_name: str, now: float) -> bool:
        """Whether evidence(pool, now) may differ from the last one built: new beacons or peers, or a bucket boundary passed."""
        rum = self._pools.get(pool_name)
        return rum is not None and (rum.changed or rum.built_epoch != rum.epoch(now))

    def evidence(self, pool: model.Pool, now: float, geo_order: GeoOrder | None = None) -> PoolEvidence:
        """The pool's evidence as of `now`: own and peers' aggregates combined, judged by the pool's `latency`.

        The same object (and version) as last time while nothing changed. A network without a covered leader
        (new, or its leader lost its figure) starts from the first covered region of `geo_order`, else its fastest.
        """
        rum = self._pool(pool)
        latency = pool.latency
        if rum.built is not None and not rum.changed and rum.built_epoch == rum.epoch(now) and rum.built_latency == latency:
            return rum.built
        sources = [source for _, source in sorted([(self.instance, rum.own(now)), *rum.peers.items()], key=lambda item: item[0])]
        oldest = (rum.epoch(now) - BUCKETS + 1) * rum.epoch_len  # as the rows' own samples drop out
        codes, rtt, count, net_country, countries = _networks(rum.regions, sources, oldest, latency)
        country_figures = _countries(rum, rtt, net_country, countries, latency)
        v4, v6 = self._network_tables(pool, rum, codes, rtt, count, geo_order)
        evidence = PoolEvidence(
            pool.name,
            rum.regions,
            v4,
            v6,
            MappingProxyType(_resolvers(rum, sources, oldest, latency)),
            MappingProxyType(country_figures),
        )
        if rum.built is None or not _same(rum.built, evidence):
            if rum.built is not None or not _same(evidence, PoolEvidence.empty(pool.name, rum.regions)):
                rum.version += 1
            rum.built = replace(evidence, version=rum.version)
        rum.changed = False
        rum.built_epoch = rum.epoch(now)
        rum.built_latency = latency
        return rum.built

    def _network_tables(
        self, pool: model.Pool, rum: _PoolRum, codes: U64, rtt: F32, count: U32, geo_order: GeoOrder | None
    ) -> tuple[NetworkTable, NetworkTable]:
        """The covered networks by IP version, with their leaders (kept across builds)."""
        covered = any_in_row(~np.isnan(rtt))
        if not covered.all():
            codes, rtt, count = codes[covered], rtt[covered], count[covered]
        if np.array_equal(rum.lead_codes, codes):  # the usual case: the same networks as last time
            previous = rum.lead_regions
        else:
            known = np.searchsorted(rum.lead_codes, codes)
            known_ok = known < len(rum.lead_codes)
            known_ok[known_ok] = rum.lead_codes[known[known_ok]] == codes[known_ok]
            previous = np.full(len(codes), -1, dtype=np.int16)
            previous[known_ok] = rum.lead_regions[known[known_ok]]
        incumbent = None
        if geo_order is not None:
            incumbent = self._geo_incumbents(pool, geo_order, codes, rtt, previous)
        leaders = choose_leaders(rtt, previous, pool.latency, incumbent)
        rum.lead_codes, rum.lead_regions = codes, leaders
        first_v6 = int(np.searchsorted(codes, V6_FLAG))  # codes are sorted: IPv4 first
        return (
            NetworkTable(4, codes[:first_v6], rtt[:first_v6], count[:first_v6], leaders[:first_v6]),
            NetworkTable(6, codes[first_v6:] & ~V6_FLAG, rtt[first_v6:], count[first_v6:], leaders[first_v6:]),
        )

    @staticmethod
    def _geo_incumbents(pool: model.Pool, geo_order: GeoOrder, codes: U64, rtt: F32, previous: I16) -> I16 | None:
        """Per row without a covered leader yet: the first covered region in the distance order (-1: none)."""
        rows = np.arange(len(codes))
        width = rtt.shape[1]
        covered = ~np.isnan(rtt)
        new = (previous < 0) | ~covered[rows, np.clip(previous, 0, max(width - 1, 0))]
        if not new.any():
            return None
        incumbent = np.full(len(codes), -1, dtype=np.int16)
        v6 = (codes & V6_FLAG) != 0
        for version, shift, family in ((4, 32 - V4_PREFIX, ~v6), (6, 64 - V6_PREFIX, v6)):
            wanted = np.flatnonzero(new & family)
            if not len(wanted):
                continue
            addresses = ((codes[wanted] & ~V6_FLAG) << np.uint64(shift)).astype(np.uint64)
            order = np.asarray(geo_order(pool, version, addresses), dtype=np.int16).reshape(len(wanted), -1)
            chosen = np.full(len(wanted), -1, dtype=np.int16)
            for j in range(order.shape[1]):
                idx = order[:, j]
                ok = (chosen < 0) & (idx >= 0) & (idx < width)
                ok[ok] = covered[wanted[ok], idx[ok]]
                chosen[ok] = idx[ok]
            incumbent[wanted] = chosen
        return incumbent

    def stats(self, pool_name: str) -> dict[str, int]:
        """For /v1/status and /metrics: this instance's rows, the countries of the last evidence, beacons accepted."""
        rum = self._pools.get(pool_name)
        if rum is None:
            return {"networks": 0, "resolvers": 0, "countries": 0, "beacons": 0, "peers": 0}
        return {
            "networks": len(rum.networks),
            "resolvers": len(rum.resolvers),
            "countries": len(rum.built.countries) if rum.built else 0,
            "beacons": rum.beacons,
            "peers": len(rum.peers),
        }

    def retain(self, pool_names: Iterable[str]) -> None:
        """Forget the pools not named (after a reload removed them)."""
        keep = set(pool_names)
        for name in [n for n in self._pools if n not in keep]:
            del self._pools[name]

    # --- persistence -------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Every pool's rows to `folder`/<pool>.npz, each written to a temporary file and renamed into place;
        the files of pools no longer held are removed."""
        write_saved(folder, self.saved())

    def saved(self) -> dict[str, dict[str, npt.NDArray[Any]]]:
        """What save() writes, copied at once (keys and arrays of the same moment): the writing, the slow part,
        may then go on in a thread while beacons are folded in."""
        prepared: dict[str, dict[str, npt.NDArray[Any]]] = {}
        for rum in self._pools.values():
            meta = {
                "format": FORMAT,
                "pool": rum.name,
                "regions": list(rum.regions),
                "window": rum.window,
                "ring": RING,
                "buckets": BUCKETS,
                "countries": rum.countries,
                "beacons": rum.beacons,
                "resolvers": [str(key) for key in rum.resolvers.keys if key is not None],
                "resolver_leads": {str(k): v for k, v in rum.resolver_leads.items()},
                "country_leads": rum.country_leads,
            }
            arrays = {f"net_{k}": v for k, v in rum.networks.state().items()}
            arrays |= {f"res_{k}": v for k, v in rum.resolvers.state().items()}
            arrays |= {"lead_codes": rum.lead_codes, "lead_regions": rum.lead_regions}
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            prepared[rum.name] = {name: np.array(value, copy=True) for name, value in arrays.items()}
        return prepared

    def load(self, folder: Path) -> None:
        """The pools saved in `folder`; an unreadable, corrupt or old-format file is passed over with a warning."""
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.npz")):
            try:
                rum = self._read(path)
            except Exception as exc:  # whatever damage the file has: the measurements are not worth a crash
                log.warning("RUM measurements in %s ignored: %s", path, exc)
                continue
            self._pools[rum.name] = rum

    def _read(self, path: Path) -> _PoolRum:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta.get("format") != FORMAT or meta.get("ring") != RING or meta.get("buckets") != BUCKETS:
            raise ValueError(f"format {meta.get('format')}, not {FORMAT}")
        regions = tuple(str(r) for r in meta["regions"])
        window = float(meta["window"])
        if not window > 0:
            raise ValueError("bad window")
        rum = _PoolRum(str(meta["pool"]), regions, window, _Rings(len(regions)), _Rings(len(regions)))
        rum.countries = [str(c) for c in meta["countries"]]
        rum.country_index = {c: i for i, c in enumerate(rum.countries)}
        rum.beacons = int(meta["beacons"])
        net = {k[4:]: v for k, v in arrays.items() if k.startswith("net_")}
        res = {k[4:]: v for k, v in arrays.items() if k.startswith("res_")}
        for part in (net, res):
            n, r = len(part["code"]), len(regions)
            shapes = {"ring_rtt": (RING, n, r), "counts": (BUCKETS, n, r), "ring_pos": (n, r)}
            shapes |= {"last": (n,), "country": (n,), "epoch": (n,)}
            if any(part[name].shape != shape for name, shape in shapes.items()):
                raise ValueError("arrays do not fit the regions or each other")
            if int(part["country"].max(initial=-1)) >= len(rum.countries) or int(part["country"].min(initial=-1)) < -1:
                raise ValueError("country indices out of range")
            if (part["ring_pos"] >= RING).any() or (part["ring_pos"] < 0).any():
                raise ValueError("indices out of range")
        net_keys = [int(c) for c in net["code"].tolist()]
        res_keys = [ipaddress.ip_address(a) for a in meta["resolvers"]]
        if len(set(net_keys)) != len(net_keys) or len(res_keys) != len(res["code"]):
            raise ValueError("keys do not fit the arrays")
        rum.networks.restore(net_keys, net)
        rum.resolvers.restore(res_keys, res)
        rum.lead_codes = arrays["lead_codes"].astype(np.uint64)
        rum.lead_regions = arrays["lead_regions"].astype(np.int16)
        if rum.lead_codes.shape != rum.lead_regions.shape:
            raise ValueError("leaders do not fit together")
        rum.resolver_leads = {ipaddress.ip_address(k): int(v) for k, v in meta["resolver_leads"].items()}
        rum.country_leads = {str(k): int(v) for k, v in meta["country_leads"].items()}
        leaders = [*rum.lead_regions.tolist(), *rum.resolver_leads.values(), *rum.country_leads.values()]
        if any(not -1 <= lead < len(regions) for lead in leaders):
            raise ValueError("a leader names no region")  # it would index past the regions at the next evidence
        return rum

    # --- cluster sharing ----------------------------------------------------------------

    def export(self, pool_name: str, since: float | None = None, now: float | None = None) -> bytes:
        """This instance's own aggregates of a pool as of `now` (default: the time now): a compressed npz, per
        network 8 bytes of prefix, 4 of last beacon time, 2 of country and per region 2 of median (1/10 ms) and
        2 of count. With `since`, only rows measured at or after it: a delta that merge() lays over what it holds
        of this instance; rows dropped here leave a peer only with the next full export (or the window)."""
        rum = self._pools.get(pool_name)
        if rum is None:
            return b""  # nothing measured in that pool
        own = rum.own(time.time() if now is None else now)
        if since is not None:
            keep = own.net_last >= since
            keep_res = own.res_last >= since
            own = _Aggregates(
                own.regions,
                own.countries,
                own.net_code[keep],
                own.net_last[keep],
                own.net_country[keep],
                own.net_median[keep],
                own.net_count[keep],
                tuple(a for a, k in zip(own.resolvers, keep_res.tolist(), strict=True) if k),
                own.res_last[keep_res],
                own.res_median[keep_res],
                own.res_count[keep_res],
            )
        return _encode(pool_name, own, delta=since is not None)

    def merge(self, instance: str, pool_name: str, data: bytes | None) -> None:
        """A peer's export of a pool (None or b"": forget that peer); a bad one is passed over with a warning."""
        rum = self._pools.get(pool_name)
        if not data:
            if rum is not None and rum.peers.pop(instance, None) is not None:
                rum.changed = True
            return
        if instance == self.instance:
            return
        try:
            aggregates, delta = _decode(data, pool_name)
        except Exception as exc:  # a peer's damaged or foreign data: not worth a crash
            log.warning("RUM aggregates of %s from %s ignored: %s", pool_name, instance, exc)
            return
        if rum is None:
            rum = _PoolRum(
                pool_name,
                aggregates.regions,
                model.DEFAULT_LATENCY.window,
                _Rings(len(aggregates.regions)),
                _Rings(len(aggregates.regions)),
            )
            self._pools[pool_name] = rum
        held = rum.peers.get(instance)
        rum.peers[instance] = held.upsert(aggregates) if delta and held is not None else aggregates
        rum.changed = True


def _write_npz(out: IO[bytes], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """An .npz (np.load reads it) compressed at zlib level 1: twice as fast as np.savez_compressed, as small."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


EXPORT_MAGIC = b"geolb-rum\x01"


def _encode(pool_name: str, aggregates: _Aggregates, delta: bool) -> bytes:
    """Aggregates as bytes: the same aggregates always give the same bytes (peers compare digests).

    EXPORT_MAGIC, then zlib of: a JSON header's length (uint32) and the header, then the arrays, little-endian,
    rows sorted by key, network keys as differences (they compress to little), cell arrays region-major.
    """
    order = np.argsort(aggregates.net_code, kind="stable")
    codes = aggregates.net_code[order]
    countries = sorted(set(aggregates.countries))
    country = _remap_countries(aggregates.net_country[order], aggregates.countries, countries)
    by_address = sorted(range(len(aggregates.resolvers)), key=lambda i: _address_order(aggregates.resolvers[i]))
    resolvers = np.array(by_address, dtype=np.intp)
    header = {
        "format": FORMAT,
        "pool": pool_name,
        "regions": list(aggregates.regions),
        "countries": countries,
        "resolvers": [str(aggregates.resolvers[i]) for i in by_address],
        "networks": len(codes),
        "delta": delta,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    arrays = (
        np.diff(codes, prepend=np.uint64(0)).astype("<u8"),
        aggregates.net_last[order].astype("<u4"),
        country.astype("<i2"),
        aggregates.net_median[order].T.astype("<u2"),
        aggregates.net_count[order].T.astype("<u2"),
        aggregates.res_last[resolvers].astype("<u4"),
        aggregates.res_median[resolvers].T.astype("<u2"),
        aggregates.res_count[resolvers].T.astype("<u2"),
    )
    body = b"".join([len(head).to_bytes(4, "little"), head, *(np.ascontiguousarray(a).tobytes() for a in arrays)])
    return EXPORT_MAGIC + zlib.compress(body, 6)


def _decode(data: bytes, pool_name: str) -> tuple[_Aggregates, bool]:
    """The aggregates of an export and whether it is a delta; ValueError (or another error) when it is not one."""
    if not data.startswith(EXPORT_MAGIC):
        raise ValueError("not a geolb RUM export")
    body = zlib.decompress(data[len(EXPORT_MAGIC) :])
    size = int.from_bytes(body[:4], "little")
    header = json.loads(body[4 : 4 + size])
    if header.get("format") != FORMAT or header.get("pool") != pool_name:
        raise ValueError(f"format {header.get('format')} of pool {header.get('pool')!r}")
    m, k, r = int(header["networks"]), len(header["resolvers"]), len(header["regions"])
    at = 4 + size

    def take(dtype: str, *shape: int) -> npt.NDArray[Any]:
        nonlocal at
        count = math.prod(shape)
        array = np.frombuffer(body, dtype=dtype, count=count, offset=at).reshape(shape)
        at += array.nbytes
        return array

    codes = np.cumsum(take("<u8", m), dtype=np.uint64)
    aggregates = _Aggregates(
        tuple(str(name) for name in header["regions"]),
        tuple(str(c) for c in header["countries"]),
        codes,
        take("<u4", m).astype(np.uint32),
        take("<i2", m).astype(np.int16),
        take("<u2", r, m).T.astype(np.uint16),
        take("<u2", r, m).T.astype(np.uint16),
        tuple(ipaddress.ip_address(a) for a in header["resolvers"]),
        take("<u4", k).astype(np.uint32),
        take("<u2", r, k).T.astype(np.uint16),
        take("<u2", r, k).T.astype(np.uint16),
    )
    if at != len(body):
        raise ValueError(f"{len(body) - at} bytes left over")
    aggregates.check()
    return aggregates, bool(header["delta"])


def _optional(row: F32) -> tuple[float | None, ...]:
    return tuple(None if math.isnan(v) else float(v) for v in row.tolist())


def _same(a: PoolEvidence, b: PoolEvidence) -> bool:
    """Whether two builds carry the same evidence (the version aside)."""
    if a.regions != b.regions or a.resolvers != b.resolvers or a.countries != b.countries or a.vantages != b.vantages:
        return False
    for x, y in ((a.v4, b.v4), (a.v6, b.v6)):
        if not (
            np.array_equal(x.keys, y.keys)
            and np.array_equal(x.rtt, y.rtt, equal_nan=True)
            and np.array_equal(x.samples, y.samples)
            and np.array_equal(x.leader, y.leader)
        ):
            return False
    return True


def write_saved(folder: Path, prepared: Mapping[str, Mapping[str, npt.NDArray[Any]]]) -> None:
    """RumStore.saved() to `folder`/<pool>.npz (temporary file, then renamed); files of other pools removed.
    Touches no store: safe in a thread."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {f"{quote(name, safe='')}.npz" for name in prepared}
    for path in folder.glob("*.npz"):
        if path.name not in names:
            path.unlink(missing_ok=True)
    for name, arrays in prepared.items():
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".rum-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                _write_npz(out, dict(arrays))
            os.replace(temporary, folder / f"{quote(name, safe='')}.npz")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
