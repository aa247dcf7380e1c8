"""A MaxMind database flattened: every network of its search tree as a range with a location row, built once per file.

maxminddb answers "what is at this address"; a precomputed region map needs the
opposite, every network at once. The tree format is public
(https://maxmind.github.io/MaxMind-DB/): `node_count` nodes of two records of
`record_size` bits; a record below `node_count` is a node, equal to it is "no
data", above it points into the data section (equal pointers mean equal data).
The tree is walked level by level with numpy (about 0.3 s for GeoLite2 City's
3.6 million nodes), and each distinct data record is decoded once, through the
maxminddb reader, at one address that holds it.

IPv6 ranges carry 128-bit starts as two uint64 columns (`hi`, `lo`). Subtrees
that the database aliases to its IPv4 tree (::/96, 2002::/16, 2001::/32) are
kept as alias ranges: the address bits after the alias prefix are looked up in
the IPv4 ranges, as libmaxminddb does.
"""

from __future__ import annotations

import ipaddress
import mmap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from geolb import model

U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]

NO_DATA = -1  # a range with no location
ALIAS = -2  # an IPv6 range the database maps onto its IPv4 tree (ALIAS - r: one inside `networks` rule r)


@dataclass(frozen=True)
class LocationRows:
    """The distinct locations of a database, one row each (what a region ranking depends on)."""

    country: tuple[str | None, ...]
    continent: tuple[str | None, ...]
    latitude: npt.NDArray[np.float64]  # NaN where unknown
    longitude: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.country)


@dataclass(frozen=True)
class Ranges:
    """Sorted range starts covering a whole address family, and a value for each range.

    For IPv4 `hi` holds the address and `lo` is all zeros; for IPv6 the start is
    `hi << 64 | lo`. Range i runs from its start to the next start minus one.
    """

    width: int  # 32 or 128
    hi: U64
    lo: U64
    values: I32

    def __len__(self) -> int:
        return len(self.values)

    def start(self, index: int) -> int:
        return (int(self.hi[index]) << 64 | int(self.lo[index])) if self.width == 128 else int(self.hi[index])

    def index_of(self, address: int) -> int:
        """The range holding `address`."""
        if self.width == 32:
            return int(np.searchsorted(self.hi, np.uint64(address), "right")) - 1
        high, low = np.uint64(address >> 64), np.uint64(address & MASK64)
        first = int(np.searchsorted(self.hi, high, "left"))
        last = int(np.searchsorted(self.hi, high, "right"))
        if first == last:
            return first - 1
        return first + int(np.searchsorted(self.lo[first:last], low, "right")) - 1

    def overlaid(self, changes: Sequence[tuple[model.IPNetwork, Callable[[I32], I32]]]) -> Ranges:
        """These ranges with the values inside each network replaced by `value_of(old values)`, in order.

        Every boundary is split in one insertion, so many small networks cost one copy of the arrays.
        """
        end = 1 << self.width
        points = {int(n.network_address) for n, _ in changes} | {int(n.broadcast_address) + 1 for n, _ in changes}
        ranges = self._split_at(sorted(p for p in points if p < end))
        values = ranges.values.copy()
        for network, value_of in changes:
            begin = ranges.index_of(int(network.network_address))
            stop = ranges.index_of(int(network.broadcast_address)) + 1
            values[begin:stop] = value_of(values[begin:stop])
        return Ranges(self.width, ranges.hi, ranges.lo, values)

    def _split_at(self, addresses: Sequence[int]) -> Ranges:
        new = [a for a in addresses if self.start(self.index_of(a)) != a]
        if not new:
            return self
        at = np.array([self.index_of(a) + 1 for a in new], dtype=np.int64)
        high = np.array([a >> 64 if self.width == 128 else a for a in new], dtype=np.uint64)
        low = np.array([a & MASK64 if self.width == 128 else 0 for a in new], dtype=np.uint64)
        return Ranges(
            self.width, np.insert(self.hi, at, high), np.insert(self.lo, at, low), np.insert(self.values, at, self.values[at - 1])
        )

    def merged(self) -> Ranges:
        """Neighbouring ranges with equal values joined (aliases never join: each holds its own offset)."""
        values = self.values
        keep = np.ones(len(values), dtype=bool)
        keep[1:] = (values[1:] != values[:-1]) | (values[1:] <= ALIAS)
        return Ranges(self.width, self.hi[keep], self.lo[keep], values[keep])

    def remapped(self, table: I32) -> Ranges:
        """Values passed through `table` (negative values, the markers, stay as they are)."""
        values = self.values
        mapped = np.where(values >= 0, table[np.maximum(values, 0)], values).astype(np.int32)
        return Ranges(self.width, self.hi, self.lo, mapped)


MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class FlatDatabase:
    """Every network of one database: IPv4 and IPv6 ranges whose values are rows of `locations`."""

    digest: str
    v4: Ranges
    v6: Ranges
    aliases: tuple[ipaddress.IPv6Network, ...]  # IPv6 prefixes looked up in the IPv4 ranges
    locations: LocationRows


# Addresses that have no place on the map (RFC 6890 special-purpose registries): no location.
SPECIAL_NETWORKS: tuple[model.IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/127", "::ffff:0:0/96", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip


class TreeError(ValueError):
    """A search tree that does not hold together (truncated, or records pointing nowhere)."""


def _children(data: Any, node_count: int, record_size: int) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """Every node's left and right record, decoded at once."""
    node_bytes = record_size * 2 // 8
    if len(data) < node_count * node_bytes:
        raise TreeError("file shorter than its search tree")
    raw = np.frombuffer(data, dtype=np.uint8, count=node_count * node_bytes).reshape(node_count, node_bytes).astype(np.uint32)
    if record_size == 24:
        left = raw[:, 0] << 16 | raw[:, 1] << 8 | raw[:, 2]
        right = raw[:, 3] << 16 | raw[:, 4] << 8 | raw[:, 5]
    elif record_size == 28:
        left = (raw[:, 3] & 0xF0) << 20 | raw[:, 0] << 16 | raw[:, 1] << 8 | raw[:, 2]
        right = (raw[:, 3] & 0x0F) << 24 | raw[:, 4] << 16 | raw[:, 5] << 8 | raw[:, 6]
    elif record_size == 32:
        left = raw[:, 0] << 24 | raw[:, 1] << 16 | raw[:, 2] << 8 | raw[:, 3]
        right = raw[:, 4] << 24 | raw[:, 5] << 16 | raw[:, 6] << 8 | raw[:, 7]
    else:
        raise TreeError(f"unsupported record size {record_size}")
    return np.asarray(left, dtype=np.uint32), np.asarray(right, dtype=np.uint32)


@dataclass
class _Leaves:
    """Leaves found by the walk: start (hi, lo), and the record (or an alias marker)."""

    hi: list[U64]
    lo: list[U64]
    records: list[npt.NDArray[np.int64]]


def _walk(
    left: npt.NDArray[np.uint32],
    right: npt.NDArray[np.uint32],
    node_count: int,
    root: int,
    width: int,
    alias_node: int | None,
) -> tuple[_Leaves, list[tuple[int, int]]]:
    """Level-by-level walk from `root`: every leaf with its start, and every alias (start, depth)."""
    nodes = np.array([root], dtype=np.int64)
    hi = np.zeros(1, dtype=np.uint64)  # the first 64 bits of the path so far
    lo = np.zeros(1, dtype=np.uint64)  # the bits after the first 64
    leaves = _Leaves([], [], [])
    aliases: list[tuple[int, int]] = []
    one = np.uint64(1)
    for depth in range(width):
        if len(nodes) == 0:
            break
        children = np.concatenate([left[nodes], right[nodes]]).astype(np.int64)
        if depth < 64:
            hi = np.concatenate([hi << one, (hi << one) | one])
            lo = np.concatenate([lo, lo])
        else:
            hi = np.concatenate([hi, hi])
            lo = np.concatenate([lo << one, (lo << one) | one])
        level = depth + 1
        if alias_node is not None:
            alias = children == alias_node
            if alias.any():
                for h, low in zip(hi[alias], lo[alias], strict=True):
                    aliases.append((_start(int(h), int(low), level, width), level))
                keep = ~alias
                children, hi, lo = children[keep], hi[keep], lo[keep]
        inner = children < node_count
        if level == width:
            inner[:] = False
        leaf = ~inner
        if leaf.any():
            shift_hi = np.uint64(max(0, 64 - level)) if width == 128 else np.uint64(width - level)
            shift_lo = np.uint64(128 - level) if width == 128 and level > 64 else np.uint64(0)
            leaves.hi.append(hi[leaf] << shift_hi)
            leaves.lo.append(lo[leaf] << shift_lo if level > 64 else np.zeros(int(leaf.sum()), dtype=np.uint64))
            leaves.records.append(children[leaf])
        nodes, hi, lo = children[inner], hi[inner], lo[inner]
    if len(nodes):
        raise TreeError("search tree deeper than the address")
    return leaves, aliases


def _single_leaf(record: int) -> _Leaves:
    return _Leaves([np.zeros(1, np.uint64)], [np.zeros(1, np.uint64)], [np.array([record], dtype=np.int64)])


def _start(hi_bits: int, lo_bits: int, depth: int, width: int) -> int:
    if width == 32:
        return hi_bits << (32 - depth)
    if depth <= 64:
        return hi_bits << (128 - depth)
    return hi_bits << 64 | lo_bits << (128 - depth)


Place = tuple[str | None, str | None, float | None, float | None]  # country, continent, latitude, longitude


def flatten(
    path: str,
    node_count: int,
    record_size: int,
    ip_version: int,
    places: Callable[[list[int], list[int]], list[Place]],
    digest: str,
) -> FlatDatabase:
    """Walk the tree of the database at `path`; `places(versions, addresses)` reads the place of the record at each address."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        left, right = _children(data, node_count, record_size)
    ipv4_root = 0
    if ip_version == 6:
        for _ in range(96):
            if ipv4_root >= node_count:
                break
            ipv4_root = int(left[ipv4_root])
    if ipv4_root >= node_count:  # the whole IPv4 space is one leaf (or has no data)
        v4_leaves = _single_leaf(ipv4_root)
    else:
        v4_leaves, _ = _walk(left, right, node_count, ipv4_root, 32, None)
    if ip_version == 6:
        v6_leaves, alias_points = _walk(left, right, node_count, 0, 128, ipv4_root if ipv4_root < node_count else None)
    else:  # an IPv4 database knows nothing of IPv6
        v6_leaves, alias_points = _single_leaf(node_count), []

    v4_sorted = _sorted(v4_leaves)
    v6_sorted = _sorted(v6_leaves)
    # Decode each distinct data record once, at the first address that holds it.
    records = np.concatenate([v4_sorted[2], v6_sorted[2]])
    distinct, first, inverse = np.unique(records, return_index=True, return_inverse=True)
    in_v4 = first < len(v4_sorted[2])
    at6 = np.where(in_v4, 0, first - len(v4_sorted[2]))
    at4 = np.where(in_v4, first, 0)
    high = np.where(in_v4, v4_sorted[0][at4], v6_sorted[0][at6]).tolist()
    low = np.where(in_v4, 0, v6_sorted[1][at6]).tolist()
    data_records = distinct != node_count
    versions: list[int] = []
    addresses: list[int] = []
    for is_v4, h, lo, has_data in zip(in_v4.tolist(), high, low, data_records.tolist(), strict=True):
        if has_data:
            versions.append(4 if is_v4 else 6)
            addresses.append(h if is_v4 else h << 64 | lo)
    rows_of_data, locations = _rows(places(versions, addresses))
    row_of_distinct = np.full(len(distinct), NO_DATA, dtype=np.int32)
    row_of_distinct[data_records] = rows_of_data
    values = row_of_distinct[inverse.reshape(-1)]
    v4 = Ranges(32, v4_sorted[0], v4_sorted[1], values[: len(v4_sorted[2])])
    hi6, lo6, values6 = v6_sorted[0], v6_sorted[1], values[len(v4_sorted[2]) :]
    aliases: list[ipaddress.IPv6Network] = []
    if alias_points:
        hi6 = np.concatenate([hi6, np.array([start >> 64 for start, _ in alias_points], dtype=np.uint64)])
        lo6 = np.concatenate([lo6, np.array([start & MASK64 for start, _ in alias_points], dtype=np.uint64)])
        values6 = np.concatenate([values6, np.full(len(alias_points), ALIAS, dtype=np.int32)])
        order = np.lexsort((lo6, hi6))
        hi6, lo6, values6 = hi6[order], lo6[order], values6[order]
        aliases = [ipaddress.IPv6Network((start, depth)) for start, depth in alias_points]
    v4, v6 = _without_special(v4, Ranges(128, hi6, lo6, values6))
    return FlatDatabase(digest, v4.merged(), v6.merged(), tuple(sorted(aliases, key=lambda n: n.prefixlen, reverse=True)), locations)


def _rows(found: list[Place]) -> tuple[I32, LocationRows]:
    """Each place's row among the distinct places, and those rows (deduplicated in numpy, not a dict)."""
    if not found:
        return np.zeros(0, dtype=np.int32), LocationRows((), (), np.zeros(0), np.zeros(0))
    codes = sorted({p[0] or "" for p in found} | {p[1] or "" for p in found})
    number = {code: i for i, code in enumerate(codes)}
    table = np.array(
        [(number[p[0] or ""], number[p[1] or ""], 999.0 if p[2] is None else p[2], 999.0 if p[3] is None else p[3]) for p in found],
        dtype=np.float64,
    )
    distinct, inverse = np.unique(table, axis=0, return_inverse=True)
    latitude = np.where(distinct[:, 2] == 999.0, np.nan, distinct[:, 2])
    longitude = np.where(distinct[:, 3] == 999.0, np.nan, distinct[:, 3])
    country = tuple(codes[int(i)] or None for i in distinct[:, 0])
    continent = tuple(codes[int(i)] or None for i in distinct[:, 1])
    return inverse.reshape(-1).astype(np.int32), LocationRows(country, continent, latitude, longitude)


def _sorted(leaves: _Leaves) -> tuple[U64, U64, npt.NDArray[np.int64]]:
    hi = np.concatenate(leaves.hi)
    lo = np.concatenate(leaves.lo)
    records = np.concatenate(leaves.records)
    order = np.lexsort((lo, hi)) if lo.any() else np.argsort(hi, kind="stable")
    return hi[order], lo[order], records[order]


def _without_special(v4: Ranges, v6: Ranges) -> tuple[Ranges, Ranges]:
    """Special-purpose ranges have no location, whatever the database says."""
    return (
        v4.overlaid([(n, _no_data) for n in SPECIAL_NETWORKS if n.version == 4]),
        v6.overlaid([(n, _no_data) for n in SPECIAL_NETWORKS if n.version == 6]),
    )


def _no_data(values: I32) -> I32:
    return np.full(len(values), NO_DATA, dtype=np.int32)


def empty_database(digest: str = "none") -> FlatDatabase:
    """No database at all: every address, of both families, has no location."""
    zero = np.zeros(1, dtype=np.uint64)
    nothing = np.full(1, NO_DATA, dtype=np.int32)
    no_rows = LocationRows((), (), np.zeros(0), np.zeros(0))
    return FlatDatabase(digest, Ranges(32, zero, zero, nothing), Ranges(128, zero, zero, nothing), (), no_rows)


def all_networks(ranges: Ranges) -> Iterable[tuple[int, int, int]]:
    """(first address, last address, value) for every range: for tests and tools, not the query path."""
    size = len(ranges)
    for index in range(size):
        first = ranges.start(index)
        last = ranges.start(index + 1) - 1 if index + 1 < size else (1 << ranges.width) - 1
        yield first, last, int(ranges.values[index])
