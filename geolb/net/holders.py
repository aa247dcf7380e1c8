"""Which geolb instances hold a DNS address (Linux /proc): for `serve --replace`, the instance to take over from.

The sockets on the port are found in /proc/net/{udp,udp6,tcp,tcp6} (their inodes), the
processes holding them in /proc/PID/fd, and the geolb main process of each (a DNS worker's
parent): the one that SIGTERM stops as a whole.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from geolb.errors import GeolbError
from geolb.model import IPAddress

TIME_WAIT = "06"  # a closed connection's leftover: no process holds it


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str  # its command line, for messages


def decode_address(hex_address: str) -> IPAddress:
    """An address as /proc/net/* prints it: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def socket_inodes(table: str, address: IPAddress, port: int) -> set[int]:
    """Inodes of the sockets in one /proc/net table whose local address can take datagrams or connections
    for address:port (the same address, or a wildcard on either side)."""
    inodes: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local_hex, _, port_hex = fields[1].partition(":")
        if int(port_hex, 16) != port or fields[3] == TIME_WAIT:
            continue
        local = decode_address(local_hex)
        if local == address or local.is_unspecified or address.is_unspecified:
            inode = int(fields[9])
            if inode:
                inodes.add(inode)
    return inodes


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _command(pid: int) -> list[str]:
    return _read(f"/proc/{pid}/cmdline").rstrip("\0").split("\0")


def _parent(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid
    except (IndexError, ValueError):
        return None


def is_geolb_serve(command: list[str]) -> bool:
    """`geolb serve ...`, `python -m geolb serve ...` or `python .../bin/geolb serve ...`."""
    for index, arg in enumerate(command[:3]):
        if os.path.basename(arg) == "geolb":
            return command[index + 1 : index + 2] == ["serve"]
    return False


def processes_with(inodes: set[int], proc: str = "/proc") -> set[int]:
    """The processes (of this user: others' fds are not readable) holding any of these socket inodes."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids: set[int] = set()
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"{proc}/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc}/{entry}/fd/{fd}") in wanted:
                    pids.add(int(entry))
                    break
            except OSError:
                continue
    return pids


def geolb_main(pid: int) -> int | None:
    """The geolb main process `pid` belongs to (itself, or the parent of a DNS worker); None: not geolb."""
    candidate: int | None = pid
    for _ in range(2):
        if candidate is None or candidate <= 1:
            return None
        if is_geolb_serve(_command(candidate)):
            return candidate
        candidate = _parent(candidate)
    return None


def instances_on(host: str, port: int, family: socket.AddressFamily, exclude: Iterable[int] = ()) -> list[Holder]:
    """The geolb main processes holding host:port (UDP or TCP). Raises GeolbError naming a holder that is not
    geolb, or when the holders cannot be seen (another user's)."""
    address = ipaddress.ip_address(host)
    six = family == socket.AF_INET6
    inodes: set[int] = set()
    for table in ("udp6", "tcp6") if six else ("udp", "tcp"):
        inodes |= socket_inodes(_read(f"/proc/net/{table}"), address, port)
    where = f"[{host}]:{port}" if six else f"{host}:{port}"
    pids = processes_with(inodes) - set(exclude)
    if not pids:
        raise GeolbError(f"cannot listen on {where}: address in use, by no process of this user that --replace could stop")
    mains: dict[int, Holder] = {}
    for pid in sorted(pids):
        main = geolb_main(pid)
        if main is None:
            command = _shortened(" ".join(" ".join(_command(pid)).split())) or "?"
            raise GeolbError(
                f"cannot listen on {where}: address in use by process {pid} ({command}), not a geolb that --replace could stop"
            )
        mains[main] = Holder(main, _shortened(" ".join(_command(main))))
    return list(mains.values())


def _shortened(command: str, limit: int = 120) -> str:
    """A command line for a log line: cut where it is long, and marked so."""
    return command if len(command) <= limit else command[: limit - 1] + "…"


def has_exited(pid: int) -> bool:
    """True once `pid` is gone or a zombie (exited, not yet reaped by its parent)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return True
    try:
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except IndexError:
        return True
