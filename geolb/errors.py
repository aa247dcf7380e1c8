"""Exceptions shared by every part of geolb; imports nothing from geolb."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Where:
    """A place in a zone file: the file's path and a 1-based line number (0: the file as a whole)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class GeolbError(Exception):
    """Root of every error geolb raises on purpose."""


class ConfigError(GeolbError):
    """A problem in a zone file, printed as `FILE:LINE: message`."""

    def __init__(self, where: Where, message: str, *, warning: bool = False) -> None:
        super().__init__(f"{where}: {'warning: ' if warning else ''}{message}")
        self.where = where
        self.message = message
        self.warning = warning


class ZoneSetError(GeolbError):
    """A zones directory that cannot be served; carries every problem found."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class GeoIPError(GeolbError):
    """A GeoIP database that is missing, unreadable or of an unknown kind."""
