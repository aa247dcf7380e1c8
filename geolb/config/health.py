"""Health blocks: the zone default overlaid by pool, region and endpoint blocks, as typed settings."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from geolb import model
from geolb.config.context import ZoneContext
from geolb.config.marks import is_null, scalar_text, scalar_value
from geolb.config.values import parse_duration, parse_int

HEALTH_KEYS = (
    "type", "port", "path", "host", "expect_status", "expect_body",
    "interval", "timeout", "fall", "rise", "tls_verify", "load_header", "quorum",
)  # fmt: skip
HEALTH_TYPES = ("http", "https", "tcp", "none")
QUORUMS = ("majority", "any", "all")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110 §5.1)
T = TypeVar("T")


@dataclass(frozen=True)
class HealthSettings:
    """One level of the overlay; every field has the zone file's default."""

    type: str = "http"
    port: int | None = None  # 80 for http and tcp, 443 for https
    path: str = "/health"
    host: str | None = None
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None
    interval: float = 10.0
    timeout: float = 2.0
    fall: int = 3
    rise: int = 2
    tls_verify: bool = True
    load_header: str = "X-Load"
    quorum: str = "majority"

    def check(self) -> model.HealthCheck:
        """The check an endpoint with these settings gets."""
        port = self.port if self.port is not None else (443 if self.type == "https" else 80)
        return model.HealthCheck(
            type=self.type,
            port=port,
            path=self.path,
            host=self.host,
            expect_status=self.expect_status,
            expect_body=self.expect_body,
            interval=self.interval,
            timeout=self.timeout,
            fall=self.fall,
            rise=self.rise,
            tls_verify=self.tls_verify,
            load_header=self.load_header,
            quorum=self.quorum,
        )


DEFAULT_HEALTH = HealthSettings()
_INVALID = object()  # a value that failed to parse and was reported


def read_health(ctx: ZoneContext, node: yaml.Node, base: HealthSettings) -> HealthSettings:
    """`base` overlaid with the keys this block sets (a key that fails to parse is reported and left out)."""
    if is_null(node):
        return base
    changes: dict[str, Any] = {}  # each value parsed to its field's type by _value
    for key, _key_node, value in ctx.mapping(node, "health", HEALTH_KEYS):
        parsed = _value(ctx, key, value)
        if parsed is not _INVALID:
            changes[key] = parsed
    return dataclasses.replace(base, **changes)


def _value(ctx: ZoneContext, key: str, node: yaml.Node) -> object:
    raw = scalar_value(node)
    if key == "type":
        return _reported(ctx.choice(node, "health type", HEALTH_TYPES))
    if key == "quorum":
        return _reported(ctx.choice(node, "quorum", QUORUMS))
    if key == "port":
        return _checked(ctx, node, lambda: parse_int(raw, "health port", 1, 65535))
    if key == "path":
        text = scalar_text(node)
        if text is None or not text.startswith("/"):
            ctx.error(node, f"health path must start with '/', got {text!r}")
            return _INVALID
        return text
    if key == "host":
        return scalar_text(node)
    if key == "expect_status":
        statuses: list[int] = []
        for item in ctx.items(node, "expect_status"):
            status = _checked(ctx, item, functools.partial(parse_int, scalar_value(item), "expect_status", 100, 599))
            if status is _INVALID:
                return _INVALID
            assert isinstance(status, int)
            statuses.append(status)
        if not statuses:
            ctx.error(node, "expect_status needs at least one status code")
            return _INVALID
        return tuple(statuses)
    if key == "expect_body":
        return None if is_null(node) else scalar_text(node)
    if key in ("interval", "timeout"):
        return _checked(ctx, node, lambda: parse_duration(raw), what=f"health {key}")
    if key in ("fall", "rise"):
        return _checked(ctx, node, lambda: parse_int(raw, f"health {key}", 1, 1000))
    if key == "tls_verify":
        if not isinstance(raw, bool):
            ctx.error(node, f"tls_verify must be true or false, got {raw!r}")
            return _INVALID
        return raw
    if key == "load_header":
        text = scalar_text(node)
        if text is None or not _HEADER_NAME.match(text):
            ctx.error(node, f"load_header must be an HTTP header name such as X-Load, got {text!r}")
            return _INVALID
        return text
    raise AssertionError(key)


def _reported(value: object | None) -> object:
    """None (a problem already reported) as _INVALID."""
    return _INVALID if value is None else value


def _checked(ctx: ZoneContext, node: yaml.Node, parse: Callable[[], T], what: str = "") -> T | object:
    """`parse()`, or _INVALID after reporting its ValueError at `node`."""
    try:
        return parse()
    except ValueError as exc:
        ctx.error(node, f"{what}: {exc}" if what else str(exc))
        return _INVALID
