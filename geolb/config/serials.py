"""The SOA serials last served, remembered under the cache directory: a derived serial never goes back across restarts."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping

from geolb import model

SERIALS_FILE = "serials.json"

# zone name -> (digest of what was served, its serial)
Served = Mapping[str, tuple[str, int]]


def load_served(cache_dir: str) -> dict[str, tuple[str, int]]:
    """What the serials file says; nothing when it is missing or unreadable (serials then come from file times alone)."""
    try:
        with open(os.path.join(cache_dir, SERIALS_FILE)) as handle:
            raw = json.load(handle)
        return {str(name): (str(entry[0]), int(entry[1])) for name, entry in raw.items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def remember_served(cache_dir: str, zones: model.ZoneSet, served: dict[str, tuple[str, int]]) -> None:
    """Add the zones now served to `served` and write it out (atomically); zones no longer served stay remembered,
    so a zone taken down and put back later still moves forward."""
    changed = False
    for zone in zones.zones.values():
        entry = (zone.digest, zone.serial)
        if served.get(zone.name) != entry:
            served[zone.name] = entry
            changed = True
    if not changed:
        return
    with contextlib.suppress(OSError):
        handle, scratch = tempfile.mkstemp(prefix=".serials-", dir=cache_dir)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump({name: list(entry) for name, entry in sorted(served.items())}, out)
            os.replace(scratch, os.path.join(cache_dir, SERIALS_FILE))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)


def serial_after(derived: int, remembered: tuple[str, int] | None, digest: str, first_read: bool) -> int:
    """A derived serial, given what was served last: the same text keeps its serial (when this process has not
    served the zone yet: `first_read`), anything else moves past it."""
    if remembered is None:
        return derived
    old_digest, old_serial = remembered
    if first_read and digest == old_digest:
        return old_serial
    if _serial_gt(derived, old_serial):
        return derived
    return (old_serial + 1) % 2**32


def _serial_gt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic: a is after b."""
    return a != b and ((a > b and a - b < 2**31) or (a < b and b - a > 2**31))
