"""Every metric, defined once, in a registry of our own. The DNS path keeps plain counters; they are read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from geolb import model
from geolb.health.probe import Outcome, url_of
from geolb.health.state import Transition

if TYPE_CHECKING:
    from geolb.cluster.member import ClusterMember
    from geolb.geo.locate import Locator
    from geolb.geo.store import GeoIPReport
    from geolb.handler import QueryStats
    from geolb.health.state import HealthState
    from geolb.http.rum import RumListener
    from geolb.runtime import Runtime
    from geolb.workers import WorkersReport


class Scraped(Protocol):
    """What the DNS families are read from (the server, through http.control.Control)."""

    runtime: Runtime
    cluster: ClusterMember | None
    health: HealthState
    scraped_stats: QueryStats
    locator: Locator
    geoip: GeoIPReport
    rum: RumListener | None

    @property
    def checks_scheduled(self) -> int: ...

    @property
    def workers(self) -> WorkersReport: ...


class Metrics:
    """What the prober and the reloads report; the DNS counters come in through ServerCollector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.probe_seconds = Histogram(
            "geolb_health_check_duration_seconds",
            "Time one health check took, by check type and result.",
            ["type", "result"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._probe_children: dict[tuple[str, str], Histogram] = {}
        self.transitions = Counter(
            "geolb_health_transitions_total", "Health state changes of a check target.", ["target", "state"], registry=self.registry
        )
        self.reloads = Counter("geolb_reloads_total", "Zone reloads, by result.", ["result"], registry=self.registry)
        self.geoip_reloads = Counter(
            "geolb_geoip_reloads_total",
            "GeoIP database files taken after a change (ok) or refused, the one in use kept (error).",
            ["result"],
            registry=self.registry,
        )

    def observe_probe(self, key: model.HealthKey, outcome: Outcome) -> None:
        labels = (key.check.type, "ok" if outcome.ok else "fail")
        child = self._probe_children.get(labels)
        if child is None:  # labels() costs microseconds; thousands of checks a second add up
            child = self._probe_children[labels] = self.probe_seconds.labels(*labels)
        child.observe(outcome.latency)

    def count_transition(self, transition: Transition) -> None:
        self.transitions.labels(url_of(transition.key), "up" if transition.up else "down").inc()

    def attach(self, collect: Callable[[], Iterator[CounterMetricFamily | GaugeMetricFamily]]) -> None:
        self.registry.register(_Adapter(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Adapter(Collector):
    def __init__(self, collect: Callable[[], Iterator[CounterMetricFamily | GaugeMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        return self._collect()


def server_metrics(server: Scraped) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The DNS path's plain counters and the current health, as Prometheus families."""
    stats = server.scraped_stats
    queries = CounterMetricFamily("geolb_dns_queries", "DNS queries answered, by zone, type and rcode.", labels=["zone", "qtype", "rcode"])
    for (zone_name, qtype, rcode), count in list(stats.queries.items()):
        queries.add_metric([zone_name, model.RTYPE_NAMES.get(qtype, str(qtype)), model.RCODE_NAMES.get(rcode, str(rcode))], count)
    yield queries
    yield CounterMetricFamily("geolb_dns_dropped", "Packets dropped unanswered (unparseable, or responses).", value=stats.dropped)
    client_errors = CounterMetricFamily(
        "geolb_dns_client_errors", "Malformed packets from clients, by kind (dropped, or answered FORMERR).", labels=["kind"]
    )
    for kind, count in list(stats.client_errors.items()):
        client_errors.add_metric([kind], count)
    yield client_errors
    answers = CounterMetricFamily("geolb_geo_answers", "GEO answers, by pool and the region that answered.", labels=["pool", "region"])
    for (pool_name, region_name), count in list(stats.geo_answers.items()):
        answers.add_metric([pool_name, region_name], count)
    yield answers
    fail_open = CounterMetricFamily("geolb_geo_fail_open_answers", "GEO answers given with nothing healthy (fail open).", labels=["pool"])
    for pool_name, count in list(stats.fail_open.items()):
        fail_open.add_metric([pool_name], count)
    yield fail_open
    busy = CounterMetricFamily(
        "geolb_geo_busy_answers", "GEO answers given from busy endpoints (nothing up and not busy anywhere).", labels=["pool"]
    )
    for pool_name, count in list(stats.busy.items()):
        busy.add_metric([pool_name], count)
    yield busy
    by_evidence = CounterMetricFamily(
        "geolb_geo_answers_by_evidence",
        "GEO answers of latency-steered pools, by the evidence that ordered the regions (network, resolver, country, vantage, distance).",
        labels=["pool", "kind"],
    )
    for (pool_name, kind), count in list(stats.evidence.items()):
        by_evidence.add_metric([pool_name, kind], count)
    yield by_evidence
    limited = CounterMetricFamily(
        "geolb_rrl_limited", "UDP responses held back by rate limiting, by kind and what became of them.", labels=["kind", "action"]
    )
    for (kind, action), count in list(stats.rate_limited.items()):
        limited.add_metric([kind, action], count)
    yield limited

    snapshot = server.runtime.snapshot
    up = GaugeMetricFamily(
        "geolb_endpoint_up", "1 when an endpoint is answered as healthy (forced states included).", labels=["pool", "region", "address"]
    )
    load = GaugeMetricFamily(
        "geolb_endpoint_load", "The endpoint's last load report (0-1; 0 without a fresh report).", labels=["pool", "region", "address"]
    )
    busy_now = GaugeMetricFamily(
        "geolb_endpoint_busy",
        "1 while an endpoint sheds load (shed_load: at high until it is at low).",
        labels=["pool", "region", "address"],
    )
    health = snapshot.health
    for pool in snapshot.zones.pools.values():
        for region in pool.regions:
            for endpoint in region.endpoints:
                labels = [pool.name, region.name, str(endpoint.address)]
                up.add_metric(labels, 1.0 if health.is_up(pool.name, region.name, endpoint) else 0.0)
                load.add_metric(labels, health.load(pool.name, region.name, endpoint))
                busy_now.add_metric(labels, 1.0 if health.is_busy(pool.name, region.name, endpoint) else 0.0)
    yield up
    yield load
    yield busy_now
    latency = GaugeMetricFamily("geolb_health_check_last_seconds", "Duration of the latest check of a target.", labels=["target"])
    for key in server.health.targets():
        check = server.health.check(key)
        if check is not None and check.last_latency is not None:
            latency.add_metric([url_of(key)], check.last_latency)
    yield latency
    serial = GaugeMetricFamily("geolb_zone_serial", "SOA serial of each zone served.", labels=["zone"])
    for zone in snapshot.zones.zones.values():
        serial.add_metric([zone.name], zone.serial)
    yield serial
    workers = server.workers
    yield GaugeMetricFamily("geolb_dns_workers_alive", "DNS worker processes answering now (of --workers).", value=workers.alive)
    yield GaugeMetricFamily("geolb_dns_workers_expected", "DNS worker processes wanted (--workers).", value=workers.expected)
    yield CounterMetricFamily("geolb_dns_worker_restarts", "DNS workers respawned after dying.", value=workers.restarts)
    yield GaugeMetricFamily("geolb_health_checks_scheduled", "Distinct check targets being probed.", value=server.checks_scheduled)
    built = getattr(server.locator, "build_epoch", None)
    if built is not None:
        yield GaugeMetricFamily("geolb_geoip_build_timestamp_seconds", "Build time of the GeoIP database answering.", value=built)
    yield GaugeMetricFamily(
        "geolb_geoip_load_error",
        "1 while the GeoIP database file on disk was refused (the one in use answers).",
        value=0.0 if server.geoip.error is None else 1.0,
    )
    yield from steering_metrics(server)
    member = server.cluster
    if member is not None:
        yield GaugeMetricFamily("geolb_cluster_connected", "1 while etcd is reachable.", value=1.0 if member.status.connected else 0.0)
        yield GaugeMetricFamily("geolb_cluster_instances", "Live instances seen in etcd.", value=len(member.status.instances))
        views = GaugeMetricFamily(
            "geolb_cluster_check_up", "Each live instance's view of a check target (1 up, 0 down).", labels=["target", "instance"]
        )
        for key in server.health.targets():
            for name, seen_up in member.views(key).items():
                views.add_metric([url_of(key), name], 1.0 if seen_up else 0.0)
        yield views


def steering_metrics(server: Scraped) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """Latency steering (SPEC §10): beacons by result, and per `steering: latency` pool what holds evidence."""
    if server.rum is not None:
        beacons = CounterMetricFamily(
            "geolb_rum_beacons", "RUM beacons, by result (only accepted ones are measurements).", labels=["result"]
        )
        for result, count in server.rum.counts.total.items():
            beacons.add_metric([result], count)
        yield beacons
    snapshot = server.runtime.snapshot
    kinds = {
        "networks": "Client networks (/24, /48) with their own RTT evidence.",
        "resolvers": "Resolvers with RTT evidence from the networks seen behind them.",
        "countries": "Countries with RTT evidence from at least min_networks networks.",
    }
    families = {kind: GaugeMetricFamily(f"geolb_steering_{kind}", text, labels=["pool"]) for kind, text in kinds.items()}
    for pool in snapshot.zones.pools.values():
        if pool.steering != "latency":
            continue
        evidence = snapshot.evidence.get(pool.name)
        families["networks"].add_metric([pool.name], 0 if evidence is None else evidence.networks)
        families["resolvers"].add_metric([pool.name], 0 if evidence is None else len(evidence.resolvers))
        families["countries"].add_metric([pool.name], 0 if evidence is None else len(evidence.countries))
    yield from families.values()
