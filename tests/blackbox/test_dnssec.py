"""SPEC §9: a signed zone delegated to geolb, validated by a real resolver (unbound, trust anchor = the zone's DS)
and by delv; a key swapped under the server is caught; `geolb dnssec` and `geolb check` for keys."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.backends import Backends
from tests.serverproc import DATA, RunningServer, api, geolb_command, start_server
from tests.unboundproc import UNBOUND, base_config, running_unbound

pytestmark = pytest.mark.skipif(UNBOUND is None, reason="Debian's unbound is not installed (.ci/run installs it)")
REGIONS = {"ashburn": ("127.0.0.71", "::1"), "london": ("127.0.0.72", None), "singapore": ("127.0.0.73", None)}


def zone_text(port: int) -> str:
    return f"""soa: {{serial: 2026112201}}
nameservers:
  ns1.signed.example.: [127.0.0.1]
health: {{type: http, port: {port}, path: /health, interval: 0.2, timeout: 0.4, fall: 1, rise: 1}}
dnssec: {{}}
pools:
  web:
    regions:
      ashburn: {{location: [39.04, -77.49], endpoints: [127.0.0.71, "::1"]}}
      london: {{location: [51.5, -0.12], endpoints: [127.0.0.72]}}
      singapore: {{location: [1.29, 103.85], endpoints: [127.0.0.73]}}
records:
  www: {{type: GEO, pool: web, ttl: 1}}
  static: {{type: A, value: 192.0.2.99}}
  alias: {{type: CNAME, value: www}}
  "*.wild": {{type: TXT, value: "from the wildcard"}}
  mx: {{type: MX, value: "10 static"}}
"""


def geolb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(geolb_command(*args), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    running = Backends([a for a, _ in REGIONS.values()])
    yield running
    running.close()


@pytest.fixture(scope="module")
def signed(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, int, Path, str]]:
    """geolb serving signed.example, unbound validating it with the DS `geolb dnssec keygen` printed."""
    directory = tmp_path_factory.mktemp("dnssec")
    zones = directory / "zones"
    zones.mkdir()
    (zones / "signed.example.yaml").write_text(zone_text(backends.port))
    made = geolb("dnssec", "keygen", "signed.example", "--zones", str(zones))
    assert made.returncode == 0, made.stderr
    ds = made.stdout.strip()
    assert ds.startswith("signed.example. IN DS ") and " 13 2 " in ds
    server = start_server(zones, "--api-token", "s3cret", "--workers", "2", geoip=DATA / "GeoIP2-City-Test.mmdb", tmp=directory)
    config = (
        base_config(directory, "subnetcache validator iterator")
        + f"""  send-client-subnet: 127.0.0.1
  max-client-subnet-ipv4: 24
  val-log-level: 2
  trust-anchor: "{ds}"
  domain-insecure: "."
stub-zone:
  name: "signed.example"
  stub-addr: 127.0.0.1@{server.port}
"""
    )
    try:
        with running_unbound(directory, config, "static.signed.example") as port:
            yield server, port, zones, ds
    finally:
        server.stop()


def resolve(port: int, name: str, rdtype: str = "A", ecs: str | None = None) -> dns.message.Message:
    options = [] if ecs is None else [dns.edns.ECSOption(ecs.split("/")[0], int(ecs.split("/")[1]))]
    query = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=True, options=options)  # RD: a recursive query
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=5)


def secure(response: dns.message.Message) -> bool:
    return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AD)


def addresses(response: dns.message.Message) -> set[str]:
    return {r.to_text() for rrset in response.answer if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for r in rrset}


def test_every_kind_of_answer_validates(signed: tuple[RunningServer, int, Path, str]) -> None:
    _, port, _, _ = signed
    assert secure(response := resolve(port, "static.signed.example")) and addresses(response) == {"192.0.2.99"}
    for client, region_address in (("2.2.3.0/24", "127.0.0.72"), ("214.0.0.0/24", "127.0.0.73"), ("216.160.83.56/29", "127.0.0.71")):
        response = resolve(port, "www.signed.example", ecs=client)
        assert secure(response), response
        assert addresses(response) == {region_address}  # London, Singapore, Washington state: three regions
    assert secure(response := resolve(port, "www.signed.example", "AAAA")) and addresses(response) == {"::1"}
    response = resolve(port, "alias.signed.example")
    assert secure(response) and any(r.rdtype == dns.rdatatype.CNAME for r in response.answer)
    nxdomain = resolve(port, "nothing-here.signed.example")
    assert secure(nxdomain) and not nxdomain.answer  # compact denial: NOERROR, proven
    nodata = resolve(port, "static.signed.example", "TXT")
    assert secure(nodata) and not nodata.answer
    wildcard = resolve(port, "anything.wild.signed.example", "TXT")
    assert secure(wildcard) and '"from the wildcard"' in wildcard.answer[0].to_text()
    assert secure(resolve(port, "signed.example", "DNSKEY"))


def test_geo_answers_validate_after_a_failover(signed: tuple[RunningServer, int, Path, str], backends: Backends) -> None:
    _, port, _, _ = signed
    backends.set("fail", "127.0.0.73")  # Singapore fails its checks
    try:
        deadline = time.monotonic() + 10
        while True:
            response = resolve(port, "www.signed.example", ecs="214.0.0.0/24")
            assert secure(response), response
            if addresses(response) != {"127.0.0.73"}:
                break
            assert time.monotonic() < deadline, "Singapore never left the answers"
            time.sleep(0.2)  # the answer's TTL is 1 s
        assert addresses(response) in ({"127.0.0.71"}, {"127.0.0.72"})
    finally:
        backends.set("ok")


def direct(server: RunningServer, name: str, rdtype: str, *, do: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do, payload=4096)
    query.flags &= ~dns.flags.RD
    return dns.query.udp(query, server.host, port=server.port, timeout=3)


def rrsets_of(response: dns.message.Message, section: str) -> list[tuple[str, str]]:
    return [(r.name.to_text(), dns.rdatatype.to_text(r.covers if r.rdtype == dns.rdatatype.RRSIG else r.rdtype)
             + ("/sig" if r.rdtype == dns.rdatatype.RRSIG else "")) for r in getattr(response, section)]  # fmt: skip


def test_nsec_and_cds_queries_validate(signed: tuple[RunningServer, int, Path, str]) -> None:
    """NSEC at a name (existing or not, an alias too) is that name's compact-denial NSEC, signed; the apex
    publishes CDS and CDNSKEY for its key. A validating resolver says AD to each (SPEC §9)."""
    server, port, _, ds = signed
    for name in ("static.signed.example", "nothing-here.signed.example", "alias.signed.example", "signed.example"):
        for _ in range(2):  # the full path, then the packet cache
            response = resolve(port, name, "NSEC")
            assert secure(response), (name, response)
            assert rrsets_of(response, "answer") == [(name + ".", "NSEC"), (name + ".", "NSEC/sig")]
    apex = direct(server, "signed.example", "NSEC").answer[0][0]
    assert {"CDS", "CDNSKEY", "DNSKEY"} <= set(apex.to_text().split()[1:])
    cds = resolve(port, "signed.example", "CDS")
    assert secure(cds) and cds.answer[0][0].to_text().lower() == " ".join(ds.split()[3:]).lower()  # the DS keygen printed
    cdnskey = resolve(port, "signed.example", "CDNSKEY")
    dnskey = resolve(port, "signed.example", "DNSKEY")
    assert secure(cdnskey) and {r.to_text() for r in cdnskey.answer[0]} == {r.to_text() for r in dnskey.answer[0]}


def test_rrsig_queries_get_the_names_signatures(signed: tuple[RunningServer, int, Path, str]) -> None:
    """As Knot DNS answers: one RRSIG RRset of the name, unsigned (an RRSIG is never signed, so a validator takes
    it as it is: unbound answers NOERROR without AD, "cannot validate RRSIG, no sigs on sigs", never SERVFAIL)."""
    server, port, _, _ = signed
    keys = direct(server, "signed.example", "DNSKEY").answer[0]
    for name, covered in (
        ("static.signed.example", {"A"}),
        ("mx.signed.example", {"MX"}),
        ("alias.signed.example", {"CNAME"}),
        ("signed.example", {"NS"}),  # one RRSIG RRset, over the lowest type code (as Knot DNS)
        ("nothing-here.signed.example", {"NSEC"}),
    ):
        for do in (True, False):
            response = direct(server, name, "RRSIG", do=do)
            assert response.rcode() == dns.rcode.NOERROR and not response.authority
            assert {t.removesuffix("/sig") for _, t in rrsets_of(response, "answer")} == covered
            for sigs in response.answer:  # each verifies over the RRset it covers, asked for on its own
                rrset = direct(server, name, dns.rdatatype.to_text(sigs.covers)).find_rrset(
                    dns.message.ANSWER, sigs.name, dns.rdataclass.IN, sigs.covers
                )
                dns.dnssec.validate(rrset, sigs, {dns.name.from_text("signed.example."): keys})
        through = resolve(port, name, "RRSIG")
        assert through.rcode() == dns.rcode.NOERROR and through.answer


def test_addresses_in_additional_carry_their_signatures(signed: tuple[RunningServer, int, Path, str]) -> None:
    server, _, _, _ = signed
    for _ in range(2):
        response = direct(server, "mx.signed.example", "MX")
        assert rrsets_of(response, "additional") == [("static.signed.example.", "A"), ("static.signed.example.", "A/sig")]
        plain = direct(server, "mx.signed.example", "MX", do=False)
        assert rrsets_of(plain, "additional") == [("static.signed.example.", "A")]


def test_ds_at_the_apex_is_nodata_from_the_child_as_knot_answers(signed: tuple[RunningServer, int, Path, str]) -> None:
    """RFC 4035 §3.1.4.1: a server authoritative for the child alone answers DS at the apex from the child:
    NODATA, with the signed proof (the DS lives at the parent)."""
    server, _, _, _ = signed
    response = direct(server, "signed.example", "DS")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    assert rrsets_of(response, "authority") == [
        ("signed.example.", "SOA"), ("signed.example.", "SOA/sig"), ("signed.example.", "NSEC"), ("signed.example.", "NSEC/sig")
    ]  # fmt: skip
    assert "DS" not in response.authority[2][0].to_text().split()[1:]


def test_delv_agrees(signed: tuple[RunningServer, int, Path, str], tmp_path: Path) -> None:
    delv = shutil.which("delv")
    if delv is None:
        pytest.skip("delv (bind9-dnsutils) is not installed")
    server, _, _, ds = signed
    owner, _in, _ds, tag, algorithm, digest_type, digest = ds.split()
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(f'trust-anchors {{ {owner} static-ds {tag} {algorithm} {digest_type} "{digest}"; }};\n')
    for name, rdtype, verdict in (
        ("static.signed.example", "A", "; fully validated"),
        ("www.signed.example", "A", "; fully validated"),
        ("nothing-here.signed.example", "A", "; negative response, fully validated"),
        ("static.signed.example", "MX", "; negative response, fully validated"),
        ("static.signed.example", "NSEC", "; fully validated"),
        ("nothing-here.signed.example", "NSEC", "; fully validated"),
        ("signed.example", "CDS", "; fully validated"),
        ("signed.example", "CDNSKEY", "; fully validated"),
    ):
        out = subprocess.run(
            [delv, "-a", str(anchors), f"+root={owner}", f"@{server.host}", "-p", str(server.port), name, rdtype],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert verdict in out.stdout + out.stderr, out.stdout + out.stderr


def test_without_do_answers_are_what_an_unsigned_zone_gives(signed: tuple[RunningServer, int, Path, str], tmp_path: Path) -> None:
    server, _, zones, _ = signed
    plain = tmp_path / "zones"
    plain.mkdir()
    text = (zones / "signed.example.yaml").read_text().replace("dnssec: {}\n", "")
    (plain / "signed.example.yaml").write_text(text)
    unsigned = start_server(plain, "--workers", "1", geoip=DATA / "GeoIP2-City-Test.mmdb", tmp=tmp_path)
    try:
        for name, rdtype, ecs in (
            ("static.signed.example", "A", None),
            ("www.signed.example", "A", "2.2.3.0/24"),
            ("alias.signed.example", "A", None),
            ("nothing-here.signed.example", "A", None),
            ("static.signed.example", "TXT", None),
            ("x.wild.signed.example", "TXT", None),
        ):
            options = [] if ecs is None else [dns.edns.ECSOption(ecs.split("/")[0], int(ecs.split("/")[1]))]
            query = dns.message.make_query(name, rdtype, use_edns=0, options=options).to_wire()
            for _ in range(2):  # the full path, then the packet cache
                answers = []
                for target in (server, unsigned):
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                        sock.settimeout(3)
                        sock.sendto(query, (target.host, target.port))
                        answers.append(sock.recv(4096))
                assert answers[0] == answers[1], (name, rdtype)
    finally:
        assert unsigned.stop() == 0


def test_a_key_swapped_under_the_server_makes_answers_bogus(signed: tuple[RunningServer, int, Path, str]) -> None:
    server, port, zones, ds = signed
    keys = zones / "keys"
    old = sorted(keys.iterdir())
    hidden = zones.parent / "old-keys"
    hidden.mkdir()
    try:
        for path in old:
            path.rename(hidden / path.name)
        made = geolb("dnssec", "keygen", "signed.example", "--zones", str(zones))
        assert made.returncode == 0 and made.stdout.strip() != ds
        status, reply = api(server, "POST", "/v1/reload")
        assert status == 200, reply
        response = resolve(port, "fresh.wild.signed.example", "TXT")  # not in the resolver's cache
        assert response.rcode() == dns.rcode.SERVFAIL
    finally:
        for path in keys.iterdir():
            path.unlink()
        for path in old:
            (hidden / path.name).rename(path)
        api(server, "POST", "/v1/reload")


def test_keygen_and_ds_on_the_command_line(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "ed.example.yaml").write_text("nameservers:\n  ns1.ed.example.: [192.0.2.53]\ndnssec: {algorithm: ED25519, keys: ../edkeys}\n")
    made = geolb("dnssec", "keygen", "ed.example", "--zones", str(zones))
    assert made.returncode == 0, made.stderr
    assert " 15 2 " in made.stdout  # the zone's algorithm, in the zone's keys directory
    private = next((tmp_path / "edkeys").glob("Ked.example.+015+*.private"))
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "edkeys").st_mode & 0o777 == 0o700
    shown = geolb("dnssec", "ds", "ed.example", "--zones", str(zones))
    assert shown.returncode == 0 and shown.stdout == made.stdout
    assert geolb("check", "--zones", str(zones)).returncode == 0
    missing = geolb("dnssec", "ds", "other.example", "--zones", str(zones))
    assert missing.returncode == 1 and f"DNSSEC keys directory {zones / 'keys'} does not exist" in missing.stderr
    (zones / "keys").mkdir()
    missing = geolb("dnssec", "ds", "other.example", "--zones", str(zones))
    assert missing.returncode == 1 and "no DNSSEC key for other.example." in missing.stderr


def test_check_names_a_missing_or_unreadable_key(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "k.example.yaml").write_text("nameservers:\n  ns1.k.example.: [192.0.2.53]\n\ndnssec: {}\n")
    out = geolb("check", "--zones", str(zones))
    assert out.returncode == 1
    assert f"{zones / 'k.example.yaml'}:4: DNSSEC keys directory {zones / 'keys'} does not exist" in out.stdout
    (zones / "keys").mkdir()
    broken = zones / "keys" / "Kk.example.+013+00001.private"
    broken.write_text("not a key\n")
    out = geolb("check", "--zones", str(zones))
    assert out.returncode == 1
    assert f"{zones / 'k.example.yaml'}:4: DNSSEC key {broken}: not a PEM private key" in out.stdout
    start = subprocess.run(
        geolb_command("serve", "--zones", str(zones), "--http", "127.0.0.1:0"), capture_output=True, text=True, timeout=60
    )
    assert start.returncode == 1 and str(broken) in start.stderr


def test_a_second_key_is_picked_up_by_the_watcher_and_both_sign(signed: tuple[RunningServer, int, Path, str]) -> None:
    """Rollover step 1: a new key published and signing beside the old one; answers stay valid throughout."""
    server, port, zones, ds = signed
    before = set((zones / "keys").iterdir())
    made = geolb("dnssec", "keygen", "signed.example", "--zones", str(zones))
    assert made.returncode == 0
    try:

        def dnskeys() -> int:
            response = server.query("signed.example", "DNSKEY")
            return sum(len(rrset) for rrset in response.answer if rrset.rdtype == dns.rdatatype.DNSKEY)

        deadline = time.monotonic() + 10
        while dnskeys() != 2:  # no reload asked for: the zones watcher sees the keys directory too
            assert time.monotonic() < deadline, "the second key was not published"
            time.sleep(0.1)
        query = dns.message.make_query("static.signed.example", "A", want_dnssec=True)
        response = dns.query.udp(query, server.host, port=server.port, timeout=3)
        assert len([r for rrset in response.answer if rrset.rdtype == dns.rdatatype.RRSIG for r in rrset]) == 2
        assert secure(resolve(port, "second-key.wild.signed.example", "TXT"))  # the old DS still vouches for it
        listed = geolb("dnssec", "ds", "signed.example", "--zones", str(zones)).stdout.splitlines()
        assert ds in listed and made.stdout.strip() in listed
    finally:
        for path in set((zones / "keys").iterdir()) - before:
            path.unlink()
        api(server, "POST", "/v1/reload")
