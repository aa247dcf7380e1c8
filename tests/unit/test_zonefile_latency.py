"""Zone keys of latency steering (SPEC §10): steering, latency, rum_url, rum_name; bad values with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from geolb import model
from geolb.config.zonefile import read_zone_file

HEAD = "nameservers:\n  ns1.example.com.: [192.0.2.53]\nhealth: {type: none}\n"
POOL = HEAD + "pools:\n  web:\n"  # the pool's keys at line 6
REGION = "    regions:\n      eu:\n        endpoints: [127.0.0.1]\n"


def read(tmp_path: Path, text: str) -> tuple[model.Zone | None, list[str], list[str]]:
    path = tmp_path / "example.com.yaml"
    path.write_text(text)
    result = read_zone_file(str(path))
    return (
        result.zone,
        [str(e).replace(str(path), "FILE") for e in result.errors],
        [str(w).replace(str(path), "FILE") for w in result.warnings],
    )


def test_latency_keys_parse(tmp_path: Path) -> None:
    text = (
        POOL
        + "    steering: latency\n"
        + "    latency: {min_samples: 3, min_networks: 2, window: 12h, margin: 20%, vantage_radius: 500km}\n"
        + "    regions:\n      eu:\n        rum_url: https://eu.example.net/rum.gif\n        endpoints: [127.0.0.1]\n"
        + "rum_name: rum\n"
    )
    zone, errors, warnings = read(tmp_path, text)
    assert errors == [] and warnings == []
    assert zone is not None
    pool = zone.pools["web"]
    assert pool.steering == "latency"
    assert pool.latency == model.Latency(min_samples=3, min_networks=2, window=43200.0, margin=0.2, vantage_radius=500.0)
    assert pool.regions[0].rum_url == "https://eu.example.net/rum.gif"
    assert zone.rum_name == "rum.example.com."


def test_defaults_are_geo_steering(tmp_path: Path) -> None:
    zone, errors, _ = read(tmp_path, POOL + REGION)
    assert errors == [] and zone is not None
    assert zone.pools["web"].steering == "geo" and zone.pools["web"].latency == model.DEFAULT_LATENCY
    assert zone.pools["web"].regions[0].rum_url is None and zone.rum_name is None


@pytest.mark.parametrize(
    ("latency", "expected"),
    [
        ("{window: 7d}", model.Latency(window=7 * 86400.0)),
        ("{window: 90}", model.Latency(window=90.0)),
        ("{margin: 0.05}", model.Latency(margin=0.05)),
        ("{vantage_radius: 250}", model.Latency(vantage_radius=250.0)),
    ],
)
def test_latency_value_forms(tmp_path: Path, latency: str, expected: model.Latency) -> None:
    zone, errors, _ = read(tmp_path, POOL + f"    steering: latency\n    latency: {latency}\n" + REGION)
    assert errors == [] and zone is not None
    assert zone.pools["web"].latency == expected


BAD = [
    ("steering", POOL + "    steering: fastest\n" + REGION, "FILE:6: steering must be one of geo, latency"),
    ("latency key", POOL + "    steering: latency\n    latency: {samples: 3}\n" + REGION, "FILE:7: unknown key 'samples' in latency"),
    ("min_samples", POOL + "    steering: latency\n    latency: {min_samples: 0}\n" + REGION, "FILE:7: latency min_samples:"),
    ("window", POOL + "    steering: latency\n    latency: {window: soon}\n" + REGION, "FILE:7: latency window: expected a duration"),
    ("margin", POOL + "    steering: latency\n    latency: {margin: 150%}\n" + REGION, "FILE:7: latency margin:"),
    ("margin 100%", POOL + "    steering: latency\n    latency: {margin: 1}\n" + REGION, "FILE:7: latency margin: a margin must be below"),
    ("radius", POOL + "    steering: latency\n    latency: {vantage_radius: far}\n" + REGION, "FILE:7: latency vantage_radius:"),
    (
        "rum_url scheme",
        POOL + "    regions:\n      eu:\n        rum_url: ftp://x.example/rum.gif\n        endpoints: [127.0.0.1]\n",
        "FILE:8: rum_url must be an http:// or https:// URL",
    ),
    ("rum_name outside", POOL + REGION + "rum_name: rum.example.org.\n", "FILE:9: rum_name must be a name below the zone"),
    ("rum_name apex", POOL + REGION + "rum_name: '@'\n", "FILE:9: rum_name must be a name below the zone"),
    (
        "rum_name clash",
        POOL + REGION + "rum_name: rum\nrecords:\n  x.rum: [{type: A, value: 192.0.2.1}]\n",
        "FILE:9: rum_name rum.example.com. answers every name under it, but the zone has records at x.rum.example.com.",
    ),
    (
        "rum_name delegated",
        POOL + REGION + "rum_name: rum.sub\nrecords:\n  sub: [{type: NS, value: ns.other.example.}]\n",
        "FILE:9: rum_name rum.sub.example.com. is below the delegation sub.example.com.",
    ),
    (
        "rum_name clash with GEO",
        POOL + REGION + "rum_name: rum\nrecords:\n  rum: [{type: GEO, pool: web}]\n",
        "FILE:9: rum_name rum.example.com. answers every name under it, but the zone has records at rum.example.com.",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD], ids=[n for n, _, _ in BAD])
def test_bad_latency_keys_are_reported_with_their_line(tmp_path: Path, text: str, expected: str) -> None:
    zone, errors, _ = read(tmp_path, text)
    assert zone is None
    assert any(m.startswith(expected) for m in errors), errors


def test_plain_http_rum_url_and_latency_without_steering_warn(tmp_path: Path) -> None:
    region = "    regions:\n      eu:\n        rum_url: http://eu.example.net/r.gif\n        endpoints: [127.0.0.1]\n"
    text = POOL + "    latency: {min_samples: 3}\n" + region
    zone, errors, warnings = read(tmp_path, text)
    assert errors == [] and zone is not None
    assert any(w.startswith("FILE:6: warning: pool web: latency settings apply only with steering: latency") for w in warnings), warnings
    assert any(w.startswith("FILE:9: warning: rum_url 'http://eu.example.net/r.gif' is plain http") for w in warnings), warnings
