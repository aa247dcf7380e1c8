"""The zone apex: nameservers (with their glue addresses) and the SOA."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from geolb import model
from geolb.config.context import ZoneContext
from geolb.config.values import parse_address, parse_int, parse_name, parse_ttl
from geolb.dns.names import absolute, is_at_or_below
from geolb.errors import Where

SOA_KEYS = ("mname", "rname", "serial", "refresh", "retry", "expire", "minimum")
SOA_DEFAULTS = {"refresh": 7200, "retry": 3600, "expire": 1209600, "minimum": 60}


def derived_serial(mtime: float, previous: int | None) -> int:
    """The file's modification time as a serial, never below a previous one plus one."""
    serial = int(mtime) % 2**32
    if previous is not None and serial <= previous:
        serial = (previous + 1) % 2**32
    return serial


def read_nameservers(
    ctx: ZoneContext, entry: tuple[yaml.Node, yaml.Node] | None, root: yaml.Node
) -> dict[str, tuple[list[model.IPAddress], Where]] | None:
    if entry is None:
        ctx.error(root, "nameservers: at least one nameserver is required")
        return None
    out: dict[str, tuple[list[model.IPAddress], Where]] = {}
    for key, key_node, value in ctx.entries(entry[1], "nameservers"):
        ns = ctx.name(key_node, "nameserver")
        if ns is None:
            continue
        addresses: list[model.IPAddress] = []
        for item in ctx.items(value, f"addresses of {key}"):
            text = ctx.text(item, f"address of {key}")
            if text is not None:
                try:
                    addresses.append(parse_address(text))
                except ValueError as exc:
                    ctx.error(item, f"nameserver {key}: {exc}")
        if addresses and not is_at_or_below(ns, ctx.origin):
            ctx.warn(key_node, f"nameserver {ns} is outside the zone; its addresses are not served (no glue)")
            addresses = []
        out[ns] = (addresses, ctx.at(key_node))
    if not out:
        ctx.error(entry[1], "nameservers: at least one nameserver is required")
        return None
    return out


def read_soa(
    ctx: ZoneContext, entry: tuple[yaml.Node, yaml.Node] | None, nameservers: Mapping[str, object] | None, ttl: int
) -> model.RRset | None:
    values: dict[str, object] = {}
    if entry is not None:
        for key, _key_node, value in ctx.mapping(entry[1], "soa", SOA_KEYS):
            if key in ("mname", "rname"):
                text = ctx.text(value, f"soa {key}")
                if text is None:
                    continue
                if key == "rname" and "@" in text:
                    local, _, domain = text.partition("@")  # an e-mail address, as people write it
                    text = local.replace(".", "\\.") + "." + domain.rstrip(".") + "."
                try:
                    values[key] = parse_name(text, ctx.origin) if key == "mname" else absolute(text, ctx.origin)
                except ValueError as exc:
                    ctx.error(value, f"soa {key}: {exc}")
            elif key == "serial":
                serial = ctx.convert(value, "soa serial", lambda v: parse_int(v, "serial", 0, 2**32 - 1))
                if serial is not None:
                    values[key] = serial
            else:
                seconds = ctx.convert(value, f"soa {key}", parse_ttl)
                if seconds is not None:
                    values[key] = seconds
    if nameservers is None:
        return None
    numbers = {key: int(value) for key, value in values.items() if isinstance(value, int)}
    ctx.serial_derived = "serial" not in numbers
    timers = {key: numbers.get(key, default) for key, default in SOA_DEFAULTS.items()}
    soa = model.SOA(
        mname=str(values.get("mname", next(iter(nameservers)))),
        rname=str(values.get("rname", f"hostmaster.{ctx.origin}")),
        serial=numbers.get("serial", derived_serial(ctx.mtime, ctx.previous_serial)),
        refresh=timers["refresh"],
        retry=timers["retry"],
        expire=timers["expire"],
        minimum=timers["minimum"],
    )
    return model.RRset(ctx.origin, "SOA", ttl, (soa,))
