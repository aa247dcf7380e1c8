"""Region maps for tests, kept in one cache directory for the whole run (they are content-addressed)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from geolb import model
from geolb.geo.locate import Locator
from geolb.geo.regionmap import RegionMap
from geolb.geo.store import MapStore

CACHE = Path(os.environ.get("GEOLB_TEST_CACHE", Path(tempfile.gettempdir()) / f"geolb-test-cache-{os.getuid()}"))
_stores: dict[str, MapStore] = {}


def region_maps(zones: model.ZoneSet, locator: Locator) -> dict[str, RegionMap]:
    store = _stores.setdefault(str(CACHE), MapStore(str(CACHE)))
    return store.maps_for(zones, locator)
