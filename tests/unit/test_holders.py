"""Finding the geolb that holds an address (--replace): /proc/net tables and command lines."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

from geolb.net.holders import decode_address, geolb_main, is_geolb_serve, processes_with, socket_inodes

UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1111 2 0000000000000000 0
  102: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2222 2 0000000000000000 0
  103: 0200007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3333 2 0000000000000000 0
  104: 0100007F:14EA 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4444 2 0000000000000000 0
  105: 0100007F:14E9 0100007F:D431 06 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0
"""
UDP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when ...
  7: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000  0  0 5555 2 0 0
"""


@pytest.mark.parametrize(
    ("hex_address", "address"),
    [
        ("0100007F", "127.0.0.1"),
        ("00000000", "0.0.0.0"),
        ("00000000000000000000000001000000", "::1"),
        ("B80D0120000000000000000001000000", "2001:db8::1"),
    ],
)
def test_decode_address(hex_address: str, address: str) -> None:
    assert decode_address(hex_address) == ipaddress.ip_address(address)


def test_sockets_on_the_port_for_the_address_or_a_wildcard() -> None:
    port = 0x14E9  # 5353
    assert socket_inodes(UDP, ipaddress.ip_address("127.0.0.1"), port) == {1111, 2222}  # not .2, not 5354, not TIME_WAIT
    assert socket_inodes(UDP, ipaddress.ip_address("0.0.0.0"), port) == {1111, 2222, 3333}
    assert socket_inodes(UDP6, ipaddress.ip_address("::1"), port) == {5555}
    assert socket_inodes(UDP6, ipaddress.ip_address("::1"), 53) == set()


@pytest.mark.parametrize(
    ("command", "is_serve"),
    [
        (["/usr/bin/python3", "-m", "geolb", "serve", "--zones", "z"], True),
        (["/srv/venv/bin/python3", "/srv/venv/bin/geolb", "serve"], True),
        (["geolb", "serve", "--listen", "127.0.0.1:53"], True),
        (["geolb", "check", "--zones", "serve"], False),  # "serve" as a value, not the command; still a geolb, but no server
        (["/usr/bin/python3", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()", "--multiprocessing-fork"], False),
        (["knotd", "-c", "/etc/knot/knot.conf"], False),
        ([""], False),
    ],
)
def test_is_geolb_serve(command: list[str], is_serve: bool) -> None:
    assert is_geolb_serve(command) == is_serve


def test_this_process_holds_its_socket_and_is_no_geolb() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        inode = os.fstat(sock.fileno()).st_ino
        assert os.getpid() in processes_with({inode})
    assert geolb_main(os.getpid()) is None  # pytest, and its parent, are no `geolb serve`
