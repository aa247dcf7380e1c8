"""One zone file to one `model.Zone`, with every problem reported as FILE:LINE: message."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

import yaml

from geolb import model
from geolb.config.marks import compose_file, is_null, mapping_items, scalar_text, scalar_value, where
from geolb.config.values import (
    parse_address,
    parse_duration,
    parse_int,
    parse_name,
    parse_rdata,
    parse_ttl,
)
from geolb.errors import ConfigError, Where
from geolb.names import absolute, check_name, is_at_or_below, parent

ZONE_KEYS = ("zone", "ttl", "soa", "nameservers", "health", "networks", "pools", "records")
SOA_KEYS = ("mname", "rname", "serial", "refresh", "retry", "expire", "minimum")
HEALTH_KEYS = (
    "type", "port", "path", "host", "expect_status", "expect_body",
    "interval", "timeout", "fall", "rise", "tls_verify",
)  # fmt: skip
POOL_KEYS = ("health", "regions")
REGION_KEYS = ("location", "countries", "continents", "endpoints", "health")
ENDPOINT_KEYS = ("address", "weight", "health")
RECORD_KEYS = ("type", "value", "ttl", "pool", "max_answers")
STATIC_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR")
CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})
HEALTH_TYPES = ("http", "https", "tcp", "none")

_INVALID = object()  # a value that failed to parse and was reported
T = TypeVar("T")

DEFAULT_TTL = 3600
DEFAULT_GEO_TTL = 30
SOA_DEFAULTS = {"refresh": 7200, "retry": 3600, "expire": 1209600, "minimum": 60}
HEALTH_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {
        "type": "http",
        "port": None,  # 80 for http and tcp, 443 for https
        "path": "/health",
        "host": None,
        "expect_status": (200,),
        "expect_body": None,
        "interval": 10.0,
        "timeout": 2.0,
        "fall": 3,
        "rise": 2,
        "tls_verify": True,
    }
)


@dataclass
class ZoneFileResult:
    """A zone, or None when any error was found; warnings never stop a zone."""

    zone: model.Zone | None
    errors: list[ConfigError]
    warnings: list[ConfigError] = field(default_factory=list)
    # Kept even when the file fails, so cross-file checks can still run on it.
    pools_declared: frozenset[str] = frozenset()
    geo_refs: tuple[tuple[str, Where], ...] = ()


@dataclass
class _Record:
    rtype: str
    rdata: model.Rdata
    ttl: int
    where: Where


def read_zone_file(path: str, *, previous_serial: int | None = None) -> ZoneFileResult:
    """Parse one `<zone>.yaml`; `previous_serial` keeps a derived serial moving forward."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        return ZoneFileResult(None, [ConfigError(Where(path, 1), f"cannot read zone file: {exc.strerror}")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return ZoneFileResult(None, [ConfigError(Where(path, line), "zone file is not valid UTF-8")])
    digest = hashlib.sha256(data).hexdigest()
    reader = _ZoneReader(path, digest, mtime, previous_serial)
    try:
        root = compose_file(path, text)
    except ConfigError as exc:
        return ZoneFileResult(None, [exc])
    zone = reader.read(root)
    pools, refs = frozenset(reader.pools_declared), tuple(reader.geo_refs)
    if reader.errors:
        return ZoneFileResult(None, reader.errors, reader.warnings, pools, refs)
    return ZoneFileResult(zone, [], reader.warnings, pools, refs)


def derived_serial(mtime: float, previous: int | None) -> int:
    """The file's modification time as a serial, never below a previous one plus one."""
    serial = int(mtime) % 2**32
    if previous is not None and serial <= previous:
        serial = (previous + 1) % 2**32
    return serial


class _ZoneReader:
    def __init__(self, path: str, digest: str, mtime: float, previous_serial: int | None) -> None:
        self.path = path
        self.digest = digest
        self.mtime = mtime
        self.previous_serial = previous_serial
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []
        self.pools_declared: set[str] = set()
        self.geo_refs: list[tuple[str, Where]] = []
        base = os.path.basename(path)
        self.origin = absolute(base[: -len(".yaml")] if base.endswith(".yaml") else base, ".")

    # --- helpers --------------------------------------------------------------------

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

    # --- the file -----------------------------------------------------------------------

    def read(self, root: yaml.Node | None) -> model.Zone | None:
        if root is None or is_null(root):
            self.errors.append(ConfigError(Where(self.path, 1), "zone file is empty"))
            return None
        sections = {key: (key_node, value) for key, key_node, value in self.mapping(root, "the zone file", ZONE_KEYS)}
        if not isinstance(root, yaml.MappingNode):
            return None

        if "zone" in sections:
            text = self.text(sections["zone"][1], "zone")
            if text is not None:
                self.origin = absolute(text, ".")
        problem = check_name(self.origin)
        if problem or self.origin == ".":
            self.errors.append(ConfigError(Where(self.path, 1), f"bad zone name: {problem or 'the root'}"))
            return None

        default_ttl = DEFAULT_TTL
        if "ttl" in sections:
            default_ttl = self.convert(sections["ttl"][1], "ttl", parse_ttl) or DEFAULT_TTL

        nameservers = self.read_nameservers(sections.get("nameservers"), root)
        soa = self.read_soa(sections.get("soa"), nameservers, default_ttl)
        zone_health = self.read_health(sections["health"][1], HEALTH_DEFAULTS) if "health" in sections else dict(HEALTH_DEFAULTS)
        networks = self.read_networks(sections["networks"][1]) if "networks" in sections else []
        pools = self.read_pools(sections["pools"][1], zone_health) if "pools" in sections else {}
        self.check_networks(networks, pools)
        records, geos = self.read_records(sections["records"][1], pools) if "records" in sections else ({}, {})

        if soa is None or nameservers is None:
            return None
        return self.build_zone(default_ttl, soa, nameservers, networks, pools, records, geos)

    def read_nameservers(
        self, entry: tuple[yaml.Node, yaml.Node] | None, root: yaml.Node
    ) -> dict[str, tuple[list[model.IPAddress], Where]] | None:
        if entry is None:
            self.error(root, "nameservers: at least one nameserver is required")
            return None
        out: dict[str, tuple[list[model.IPAddress], Where]] = {}
        for key, key_node, value in self.entries(entry[1], "nameservers"):
            ns = self.name(key_node, "nameserver")
            if ns is None:
                continue
            addresses: list[model.IPAddress] = []
            for item in self.items(value, f"addresses of {key}"):
                text = self.text(item, f"address of {key}")
                if text is not None:
                    try:
                        addresses.append(parse_address(text))
                    except ValueError as exc:
                        self.error(item, f"nameserver {key}: {exc}")
            if addresses and not is_at_or_below(ns, self.origin):
                self.warn(key_node, f"nameserver {ns} is outside the zone; its addresses are not served (no glue)")
                addresses = []
            out[ns] = (addresses, self.at(key_node))
        if not out:
            self.error(entry[1], "nameservers: at least one nameserver is required")
            return None
        return out

    def read_soa(self, entry: tuple[yaml.Node, yaml.Node] | None, nameservers: Mapping[str, object] | None, ttl: int) -> model.RRset | None:
        values: dict[str, object] = {}
        if entry is not None:
            for key, _key_node, value in self.mapping(entry[1], "soa", SOA_KEYS):
                if key in ("mname", "rname"):
                    text = self.text(value, f"soa {key}")
                    if text is None:
                        continue
                    if key == "rname" and "@" in text:
                        local, _, domain = text.partition("@")  # an e-mail address, as people write it
                        text = local.replace(".", "\\.") + "." + domain.rstrip(".") + "."
                    try:
                        values[key] = parse_name(text, self.origin) if key == "mname" else absolute(text, self.origin)
                    except ValueError as exc:
                        self.error(value, f"soa {key}: {exc}")
                elif key == "serial":
                    serial = self.convert(value, "soa serial", lambda v: parse_int(v, "serial", 0, 2**32 - 1))
                    if serial is not None:
                        values[key] = serial
                else:
                    seconds = self.convert(value, f"soa {key}", parse_ttl)
                    if seconds is not None:
                        values[key] = seconds
        if nameservers is None:
            return None
        numbers = {key: int(value) for key, value in values.items() if isinstance(value, int)}
        timers = {key: numbers.get(key, default) for key, default in SOA_DEFAULTS.items()}
        soa = model.SOA(
            mname=str(values.get("mname", next(iter(nameservers)))),
            rname=str(values.get("rname", f"hostmaster.{self.origin}")),
            serial=numbers.get("serial", derived_serial(self.mtime, self.previous_serial)),
            refresh=timers["refresh"],
            retry=timers["retry"],
            expire=timers["expire"],
            minimum=timers["minimum"],
        )
        return model.RRset(self.origin, "SOA", ttl, (soa,))

    # --- health ---------------------------------------------------------------------------

    def read_health(self, node: yaml.Node, base: Mapping[str, object]) -> dict[str, object]:
        """`base` overlaid with the keys this block sets."""
        merged = dict(base)
        if is_null(node):
            return merged
        for key, _key_node, value in self.mapping(node, "health", HEALTH_KEYS):
            parsed = self.read_health_value(key, value)
            if parsed is not _INVALID:
                merged[key] = parsed
        return merged

    def read_health_value(self, key: str, node: yaml.Node) -> object:
        raw = scalar_value(node)
        if key == "type":
            text = scalar_text(node)
            if text not in HEALTH_TYPES:
                self.error(node, f"health type must be one of {', '.join(HEALTH_TYPES)}, got {text!r}")
                return _INVALID
            return text
        if key == "port":
            return self._checked(node, lambda: parse_int(raw, "health port", 1, 65535))
        if key == "path":
            text = scalar_text(node)
            if text is None or not text.startswith("/"):
                self.error(node, f"health path must start with '/', got {text!r}")
                return _INVALID
            return text
        if key == "host":
            return scalar_text(node)
        if key == "expect_status":
            statuses: list[int] = []
            for item in self.items(node, "expect_status"):
                status = self._checked(item, lambda item=item: parse_int(scalar_value(item), "expect_status", 100, 599))
                if status is _INVALID:
                    return _INVALID
                statuses.append(status)  # type: ignore[arg-type]
            if not statuses:
                self.error(node, "expect_status needs at least one status code")
                return _INVALID
            return tuple(statuses)
        if key == "expect_body":
            return None if is_null(node) else scalar_text(node)
        if key in ("interval", "timeout"):
            return self._checked(node, lambda: parse_duration(raw), what=f"health {key}")
        if key in ("fall", "rise"):
            return self._checked(node, lambda: parse_int(raw, f"health {key}", 1, 1000))
        if key == "tls_verify":
            if not isinstance(raw, bool):
                self.error(node, f"tls_verify must be true or false, got {raw!r}")
                return _INVALID
            return raw
        raise AssertionError(key)

    def _checked(self, node: yaml.Node, parse: object, what: str = "") -> object:
        try:
            return parse()  # type: ignore[operator]
        except ValueError as exc:
            self.error(node, f"{what}: {exc}" if what else str(exc))
            return _INVALID

    def health_check(self, settings: Mapping[str, object]) -> model.HealthCheck:
        kind = str(settings["type"])
        port = settings["port"]
        if port is None:
            port = 443 if kind == "https" else 80
        return model.HealthCheck(
            type=kind,
            port=int(port),  # type: ignore[call-overload]
            path=str(settings["path"]),
            host=settings["host"],  # type: ignore[arg-type]
            expect_status=settings["expect_status"],  # type: ignore[arg-type]
            expect_body=settings["expect_body"],  # type: ignore[arg-type]
            interval=float(settings["interval"]),  # type: ignore[arg-type]
            timeout=float(settings["timeout"]),  # type: ignore[arg-type]
            fall=int(settings["fall"]),  # type: ignore[call-overload]
            rise=int(settings["rise"]),  # type: ignore[call-overload]
            tls_verify=bool(settings["tls_verify"]),
        )

    # --- networks and pools -----------------------------------------------------------

    def read_networks(self, node: yaml.Node) -> list[tuple[model.NetworkRule, yaml.Node]]:
        rules: list[tuple[model.NetworkRule, yaml.Node]] = []
        for key, key_node, value in self.entries(node, "networks"):
            try:
                network = ipaddress.ip_network(key.strip(), strict=True)
            except ValueError as exc:
                self.error(key_node, f"networks: '{key}' is not a network prefix ({exc})")
                continue
            regions: list[str] = []
            for item in self.items(value, f"regions of {key}"):
                text = self.text(item, f"region of {key}")
                if text is not None:
                    regions.append(text)
            if not regions:
                self.error(key_node, f"networks: {key} names no region")
                continue
            rules.append((model.NetworkRule(network, tuple(regions), self.at(key_node)), value))
        return rules

    def check_networks(self, rules: list[tuple[model.NetworkRule, yaml.Node]], pools: Mapping[str, model.Pool]) -> None:
        known = {region.name for pool in pools.values() for region in pool.regions}
        for rule, node in rules:
            for name in rule.regions:
                if name not in known:
                    self.warn(node, f"networks: {rule.network} names region '{name}', which no pool in this zone has")

    def read_pools(self, node: yaml.Node, zone_health: Mapping[str, object]) -> dict[str, model.Pool]:
        pools: dict[str, model.Pool] = {}
        for pool_name, key_node, value in self.entries(node, "pools"):
            self.pools_declared.add(pool_name)
            sections = {key: v for key, _k, v in self.mapping(value, f"pool {pool_name}", POOL_KEYS)}
            health = self.read_health(sections["health"], zone_health) if "health" in sections else dict(zone_health)
            regions: list[model.Region] = []
            if "regions" not in sections:
                self.error(key_node, f"pool {pool_name} has no regions")
                continue
            for region_name, region_key, region_value in self.entries(sections["regions"], f"regions of pool {pool_name}"):
                region = self.read_region(pool_name, region_name, region_key, region_value, health)
                if region is not None:
                    regions.append(region)
            if not regions and isinstance(sections["regions"], yaml.MappingNode) and not sections["regions"].value:
                self.error(sections["regions"], f"pool {pool_name} has no regions")
            pools[pool_name] = model.Pool(pool_name, self.origin, tuple(regions), (), self.at(key_node))
        return pools

    def read_region(
        self, pool: str, name: str, key_node: yaml.Node, node: yaml.Node, pool_health: Mapping[str, object]
    ) -> model.Region | None:
        sections = {key: v for key, _k, v in self.mapping(node, f"region {name}", REGION_KEYS)}
        health = self.read_health(sections["health"], pool_health) if "health" in sections else dict(pool_health)
        location = self.read_location(sections["location"]) if "location" in sections else None
        countries = self.read_codes(sections.get("countries"), "countries", lambda c: len(c) == 2 and c.isalpha())
        continents = self.read_codes(sections.get("continents"), "continents", lambda c: c in CONTINENTS)
        endpoints: list[model.Endpoint] = []
        seen: dict[model.IPAddress, Where] = {}
        for item in self.items(sections.get("endpoints", key_node), f"endpoints of region {name}") if "endpoints" in sections else []:
            endpoint = self.read_endpoint(item, health)
            if endpoint is None:
                continue
            if endpoint.address in seen:
                self.error(
                    item, f"endpoint {endpoint.address} is listed twice in region {name} (first at line {seen[endpoint.address].line})"
                )
                continue
            seen[endpoint.address] = endpoint.where
            endpoints.append(endpoint)
        if "endpoints" not in sections or not sections["endpoints"].value:
            self.error(key_node, f"region {name} of pool {pool} has no endpoints")
            return None
        return model.Region(name, location, countries, continents, tuple(endpoints), self.at(key_node))

    def read_location(self, node: yaml.Node) -> tuple[float, float] | None:
        items = self.items(node, "location")
        values = [scalar_value(item) for item in items]
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            self.error(node, "location must be [latitude, longitude] in degrees")
            return None
        lat, lon = float(values[0]), float(values[1])  # type: ignore[arg-type]
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            self.error(node, f"location [{lat}, {lon}] is off the globe (latitude -90..90, longitude -180..180)")
            return None
        return lat, lon

    def read_codes(self, node: yaml.Node | None, what: str, valid: object) -> frozenset[str]:
        if node is None:
            return frozenset()
        codes: set[str] = set()
        for item in self.items(node, what):
            text = scalar_text(item)  # the text as written: YAML 1.1 would read NO as false
            code = text.strip().upper() if text else ""
            if not valid(code):  # type: ignore[operator]
                kind = (
                    "ISO 3166 country codes such as US or NO"
                    if what == "countries"
                    else f"continent codes ({', '.join(sorted(CONTINENTS))})"
                )
                self.error(item, f"{what} takes {kind}, got {text!r}")
                continue
            codes.add(code)
        return frozenset(codes)

    def read_endpoint(self, node: yaml.Node, region_health: Mapping[str, object]) -> model.Endpoint | None:
        health = region_health
        weight = 1
        address_node = node
        if isinstance(node, yaml.MappingNode):
            sections = {key: v for key, _k, v in self.mapping(node, "endpoint", ENDPOINT_KEYS)}
            if "address" not in sections:
                self.error(node, "endpoint needs an address")
                return None
            address_node = sections["address"]
            if "weight" in sections:
                parsed = self.convert(sections["weight"], "weight", lambda v: parse_int(v, "weight", 0, 65535))
                if parsed is None:
                    return None
                weight = parsed
            if "health" in sections:
                health = self.read_health(sections["health"], region_health)
        text = scalar_text(address_node)
        if text is None:
            self.error(address_node, "endpoint must be an address or a mapping with address:")
            return None
        try:
            address = parse_address(text)
        except ValueError as exc:
            self.error(address_node, str(exc))
            return None
        return model.Endpoint(address, weight, self.health_check(health), self.at(address_node))

    # --- records --------------------------------------------------------------------------

    def read_records(self, node: yaml.Node, pools: Mapping[str, model.Pool]) -> tuple[dict[str, list[_Record]], dict[str, model.GeoRecord]]:
        records: dict[str, list[_Record]] = {}
        geos: dict[str, model.GeoRecord] = {}
        for key, key_node, value in self.entries(node, "records"):
            owner = absolute(key, self.origin)
            problem = check_name(owner, wildcard_ok=True)
            if problem:
                self.error(key_node, problem)
                continue
            if not is_at_or_below(owner, self.origin):
                self.error(key_node, f"{owner} is outside the zone {self.origin}")
                continue
            items = [value] if isinstance(value, yaml.MappingNode) else self.items(value, f"records of {key}")
            for item in items:
                self.read_record(owner, item, records, geos)
        return records, geos

    def read_record(self, owner: str, node: yaml.Node, records: dict[str, list[_Record]], geos: dict[str, model.GeoRecord]) -> None:
        fields = {key: v for key, _k, v in self.mapping(node, f"record of {owner}", RECORD_KEYS)}
        if not isinstance(node, yaml.MappingNode):
            return
        rtype_text = scalar_text(fields["type"]) if "type" in fields else None
        if rtype_text is None:
            self.error(node, f"record of {owner} needs a type")
            return
        rtype = rtype_text.strip().upper()
        ttl_node = fields.get("ttl")
        if rtype == "GEO":
            for key in ("value",):
                if key in fields:
                    self.error(fields[key], "GEO records take pool:, not value:")
            if "pool" not in fields:
                self.error(node, f"GEO record of {owner} needs a pool")
                return
            pool = scalar_text(fields["pool"]) or ""
            self.geo_refs.append((pool, self.at(fields["pool"])))
            ttl = self.convert(ttl_node, "ttl", parse_ttl) if ttl_node is not None else DEFAULT_GEO_TTL
            max_answers = None
            if "max_answers" in fields:
                max_answers = self.convert(fields["max_answers"], "max_answers", lambda v: parse_int(v, "max_answers", 1, 64))
            if owner in geos:
                self.error(node, f"{owner} already has a GEO record (line {geos[owner].where.line})")
                return
            if ttl is not None:
                geos[owner] = model.GeoRecord(pool, ttl, max_answers, self.at(node))
            return
        for key in ("pool", "max_answers"):
            if key in fields:
                self.error(fields[key], f"{key}: only applies to GEO records")
        if rtype == "SOA":
            self.error(node, "the SOA record comes from the soa: section")
            return
        if rtype not in STATIC_TYPES:
            self.error(fields["type"], f"unsupported record type '{rtype_text}' (supported: {', '.join(STATIC_TYPES)}, GEO)")
            return
        if "value" not in fields:
            self.error(node, f"{rtype} record of {owner} needs a value")
            return
        value_node = fields["value"]
        raw: object
        if isinstance(value_node, yaml.SequenceNode):
            raw = [scalar_text(item) for item in value_node.value]
        else:
            raw = scalar_text(value_node) if rtype not in ("TXT",) else (scalar_text(value_node) or "")
        try:
            rdata = parse_rdata(rtype, raw, self.origin)
        except ValueError as exc:
            self.error(value_node, str(exc))
            return
        ttl = self.convert(ttl_node, "ttl", parse_ttl) if ttl_node is not None else None
        if ttl_node is not None and ttl is None:
            return
        records.setdefault(owner, []).append(_Record(rtype, rdata, ttl if ttl is not None else -1, self.at(node)))

    # --- the whole zone ------------------------------------------------------------------

    def build_zone(
        self,
        default_ttl: int,
        soa: model.RRset,
        nameservers: Mapping[str, tuple[list[model.IPAddress], Where]],
        networks: list[tuple[model.NetworkRule, yaml.Node]],
        pools: Mapping[str, model.Pool],
        records: dict[str, list[_Record]],
        geos: dict[str, model.GeoRecord],
    ) -> model.Zone | None:
        origin = self.origin
        for ns, (addresses, at) in nameservers.items():
            for address in addresses:
                records.setdefault(ns, []).append(_Record(model.address_rtype(address), model.address_rdata(address), default_ttl, at))
        if origin in records and any(r.rtype == "NS" for r in records[origin]):
            first = next(r for r in records[origin] if r.rtype == "NS")
            self.errors.append(ConfigError(first.where, "the apex NS records come from the nameservers: section"))

        rrsets: dict[str, dict[str, model.RRset]] = {}
        for owner, owned in records.items():
            by_type: dict[str, list[_Record]] = {}
            for record in owned:
                by_type.setdefault(record.rtype, []).append(record)
            for rtype, group in by_type.items():
                explicit = {r.ttl for r in group if r.ttl >= 0}
                if len(explicit) > 1:
                    self.errors.append(
                        ConfigError(group[-1].where, f"records of one RRset ({owner} {rtype}) must share one TTL, got {sorted(explicit)}")
                    )
                ttl = min(explicit) if explicit else default_ttl
                unique: list[model.Rdata] = []
                for record in group:
                    if record.rdata in unique:
                        self.errors.append(ConfigError(record.where, f"duplicate {rtype} record at {owner}"))
                    else:
                        unique.append(record.rdata)
                rrsets.setdefault(owner, {})[rtype] = model.RRset(owner, rtype, ttl, tuple(unique))

        delegations = frozenset(owner for owner, types in rrsets.items() if "NS" in types and owner != origin)
        for owner, types in rrsets.items():
            first_where = records[owner][0].where
            if "CNAME" in types:
                if owner == origin:
                    self.errors.append(ConfigError(first_where, "a CNAME cannot stand at the zone apex (SOA and NS live there)"))
                if len(types["CNAME"].rdatas) > 1:
                    self.errors.append(ConfigError(first_where, f"{owner} has more than one CNAME"))
                if len(types) > 1 or owner in geos:
                    others = sorted(set(types) - {"CNAME"} | ({"GEO"} if owner in geos else set()))
                    self.errors.append(ConfigError(first_where, f"CNAME at {owner} cannot have other data beside it ({', '.join(others)})"))
            if owner in geos and ({"A", "AAAA"} & set(types)):
                self.errors.append(
                    ConfigError(
                        geos[owner].where,
                        f"GEO at {owner} answers A and AAAA; remove the static {'/'.join(sorted({'A', 'AAAA'} & set(types)))}",
                    )
                )
            if owner in delegations and set(types) - {"NS"} - ({"A", "AAAA"} if owner in nameservers else set()):
                self.errors.append(ConfigError(first_where, f"{owner} is delegated (NS); only NS can stand at a delegation point"))
            cut = _cut_above(owner, delegations, origin)
            if cut is not None and set(types) - {"A", "AAAA"}:
                self.errors.append(ConfigError(first_where, f"{owner} is below the delegation {cut}; only glue (A/AAAA) may stand there"))
        for owner, geo in geos.items():
            if geo.pool not in pools:
                continue  # may be a pool of another zone; the zone set checks it exists
            cut = _cut_above(owner, delegations, origin) or (owner if owner in delegations else None)
            if cut is not None:
                self.errors.append(ConfigError(geo.where, f"GEO at {owner} is hidden by the delegation {cut}"))
        for ns, (addresses, at) in nameservers.items():
            if is_at_or_below(ns, origin) and not addresses and not ({"A", "AAAA"} & set(rrsets.get(ns, {}))):
                self.errors.append(ConfigError(at, f"nameserver {ns} is inside the zone and needs addresses (glue)"))
        for owner, types in rrsets.items():
            if owner in delegations:
                for rdata in types["NS"].rdatas:
                    assert isinstance(rdata, model.NS)
                    if is_at_or_below(rdata.target, owner) and not ({"A", "AAAA"} & set(rrsets.get(rdata.target, {}))):
                        self.errors.append(
                            ConfigError(
                                records[owner][0].where,
                                f"delegation {owner} names {rdata.target}, which is below it and needs glue (A/AAAA records)",
                            )
                        )
        if self.errors:
            return None

        ns_rrset = model.RRset(origin, "NS", default_ttl, tuple(model.NS(ns) for ns in nameservers))
        nodes: dict[str, model.Node] = {}
        for owner in set(rrsets) | set(geos) | {origin}:
            node_rrsets = dict(rrsets.get(owner, {}))
            if owner == origin:
                node_rrsets["SOA"] = soa
                node_rrsets["NS"] = ns_rrset
            nodes[owner] = model.Node(owner, MappingProxyType(node_rrsets), geos.get(owner))
        ents: set[str] = set()
        for owner in nodes:
            name = owner
            while name != origin:
                name = parent(name)
                if name not in nodes:
                    ents.add(name)
        pool_networks = {name: _networks_for(pool, [rule for rule, _ in networks]) for name, pool in pools.items()}
        final_pools = {
            name: model.Pool(pool.name, pool.zone, pool.regions, pool_networks[name], pool.where) for name, pool in pools.items()
        }
        return model.Zone(
            name=origin,
            file=self.path,
            soa=soa,
            ns=ns_rrset,
            nodes=MappingProxyType(nodes),
            empty_nonterminals=frozenset(ents),
            delegations=delegations,
            pools=MappingProxyType(final_pools),
            digest=self.digest,
        )


def _cut_above(owner: str, delegations: frozenset[str], origin: str) -> str | None:
    """The delegation point strictly above `owner`, if any."""
    name = owner
    while name != origin and name != ".":
        name = parent(name)
        if name in delegations:
            return name
    return None


def _networks_for(pool: model.Pool, rules: list[model.NetworkRule]) -> tuple[model.NetworkRule, ...]:
    """The zone's rules as this pool sees them: its own regions only, rules naming none dropped."""
    names = {region.name for region in pool.regions}
    kept = []
    for rule in rules:
        regions = tuple(name for name in rule.regions if name in names)
        if regions:
            kept.append(model.NetworkRule(rule.network, regions, rule.where))
    return tuple(kept)
