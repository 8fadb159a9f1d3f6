"""Reading one Compose file: YAML (anchors, aliases, merge keys) into plain data, with the
file:line of every key and list item kept beside it, so a later error can point at the line.

The data stays plain (dicts, lists, scalars) because interpolation and the override rules work
on the tree as compose does; the marks travel in a side table keyed by the path from the root.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import ConfigError

PathKey = tuple[Any, ...]  # ("services", "web", "ports", 0)


@dataclasses.dataclass(frozen=True)
class Mark:
    """Where a value came from."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ComposeFileError(ConfigError):
    """A Compose file that compose itself would reject; names file:line and what is wrong."""

    def __init__(self, message: str, mark: Mark | None = None):
        self.mark = mark
        self.reason = message
        super().__init__(f"{mark}: {message}" if mark else message)


@dataclasses.dataclass
class Source:
    """A parsed file: its data and where each path in it was written."""

    path: Path
    data: dict[str, Any]
    marks: dict[PathKey, Mark]

    def mark(self, key: PathKey) -> Mark:
        return nearest(self.marks, key, Mark(str(self.path), 1))


def nearest(marks: dict[PathKey, Mark], key: PathKey, default: Mark) -> Mark:
    """The mark of ``key``, else of its closest ancestor that has one."""
    for end in range(len(key), 0, -1):
        found = marks.get(tuple(key[:end]))
        if found is not None:
            return found
    return default


def read(path: Path) -> Source:
    """Parse ``path``; a YAML error or a file that is not a mapping is a ComposeFileError."""
    import yaml  # lazily: only Compose users pay for it

    try:
        text = path.read_text()
    except OSError as exc:
        raise ComposeFileError(f"cannot read compose file {path}: {exc.strerror or exc}") from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        marks: dict[PathKey, Mark] = {}
        data = None if node is None else _walk(loader, node, (), marks, str(path))
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        mark = Mark(str(path), where.line + 1) if where else Mark(str(path), 1)
        raise ComposeFileError(f"invalid YAML: {exc.problem or exc.context}", mark) from exc
    except yaml.YAMLError as exc:
        raise ComposeFileError(f"invalid YAML: {exc}", Mark(str(path), 1)) from exc
    finally:
        loader.dispose()
    if data is None or node is None:
        raise ComposeFileError("empty compose file", Mark(str(path), 1))
    if not isinstance(data, dict):
        raise ComposeFileError("a compose file must be a mapping at the top level",
                               Mark(str(path), node.start_mark.line + 1))
    return Source(path, data, marks)


def _walk(loader: Any, node: Any, key: PathKey, marks: dict[PathKey, Mark], file: str) -> Any:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for k_node, _ in node.value:
            if k_node.tag == "tag:yaml.org,2002:merge":
                continue
            k = loader.construct_object(k_node, deep=True)
            if k in seen:
                raise ComposeFileError(f"duplicate key {k!r} (first at line {seen[k]})",
                                       Mark(file, k_node.start_mark.line + 1))
            seen[k] = k_node.start_mark.line + 1
        loader.flatten_mapping(node)  # merge keys (<<) first, explicit keys after: they win
        result: dict[Any, Any] = {}
        for k_node, v_node in node.value:
            k = loader.construct_object(k_node, deep=True)
            if not isinstance(k, (str, int, float, bool)):
                raise ComposeFileError("a mapping key must be a scalar",
                                       Mark(file, k_node.start_mark.line + 1))
            k = str(k) if not isinstance(k, str) else k
            marks[(*key, k)] = Mark(file, k_node.start_mark.line + 1)
            result[k] = _walk(loader, v_node, (*key, k), marks, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            marks[(*key, index)] = Mark(file, item.start_mark.line + 1)
            items.append(_walk(loader, item, (*key, index), marks, file))
        return items
    return loader.construct_object(node, deep=True)
