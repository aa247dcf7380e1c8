"""A zones directory to one `model.ZoneSet`, with the checks that span files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType

from geolb import model
from geolb.config.dnssec import KEYS_DIR
from geolb.config.zonefile import read_zone_file
from geolb.errors import ConfigError, Where


@dataclass
class ZoneSetResult:
    """What loading a directory gave: the zones to serve and every problem found.

    `failed` names the files whose errors kept them out (or kept their last good
    version in, on a reload); a start-up treats any error as fatal.
    """

    zoneset: model.ZoneSet
    errors: list[ConfigError]
    warnings: list[ConfigError] = field(default_factory=list)
    failed: dict[str, list[ConfigError]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def zone_files(directory: str) -> list[str]:
    """The `<zone>.yaml` files of a directory, sorted; editor droppings are skipped."""
    names = sorted(name for name in os.listdir(directory) if name.endswith(".yaml") and not name.startswith("."))
    return [os.path.join(directory, name) for name in names]


def load_zoneset(directory: str, previous: model.ZoneSet | None = None) -> ZoneSetResult:
    """Read every zone file; with `previous`, a file that fails keeps its last good zone."""
    try:
        paths = zone_files(directory)
    except OSError as exc:
        problem = ConfigError(Where(directory, 0), f"cannot read zones directory: {exc.strerror}")
        return ZoneSetResult(previous or model.EMPTY_ZONESET, [problem], failed={directory: [problem]})
    old_by_file = {zone.file: zone for zone in previous.zones.values()} if previous else {}

    errors: list[ConfigError] = []
    warnings: list[ConfigError] = []
    failed: dict[str, list[ConfigError]] = {}
    zones: list[model.Zone] = []
    declared: set[str] = set()
    refs: list[tuple[str, str, Where]] = []
    for path in paths:
        old = old_by_file.get(path)
        result = read_zone_file(path, previous_serial=old.serial if old else None)
        warnings.extend(result.warnings)
        declared |= result.pools_declared
        refs.extend((path, pool, at) for pool, at in result.geo_refs)
        if result.zone is not None:
            zone = result.zone
            if old is not None and old.digest == zone.digest and old.name == zone.name:
                zone = old  # unchanged: keep its serial and identity
            zones.append(zone)
        else:
            errors.extend(result.errors)
            failed[path] = result.errors
            if old is not None:
                zones.append(old)

    by_name: dict[str, model.Zone] = {}
    pools: dict[str, model.Pool] = {}
    for zone in zones:
        if zone.name in by_name:
            first = by_name[zone.name]
            problem = ConfigError(Where(zone.file, 1), f"zone {zone.name} is also defined in {first.file}")
            errors.append(problem)
            failed.setdefault(zone.file, []).append(problem)
            continue
        clash = [name for name in zone.pools if name in pools]
        if clash:
            problem = ConfigError(
                zone.pools[clash[0]].where,
                f"pool '{clash[0]}' is also defined at {pools[clash[0]].where} (pool names are unique across the zones directory)",
            )
            errors.append(problem)
            failed.setdefault(zone.file, []).append(problem)
            continue
        by_name[zone.name] = zone
        pools.update(zone.pools)

    # GEO records may name a pool of any zone file. A pool that no file declares is an
    # error in the file that names it, even when that file has other errors too.
    for path, pool, at in refs:
        if pool not in declared:
            problem = ConfigError(at, f"GEO record names pool '{pool}', which no zone file defines")
            errors.append(problem)
            failed.setdefault(path, []).append(problem)
    for zone in list(by_name.values()):
        missing = [(n.geo.where, n.geo.pool) for n in zone.nodes.values() if n.geo is not None and n.geo.pool not in pools]
        for at, pool in missing:
            if pool in declared:
                problem = ConfigError(at, f"GEO record names pool '{pool}', whose zone file has errors")
                errors.append(problem)
                failed.setdefault(zone.file, []).append(problem)
        if missing:
            del by_name[zone.name]
            for name in zone.pools:
                pools.pop(name, None)

    if previous is not None and by_name.keys() == previous.zones.keys() and all(by_name[n] is previous.zones[n] for n in by_name):
        return ZoneSetResult(previous, errors, warnings, failed)  # nothing changed: same object, caches stay warm
    zoneset = model.ZoneSet(zones=MappingProxyType(by_name), pools=MappingProxyType(pools))
    return ZoneSetResult(zoneset, errors, warnings, failed)


def fingerprint(directory: str) -> tuple[tuple[str, int, int], ...] | None:
    """What a change to the zones directory changes: names, sizes, modification times (of its DNSSEC keys too)."""
    try:
        out = []
        keys = os.path.join(directory, KEYS_DIR)
        key_paths = sorted(os.path.join(keys, n) for n in os.listdir(keys) if n.endswith(".private")) if os.path.isdir(keys) else []
        for path in [*zone_files(directory), *key_paths]:
            stat = os.stat(path)
            out.append((path, stat.st_mtime_ns, stat.st_size))
        return tuple(out)
    except OSError:
        return None
