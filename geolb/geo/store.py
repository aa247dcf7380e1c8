"""Region maps on disk: built once per (database, pool geography), then memory-mapped by every process.

Layout under the cache directory (`geolb serve --cache-dir`):
  databases/<digest>/   a copy of the GeoIP database (source.mmdb) and its flattened form in
                        flat/ (seconds to build; input of every map)
  maps/<key>/           one pool's RegionMap, `key` = geography_key(database digest, pool)
Each is a folder of .npy arrays plus meta.json, written to a temporary folder and
renamed into place, so a reader never sees half of one and two writers do no harm.
Maps are opened with mmap: workers share one copy through the page cache. So is the
database: the copy is ours, so a `geoipupdate` or a `cp` over the operator's file can
never change (or truncate) a file this process has mapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import multiprocessing
import os
import pickle
import resource
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal

import numpy as np

from geolb import model
from geolb.errors import GeoIPError, GeolbError
from geolb.geo.locate import GeoIPLocator, Locator, NoLocator, database_file
from geolb.geo.mmdbflat import FlatDatabase, LocationRows, Ranges
from geolb.geo.regionmap import FORMAT, Geography, Places, RegionMap, build_region_map, geography_key
from geolb.progress import Progress

log = logging.getLogger("geolb.geo")
IN_PROCESS_BYTES = 4 * 2**20  # smaller databases are flattened in this process: a builder process costs ~0.6 s
DATABASES_KEPT = 3  # database copies kept in the cache, most recently used first (instances may share a cache)
COPY_CHUNK = 2**20


def default_cache_dir() -> str:
    """$GEOLB_CACHE_DIR, else $XDG_CACHE_HOME/geolb, else ~/.cache/geolb."""
    explicit = os.environ.get("GEOLB_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "geolb")


def _write_folder(target: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, array in arrays.items():
            np.save(scratch / f"{name}.npy", array, allow_pickle=False)
        (scratch / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(scratch, ignore_errors=True)  # another process wrote it first: same content
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _ranges_arrays(prefix: str, ranges: Ranges) -> dict[str, np.ndarray]:
    if ranges.width == 32:
        return {f"{prefix}_starts": ranges.hi.astype(np.uint32), f"{prefix}_values": ranges.values}
    return {f"{prefix}_hi": ranges.hi, f"{prefix}_lo": ranges.lo, f"{prefix}_values": ranges.values}


def _load_ranges(folder: Path, prefix: str, width: int, mmap: bool) -> Ranges:
    mode: Literal["r"] | None = "r" if mmap else None
    values = np.load(folder / f"{prefix}_values.npy", mmap_mode=mode)
    if width == 32:
        starts = np.load(folder / f"{prefix}_starts.npy", mmap_mode=mode)
        return Ranges(32, starts.astype(np.uint64), np.zeros(len(starts), dtype=np.uint64), values)
    return Ranges(128, np.load(folder / f"{prefix}_hi.npy", mmap_mode=mode), np.load(folder / f"{prefix}_lo.npy", mmap_mode=mode), values)


def save_database(folder: Path, flat: FlatDatabase) -> None:
    rows = flat.locations
    meta = {
        "format": FORMAT,
        "digest": flat.digest,
        "aliases": [str(a) for a in flat.aliases],
        "country": list(rows.country),
        "continent": list(rows.continent),
    }
    arrays = {**_ranges_arrays("v4", flat.v4), **_ranges_arrays("v6", flat.v6), "latitude": rows.latitude, "longitude": rows.longitude}
    _write_folder(folder, arrays, meta)


def load_database(folder: Path) -> FlatDatabase:
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError("old format")
    rows = LocationRows(
        tuple(meta["country"]), tuple(meta["continent"]), np.load(folder / "latitude.npy"), np.load(folder / "longitude.npy")
    )
    aliases = tuple(ipaddress.IPv6Network(a) for a in meta["aliases"])
    return FlatDatabase(meta["digest"], _load_ranges(folder, "v4", 32, False), _load_ranges(folder, "v6", 128, False), aliases, rows)


def save_region_map(folder: Path, region_map: RegionMap) -> None:
    geography = region_map.geography
    meta = {
        "format": FORMAT,
        "key": region_map.key,
        "regions": list(region_map.regions),
        "aliases": [str(a) for a in region_map.aliases],
        "locations": [None if where is None else list(where) for where in geography.locations],
        "countries": [list(codes) for codes in geography.countries],
        "continents": [list(codes) for codes in geography.continents],
        "rules": [list(pinned) for pinned in region_map.rules],
        "v4_located_is_v4": region_map.v4_located is region_map.v4,  # one copy on disk and in memory
    }
    places = region_map.places
    located = {} if region_map.v4_located is region_map.v4 else _ranges_arrays("v4located", region_map.v4_located)
    arrays = {
        **_ranges_arrays("v4", region_map.v4),
        **_ranges_arrays("v6", region_map.v6),
        **located,
        "rankings": region_map.rankings,
        "place_country": places.country,
        "place_continent": places.continent,
        "place_latitude": places.latitude,
        "place_longitude": places.longitude,
    }
    _write_folder(folder, arrays, meta)


def load_region_map(folder: Path) -> RegionMap:
    """A saved map, its arrays memory-mapped read-only."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError("old format")
    geography = Geography(
        tuple(None if where is None else (float(where[0]), float(where[1])) for where in meta["locations"]),
        tuple(tuple(codes) for codes in meta["countries"]),
        tuple(tuple(codes) for codes in meta["continents"]),
    )
    places = Places(*(np.load(folder / f"place_{name}.npy", mmap_mode="r") for name in ("country", "continent", "latitude", "longitude")))
    v4 = _load_ranges(folder, "v4", 32, True)
    return RegionMap(
        key=meta["key"],
        regions=tuple(meta["regions"]),
        geography=geography,
        rankings=np.load(folder / "rankings.npy", mmap_mode="r"),
        places=places,
        rules=tuple(tuple(pinned) for pinned in meta["rules"]),
        v4=v4,
        v6=_load_ranges(folder, "v6", 128, True),
        aliases=tuple(ipaddress.IPv6Network(a) for a in meta["aliases"]),
        v4_located=v4 if meta["v4_located_is_v4"] else _load_ranges(folder, "v4located", 32, True),
    )


@dataclass
class GeoIPReport:
    """How the GeoIP database got here: when the one in use was loaded, and the last load that failed."""

    loaded: float  # wall-clock seconds
    error: str | None = None  # the file on disk was not taken (the one in use keeps answering)
    error_since: float | None = None


class MapStore:
    """Region maps by key, loaded once per process; the main process also builds what is missing."""

    def __init__(self, cache_dir: str) -> None:
        self.root = Path(cache_dir)
        self._loaded: dict[str, RegionMap] = {}
        self._builder_lock = threading.Lock()  # maps_for runs in a thread; cancel_build comes from the event loop
        self._builder: multiprocessing.process.BaseProcess | None = None
        self._building_for: model.ZoneSet | None = None  # the zones whose maps the builder builds
        self._cancelled = False

    def open_locator(self, geoip: str | None) -> Locator:
        """The locator for `--geoip` (None: the bundled database, or none when it is not installed)."""
        source = database_file(geoip)
        return NoLocator() if source is None else self.take_database(source)

    def take_database(self, source: str) -> GeoIPLocator:
        """The operator's database file, copied into the cache and opened there (checked first).

        The copy is named by its digest, so a file seen before is not copied twice; a file
        that does not open (truncated, half-written, not a MaxMind database) leaves no copy.
        """
        target_dir = self.root / "databases"
        target_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        handle, scratch = tempfile.mkstemp(prefix=".source-", suffix=".mmdb", dir=target_dir)
        try:
            with os.fdopen(handle, "wb") as copy:
                try:
                    with open(source, "rb") as original:
                        while chunk := original.read(COPY_CHUNK):
                            digest.update(chunk)
                            copy.write(chunk)
                except FileNotFoundError:
                    raise GeoIPError(f"GeoIP database {source}: no such file") from None
                except OSError as exc:
                    raise GeoIPError(f"GeoIP database {source}: cannot read it ({exc.strerror})") from None
            folder = target_dir / digest.hexdigest()[:32]
            final = folder / "source.mmdb"
            if not final.exists():
                GeoIPLocator(scratch, source).close()  # raises GeoIPError, naming `source`
                folder.mkdir(exist_ok=True)
                os.replace(scratch, final)
            os.utime(folder)  # most recently used: kept by prune_databases
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)
        return GeoIPLocator(str(final), source)

    def forget_database(self, digest: str) -> None:
        """Remove a database's copy and flattened form (one that turned out broken)."""
        shutil.rmtree(self.root / "databases" / digest[:32], ignore_errors=True)

    def prune_databases(self, keep: int = DATABASES_KEPT) -> None:
        """Remove all but the `keep` most recently used database folders (copies and flattened forms)."""
        root = self.root / "databases"
        try:
            folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for folder in folders[:-keep] if keep else folders:
            log.info("removing GeoIP database %s from the cache", folder.name)
            shutil.rmtree(folder, ignore_errors=True)

    def folder(self, key: str) -> Path:
        return self.root / "maps" / key

    def load(self, key: str) -> RegionMap:
        """A map that the main process built (workers call this with the keys it sends)."""
        known = self._loaded.get(key)
        if known is None:
            known = self._loaded[key] = load_region_map(self.folder(key))
        return known

    def retain(self, keys: Collection[str]) -> None:
        """Let go of loaded maps no pool uses any more (a reload or a new GeoIP database replaced them)."""
        for key in list(self._loaded):
            if key not in keys:
                del self._loaded[key]

    def maps_for(self, zones: model.ZoneSet, locator: Locator) -> dict[str, RegionMap]:
        """A RegionMap for every pool: from disk where one was built before, the rest built now.

        Building happens in a short-lived process of its own: flattening a large database
        takes hundreds of MB that this (long-lived) process should never hold. A build
        that fails, runs out of memory or is killed raises MapBuildError naming the pools;
        one stopped by cancel_build() raises MapBuildCancelled.
        """
        keys = {name: geography_key(locator.digest, pool) for name, pool in zones.pools.items()}
        missing: dict[str, model.Pool] = {}
        for name, key in keys.items():
            if key not in self._loaded and key not in missing:
                try:
                    self._loaded[key] = load_region_map(self.folder(key))
                except OSError:
                    missing[key] = zones.pools[name]
                except (ValueError, KeyError):  # broken, or an older layout: a new build could not replace it
                    shutil.rmtree(self.folder(key), ignore_errors=True)
                    missing[key] = zones.pools[name]
        if missing:
            pools = list(missing.values())
            database = locator.path if isinstance(locator, GeoIPLocator) else None
            if database is not None and os.path.getsize(database) > IN_PROCESS_BYTES:
                self._build_aside(database, locator.source, pools, zones)
            else:
                try:
                    build_and_save(str(self.root), database, pools, locator.source)
                except (OSError, MemoryError, GeoIPError) as exc:
                    raise MapBuildError(pools, _reason(exc)) from None
            try:
                for key in missing:
                    self._loaded[key] = load_region_map(self.folder(key))
            except (OSError, ValueError, KeyError) as exc:
                raise MapBuildError(pools, f"cannot read the map just built ({exc})") from None
        self.retain(set(keys.values()))
        return {name: self._loaded[key] for name, key in keys.items()}

    def _build_aside(self, database: str, source: str | None, pools: list[model.Pool], zones: model.ZoneSet) -> None:
        """build_and_save in a process of its own (spawned: nothing of this process's memory is shared)."""
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        # The pools go through a file: a process killed while it reads its start-up pipe would leave
        # multiprocessing writing into that pipe for ever (it holds the other end until done).
        self.root.mkdir(parents=True, exist_ok=True)
        handle, work = tempfile.mkstemp(prefix=".build-", suffix=".pickle", dir=self.root)
        with os.fdopen(handle, "wb") as out:
            pickle.dump(pools, out)
        builder = context.Process(target=_builder_main, args=(send, str(self.root), database, work, source), name="geolb map builder")
        try:
            with self._builder_lock:
                self._cancelled = False
                builder.start()
                self._builder, self._building_for = builder, zones
            send.close()
            builder.join()
        finally:
            with self._builder_lock:
                self._builder = self._building_for = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(work)
        failure = None
        with contextlib.suppress(EOFError, OSError):  # nothing sent: the builder succeeded, or died
            failure = receive.recv() if receive.poll() else None
        receive.close()
        if self._cancelled:
            raise MapBuildCancelled(pools, "cancelled")
        if failure is not None:
            raise MapBuildError(pools, str(failure))
        if builder.exitcode:
            raise MapBuildError(pools, _exit_reason(builder.exitcode))

    def cancel_build(self, unless_for: model.ZoneSet | None = None) -> bool:
        """Stop a map build under way (from any thread), unless it builds the maps of `unless_for`
        (a new GeoIP database for the zones served); True when one was stopped."""
        with self._builder_lock:
            if self._builder is None or self._builder.exitcode is not None or self._building_for is unless_for:
                return False
            self._cancelled = True
            self._builder.terminate()
            return True

    @property
    def builder_pid(self) -> int | None:
        """The process id of a map build under way."""
        builder = self._builder
        return None if builder is None else builder.pid

    def database(self, locator: Locator) -> FlatDatabase:
        folder = self.root / "databases" / locator.digest[:32] / "flat"
        try:
            return load_database(folder)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)  # an older format's (or a broken) copy would never be replaced
        started = time.monotonic()
        if isinstance(locator, GeoIPLocator):
            log.info("flattening the GeoIP database %s (once per database file; kept in %s)", locator.source, folder.parent)
            progress = Progress("flattening the GeoIP database: records decoded", log)
            try:
                flat = locator.flatten(progress)
            finally:
                progress.finish()
        else:
            flat = locator.flatten()
        log.info("GeoIP database flattened in %.1f s (%d IPv4 + %d IPv6 ranges)", time.monotonic() - started, len(flat.v4), len(flat.v6))
        self._save(folder, flat)
        return flat

    def _save(self, folder: Path, item: FlatDatabase | RegionMap) -> None:
        try:
            if isinstance(item, FlatDatabase):
                save_database(folder, item)
            else:
                save_region_map(folder, item)
        except OSError as exc:
            log.warning("cannot write the map cache %s (%s): maps are rebuilt at every start", folder, exc.strerror)


class MapBuildError(GeolbError):
    """Region maps that could not be built: the pools they were for, and why."""

    def __init__(self, pools: list[model.Pool], reason: str) -> None:
        names = ", ".join(pool.name for pool in pools)
        super().__init__(f"region map of pool{'s' if len(pools) > 1 else ''} {names} not built: {reason}")
        self.pools = pools
        self.reason = reason


class MapBuildCancelled(MapBuildError):
    """A build stopped on purpose (the change that asked for it was undone)."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return f"out of memory (the map builder may use {BUILDER_MEMORY / 2**30:.0f} GiB)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{f' ({exc.filename})' if exc.filename else ''}"
    return str(exc) or type(exc).__name__


def _exit_reason(exitcode: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory, or stopped by hand)" if -exitcode == signal.SIGKILL else ""
        return f"the map builder process was killed by {name}{hint}"
    return f"the map builder process exited with status {exitcode}"


REPORTED_BUILD = 10_000_000  # regions x locations from which a build tells how far along it is (about a second)
BUILDER_MEMORY = 2 * 2**30  # address space a map builder may add to what it has once started: a runaway build fails alone


def _builder_main(report: Connection, cache_dir: str, database: str | None, work: str, source: str | None) -> None:
    """The map builder process: a memory ceiling, then build_and_save of the pools in the file `work`;
    a failure is sent back as its reason."""
    with contextlib.suppress(OSError, ValueError):  # no ceiling where the platform refuses one
        resource.setrlimit(resource.RLIMIT_AS, (_address_space() + BUILDER_MEMORY, resource.RLIM_INFINITY))
    try:
        with open(work, "rb") as pools:
            build_and_save(cache_dir, database, pickle.load(pools), source)
    except Exception as exc:  # every failure is the reload's reason
        with contextlib.suppress(OSError):
            report.send(_reason(exc))
        raise SystemExit(1) from None
    finally:
        report.close()


def _address_space() -> int:
    """Bytes of address space this process holds (VmSize)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def build_and_save(cache_dir: str, database: str | None, pools: list[model.Pool], source: str | None = None) -> None:
    """Build and save the region maps of `pools` (run in a process of its own by MapStore.maps_for)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[maps]: %(message)s")
    store = MapStore(cache_dir)
    locator: Locator = GeoIPLocator(database, source) if database is not None else NoLocator()
    try:
        flat = store.database(locator)
    finally:
        locator.close()
    for pool in pools:
        started = time.monotonic()
        progress = None
        if len(pool.regions) * len(flat.locations) >= REPORTED_BUILD:
            log.info("building the region map of pool %s: %d regions x %d locations", pool.name, len(pool.regions), len(flat.locations))
            progress = Progress(f"region map of pool {pool.name}: locations ranked", log)
        try:
            region_map = build_region_map(pool, flat, progress=progress)
        finally:
            if progress is not None:
                progress.finish()
        folder = store.folder(region_map.key)
        store._save(folder, region_map)
        if not folder.exists():
            raise OSError(f"cannot write region maps under {cache_dir}")
        log.info("region map for pool %s built in %.2f s", pool.name, time.monotonic() - started)
