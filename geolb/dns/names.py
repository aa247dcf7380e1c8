"""Domain names as geolb keeps them: lower-case, absolute, dot-terminated text."""

from __future__ import annotations

import re

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$|^[a-z0-9_]$")


def absolute(name: str, origin: str) -> str:
    """`name` as written in a zone file (relative unless it ends with a dot; `@` is the origin)."""
    name = name.strip().lower()
    if name == "@":
        return origin
    if name.endswith("."):
        return name
    return f"{name}." if origin == "." else f"{name}.{origin}"


def is_at_or_below(name: str, apex: str) -> bool:
    return name == apex or name.endswith("." + apex)


def parent(name: str) -> str:
    """The name one label up; the root stays the root."""
    dot = name.find(".")
    rest = name[dot + 1 :]
    return rest or "."


def check_name(name: str, *, wildcard_ok: bool = False) -> str | None:
    """Why `name` (absolute) is not a valid host name, or None when it is."""
    if len(name) > 254:
        return f"name '{name}' is longer than 253 characters"
    labels = name[:-1].split(".") if name != "." else []
    for i, label in enumerate(labels):
        if label == "*" and wildcard_ok and i == 0:
            continue
        if label == "*":
            return f"'*' is only allowed as the leftmost label in '{name}'"
        if not label:
            return f"empty label in '{name}'"
        if len(label) > 63:
            return f"label '{label}' in '{name}' is longer than 63 characters"
        if not _LABEL.match(label):
            return f"label '{label}' in '{name}' has characters other than letters, digits, '-' and '_'"
    return None


def labels_to_key(labels: tuple[bytes, ...] | list[bytes]) -> str:
    """A question's wire labels as a lookup key; dots and backslashes inside a label are escaped."""
    parts = []
    for label in labels:
        text = label.lower().decode("latin-1")
        if "." in text or "\\" in text:
            text = text.replace("\\", "\\092").replace(".", "\\046")
        parts.append(text)
    return ".".join(parts) + "." if parts else "."


def key_to_labels(name: str) -> tuple[bytes, ...]:
    """A lookup key back to wire labels (the inverse of `labels_to_key`, case aside)."""
    if name == ".":
        return ()
    out = []
    for text in name[:-1].split("."):
        if "\\" in text:
            text = text.replace("\\046", ".").replace("\\092", "\\")
        out.append(text.encode("latin-1"))
    return tuple(out)
