"""Pools: regions with their places and preferences, endpoints with weights and health, and `networks` rules."""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Callable, Mapping

import yaml

from geolb import model
from geolb.config.codes import continent_problem, country_problem
from geolb.config.context import ZoneContext
from geolb.config.health import HealthSettings, read_health
from geolb.config.marks import scalar_text, scalar_value
from geolb.config.values import parse_address, parse_duration, parse_fraction, parse_int
from geolb.errors import Where

POOL_KEYS = ("health", "regions", "selection", "hash_prefix", "shed_load", "steering", "latency")
REGION_KEYS = ("location", "countries", "continents", "endpoints", "health", "selection", "hash_prefix", "rum_url")
SHED_KEYS = ("high", "low")
LATENCY_KEYS = ("min_samples", "min_networks", "window", "margin", "vantage_radius")
ENDPOINT_KEYS = ("address", "weight", "health")
MAX_REGIONS = 1000  # SPEC §7: the region maps of a pool are built within bounded memory up to this many


def read_networks(ctx: ZoneContext, node: yaml.Node) -> list[tuple[model.NetworkRule, yaml.Node]]:
    rules: list[tuple[model.NetworkRule, yaml.Node]] = []
    for key, key_node, value in ctx.entries(node, "networks"):
        try:
            network = ipaddress.ip_network(key.strip(), strict=True)
        except ValueError as exc:
            ctx.error(key_node, f"networks: '{key}' is not a network prefix ({exc})")
            continue
        regions: list[str] = []
        for item in ctx.items(value, f"regions of {key}"):
            text = ctx.text(item, f"region of {key}")
            if text is not None:
                regions.append(text)
        if not regions:
            ctx.error(key_node, f"networks: {key} names no region")
            continue
        rules.append((model.NetworkRule(network, tuple(regions), ctx.at(key_node)), value))
    return rules


def check_networks(ctx: ZoneContext, rules: list[tuple[model.NetworkRule, yaml.Node]], pools: Mapping[str, model.Pool]) -> None:
    known = {region.name for pool in pools.values() for region in pool.regions}
    for rule, node in rules:
        for name in rule.regions:
            if name not in known:
                ctx.warn(node, f"networks: {rule.network} names region '{name}', which no pool in this zone has")


def read_pools(ctx: ZoneContext, node: yaml.Node, zone_health: HealthSettings) -> dict[str, model.Pool]:
    pools: dict[str, model.Pool] = {}
    for pool_name, key_node, value in ctx.entries(node, "pools"):
        ctx.pools_declared.setdefault(pool_name, ctx.at(key_node))
        sections = {key: v for key, _k, v in ctx.mapping(value, f"pool {pool_name}", POOL_KEYS)}
        health = read_health(ctx, sections["health"], zone_health) if "health" in sections else zone_health
        selection = read_selection(ctx, sections, model.DEFAULT_SELECTION)
        shed_load = read_shed_load(ctx, sections["shed_load"]) if "shed_load" in sections else None
        steering = "geo"
        if "steering" in sections:
            steering = ctx.choice(sections["steering"], "steering", model.STEERING_POLICIES) or steering
        latency = read_latency(ctx, sections["latency"]) if "latency" in sections else model.DEFAULT_LATENCY
        if "latency" in sections and steering != "latency":
            ctx.warn(sections["latency"], f"pool {pool_name}: latency settings apply only with steering: latency")
        regions: list[model.Region] = []
        if "regions" not in sections:
            ctx.error(key_node, f"pool {pool_name} has no regions")
            continue
        for region_name, region_key, region_value in ctx.entries(sections["regions"], f"regions of pool {pool_name}"):
            region = read_region(ctx, pool_name, region_name, region_key, region_value, health, selection)
            if region is not None:
                regions.append(region)
        if not regions and isinstance(sections["regions"], yaml.MappingNode) and not sections["regions"].value:
            ctx.error(sections["regions"], f"pool {pool_name} has no regions")
        if isinstance(sections["regions"], yaml.MappingNode) and len(sections["regions"].value) > MAX_REGIONS:
            ctx.error(key_node, f"pool {pool_name} has {len(sections['regions'].value)} regions; a pool has at most {MAX_REGIONS}")
        pools[pool_name] = model.Pool(pool_name, ctx.origin, tuple(regions), (), ctx.at(key_node), selection, shed_load, steering, latency)
    return pools


def read_region(
    ctx: ZoneContext,
    pool: str,
    name: str,
    key_node: yaml.Node,
    node: yaml.Node,
    pool_health: HealthSettings,
    pool_selection: model.Selection,
) -> model.Region | None:
    sections = {key: v for key, _k, v in ctx.mapping(node, f"region {name}", REGION_KEYS)}
    health = read_health(ctx, sections["health"], pool_health) if "health" in sections else pool_health
    selection = read_selection(ctx, sections, pool_selection)
    location = read_location(ctx, sections["location"]) if "location" in sections else None
    rum_url = read_rum_url(ctx, sections["rum_url"]) if "rum_url" in sections else None
    countries = read_codes(ctx, sections.get("countries"), "countries", country_problem)
    continents = read_codes(ctx, sections.get("continents"), "continents", continent_problem)
    endpoints: list[model.Endpoint] = []
    seen: dict[model.IPAddress, Where] = {}
    for item in ctx.items(sections.get("endpoints", key_node), f"endpoints of region {name}") if "endpoints" in sections else []:
        endpoint = read_endpoint(ctx, item, health)
        if endpoint is None:
            continue
        if endpoint.address in seen:
            ctx.error(item, f"endpoint {endpoint.address} is listed twice in region {name} (first at line {seen[endpoint.address].line})")
            continue
        seen[endpoint.address] = endpoint.where
        endpoints.append(endpoint)
    if "endpoints" not in sections or not sections["endpoints"].value:
        ctx.error(key_node, f"region {name} of pool {pool} has no endpoints")
        return None
    return model.Region(name, location, countries, continents, tuple(endpoints), ctx.at(key_node), selection, rum_url)


def read_selection(ctx: ZoneContext, sections: Mapping[str, yaml.Node], base: model.Selection) -> model.Selection:
    """`selection` and `hash_prefix` of a pool or region, over `base` (what a key that fails to parse keeps)."""
    policy, prefixes = base.policy, base.hash_prefix
    if "selection" in sections:
        policy = ctx.choice(sections["selection"], "selection", model.SELECTION_POLICIES) or policy
    if "hash_prefix" in sections:
        node = sections["hash_prefix"]
        items = ctx.items(node, "hash_prefix")
        values = [scalar_value(item) for item in items]
        if len(values) != 2:
            ctx.error(node, f"hash_prefix must be [IPv4 prefix, IPv6 prefix], such as [24, 56], got {len(values)} value(s)")
        else:
            v4 = ctx.convert(items[0], "hash_prefix", lambda v: parse_int(v, "the IPv4 hash prefix", 1, 32))
            v6 = ctx.convert(items[1], "hash_prefix", lambda v: parse_int(v, "the IPv6 hash prefix", 1, 128))
            if v4 is not None and v6 is not None:
                prefixes = (v4, v6)
    return model.Selection(policy, prefixes)


def read_shed_load(ctx: ZoneContext, node: yaml.Node) -> model.ShedLoad | None:
    """`shed_load: {high: H, low: L}` with 0 < L < H <= 1 (load fractions or percentages)."""
    values: dict[str, float | None] = {}
    for key, _key_node, value in ctx.mapping(node, "shed_load", SHED_KEYS):
        values[key] = ctx.convert(value, f"shed_load {key}", parse_fraction)  # None: reported
    if not isinstance(node, yaml.MappingNode):
        return None
    missing = [key for key in SHED_KEYS if key not in values]
    if missing:
        ctx.error(node, f"shed_load needs both high and low (missing: {', '.join(missing)})")
        return None
    high, low = values["high"], values["low"]
    if high is None or low is None:
        return None
    if not 0 < low < high <= 1:
        ctx.error(node, f"shed_load needs 0 < low < high <= 1, got high {high:g} and low {low:g}")
        return None
    return model.ShedLoad(high, low)


def read_latency(ctx: ZoneContext, node: yaml.Node) -> model.Latency:
    """`latency: {min_samples, min_networks, window, margin, vantage_radius}` (SPEC §10); a key that fails keeps its default."""
    values: dict[str, float | int | None] = {}
    for key, _key_node, value in ctx.mapping(node, "latency", LATENCY_KEYS):
        if key in ("min_samples", "min_networks"):
            values[key] = ctx.convert(value, f"latency {key}", _count)
        elif key == "window":
            values[key] = ctx.convert(value, "latency window", parse_duration)
        elif key == "margin":
            values[key] = ctx.convert(value, "latency margin", parse_margin)
        else:
            values[key] = ctx.convert(value, "latency vantage_radius", parse_distance_km)
    kept = {key: value for key, value in values.items() if value is not None}
    return dataclasses.replace(model.DEFAULT_LATENCY, **kept)  # type: ignore[arg-type]


def _count(value: object) -> int:
    return parse_int(value, "a count", 1, 1_000_000)


def parse_margin(value: object) -> float:
    """A share by which another region must be faster: "10%" or 0.1, below 1 (the 5 ms floor is fixed: Latency.margin_ms)."""
    margin = parse_fraction(value)
    if margin >= 1:
        raise ValueError(f"a margin must be below 100%, got {value!r}")
    return margin


def parse_distance_km(value: object) -> float:
    """Kilometres: a number, or a string such as "1000km"."""
    number: object = value
    if isinstance(value, str):
        text = value.strip().lower()
        text = text[:-2].strip() if text.endswith("km") else text
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f'expected kilometres such as 1000 or "1000km", got {value!r}') from None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= 20_040:
        raise ValueError(f'expected kilometres from 0 to 20040 such as 1000 or "1000km", got {value!r}')
    return float(number)


def read_rum_url(ctx: ZoneContext, node: yaml.Node) -> str | None:
    """A region's `rum_url`: an absolute http(s) URL that rum.js fetches from the browser."""
    text = ctx.text(node, "rum_url")
    if text is None:
        return None
    url = urllib.parse.urlsplit(text.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        ctx.error(node, f"rum_url must be an http:// or https:// URL with a host, got {text!r}")
        return None
    if url.scheme == "http":
        ctx.warn(node, f"rum_url {text!r} is plain http: pages served over https cannot fetch it (mixed content)")
    return text.strip()


def read_location(ctx: ZoneContext, node: yaml.Node) -> tuple[float, float] | None:
    items = ctx.items(node, "location")
    numbers = [v for v in (scalar_value(item) for item in items) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(items) != 2 or len(numbers) != 2:
        ctx.error(node, "location must be [latitude, longitude] in degrees")
        return None
    lat, lon = float(numbers[0]), float(numbers[1])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        ctx.error(node, f"location [{lat}, {lon}] is off the globe (latitude -90..90, longitude -180..180)")
        return None
    return lat, lon


def read_codes(ctx: ZoneContext, node: yaml.Node | None, what: str, problem_of: Callable[[str], str | None]) -> frozenset[str]:
    """A list of codes, each checked by `problem_of` (None when it is valid)."""
    if node is None:
        return frozenset()
    codes: set[str] = set()
    for item in ctx.items(node, what):
        text = scalar_text(item)  # the text as written: YAML 1.1 would read NO as false
        if text is None:
            ctx.error(item, f"{what} takes a list of two-letter codes")
            continue
        code = text.strip().upper()
        problem = problem_of(code)
        if problem is not None:
            if code != text.strip():  # say what the file says, not what it was read as
                problem = problem.replace(f"'{code}'", f"'{text.strip()}'", 1)
            ctx.error(item, f"{what}: {problem}")
            continue
        codes.add(code)
    return frozenset(codes)


def read_endpoint(ctx: ZoneContext, node: yaml.Node, region_health: HealthSettings) -> model.Endpoint | None:
    health = region_health
    weight = 1
    address_node = node
    if isinstance(node, yaml.MappingNode):
        sections = {key: v for key, _k, v in ctx.mapping(node, "endpoint", ENDPOINT_KEYS)}
        if "address" not in sections:
            ctx.error(node, "endpoint needs an address")
            return None
        address_node = sections["address"]
        if "weight" in sections:
            parsed = ctx.convert(sections["weight"], "weight", lambda v: parse_int(v, "weight", 0, 65535))
            if parsed is None:
                return None
            weight = parsed
        if "health" in sections:
            health = read_health(ctx, sections["health"], region_health)
    text = scalar_text(address_node)
    if text is None:
        ctx.error(address_node, "endpoint must be an address or a mapping with address:")
        return None
    try:
        address = parse_address(text)
    except ValueError as exc:
        ctx.error(address_node, str(exc))
        return None
    return model.Endpoint(address, weight, health.check(), ctx.at(address_node))


def networks_for(pool: model.Pool, rules: list[model.NetworkRule]) -> tuple[model.NetworkRule, ...]:
    """The zone's rules as this pool sees them: its own regions only, rules naming none dropped."""
    names = {region.name for region in pool.regions}
    kept = []
    for rule in rules:
        regions = tuple(name for name in rule.regions if name in names)
        if regions:
            kept.append(model.NetworkRule(rule.network, regions, rule.where))
    return tuple(kept)
