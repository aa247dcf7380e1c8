"""Latency evidence reaches real DNS worker processes: published in the main process's runtime, it changes the
answers that the workers give over UDP once they acknowledge the generation, and token sightings come back up."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from types import MappingProxyType

import dns.asyncquery
import dns.edns
import dns.message
import numpy as np

from geolb.config.zoneset import load_zoneset
from geolb.geo.locate import GeoIPLocator
from geolb.geo.store import MapStore
from geolb.net.listeners import HostPort, reserve_pair
from geolb.net.tcp import TcpLimits
from geolb.runtime import Runtime
from geolb.steer.evidence import NetworkTable, PoolEvidence
from geolb.steer.tokens import Sighting, TokenBook
from geolb.workers import WorkerConfig, WorkerPool
from tests.serverproc import DATA

ZONE = """\
nameservers:
  ns1.steer.example.: [127.0.0.1]
health: {type: none}
rum_name: rum
pools:
  steered:
    steering: latency
    regions:
      near: {location: [51.5, -0.1], endpoints: [127.0.0.21]}
      far: {location: [35.7, 139.7], endpoints: [127.0.0.22]}
records:
  www: [{type: GEO, pool: steered}]
"""
LONDON = "81.2.69.160"  # GB in the test database: "near" by distance


async def ask(address: HostPort, name: str, ecs: str | None = None) -> list[str]:
    options = [] if ecs is None else [dns.edns.ECSOption(ecs.split("/")[0], int(ecs.split("/")[1]))]
    query = dns.message.make_query(name, "A", use_edns=0, options=options)
    reply = await dns.asyncquery.udp(query, address.host, timeout=5, port=address.port)
    return [r.address for rrset in reply.answer for r in rrset]


def test_published_evidence_steers_the_workers_answers(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "steer.example.yaml").write_text(ZONE)
    zoneset = load_zoneset(str(zones)).zoneset
    assert zoneset is not None
    cache = tmp_path / "cache"
    maps = MapStore(str(cache)).maps_for(zoneset, GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb")))
    key = int(ipaddress.ip_address(LONDON)) >> 8
    rtt = np.array([[90.0, 12.0]], dtype=np.float32)  # "far" measured much faster from this /24
    table = NetworkTable(4, np.array([key], dtype=np.uint64), rtt, np.array([[20, 20]], dtype=np.uint32), np.array([-1], np.int16))
    evidence = PoolEvidence("steered", ("near", "far"), table, NetworkTable.empty(6, 2), version=1)

    async def scenario() -> None:
        runtime = Runtime(zoneset, maps=maps)
        tokens = TokenBook()
        udp, tcp, address = reserve_pair(HostPort("127.0.0.1", 0))
        config = WorkerConfig(
            (address,), str(cache), TcpLimits(), True, logging.WARNING, rum_addresses=(ipaddress.ip_address("127.0.0.53"),)
        )
        pool = WorkerPool(1, config, tokens.note)
        pool.spawn()
        try:
            runtime.on_swap(pool.publish)
            await pool.start(runtime.snapshot)
            udp.close()
            tcp.close()
            assert await ask(address, "www.steer.example", f"{LONDON}/24") == ["127.0.0.21"]
            snapshot = runtime.publish(evidence=MappingProxyType({"steered": evidence}))
            assert await pool.settled(snapshot.generation, timeout=10)
            assert await ask(address, "www.steer.example", f"{LONDON}/24") == ["127.0.0.22"]
            assert await ask(address, "www.steer.example", "81.2.70.0/24") == ["127.0.0.21"]  # the next /24: no evidence
            assert await ask(address, "abc.rum.steer.example", "81.2.69.0/24") == ["127.0.0.53"]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while tokens.find("abc") is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            seen = tokens.find("abc")
            assert isinstance(seen, Sighting) and str(seen.network) == "81.2.69.0/24" and str(seen.resolver) == "127.0.0.1"
            stats = await pool.stats()
            assert sum(s.evidence[("steered", "network")] for s in stats) == 1
        finally:
            await pool.stop()

    asyncio.run(scenario())
