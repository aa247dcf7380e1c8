"""README.md stays true: every YAML zone it shows passes `geolb check`'s parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from geolb.config.zonefile import read_zone_file
from geolb.dnssec.keys import generate

README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)
HEREDOC_ZONES = re.findall(r"cat > zones/(\S+\.yaml) <<'EOF2'\n(.*?)EOF2", README, re.S)


def test_readme_has_zone_examples() -> None:
    assert len(YAML_BLOCKS) >= 2
    assert HEREDOC_ZONES


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[f"yaml-{i}" for i in range(len(YAML_BLOCKS))])
def test_yaml_blocks_are_valid_zones(tmp_path: Path, block: str) -> None:
    match = re.search(r"^zone: (\S+)", block, re.M)
    name = match.group(1) if match else re.search(r"ns1\.([a-z.]+?)\.:", block).group(1)  # type: ignore[union-attr]
    path = tmp_path / f"{name}.yaml"
    path.write_text(block)
    if re.search(r"^dnssec:", block, re.M):
        generate(str(tmp_path / "keys"), name.rstrip(".") + ".", "ECDSAP256SHA256")  # as `geolb dnssec keygen` would
    result = read_zone_file(str(path))
    assert result.errors == [], [str(e) for e in result.errors]


@pytest.mark.parametrize(("name", "text"), HEREDOC_ZONES)
def test_walkthrough_zone_is_valid(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert read_zone_file(str(path)).errors == []
