"""What the HTTP API reads and asks of the running server, as a protocol: http/ imports nothing above it.

`geolb.server.Server` is the one implementation. Reads go to the same objects the DNS
path uses (the runtime's snapshot, the health state); changes go through the calls
below, never by writing into those objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from geolb.cluster.member import ClusterMember
from geolb.config.zoneset import ZoneSetResult
from geolb.geo.choose import GeoAnswers
from geolb.geo.locate import Locator
from geolb.geo.store import GeoIPReport
from geolb.handler import AnswerKey, QueryStats
from geolb.health.state import HealthState
from geolb.http.feed import StatusFeed
from geolb.http.metrics import Metrics
from geolb.http.rum import RumListener
from geolb.model import IPAddress
from geolb.runtime import Runtime
from geolb.steer.aggregate import RumStore
from geolb.steer.tokens import TokenBook

if TYPE_CHECKING:
    from geolb.workers import WorkersReport


class Control(Protocol):
    runtime: Runtime
    cluster: ClusterMember | None
    health: HealthState
    locator: Locator
    geoip: GeoIPReport
    last_reload: ZoneSetResult
    metrics: Metrics
    feed: StatusFeed
    scraped_stats: QueryStats  # what /metrics renders, gathered from every process per scrape
    rum: RumListener | None  # the RUM listener (--rum-listen), None when off
    rum_store: RumStore  # every pool's measurements (SPEC §10)
    rum_address: str | None
    rum_addresses: tuple[IPAddress, ...]  # what "<token>.<rum_name>" answers (--rum-address)
    tokens: TokenBook  # resolver discovery: token -> the latest Sighting (SPEC §10)

    @property
    def api_token(self) -> str | None: ...

    @property
    def answering(self) -> bool: ...

    @property
    def workers(self) -> WorkersReport: ...

    @property
    def checks_scheduled(self) -> int: ...

    def geo_answers(self) -> GeoAnswers: ...

    def force(self, pool: str, region: str, address: IPAddress, up: bool | None) -> None: ...

    def push_load(self, pool: str, region: str, address: IPAddress, load: float) -> None: ...

    async def reload_all(self) -> ZoneSetResult: ...

    async def settled(self) -> bool: ...

    async def query_stats(self) -> QueryStats: ...

    async def recent_answers(self) -> tuple[dict[AnswerKey, int], float]: ...
