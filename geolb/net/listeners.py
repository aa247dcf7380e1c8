"""The DNS sockets of one process: UDP and TCP on every --listen address, optionally SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from geolb.errors import GeolbError
from geolb.handler import QueryHandler
from geolb.net.tcp import DnsStreamProtocol, TcpConnections, TcpLimits
from geolb.net.udp import UdpListener

UDP_RECEIVE_BUFFER = 4 << 20  # absorbs bursts while the loop is busy


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """`127.0.0.1:5353`, `[::1]:5353` or `localhost:5353`."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected HOST:PORT (IPv6 as [::1]:5353), got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"write IPv6 addresses in brackets, as [{host}]:{port}")
        return cls(host or "0.0.0.0", int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _resolve(address: HostPort) -> tuple[socket.AddressFamily, str]:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise GeolbError(f"cannot listen on {address}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def _bind(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # every DNS worker binds the same port
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


def bind_pair(address: HostPort) -> tuple[socket.socket, socket.socket, HostPort]:
    """A UDP and a TCP socket on the same port (port 0: any free port that both can have)."""
    family, host = _resolve(address)
    for _attempt in range(20):
        try:
            udp = _bind(family, socket.SOCK_DGRAM, host, address.port)
        except OSError as exc:
            raise GeolbError(f"cannot listen on {address} (udp): {exc.strerror}") from None
        port = int(udp.getsockname()[1])
        try:
            tcp = _bind(family, socket.SOCK_STREAM, host, port)
        except OSError as exc:
            udp.close()
            if address.port == 0 and exc.errno == errno.EADDRINUSE:
                continue  # that free UDP port is taken on TCP: try another
            raise GeolbError(f"cannot listen on {address} (tcp): {exc.strerror}") from None
        return udp, tcp, HostPort(address.host, port)
    raise GeolbError(f"cannot find a port free on both UDP and TCP for {address}")


class DnsListeners:
    """Serves `handler` on UDP and TCP for every address."""

    def __init__(self, handler: QueryHandler, limits: TcpLimits) -> None:
        self.handler = handler
        self.connections = TcpConnections(limits)
        self.addresses: list[HostPort] = []
        self._udp: list[UdpListener] = []
        self._tcp: list[asyncio.AbstractServer] = []

    async def start(self, addresses: Sequence[HostPort]) -> list[HostPort]:
        """Bind and serve; returns the addresses with the ports actually bound."""
        loop = asyncio.get_running_loop()
        for address in addresses:
            udp, tcp, bound = bind_pair(address)
            listener = UdpListener(udp, self.handler)
            listener.start()
            self._udp.append(listener)
            server = await loop.create_server(lambda: DnsStreamProtocol(self.handler, self.connections), sock=tcp)
            self._tcp.append(server)
            self.addresses.append(bound)
        return self.addresses

    async def stop(self, drain_timeout: float) -> None:
        """Stop taking work, let TCP answers already under way finish (bounded), close."""
        for server in self._tcp:
            server.close()
        for listener in self._udp:
            listener.close()
        await self.connections.drain(drain_timeout)
        for server in self._tcp:
            await server.wait_closed()
