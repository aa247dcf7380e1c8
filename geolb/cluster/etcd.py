"""A small etcd v3 client over etcd's JSON gateway (aiohttp): put, range, delete, leases, watch.

Why the gateway and not a gRPC library: the Python etcd3 clients on PyPI are either
unmaintained (python-etcd3, last release 2020, pins old protobuf) or thread-based;
the gateway ships with every etcd v3 server (`/v3/...`, base64 keys and values), is
plain HTTP, and aiohttp is already how geolb talks HTTP on its event loop.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

TXN_OPS = 128  # operations per transaction: etcd refuses more by default


class EtcdError(Exception):
    """etcd could not be reached or refused the call; the message says which endpoint and why."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    lease: int
    mod_revision: int


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: bytes
    revision: int


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> str:
    """The range_end that covers every key starting with `prefix` (its last byte + 1)."""
    data = prefix.encode()
    return (data[:-1] + bytes((data[-1] + 1,))).decode()


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The stream's lines, however long: aiohttp's own line reader refuses lines over 128 kB, and a watch
    message holding a chunk of shared RUM figures (cluster/member.py) is longer."""
    buffer = bytearray()
    async for data in content.iter_any():
        scanned = len(buffer)
        buffer += data
        end = buffer.find(b"\n", scanned)
        while end >= 0:
            yield bytes(buffer[:end])
            del buffer[: end + 1]
            end = buffer.find(b"\n")


class EtcdClient:
    """One aiohttp session to one of several etcd endpoints (the next is tried when one fails)."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = list(endpoints)  # "http://127.0.0.1:2379"
        self.timeout = timeout
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v3/PATH to the current endpoint, moving on to the next ones when it fails."""
        problems = []
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoints[self._current]
            try:
                async with self._http().post(
                    f"{endpoint}/v3/{path}", data=json.dumps(body), timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as response:
                    payload = await response.json(content_type=None)
                    if response.status != 200:
                        raise EtcdError(f"{endpoint}: {path}: {payload.get('message') or payload.get('error') or response.status}")
                    return dict(payload)
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
                problems.append(f"{endpoint}: {type(exc).__name__}: {exc}".rstrip(": "))
                self._current = (self._current + 1) % len(self.endpoints)
        raise EtcdError("; ".join(problems))

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        reply = await self.call("kv/put", body)
        return int(reply["header"]["revision"])

    async def put_many(self, items: list[tuple[str, str]], lease: int = 0) -> None:
        """Several puts, TXN_OPS to a transaction (etcd's default --max-txn-ops): thousands of check
        states at a join go out in a few dozen requests, not thousands."""
        for start in range(0, len(items), TXN_OPS):
            ops = []
            for key, value in items[start : start + TXN_OPS]:
                put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
                if lease:
                    put["lease"] = str(lease)
                ops.append({"request_put": put})
            await self.call("kv/txn", {"success": ops})

    async def delete(self, key: str) -> None:
        await self.call("kv/deleterange", {"key": _b64(key)})

    async def range_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix`, and the store's revision they were read at."""
        reply = await self.call("kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        kvs = [
            KeyValue(_unb64(kv["key"]).decode(), _unb64(kv.get("value")), int(kv.get("lease", 0)), int(kv.get("mod_revision", 0)))
            for kv in reply.get("kvs", [])
        ]
        return kvs, int(reply["header"]["revision"])

    async def grant(self, ttl: int) -> int:
        reply = await self.call("lease/grant", {"TTL": str(ttl)})
        return int(reply["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew a lease once; its remaining TTL (0 or less: it has ended, the keys under it are gone)."""
        reply = await self.call("lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("lease/revoke", {"ID": str(lease)})

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Events under `prefix` from `start_revision` on, as etcd sends them together (one revision's,
        or a burst's), until the stream breaks (EtcdError)."""
        endpoint = self.endpoints[self._current]
        request = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)), "start_revision": str(start_revision)}}
        try:
            async with self._http().post(
                f"{endpoint}/v3/watch", data=json.dumps(request), timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
            ) as response:
                if response.status != 200:
                    raise EtcdError(f"{endpoint}: watch: status {response.status}")
                async for line in _lines(response.content):
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "error" in message:
                        raise EtcdError(f"{endpoint}: watch: {message['error']}")
                    result = message.get("result", {})
                    if result.get("canceled"):
                        raise EtcdError(f"{endpoint}: watch canceled: {result.get('cancel_reason', '')}")
                    events = [
                        WatchEvent(
                            event.get("type", "PUT"),
                            _unb64(event.get("kv", {}).get("key")).decode(),
                            _unb64(event.get("kv", {}).get("value")),
                            int(event.get("kv", {}).get("mod_revision", 0)),
                        )
                        for event in result.get("events", [])
                    ]
                    if events:
                        yield events
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdError(f"{endpoint}: watch: {type(exc).__name__}: {exc}") from None
        self._current = (self._current + 1) % len(self.endpoints)
        raise EtcdError(f"{endpoint}: watch stream ended")
