"""`geolb serve | check | resolve`: arguments, output and exit codes."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from geolb import __version__
from geolb.config.dnssec import DEFAULT_ALGORITHM, KEYS_DIR
from geolb.config.serials import load_served
from geolb.config.zoneset import load_zoneset, zone_files
from geolb.cpus import usable_cpus
from geolb.dns.cookies import read_secrets
from geolb.dns.ratelimit import RateLimits
from geolb.dnssec.keys import ALGORITHMS, DnssecKeyError, ds_text, generate, load_keys
from geolb.errors import GeolbError
from geolb.explain import ExplainError, explain, parse_client, render_text
from geolb.geo.choose import GeoAnswers
from geolb.geo.store import MapStore, default_cache_dir
from geolb.health.state import ALL_UP
from geolb.model import IPAddress, IPNetwork
from geolb.net.listeners import HostPort
from geolb.net.tcp import TcpLimits
from geolb.server import ServeOptions, run_server, saved_evidence, usable_cache_dir


def _host_port(text: str) -> HostPort:
    try:
        return HostPort.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _http(text: str) -> HostPort | None:
    return None if text.lower() in ("off", "none", "") else _host_port(text)


def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address") from None


def _cidr(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)") from None


def _location(text: str) -> tuple[float, float]:
    """LAT,LON in degrees."""
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON in degrees (e.g. 53.35,-6.26), got {text!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"latitude must be -90..90 and longitude -180..180, got {text!r}")
    return lat, lon


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _etcd_endpoints(text: str) -> tuple[str, ...]:
    """etcd://HOST:PORT[,HOST:PORT...] -> ("http://HOST:PORT", ...)."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme != "etcd" or not rest:
        raise argparse.ArgumentTypeError(f"expected etcd://HOST:PORT[,HOST:PORT...], got {text!r}")
    endpoints = []
    for item in rest.split(","):
        try:
            address = HostPort.parse(item.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"--cluster: {exc}") from None
        endpoints.append(f"http://{address}")
    return tuple(endpoints)


def _instance_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"an instance name is 1-64 letters, digits, '.', '_' or '-', got {text!r}")
    return text


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
        default=os.environ.get("GEOLB_HTTP") or "127.0.0.1:8053",  # a string default goes through `type`
        metavar="HOST:PORT",
        help="HTTP API address, or 'off' (default: $GEOLB_HTTP, else 127.0.0.1:8053)",
    )
    serve.add_argument(
        "--tcp-idle-timeout", type=float, default=10.0, metavar="SECONDS", help="close idle TCP connections after this (default: 10)"
    )
    serve.add_argument("--tcp-max-connections", type=int, default=1024, metavar="N", help="concurrent TCP connections (default: 1024)")
    serve.add_argument(
        "--api-token",
        default=os.environ.get("GEOLB_API_TOKEN"),
        metavar="TOKEN",
        help="require Authorization: Bearer TOKEN on mutating API calls (default: $GEOLB_API_TOKEN)",
    )
    serve.add_argument(
        "--watch-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="look for changed zone files and a changed GeoIP database this often; 0 turns it off (default: 1)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=usable_cpus(),
        metavar="N",
        help="DNS processes on SO_REUSEPORT sockets (default: the CPUs this process may use: affinity, capped by a cgroup quota)",
    )
    serve.add_argument(
        "--replace",
        action="store_true",
        help="take over --listen addresses a running geolb serves: answer beside it, then stop it (no query lost)",
    )
    serve.add_argument("--no-fast-path", action="store_true", help="answer every query through the full dnslib path (for comparison)")
    serve.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where region maps are kept between runs (default: $GEOLB_CACHE_DIR, else $XDG_CACHE_HOME/geolb, else ~/.cache/geolb)",
    )
    serve.add_argument(
        "--probe-source",
        action="append",
        type=_address,
        default=[],
        metavar="ADDR",
        help="health checks leave from this address; once per family (default: the kernel's choice)",
    )
    serve.add_argument(
        "--cluster",
        type=_etcd_endpoints,
        default=(),
        metavar="etcd://HOST:PORT[,HOST:PORT...]",
        help="share health, forced states and loads with other instances through etcd v3",
    )
    serve.add_argument(
        "--cookie-secret-file",
        metavar="FILE",
        help="DNS Cookies: secrets, one a line (32 hex digits); the first makes server cookies, every one checks them. "
        "Share the file between instances; default: a random secret per run",
    )
    serve.add_argument(
        "--rrl-rate",
        type=float,
        default=0.0,
        metavar="N",
        help="response rate limiting over UDP: answers per second per client /24 (IPv6 /56); 0 (default) turns it off",
    )
    serve.add_argument("--rrl-nxdomain-rate", type=float, metavar="N", help="NXDOMAIN answers per second per network (default: --rrl-rate)")
    serve.add_argument("--rrl-error-rate", type=float, metavar="N", help="error answers per second per network (default: --rrl-rate)")
    serve.add_argument("--rrl-window", type=float, default=5.0, metavar="S", help="seconds of burst a quiet network may send (default: 5)")
    serve.add_argument(
        "--rrl-slip",
        type=int,
        default=2,
        metavar="N",
        help="every Nth limited answer goes out truncated, so clients retry over TCP; 0: drop all",
    )
    serve.add_argument(
        "--nsid",
        metavar="TEXT",
        help="what a query with the NSID option learns of this server (RFC 5001; default: the --instance name; '' sends none)",
    )
    serve.add_argument("--cluster-prefix", default="/geolb", metavar="PREFIX", help="etcd key prefix (default: /geolb)")
    serve.add_argument(
        "--instance",
        type=_instance_name,
        default=socket.gethostname(),
        metavar="NAME",
        help="this instance's name in the cluster (default: the host name)",
    )
    # Latency steering (SPEC §10): the RUM listener and this instance's place.
    serve.add_argument(
        "--rum-listen", type=_host_port, metavar="ADDR:PORT", help="serve rum.js and take beacons (POST /v1/rum) here (default: off)"
    )
    serve.add_argument(
        "--rum-trusted-proxy",
        action="append",
        type=_cidr,
        default=[],
        metavar="CIDR",
        help="a beacon from these peers speaks for the left-most X-Forwarded-For address not in them; repeatable",
    )
    serve.add_argument(
        "--rum-rate",
        type=_positive,
        default=60,
        metavar="N",
        help="beacons a minute from one /24 (IPv6 /48) before 429; 0: no limit (default: 60)",
    )
    serve.add_argument(
        "--rum-max-networks",
        type=_positive,
        default=1_000_000,
        metavar="N",
        help="client networks measured per pool, least recently measured dropped first (default: 1000000)",
    )
    serve.add_argument(
        "--location", type=_location, metavar="LAT,LON", help="where this instance is: its health checks' times become vantage evidence"
    )
    serve.add_argument(
        "--rum-address",
        action="append",
        type=_address,
        default=[],
        metavar="ADDR",
        help="what <token>.<rum_name> answers: the RUM listener's public address; repeat for each (IPv4 and IPv6)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info")

    check = commands.add_parser("check", help="validate every zone file; print FILE:LINE: message per problem")
    check.add_argument("--zones", default="zones", metavar="DIR")

    resolve = commands.add_parser("resolve", help="show the answer a client gets, and why")
    resolve.add_argument("name")
    resolve.add_argument("--type", default="A", type=str.upper, help="A (default), AAAA or any served type")
    resolve.add_argument("--client", required=True, metavar="IP[/PREFIX]", help="client address or ECS subnet")
    resolve.add_argument("--zones", default="zones", metavar="DIR")
    resolve.add_argument("--geoip", metavar="FILE")
    resolve.add_argument("--cache-dir", metavar="DIR", help="region maps and saved RUM measurements, as for serve")
    resolve.add_argument(
        "--resolver", action="store_true", help="the client is a resolver asking without ECS (latency steering's resolver evidence)"
    )

    dnssec = commands.add_parser("dnssec", help="zone keys: make one, print the DS for the parent")
    actions = dnssec.add_subparsers(dest="action", required=True)
    keygen = actions.add_parser("keygen", help="write a new key pair for ZONE and print its DS record")
    ds = actions.add_parser("ds", help="print the DS record of every key of ZONE")
    for action in (keygen, ds):
        action.add_argument("zone", metavar="ZONE")
        action.add_argument("--zones", default="zones", metavar="DIR")
        action.add_argument("--keys", metavar="DIR", help="keys directory (default: the zone's dnssec.keys, else DIR/keys)")
    keygen.add_argument("--algorithm", choices=list(ALGORITHMS), help="default: the zone's dnssec.algorithm, else ECDSAP256SHA256")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            secrets = read_secrets(args.cookie_secret_file) if args.cookie_secret_file else ()
        except (OSError, ValueError) as exc:
            print(f"geolb: --cookie-secret-file: {exc}", file=sys.stderr)
            return 1
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
            api_token=args.api_token or None,
            watch_interval=args.watch_interval,
            fast_path=not args.no_fast_path,
            workers=max(1, args.workers),
            log_level=getattr(logging, args.log_level.upper()),
            cache_dir=args.cache_dir,
            probe_sources=tuple(args.probe_source),
            cluster=args.cluster,
            cluster_prefix=args.cluster_prefix,
            instance=args.instance,
            nsid=args.nsid,
            replace=args.replace,
            cookie_secrets=secrets,
            rum_addresses=tuple(dict.fromkeys(args.rum_address)),
            rate_limits=RateLimits(
                answers=args.rrl_rate,
                nxdomains=args.rrl_rate if args.rrl_nxdomain_rate is None else args.rrl_nxdomain_rate,
                errors=args.rrl_rate if args.rrl_error_rate is None else args.rrl_error_rate,
                window=args.rrl_window,
                slip=max(0, args.rrl_slip),
            ),
            # Latency steering (SPEC §10)
            rum_listen=args.rum_listen,
            rum_trusted_proxies=tuple(args.rum_trusted_proxy),
            rum_rate=args.rum_rate,
            rum_max_networks=args.rum_max_networks,
            location=args.location,
        )
        return run_server(options)
    if args.command == "check":
        return check(args.zones)
    if args.command == "dnssec":
        return dnssec_command(args.action, args.zone, args.zones, args.keys, getattr(args, "algorithm", None))
    return resolve(args.name, args.type, args.client, args.zones, args.geoip, args.cache_dir, args.resolver)


def check(zones_dir: str) -> int:
    # The serials a server on the default cache directory remembers: `check` shows the serial it would serve.
    result = load_zoneset(zones_dir, served=load_served(default_cache_dir()))
    for problem in sorted(result.errors + result.warnings, key=lambda p: (p.where.file, p.where.line)):
        print(problem)
    if not result.ok:
        print(f"{len(result.errors)} error(s) in {zones_dir}", file=sys.stderr)
        return 1
    for zone in result.zoneset.zones.values():
        print(f"{zone.file}: ok (zone {zone.name} serial {zone.serial})")
    return 0


def resolve(
    name: str, qtype: str, client_text: str, zones_dir: str, geoip: str | None, cache_dir: str | None = None, resolver: bool = False
) -> int:
    """Print the answer for a client with every endpoint healthy, and how it was chosen; `steering: latency` pools
    with the RUM measurements a server saved under the cache directory (SPEC §10)."""
    try:
        client = parse_client(client_text)
    except ExplainError as exc:
        print(f"geolb: --client: {exc}", file=sys.stderr)
        return 2
    result = load_zoneset(zones_dir)
    if not result.ok:
        for problem in result.errors:
            print(problem, file=sys.stderr)
        return 1
    try:
        cache = usable_cache_dir(cache_dir)[0]
        store = MapStore(cache)
        locator = store.open_locator(geoip)
        maps = store.maps_for(result.zoneset, locator)
        evidence = saved_evidence(Path(cache), result.zoneset, maps)
        report = explain(result.zoneset, GeoAnswers(maps, ALL_UP, evidence=evidence), locator, name, qtype, client, resolver)
    except (GeolbError, ExplainError) as exc:
        print(f"geolb: {exc}", file=sys.stderr)
        return 1
    print(f";; geoip: {locator.description}")
    print(render_text(report))
    return 0


def dnssec_command(action: str, zone_text: str, zones_dir: str, keys_dir: str | None, algorithm: str | None) -> int:
    """`geolb dnssec keygen|ds ZONE`: the DS goes to stdout (for the parent), what was done to stderr."""
    zone = zone_text.strip().lower().rstrip(".") + "."
    settings = zone_dnssec_settings(zones_dir, zone)
    where = keys_dir or (os.path.join(zones_dir, str(settings["keys"])) if settings.get("keys") else os.path.join(zones_dir, KEYS_DIR))
    try:
        if action == "keygen":
            chosen = algorithm or str(settings.get("algorithm") or DEFAULT_ALGORITHM)
            key = generate(where, zone, chosen)
            print(f"geolb: wrote {key.path} (mode 600) and its .key file: {chosen} key {key.key_tag} of {zone}", file=sys.stderr)
            print(ds_text(key))
            return 0
        keys, _warnings = load_keys(where, zone)
    except DnssecKeyError as exc:
        print(f"geolb: {exc}", file=sys.stderr)
        return 1
    for key in keys:
        print(ds_text(key))
    return 0


def zone_dnssec_settings(zones_dir: str, zone: str) -> dict[str, object]:
    """The `dnssec:` mapping of the file that serves `zone`, if one does (a rough read: `check` validates)."""
    try:
        paths = zone_files(zones_dir)
    except OSError:
        return {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(data, dict):
            continue
        name = str(data.get("zone") or os.path.basename(path)[: -len(".yaml")]).lower().rstrip(".") + "."
        if name == zone:
            settings = data.get("dnssec")
            return dict(settings) if isinstance(settings, dict) else {}
    return {}


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entry()
