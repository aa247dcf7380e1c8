"""Differential test: the same static zone served by geolb and by Knot DNS (Debian's knotd), unsigned and
signed (Knot signs it with geolb's own key, imported); several thousand generated queries (names with bytes
above 0x7f, the root, every type geolb serves or denies, NSEC, RRSIG, DS, CDS, CDNSKEY, DO set or not, TSIG
with a key neither knows) must get the same rcode, header flags and records in every section from both.

Known, allowed differences (SPEC §5 and §9 leave them to the server):
- ANY (RFC 8482): each server answers with one RRset of its choosing; at the apex Knot picks NS
  (and its glue), geolb SOA. Both must give exactly one RRset of the name, AA set.
- TSIG with a key neither server knows, for a name outside the zone: Knot answers REFUSED (it looks for
  the zone first), geolb NOTAUTH with BADKEY as for any other name (RFC 8945 §5.2: the TSIG is checked
  before the message is processed; §5.2.2: an unknown key is BADKEY).
- Signed zone, the one difference by design: denial of existence. geolb uses compact denial (RFC 9824:
  a missing name is NOERROR with an NSEC at the name, NXNAME in its bitmap; an NSEC query gets the name's
  own NSEC), Knot an NSEC chain. So NSEC records and the RRSIGs over them are left out of the comparison,
  NOERROR with NXNAME counts as NXDOMAIN, and NSEC or RRSIG queries at a missing name are checked for that
  shape alone (Knot answers NXDOMAIN with its chain).
- Signed zone, signatures: RRSIGs are compared on what they cover, algorithm, original TTL, key tag and
  signer, not on their times or signature bytes (ECDSA signatures differ every time they are made). Nor on
  their labels field: a wildcard answer is signed online by geolb under the name asked (RFC 4035 §5.3.4:
  a validator accepts either; the name is proven to exist as it would be by compact denial), by Knot under
  the wildcard with an NSEC proof beside it (left out above).
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest

from geolb.config.zoneset import load_zoneset
from geolb.explain import rdata_text
from tests.backends import free_port
from tests.serverproc import DATA, RunningServer, geolb_command, start_server

KNOTD = shutil.which("knotd") or ("/usr/sbin/knotd" if Path("/usr/sbin/knotd").exists() else None)
KEYMGR = shutil.which("keymgr") or ("/usr/sbin/keymgr" if Path("/usr/sbin/keymgr").exists() else None)
ZONES = DATA / "diff-zones"
QUERIES = 4000
NAMES = [
    "", "www", "mail", "docs", "chain", "away", "broken", "_sip._udp", "ptr", "x.wild", "y.x.wild", "exists.wild", "wild",
    "q.exists.wild", "a.b.c", "b.c", "c", "sub", "ns.sub", "deep.sub", "out", "x.out", "big", "nothing", "ns1", "missing",
]  # fmt: skip
TYPES = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "SRV", "CAA", "PTR", "ANY", "DS", "HINFO", "NAPTR", "DNSKEY"]
TYPES += ["NSEC", "RRSIG", "CDS", "CDNSKEY"]
ODD_NAMES = ["\\196x", "\\255\\128.wild", "caf\\233", "\\200.sub"]  # bytes above 0x7f (RFC 2181 §11)
IMPORTED = ("algorithm=13", "ksk=yes", "zsk=yes", "publish=+0", "active=+0")  # geolb's key, as Knot's one signing key
UNKNOWN_KEY = dns.tsigkeyring.from_text({"nobody.example.": "c2VjcmV0c2VjcmV0c2VjcmV0"})


def zone_file(directory: Path) -> str:
    """The zone geolb reads, written out in master file format for Knot."""
    zone = load_zoneset(str(directory)).zoneset.zones["diff.example."]
    rrsets = (zone.soa, zone.ns, *(r for node in zone.nodes.values() for r in node.rrsets.values()))  # SOA first
    lines = (f"{rrset.name} {rrset.ttl} IN {rrset.rtype} {rdata_text(rdata)}" for rrset in rrsets for rdata in rrset.rdatas)
    return "\n".join(dict.fromkeys(lines)) + "\n"  # the apex's SOA and NS come twice: once is enough


def knot_config(directory: Path, port: int, signed: bool) -> str:
    policy = "policy:\n  - id: imported\n    manual: on\n    dnskey-ttl: 3600\n    cds-cdnskey-publish: always\n" if signed else ""
    signing = "    dnssec-signing: on\n    dnssec-policy: imported\n" if signed else ""
    return (
        f"server:\n    listen: 127.0.0.1@{port}\n    rundir: {directory}\n"
        f"database:\n    storage: {directory}\n"
        "log:\n  - target: stderr\n    any: warning\n"
        + policy
        + f"zone:\n  - domain: diff.example.\n    storage: {directory}\n    file: diff.example.zone\n"
        + signing
    )


def soa_query(port: int) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query("diff.example", "SOA"), "127.0.0.1", port=port, timeout=0.5)


@contextmanager
def knot_and_geolb(directory: Path, signed: bool) -> Iterator[tuple[int, RunningServer]]:
    """Knot and geolb on the same zone; signed: geolb's key made by `geolb dnssec keygen`, imported into Knot's
    key store, and geolb's SOA serial set to the one Knot gives the zone when it signs it."""
    if KNOTD is None:
        message = "the differential test needs Debian's knot (knotd)"
        if os.environ.get("CI"):
            pytest.fail(message + " (.ci/run installs it)")
        pytest.skip(message)
    zones = directory / "zones"
    zones.mkdir()
    text = (ZONES / "diff.example.yaml").read_text()
    (zones / "diff.example.yaml").write_text(text)
    (directory / "diff.example.zone").write_text(zone_file(ZONES))
    port = free_port(["127.0.0.1"])
    (directory / "knot.conf").write_text(knot_config(directory, port, signed))
    if signed:
        made = subprocess.run(geolb_command("dnssec", "keygen", "diff.example", "--zones", str(zones)), capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        pem = next((zones / "keys").glob("*.private"))
        imported = subprocess.run(
            [KEYMGR or "keymgr", "-c", str(directory / "knot.conf"), "diff.example.", "import-pem", str(pem), *IMPORTED],
            capture_output=True,
            text=True,
        )
        assert imported.returncode == 0, imported.stdout + imported.stderr
    with open(directory / "knot.log", "w") as log:
        knot = subprocess.Popen([KNOTD, "-c", str(directory / "knot.conf")], stdout=log, stderr=subprocess.STDOUT)
    geolb: RunningServer | None = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                serial = soa_query(port).answer[0][0].serial
                break
            except (dns.exception.Timeout, IndexError):
                assert knot.poll() is None and time.monotonic() < deadline, (directory / "knot.log").read_text()
                time.sleep(0.05)
        if signed:
            (zones / "diff.example.yaml").write_text(
                text.replace("soa: {serial: 2026112201,", f"soa: {{serial: {serial},") + "dnssec: {}\n"
            )
        geolb = start_server(zones, "--workers", "1", tmp=directory)
        yield port, geolb
    finally:
        knot.terminate()
        knot.wait(timeout=10)
        if geolb is not None:
            geolb.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, RunningServer]]:
    with knot_and_geolb(tmp_path_factory.mktemp("knot"), signed=False) as both:
        yield both


@pytest.fixture(scope="module")
def signed_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, RunningServer]]:
    with knot_and_geolb(tmp_path_factory.mktemp("knot-signed"), signed=True) as both:
        yield both


def generated(rng: random.Random, dnssec: bool = False, count: int = QUERIES) -> Iterator[dns.message.Message]:
    """Names in and out of the zone (existing, random below them, odd case, bytes above 0x7f, the root),
    every type, with and without EDNS (and DO, for the signed zone); now and then TSIG with an unknown key."""
    for _ in range(count):
        roll = rng.random()
        if roll < 0.08:
            name = rng.choice(["elsewhere.test.", "www.example.org.", "diff.example.org.", "example.", "."])
        else:
            base = rng.choice(NAMES + ODD_NAMES)
            if roll < 0.3:
                base = f"r{rng.randrange(10**6)}" + ("." + base if base else "")
            name = (base + "." if base else "") + "diff.example."
        name = "".join(c.upper() if rng.random() < 0.3 else c for c in name)
        edns = rng.random() < 0.7
        do = dnssec and edns and rng.random() < 0.7
        query = dns.message.make_query(
            name, rng.choice(TYPES), use_edns=0 if edns else False, payload=rng.choice([512, 1232, 4096]), want_dnssec=do
        )
        query.flags &= ~dns.flags.RD
        if rng.random() < 0.02:
            query.use_tsig(UNKNOWN_KEY, "nobody.example.")
        yield query


def ask(query: dns.message.Message, port: int) -> dns.message.Message:
    """One UDP exchange, the answer read as it is (a BADKEY answer's TSIG is not verified: it cannot be)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        return dns.message.from_wire(sock.recv(65535), keyring=False)


def shape(response: dns.message.Message) -> tuple[object, ...]:
    sections = [
        sorted((r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype), r.ttl, tuple(sorted(d.to_text().lower() for d in r))) for r in s)
        for s in (response.answer, response.authority, response.additional)
    ]
    return (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA), bool(response.flags & dns.flags.TC), *sections)


NXNAME = 128


def signed_shape(response: dns.message.Message) -> tuple[object, ...]:
    """The response as compared for the signed zone (see the module docstring): NSEC records and their RRSIGs
    left out, NXNAME read as NXDOMAIN, RRSIGs by their fixed fields; header flags whole; TSIG by its error."""
    rcode = response.rcode()
    sections = []
    for section in (response.answer, response.authority, response.additional):
        kept = []
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.NSEC:
                if any(NXNAME in _types(r) for r in rrset):
                    rcode = dns.rcode.NXDOMAIN
                continue
            if rrset.rdtype == dns.rdatatype.RRSIG:
                if rrset.covers == dns.rdatatype.NSEC:
                    continue
                data = tuple(
                    sorted(f"{dns.rdatatype.to_text(r.type_covered)} {r.algorithm} {r.original_ttl} {r.key_tag} {r.signer}" for r in rrset)
                )
            else:
                data = tuple(sorted(d.to_text().lower() for d in rrset))
            kept.append((rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, data))
        sections.append(sorted(kept))
    tsig = None if response.tsig is None else (response.tsig.name.to_text().lower(), response.tsig[0].error, response.tsig[0].mac)
    return (dns.rcode.to_text(rcode), dns.flags.to_text(response.flags), tsig, *sections)


def _types(nsec: object) -> set[int]:
    return {dns.rdatatype.from_text(t) for t in nsec.to_text().split()[1:]}  # type: ignore[attr-defined]


def _header_only(response: dns.message.Message) -> dns.message.Message:
    response.answer, response.authority, response.additional = [], [], []
    return response


def compare(knot_port: int, geolb: RunningServer, dnssec: bool) -> None:
    differences: collections.Counter[str] = collections.Counter()
    first: dict[str, tuple[object, object]] = {}
    compared = 0
    as_data = signed_shape if dnssec else shape
    for query in generated(random.Random(20261122), dnssec, QUERIES + QUERIES // 5 if dnssec else QUERIES):
        knot = ask(query, knot_port)
        ours = ask(query, geolb.port)
        assert ours.question == query.question  # the client's case comes back
        qtype = query.question[0].rdtype
        if qtype == dns.rdatatype.ANY and as_data(knot) != as_data(ours) and query.tsig is None:
            assert as_data(ours)[0] == as_data(knot)[0] and ours.flags & dns.flags.AA  # the rcode (NXNAME read as NXDOMAIN)
            data = [r for r in ours.answer if r.rdtype != dns.rdatatype.RRSIG]  # with DO, its RRSIG beside it
            if knot.answer:
                assert len(data) == 1 and data[0].name == query.question[0].name, f"{query}\n--knot\n{knot}\n--geolb\n{ours}"
            continue
        if query.tsig is not None and knot.rcode() == dns.rcode.REFUSED:
            assert ours.rcode() == dns.rcode.NOTAUTH and ours.tsig is not None and ours.tsig[0].error == dns.rcode.BADKEY
            continue
        empty_nonterminal = knot.rcode() == dns.rcode.NOERROR and not knot.answer and knot.flags & dns.flags.AA
        if dnssec and qtype in (dns.rdatatype.NSEC, dns.rdatatype.RRSIG) and (knot.rcode() == dns.rcode.NXDOMAIN or empty_nonterminal):
            # Compact denial: the missing name's (or empty non-terminal's) own NSEC, or the RRSIG over it, in ANSWER.
            assert (
                ours.rcode() == dns.rcode.NOERROR and not ours.authority and ours.flags & ~0xF == knot.flags & ~0xF & ~dns.flags.TC
            )  # Knot's chain may not fit in 512
            assert {(r.name, r.rdtype, r.covers) for r in ours.answer} <= {
                (query.question[0].name, dns.rdatatype.NSEC, dns.rdatatype.NONE),
                (query.question[0].name, dns.rdatatype.RRSIG, dns.rdatatype.NSEC),
            }
            assert ours.answer
            continue
        if dnssec and knot.flags & dns.flags.TC and not ours.flags & dns.flags.TC:
            # Knot's NSEC chain proof did not fit the client's size; geolb's single NSEC did.
            assert any(r.rdtype == dns.rdatatype.NSEC for r in ours.authority)
            continue
        compared += 1
        if knot.flags & ours.flags & dns.flags.TC:  # both truncated: what else each kept is its own choice
            knot, ours = _header_only(knot), _header_only(ours)
        if as_data(knot) != as_data(ours):
            what = f"{query.question[0].name.to_text().lower()} {dns.rdatatype.to_text(qtype)}"
            differences[what] += 1
            first.setdefault(what, (as_data(knot), as_data(ours)))
    assert compared >= (QUERIES if dnssec else QUERIES * 0.9), compared
    assert not differences, "\n".join(
        f"{what} ({n}x)\n  knot:  {first[what][0]}\n  geolb: {first[what][1]}" for what, n in differences.items()
    )


def test_geolb_answers_static_records_as_knot_does(servers: tuple[int, RunningServer]) -> None:
    compare(*servers, dnssec=False)


def test_geolb_answers_a_signed_zone_as_knot_does(signed_servers: tuple[int, RunningServer]) -> None:
    compare(*signed_servers, dnssec=True)
