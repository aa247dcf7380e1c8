"""RFC 7873 / RFC 9018: DNS Cookies round-trip, validate with the shared secret, survive a secret rotation."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
from siphashc import siphash

from tests.serverproc import DATA, RunningServer, geolb_command, running

SECRET, NEXT = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf"), bytes.fromhex("00112233445566778899aabbccddeeff")


def ask(server: RunningServer, cookie: bytes | None, name: str | None = "www.example.com", *, tcp: bool = False) -> dns.message.Message:
    """A query with this COOKIE option data (none when None); name None: no question (RFC 7873 §5.4)."""
    options = [] if cookie is None else [dns.edns.GenericOption(dns.edns.COOKIE, cookie)]
    query = dns.message.make_query(name or "www.example.com", "A", use_edns=0, options=options)
    if name is None:
        query.question = []
    query.flags &= ~dns.flags.RD
    return server.send(query, tcp=tcp)


def cookie_of(response: dns.message.Message) -> bytes | None:
    found = [o for o in response.options if o.otype == dns.edns.COOKIE]
    if not found:
        return None
    return found[0].to_wire()  # type: ignore[no-any-return]


def expected_server_cookie(secret: bytes, client: bytes, server: bytes, address: str = "127.0.0.1") -> bytes:
    """RFC 9018 §4.4, computed here: version 1, reserved, the timestamp the server chose, SipHash-2-4."""
    head = server[:8]
    return head + siphash(secret, client + head + bytes(map(int, address.split(".")))).to_bytes(8, "little")


def secrets_file(tmp_path: Path, *secrets: bytes) -> Path:
    path = tmp_path / "cookie-secrets"
    path.write_text("# current first\n" + "".join(s.hex() + "\n" for s in secrets))
    return path


def test_cookies_round_trip_and_the_server_cookie_is_rfc9018s(tmp_path: Path) -> None:
    client = os.urandom(8)
    # One worker: each remembers the cookies it made, so with several a client that shows no valid server
    # cookie may be given another (equally valid) one by another worker in another second.
    secrets = str(secrets_file(tmp_path, SECRET))
    with running(DATA / "zones", "--workers", "1", "--cookie-secret-file", secrets, tmp=tmp_path) as server:
        first = ask(server, client)
        assert first.rcode() == dns.rcode.NOERROR and first.answer
        echoed = cookie_of(first)
        assert echoed is not None and len(echoed) == 24 and echoed[:8] == client
        server_cookie = echoed[8:]
        assert server_cookie[:4] == b"\x01\x00\x00\x00"
        assert abs(int.from_bytes(server_cookie[4:8], "big") - time.time()) < 5
        assert server_cookie == expected_server_cookie(SECRET, client, server_cookie)
        for _ in range(5):  # the packet cache answers these: each still carries the client's own cookie
            again = ask(server, client + server_cookie)
            assert again.rcode() == dns.rcode.NOERROR and again.answer == first.answer
            assert cookie_of(again) == client + server_cookie  # younger than half an hour: sent back as it came
        other = os.urandom(8)
        assert cookie_of(ask(server, other))[:8] == other  # type: ignore[index]
        assert cookie_of(ask(server, client, tcp=True)) == client + server_cookie
        assert cookie_of(ask(server, None)) is None  # no cookie asked, none given
        # A server cookie we did not make: answered as if there were none (no BADCOOKIE), with a good one.
        wrong = ask(server, client + os.urandom(16))
        assert wrong.rcode() == dns.rcode.NOERROR and wrong.answer
        assert cookie_of(wrong) == client + server_cookie
        # Malformed: FORMERR (RFC 7873 §5.2.2).
        for bad in (b"short", client + b"\x01\x02\x03", client + os.urandom(33)):
            assert ask(server, bad).rcode() == dns.rcode.FORMERR
        # No question, only a cookie: BADCOOKIE without a valid server cookie, NOERROR with one.
        probe = ask(server, client, name=None)
        assert probe.rcode() == dns.rcode.BADCOOKIE and cookie_of(probe) == client + server_cookie
        assert ask(server, client + server_cookie, name=None).rcode() == dns.rcode.NOERROR
        dig = subprocess.run(
            ["dig", f"+cookie={(client + server_cookie).hex()}", "+norec", f"@{server.host}", "-p", str(server.port), "www.example.com"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        assert f"COOKIE: {(client + server_cookie).hex()} (good)" in dig.stdout


def test_a_rotated_secret_keeps_cookies_valid_and_instances_share_them(tmp_path: Path) -> None:
    client = os.urandom(8)
    with running(DATA / "zones", "--workers", "1", "--cookie-secret-file", str(secrets_file(tmp_path, SECRET)), tmp=tmp_path) as old:
        cookie = cookie_of(ask(old, client))
    assert cookie is not None
    rotated = secrets_file(tmp_path, NEXT, SECRET)
    with (
        running(DATA / "zones", "--workers", "1", "--cookie-secret-file", str(rotated), tmp=tmp_path) as first,
        running(DATA / "zones", "--workers", "1", "--cookie-secret-file", str(rotated), tmp=tmp_path) as second,
    ):
        assert ask(first, cookie, name=None).rcode() == dns.rcode.NOERROR  # the old secret still checks
        fresh = cookie_of(ask(first, client + os.urandom(16)))  # a new cookie is made with the new secret
        assert fresh is not None and fresh[8:] == expected_server_cookie(NEXT, client, fresh[8:])
        assert ask(second, fresh, name=None).rcode() == dns.rcode.NOERROR  # good at every instance with the file


def test_a_bad_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("not hex\n")
    command = geolb_command("serve", "--zones", str(DATA / "zones"), "--cookie-secret-file", str(path))
    out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and f"{path}:1: not hex" in out.stderr
