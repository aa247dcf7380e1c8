"""Zone keys on disk: generated, read and described as DNSKEY and DS records (cryptography and dnspython).

Each zone has one combined signing key (flags 257: it signs every RRset, the DNSKEY
RRset too), in `<keys>/K<zone>+<algorithm>+<key tag>.private` (PKCS #8 PEM, mode 0600)
beside a `.key` file with its DNSKEY record for people. Every key file of a zone is
published and signs: two during a rollover (double signatures), one otherwise.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from dns.rdtypes.ANY.DNSKEY import DNSKEY

from geolb import model
from geolb.errors import GeolbError

ALGORITHMS = {"ECDSAP256SHA256": 13, "ED25519": 15}  # what geolb signs with (RFC 8624: both MUST/RECOMMENDED)
ALGORITHM_NAMES = {number: name for name, number in ALGORITHMS.items()}
CSK_FLAGS = 257  # zone key + secure entry point
DNSKEY_TTL = 3600
CDS_TTL = 0  # CDS and CDNSKEY (RFC 7344): read by the parent's scanner, never worth caching (as Knot DNS does)
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class DnssecKeyError(GeolbError):
    """A key that cannot be read, written or used; the message names its file."""


def dnskey_rdata(key: model.ZoneKey) -> DNSKEY:
    rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.DNSKEY, key.dnskey, 0, len(key.dnskey))
    assert isinstance(rdata, DNSKEY)
    return rdata


def _wire(rdata: dns.rdata.Rdata) -> bytes:
    data = rdata.to_wire()
    assert data is not None
    return data


def private_key(key: model.ZoneKey) -> PrivateKey:
    loaded = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(loaded, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey))
    return loaded


def ds_text(key: model.ZoneKey) -> str:
    """The DS record for the parent (SHA-256 digest), in presentation format."""
    ds = dns.dnssec.make_ds(dns.name.from_text(key.zone), dnskey_rdata(key), "SHA256")
    return f"{key.zone} IN DS {ds.to_text()}"


def cds_rdata(key: model.ZoneKey) -> bytes:
    """The CDS record data (RFC 7344) for the key: its DS with a SHA-256 digest, as the parent should hold it."""
    return _wire(dns.dnssec.make_ds(dns.name.from_text(key.zone), dnskey_rdata(key), "SHA256"))


def dnskey_text(key: model.ZoneKey) -> str:
    return f"{key.zone} {DNSKEY_TTL} IN DNSKEY {dnskey_rdata(key).to_text()}"


def file_stem(zone: str, algorithm: int, key_tag: int) -> str:
    """BIND's naming: K<zone>+<algorithm, 3 digits>+<key tag, 5 digits>."""
    return f"K{zone}+{algorithm:03d}+{key_tag:05d}"


def key_files(directory: str, zone: str) -> list[str]:
    """The private key files of `zone` in `directory`, sorted."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), f"K{glob.escape(zone)}+*.private")))


def generate(directory: str, zone: str, algorithm: str) -> model.ZoneKey:
    """A new key pair for `zone`, written to `directory` (created 0700); its files are 0600."""
    if algorithm not in ALGORITHMS:
        raise DnssecKeyError(f"unknown algorithm {algorithm!r} (expected one of: {', '.join(ALGORITHMS)})")
    makers: dict[str, Callable[[], PrivateKey]] = {
        "ECDSAP256SHA256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ED25519": ed25519.Ed25519PrivateKey.generate,
    }
    private = makers[algorithm]()
    number = ALGORITHMS[algorithm]
    dnskey = dns.dnssec.make_dnskey(private.public_key(), number, flags=CSK_FLAGS)
    tag = dns.dnssec.key_id(dnskey)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        stem = os.path.join(directory, file_stem(zone, number, tag))
        if os.path.exists(stem + ".private"):
            raise DnssecKeyError(f"{stem}.private exists already")
        descriptor = os.open(stem + ".private", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        key = model.ZoneKey(zone, number, tag, _wire(dnskey), stem + ".private", pem)
        with open(stem + ".key", "w", encoding="ascii") as handle:
            handle.write(f"; {algorithm} combined signing key {tag} of {zone}\n{dnskey_text(key)}\n")
    except OSError as exc:
        raise DnssecKeyError(f"cannot write the key for {zone} to {directory}: {exc.strerror}") from None
    return key


def read_key(path: str, zone: str) -> model.ZoneKey:
    """One private key file, checked: it must be a key geolb can sign with."""
    try:
        with open(path, "rb") as handle:
            pem = handle.read()
    except OSError as exc:
        raise DnssecKeyError(f"DNSSEC key {path}: cannot read it ({exc.strerror})") from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DnssecKeyError(f"DNSSEC key {path}: not a PEM private key without a password ({exc})") from None
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
        number = ALGORITHMS["ECDSAP256SHA256"]
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        number = ALGORITHMS["ED25519"]
    else:
        raise DnssecKeyError(f"DNSSEC key {path}: neither an ECDSA P-256 nor an Ed25519 key")
    dnskey = dns.dnssec.make_dnskey(private.public_key(), number, flags=CSK_FLAGS)
    return model.ZoneKey(zone, number, dns.dnssec.key_id(dnskey), _wire(dnskey), path, pem)


def load_keys(directory: str, zone: str) -> tuple[list[model.ZoneKey], list[str]]:
    """Every key of `zone` in `directory`, and warnings (a key file others may read)."""
    paths = key_files(directory, zone)
    if not paths:
        if not os.path.isdir(directory):
            raise DnssecKeyError(f"DNSSEC keys directory {directory} does not exist (geolb dnssec keygen {zone.rstrip('.')} makes it)")
        raise DnssecKeyError(f"no DNSSEC key for {zone} in {directory} (geolb dnssec keygen {zone.rstrip('.')} makes one)")
    keys, warnings = [], []
    for path in paths:
        keys.append(read_key(path, zone))
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"DNSSEC key {path} can be read by others (mode {stat.S_IMODE(mode):o}): chmod 600 it")
    return keys, warnings
