"""Messages between the main process and its DNS workers: pickled, length-prefixed, over a socketpair on asyncio streams."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_LENGTH = struct.Struct("!Q")
LIMIT = 1 << 30  # a zone set of a million records pickles to ~100 MB; anything longer is a broken peer


class ChannelClosed(Exception):
    """The other end is gone."""


class Channel:
    """One end of a worker's pipe. Writes never block the loop (a zone set is megabytes; the
    pipe holds a few hundred kilobytes), and a message is read whole or not at all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, message: Any) -> None:
        await self.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    async def send_bytes(self, data: bytes) -> None:
        """Send an already pickled message (one pickle for every worker)."""
        if self._writer.is_closing():
            raise ChannelClosed
        self._writer.write(_LENGTH.pack(len(data)))
        self._writer.write(data)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ChannelClosed from exc

    async def recv(self) -> Any:
        try:
            header = await self._reader.readexactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(header)
            if length > LIMIT:
                raise ChannelClosed
            data = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise ChannelClosed from exc
        return pickle.loads(data)

    def close(self) -> None:
        self._writer.close()
