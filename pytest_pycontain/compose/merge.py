"""Compose's override rules for several files (``-f a.yaml -f b.yaml``), on the plain tree.

Mappings merge key by key; scalars and ``command``/``entrypoint``/``healthcheck.test`` are
replaced; ``environment``-like lists merge by name, ``volumes`` by target, ``networks`` and
``depends_on`` by key; other lists are appended without repeating an item.
"""

from __future__ import annotations

from typing import Any

from .source import Mark, PathKey

_REPLACED = {("command",), ("entrypoint",), ("healthcheck", "test")}
_BY_NAME = {("environment",), ("labels",), ("annotations",), ("sysctls",), ("extra_hosts",),
            ("build", "args"), ("build", "labels")}
_BY_KEY = {("depends_on",), ("networks",)}


def key_value_map(value: Any, separator: str = "=") -> Any:
    """``["A=1", "B"]`` as ``{"A": "1", "B": None}``; a mapping stays as it is."""
    if not isinstance(value, list):
        return value
    result: dict[str, Any] = {}
    for item in value:
        if not isinstance(item, str):
            return value  # the validator reports the bad item with its line
        k, sep, v = item.partition(separator)
        if not sep and separator == "=" and ":" in item:
            k, sep, v = item.partition(":")  # extra_hosts also take host:ip
        result[k] = v if sep else None
    return result


def names_map(value: Any) -> Any:
    """``[a, b]`` as ``{"a": None, "b": None}`` (depends_on and networks short forms)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return dict.fromkeys(value)
    return value


def merge_files(base: dict[str, Any], over: dict[str, Any], base_marks: dict[PathKey, Mark],
                over_marks: dict[PathKey, Mark]) -> tuple[dict[str, Any], dict[PathKey, Mark]]:
    """``over`` applied to ``base``; the marks follow the values that won."""
    shifts: dict[PathKey, int] = {}
    merged = _merge(base, over, (), shifts)
    marks = dict(base_marks)
    for path, mark in over_marks.items():
        moved = list(path)
        for i in range(len(moved) - 1):
            offset = shifts.get(tuple(path[:i + 1]))
            if offset and isinstance(moved[i + 1], int):
                moved[i + 1] += offset
        marks[tuple(moved)] = mark
    return merged, marks


def _merge(base: Any, over: Any, path: PathKey, shifts: dict[PathKey, int]) -> Any:
    rel = path[2:] if len(path) > 2 and path[0] == "services" else None
    if rel is not None and rel in _REPLACED:
        return over
    if rel is not None and rel in _BY_NAME:
        base, over = key_value_map(base), key_value_map(over)
    if rel is not None and rel in _BY_KEY:
        base, over = names_map(base), names_map(over)
    if isinstance(base, dict) and isinstance(over, dict):
        result = dict(base)
        for k, v in over.items():
            result[k] = _merge(base[k], v, (*path, k), shifts) if k in base else v
        return result
    if isinstance(base, list) and isinstance(over, list):
        if rel == ("volumes",):
            return _merge_volumes(base, over)
        shifts[path] = len(base)
        return base + [item for item in over if not _is_scalar(item) or item not in base]
    return over


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _merge_volumes(base: list[Any], over: list[Any]) -> list[Any]:
    by_target: dict[Any, Any] = {}
    for item in base + over:
        by_target[_volume_target(item)] = item
    return list(by_target.values())


def _volume_target(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("target")
    if isinstance(item, str):
        parts = item.split(":")
        return parts[1] if len(parts) > 1 else parts[0]
    return repr(item)
