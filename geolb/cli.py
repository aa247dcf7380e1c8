"""`geolb serve | check | resolve`: arguments, output and exit codes."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import random
import sys
from collections.abc import Sequence

from geolb import __version__
from geolb.answer import Answer, GeoDecider, build_answer
from geolb.config.zoneset import load_zoneset
from geolb.errors import GeolbError
from geolb.geo.locate import open_locator
from geolb.health.state import ALL_UP
from geolb.lookup import lookup
from geolb.model import RTYPE_CODES
from geolb.net.tcp import TcpLimits
from geolb.server import HostPort, ServeOptions, run_server


def _host_port(text: str) -> HostPort:
    try:
        return HostPort.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _http(text: str) -> HostPort | None:
    return None if text.lower() in ("off", "none", "") else _host_port(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geolb", description="Authoritative GeoDNS for global load balancing.")
    parser.add_argument("--version", action="version", version=f"geolb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="answer DNS for the zones in a directory")
    serve.add_argument("--zones", default="zones", metavar="DIR", help="zones directory (default: zones)")
    serve.add_argument("--geoip", metavar="FILE", help="MaxMind City or Country database (default: the bundled GeoLite2 City)")
    serve.add_argument(
        "--listen", action="append", type=_host_port, metavar="HOST:PORT",
        help="DNS address, UDP and TCP; repeat for more (default: 127.0.0.1:5353; IPv6 as [::1]:5353)",
    )  # fmt: skip
    serve.add_argument(
        "--http",
        type=_http,
        default=HostPort("127.0.0.1", 8053),
        metavar="HOST:PORT",
        help="HTTP API address, or 'off' (default: 127.0.0.1:8053)",
    )
    serve.add_argument(
        "--tcp-idle-timeout", type=float, default=10.0, metavar="SECONDS", help="close idle TCP connections after this (default: 10)"
    )
    serve.add_argument("--tcp-max-connections", type=int, default=1024, metavar="N", help="concurrent TCP connections (default: 1024)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info")

    check = commands.add_parser("check", help="validate every zone file; print FILE:LINE: message per problem")
    check.add_argument("--zones", default="zones", metavar="DIR")

    resolve = commands.add_parser("resolve", help="show the answer a client gets, and why")
    resolve.add_argument("name")
    resolve.add_argument("--type", default="A", type=str.upper, help="A (default), AAAA or any served type")
    resolve.add_argument("--client", required=True, metavar="IP[/PREFIX]", help="client address or ECS subnet")
    resolve.add_argument("--zones", default="zones", metavar="DIR")
    resolve.add_argument("--geoip", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(
            level=getattr(logging, args.log_level.upper()),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        options = ServeOptions(
            zones_dir=args.zones,
            geoip=args.geoip,
            listen=tuple(args.listen or [HostPort("127.0.0.1", 5353)]),
            http=args.http,
            tcp=TcpLimits(idle_timeout=args.tcp_idle_timeout, max_connections=args.tcp_max_connections),
        )
        return run_server(options)
    if args.command == "check":
        return check(args.zones)
    return resolve(args.name, args.type, args.client, args.zones, args.geoip)


def check(zones_dir: str) -> int:
    result = load_zoneset(zones_dir)
    for problem in sorted(result.errors + result.warnings, key=lambda p: (p.where.file, p.where.line)):
        print(problem)
    if not result.ok:
        print(f"{len(result.errors)} error(s) in {zones_dir}", file=sys.stderr)
        return 1
    for zone in result.zoneset.zones.values():
        print(f"{zone.file}: ok (zone {zone.name} serial {zone.serial})")
    return 0


def resolve(name: str, qtype_text: str, client_text: str, zones_dir: str, geoip: str | None) -> int:
    """Print the answer for a client with every endpoint healthy, and how it was chosen."""
    try:
        network = ipaddress.ip_network(client_text, strict=False)
    except ValueError:
        print(f"geolb: --client {client_text!r} is not an address or prefix", file=sys.stderr)
        return 2
    if qtype_text not in RTYPE_CODES:
        print(f"geolb: unsupported --type {qtype_text}", file=sys.stderr)
        return 2
    result = load_zoneset(zones_dir)
    if not result.ok:
        for problem in result.errors:
            print(problem, file=sys.stderr)
        return 1
    try:
        locator = open_locator(geoip)
    except GeolbError as exc:
        print(f"geolb: {exc}", file=sys.stderr)
        return 1
    qname = name.lower().rstrip(".") + "."
    found = lookup(result.zoneset, qname, RTYPE_CODES[qtype_text])
    client = network.network_address
    answer = build_answer(found, client, result.zoneset, GeoDecider(locator, ALL_UP), random.Random())
    print(render_answer(qname, qtype_text, client_text, answer, locator.description))
    return 0


def render_answer(qname: str, qtype: str, client: str, answer: Answer, geoip: str) -> str:
    rcodes = {0: "NOERROR", 3: "NXDOMAIN", 5: "REFUSED"}
    lines = [
        f";; {qname} {qtype} for client {client} ({geoip})",
        f";; status {rcodes.get(answer.rcode, answer.rcode)}, ECS scope /{answer.ecs_scope}",
    ]
    for section, rrsets in (("answer", answer.answer), ("authority", answer.authority), ("additional", answer.additional)):
        if rrsets:
            lines.append(f";; {section}")
            lines.extend(f"{rrset.name}\t{rrset.ttl}\tIN\t{rrset.rtype}\t{_text(r)}" for rrset in rrsets for r in rrset.rdatas)
    decision = answer.decision
    if decision is not None:
        ranking = decision.ranking
        lines.append(f";; pool {decision.pool}: regions by {ranking.rule}")
        for i, ranked in enumerate(ranking.regions, 1):
            lines.append(f";;   {i}. {ranked.region.name} ({ranked.reason})")
        for region, why in decision.skipped:
            lines.append(f";; skipped {region}: {why}")
        chosen = decision.region.name if decision.region else "none (no endpoint of this family: NODATA)"
        lines.append(f";; answered from {chosen}{' (fail open: nothing healthy)' if decision.failed_open else ''}")
    return "\n".join(lines)


def _text(rdata: object) -> str:
    fields = getattr(rdata, "__dataclass_fields__", {})
    return " ".join(str(getattr(rdata, f)) for f in fields)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entry()
