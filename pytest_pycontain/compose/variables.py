"""Variables as compose sees them: the ``.env`` file, the lookup order, and interpolation of
``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``,
``${VAR:+alt}``, ``${VAR+alt}``, ``$VAR`` and ``$$`` in every string value of a file.

A ``.env``-only variable serves interpolation (and bare ``environment: [NAME]`` entries, as in
compose) but is never handed to a container by itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .source import ComposeFileError, Mark, PathKey

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file (``.env`` or an ``env_file:``): ``KEY=VALUE`` lines, ``export``
    prefixes, ``#`` comments, single quotes literal, double quotes with backslash escapes."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ComposeFileError(f"cannot read env file {path}: {exc.strerror or exc}") from exc
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _NAME.fullmatch(key):
            raise ComposeFileError(f"unexpected character in variable name {key!r}",
                                   Mark(str(path), number))
        if not sep:
            continue  # a bare name in an env file sets nothing
        values[key] = _env_value(value.strip(), Mark(str(path), number))
    return values


def _env_value(value: str, mark: Mark) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        while quote == '"' and end > 0 and value[end - 1] == "\\":
            end = value.find(quote, end + 1)
        if end < 0:
            raise ComposeFileError(f"unterminated quoted value {value!r}", mark)
        inner = value[1:end]
        if quote == "'":
            return inner
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), inner)
    comment = re.search(r"\s#", value)
    return value[:comment.start()].rstrip() if comment else value


class Variables:
    """The lookup: ``env=`` over the process environment over ``.env``."""

    def __init__(self, dotenv: Mapping[str, str], environ: Mapping[str, str],
                 given: Mapping[str, str]):
        self._layers = (dict(given), dict(environ), dict(dotenv))

    def get(self, name: str) -> str | None:
        for layer in self._layers:
            if name in layer:
                return layer[name]
        return None


def interpolate(data: Any, lookup: Callable[[str], str | None], marks: Callable[[PathKey], Mark],
                key: PathKey = ()) -> Any:
    """Every string value of ``data`` with its variables substituted (keys stay as written)."""
    if isinstance(data, dict):
        return {k: interpolate(v, lookup, marks, (*key, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, lookup, marks, (*key, i)) for i, v in enumerate(data)]
    if isinstance(data, str) and "$" in data:
        try:
            return substitute(data, lookup, lambda: marks(key))
        except ComposeFileError as exc:  # name the key too: a line may hold several values
            dotted = ".".join(str(k) for k in key)
            raise ComposeFileError(f"{dotted}: {exc.reason}", exc.mark) from None
    return data


def substitute(text: str, lookup: Callable[[str], str | None], where: Callable[[], Mark]) -> str:
    """One string, compose's way; an error names the file:line from ``where()``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        out.append(text[i:dollar])
        nxt = text[dollar + 1: dollar + 2]
        if nxt == "$":
            out.append("$")
            i = dollar + 2
        elif nxt == "{":
            end = _closing_brace(text, dollar + 2)
            if end < 0:
                raise ComposeFileError(f"invalid interpolation format in {text!r}: "
                                       "unclosed ${", where())
            out.append(_braced(text[dollar + 2:end], text, lookup, where))
            i = end + 1
        else:
            name = _NAME.match(text, dollar + 1)
            if name is None:
                raise ComposeFileError(f"invalid interpolation format in {text!r}: a $ must "
                                       "start a variable or be written $$", where())
            out.append(lookup(name.group()) or "")
            i = name.end()
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _braced(expr: str, text: str, lookup: Callable[[str], str | None],
            where: Callable[[], Mark]) -> str:
    name = _NAME.match(expr)
    if name is None:
        raise ComposeFileError(f"invalid interpolation format in {text!r}: "
                               f"${{{expr}}} does not start with a variable name", where())
    var, rest = name.group(), expr[name.end():]
    if not rest:
        return lookup(var) or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op):]
            break
    else:
        raise ComposeFileError(f"invalid interpolation format in {text!r}: "
                               f"unknown operator in ${{{expr}}}", where())
    value = lookup(var)
    present = value is not None and (value != "" or ":" not in op)
    if op.endswith("-"):
        return value if present else substitute(arg, lookup, where)  # type: ignore[return-value]
    if op.endswith("+"):
        return substitute(arg, lookup, where) if present else ""
    if not present:
        message = substitute(arg, lookup, where) if arg else ""
        raise ComposeFileError(f"required variable {var} is missing a value"
                               + (f": {message}" if message else ""), where())
    return value  # type: ignore[return-value]


