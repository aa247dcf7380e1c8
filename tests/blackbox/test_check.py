"""`geolb check`: exit codes and FILE:LINE: message for every problem."""

from __future__ import annotations

import subprocess

from tests.serverproc import DATA, ROOT, geolb_command


def check(zones: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(geolb_command("check", "--zones", zones), capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_good_zones_pass() -> None:
    result = check(str(DATA / "zones"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "example.com.yaml: ok" in result.stdout


def test_demo_zones_pass() -> None:
    result = check("zones")
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_zone_prints_every_problem_with_file_and_line() -> None:
    result = check(str(DATA / "bad-zones"))
    assert result.returncode == 1
    path = DATA / "bad-zones" / "broken.example.yaml"
    lines = result.stdout.splitlines()
    assert f"{path}:7: '192.0.2.300' is not an IPv4 or IPv6 address" in lines
    assert f"{path}:11: CNAME at docs.broken.example. cannot have other data beside it (TXT)" in lines
    # The missing pool is a cross-file check: it runs even when the file has other errors.
    assert any(line.startswith(f"{path}:9: GEO record names pool 'missing'") for line in lines), lines
