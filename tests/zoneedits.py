"""Zone sets to edit under a running server, what they answer, and the reload and check to compare."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode

from geolb.config.zoneset import load_zoneset
from tests.serverproc import DATA, ROOT, RunningServer, geolb_command

# The MaxMind test database places these: GB, US, SE, CN; and a client with no ECS.
CLIENTS = (None, "81.2.69.142/32", "216.160.83.56/32", "89.160.20.112/32", "175.16.199.0/24")

Answer = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class ZoneSetData:
    """A valid zone set of tests/data and the names worth asking it."""

    directory: str
    probes: tuple[tuple[str, str], ...]

    def copy(self, where: Path) -> Path:
        """A copy of the set in `where`; returns its directory."""
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


def ask_all(server: RunningServer, keys: list[tuple[str, str, str | None]]) -> dict[tuple[str, str, str | None], Answer]:
    """Many UDP queries at once (RD clear); a query whose answer does not come is sent once more, then it fails."""
    out: dict[tuple[str, str, str | None], Answer] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        for _attempt in range(2):
            pending: dict[int, tuple[tuple[str, str, str | None], dns.message.Message]] = {}
            for number, key in enumerate(k for k in keys if k not in out):
                name, rdtype, client = key
                options = []
                if client is not None:
                    address, _, prefix = client.partition("/")
                    options.append(dns.edns.ECSOption(address, int(prefix)))
                query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232, options=options)
                query.flags &= ~dns.flags.RD
                query.id = number
                pending[number] = (key, query)
                sock.sendto(query.to_wire(), (server.host, server.port))
            while pending:
                try:
                    wire = sock.recv(65535)
                except TimeoutError:
                    break
                response = dns.message.from_wire(wire, ignore_trailing=True)
                if response.id in pending:
                    key, query = pending.pop(response.id)
                    if query.is_response(response):
                        records = sorted(f"{r.name} {r.ttl} {rdata.to_text()}" for r in response.answer for rdata in r)
                        out[key] = (dns.rcode.to_text(response.rcode()), tuple(records))
    missing = [k for k in keys if k not in out]
    assert not missing, f"no answer over UDP to {missing}"
    return out


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


# --- mutation runs: one server, many slips, each checked against `check` and real DNS ---


def probes_of(directory: Path, per_zone: int = 10) -> tuple[tuple[str, str], ...]:
    """The apex SOA and up to `per_zone` names of every zone of a valid directory (A, and AAAA for GEO names)."""
    zoneset = load_zoneset(str(directory)).zoneset
    probes: list[tuple[str, str]] = []
    for zone in zoneset.zones.values():
        probes.append((zone.name, "SOA"))
        names = [n for n in zone.nodes if "*" not in n and not any(n.endswith("." + cut) or n == cut for cut in zone.delegations)]
        for name in sorted(names)[:per_zone]:
            geo = zone.nodes[name].geo
            if geo is not None and geo.max_answers is not None:
                continue  # a weighted pick among the regions' endpoints: not the same twice
            probes.append((name, "A"))
            if zone.nodes[name].geo is not None:
                probes.append((name, "AAAA"))
    return tuple(probes)


@dataclass
class Outcome:
    """One mutation, what `check` and the reload said, and what it cost the answers."""

    kind: str
    detail: str
    errors: list[str]
    agreed: bool
    changed: list[str]  # answers that differ from before (a slip must change none), or zones lost
    why: str = ""


class MutationRun:
    """One running server and a working zones directory that takes one data set after another."""

    def __init__(self, server: RunningServer, work: Path, clients: tuple[str | None, ...] = (None, "81.2.69.142/32")) -> None:
        self.server = server
        self.work = work
        self.clients = clients
        self.probes: tuple[tuple[str, str], ...] = ()
        self.zones = load_zoneset(str(work)).zoneset
        self.baseline: dict[tuple[str, str, str | None], Answer] = {}

    def ask(self) -> dict[tuple[str, str, str | None], Answer]:
        """Every probe from every client, over UDP: all sent from one socket, then the answers matched by id."""
        keys = [(n, t, c) for n, t in self.probes for c in self.clients]
        return ask_all(self.server, keys)

    def load(self, data: ZoneSetData) -> None:
        """Serve a data set: copy it in, reload, and note what it answers (names whose answer varies are left out)."""
        for path in self.work.iterdir():
            if path.is_file():
                path.unlink()
        for path in sorted((DATA / data.directory).iterdir()):
            if path.is_file():
                write(self.work / path.name, path.read_text())
        code, body = post_reload(self.server)
        assert code == 200, body
        self.probes = probes_of(self.work)
        self.zones = load_zoneset(str(self.work)).zoneset
        first, second = self.ask(), self.ask()
        self.probes = tuple(p for p in self.probes if all(first[(*p, c)] == second[(*p, c)] for c in self.clients))
        self.baseline = self.ask()

    def zone_of(self, name: str) -> str | None:
        zone = self.zones.find_zone(name)
        return zone.name if zone is not None else None

    def touches(self, name: str, answer: Answer, zones: set[str]) -> bool:
        """Whether the name, or a name its answer's CNAME chain reaches, is in one of `zones`."""
        owners = {name, *(record.split()[0] for record in answer[1])}
        return any(self.zone_of(owner) in zones for owner in owners)

    def valid_alone(self, snapshot: Any) -> set[str]:
        """The zones a slip across files may change: those of edited files whose edit is valid on its own.

        An editor saves one file at a time, so half of a move across files goes live
        at its own save whatever the server does; that half is an edit, not a slip.
        """
        changed = [name for name in snapshot.changed() if name.endswith(".yaml") and (self.work / name).exists()]
        if len(snapshot.changed()) < 2:
            return set()
        zones = set()
        for name in changed:
            alone = self.work.parent / "alone"
            shutil.rmtree(alone, ignore_errors=True)
            alone.mkdir()
            for original, data in snapshot.files.items():
                (alone / original).write_bytes(data)
            (alone / name).write_bytes((self.work / name).read_bytes())
            result = load_zoneset(str(alone))
            if not result.errors:
                zones |= {zone.name for zone in result.zoneset.zones.values() if zone.file == str(alone / name)}
        return zones

    def try_one(self, rng: Any, mutate: Any, snapshot: Any, with_cli: bool = False) -> Outcome:
        """Apply one mutation, reload, compare with `check` and with the answers before; then put the files back."""
        mutation = mutate(rng, self.work)
        may_change = self.valid_alone(snapshot)
        result = load_zoneset(str(self.work))
        expected = sorted(str(e) for e in result.errors)
        code, body = post_reload(self.server)
        got = sorted(body.get("errors", []))
        why = []
        if got != expected:
            why.append(f"reload errors {got} != check errors {expected}")
        if (code == 422) != bool(expected):
            why.append(f"reload answered {code} with {len(expected)} check error(s)")
        missing = {str(w) for w in result.warnings} - set(body.get("warnings", []))
        if missing:
            why.append(f"check warnings missing from the reload: {sorted(missing)}")
        if with_cli:
            cli = subprocess.run(geolb_command("check", "--zones", str(self.work)), capture_output=True, text=True, timeout=60, cwd=ROOT)
            printed = sorted(line for line in cli.stdout.splitlines() if ": warning: " not in line and ": ok (zone " not in line)
            if printed != expected or (cli.returncode == 1) != bool(expected):
                why.append(f"geolb check printed {printed} (exit {cli.returncode}), expected {expected}")
        now = self.ask()
        if expected:
            changed = [
                f"{k[0]} {k[1]} from {k[2]}: {self.baseline[k]} -> {now[k]}"
                for k in self.baseline
                if now[k] != self.baseline[k] and not self.touches(k[0], self.baseline[k], may_change)
            ]
        else:
            # A valid edit may change answers, but none of these slips takes a zone off the air.
            changed = [f"zone {k[0]} lost: {now[k]}" for k in self.baseline if k[1] == "SOA" and now[k][0] != "NOERROR"]
        snapshot.restore()
        if not expected or may_change:  # something went live: put it back too
            code, body = post_reload(self.server)
            assert code == 200, f"putting the files back: {body}"
            again = self.ask()
            drift = [k for k in self.baseline if k[1] != "SOA" and again[k] != self.baseline[k]]
            assert not drift, f"the restored files answer differently: {drift}"
            self.baseline = again
        return Outcome(mutation.kind, mutation.detail, expected, not why, changed, "; ".join(why))
