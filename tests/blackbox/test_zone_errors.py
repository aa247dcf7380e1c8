"""SPEC §7: an operator's slip in one file never takes a zone off the air, and `geolb check` says what a reload would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import DATA, ROOT, RunningServer, geolb_command, running, wait_until
from tests.zoneedits import SETS, answers, check_errors, post_reload, status, write

MULTI = SETS["multi-zones"]
GEOIP = DATA / "GeoIP2-City-Test.mmdb"


def check(zones: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(geolb_command("check", "--zones", str(zones)), capture_output=True, text=True, timeout=60, cwd=ROOT)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    write(path, text.replace(old, new, 1))


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    return MULTI.copy(tmp_path)


@pytest.fixture
def server(zones: Path) -> Iterator[RunningServer]:
    with running(zones, "--watch-interval", "0", geoip=GEOIP) as server:
        yield server


def assert_reload_keeps_everything(server: RunningServer, zones: Path, before: object) -> list[str]:
    """The reload fails with the errors `check` finds, and every name answers as before; returns the errors."""
    code, body = post_reload(server)
    assert code == 422, body
    assert sorted(body["errors"]) == check_errors(zones)
    assert answers(server, MULTI.probes) == before
    assert sorted(status(server)["reload"]["errors"]) == sorted(body["errors"])
    return list(body["errors"])


def test_a_typo_in_a_pool_name_keeps_every_zone_serving(zones: Path) -> None:
    # The watcher's reload, as an operator's save would trigger it.
    with running(zones, "--watch-interval", "0.1", geoip=GEOIP) as server:
        before = answers(server, MULTI.probes)
        shop = zones / "shop.example.org.yaml"
        edit(shop, "{type: GEO, pool: web}", "{type: GEO, pool: webb}")
        wait_until(lambda: not status(server)["reload"]["ok"], 10, "the watcher's reload")
        assert answers(server, MULTI.probes) == before
        report = status(server)
        assert [z["name"] for z in report["zones"]] == ["example.net.", "example.org.", "shop.example.org."]
        line = line_of(shop, "pool: webb")
        expected = f"{shop}:{line}: GEO record names pool 'webb', which no zone file defines (did you mean 'web'?)"
        assert report["reload"]["errors"] == [expected]
        assert f"{shop}:{line}: GEO record names pool 'webb'" in server.stderr()
        # A valid edit then goes live.
        edit(shop, "pool: webb}", "pool: shop}")
        wait_until(lambda: status(server)["reload"]["ok"], 10, "the fixed file's reload")
        now = answers(server, MULTI.probes)[("www.shop.example.org", "A", None)]
        assert [r.split()[-1] for r in now[1]] == ["192.0.2.30", "192.0.2.31"]  # the shop pool now


def test_a_pool_renamed_in_one_file_keeps_both_zones(server: RunningServer, zones: Path) -> None:
    before = answers(server, MULTI.probes)
    parent, shop = zones / "example.org.yaml", zones / "shop.example.org.yaml"
    edit(parent, "  web:\n", "  web2:\n")
    edit(parent, "pool: web,", "pool: web2,")  # the parent alone is valid; its child still names `web`
    errors = assert_reload_keeps_everything(server, zones, before)
    line = line_of(shop, "pool: web}")
    assert errors == [f"{shop}:{line}: GEO record names pool 'web', which no zone file defines (did you mean 'web2'?)"]
    _, body = post_reload(server)
    assert any(w.startswith(f"{parent}: warning: zone example.org. keeps serving its last good version") for w in body["warnings"])
    edit(shop, "pool: web}", "pool: web2}")
    code, body = post_reload(server)
    assert code == 200, body
    after = answers(server, MULTI.probes)
    assert {k: v for k, v in after.items() if k[1] != "SOA"} == {k: v for k, v in before.items() if k[1] != "SOA"}  # the same pool, renamed


def test_a_pool_removed_from_one_file_keeps_the_zone_that_uses_it(server: RunningServer, zones: Path) -> None:
    before = answers(server, MULTI.probes)
    shop, net = zones / "shop.example.org.yaml", zones / "example.net.yaml"
    text = shop.read_text()
    start, end = text.index("pools:\n"), text.index("records:\n")
    write(shop, text[:start] + text[end:].replace('  "@":\n    - {type: GEO, pool: shop}\n', ""))
    errors = assert_reload_keeps_everything(server, zones, before)
    assert errors == [f"{net}:{line_of(net, 'pool: shop')}: GEO record names pool 'shop', which no zone file defines"]


def test_a_second_file_declaring_a_zone_does_not_take_it_over(server: RunningServer, zones: Path) -> None:
    before = answers(server, MULTI.probes)
    parent, backup = zones / "example.org.yaml", zones / "a-copy.yaml"
    write(backup, parent.read_text().replace('value: "parent"', 'value: "the copy"'))
    errors = assert_reload_keeps_everything(server, zones, before)
    assert f"{backup}:2: zone example.org. is also declared at {parent}:2 (a zone is declared by one file only)" in errors
    assert f"{parent}:2: zone example.org. is also declared at {backup}:2 (a zone is declared by one file only)" in errors
    assert any(e.startswith(f"{backup}:11: pool 'web' is also defined at {parent}:11") for e in errors), errors
    result = check(zones)
    assert result.returncode == 1
    assert sorted(line for line in result.stdout.splitlines() if ": warning: " not in line) == sorted(errors)


def test_a_pool_name_clash_across_files_keeps_both(server: RunningServer, zones: Path) -> None:
    before = answers(server, MULTI.probes)
    net, shop = zones / "example.net.yaml", zones / "shop.example.org.yaml"
    edit(net, "records:\n", "pools:\n  shop:\n    regions:\n      here: {endpoints: [192.0.2.99]}\nrecords:\n")
    errors = assert_reload_keeps_everything(server, zones, before)
    assert sorted(errors) == sorted(
        [
            f"{net}:10: pool 'shop' is also defined at {shop}:10 (pool names are unique across the zones directory)",
            f"{shop}:10: pool 'shop' is also defined at {net}:10 (pool names are unique across the zones directory)",
        ]
    )


def test_a_bad_country_code_keeps_the_zone(server: RunningServer, zones: Path) -> None:
    before = answers(server, MULTI.probes)
    parent = zones / "example.org.yaml"
    shop = zones / "shop.example.org.yaml"
    edit(parent, "countries: [IE, GB]", "countries: [IE, UK]")
    errors = assert_reload_keeps_everything(server, zones, before)
    assert errors == [
        f"{parent}:{line_of(parent, 'UK')}: countries: 'UK' is not an ISO 3166-1 country code: "
        "use GB (the United Kingdom is GB in ISO 3166-1)",
        f"{shop}:{line_of(shop, 'pool: web}')}: GEO record names pool 'web', whose zone file has errors ({parent})",
    ]


def test_a_file_renamed_to_yml_keeps_serving_until_it_is_removed(server: RunningServer, zones: Path) -> None:
    before = answers(server, MULTI.probes)
    net = zones / "example.net.yaml"
    net.rename(zones / "example.net.yml")
    code, body = post_reload(server)
    assert code == 200, body
    assert f"{zones / 'example.net.yml'}: warning: ignored: zone files are named *.yaml, not *.yml" in body["warnings"]
    assert any(w.startswith(f"{net}: warning: zone example.net. keeps serving its last good version") for w in body["warnings"])
    assert answers(server, MULTI.probes) == before
    (zones / "example.net.yml").unlink()  # removing it is what takes a zone down
    assert post_reload(server)[0] == 200
    assert server.query("example.net", "SOA").rcode() == 5  # REFUSED: not ours any more


def test_look_alike_files_are_warnings_from_check_and_serve(zones: Path) -> None:
    names = ["backup.yml", "old.yaml~", "LOUD.YAML", "example.org.yaml.bak", "example.net"]
    for name in names:
        write(zones / name, (zones / "example.net.yaml").read_text())
    write(zones / "notes.txt", "nothing to see\n")
    result = check(zones)
    assert result.returncode == 0, result.stdout + result.stderr
    warned = [line for line in result.stdout.splitlines() if ": warning: ignored: " in line]
    assert sorted(warned) == sorted(
        [
            f"{zones / 'backup.yml'}: warning: ignored: zone files are named *.yaml, not *.yml",
            f"{zones / 'old.yaml~'}: warning: ignored: only files named *.yaml are zone files "
            "('~' after the extension: a backup or a copy?)",
            f"{zones / 'LOUD.YAML'}: warning: ignored: zone files are named *.yaml, in lower case",
            f"{zones / 'example.org.yaml.bak'}: warning: ignored: only files named *.yaml are zone files "
            "('.bak' after the extension: a backup or a copy?)",
            f"{zones / 'example.net'}: warning: ignored: it holds zone keys, but only files named *.yaml are zone files",
        ]
    )
    with running(zones, "--watch-interval", "0") as server:
        for line in warned:
            assert line in server.stderr()
        assert server.query("example.net", "SOA").rcode() == 0


def test_an_empty_zones_directory_is_a_warning(tmp_path: Path) -> None:
    empty = tmp_path / "zones"
    empty.mkdir()
    result = check(empty)
    assert result.returncode == 0, result.stdout + result.stderr
    warning = f"{empty}: warning: no zone files (*.yaml) in the zones directory"
    assert result.stdout.splitlines() == [warning]
    with running(empty, "--watch-interval", "0") as server:
        assert warning in server.stderr()


def pool_of(regions: int) -> str:
    lines = ["nameservers: {ns1.big.example.: [192.0.2.53]}", "health: {type: none}", "pools:", "  big:", "    regions:"]
    lines += [f"      r{n}: {{location: [{n % 180 - 89}, {n % 360 - 179}], endpoints: [192.0.2.1]}}" for n in range(regions)]
    return "\n".join(lines) + "\n"


def test_a_pool_has_at_most_a_thousand_regions(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones / "big.example.yaml", pool_of(1000))
    assert check(zones).returncode == 0
    write(zones / "big.example.yaml", pool_of(1001))
    result = check(zones)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{zones / 'big.example.yaml'}:4: pool big has 1001 regions; a pool has at most 1000"]


def test_country_and_continent_codes_from_check(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    text = pool_of(1).replace("endpoints:", "countries: [UK, ZZ, el, us], continents: [EU, XX], endpoints:")
    write(zones / "big.example.yaml", text)
    result = check(zones)
    assert result.returncode == 1
    path = zones / "big.example.yaml"
    assert result.stdout.splitlines() == [
        f"{path}:6: countries: 'UK' is not an ISO 3166-1 country code: use GB (the United Kingdom is GB in ISO 3166-1)",
        f"{path}:6: countries: 'ZZ' is not an ISO 3166-1 alpha-2 country code (such as US, GB or NO)",
        f"{path}:6: countries: 'el' is not an ISO 3166-1 country code: use GR (EL is the EU's code for Greece; ISO 3166-1 has GR)",
        f"{path}:6: continents: 'XX' is not a continent code (AF, AN, AS, EU, NA, OC, SA)",
    ]
