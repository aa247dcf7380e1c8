"""The zones directory as a whole: which version of each file serves after errors, look-alike files, country codes."""

from __future__ import annotations

from pathlib import Path

from geolb.config.codes import CONFUSED_COUNTRIES, countries
from geolb.config.zoneset import list_zones_dir, load_zoneset

NS = "nameservers: {ns1.example.net.: []}\nhealth: {type: none}\n"
POOL_P = "pools: {p: {regions: {r: {endpoints: [192.0.2.1]}}}}\n"
USES_P = "records: {www: [{type: GEO, pool: p}]}\n"


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)


def test_the_country_table_holds_every_assigned_code() -> None:
    codes = countries()
    assert len(codes) == 250 and "XK" in codes  # the 249 ISO 3166-1 assigned codes, and Kosovo as GeoIP has it
    assert {"GB", "GR", "US", "NO", "AQ", "CW", "SS", "BQ"} <= codes
    assert not codes & set(CONFUSED_COUNTRIES)
    assert "ZZ" not in codes and "UK" not in codes


def test_going_back_repeats_until_the_set_agrees(tmp_path: Path) -> None:
    # a.example served pool p; its new version is broken. c.example, new, defines p too:
    # a.example's last good version comes back with p, so c.example cannot go live.
    write(tmp_path, "a.example.yaml", NS + POOL_P)
    write(tmp_path, "b.example.yaml", NS + USES_P)
    first = load_zoneset(str(tmp_path))
    assert first.ok, first.errors
    write(tmp_path, "a.example.yaml", NS + "bogus: 1\n")
    write(tmp_path, "c.example.yaml", NS + POOL_P)
    second = load_zoneset(str(tmp_path), previous=first.zoneset)
    assert [e.message for e in second.errors] == [
        "unknown key 'bogus' in the zone file (expected one of: zone, ttl, soa, nameservers, health, networks, pools, records, "
        "dnssec, rum_name)"
    ]
    assert sorted(second.zoneset.zones) == ["a.example.", "b.example."]
    assert second.zoneset.zones["a.example."] is first.zoneset.zones["a.example."]
    notes = [str(w) for w in second.warnings]
    assert (
        f"{tmp_path / 'c.example.yaml'}: warning: zone c.example. is not served: it conflicts with what other files keep serving" in notes
    )
    # The same files through `check` (no previous): the same errors, and nothing about what was kept.
    assert [str(e) for e in load_zoneset(str(tmp_path)).errors] == [str(e) for e in second.errors]
    assert not load_zoneset(str(tmp_path)).warnings


def test_a_deleted_file_whose_pool_is_in_use_keeps_serving(tmp_path: Path) -> None:
    write(tmp_path, "a.example.yaml", NS + POOL_P)
    write(tmp_path, "b.example.yaml", NS + USES_P)
    first = load_zoneset(str(tmp_path))
    (tmp_path / "a.example.yaml").unlink()
    second = load_zoneset(str(tmp_path), previous=first.zoneset)
    assert [e.message for e in second.errors] == ["GEO record names pool 'p', which no zone file defines"]
    assert second.zoneset is first.zoneset  # nothing changed: the same object
    assert any(
        "zone a.example. keeps serving its last good version" in str(w) and "other zones still use its pools" in str(w)
        for w in second.warnings
    )


def test_a_deleted_file_takes_its_zone_down(tmp_path: Path) -> None:
    write(tmp_path, "a.example.yaml", NS)
    write(tmp_path, "b.example.yaml", NS)
    first = load_zoneset(str(tmp_path))
    (tmp_path / "a.example.yaml").unlink()
    second = load_zoneset(str(tmp_path), previous=first.zoneset)
    assert second.ok and sorted(second.zoneset.zones) == ["b.example."]


def test_look_alikes_are_listed_with_the_file_they_stand_for(tmp_path: Path) -> None:
    for name in ("a.example.yaml", "b.example.yml", "c.example.yaml~", ".a.example.yaml.swp", "notes.txt", "d.example"):
        write(tmp_path, name, NS if name != "notes.txt" else "hello\n")
    (tmp_path / "keys").mkdir()
    listing = list_zones_dir(str(tmp_path))
    assert listing.zone_files == [str(tmp_path / "a.example.yaml")]
    assert {(Path(i.path).name, Path(i.stands_for).name) for i in listing.ignored} == {
        ("b.example.yml", "b.example.yaml"),
        ("c.example.yaml~", "c.example.yaml"),
        ("d.example", "d.example.yaml"),
    }


def test_a_renamed_file_that_clashes_with_a_newcomer_keeps_its_zone(tmp_path: Path) -> None:
    # z.example served from a.yaml with pool p; in one reload a.yaml becomes b.yaml (same zone) and a new
    # file defines p too: the clash involves both, and z.example goes back to its last good version.
    write(tmp_path, "a.yaml", "zone: z.example\n" + NS + POOL_P)
    first = load_zoneset(str(tmp_path))
    assert first.ok, first.errors
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    write(tmp_path, "c.example.yaml", NS + POOL_P)
    second = load_zoneset(str(tmp_path), previous=first.zoneset)
    assert second.errors
    assert sorted(second.zoneset.zones) == ["z.example."]
    assert second.zoneset.zones["z.example."] is first.zoneset.zones["z.example."]
