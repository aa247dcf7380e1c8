"""The binary search tree of a MaxMind DB file, read directly: which networks lie under a prefix.

maxminddb answers "what is at this address"; widening an ECS scope needs the
opposite, "is everything under this prefix answered the same way", which means
walking the tree. The format is public (https://maxmind.github.io/MaxMind-DB/):
`node_count` nodes of two records each, `record_size` bits per record; a record
below `node_count` is a node, equal to it is "no data", above it points into the
data section (so equal pointers mean equal data).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Hashable

EMPTY = -1  # the "no data" leaf


class BudgetExhausted(Exception):
    """A walk looked at as many leaves as it was allowed to."""


class SearchTree:
    def __init__(self, path: str, node_count: int, record_size: int, ip_version: int) -> None:
        if record_size not in (24, 28, 32):
            raise ValueError(f"unsupported record size {record_size}")
        with open(path, "rb") as handle:
            self._data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self.node_count = node_count
        self.record_size = record_size
        self.node_bytes = record_size * 2 // 8
        if len(self._data) < node_count * self.node_bytes:
            raise ValueError("file shorter than its search tree")
        self.ip_version = ip_version
        self.ipv4_start, self.ipv4_start_depth = self._ipv4_start()

    def children(self, node: int) -> tuple[int, int]:
        """The two records of a node: left (bit 0) and right (bit 1)."""
        data = self._data
        offset = node * self.node_bytes
        if self.record_size == 24:
            return (int.from_bytes(data[offset : offset + 3], "big"), int.from_bytes(data[offset + 3 : offset + 6], "big"))
        if self.record_size == 28:
            middle = data[offset + 3]
            left = ((middle & 0xF0) << 20) | int.from_bytes(data[offset : offset + 3], "big")
            right = ((middle & 0x0F) << 24) | int.from_bytes(data[offset + 4 : offset + 7], "big")
            return left, right
        return (int.from_bytes(data[offset : offset + 4], "big"), int.from_bytes(data[offset + 4 : offset + 8], "big"))

    def _ipv4_start(self) -> tuple[int, int]:
        if self.ip_version == 4:
            return 0, 0
        node = 0
        for depth in range(96):
            if node >= self.node_count:
                return node, depth
            node = self.children(node)[0]
        return node, 96

    def path(self, value: int, width: int) -> tuple[list[int], int]:
        """The nodes from the root of `value`'s family down to its leaf, and the leaf record."""
        node = self.ipv4_start if width == 32 else 0
        nodes: list[int] = []
        for depth in range(width):
            if node >= self.node_count:
                break
            nodes.append(node)
            node = self.children(node)[(value >> (width - 1 - depth)) & 1]
        return nodes, node

    def uniform(
        self,
        node: int,
        depth: int,
        bits: int,
        width: int,
        answer_of: Callable[[int, int, int], Hashable],
        memo: dict[int, Hashable],
        mixed: Hashable,
        budget: list[int],
    ) -> Hashable:
        """The one answer every leaf under `node` gets, or `mixed` as soon as two differ.

        `answer_of(record, network_value, prefix_len)` gives a leaf's answer; `memo`
        keeps each node's verdict and each data record's answer (node numbers are below
        `node_count`, records above it), so nothing is worked out twice for one answer
        function. `budget[0]` counts down the leaves worked out; at zero the walk stops
        with BudgetExhausted, keeping only verdicts it completed.
        """
        known = memo.get(node)
        if known is not None:
            return known
        verdict: Hashable = None
        for bit, record in enumerate(self.children(node)):
            child_bits = (bits << 1) | bit
            if record < self.node_count and depth + 1 < width:
                answer = self.uniform(record, depth + 1, child_bits, width, answer_of, memo, mixed, budget)
            else:
                answer = memo.get(record)
                if answer is None:
                    if budget[0] <= 0:
                        raise BudgetExhausted
                    budget[0] -= 1
                    network = child_bits << (width - depth - 1)
                    answer = answer_of(EMPTY if record == self.node_count else record, network, depth + 1)
                    memo[record] = answer
            if answer == mixed or (verdict is not None and answer != verdict):
                memo[node] = mixed
                return mixed
            verdict = answer
        memo[node] = verdict
        return verdict
