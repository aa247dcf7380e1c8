"""Latency steering against distance in a simulated world (SPEC §10): beacons in through POST /v1/rum, answers out over DNS.

The world (seeded): >= 20,000 client /24s taken from the bundled GeoLite2 City
database (so GeoIP places them), in 100+ countries, and 12 regions at real
places, two pairs of them ~500 km apart. Each network's true round-trip time to
each region is where distance misleads:
  - base: great-circle km / 100 ms (light in fibre, both ways) x a route
    inflation shared by every network of a country towards a region (cables),
    x a small per-ISP factor, + the network's access latency (ISPs: a
    country's /16s dealt among ~n^0.7 AS-like groups);
  - detours, per ISP, more or less likely by country: South America
    tromboning through Miami to reach São Paulo, much of Africa reaching
    Johannesburg through Europe, Chinese ISPs reaching Tokyo and Singapore
    through the US west coast, Australian ISPs reaching Tokyo through
    Singapore, Indian ISPs with a slow path to Mumbai;
  - per-ISP offsets of up to +-40 ms between the regions ~500 km apart
    (Ashburn/Columbus, Paris/Frankfurt): distance cannot tell them apart;
  - 2 % of networks are not where GeoIP puts them.
Beacons come from networks with Zipf-like weights (a few send many, most few or
none) and carry every region's time with heavy-tailed noise: a lognormal factor
common to the beacon (a slow moment slows every fetch), lognormal jitter per
fetch, 3 % of fetches 5-20x slow, 1 % missing.

The server run posts the beacons (aiohttp, keep-alive, 32 at once,
X-Forwarded-For an address of the network, the peer 127.0.0.1 trusted) into a
real `geolb serve` whose zone has the same regions twice: pool `steer-lat`
(`steering: latency`, name lat.example.com) and `steer-geo` (`steering: geo`,
geo.example.com). After 1k, 10k and 100k beacons it waits for the evidence to
be published, asks both names with ECS for every network over UDP, and prints
per policy the share of networks answered from their truly fastest region
(within the margin), the mean excess RTT over that oracle (also weighted by
traffic), and among networks with their own evidence the worst ratio answered /
fastest RTT and how many go > 20 % slower, with why. PASS when, at the last
checkpoint, latency's mean excess <= 25 % of geo's and no network with its own
evidence is sent to a region more than 20 % (and more than margin_ms) slower
than its fastest.

`--dry-run` needs no server: it runs the world, the beacons and the oracle, and
answers with an in-process model of both policies (distance order; per-network
and per-country medians with the margin), which shows what the world allows.

    .venv/bin/python bench/steering_bench.py --dry-run
    .venv/bin/python bench/steering_bench.py [--networks 20000] [--checkpoints 1000 10000 100000] [--seed 22]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geolb import model  # noqa: E402

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
WORK = Path(os.environ.get("STEERING_BENCH_DIR", "/tmp/geolb-steering-bench"))


@dataclass(frozen=True)
class Place:
    name: str
    latitude: float
    longitude: float


# Real places; (us-east, us-central) and (eu-west, eu-central) are ~500 km apart.
REGIONS: tuple[Place, ...] = (
    Place("us-east", 39.04, -77.49),  # Ashburn
    Place("us-central", 39.96, -83.00),  # Columbus
    Place("us-south", 25.76, -80.19),  # Miami
    Place("us-west", 45.60, -121.20),  # The Dalles, Oregon
    Place("sa-east", -23.55, -46.63),  # São Paulo
    Place("eu-west", 48.86, 2.35),  # Paris
    Place("eu-central", 50.11, 8.68),  # Frankfurt
    Place("af-south", -26.20, 28.05),  # Johannesburg
    Place("ap-south", 19.08, 72.88),  # Mumbai
    Place("ap-southeast", 1.29, 103.85),  # Singapore
    Place("ap-northeast", 35.68, 139.69),  # Tokyo
    Place("au-east", -33.87, 151.21),  # Sydney
)
REGION = {place.name: index for index, place in enumerate(REGIONS)}
CLOSE_PAIRS = (("us-east", "us-central"), ("eu-west", "eu-central"))

# Detour odds per ISP (/16), by country; other countries of the continent take the continent's odds.
VIA_MIAMI = {"BR": 0.0, "AR": 0.3, "CL": 0.3, "UY": 0.2, "PY": 0.3, "*SA": 0.8}  # São Paulo through Miami
VIA_EUROPE = {"ZA": 0.05, "NA": 0.05, "BW": 0.05, "ZW": 0.1, "MZ": 0.1, "LS": 0.05, "SZ": 0.05, "ZM": 0.1}
VIA_EUROPE_EAST = {"KE": 0.5, "TZ": 0.5, "UG": 0.5, "RW": 0.5, "ET": 0.5}
VIA_EUROPE_OTHER_AFRICA = 0.9
VIA_US_WEST = {"CN": 0.5}  # Tokyo and Singapore through the US west coast
VIA_SINGAPORE = {"AU": 0.4, "NZ": 0.4}  # Tokyo through Singapore
SLOW_MUMBAI = {"IN": 0.3}


def great_circle_km(lat1: F64, lon1: F64, lat2: float, lon2: float) -> F64:
    p1, p2 = np.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * 6371.0 * np.arcsin(np.sqrt(np.minimum(a, 1.0))), dtype=np.float64)


def distances(latitude: F64, longitude: F64) -> F64:
    """[n, regions] great-circle km."""
    return np.stack([great_circle_km(latitude, longitude, r.latitude, r.longitude) for r in REGIONS], axis=1)


def pair_rtt(a: str, b: str) -> float:
    """A backbone round trip between two regions (inflated 1.3x)."""
    pa, pb = REGIONS[REGION[a]], REGIONS[REGION[b]]
    km = float(great_circle_km(np.array([pa.latitude]), np.array([pa.longitude]), pb.latitude, pb.longitude)[0])
    return km / 100 * 1.3


@dataclass(frozen=True)
class Networks:
    """Client /24s: first address (uint32), GeoIP country, continent and coordinates."""

    address: npt.NDArray[np.uint32]
    country: npt.NDArray[np.str_]
    continent: npt.NDArray[np.str_]
    latitude: F64
    longitude: F64

    def __len__(self) -> int:
        return len(self.address)


@dataclass(frozen=True)
class World:
    networks: Networks
    group: I64  # the ISP (/16) each network belongs to, 0..groups-1
    true_latitude: F64  # where the network really is (2 % differ from GeoIP)
    true_longitude: F64
    rtt: F64  # [n, regions] true round-trip ms

    @property
    def fastest(self) -> I64:
        return np.asarray(np.argmin(self.rtt, axis=1), dtype=np.int64)


def pick_networks(count: int, seed: int, database: str | None = None) -> Networks:
    """`count` /24s of the GeoIP database, each wholly in one located range; a country's share grows with the
    square root of its address space (so 100+ countries are there, the big ones most). Cached under WORK."""
    from geolb.geo.locate import GeoIPLocator, bundled_database

    path = database or bundled_database()
    if path is None:
        raise SystemExit("no GeoIP database (pip install maxminddb-geolite2)")
    digest = hashlib.sha256(f"{path}:{os.path.getsize(path)}:{count}:{seed}".encode()).hexdigest()[:16]
    cached = WORK / f"networks-v2-{digest}.npz"
    if cached.exists():
        data = np.load(cached)
        return Networks(data["address"], data["country"], data["continent"], data["latitude"], data["longitude"])
    flat = GeoIPLocator(path).flatten()
    ranges = flat.v4
    starts = ranges.hi.astype(np.int64)
    ends = np.append(starts[1:], 1 << 32)
    first = (starts + 255) >> 8
    last = ends >> 8  # exclusive
    values = ranges.values
    rows = flat.locations
    located = np.zeros(len(values), dtype=bool)
    ok = values >= 0
    has_place = np.array([c is not None for c in rows.country], dtype=bool) & ~np.isnan(rows.latitude)
    located[ok] = has_place[values[ok]]
    size = np.where(located & (last > first), last - first, 0)
    country_code = np.array([c or "" for c in rows.country])
    range_country = np.where(values >= 0, country_code[np.maximum(values, 0)], "")
    per_country: dict[str, int] = {}
    for code, n in zip(range_country.tolist(), size.tolist(), strict=True):
        if n:
            per_country[code] = per_country.get(code, 0) + n
    weight = np.array([n / math.sqrt(per_country[c]) if n else 0.0 for c, n in zip(range_country.tolist(), size.tolist(), strict=True)])
    rng = np.random.default_rng(seed)
    chosen: dict[int, int] = {}  # /24 key -> its range
    while len(chosen) < count:
        ranges_drawn = rng.choice(len(weight), size=count, p=weight / weight.sum())
        offsets = (rng.random(count) * size[ranges_drawn]).astype(np.int64)
        for r, key in zip(ranges_drawn.tolist(), (first[ranges_drawn] + offsets).tolist(), strict=True):
            if len(chosen) < count:
                chosen.setdefault(key, r)
    keys = np.array(list(chosen), dtype=np.int64)
    row = values[np.array(list(chosen.values()))]
    order = np.argsort(keys)
    row, keys = row[order], keys[order]
    continent_code = np.array([c or "" for c in rows.continent])
    networks = Networks(
        (keys << 8).astype(np.uint32),
        country_code[row],
        continent_code[row],
        rows.latitude[row].astype(np.float64),
        rows.longitude[row].astype(np.float64),
    )
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(
        cached,
        address=networks.address,
        country=networks.country,
        continent=networks.continent,
        latitude=networks.latitude,
        longitude=networks.longitude,
    )
    return networks


def _odds(table: dict[str, float], countries: npt.NDArray[np.str_], fallback: float = 0.0) -> F64:
    return np.array([table.get(c, fallback) for c in countries.tolist()], dtype=np.float64)


def build_world(networks: Networks, seed: int) -> World:
    """The true RTT of every network to every region (see the module docstring)."""
    rng = np.random.default_rng(seed + 1)
    n, regions = len(networks), len(REGIONS)
    # ISPs (AS-like): a country's /16s dealt at random among ~n^0.7 ISPs of that country.
    sixteens, of_sixteen = np.unique(networks.address >> 16, return_inverse=True)
    sixteen_country = np.empty(len(sixteens), dtype=networks.country.dtype)
    sixteen_country[of_sixteen.reshape(-1)] = networks.country
    isp = np.zeros(len(sixteens), dtype=np.int64)
    for code in np.unique(sixteen_country).tolist():
        members = np.nonzero(sixteen_country == code)[0]
        isp[members] = rng.integers(0, max(1, round(len(members) ** 0.7)), size=len(members))
    _, group = np.unique(
        np.stack([np.unique(sixteen_country, return_inverse=True)[1].reshape(-1), isp], axis=1), axis=0, return_inverse=True
    )
    group = group.reshape(-1)[of_sixteen.reshape(-1)].astype(np.int64)
    groups = int(group.max()) + 1 if n else 0
    # 2 % of networks are somewhere else than GeoIP says (another network's place).
    true_lat, true_lon = networks.latitude.copy(), networks.longitude.copy()
    moved = rng.random(n) < 0.02
    elsewhere = rng.integers(0, n, size=n)
    true_lat[moved], true_lon[moved] = networks.latitude[elsewhere[moved]], networks.longitude[elsewhere[moved]]
    km = distances(true_lat, true_lon)
    # Route inflation: shared by a country's networks towards a region (its cables), then a little per ISP.
    codes, country_index = np.unique(networks.country, return_inverse=True)
    country_index = country_index.reshape(-1)
    by_country = np.exp(rng.normal(math.log(1.5), 0.2, size=(len(codes), regions)))
    by_isp = np.exp(rng.normal(0.0, 0.08, size=(groups, regions)))
    access = np.exp(rng.normal(math.log(8.0), 0.6, size=n))  # last mile, the same to every region
    rtt = km / 100 * by_country[country_index] * by_isp[group] + access[:, None] + 1.0

    def per_isp(odds: F64) -> npt.NDArray[np.bool_]:
        draw = rng.random(groups)
        return np.asarray(draw[group] < odds, dtype=bool)

    country = networks.country
    continent = networks.continent
    south_america = continent == "SA"
    via_miami = south_america & per_isp(np.where(south_america, _odds(VIA_MIAMI, country, VIA_MIAMI["*SA"]), 0.0))
    sp, mia = REGION["sa-east"], REGION["us-south"]
    rtt[via_miami, sp] = np.maximum(rtt[via_miami, sp], rtt[via_miami, mia] + pair_rtt("us-south", "sa-east"))
    africa = continent == "AF"
    odds = np.where(africa, _odds({**VIA_EUROPE, **VIA_EUROPE_EAST}, country, VIA_EUROPE_OTHER_AFRICA), 0.0)
    via_europe = africa & per_isp(odds)
    jnb, par = REGION["af-south"], REGION["eu-west"]
    rtt[via_europe, jnb] = np.maximum(rtt[via_europe, jnb], rtt[via_europe, par] + pair_rtt("eu-west", "af-south"))
    via_us = per_isp(_odds(VIA_US_WEST, country))
    usw = REGION["us-west"]
    for target in ("ap-northeast", "ap-southeast"):
        t = REGION[target]
        rtt[via_us, t] = np.maximum(rtt[via_us, t], rtt[via_us, usw] + pair_rtt("us-west", target))
    via_sg = per_isp(_odds(VIA_SINGAPORE, country))
    sin, tyo = REGION["ap-southeast"], REGION["ap-northeast"]
    rtt[via_sg, tyo] = np.maximum(rtt[via_sg, tyo], rtt[via_sg, sin] + pair_rtt("ap-southeast", "ap-northeast"))
    slow = per_isp(_odds(SLOW_MUMBAI, country))
    rtt[slow, REGION["ap-south"]] += rng.uniform(30, 80, size=int(slow.sum()))
    # Per-ISP offsets between regions ~500 km apart: up to +-40 ms for half of the ISPs, +-5 ms for the rest.
    for a, b in CLOSE_PAIRS:
        offset = np.where(rng.random(groups) < 0.5, rng.uniform(-40, 40, size=groups), rng.uniform(-5, 5, size=groups))[group]
        ia, ib = REGION[a], REGION[b]
        rtt[:, ia] += np.maximum(offset, 0)
        rtt[:, ib] += np.maximum(-offset, 0)
    return World(networks, group, true_lat, true_lon, rtt)


@dataclass(frozen=True)
class Beacons:
    """A seeded stream of beacons: the network of each, and its measured ms per region (NaN: the fetch failed)."""

    network: I64
    rtt: F64  # [beacons, regions]
    host: npt.NDArray[np.uint8]  # the last octet of the client's address
    traffic: F64  # each network's share of the beacons (and of the users): what a weighted mean weighs by

    def first(self, count: int) -> Beacons:
        return Beacons(self.network[:count], self.rtt[:count], self.host[:count], self.traffic)

    def __len__(self) -> int:
        return len(self.network)


def make_beacons(world: World, count: int, seed: int, zipf: float = 0.9, outliers: float = 0.03, missing: float = 0.01) -> Beacons:
    rng = np.random.default_rng(seed + 2)
    n = len(world.networks)
    rank = rng.permutation(n) + 1
    weight = 1.0 / rank.astype(np.float64) ** zipf
    network = rng.choice(n, size=count, p=weight / weight.sum())
    truth = world.rtt[network]
    # A slow moment (Wi-Fi, a busy device) slows every fetch of a beacon: a factor common to the beacon, then a
    # little jitter per fetch.
    common = np.exp(rng.normal(0.0, 0.3, size=(count, 1)))
    measured = truth * common * np.exp(rng.normal(0.0, 0.1, size=truth.shape)) + np.abs(rng.normal(0.0, 2.0, size=truth.shape))
    outlier = rng.random(truth.shape) < outliers
    measured[outlier] *= rng.uniform(5, 20, size=int(outlier.sum()))
    measured[rng.random(truth.shape) < missing] = np.nan
    measured = np.round(measured, 1)
    return Beacons(network.astype(np.int64), measured, rng.integers(1, 255, size=count, dtype=np.uint8), weight / weight.sum())


def geo_answers(networks: Networks) -> I64:
    """The distance order's first region for each network (the pool has no country or continent preferences)."""
    return np.asarray(np.argmin(distances(networks.latitude, networks.longitude), axis=1), dtype=np.int64)


def samples_per_region(world: World, beacons: Beacons) -> npt.NDArray[np.int64]:
    """[n, regions]: how many beacons of each network measured each region."""
    counts = np.zeros(world.rtt.shape, dtype=np.int64)
    np.add.at(counts, beacons.network, ~np.isnan(beacons.rtt))
    return counts


def own_evidence(world: World, beacons: Beacons, latency: model.Latency) -> npt.NDArray[np.bool_]:
    """Networks with at least one region measured `min_samples` times."""
    return np.asarray((samples_per_region(world, beacons) >= latency.min_samples).any(axis=1), dtype=bool)


def model_latency_answers(world: World, beacons: Beacons, latency: model.Latency) -> I64:
    """What `steering: latency` should answer, modelled in process: a network's own medians where it has
    `min_samples`, else its country's (the median of `min_networks`+ networks' medians), else distance; the
    distance order's first covered region keeps the lead unless another covered one `beats` it."""
    n, regions = world.rtt.shape
    order = np.argsort(distances(world.networks.latitude, world.networks.longitude), axis=1)
    medians = np.full((n, regions), np.nan)
    counts = samples_per_region(world, beacons)
    by_network = np.argsort(beacons.network, kind="stable")
    sorted_networks = beacons.network[by_network]
    bounds = np.searchsorted(sorted_networks, np.arange(n + 1))
    for i in np.nonzero(counts.sum(axis=1))[0].tolist():
        rows = beacons.rtt[by_network[bounds[i] : bounds[i + 1]]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a region no beacon of the network measured
            medians[i] = np.nanmedian(rows, axis=0)
    own = np.where(counts >= latency.min_samples, medians, np.nan)
    country = world.networks.country
    figures = own.copy()
    for code in np.unique(country).tolist():
        members = country == code
        measured = ~np.isnan(medians[members])
        covered = measured.sum(axis=0) >= latency.min_networks
        if not covered.any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            figure = np.where(covered, np.nanmedian(medians[members], axis=0), np.nan)
        mine = members & np.isnan(own).all(axis=1)
        figures[mine] = figure
    answers = order[:, 0].copy()
    for i in np.nonzero(~np.isnan(figures).all(axis=1))[0].tolist():
        row = figures[i]
        incumbent = next(int(r) for r in order[i] if not np.isnan(row[r]))
        challenger = int(np.nanargmin(row))
        answers[i] = challenger if latency.beats(float(row[challenger]), float(row[incumbent])) else incumbent
    return answers


@dataclass(frozen=True)
class Score:
    networks: int
    fastest_share: float  # answered a region within the margin of the fastest
    mean_excess_ms: float  # true RTT of the answer minus the fastest's, over networks
    weighted_excess_ms: float  # the same weighted by each network's traffic (its share of beacons)
    own: int  # networks with own evidence
    worst_own_ratio: float  # among them: max answered / fastest RTT (nan: none)
    own_slow: int  # among them: answered > 20 % and > margin_ms slower than the fastest


def score(world: World, answers: I64, own: npt.NDArray[np.bool_], latency: model.Latency, traffic: F64) -> Score:
    """`answers[i]`: the region index answered to network i (-1: no answer, counted as the slowest region)."""
    rtt = world.rtt
    best = rtt.min(axis=1)
    got = np.where(answers >= 0, rtt[np.arange(len(rtt)), np.maximum(answers, 0)], rtt.max(axis=1))
    gain = got - best
    within = ~((gain > latency.margin_ms) & (gain > latency.margin * got))
    ratios = got[own] / best[own]
    slow = (ratios > 1.2) & (gain[own] > latency.margin_ms)
    return Score(
        len(got),
        float(within.mean()),
        float(gain.mean()),
        float((gain * traffic).sum() / traffic.sum()),
        int(own.sum()),
        float(ratios.max()) if len(ratios) else math.nan,
        int(slow.sum()),
    )


def slow_causes(world: World, beacons: Beacons, answers: I64, latency: model.Latency) -> str:
    """Why networks with their own evidence were sent > 20 % (and > margin_ms) slower: their fastest region
    lacked min_samples (the regions a figure covers come first, SPEC §10), or the covered figures misled."""
    counts = samples_per_region(world, beacons)
    own = (counts >= latency.min_samples).any(axis=1)
    best = world.rtt.min(axis=1)
    got = world.rtt[np.arange(len(answers)), np.maximum(answers, 0)]
    slow = own & (got > 1.2 * best) & (got - best > latency.margin_ms)
    uncovered = slow & (counts[np.arange(len(answers)), world.fastest] < latency.min_samples)
    return (
        f"{int(slow.sum())} own-evidence networks > 20 % slower: {int(uncovered.sum())} with their fastest region under "
        f"min_samples (covered regions go first), {int((slow & ~uncovered).sum())} with it covered (noise, margin)"
    )


def verdict(geo: Score, latency: Score) -> tuple[bool, str]:
    """The issue's floor: latency's mean excess <= 25 % of geo's; no network with its own evidence sent to a region
    more than 20 % slower than its fastest (and more than margin_ms: below 25 ms the margin allows more than 20 %)."""
    excess_ok = latency.mean_excess_ms <= 0.25 * geo.mean_excess_ms
    slow_ok = latency.own_slow == 0
    why = (
        f"latency mean excess {latency.mean_excess_ms:.2f} ms vs 25 % of geo's {0.25 * geo.mean_excess_ms:.2f} ms: "
        f"{'ok' if excess_ok else 'FAIL'}; own-evidence networks > 20 % (and > margin_ms) slower: {latency.own_slow} "
        f"(worst ratio {latency.worst_own_ratio:.2f}): {'ok' if slow_ok else 'FAIL'}"
    )
    return excess_ok and slow_ok, why


def table(rows: Sequence[tuple[int, Score, Score]]) -> str:
    lines = [
        "| beacons | own evidence | fastest geo | fastest latency | excess ms geo | excess ms latency | latency/geo | "
        "traffic-weighted excess geo / latency | own: worst ratio geo / latency | own: >20 % slower geo / latency |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for beacons, geo, lat in rows:
        share = lat.mean_excess_ms / geo.mean_excess_ms if geo.mean_excess_ms else math.nan
        lines.append(
            f"| {beacons:,} | {lat.own:,} of {geo.networks:,} | {100 * geo.fastest_share:.1f} % | {100 * lat.fastest_share:.1f} % | "
            f"{geo.mean_excess_ms:.2f} | {lat.mean_excess_ms:.2f} | {100 * share:.0f} % | "
            f"{geo.weighted_excess_ms:.2f} / {lat.weighted_excess_ms:.2f} | {geo.worst_own_ratio:.2f} / {lat.worst_own_ratio:.2f} | "
            f"{geo.own_slow} / {lat.own_slow} |"
        )
    return "\n".join(lines)


def describe(world: World) -> str:
    networks = world.networks
    fastest, nearest = world.fastest, geo_answers(networks)
    ratio = world.rtt[np.arange(len(fastest)), nearest] / world.rtt.min(axis=1)
    return (
        f"{len(networks):,} networks (/24) in {len(np.unique(networks.country))} countries, {int(world.group.max()) + 1:,} ISPs (/16); "
        f"{len(REGIONS)} regions; nearest region is the fastest for {100 * float((fastest == nearest).mean()):.1f} %, "
        f">20 % slower for {100 * float((ratio > 1.2).mean()):.1f} %"
    )


# ---------------------------------------------------------------- the server run


def zone_text(latency: model.Latency) -> str:
    regions = "\n".join(
        f"      {r.name}:\n        location: [{r.latitude}, {r.longitude}]\n        endpoints: [192.0.2.{10 + i}]\n"
        f"        rum_url: https://{r.name}.rum.example.net/rum.gif"
        for i, r in enumerate(REGIONS)
    )
    settings = (
        f"{{min_samples: {latency.min_samples}, min_networks: {latency.min_networks}, window: {int(latency.window)}, "
        f"margin: {latency.margin}}}"
    )
    return (
        "zone: example.com\nttl: 300\nsoa:\n  mname: ns1.example.com.\n  rname: hostmaster.example.com.\n  serial: 1\n"
        "nameservers:\n  ns1.example.com.: [192.0.2.53]\nhealth:\n  type: none\npools:\n"
        f"  steer-geo:\n    steering: geo\n    regions:\n{regions}\n"
        f"  steer-lat:\n    steering: latency\n    latency: {settings}\n    regions:\n{regions}\n"
        "records:\n  geo:\n    - {type: GEO, pool: steer-geo, ttl: 30}\n  lat:\n    - {type: GEO, pool: steer-lat, ttl: 30}\n"
    )


def region_of_address(address: str) -> int:
    last = int(address.rsplit(".", 1)[1])
    return last - 10 if address.startswith("192.0.2.") and 0 <= last - 10 < len(REGIONS) else -1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


READY = re.compile(r"^geolb ready: dns (?P<dns>\S+) .*?http (?P<http>\S+?),")


@dataclass
class Server:
    proc: subprocess.Popen[str]
    dns_port: int
    http: str
    rum: str
    stderr: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(zones: Path, cache: Path, extra: Sequence[str] = (), geoip: str | None = None, timeout: float = 180.0) -> Server:
    rum = f"127.0.0.1:{free_port()}"
    stderr = zones.parent / "server.stderr"
    command = [sys.executable, "-m", "geolb", "serve", "--zones", str(zones), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    command += ["--cache-dir", str(cache), "--log-level", "warning", "--rum-listen", rum, "--rum-trusted-proxy", "127.0.0.0/8"]
    command += ["--rum-rate", "100000000", *(["--geoip", geoip] if geoip else []), *extra]
    with open(stderr, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = READY.match(line)
        if found:
            port = int(found.group("dns").rsplit(":", 1)[1])
            print(f"  server: {' '.join(command)}", file=sys.stderr)
            return Server(proc, port, found.group("http"), rum, stderr)
    proc.kill()
    proc.wait()
    raise SystemExit(f"geolb serve did not get ready ({line.strip()!r}); stderr:\n{stderr.read_text()[-3000:]}")


def beacon_body(pool: str, rtt: Sequence[float], names: Sequence[str], token: str) -> bytes:
    figures = {name: value for name, value in zip(names, rtt, strict=True) if not math.isnan(value)}
    return json.dumps({"zone": "example.com", "pool": pool, "token": token, "rtt": figures}).encode()


async def post_beacons(
    url: str, bodies: Iterator[tuple[str, bytes]], concurrency: int = 32, progress: Callable[[int], None] | None = None
) -> dict[int, int]:
    """POST every (client address, body) with X-Forwarded-For; the count of each status (0: no response)."""
    import aiohttp

    statuses: dict[int, int] = {}
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            nonlocal done
            for address, body in bodies:
                headers = {"Content-Type": "application/json", "X-Forwarded-For": address}
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                statuses[status] = statuses.get(status, 0) + 1
                done += 1
                if progress is not None and done % 10_000 == 0:
                    progress(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: dict[int, bytes] = {}
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) >= 2:
            self.replies[struct.unpack("!H", data[:2])[0]] = data
            self.arrived.set()


def ecs_query(name: str, address: int, query_id: int) -> bytes:
    import dns.edns
    import dns.message

    network = f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.0"
    message = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.ECSOption(network, 24)])
    message.id = query_id
    message.flags = 0
    return message.to_wire()


async def ask_all(port: int, name: str, addresses: Sequence[int], window: int = 64, timeout: float = 2.0) -> I64:
    """The region answered for each /24 (ECS /24, UDP, `window` queries in flight; retried twice); -1: none."""
    import dns.message

    loop = asyncio.get_running_loop()
    transport, answers = await loop.create_datagram_endpoint(_Answers, remote_addr=("127.0.0.1", port))
    result = np.full(len(addresses), -1, dtype=np.int64)
    try:
        pending = list(range(len(addresses)))
        for _attempt in range(3):
            missing: list[int] = []
            for start in range(0, len(pending), window):
                batch = pending[start : start + window]
                ids = {(index + _attempt * 7919) & 0xFFFF: index for index in batch}
                answers.replies.clear()
                for query_id, index in ids.items():
                    transport.sendto(ecs_query(name, addresses[index], query_id))
                deadline = loop.time() + timeout
                while len(answers.replies) < len(ids) and loop.time() < deadline:
                    answers.arrived.clear()
                    try:
                        await asyncio.wait_for(answers.arrived.wait(), max(0.0, deadline - loop.time()))
                    except TimeoutError:
                        break
                for query_id, index in ids.items():
                    wire = answers.replies.get(query_id)
                    if wire is None:
                        missing.append(index)
                        continue
                    reply = dns.message.from_wire(wire)
                    regions = {region_of_address(r.to_text()) for rrset in reply.answer for r in rrset}
                    result[index] = regions.pop() if len(regions) == 1 else -1
            pending = missing
            if not pending:
                break
    finally:
        transport.close()
    return result


def status_numbers(status: Any, pool: str) -> dict[str, float]:
    """Numbers about `pool` in /v1/status, however nested: flattened keys of the dict named for it."""
    found: dict[str, float] = {}

    def flatten(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[prefix] = float(value)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == pool and isinstance(inner, dict):
                    flatten(inner, "")
                else:
                    walk(inner)
            if value.get("pool") == pool or value.get("name") == pool:
                flatten(value, "")
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(status)
    latency = {k: v for k, v in found.items() if k.startswith("latency.")}  # where geolb puts them (SPEC §10)
    chosen = latency or found
    return {
        k: v for k, v in chosen.items() if any(word in k for word in ("network", "beacon", "countr", "resolver", "evidence", "version"))
    }


async def fetch_status(http: str) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://{http}/v1/status") as response:
        return await response.json()


async def settle(server: Server, sample: Sequence[int], deadline: float, quiet: float = 4.0) -> tuple[dict[str, float], float]:
    """Wait until the published evidence stops changing: the pool's /v1/status numbers and the answers for a
    sample of networks the same for `quiet` seconds. Returns the last numbers and the seconds waited."""
    started = time.monotonic()
    last: tuple[dict[str, float], list[int]] | None = None
    since = time.monotonic()
    numbers: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            numbers = status_numbers(await fetch_status(server.http), "steer-lat")
        except Exception as error:  # the status shape is not this bench's business: answers alone then
            numbers = {"status error": float("nan")}
            print(f"  /v1/status: {error!r}", file=sys.stderr)
        answers = (await ask_all(server.dns_port, "lat.example.com", sample)).tolist()
        now = (numbers, answers)
        if last is None or json.dumps(now[0], sort_keys=True) != json.dumps(last[0], sort_keys=True) or now[1] != last[1]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        await asyncio.sleep(1.0)
    return numbers, time.monotonic() - started


async def run_server(
    world: World, beacons: Beacons, checkpoints: Sequence[int], latency: model.Latency, keep: bool
) -> list[tuple[int, Score, Score]]:
    work = Path(tempfile.mkdtemp(prefix="steering-", dir=WORK))
    zones = work / "zones"
    zones.mkdir()
    (zones / "example.com.yaml").write_text(zone_text(latency))
    server = start_server(zones, work / "cache")
    names = [r.name for r in REGIONS]
    addresses = world.networks.address.astype(np.int64).tolist()
    rows: list[tuple[int, Score, Score]] = []
    rng = random.Random(7)
    sample = rng.sample(range(len(addresses)), min(500, len(addresses)))
    try:
        geo = await ask_all(server.dns_port, "geo.example.com", addresses)
        expected_geo = geo_answers(world.networks)
        print(f"  geo answers as the distance model: {100 * float((geo == expected_geo).mean()):.2f} % (no answer: {int((geo < 0).sum())})")
        sent = 0
        accepted = np.zeros(len(beacons), dtype=bool)
        for checkpoint in checkpoints:
            begin, end = sent, min(checkpoint, len(beacons))

            def bodies(begin: int = begin, end: int = end) -> Iterator[tuple[str, bytes]]:
                for b in range(begin, end):
                    address = addresses[int(beacons.network[b])] + int(beacons.host[b])
                    client = f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}"
                    yield client, beacon_body("steer-lat", beacons.rtt[b].tolist(), names, f"b{b}")

            started = time.monotonic()
            statuses = await post_beacons(f"http://{server.rum}/v1/rum", bodies())
            took = time.monotonic() - started
            accepted[begin:end] = True  # refused beacons are reported below; the bench expects none
            sent = end
            print(f"  beacons {begin:,}..{end:,}: {dict(sorted(statuses.items()))} in {took:.1f} s ({(end - begin) / took:,.0f}/s)")
            numbers, waited = await settle(server, [addresses[i] for i in sample], time.monotonic() + 300)
            print(f"  evidence settled after {waited:.1f} s: {numbers}")
            lat = await ask_all(server.dns_port, "lat.example.com", addresses)
            upto = beacons.first(end)
            own = own_evidence(world, upto, latency)
            rows.append((end, score(world, geo, own, latency, beacons.traffic), score(world, lat, own, latency, beacons.traffic)))
            print(table(rows[-1:]).splitlines()[-1])
            print(f"  {slow_causes(world, upto, lat, latency)}")
            moved = lat != geo
            print(
                f"  answers unlike geo's: {int(moved.sum()):,}, of which to a faster region "
                f"{int((world.rtt[np.nonzero(moved)[0], lat[moved]] < world.rtt[np.nonzero(moved)[0], geo[moved]]).sum()):,}"
            )
    finally:
        server.stop()
        if keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--zipf", type=float, default=0.9, help="beacon weight of the network of rank r: 1/r^zipf")
    parser.add_argument("--outliers", type=float, default=0.03, help="share of times 5-20x too slow")
    parser.add_argument("--missing", type=float, default=0.01, help="share of region fetches that fail (no figure)")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--geoip", default=None, help="default: the bundled GeoLite2 City")
    parser.add_argument("--dry-run", action="store_true", help="no server: model both policies in process")
    parser.add_argument("--keep", action="store_true", help="keep the zone, cache and server stderr")
    args = parser.parse_args()
    latency = model.Latency()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    world = build_world(pick_networks(args.networks, args.seed, args.geoip), args.seed)
    beacons = make_beacons(world, max(args.checkpoints), args.seed, args.zipf, args.outliers, args.missing)
    print(f"world (seed {args.seed}, {time.monotonic() - started:.1f} s): {describe(world)}")
    print(
        f"beacons: {len(beacons):,}, Zipf {args.zipf}; outliers {100 * args.outliers:g} %, "
        f"missing fetches {100 * args.missing:g} %; margin {latency.margin:.0%} and {latency.margin_ms} ms"
    )
    if args.dry_run:
        geo = geo_answers(world.networks)
        rows = []
        for checkpoint in args.checkpoints:
            upto = beacons.first(checkpoint)
            own = own_evidence(world, upto, latency)
            modelled = model_latency_answers(world, upto, latency)
            rows.append(
                (checkpoint, score(world, geo, own, latency, beacons.traffic), score(world, modelled, own, latency, beacons.traffic))
            )
            print(f"  {checkpoint:,} beacons: {slow_causes(world, upto, modelled, latency)}")
        print("model (no server):")
    else:
        rows = asyncio.run(run_server(world, beacons, args.checkpoints, latency, args.keep))
        print("geolb serve:")
    print(table(rows))
    passed, why = verdict(rows[-1][1], rows[-1][2])
    print(f"{'PASS' if passed else 'FAIL'} at {rows[-1][0]:,} beacons: {why}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
