"""TCP listener (RFC 7766): length-prefixed messages, pipelining, idle timeout, connection cap."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from geolb.handler import QueryHandler

log = logging.getLogger("geolb.net")


@dataclass(frozen=True)
class TcpLimits:
    idle_timeout: float = 10.0  # RFC 7766 §6.2.3 suggests seconds, not minutes
    max_connections: int = 1024
    max_buffered: int = 1 << 20  # unanswered bytes a client may queue before it is paused


class TcpConnections:
    """The open connections of one server, least recently active first: for the cap and for a graceful stop.

    At the cap a new connection is taken and the one that has gone longest without a
    complete question is closed: clients that connect and send nothing, or a byte at a
    time, can hold the slots only until someone with a real question arrives.
    """

    def __init__(self, limits: TcpLimits) -> None:
        self.limits = limits
        self.open: dict[DnsStreamProtocol, None] = {}  # insertion order = activity order
        self.closing = False
        self.evicted = 0

    def touch(self, connection: DnsStreamProtocol) -> None:
        """`connection` just completed a question: it moves to the back of the eviction line."""
        if self.open.pop(connection, False) is None:  # still open (an evicted one is not put back)
            self.open[connection] = None

    def make_room(self) -> None:
        while len(self.open) >= self.limits.max_connections:
            oldest = next(iter(self.open))
            del self.open[oldest]
            oldest.abort()
            self.evicted += 1

    async def drain(self, timeout: float) -> None:
        """Stop reading, let answers already written reach their clients, then close."""
        self.closing = True
        for connection in list(self.open):
            if connection.questions:
                connection.close_when_idle()
            # else: just accepted, its first question on its way: it closes once that is answered (or at the deadline)
        deadline = asyncio.get_running_loop().time() + timeout
        while self.open and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.open):
            connection.abort()


class DnsStreamProtocol(asyncio.Protocol):
    def __init__(self, handler: QueryHandler, connections: TcpConnections) -> None:
        self.handler = handler
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.buffer = bytearray()
        self.questions = 0
        self.idle: asyncio.TimerHandle | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        if self.connections.closing:
            transport.abort()
            return
        try:
            self.peer = str(transport.get_extra_info("peername")[0])
        except (TypeError, IndexError):
            transport.abort()
            return
        self.connections.make_room()
        self.connections.open[self] = None
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(self.connections.limits.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        # The idle timer is not moved by bytes, only by complete questions (RFC 7766 §6.2.3):
        # a client dribbling a byte a second is closed like one that sends nothing.
        self.buffer += data
        self._answer_complete_messages()

    def _answer_complete_messages(self) -> None:
        buffer = self.buffer
        transport = self.transport
        assert transport is not None and self.peer is not None
        offset = 0
        while len(buffer) - offset >= 2 and not self.paused:
            length = int.from_bytes(buffer[offset : offset + 2], "big")
            if len(buffer) - offset - 2 < length:
                break
            message = bytes(buffer[offset + 2 : offset + 2 + length])
            offset += 2 + length
            self.questions += 1
            response = self.handler.handle(message, self.peer, tcp=True)
            if response is not None:
                transport.write(len(response).to_bytes(2, "big") + response)
        if offset:
            self._arm_idle()
            self.connections.touch(self)
        del buffer[:offset]
        if len(buffer) > self.connections.limits.max_buffered:
            transport.abort()  # a client that only sends and never reads
        elif self.connections.closing and not buffer:
            transport.close()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its questions.
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._answer_complete_messages()

    def close_when_idle(self) -> None:
        """Graceful stop: finish what is buffered, then close (writes are flushed first)."""
        if self.transport is None:
            return
        self.transport.pause_reading()
        self._answer_complete_messages()
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.connections.open.pop(self, None)
