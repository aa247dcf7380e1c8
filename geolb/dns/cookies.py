"""DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018): SipHash-2-4 over the client cookie,
a timestamp and the client's address, keyed by a secret every instance may share. No geo, no I/O."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from siphashc import siphash

from geolb.dns.peers import remembered

COOKIE_OPTION = 10
CLIENT_SIZE = 8
SERVER_SIZE = 16  # RFC 9018: version 1, reserved 3, timestamp 4, hash 8
RESPONSE_OPTION_SIZE = 4 + CLIENT_SIZE + SERVER_SIZE  # what a response's OPT grows by
VERSION_HEAD = b"\x01\x00\x00\x00"
REUSE = 1800  # a server cookie younger than this is sent back as it came (RFC 9018 §4.3: half an hour)
VALID_PAST = 3600  # an hour old at most
VALID_FUTURE = 300  # five minutes ahead of our clock at most
MADE_LIMIT = 100_000  # server cookies remembered per process (by client address and client cookie)


def well_formed(length: int) -> bool:
    """RFC 7873 §5.2.2: a client cookie alone (8 bytes), or with a server cookie of 8 to 32 bytes; else FORMERR."""
    return length == CLIENT_SIZE or 2 * CLIENT_SIZE <= length <= CLIENT_SIZE + 32


def new_secret() -> bytes:
    return os.urandom(16)


def read_secrets(path: str) -> tuple[bytes, ...]:
    """`--cookie-secret-file`: one secret a line, 32 hex digits; the first makes cookies, every one checks them
    (put the new one first and keep the old below it for an hour, and no client loses its cookie)."""
    secrets = []
    with open(path, encoding="ascii") as handle:
        for number, line in enumerate(handle, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                secret = bytes.fromhex(text)
            except ValueError:
                raise ValueError(f"{path}:{number}: not hex") from None
            if len(secret) != 16:
                raise ValueError(f"{path}:{number}: a secret is 16 bytes (32 hex digits), got {len(secret)}")
            secrets.append(secret)
    if not secrets:
        raise ValueError(f"{path}: no secret in it")
    return tuple(secrets)


class CookieJar:
    """Makes and checks server cookies; remembers the ones it made so a client keeps its cookie for half an hour."""

    def __init__(self, secrets: Sequence[bytes], clock: Callable[[], float] = time.time) -> None:
        self.secrets = tuple(secrets)
        self.clock = clock
        self._made: dict[tuple[str, bytes], bytes] = {}
        self._address = remembered(lambda address: address.packed)

    def make(self, client: bytes, address: bytes, now: int) -> bytes:
        head = VERSION_HEAD + (now & 0xFFFFFFFF).to_bytes(4, "big")
        return head + siphash(self.secrets[0], client + head + address).to_bytes(8, "little")

    def valid(self, client: bytes, server: bytes, address: bytes, now: int) -> bool:
        """A server cookie we made (with any of the secrets) for this client and address, and not too old or new."""
        if len(server) != SERVER_SIZE or server[:4] != VERSION_HEAD:
            return False
        age = _age(server, now)
        if age > VALID_PAST and (-age) & 0xFFFFFFFF > VALID_FUTURE:
            return False
        hashed = server[:8]
        return any(siphash(secret, client + hashed + address).to_bytes(8, "little") == server[8:] for secret in self.secrets)

    def answer(self, option: bytes, host: str) -> tuple[bytes, bool]:
        """The COOKIE option (code, length, data) for the response to a query whose COOKIE option data is
        `option` from `host`, and whether the query came with a valid server cookie."""
        client, server = option[:CLIENT_SIZE], option[CLIENT_SIZE:]
        address = self._address(host)
        now = int(self.clock())
        valid = bool(server) and self.valid(client, server, address, now)
        if valid and _age(server, now) < REUSE:
            cookie = server
        else:
            key = (host, client)
            cookie = self._made.get(key, b"")
            if not cookie or _age(cookie, now) >= REUSE:
                if len(self._made) >= MADE_LIMIT:
                    self._made.clear()
                cookie = self._made[key] = self.make(client, address, now)
        return b"\x00\x0a\x00\x18" + client + cookie, valid


def _age(server: bytes, now: int) -> int:
    """Seconds since a server cookie's timestamp, in serial number arithmetic (RFC 1982): a cookie from
    the future is very old."""
    return (now - int.from_bytes(server[4:8], "big")) & 0xFFFFFFFF
