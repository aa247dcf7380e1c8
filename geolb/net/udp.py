"""UDP listener: drains the socket when it is readable and answers each datagram at once; no awaits.

A reader callback that loops over `recvfrom` until the socket is empty costs far
less per datagram than a transport calling a protocol method for each one
(bench/README.md has the figures), and a burst is answered in one wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket

from geolb.handler import QueryHandler

log = logging.getLogger("geolb.net")
BURST = 256  # datagrams answered per wake-up before other work (TCP, probes, API) gets a turn
DRAIN_BURSTS = 64  # at a stop, what is queued is answered: at most this many bursts
LEAVE_GRACE = 0.05  # answering on after leaving the group's choice, for datagrams already on their way in


def leave_selection(sock: socket.socket, *, wildcard_too: bool) -> bool:
    """Take a SO_REUSEPORT UDP socket out of the kernel's choice of socket for new datagrams, keeping what is
    queued: connect() it to its own address (Linux skips a connected socket in the group for every other peer).

    On a wildcard address connect() also pins the source address of what it sends (to loopback), so a
    socket that must still answer is only taken out with `wildcard_too` false when bound to one address.
    True when it is out.
    """
    host, port = sock.getsockname()[:2]
    if ipaddress.ip_address(host).is_unspecified:
        if not wildcard_too:
            return False
        host = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
    with contextlib.suppress(OSError):
        sock.connect((host, port))
        return True
    return False


class UdpListener:
    def __init__(self, sock: socket.socket, handler: QueryHandler) -> None:
        self.sock = sock
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    async def stop(self, grace: float = LEAVE_GRACE) -> None:
        """Stop without losing a datagram to the close: out of the SO_REUSEPORT group's choice first (another
        geolb may be taking over the port), answering on for `grace` (datagrams the kernel chose this socket
        for a moment ago may still be on their way in), then close()."""
        if leave_selection(self.sock, wildcard_too=False) and self._loop is not None:
            await asyncio.sleep(grace)
        self.close()

    def close(self) -> None:
        """Answer every datagram queued, then close at once: what sits in the queue of a closed socket is lost."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        for _ in range(DRAIN_BURSTS):
            if self._answer(BURST):
                break
        self.sock.close()

    def _readable(self) -> None:
        self._answer(BURST)

    def _answer(self, limit: int) -> bool:
        """Answer up to `limit` datagrams; True when the socket is empty."""
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        handle = self.handler.handle
        for _ in range(limit):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return True
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
        return False
