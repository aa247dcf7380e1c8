"""UDP listener: one datagram in, at most one datagram out; no awaits on the way."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from geolb.handler import QueryHandler

log = logging.getLogger("geolb.net")


class DnsDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: QueryHandler) -> None:
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio's, but has the same methods.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        response = self.handler.handle(data, addr[0], tcp=False)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier answers (port unreachable, ...): nothing to do but go on.
        log.debug("UDP error: %s", exc)
