"""Zone sets to edit under a running server, what they answer, and the reload and check to compare."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.rcode

from geolb.config.zoneset import load_zoneset
from tests.serverproc import DATA, RunningServer

# The MaxMind test database places these: GB, US, SE, CN; and a client with no ECS.
CLIENTS = (None, "81.2.69.142/32", "216.160.83.56/32", "89.160.20.112/32", "175.16.199.0/24")

Answer = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class ZoneSetData:
    """A valid zone set of tests/data and the names worth asking it."""

    directory: str
    probes: tuple[tuple[str, str], ...]

    def copy(self, where: Path) -> Path:
        target = where / self.directory
        shutil.copytree(DATA / self.directory, target)
        return target


SETS = {
    "multi-zones": ZoneSetData(
        "multi-zones",
        (
            ("example.org", "SOA"),
            ("www.example.org", "A"),
            ("www.example.org", "AAAA"),
            ("mail.example.org", "A"),
            ("shop.example.org", "SOA"),
            ("shop.example.org", "A"),
            ("www.shop.example.org", "A"),
            ("static.shop.example.org", "AAAA"),
            ("example.net", "SOA"),
            ("store.example.net", "A"),
            ("docs.example.net", "A"),
        ),
    ),
    "zones": ZoneSetData(
        "zones",
        (
            ("example.com", "SOA"),
            ("www.example.com", "A"),
            ("www.example.com", "AAAA"),
            ("mail.example.com", "A"),
            ("example.net", "SOA"),
        ),
    ),
    "geo-zones": ZoneSetData("geo-zones", (("geo.example", "SOA"), ("www.geo.example", "A"), ("www.geo.example", "AAAA"))),
}


def answer_of(server: RunningServer, name: str, rdtype: str, client: str | None) -> Answer:
    """The rcode and the records of one UDP answer, in a form that compares."""
    response = server.query(name, rdtype, ecs=client)
    records = sorted(f"{rrset.name} {rrset.ttl} {rdata.to_text()}" for rrset in response.answer for rdata in rrset)
    return dns.rcode.to_text(response.rcode()), tuple(records)


def answers(server: RunningServer, probes: tuple[tuple[str, str], ...]) -> dict[tuple[str, str, str | None], Answer]:
    """Every probe from every client: what a change must leave as it is."""
    return {(name, rdtype, client): answer_of(server, name, rdtype, client) for name, rdtype in probes for client in CLIENTS}


def post_reload(server: RunningServer) -> tuple[int, Any]:
    request = urllib.request.Request(f"{server.http_url}/v1/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def status(server: RunningServer) -> Any:
    with urllib.request.urlopen(f"{server.http_url}/v1/status", timeout=10) as reply:
        return json.load(reply)


def check_errors(directory: Path) -> list[str]:
    """The errors `geolb check` reports, from the function it calls."""
    return sorted(str(e) for e in load_zoneset(str(directory)).errors)


def write(path: Path, text: str) -> None:
    """Write and move the mtime forward, so a derived serial changes even within one second."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
