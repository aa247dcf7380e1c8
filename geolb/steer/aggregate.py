"""Beacons -> per-pool figures (SPEC §10): robust medians per network, resolver and country, with a decaying window,
bounded memory, the margin's leaders, saved under the cache directory and shared as aggregates through etcd.

SKELETON: the interface the rest of geolb is written against; the aggregate helper fills it in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from geolb import model
from geolb.steer.evidence import PoolEvidence

# geo_order(pool, version, addresses) -> int16 [n, k]: for each address (the network's first address: the whole of
# it for IPv4, its upper 64 bits for IPv6, as uint64) the pool's region indices in §3 rule-2 order (-1 padded, k <= 32).
# The margin's incumbent for a network measured for the first time is the first covered region in this order.
# Provided by steer/overlay.py (`geo_rankings`), vectorized: called once per evidence build for new rows only.
GeoOrder = Callable[[model.Pool, int, npt.NDArray[np.uint64]], npt.NDArray[np.int16]]


class RumStore:
    """Every pool's beacons, folded as they arrive; `evidence` makes the PoolEvidence the answer path reads."""

    def __init__(self, max_networks: int = 1_000_000) -> None:
        raise NotImplementedError

    def add(
        self,
        pool: model.Pool,
        network: model.IPNetwork,  # the client's /24 or /48
        rtt: Mapping[str, float],  # region name -> ms, already validated against the pool
        now: float,  # time.time()
        country: str | None = None,  # the client network's GeoIP country
        resolver: model.IPAddress | None = None,  # from resolver discovery, when the token was seen
    ) -> None:
        raise NotImplementedError

    def evidence(self, pool: model.Pool, now: float, geo_order: GeoOrder | None = None) -> PoolEvidence:
        raise NotImplementedError
