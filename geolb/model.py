"""Frozen dataclasses for what the zone files mean: zones, records, pools, regions, endpoints.

Built once by `geolb.config`; read by the DNS path, the prober and the HTTP API.
Imports nothing beyond the standard library. Names are absolute, lower-case and end
with a dot ("www.example.com.").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from geolb.errors import Where

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Record type codes (RFC 1035 and successors) for the types geolb serves.
RTYPE_CODES: Mapping[str, int] = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "PTR": 12,
    "HINFO": 13,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SRV": 33,
    "DS": 43,
    "RRSIG": 46,
    "NSEC": 47,
    "DNSKEY": 48,
    "CDS": 59,
    "CDNSKEY": 60,
    "CAA": 257,
}
RTYPE_NAMES: Mapping[int, str] = {code: name for name, code in RTYPE_CODES.items()}

# Response codes (RFC 1035, 6891).
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTAUTH, BADVERS, BADCOOKIE = 0, 1, 2, 3, 4, 5, 9, 16, 23
BADKEY = 17  # a TSIG error (RFC 8945), sent in the TSIG record, the header saying NOTAUTH
RCODE_NAMES: Mapping[int, str] = {
    NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL", NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP", REFUSED: "REFUSED", NOTAUTH: "NOTAUTH", BADVERS: "BADVERS", BADCOOKIE: "BADCOOKIE",
}  # fmt: skip


# --- record data ---------------------------------------------------------------


@dataclass(frozen=True)
class A:
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class AAAA:
    address: ipaddress.IPv6Address


@dataclass(frozen=True)
class CNAME:
    target: str


@dataclass(frozen=True)
class NS:
    target: str


@dataclass(frozen=True)
class PTR:
    target: str


@dataclass(frozen=True)
class MX:
    preference: int
    exchange: str


@dataclass(frozen=True)
class TXT:
    strings: tuple[bytes, ...]


@dataclass(frozen=True)
class SRV:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class CAA:
    flags: int
    tag: str
    value: str


@dataclass(frozen=True)
class SOA:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True)
class HINFO:
    cpu: str
    os: str


@dataclass(frozen=True)
class Opaque:
    """Record data geolb makes itself (DNSKEY, RRSIG, NSEC), already in wire format."""

    data: bytes


Rdata = A | AAAA | CNAME | NS | PTR | MX | TXT | SRV | CAA | SOA | HINFO | Opaque


def address_rdata(address: IPAddress) -> A | AAAA:
    """An address as the record that carries it."""
    return A(address) if isinstance(address, ipaddress.IPv4Address) else AAAA(address)


def address_rtype(address: IPAddress) -> str:
    return "A" if address.version == 4 else "AAAA"


@dataclass(frozen=True)
class RRset:
    """Records of one name and type, sharing one TTL."""

    name: str
    rtype: str
    ttl: int
    rdatas: tuple[Rdata, ...]


# --- health checks and pools ------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    """How one endpoint is checked; hashable so identical checks are probed once."""

    type: str  # http | https | tcp | none
    port: int
    path: str
    host: str | None
    expect_status: tuple[int, ...]
    expect_body: str | None
    interval: float
    timeout: float
    fall: int
    rise: int
    tls_verify: bool
    load_header: str = "X-Load"  # http/https: the response header that carries the endpoint's load
    quorum: str = "majority"  # with several instances: majority | any | all


@dataclass(frozen=True)
class HealthKey:
    """One distinct thing the prober checks: an address and the check to run on it."""

    address: IPAddress
    check: HealthCheck

    # The prober looks keys up several times per check, 10,000 checks a second: hash once.
    def __hash__(self) -> int:
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.address, self.check))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict[str, object]:
        # A string's hash differs between processes: the cached one never travels.
        return {"address": self.address, "check": self.check}


@dataclass(frozen=True)
class Endpoint:
    address: IPAddress
    weight: int
    health: HealthCheck
    where: Where = field(compare=False)

    @property
    def key(self) -> HealthKey:
        return HealthKey(self.address, self.health)


SELECTION_POLICIES = ("random", "round-robin", "consistent")


@dataclass(frozen=True)
class Selection:
    """How a region orders its healthy endpoints in an answer (SPEC §3 rule 6)."""

    policy: str = "random"  # one of SELECTION_POLICIES
    hash_prefix: tuple[int, int] = (24, 56)  # consistent: the client network hashed, IPv4 and IPv6

    def prefix(self, version: int) -> int:
        return self.hash_prefix[0] if version == 4 else self.hash_prefix[1]


DEFAULT_SELECTION = Selection()


@dataclass(frozen=True)
class ShedLoad:
    """Load shedding thresholds: busy at `high` or more, not busy again until `low` or less (0 < low < high <= 1)."""

    high: float
    low: float


@dataclass(frozen=True)
class Latency:
    """A pool's `latency:` settings for `steering: latency` (SPEC §10)."""

    min_samples: int = 5  # samples in the window before a network's or country's figure for a region counts
    min_networks: int = 5  # distinct networks with figures before a country's evidence counts
    window: float = 7 * 86400.0  # seconds; older samples decay and then drop out
    margin: float = 0.10  # another region must be faster by more than this share ...
    margin_ms: float = 5.0  # ... and by more than this many milliseconds to take the answer
    vantage_radius: float = 1000.0  # km: a vantage point speaks for clients this close to it

    def beats(self, challenger: float, incumbent: float) -> bool:
        """True when a region measured at `challenger` ms takes the answer from one measured at `incumbent` ms."""
        gain = incumbent - challenger
        return gain > self.margin_ms and gain > self.margin * incumbent


DEFAULT_LATENCY = Latency()
STEERING_POLICIES = ("geo", "latency")


@dataclass(frozen=True)
class Region:
    name: str
    location: tuple[float, float] | None  # latitude, longitude in degrees
    countries: frozenset[str]
    continents: frozenset[str]
    endpoints: tuple[Endpoint, ...]
    where: Where = field(compare=False)
    selection: Selection = DEFAULT_SELECTION  # the pool's, unless the region sets its own
    rum_url: str | None = None  # a small object served by this region's load balancers, fetched by rum.js (SPEC §10)


@dataclass(frozen=True)
class NetworkRule:
    """A client prefix pinned to regions, in preference order."""

    network: IPNetwork
    regions: tuple[str, ...]
    where: Where = field(compare=False)


@dataclass(frozen=True)
class Pool:
    """Regions of endpoints that GEO records choose from, plus the zone's pinned networks.

    `networks` holds only the zone's rules that name a region of this pool, with the
    other regions dropped: a rule that names none of them is passed over (SPEC §2).
    """

    name: str
    zone: str
    regions: tuple[Region, ...]
    networks: tuple[NetworkRule, ...]
    where: Where = field(compare=False)
    selection: Selection = DEFAULT_SELECTION  # the default of its regions
    shed_load: ShedLoad | None = None
    steering: str = "geo"  # one of STEERING_POLICIES: "latency" orders by measured RTT where there is evidence
    latency: Latency = DEFAULT_LATENCY

    def region(self, name: str) -> Region | None:
        for region in self.regions:
            if region.name == name:
                return region
        return None


@dataclass(frozen=True)
class GeoRecord:
    """A GEO record: A/AAAA for `name` chosen per client from `pool`."""

    pool: str
    ttl: int
    max_answers: int | None
    where: Where = field(compare=False)


# --- zones ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """Everything owned by one name: static RRsets by type name, and at most one GEO."""

    name: str
    rrsets: Mapping[str, RRset]
    geo: GeoRecord | None = None


@dataclass(frozen=True)
class ZoneKey:
    """One DNSSEC key of a zone, as geolb/dnssec/keys.py read it; plain data, so it travels to the DNS workers."""

    zone: str
    algorithm: int  # 13 ECDSAP256SHA256, 15 ED25519
    key_tag: int
    dnskey: bytes  # the DNSKEY rdata, wire format
    path: str
    private_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class Signing:
    """A zone's `dnssec:` settings and keys: every key publishes a DNSKEY and signs (two during a rollover)."""

    keys: tuple[ZoneKey, ...]
    validity: int  # seconds a signature is valid from its making (and an hour before it)
    refresh: int  # seconds a signature is reused before a new one is made
    where: Where = field(compare=False)

    @property
    def key_tags(self) -> tuple[int, ...]:
        return tuple(key.key_tag for key in self.keys)


@dataclass(frozen=True)
class Zone:
    name: str
    file: str
    soa: RRset
    ns: RRset
    nodes: Mapping[str, Node]
    empty_nonterminals: frozenset[str]
    delegations: frozenset[str]  # zone cuts below the apex
    pools: Mapping[str, Pool]
    digest: str  # of the file's bytes (and its keys'): a reload knows whether it changed
    dnssec: Signing | None = None
    rum_name: str | None = None  # `rum_name: rum` -> "rum.example.com.": "<token>.rum.example.com." answers with the RUM listener

    @property
    def serial(self) -> int:
        soa = self.soa.rdatas[0]
        assert isinstance(soa, SOA)
        return soa.serial

    @property
    def negative_ttl(self) -> int:
        """RFC 2308: the SOA's TTL capped by its minimum field."""
        soa = self.soa.rdatas[0]
        assert isinstance(soa, SOA)
        return min(self.soa.ttl, soa.minimum)


@dataclass(frozen=True)
class ZoneSet:
    """Every zone served, swapped as one object on reload."""

    zones: Mapping[str, Zone]
    pools: Mapping[str, Pool]

    @property
    def signed(self) -> bool:
        """True when any zone is signed (DNSSEC): only then does a DO bit change an answer."""
        known: bool | None = self.__dict__.get("_signed")
        if known is None:
            known = any(zone.dnssec is not None for zone in self.zones.values())
            object.__setattr__(self, "_signed", known)
        return known

    def find_zone(self, name: str) -> Zone | None:
        """The zone with the longest apex that `name` is at or below."""
        while True:
            zone = self.zones.get(name)
            if zone is not None:
                return zone
            dot = name.find(".")
            if dot < 0 or dot == len(name) - 1:
                return None
            name = name[dot + 1 :]


EMPTY_ZONESET = ZoneSet(zones={}, pools={})
