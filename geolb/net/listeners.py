"""The DNS sockets of one process: UDP and TCP on every --listen address, SO_REUSEPORT, and whether another holds it."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from geolb.errors import GeolbError
from geolb.handler import QueryHandler
from geolb.net.tcp import DnsStreamProtocol, TcpConnections, TcpLimits
from geolb.net.udp import UdpListener, leave_selection

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


def resolve(address: HostPort) -> tuple[socket.AddressFamily, str]:
    """The family and the numeric host a --listen address binds."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise GeolbError(f"cannot listen on {address}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


class AddressInUseError(GeolbError):
    """Something (another geolb, or any other program) holds a --listen address."""

    def __init__(self, address: HostPort, kind: str) -> None:
        super().__init__(f"cannot listen on {address} ({kind}): address in use (another geolb? --replace takes over from it)")


def _check_free(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> None:
    """Bind without SO_REUSEPORT and let go: the kernel refuses (EADDRINUSE) if any socket holds the address,
    SO_REUSEPORT ones included, which our own SO_REUSEPORT bind would silently share the queries with."""
    with socket.socket(family, kind) as sock:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # an earlier run's TIME_WAIT holds nothing
        sock.bind((host, port))


def _bind(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int, listen: bool = True) -> socket.socket:
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
        if kind == socket.SOCK_STREAM and listen:
            sock.listen(1024)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


def held(address: HostPort) -> str | None:
    """The protocol ("udp" or "tcp") on which anything holds `address`; None when it is free. Other errors
    (no such address on this host) are raised as GeolbError."""
    if address.port == 0:
        return None
    family, host = resolve(address)
    for kind, name in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        try:
            _check_free(family, kind, host, address.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return name
            raise GeolbError(f"cannot listen on {address} ({name}): {exc.strerror}") from None
    return None


def reserve_pair(address: HostPort) -> tuple[socket.socket, socket.socket, HostPort]:
    """The main process's hold on a port-0 address while its workers start: a port free on UDP and TCP, bound
    with SO_REUSEPORT, the UDP socket out of the group's choice and the TCP one not listening, so neither
    takes a share of queries that nobody would read."""
    udp, tcp, bound = bind_pair(address, listen=False)
    leave_selection(udp, wildcard_too=True)  # it never answers: the source address it would send from does not matter
    return udp, tcp, bound


def bind_pair(address: HostPort, *, listen: bool = True) -> tuple[socket.socket, socket.socket, HostPort]:
    """A UDP and a TCP socket on the same port (port 0: any free port that both can have), SO_REUSEPORT;
    the TCP one listening unless `listen` is false."""
    family, host = resolve(address)
    for _attempt in range(20):
        try:
            udp = _bind(family, socket.SOCK_DGRAM, host, address.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(address, "udp") from None
            raise GeolbError(f"cannot listen on {address} (udp): {exc.strerror}") from None
        port = int(udp.getsockname()[1])
        try:
            tcp = _bind(family, socket.SOCK_STREAM, host, port, listen)
        except OSError as exc:
            udp.close()
            if address.port == 0 and exc.errno == errno.EADDRINUSE:
                continue  # that free UDP port is taken on TCP: try another
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(address, "tcp") from None
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
        self._tcp: list[tuple[asyncio.AbstractServer, socket.socket]] = []

    async def start(self, addresses: Sequence[HostPort]) -> list[HostPort]:
        """Bind and serve; returns the addresses with the ports actually bound."""
        loop = asyncio.get_running_loop()
        for address in addresses:
            udp, tcp, bound = bind_pair(address)
            listener = UdpListener(udp, self.handler)
            listener.start()
            self._udp.append(listener)
            server = await loop.create_server(self._protocol, sock=tcp)
            self._tcp.append((server, tcp))
            self.addresses.append(bound)
        return self.addresses

    def _protocol(self) -> DnsStreamProtocol:
        return DnsStreamProtocol(self.handler, self.connections)

    async def stop(self, drain_timeout: float) -> None:
        """Stop taking work, answer what the kernel queued already (datagrams; connections it accepted), let TCP
        answers under way finish (bounded), close. Another geolb on the same port (--replace) takes what comes next."""
        loop = asyncio.get_running_loop()
        accepted: list[asyncio.Task[tuple[asyncio.Transport, DnsStreamProtocol]]] = []
        for server, sock in self._tcp:
            for connection in _accept_queued(sock):  # closing the listener would reset them
                accepted.append(loop.create_task(loop.connect_accepted_socket(self._protocol, connection)))
            server.close()
        await asyncio.gather(*(listener.stop() for listener in self._udp))
        await asyncio.gather(*accepted, return_exceptions=True)
        await self.connections.drain(drain_timeout)
        for server, _ in self._tcp:
            await server.wait_closed()


def _accept_queued(listener: socket.socket, limit: int = 4096) -> list[socket.socket]:
    """The connections waiting in a listening socket's accept queue."""
    out: list[socket.socket] = []
    while len(out) < limit:
        try:
            connection, _ = listener.accept()
        except OSError:  # empty (EAGAIN), or nothing more to take
            break
        connection.setblocking(False)
        out.append(connection)
    return out
