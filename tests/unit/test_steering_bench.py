"""The steering bench's world, oracle and scoring (bench/steering_bench.py): what its PASS/FAIL rests on."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import steering_bench as bench

from geolb import model

LATENCY = model.Latency()
PARIS = (48.86, 2.35)
LIMA = (-12.05, -77.04)  # nearer São Paulo than Miami


def networks(places: list[tuple[str, str, float, float]], first: int = 0x51000000, step: int = 1 << 16) -> bench.Networks:
    """One /24 per place, each in a /16 of its own unless `step` is smaller."""
    return bench.Networks(
        np.array([first + i * step for i in range(len(places))], dtype=np.uint32),
        np.array([p[0] for p in places]),
        np.array([p[1] for p in places]),
        np.array([p[2] for p in places], dtype=np.float64),
        np.array([p[3] for p in places], dtype=np.float64),
    )


def world_of(nets: bench.Networks, rtt: np.ndarray) -> bench.World:
    return bench.World(nets, np.arange(len(nets), dtype=np.int64), nets.latitude, nets.longitude, rtt.astype(np.float64))


def flat_rtt(n: int, base: float = 200.0) -> np.ndarray:
    return np.full((n, len(bench.REGIONS)), base)


def beacons_of(world: bench.World, per_network: list[int], rtt: np.ndarray | None = None) -> bench.Beacons:
    network = np.repeat(np.arange(len(per_network)), per_network).astype(np.int64)
    measured = (world.rtt if rtt is None else rtt)[network]
    traffic = np.full(len(world.networks), 1.0 / len(world.networks))
    return bench.Beacons(network, measured, np.ones(len(network), dtype=np.uint8), traffic)


def test_score_counts_answers_within_the_margin_as_fastest_and_charges_no_answer_as_the_slowest() -> None:
    nets = networks([("FR", "EU", *PARIS)] * 3)
    rtt = flat_rtt(3)
    rtt[:, bench.REGION["eu-west"]] = 100.0
    rtt[:, bench.REGION["eu-central"]] = 96.0  # fastest, but within 5 ms of eu-west
    rtt[2, bench.REGION["us-east"]] = 400.0
    world = world_of(nets, rtt)
    answers = np.array([bench.REGION["eu-west"], bench.REGION["eu-central"], -1])
    own = np.array([True, True, False])
    result = bench.score(world, answers, own, LATENCY, np.full(3, 1 / 3))
    assert result.fastest_share == pytest.approx(2 / 3)
    assert result.mean_excess_ms == pytest.approx((4.0 + 0.0 + 304.0) / 3)
    assert result.worst_own_ratio == pytest.approx(100 / 96)
    assert result.own == 2 and result.own_slow == 0


def test_a_network_with_own_evidence_sent_far_slower_fails_the_floor() -> None:
    nets = networks([("FR", "EU", *PARIS)] * 2)
    rtt = flat_rtt(2)
    rtt[:, bench.REGION["eu-west"]] = 30.0
    rtt[:, bench.REGION["eu-central"]] = 60.0
    world = world_of(nets, rtt)
    traffic = np.full(2, 0.5)
    geo = bench.score(world, np.full(2, bench.REGION["eu-central"]), np.array([True, False]), LATENCY, traffic)
    lat = bench.score(world, np.array([bench.REGION["eu-central"], bench.REGION["eu-west"]]), np.array([True, False]), LATENCY, traffic)
    assert lat.own_slow == 1 and lat.worst_own_ratio == pytest.approx(2.0)
    passed, why = bench.verdict(geo, lat)
    assert not passed and "FAIL" in why
    better = bench.score(world, np.full(2, bench.REGION["eu-west"]), np.array([True, False]), LATENCY, traffic)
    assert bench.verdict(geo, better)[0]


def test_the_floor_wants_a_quarter_of_geos_excess() -> None:
    geo = bench.Score(10, 0.5, 20.0, 20.0, 0, math.nan, 0)
    assert bench.verdict(geo, bench.Score(10, 0.9, 5.0, 5.0, 0, math.nan, 0))[0]
    assert not bench.verdict(geo, bench.Score(10, 0.9, 5.1, 1.0, 0, math.nan, 0))[0]


def test_own_evidence_needs_min_samples_of_one_region() -> None:
    nets = networks([("FR", "EU", *PARIS)] * 3)
    world = world_of(nets, flat_rtt(3))
    measured = world.rtt.copy()
    measured[1, 1:] = np.nan  # network 1's beacons measured region 0 only
    beacons = beacons_of(world, [5, 5, 4], measured)
    counts = bench.samples_per_region(world, beacons)
    assert counts[0].tolist() == [5] * len(bench.REGIONS)
    assert counts[1].tolist() == [5] + [0] * (len(bench.REGIONS) - 1)
    assert bench.own_evidence(world, beacons, LATENCY).tolist() == [True, True, False]


def test_model_follows_a_networks_own_medians_past_the_margin_and_its_countrys_without_them() -> None:
    # Six networks in Paris: distance says eu-west, eu-central is truly 30 ms faster for all of them.
    nets = networks([("FR", "EU", *PARIS)] * 6)
    rtt = flat_rtt(6)
    rtt[:, bench.REGION["eu-west"]] = 60.0
    rtt[:, bench.REGION["eu-central"]] = 30.0
    world = world_of(nets, rtt)
    assert bench.geo_answers(nets).tolist() == [bench.REGION["eu-west"]] * 6
    only_first = bench.model_latency_answers(world, beacons_of(world, [5, 0, 0, 0, 0, 0]), LATENCY)
    assert only_first.tolist() == [bench.REGION["eu-central"]] + [bench.REGION["eu-west"]] * 5
    # Five networks with a beacon each make a country figure for the sixth, which sent none.
    everyone = bench.model_latency_answers(world, beacons_of(world, [1, 1, 1, 1, 1, 0]), LATENCY)
    assert everyone.tolist() == [bench.REGION["eu-central"]] * 6


def test_model_keeps_the_nearest_region_when_the_other_is_not_faster_by_the_margin() -> None:
    nets = networks([("FR", "EU", *PARIS)])
    rtt = flat_rtt(1)
    rtt[0, bench.REGION["eu-west"]] = 50.0
    rtt[0, bench.REGION["eu-central"]] = 46.0  # 4 ms: inside margin_ms
    world = world_of(nets, rtt)
    assert bench.model_latency_answers(world, beacons_of(world, [5]), LATENCY).tolist() == [bench.REGION["eu-west"]]


def test_the_world_is_seeded_and_has_south_american_isps_that_reach_miami_first() -> None:
    nets = networks([("PE", "SA", *LIMA)] * 400)
    first, second = bench.build_world(nets, 5), bench.build_world(nets, 5)
    assert np.array_equal(first.rtt, second.rtt)
    assert set(bench.geo_answers(nets).tolist()) == {bench.REGION["sa-east"]}
    via_miami = first.rtt[:, bench.REGION["sa-east"]] > first.rtt[:, bench.REGION["us-south"]] + 80
    assert 0.6 < via_miami.mean() < 0.95  # most ISPs (odds 0.8), not all
    assert (first.fastest != bench.REGION["sa-east"]).mean() > 0.5  # distance misleads most of them


def test_beacons_are_heavy_tailed_and_uneven() -> None:
    nets = networks([("FR", "EU", *PARIS)] * 1000, step=256)
    world = bench.build_world(nets, 3)
    beacons = bench.make_beacons(world, 3_000, 3)
    per_network = np.bincount(beacons.network, minlength=1000)
    assert per_network.max() > 50 * max(1, np.median(per_network))  # a few send many ...
    assert (per_network < 5).mean() > 0.3  # ... many send few
    ratio = beacons.rtt / world.rtt[beacons.network]
    assert np.nanmax(ratio) > 4 and 0.9 < np.nanmedian(ratio) < 1.2
    assert 0.005 < np.isnan(beacons.rtt).mean() < 0.02


def test_beacon_body_leaves_out_failed_fetches() -> None:
    body = json.loads(bench.beacon_body("steer-lat", [12.5, math.nan], ["a", "b"], "t1"))
    assert body == {"zone": "example.com", "pool": "steer-lat", "token": "t1", "rtt": {"a": 12.5}}


def test_status_numbers_reads_the_pools_latency_block() -> None:
    status = {
        "pools": {"steer-geo": {"latency": {"networks": 0}}, "steer-lat": {"latency": {"networks": 255, "beacons": {"accepted": 10}}}}
    }
    assert bench.status_numbers(status, "steer-lat") == {"latency.networks": 255.0, "latency.beacons.accepted": 10.0}
