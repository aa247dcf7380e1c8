"""Differential test: the same static zone served by geolb and by Knot DNS (Debian's knotd); several
thousand generated queries must get the same rcode, AA and TC flags and the same record sets from both.

Known, allowed differences (SPEC §5 leaves them to the server):
- ANY (RFC 8482): each server answers with one RRset of its choosing; at the apex Knot picks NS
  (and its glue), geolb SOA. Both must give exactly one RRset of the name, AA set.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from geolb.config.zoneset import load_zoneset
from geolb.explain import rdata_text
from tests.backends import free_port
from tests.serverproc import DATA, RunningServer, start_server

KNOTD = shutil.which("knotd") or ("/usr/sbin/knotd" if Path("/usr/sbin/knotd").exists() else None)
ZONES = DATA / "diff-zones"
QUERIES = 4000
NAMES = [
    "", "www", "mail", "docs", "chain", "away", "broken", "_sip._udp", "ptr", "x.wild", "y.x.wild", "exists.wild", "wild",
    "q.exists.wild", "a.b.c", "b.c", "c", "sub", "ns.sub", "deep.sub", "out", "x.out", "big", "nothing", "ns1", "missing",
]  # fmt: skip
TYPES = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "SRV", "CAA", "PTR", "ANY", "DS", "HINFO", "NAPTR", "DNSKEY"]


def zone_file(directory: Path) -> str:
    """The zone geolb reads, written out in master file format for Knot."""
    zone = load_zoneset(str(directory)).zoneset.zones["diff.example."]
    rrsets = (zone.soa, zone.ns, *(r for node in zone.nodes.values() for r in node.rrsets.values()))  # SOA first
    lines = (f"{rrset.name} {rrset.ttl} IN {rrset.rtype} {rdata_text(rdata)}" for rrset in rrsets for rdata in rrset.rdatas)
    return "\n".join(dict.fromkeys(lines)) + "\n"  # the apex's SOA and NS come twice: once is enough


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, RunningServer]]:
    if KNOTD is None:
        message = "the differential test needs Debian's knot (knotd)"
        if os.environ.get("CI"):
            pytest.fail(message + " (.ci/run installs it)")
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("knot")
    (directory / "diff.example.zone").write_text(zone_file(ZONES))
    port = free_port(["127.0.0.1"])
    (directory / "knot.conf").write_text(
        f"server:\n    listen: 127.0.0.1@{port}\n    rundir: {directory}\n"
        f"database:\n    storage: {directory}\n"
        "log:\n  - target: stderr\n    any: warning\n"
        f"zone:\n  - domain: diff.example.\n    storage: {directory}\n    file: diff.example.zone\n"
    )
    with open(directory / "knot.log", "w") as log:
        knot = subprocess.Popen([KNOTD, "-c", str(directory / "knot.conf")], stdout=log, stderr=subprocess.STDOUT)
    geolb = start_server(ZONES, "--workers", "1", tmp=directory)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                dns.query.udp(dns.message.make_query("diff.example", "SOA"), "127.0.0.1", port=port, timeout=0.5)
                break
            except dns.exception.Timeout:
                assert knot.poll() is None and time.monotonic() < deadline, (directory / "knot.log").read_text()
        yield port, geolb
    finally:
        knot.terminate()
        knot.wait(timeout=10)
        geolb.stop()


def generated(rng: random.Random) -> Iterator[dns.message.Message]:
    """Names in and out of the zone (existing, random below them, odd case), every type, with and without EDNS."""
    for _ in range(QUERIES):
        roll = rng.random()
        if roll < 0.08:
            name = rng.choice(["elsewhere.test.", "www.example.org.", "diff.example.org.", "example."])
        else:
            base = rng.choice(NAMES)
            if roll < 0.3:
                base = f"r{rng.randrange(10**6)}" + ("." + base if base else "")
            name = (base + "." if base else "") + "diff.example."
        name = "".join(c.upper() if rng.random() < 0.3 else c for c in name)
        edns = rng.random() < 0.7
        query = dns.message.make_query(name, rng.choice(TYPES), use_edns=0 if edns else False, payload=rng.choice([512, 1232, 4096]))
        query.flags &= ~dns.flags.RD
        yield query


def shape(response: dns.message.Message) -> tuple[object, ...]:
    sections = [
        sorted((r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype), r.ttl, tuple(sorted(d.to_text().lower() for d in r))) for r in s)
        for s in (response.answer, response.authority, response.additional)
    ]
    return (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA), bool(response.flags & dns.flags.TC), *sections)


def test_geolb_answers_static_records_as_knot_does(servers: tuple[int, RunningServer]) -> None:
    knot_port, geolb = servers
    differences: collections.Counter[str] = collections.Counter()
    first: dict[str, tuple[object, object]] = {}
    compared = 0
    for query in generated(random.Random(20261122)):
        knot = dns.query.udp(query, "127.0.0.1", port=knot_port, timeout=2)
        ours = dns.query.udp(query, geolb.host, port=geolb.port, timeout=2)
        assert ours.question == query.question  # the client's case comes back
        if query.question[0].rdtype == dns.rdatatype.ANY and shape(knot) != shape(ours):
            assert ours.rcode() == knot.rcode() and ours.flags & dns.flags.AA
            assert len(ours.answer) == 1 and ours.answer[0].name == query.question[0].name
            continue
        compared += 1
        if shape(knot) != shape(ours):
            what = f"{query.question[0].name.to_text().lower()} {dns.rdatatype.to_text(query.question[0].rdtype)}"
            differences[what] += 1
            first.setdefault(what, (shape(knot), shape(ours)))
    assert compared > QUERIES * 0.9
    assert not differences, "\n".join(
        f"{what} ({n}x)\n  knot:  {first[what][0]}\n  geolb: {first[what][1]}" for what, n in differences.items()
    )
