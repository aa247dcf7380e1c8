"""The reading of one zone file: where it is, what it found wrong, and node helpers that report FILE:LINE."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import yaml

from geolb.config.marks import is_null, mapping_items, scalar_text, scalar_value, where
from geolb.config.values import parse_name
from geolb.dns.names import absolute
from geolb.errors import ConfigError, Where

T = TypeVar("T")


class ZoneContext:
    """One zone file being read: its path and origin, what it declares, and every problem found so far."""

    def __init__(self, path: str, digest: str, mtime: float, previous_serial: int | None) -> None:
        self.path = path
        self.digest = digest
        self.mtime = mtime
        self.previous_serial = previous_serial
        self.serial_derived = False  # the SOA serial came from the file's time, not from the file
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []
        self.pools_declared: dict[str, Where] = {}
        self.geo_refs: list[tuple[str, Where]] = []
        base = os.path.basename(path)
        self.origin = absolute(base[: -len(".yaml")] if base.endswith(".yaml") else base, ".")
        self.origin_at: Where | None = None  # where the zone's name was read (`zone:`, or the file name): once it is known

    def at(self, node: yaml.Node) -> Where:
        return where(self.path, node)

    def error(self, node: yaml.Node, message: str) -> None:
        self.errors.append(ConfigError(self.at(node), message))

    def warn(self, node: yaml.Node, message: str) -> None:
        self.warnings.append(ConfigError(self.at(node), message, warning=True))

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """Entries of a mapping whose keys must come from `allowed`."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return
        for key, key_node, value_node in mapping_items(node, self.path, self.errors):
            if key not in allowed:
                self.error(key_node, f"unknown key '{key}' in {what} (expected one of: {', '.join(allowed)})")
                continue
            yield key, key_node, value_node

    def entries(self, node: yaml.Node, what: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """Entries of a mapping with free-form keys (names, prefixes)."""
        if is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return
        yield from mapping_items(node, self.path, self.errors)

    def items(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if is_null(node):
            return []
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.ScalarNode):
            return [node]  # a single value where a list is expected
        self.error(node, f"{what} must be a list")
        return []

    def text(self, node: yaml.Node, what: str) -> str | None:
        text = scalar_text(node)
        if text is None:
            self.error(node, f"{what} must be a string")
        return text

    def choice(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> str | None:
        """The node's text when it is one of `allowed`; otherwise reported, and None."""
        text = scalar_text(node)
        if text not in allowed:
            self.error(node, f"{what} must be one of {', '.join(allowed)}, got {text!r}")
            return None
        return text

    def name(self, node: yaml.Node, what: str) -> str | None:
        text = self.text(node, what)
        if text is None:
            return None
        try:
            return parse_name(text, self.origin)
        except ValueError as exc:
            self.error(node, f"{what}: {exc}")
            return None

    def convert(self, node: yaml.Node, what: str, convert: Callable[[object], T]) -> T | None:
        """Apply `convert` to the node's typed value, reporting its ValueError."""
        try:
            return convert(scalar_value(node))
        except ValueError as exc:
            self.error(node, f"{what}: {exc}")
            return None
