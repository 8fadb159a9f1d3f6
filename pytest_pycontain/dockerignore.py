"""``.dockerignore`` with Docker's rules, so that a build sees the context Docker would send.

The rules (moby's patternmatcher): one pattern a line, ``#`` lines are comments, blanks are
trimmed, each pattern is cleaned like a path and anchored at the context root (a leading ``/``
means nothing more), ``*`` and ``?`` stay inside one path element, ``**`` spans any number of
them, ``!`` makes an exception and the last matching line wins. A pattern that matches a
directory excludes everything below it (unless a later exception brings a file back).
``<Dockerfile>.dockerignore`` beside the Dockerfile takes precedence over the context's own.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DockerfileError

__all__ = ["DockerIgnore", "Pattern", "ignore_file_for", "load"]

_REGEX_SPECIAL = set(".+()|{}$^")


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern: its text, whether it is an exception, and its regex."""

    text: str
    exclusion: bool
    regex: re.Pattern[str]

    def match(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _compile(pattern: str) -> re.Pattern[str]:
    """Translate a dockerignore pattern to a regex matching a whole slash-separated path."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(?:.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1 if i < n and pattern[i] in "!^" else i)
            if end < 0:
                raise ValueError(f"syntax error in pattern {pattern!r}: unterminated '['")
            body = pattern[i:end]
            i = end + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\")
            out.append("[" + ("^/" if negate else "") + body + "]")
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append(re.escape("\\"))
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(re.escape(ch) if not ch.isalnum() and ch not in "/-_" else ch)
    return re.compile("".join(out), re.DOTALL)


def _clean(text: str) -> str:
    cleaned = posixpath.normpath(text.replace(os.sep, "/")) if text else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if len(cleaned) > 1 and cleaned.startswith("/"):
        cleaned = cleaned[1:]
    return cleaned


class DockerIgnore:
    """The compiled patterns of one ignore file; :meth:`excluded` decides a path."""

    def __init__(self, lines: Iterable[str] = (), *, source: str = ".dockerignore"):
        self.source = source
        self.patterns: list[Pattern] = []
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
                if not line:
                    raise DockerfileError("illegal exclusion pattern: \"!\"", path=source,
                                          line=number)
            text = _clean(line)
            try:
                regex = _compile(text)
            except (ValueError, re.error) as exc:
                raise DockerfileError(f"bad pattern {line!r}: {exc}", path=source,
                                      line=number) from None
            self.patterns.append(Pattern(text, exclusion, regex))
        self.has_exceptions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context root, ``/``-separated) is ignored."""
        path = _clean(path)
        if path == "." or not self.patterns:
            return False
        parts = path.split("/")
        parents = ["/".join(parts[: k + 1]) for k in range(len(parts) - 1)]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # only a later exception can undo a match, and vice versa
            hit = pattern.match(path) or any(pattern.match(p) for p in parents)
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether an excluded ``directory`` may still hold re-included files (walk it then)."""
        return self.has_exceptions

    def walk(self, root: Path) -> list[str]:
        """Every path under ``root`` that is not ignored, sorted, ``/``-separated, relative."""
        found: list[str] = []

        def visit(directory: Path, prefix: str) -> None:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                return
            for entry in entries:
                rel = prefix + entry.name
                excluded = self.excluded(rel)
                if not excluded:
                    found.append(rel)
                if entry.is_dir(follow_symlinks=False) and (
                        not excluded or self.may_include_below(rel)):
                    visit(Path(entry.path), rel + "/")

        visit(root, "")
        return found


def ignore_file_for(context: Path, dockerfile: Path | None) -> Path | None:
    """The ignore file that applies: ``<Dockerfile>.dockerignore`` first, then the context's."""
    if dockerfile is not None:
        specific = Path(str(dockerfile) + ".dockerignore")
        if specific.is_file():
            return specific
    general = Path(context) / ".dockerignore"
    return general if general.is_file() else None


def load(context: Path, dockerfile: Path | None = None) -> DockerIgnore:
    """The DockerIgnore for a build of ``context`` with ``dockerfile`` (empty when none)."""
    path = ignore_file_for(context, dockerfile)
    if path is None:
        return DockerIgnore()
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise DockerfileError(f"cannot read ignore file: {exc.strerror}", path=str(path)) \
            from exc
    return DockerIgnore(text.splitlines(), source=str(path))
