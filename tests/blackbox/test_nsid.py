"""RFC 5001: a query with the NSID option learns which instance answered; nothing changes for the others."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.edns
import dns.message

from tests.serverproc import DATA, RunningServer, running


def nsid_of(server: RunningServer, name: str = "www.example.com", *, ask: bool = True, tcp: bool = False) -> list[bytes]:
    options = [dns.edns.GenericOption(dns.edns.NSID, b"")] if ask else []
    query = dns.message.make_query(name, "A", use_edns=0, options=options)
    response = server.send(query, tcp=tcp)
    return [option.nsid for option in response.options if isinstance(option, dns.edns.NSIDOption)]


def test_nsid_names_the_instance(tmp_path: Path) -> None:
    with running(DATA / "zones", "--instance", "edge-ams-1", "--workers", "2", tmp=tmp_path) as server:
        for _ in range(3):  # the full path every time: the packet cache never answers an NSID query
            assert nsid_of(server) == [b"edge-ams-1"]
        assert nsid_of(server, tcp=True) == [b"edge-ams-1"]
        assert nsid_of(server, "nothing.example.com") == [b"edge-ams-1"]  # negative answers too
        assert nsid_of(server, ask=False) == []  # not asked: not sent
        dig = subprocess.run(
            ["dig", "+nsid", "+norec", f"@{server.host}", "-p", str(server.port), "www.example.com", "A"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        assert 'NSID: 65 64 67 65 2d 61 6d 73 2d 31 ("edge-ams-1")' in dig.stdout


def test_nsid_can_be_set_or_turned_off(tmp_path: Path) -> None:
    with running(DATA / "zones", "--nsid", "dns-7.example.net", "--workers", "1", tmp=tmp_path) as server:
        assert nsid_of(server) == [b"dns-7.example.net"]
    with running(DATA / "zones", "--nsid", "", "--workers", "1", tmp=tmp_path) as server:
        assert nsid_of(server) == []
