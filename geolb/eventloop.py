"""The event loop every geolb process runs on: uvloop when it is installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """For asyncio.Runner(loop_factory=...); None picks asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional
        return None
    return uvloop.new_event_loop
