"""Address -> Location from a MaxMind (GeoIP2/GeoLite2 City or Country) database. The only GeoIP importer.

geoip2's model objects cost ~10 µs a lookup; the raw record from maxminddb, the
reader geoip2 is built on, carries the same fields at a fraction of that. The
query path does not call this module: it reads the precomputed region maps
(`geo/regionmap.py`), which `flatten()` here feeds. `/v1/explain` and `geolb
resolve` use `locate()` to show their reasoning.
"""

from __future__ import annotations

import concurrent.futures
import csv
import datetime
import functools
import hashlib
import ipaddress
import itertools
import multiprocessing
import os
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import maxminddb

from geolb import model
from geolb.errors import GeoIPError
from geolb.geo.mmdbflat import SPECIAL_NETWORKS, FlatDatabase, Place, TreeError, empty_database, flatten
from geolb.geo.rank import Location

_SPECIAL_BY_VERSION: Mapping[int, tuple[tuple[int, int, model.IPNetwork], ...]] = {
    version: tuple((int(n.netmask), int(n.network_address), n) for n in SPECIAL_NETWORKS if n.version == version) for version in (4, 6)
}


def special_network(address: model.IPAddress) -> model.IPNetwork | None:
    """The special-purpose range holding `address` (private, loopback, documentation...), if any."""
    value = int(address)
    for mask, network_value, network in _SPECIAL_BY_VERSION[address.version]:
        if value & mask == network_value:
            return network
    return None


def load_centroids() -> Mapping[str, tuple[float, float]]:
    """ISO country code -> (latitude, longitude), from the table shipped with geolb."""
    table: dict[str, tuple[float, float]] = {}
    text = resources.files("geolb").joinpath("data/country-centroids.csv").read_text(encoding="utf-8")
    for row in csv.DictReader(line for line in text.splitlines() if not line.startswith("#")):
        table[row["country"]] = (float(row["latitude"]), float(row["longitude"]))
    return table


UNKNOWN = Location(ipaddress.ip_network("0.0.0.0/0"), source="not in database")


class NoLocator:
    """No database: every client is unknown, so GEO answers follow file order (SPEC §3 rule 2c)."""

    description = "no GeoIP database"
    digest = "no-database"
    source = None

    def close(self) -> None:
        pass

    def locate(self, address: model.IPAddress) -> Location:
        return Location(ipaddress.ip_network((address, 0)), source="no database")

    def flatten(self) -> FlatDatabase:
        return empty_database(self.digest)


class GeoIPLocator:
    """Locations from a MaxMind City or Country database (the kind is read from its metadata).

    `path` is the file read; `source` the operator's file it was copied from (see
    MapStore.take_database), named in messages: geolb never reads a database that
    another program may rewrite under it.
    """

    def __init__(self, path: str, source: str | None = None) -> None:
        source = source or path
        if not os.path.exists(path):
            raise GeoIPError(f"GeoIP database {source}: no such file")
        try:
            self.reader = maxminddb.open_database(path)
            self.database_type = str(self.reader.metadata().database_type)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIPError(f"GeoIP database {source}: not a readable MaxMind database ({exc})") from None
        try:
            if "City" in self.database_type:
                self.kind = "city"
            elif "Country" in self.database_type:
                self.kind = "country"
            else:
                raise GeoIPError(f"GeoIP database {source}: type {self.database_type!r} is neither a City nor a Country database")
            try:
                # A cheap look at the first records catches a corrupt data section now
                # rather than at the first unlucky query.
                for _record in itertools.islice(iter(self.reader), 2000):
                    pass
            except (ValueError, maxminddb.InvalidDatabaseError) as exc:
                raise GeoIPError(f"GeoIP database {source}: corrupt ({exc})") from None
        except GeoIPError:
            self.reader.close()
            raise
        self.path = path
        self.source = source
        self.centroids = load_centroids()
        with open(path, "rb") as handle:
            self.digest = hashlib.file_digest(handle, "sha256").hexdigest()
        self.build_epoch = int(self.reader.metadata().build_epoch)
        self.built = datetime.datetime.fromtimestamp(self.build_epoch, datetime.UTC).date().isoformat()
        self.description = f"{source} ({self.database_type}, built {self.built})"

    def close(self) -> None:
        self.reader.close()

    def locate(self, address: model.IPAddress) -> Location:
        special = special_network(address)
        if special is not None:
            return Location(special, source="special-purpose address")
        try:
            record, prefix = self.reader.get_with_prefix_len(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return Location(ipaddress.ip_network((address, address.max_prefixlen)), source="database error")
        network = ipaddress.ip_network((address, prefix), strict=False)
        if not isinstance(record, dict):
            return Location(network, source="not in database")
        country, continent, lat, lon = self.place(record)
        if lat is None or lon is None:
            return Location(network, country, continent, source=self.kind)
        where: Any = record.get("location") or {}
        measured = where.get("latitude") is not None
        return Location(network, country, continent, lat, lon, source=self.kind if measured else "country centroid")

    def place(self, record: dict[str, Any]) -> Place:
        return place_of(record, self.centroids)

    def flatten(self, progress: Callable[[int, int], None] | None = None) -> FlatDatabase:
        """Every network of the database with its place (seconds: callers cache the result).

        `progress(done, total)` hears how many data records are decoded (most of the time).
        """
        metadata = self.reader.metadata()
        places = functools.partial(self.places, progress=progress)
        try:
            return flatten(self.path, metadata.node_count, metadata.record_size, metadata.ip_version, places, self.digest)
        except (TreeError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIPError(f"GeoIP database {self.path}: corrupt search tree ({exc})") from None

    def places(self, versions: list[int], addresses: list[int], progress: Callable[[int, int], None] | None = None) -> list[Place]:
        """The place of the record at each address. Decoding is ~12 µs a record in maxminddb's C reader
        (GeoLite2 City has 458k records), so a large batch is split in shares over one process per CPU."""
        total = len(addresses)
        processes = min(os.cpu_count() or 1, MAX_DECODERS)
        if total < PARALLEL_BATCH or processes < 2:
            found = _places(self.path, versions, addresses)
            if progress is not None:
                progress(total, total)
            return found
        size = -(-total // (processes * SHARES_PER_DECODER))
        starts = range(0, total, size)
        context = multiprocessing.get_context("spawn")
        parts: dict[int, list[Place]] = {}
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
            shares = {pool.submit(_places, self.path, versions[i : i + size], addresses[i : i + size]): i for i in starts}
            done = 0
            for share in concurrent.futures.as_completed(shares):
                found = parts[shares[share]] = share.result()
                done += len(found)
                if progress is not None:
                    progress(done, total)
        return [place for start in starts for place in parts[start]]


PARALLEL_BATCH = 50_000
MAX_DECODERS = 8
SHARES_PER_DECODER = 4  # more shares than processes: progress is heard as they finish


def _places(path: str, versions: list[int], addresses: list[int]) -> list[Place]:
    reader = maxminddb.open_database(path)
    centroids = load_centroids()
    out: list[Place] = []
    v4, v6 = ipaddress.IPv4Address, ipaddress.IPv6Address
    for version, value in zip(versions, addresses, strict=True):
        record: Any = reader.get(v4(value) if version == 4 else v6(value))
        out.append(place_of(record, centroids) if isinstance(record, dict) else (None, None, None, None))
    reader.close()
    return out


def place_of(record: dict[str, Any], centroids: Mapping[str, tuple[float, float]]) -> Place:
    """(country, continent, latitude, longitude) of a record; a country without coordinates gets its centroid."""
    country_rec = record.get("country") or record.get("registered_country") or {}
    country = country_rec.get("iso_code")
    continent = (record.get("continent") or {}).get("code")
    where = record.get("location") or {}
    lat, lon = where.get("latitude"), where.get("longitude")
    if lat is not None and lon is not None:
        return country, continent, float(lat), float(lon)
    if country is not None and country in centroids:
        lat, lon = centroids[country]
        return country, continent, lat, lon
    return country, continent, None, None


Locator = GeoIPLocator | NoLocator


def database_file(path: str | None) -> str | None:
    """The database file `--geoip` names; without it the bundled one, or None when that is not installed."""
    return path if path is not None else bundled_database()


def bundled_database() -> str | None:
    """The GeoLite2 City database of the `maxminddb-geolite2` package, when installed."""
    try:
        from _maxminddb_geolite2 import geolite2_database  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    path = str(geolite2_database())
    return path if os.path.exists(path) else None
