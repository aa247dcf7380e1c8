"""Operator-like slips in a zones directory, seeded: typos, moved and removed pools, copies, truncations, renames.

Each mutation edits the files of a directory in place and says what it did; `Snapshot`
puts the directory back. Shared by tests/blackbox/test_zone_mutations.py and
bench/zone_mutations.py.
"""

from __future__ import annotations

import os
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w-]*)(:)", re.MULTILINE)
POOL_REF = re.compile(r"pool: *([\w-]+)")
CODES = re.compile(r"(countries|continents): *\[([^\]]*)\]")
IPV4 = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
IPV6 = re.compile(r"2001:db8[0-9a-f:]*")
SECTION = re.compile(r"^(\w+):", re.MULTILINE)
CONFUSIONS = ["UK", "EL", "ZZ", "XX", "EU", "U", "USA", "gb", "us", "Gb"]
CONTINENT_SLIPS = ["EUR", "NA ", "US", "SA", "XX", "eu", "OC", "AM", "E U"]


@dataclass(frozen=True)
class Mutation:
    kind: str
    detail: str


class Snapshot:
    """The files of a zones directory as they were, to put back (only what changed, so unchanged files keep their times)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}

    def changed(self) -> list[str]:
        """The names of the files that differ from the snapshot (edited, added or gone)."""
        now = {path.name: path.read_bytes() for path in self.directory.iterdir() if path.is_file()}
        return sorted(name for name in now.keys() | self.files.keys() if now.get(name) != self.files.get(name))

    def restore(self) -> None:
        for path in self.directory.iterdir():
            if path.is_file() and path.name not in self.files:
                path.unlink()
        for name, data in self.files.items():
            path = self.directory / name
            if not path.exists() or path.read_bytes() != data:
                write_bytes(path, data)


def write_bytes(path: Path, data: bytes) -> None:
    """Write and move the mtime forward, so a derived serial changes even within one second."""
    path.write_bytes(data)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def zone_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.endswith(".yaml"))


def typo(rng: random.Random, word: str) -> str:
    """One keyboard slip: a letter dropped, doubled, swapped or replaced; never the word itself."""
    for _ in range(10):
        i = rng.randrange(len(word))
        how = rng.randrange(4)
        if how == 0 and len(word) > 1:
            new = word[:i] + word[i + 1 :]
        elif how == 1:
            new = word[:i] + word[i] + word[i:]
        elif how == 2 and i + 1 < len(word):
            new = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        else:
            new = word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1 :]
        if new != word and new:
            return new
    return word + "x"


def replace_span(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def section_span(text: str, name: str) -> tuple[int, int] | None:
    """Where a top-level section's body is: from after its key line to the next top-level key."""
    match = re.search(rf"^{name}:[^\n]*\n", text, re.MULTILINE)
    if match is None:
        return None
    following = SECTION.search(text, match.end())
    return match.end(), following.start() if following else len(text)


def blocks(text: str, span: tuple[int, int], indent: int) -> list[tuple[str, int, int]]:
    """The entries of a block mapping at `indent` within a span: (key, start, end)."""
    body = text[span[0] : span[1]]
    found = [(m.group(1), span[0] + m.start()) for m in re.finditer(rf"^ {{{indent}}}([^\s#:][^:\n]*):", body, re.MULTILINE)]
    return [(key, start, found[n + 1][1] if n + 1 < len(found) else span[1]) for n, (key, start) in enumerate(found)]


def pools_of(text: str) -> list[tuple[str, int, int]]:
    span = section_span(text, "pools")
    return blocks(text, span, 2) if span else []


def pick_file(rng: random.Random, directory: Path, want: Callable[[str], bool] = lambda _t: True) -> tuple[Path, str] | None:
    candidates = [(path, path.read_text()) for path in zone_files(directory)]
    candidates = [(path, text) for path, text in candidates if want(text)]
    return rng.choice(candidates) if candidates else None


# --- the mutations: each returns None when the directory offers it nothing to work on ---


def key_typo(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory, lambda t: KEY_LINE.search(t) is not None)
    if picked is None:
        return None
    path, text = picked
    match = rng.choice(list(KEY_LINE.finditer(text)))
    new = typo(rng, match.group(2))
    write_text(path, replace_span(text, match.start(2), match.end(2), new))
    return f"{path.name}: key {match.group(2)!r} -> {new!r}"


def pool_ref_typo(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory, lambda t: POOL_REF.search(t) is not None)
    if picked is None:
        return None
    path, text = picked
    match = rng.choice(list(POOL_REF.finditer(text)))
    new = typo(rng, match.group(1))
    write_text(path, replace_span(text, match.start(1), match.end(1), new))
    return f"{path.name}: pool: {match.group(1)} -> {new}"


def code_typo(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory, lambda t: CODES.search(t) is not None)
    if picked is None:
        return None
    path, text = picked
    match = rng.choice(list(CODES.finditer(text)))
    codes = [c.strip() for c in match.group(2).split(",")]
    i = rng.randrange(len(codes))
    slips = CONFUSIONS if match.group(1) == "countries" else CONTINENT_SLIPS
    codes[i] = rng.choice([*slips, typo(rng, codes[i])])
    write_text(path, replace_span(text, match.start(2), match.end(2), ", ".join(codes)))
    return f"{path.name}: {match.group(1)} -> [{', '.join(codes)}]"


def address_typo(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory, lambda t: IPV4.search(t) is not None or IPV6.search(t) is not None)
    if picked is None:
        return None
    path, text = picked
    matches = list(IPV4.finditer(text)) + list(IPV6.finditer(text))
    match = rng.choice(matches)
    old = match.group()
    if "." in old:
        octets = old.split(".")
        how = rng.randrange(3)
        if how == 0:
            octets[rng.randrange(4)] = str(rng.randrange(256, 1000))
        elif how == 1:
            del octets[rng.randrange(4)]
        else:
            octets.append(str(rng.randrange(256)))
        new = ".".join(octets)
    else:
        new = rng.choice([old.replace("db8", "dg8", 1), old + ":::1", old.replace(":", ";", 1)])
    write_text(path, replace_span(text, match.start(), match.end(), new))
    return f"{path.name}: address {old} -> {new}"


def pool_rename(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory, lambda t: bool(pools_of(t)))
    if picked is None:
        return None
    path, text = picked
    name, start, _end = rng.choice(pools_of(text))
    new = rng.choice([typo(rng, name), name + "2", "new-" + name])
    write_text(path, replace_span(text, start + 2, start + 2 + len(name), new))
    return f"{path.name}: pool {name} renamed {new} (its users not told)"


def pool_remove(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory, lambda t: bool(pools_of(t)))
    if picked is None:
        return None
    path, text = picked
    name, start, end = rng.choice(pools_of(text))
    write_text(path, text[:start] + text[end:])
    return f"{path.name}: pool {name} removed"


def record_move(rng: random.Random, directory: Path) -> str | None:
    files = zone_files(directory)
    texts = [(p, p.read_text()) for p in files]
    sources = [(p, t, span) for p, t in texts if (span := section_span(t, "records")) is not None and blocks(t, span, 2)]
    if not sources or len(files) < 2:
        return None
    path, text, span = rng.choice(sources)
    owner, start, end = rng.choice(blocks(text, span, 2))
    target = rng.choice([p for p in files if p != path])
    moved = text[start:end]
    write_text(path, text[:start] + text[end:])
    target_text = target.read_text()
    target_span = section_span(target_text, "records")
    if target_span is None:
        target_text = target_text.rstrip("\n") + "\nrecords:\n" + moved
    else:
        target_text = target_text[: target_span[1]] + moved + target_text[target_span[1] :]
    write_text(target, target_text)
    return f"{path.name}: records of {owner.strip()} moved to {target.name}"


def duplicate_zone(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory)
    if picked is None:
        return None
    path, text = picked
    if not re.search(r"^zone:", text, re.MULTILINE):
        text = f"zone: {path.name[: -len('.yaml')]}\n" + text
    copy = directory / rng.choice(["a-copy.yaml", f"{path.name[: -len('.yaml')]}-old.yaml", "zz-backup.yaml"])
    write_text(copy, text)
    return f"{path.name} copied to {copy.name}"


def truncate(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory)
    if picked is None:
        return None
    path, text = picked
    data = text.encode()
    cut = rng.randrange(len(data))
    write_bytes(path, data[:cut])
    return f"{path.name}: truncated to {cut} of {len(data)} bytes"


def empty(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory)
    if picked is None:
        return None
    write_bytes(picked[0], b"")
    return f"{picked[0].name}: emptied"


def rename_ext(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory)
    if picked is None:
        return None
    path = picked[0]
    new = path.with_name(path.name[: -len(".yaml")] + rng.choice([".yml", ".yaml~", ".YAML", ".yaml.bak"]))
    path.rename(new)
    return f"{path.name} renamed {new.name}"


def yaml_break(rng: random.Random, directory: Path) -> str | None:
    picked = pick_file(rng, directory, lambda t: "\n" in t)
    if picked is None:
        return None
    path, text = picked
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    how = rng.randrange(5)
    if how == 0:
        lines[i] = "\t" + lines[i]
    elif how == 1:
        lines[i] = lines[i] + " ["
    elif how == 2:
        lines[i] = lines[i].replace(":", "", 1)
    elif how == 3:
        lines[i] = lines[i][1:] if lines[i].startswith(" ") else " " + lines[i]
    else:
        lines[i] = lines[i] + ' "'
    write_text(path, "\n".join(lines))
    return f"{path.name}:{i + 1}: YAML broken ({['tab', 'open bracket', 'colon dropped', 'indent', 'open quote'][how]})"


def pool_grow(rng: random.Random, directory: Path) -> str | None:
    def growable(text: str) -> list[tuple[str, int, int]]:
        return [p for p in pools_of(text) if re.search(r"^    regions:\s*$", text[p[1] : p[2]], re.MULTILINE)]

    picked = pick_file(rng, directory, lambda t: bool(growable(t)))
    if picked is None:
        return None
    path, text = picked
    name, start, end = rng.choice(growable(text))
    regions = re.search(r"^    regions:\s*\n", text[start:end], re.MULTILINE)
    assert regions is not None
    at = start + regions.end()
    extra = "".join(f"      grown{n}: {{location: [{n % 170 - 85}, {n % 350 - 175}], endpoints: [192.0.2.1]}}\n" for n in range(1001))
    write_text(path, text[:at] + extra + text[at:])
    return f"{path.name}: pool {name} grown by 1001 regions"


MUTATIONS: dict[str, tuple[Callable[[random.Random, Path], str | None], int]] = {
    # kind: (mutation, weight): pool_grow is rarer, as each costs a thousand regions to read
    "key_typo": (key_typo, 10),
    "pool_ref_typo": (pool_ref_typo, 8),
    "code_typo": (code_typo, 8),
    "address_typo": (address_typo, 8),
    "pool_rename": (pool_rename, 6),
    "pool_remove": (pool_remove, 6),
    "record_move": (record_move, 6),
    "duplicate_zone": (duplicate_zone, 5),
    "truncate": (truncate, 6),
    "empty": (empty, 3),
    "rename_ext": (rename_ext, 4),
    "yaml_break": (yaml_break, 8),
    "pool_grow": (pool_grow, 1),
}


def mutate(rng: random.Random, directory: Path) -> Mutation:
    """Apply one mutation, chosen by weight among those the directory offers."""
    kinds = list(MUTATIONS)
    weights = [MUTATIONS[k][1] for k in kinds]
    while True:
        kind = rng.choices(kinds, weights)[0]
        detail = MUTATIONS[kind][0](rng, directory)
        if detail is not None:
            return Mutation(kind, detail)
