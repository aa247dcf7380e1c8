"""Endpoint health: rise/fall counters and forced states per HealthKey, published as a HealthView. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from geolb import model


@dataclass(frozen=True)
class HealthView:
    """An immutable picture of which checks are down; the DNS path reads only this."""

    down: frozenset[model.HealthKey] = frozenset()

    def is_up(self, key: model.HealthKey) -> bool:
        return key not in self.down


ALL_UP = HealthView()
