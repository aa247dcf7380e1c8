"""A zones directory to one `model.ZoneSet`: the checks that span files, and the last good version of every zone they involve."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from geolb import model
from geolb.config.dnssec import KEYS_DIR
from geolb.config.serials import Served
from geolb.config.zonefile import ZoneFileResult, read_zone_file
from geolb.errors import ConfigError, Where

ZONE_SUFFIX = ".yaml"
# A file that is not named *.yaml but holds a zone: these top-level keys at the start of a line.
ZONE_KEY_LINE = re.compile(rb"^(zone|soa|nameservers|records|pools)[ \t]*:", re.MULTILINE)
YAML_IN_NAME = re.compile(r"\.ya?ml", re.IGNORECASE)
SNIFF_BYTES = 65536


@dataclass
class ZoneSetResult:
    """What loading a directory gave: the zones to serve and every problem found.

    `errors` depend only on the files (a `check` and a reload of the same files give
    the same ones); on a reload, the warnings also say which zones keep their last
    good version. `failed` maps each file to the errors found in it. A start-up treats
    any error as fatal.
    """

    zoneset: model.ZoneSet
    errors: list[ConfigError]
    warnings: list[ConfigError] = field(default_factory=list)
    failed: dict[str, list[ConfigError]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Ignored:
    """A file of the zones directory that looks like a zone but is not read: why, and the zone file it stands for."""

    path: str
    why: str
    stands_for: str


@dataclass(frozen=True)
class Listing:
    zone_files: list[str]
    ignored: list[Ignored]


def list_zones_dir(directory: str) -> Listing:
    """The `<zone>.yaml` files of a directory, sorted, and the files that look like zones but are not read.

    Hidden files (editor swap files, locks) and the keys directory are passed over without a word.
    """
    zone_files: list[str] = []
    ignored: list[Ignored] = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or name == KEYS_DIR:
            continue
        path = os.path.join(directory, name)
        if name.endswith(ZONE_SUFFIX):
            zone_files.append(path)
            continue
        if not os.path.isfile(path):
            continue
        found = YAML_IN_NAME.search(name)
        if found is not None:
            stem, tail = name[: found.start()], name[found.end() :]
            if not tail and found.group().lower() == ".yml":
                why = "zone files are named *.yaml, not *.yml"
            elif not tail:
                why = "zone files are named *.yaml, in lower case"
            else:
                why = f"only files named *.yaml are zone files ('{tail}' after the extension: a backup or a copy?)"
            ignored.append(Ignored(path, why, os.path.join(directory, stem + ZONE_SUFFIX)))
        elif _holds_zone_keys(path):
            ignored.append(Ignored(path, "it holds zone keys, but only files named *.yaml are zone files", path + ZONE_SUFFIX))
    return Listing(zone_files, ignored)


def _holds_zone_keys(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return ZONE_KEY_LINE.search(handle.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


def zone_files(directory: str) -> list[str]:
    """The `<zone>.yaml` files of a directory, sorted."""
    return list_zones_dir(directory).zone_files


def load_zoneset(directory: str, previous: model.ZoneSet | None = None, served: Served | None = None) -> ZoneSetResult:
    """Read every zone file and check them together; with `previous`, every zone an error involves keeps its last good version.

    Every file's new version is read first, and the errors are found among those alone,
    so they do not depend on what was serving (`served`, the serials remembered from
    earlier runs, only keeps derived serials moving forward). Then each file an error involves goes
    back to its last good version (or out, if it never had one); going back can bring
    a clash with another file's new version, which goes back too, until the set agrees.
    """
    try:
        listing = list_zones_dir(directory)
    except OSError as exc:
        problem = ConfigError(Where(directory, 0), f"cannot read zones directory: {exc.strerror}")
        return ZoneSetResult(previous or model.EMPTY_ZONESET, [problem], failed={directory: [problem]})
    warnings = [ConfigError(Where(item.path, 0), f"ignored: {item.why}", warning=True) for item in listing.ignored]
    if not listing.zone_files:
        warnings.append(ConfigError(Where(directory, 0), "no zone files (*.yaml) in the zones directory", warning=True))

    old_by_file = {zone.file: zone for zone in previous.zones.values()} if previous else {}
    results: dict[str, ZoneFileResult] = {}
    for path in listing.zone_files:
        old = old_by_file.get(path)
        result = read_zone_file(path, previous_serial=old.serial if old else None, served=served)
        if result.zone is not None and old is not None and old.digest == result.zone.digest and old.name == result.zone.name:
            result.zone = old  # unchanged: keep its serial and identity
        warnings.extend(result.warnings)
        results[path] = result
    errors, involved = find_errors(results)

    stand_ins = {item.stands_for: item.path for item in listing.ignored}
    # A renamed file (its zone now declared by a file that did not serve): should an error involve it,
    # it goes back to that zone's last good version instead of leaving the zone out.
    gone = {zone.name: path for path, zone in old_by_file.items() if path not in results and path not in stand_ins}
    for path, result in results.items():
        if path not in old_by_file and result.origin in gone:
            old_by_file[path] = old_by_file.pop(gone.pop(result.origin))
    chosen, notes = choose_versions(results, involved, old_by_file, stand_ins)
    if previous is not None:
        warnings.extend(notes)  # what a reload kept: nothing to say to `check` or a start-up

    failed: dict[str, list[ConfigError]] = {}
    for problem in errors:
        failed.setdefault(problem.where.file, []).append(problem)
    by_name: dict[str, model.Zone] = {}
    pools: dict[str, model.Pool] = {}
    for path in sorted(chosen):
        zone = chosen[path]
        if zone is not None:
            by_name[zone.name] = zone
            pools.update(zone.pools)
    if previous is not None and by_name.keys() == previous.zones.keys() and all(by_name[n] is previous.zones[n] for n in by_name):
        return ZoneSetResult(previous, errors, warnings, failed)  # nothing changed: same object, caches stay warm
    zoneset = model.ZoneSet(zones=MappingProxyType(by_name), pools=MappingProxyType(pools))
    return ZoneSetResult(zoneset, errors, warnings, failed)


def find_errors(results: Mapping[str, ZoneFileResult]) -> tuple[list[ConfigError], set[str]]:
    """Every error of the files' new versions, each file's own and those between files; and the files they involve."""
    errors: list[ConfigError] = []
    involved: set[str] = set()
    for path, result in results.items():
        if result.errors:
            errors.extend(result.errors)
            involved.add(path)

    zones: dict[str, list[Where]] = {}
    pools: dict[str, list[Where]] = {}
    for result in results.values():
        if result.origin is not None and result.origin_at is not None:
            zones.setdefault(result.origin, []).append(result.origin_at)
        for pool, at in result.pools_declared.items():
            pools.setdefault(pool, []).append(at)
    for zone, places in zones.items():
        for at in places if len(places) > 1 else ():
            others = ", ".join(str(other) for other in places if other is not at)
            errors.append(ConfigError(at, f"zone {zone} is also declared at {others} (a zone is declared by one file only)"))
            involved.add(at.file)
    for pool, places in pools.items():
        for at in places if len(places) > 1 else ():
            others = ", ".join(str(other) for other in places if other is not at)
            errors.append(ConfigError(at, f"pool '{pool}' is also defined at {others} (pool names are unique across the zones directory)"))
            involved.add(at.file)

    # GEO records may name a pool of any zone file. A pool that no file declares is an
    # error in the file that names it, even when that file has other errors too.
    usable = {pool for result in results.values() if result.zone is not None for pool in result.pools_declared}
    for path, result in results.items():
        for pool, at in result.geo_refs:
            if pool not in pools:
                close = difflib.get_close_matches(pool, list(pools), 1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                errors.append(ConfigError(at, f"GEO record names pool '{pool}', which no zone file defines{hint}"))
                involved.add(path)
            elif result.zone is not None and pool not in usable:
                files = ", ".join(sorted({place.file for place in pools[pool]}))
                errors.append(ConfigError(at, f"GEO record names pool '{pool}', whose zone file has errors ({files})"))
                involved.add(path)
    return errors, involved


def choose_versions(
    results: Mapping[str, ZoneFileResult],
    involved: set[str],
    old_by_file: Mapping[str, model.Zone],
    stand_ins: Mapping[str, str],
) -> tuple[dict[str, model.Zone | None], list[ConfigError]]:
    """Which version of each file serves: the new one, or (for a file an error involves) the last good one.

    A file that is gone takes its zone down, unless an ignored look-alike stands in
    for it (`x.yml` for `x.yaml`: a slip, not a removal). Returns the choice and the
    warnings that say which zones keep their last good version and why.
    """
    chosen: dict[str, model.Zone | None] = {}
    for path in sorted(set(results) | set(old_by_file)):
        result = results.get(path)
        if result is None:
            chosen[path] = old_by_file[path] if path in stand_ins else None
        elif path in involved or result.zone is None:
            chosen[path] = old_by_file.get(path)
        else:
            chosen[path] = result.zone
    # Going back can clash with another file's new version: that one goes back too. Each
    # round moves at least one file to its last good version, so this ends.
    while True:
        moved = False
        for path in conflicts(chosen, old_by_file):
            if chosen[path] is not old_by_file.get(path):
                chosen[path] = old_by_file.get(path)
                moved = True
        if not moved:
            break
    # The last good versions agreed when they served together; should they not (a
    # previous set from elsewhere), whatever still conflicts is left out.
    while culprits := conflicts(chosen, {}):
        for path in culprits:
            chosen[path] = None

    notes: list[ConfigError] = []
    for path, zone in chosen.items():
        result = results.get(path)
        new = result.zone if result is not None else None
        if zone is None or zone is new:
            if result is not None and new is not None and zone is None:
                notes.append(_note(path, f"zone {new.name} is not served: it conflicts with what other files keep serving"))
            continue
        why = (
            f"its file is gone, but {stand_ins[path]} (ignored) stands in for it"
            if result is None and path in stand_ins
            else "its file is gone, but other zones still use its pools"
            if result is None
            else "this file has errors"
            if path in involved
            else "its new version conflicts with what other files keep serving"
        )
        notes.append(_note(path, f"zone {zone.name} keeps serving its last good version (serial {zone.serial}): {why}"))
    return chosen, notes


def _note(path: str, message: str) -> ConfigError:
    return ConfigError(Where(path, 0), message, warning=True)


def conflicts(chosen: Mapping[str, model.Zone | None], old_by_file: Mapping[str, model.Zone]) -> set[str]:
    """The files whose chosen versions clash: one zone or pool in two files, or a GEO record whose pool is not served.

    For a pool not served, the files whose last good version defined it are named too,
    so that going back brings the pool back.
    """
    culprits: set[str] = set()
    zones: dict[str, list[str]] = {}
    pools: dict[str, list[str]] = {}
    for path, zone in chosen.items():
        if zone is not None:
            zones.setdefault(zone.name, []).append(path)
            for pool in zone.pools:
                pools.setdefault(pool, []).append(path)
    for paths in _repeated(zones.values(), pools.values()):
        culprits.update(paths)
    for path, zone in chosen.items():
        if zone is None:
            continue
        for node in zone.nodes.values():
            if node.geo is not None and node.geo.pool not in pools:
                culprits.add(path)
                culprits.update(other for other, old in old_by_file.items() if node.geo.pool in old.pools)
    return culprits


def _repeated(*groups: Iterable[list[str]]) -> Iterable[list[str]]:
    return (paths for group in groups for paths in group if len(paths) > 1)


def fingerprint(directory: str) -> tuple[tuple[str, int, int], ...] | None:
    """What a change to the zones directory changes: names, sizes, modification times (of look-alikes and DNSSEC keys too)."""
    try:
        out = []
        listing = list_zones_dir(directory)
        keys = os.path.join(directory, KEYS_DIR)
        key_paths = sorted(os.path.join(keys, n) for n in os.listdir(keys) if n.endswith(".private")) if os.path.isdir(keys) else []
        for path in [*listing.zone_files, *(item.path for item in listing.ignored), *key_paths]:
            stat = os.stat(path)
            out.append((path, stat.st_mtime_ns, stat.st_size))
        return tuple(out)
    except OSError:
        return None
