"""Address -> Location from a MaxMind (GeoIP2/GeoLite2 City or Country) database. The only GeoIP importer.

geoip2's model objects cost ~10 µs a lookup; the raw record from maxminddb, the
reader geoip2 is built on, carries the same fields at a fraction of that.
"""

from __future__ import annotations

import csv
import ipaddress
import itertools
import os
from collections.abc import Callable, Hashable, Mapping
from importlib import resources
from typing import Any

import maxminddb

from geolb import model
from geolb.errors import GeoIPError
from geolb.geo.mmdbtree import EMPTY, BudgetExhausted, SearchTree
from geolb.geo.rank import Location, scope_excluding

AnswerOf = Callable[[Location], Hashable]

# Addresses that have no place on the map (RFC 6890 special-purpose registries).
# An address in one of them has no location, and that whole range shares the answer.
_SPECIAL_NETWORKS: tuple[model.IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/127", "::ffff:0:0/96", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip


_SPECIAL_BY_VERSION: Mapping[int, tuple[tuple[int, int, model.IPNetwork], ...]] = {
    version: tuple((int(n.netmask), int(n.network_address), n) for n in _SPECIAL_NETWORKS if n.version == version) for version in (4, 6)
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

    def locate(self, address: model.IPAddress) -> Location:
        return Location(ipaddress.ip_network((address, 0)), source="no database")

    def widest_scope(self, address: model.IPAddress, answer_of: AnswerOf, memo: dict[int, Hashable]) -> int:
        return 0  # nothing is known anywhere, so nothing here depends on the address


class GeoIPLocator:
    """Locations from a MaxMind City or Country database (the kind is read from its metadata)."""

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise GeoIPError(f"GeoIP database {path}: no such file")
        try:
            self.reader = maxminddb.open_database(path)
            self.database_type = str(self.reader.metadata().database_type)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIPError(f"GeoIP database {path}: not a readable MaxMind database ({exc})") from None
        if "City" in self.database_type:
            self.kind = "city"
        elif "Country" in self.database_type:
            self.kind = "country"
        else:
            raise GeoIPError(f"GeoIP database {path}: type {self.database_type!r} is neither a City nor a Country database")
        try:
            # A cheap look at the first records catches a corrupt data section at start-up
            # rather than at the first unlucky query.
            for _record in itertools.islice(iter(self.reader), 2000):
                pass
        except (ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIPError(f"GeoIP database {path}: corrupt ({exc})") from None
        self.path = path
        self.centroids = load_centroids()
        metadata = self.reader.metadata()
        try:
            self.tree: SearchTree | None = SearchTree(path, metadata.node_count, metadata.record_size, metadata.ip_version)
        except (OSError, ValueError):
            self.tree = None  # answers stay right; ECS scopes just stay at the database's own networks
        self._record_locations: dict[int, Location] = {}
        self.description = f"{path} ({self.database_type}, built {self._build_date()})"

    def _build_date(self) -> str:
        import datetime

        epoch = int(self.reader.metadata().build_epoch)
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC).date().isoformat()

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
        return self._location(network, record)

    def _location(self, network: model.IPNetwork, record: dict[str, Any]) -> Location:
        country_rec = record.get("country") or record.get("registered_country") or {}
        country = country_rec.get("iso_code")
        continent = (record.get("continent") or {}).get("code")
        where = record.get("location") or {}
        lat, lon = where.get("latitude"), where.get("longitude")
        if lat is not None and lon is not None:
            return Location(network, country, continent, float(lat), float(lon), source=self.kind)
        if country is not None and country in self.centroids:
            lat, lon = self.centroids[country]
            return Location(network, country, continent, lat, lon, source="country centroid")
        return Location(network, country, continent, source=self.kind)

    def widest_scope(self, address: model.IPAddress, answer_of: AnswerOf, memo: dict[int, Hashable]) -> int:
        """The shortest prefix around `address` whose every database network gets the same answer.

        `answer_of(location)` is the answer for a location; `memo` must belong to that
        one function (same pool, family and health), and makes each subtree's verdict
        a one-time cost. Special-purpose ranges inside the prefix count as unlocated.
        """
        location = self.locate(address)
        tree = self.tree
        if tree is None or special_network(address) is not None:
            return location.network.prefixlen
        width = address.max_prefixlen
        value = int(address)
        nodes, _leaf = tree.path(value, width)
        target = answer_of(location)

        def leaf_answer(record: int, network: int, prefix: int) -> Hashable:
            return answer_of(self._record_location(record, network, width))

        widest = len(nodes)
        floor = WIDEST_SCOPE[width]
        budget = [LEAF_BUDGET]
        try:
            for depth in range(len(nodes) - 1, floor - 1, -1):
                verdict = tree.uniform(nodes[depth], depth, value >> (width - depth), width, leaf_answer, memo, _MIXED, budget)
                if verdict != target:
                    break
                widest = depth
        except BudgetExhausted:
            pass  # keep what is confirmed; the memo lets later clients nearby go further
        if answer_of(UNKNOWN) != target:
            widest = scope_excluding(address, widest, _SPECIAL_NETWORKS)
        return min(widest, location.network.prefixlen)

    def _record_location(self, record: int, network: int, width: int) -> Location:
        if record == EMPTY:
            return UNKNOWN
        known = self._record_locations.get(record)
        if known is None:
            address = ipaddress.IPv4Address(network) if width == 32 else ipaddress.IPv6Address(network)
            data = self.reader.get(address)
            known = self._location(UNKNOWN.network, data) if isinstance(data, dict) else UNKNOWN
            if len(self._record_locations) >= RECORD_CACHE_LIMIT:
                self._record_locations.clear()
            self._record_locations[record] = known
        return known


_MIXED = object()  # two answers under one prefix
# Scopes stop widening here: resolvers gain little from caching one answer for more
# than a /16 (IPv4) or /32 (IPv6), and each bit wider doubles the tree to confirm.
WIDEST_SCOPE = {32: 16, 128: 32}
LEAF_BUDGET = 4096  # database networks one cold decision may look at
RECORD_CACHE_LIMIT = 500_000


def open_locator(path: str | None) -> GeoIPLocator | NoLocator:
    """The locator for `--geoip`; None means the bundled database, or none if it is not installed."""
    if path is not None:
        return GeoIPLocator(path)
    bundled = bundled_database()
    return GeoIPLocator(bundled) if bundled is not None else NoLocator()


def bundled_database() -> str | None:
    """The GeoLite2 City database of the `maxminddb-geolite2` package, when installed."""
    try:
        from _maxminddb_geolite2 import geolite2_database  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    path = str(geolite2_database())
    return path if os.path.exists(path) else None
