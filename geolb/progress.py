"""How far along a long step is (flattening a GeoIP database, building a big pool's map): on a terminal one
line rewritten in place, otherwise a log line at every STEP percent. Imports nothing from geolb."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

STEP = 25  # percent between log lines when stderr is not a terminal
REDRAW = 0.2  # seconds between redraws of the terminal line


class Progress:
    """Call with (done, total) as work gets done; `finish` closes the terminal line."""

    def __init__(self, what: str, log: logging.Logger, stream: TextIO | None = None, step: int = STEP) -> None:
        self.what = what
        self.log = log
        self.stream = sys.stderr if stream is None else stream
        self.terminal = self.stream.isatty()
        self.step = step
        self._logged = 0  # the last percentage logged
        self._drawn = 0.0
        self._open = False  # a terminal line was drawn and not ended yet

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total > 0 else 100
        if self.terminal:
            now = time.monotonic()
            if now - self._drawn >= REDRAW or done >= total:
                self._drawn = now
                self.stream.write(f"\r{self.what}: {percent:3d} % ({done:,} of {total:,})\x1b[K")
                self.stream.flush()
                self._open = True
            return
        reached = percent // self.step * self.step
        if reached > self._logged:  # one line per step reached, however far a call jumps
            self._logged = reached
            self.log.info("%s: %d %% (%s of %s)", self.what, reached, f"{done:,}", f"{total:,}")

    def finish(self) -> None:
        """End the terminal line, so the next log line starts on its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
