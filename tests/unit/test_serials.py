"""Derived SOA serials against the ones remembered from earlier runs (geolb/config/serials.py)."""

from __future__ import annotations

from pathlib import Path

from geolb.config.serials import load_served, serial_after
from geolb.config.zoneset import load_zoneset


def test_the_same_text_keeps_its_serial_and_a_change_moves_past_it() -> None:
    assert serial_after(1_000, None, "d1", first_read=True) == 1_000
    assert serial_after(1_000, ("d1", 5_000), "d1", first_read=True) == 5_000  # unchanged since it was served
    assert serial_after(1_000, ("d0", 5_000), "d1", first_read=True) == 5_001  # changed, older file time
    assert serial_after(9_000, ("d0", 5_000), "d1", first_read=True) == 9_000  # changed, newer file time
    assert serial_after(6_000, ("d1", 5_000), "d1", first_read=False) == 6_000  # this process moved it already


def test_serials_wrap_as_rfc_1982_says() -> None:
    top = 2**32 - 1
    assert serial_after(5, ("d0", top), "d1", first_read=True) == 5  # 5 is after 2^32-1
    assert serial_after(top - 10, ("d0", top), "d1", first_read=True) == 0  # before it: one past, wrapped


def test_a_broken_serials_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "serials.json").write_text("{not json")
    assert load_served(str(tmp_path)) == {}
    (tmp_path / "serials.json").write_text('{"a.example.": ["d", "x"]}')
    assert load_served(str(tmp_path)) == {}


def test_a_zone_set_starts_from_the_remembered_serial(tmp_path: Path) -> None:
    (tmp_path / "s.example.yaml").write_text("nameservers:\n  ns1.s.example.: [192.0.2.53]\n")
    plain = load_zoneset(str(tmp_path)).zoneset.zones["s.example."]
    remembered = {"s.example.": ("another digest", plain.serial + 100)}
    moved = load_zoneset(str(tmp_path), served=remembered).zoneset.zones["s.example."]
    assert moved.serial == plain.serial + 101
    assert moved.nodes["s.example."].rrsets["SOA"] is moved.soa  # the apex answers the same SOA
