"""UDP listener: drains the socket when it is readable and answers each datagram at once; no awaits.

A reader callback that loops over `recvfrom` until the socket is empty costs far
less per datagram than a transport calling a protocol method for each one
(bench/README.md has the figures), and a burst is answered in one wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from geolb.handler import QueryHandler

log = logging.getLogger("geolb.net")
BURST = 256  # datagrams answered per wake-up before other work (TCP, probes, API) gets a turn


class UdpListener:
    def __init__(self, sock: socket.socket, handler: QueryHandler) -> None:
        self.sock = sock
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        handle = self.handler.handle
        for _ in range(BURST):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket: go on
                log.debug("UDP receive error: %s", exc)
                continue
            response = handle(data, addr[0], False)
            if response is not None:
                try:
                    sendto(response, addr)
                except (BlockingIOError, InterruptedError):
                    pass  # the send buffer is full: drop, as a router would; the client retries
                except OSError as exc:
                    log.debug("UDP send error to %s: %s", addr[0], exc)
