"""A client that keeps asking a server over UDP and TCP from a thread, as a resolver would (a new socket per
query, so SO_REUSEPORT spreads them; a retry after a timeout), and counts what went unanswered."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.query
import dns.rcode

ATTEMPT_TIMEOUT = 1.0
ATTEMPTS = 3
PAUSE = 0.005  # between queries: a few hundred a second, enough to cover every moment, little CPU


@dataclass
class Tally:
    answered: int = 0
    retried: int = 0  # attempts that got no answer (a retry followed)
    lost: list[str] = field(default_factory=list)  # queries unanswered after every attempt, with the last error

    def __str__(self) -> str:
        return f"{self.answered} answered, {self.retried} attempts retried, {len(self.lost)} lost {self.lost[:3]}"


class SteadyClient:
    """`with SteadyClient(lambda: (host, port), "mail.example.com") as client:` ... `client.udp`, `client.tcp`."""

    def __init__(self, where: Callable[[], tuple[str, int]], name: str, rdtype: str = "A") -> None:
        self.where = where
        self.name = name
        self.rdtype = rdtype
        self.udp = Tally()
        self.tcp = Tally()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(False, self.udp), daemon=True),
            threading.Thread(target=self._run, args=(True, self.tcp), daemon=True),
        ]

    def __enter__(self) -> SteadyClient:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, tcp: bool, tally: Tally) -> None:
        while not self._stop.wait(PAUSE):
            query = dns.message.make_query(self.name, self.rdtype)
            error = ""
            for _attempt in range(ATTEMPTS):
                host, port = self.where()
                try:
                    if tcp:
                        response = dns.query.tcp(query, host, port=port, timeout=ATTEMPT_TIMEOUT)
                    else:
                        response = dns.query.udp(query, host, port=port, timeout=ATTEMPT_TIMEOUT)
                except (dns.exception.DNSException, OSError, EOFError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    tally.retried += 1
                    continue
                if response.rcode() == dns.rcode.NOERROR and response.answer:
                    tally.answered += 1
                    break
                error = f"rcode {dns.rcode.to_text(response.rcode())}"
                tally.retried += 1
            else:
                tally.lost.append(error)
