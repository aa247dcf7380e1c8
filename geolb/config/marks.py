"""YAML nodes with their line numbers: compose a file and read its nodes without losing where."""

from __future__ import annotations

from collections.abc import Iterator

import yaml

from geolb.errors import ConfigError, Where

Node = yaml.Node
_constructor = yaml.constructor.SafeConstructor()


def compose_file(path: str, text: str) -> Node | None:
    """The YAML node tree of one document; a syntax error becomes a located ConfigError."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(Where(path, line), f"YAML syntax error: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(Where(path, 1), f"YAML error: {exc}") from exc


def where(path: str, node: Node) -> Where:
    """PyYAML counts lines from 0; people count from 1."""
    return Where(path, node.start_mark.line + 1)


def is_null(node: Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def scalar_value(node: Node) -> object:
    """A scalar as YAML types it (int, float, bool, None, str); collections come back as-is."""
    if isinstance(node, yaml.ScalarNode):
        value = _constructor.construct_object(node, deep=True)
        # construct_object memoizes every node it sees, and only construct_document (which we
        # do not use) clears that memo: without this, each reload would keep every node alive.
        _constructor.constructed_objects.pop(node, None)
        return value
    return node


def scalar_text(node: Node) -> str | None:
    """A scalar's text as written, so `NO` stays Norway and `1:2:3:4:5:6:7:8` stays an address."""
    if isinstance(node, yaml.ScalarNode) and not is_null(node):
        return str(node.value)
    return None


def mapping_items(node: yaml.MappingNode, path: str, problems: list[ConfigError]) -> Iterator[tuple[str, Node, Node]]:
    """(key text, key node, value node) for each entry; a repeated key is reported, not merged."""
    seen: dict[str, Where] = {}
    for key_node, value_node in node.value:
        key = scalar_text(key_node)
        if key is None:
            problems.append(ConfigError(where(path, key_node), "mapping keys must be plain strings"))
            continue
        if key in seen:
            problems.append(ConfigError(where(path, key_node), f"duplicate key '{key}' (first at line {seen[key].line})"))
            continue
        seen[key] = where(path, key_node)
        yield key, key_node, value_node
