"""The `dnssec:` section: algorithm, keys directory, signature validity and refresh; the zone's keys read and checked."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from types import MappingProxyType

import yaml

from geolb import model
from geolb.config.context import ZoneContext
from geolb.config.values import parse_duration
from geolb.dnssec.keys import ALGORITHM_NAMES, ALGORITHMS, CDS_TTL, DNSKEY_TTL, DnssecKeyError, cds_rdata, load_keys

DNSSEC_KEYS = ("algorithm", "keys", "validity", "refresh")
DEFAULT_ALGORITHM = "ECDSAP256SHA256"
DEFAULT_VALIDITY = 7 * 86400  # as PowerDNS: a week, from an hour before the signature was made
DEFAULT_REFRESH = 86400  # a signature is reused for a day, so one in use always has six days left
KEYS_DIR = "keys"  # beside the zone files


def default_keys_dir(zone_file: str) -> str:
    return os.path.join(os.path.dirname(zone_file) or ".", KEYS_DIR)


def read_dnssec(ctx: ZoneContext, key_node: yaml.Node, node: yaml.Node) -> model.Signing | None:
    """The section's settings and the zone's keys; every problem is reported at the section (FILE:LINE)."""
    settings = {key: value for key, _key_node, value in ctx.mapping(node, "dnssec", DNSSEC_KEYS)}
    if not isinstance(node, yaml.MappingNode):
        return None  # reported by ctx.mapping
    algorithm = DEFAULT_ALGORITHM
    if "algorithm" in settings:
        algorithm = ctx.choice(settings["algorithm"], "dnssec algorithm", tuple(ALGORITHMS)) or DEFAULT_ALGORITHM
    directory = default_keys_dir(ctx.path)
    if "keys" in settings:
        text = ctx.text(settings["keys"], "dnssec keys")
        if text is not None:
            directory = os.path.join(os.path.dirname(ctx.path) or ".", os.path.expanduser(text))
    validity = DEFAULT_VALIDITY
    if "validity" in settings:
        validity = int(ctx.convert(settings["validity"], "dnssec validity", parse_duration) or DEFAULT_VALIDITY)
    refresh = DEFAULT_REFRESH
    if "refresh" in settings:
        refresh = int(ctx.convert(settings["refresh"], "dnssec refresh", parse_duration) or DEFAULT_REFRESH)
    if validity < 3600:
        ctx.error(settings.get("validity", node), f"dnssec validity must be an hour or more, got {validity} s")
    if refresh * 2 > validity:
        ctx.error(settings.get("refresh", node), f"dnssec refresh ({refresh} s) must be at most half the validity ({validity} s)")
    try:
        keys, warnings = load_keys(directory, ctx.origin)
    except DnssecKeyError as exc:
        ctx.error(key_node, str(exc))
        return None
    for warning in warnings:
        ctx.warn(key_node, warning)
    wanted = ALGORITHMS[algorithm]
    for key in keys:
        if key.algorithm != wanted:
            ctx.error(key_node, f"DNSSEC key {key.path} is {ALGORITHM_NAMES[key.algorithm]}, the zone says {algorithm}")
    # The keys are part of what the zone is: a key swapped on disk makes the zone change at the next reload.
    ctx.digest = hashlib.sha256(ctx.digest.encode() + b"".join(k.private_pem for k in keys)).hexdigest()
    return model.Signing(tuple(keys), validity, refresh, ctx.at(key_node))


def with_keys(zone: model.Zone, signing: model.Signing) -> model.Zone:
    """The zone signed by `signing`: its DNSKEY RRset at the apex, and CDS and CDNSKEY for every key (RFC 7344,
    RFC 8078), so that a parent that scans for them can install the DS by itself."""
    apex = zone.nodes[zone.name]
    keys = tuple(model.Opaque(key.dnskey) for key in signing.keys)
    published = {
        "DNSKEY": model.RRset(zone.name, "DNSKEY", DNSKEY_TTL, keys),
        "CDNSKEY": model.RRset(zone.name, "CDNSKEY", CDS_TTL, keys),
        "CDS": model.RRset(zone.name, "CDS", CDS_TTL, tuple(model.Opaque(cds_rdata(key)) for key in signing.keys)),
    }
    nodes = dict(zone.nodes)
    nodes[zone.name] = dataclasses.replace(apex, rrsets=MappingProxyType({**apex.rrsets, **published}))
    return dataclasses.replace(zone, nodes=MappingProxyType(nodes), dnssec=signing)
