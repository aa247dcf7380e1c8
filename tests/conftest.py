from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serverproc import RunningServer, start_server


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """geolb on the test zones, loopback IPv4 and IPv6, ephemeral ports."""
    running = start_server(listen=("127.0.0.1:0", "[::1]:0"))
    yield running
    assert running.stop() == 0
