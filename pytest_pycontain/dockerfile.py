"""A Dockerfile parser that reads a file the way Docker's own front end does.

Two layers, as in BuildKit:

* :func:`parse_nodes` — the syntax: lines, continuations, comments, parser directives,
  heredocs, flags and JSON-or-shell arguments, into :class:`Node` objects whose
  :meth:`Node.dump` matches Docker's parser dump (``shared/conformance`` pins it);
* :func:`parse` / :func:`parse_file` — typed instructions (:class:`Run`, :class:`Copy`, ...)
  with their flags checked, each carrying ``path``, ``line`` and ``end_line``.

Parsing expands nothing: ``$VAR`` needs the build's ARG/ENV scope, so values stay as written.
Once the build knows the scope, :meth:`Instruction.expanded` expands exactly the fields Docker
expands (with :mod:`pytest_pycontain.shell`). Every error is a
:class:`~pytest_pycontain.errors.DockerfileError` naming ``file:line``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from . import shell
from .errors import DockerfileError

__all__ = [
    "INSTRUCTIONS",
    "Add",
    "Arg",
    "Cmd",
    "Copy",
    "Dockerfile",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Heredoc",
    "Instruction",
    "Label",
    "Maintainer",
    "Node",
    "Onbuild",
    "Run",
    "Shell",
    "Stage",
    "Stopsignal",
    "User",
    "Volume",
    "Workdir",
    "parse",
    "parse_file",
    "parse_nodes",
]

_WS = re.compile(r"[\t\v\f\r ]+")  # Docker's reWhitespace (ASCII blanks, not newline)
_GO_SPACES = "".join(sorted(shell.SPACES))
_DIRECTIVE = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)"
                        r"[\t\n\f\r ]*", re.DOTALL)
_VALID_DIRECTIVES = ("escape", "syntax", "check")
_HEREDOC = re.compile(r"([0-9]*)<<(-?)([^<]*)", re.DOTALL)
_HEREDOC_INSTRUCTIONS = ("run", "copy", "add")
_BYTE_SPACES = frozenset(b"\t\n\v\f\r \x85\xa0")  # Go's unicode.IsSpace(rune(byte))


class _NotStringArray(Exception):
    """A JSON array holding something other than strings: Docker refuses the line."""


# ---------------------------------------------------------------------------------------------
# The syntax layer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heredoc:
    """A ``<<NAME`` document attached to RUN, COPY or ADD.

    ``content`` is as written (newlines kept); :meth:`body` applies ``<<-`` tab stripping.
    ``expand`` is False when the name was quoted (``<<'EOF'``): no variable expansion then.
    """

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int = 0

    def body(self) -> str:
        """The content as the build uses it (leading tabs removed for ``<<-``)."""
        if self.chomp:
            return re.sub(r"(?m)^\t+", "", self.content)
        return self.content


@dataclass(frozen=True)
class Node:
    """One instruction as Docker's parser sees it: keyword, flags and raw values."""

    name: str  # as written (case kept)
    flags: tuple[str, ...]
    values: tuple[str, ...]
    json: bool
    original: str
    start_line: int
    end_line: int
    heredocs: tuple[Heredoc, ...] = ()
    child: Node | None = None  # the instruction ONBUILD wraps

    def dump(self) -> str:
        """The node as Docker's parser dumps it (the ``result`` files of the test data)."""
        text = self.name.lower()
        if self.flags:
            text += " [" + " ".join(_go_quote(flag) for flag in self.flags) + "]"
        if self.child is not None:
            text += " (" + self.child.dump() + ")"
        for value in self.values:
            text += " " + _go_quote(value)
        return text.strip()


def _go_quote(text: str) -> str:
    """Go's strconv.Quote: the quoting Docker's dump uses."""
    out = ['"']
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", '"': '\\"', "\\": "\\\\"}
    for ch in text:
        if ch in named:
            out.append(named[ch])
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


class _Directives:
    """Parser directives (``# escape=``, ``# syntax=``): only at the very top of the file."""

    def __init__(self) -> None:
        self.escape = "\\"
        self.done = False
        self.seen: dict[str, str] = {}
        self._continuation = self._regex("\\")

    @staticmethod
    def _regex(escape: str) -> re.Pattern[str]:
        e = re.escape(escape)
        return re.compile(rf"(?:([^{e}]){e}|^{e})[ \t]*\Z", re.DOTALL)

    def check(self, line: str) -> None:
        if self.done:
            return
        match = _DIRECTIVE.fullmatch(line)
        if not match:
            self.done = True
            return
        key = match.group(1).lower()
        if key not in _VALID_DIRECTIVES:
            self.done = True
            return
        if key in self.seen:
            raise ValueError(f"only one {key} parser directive can be used")
        value = match.group(2)
        self.seen[key] = value
        if key == "escape":
            if value not in ("`", "\\"):
                raise ValueError(f"invalid escape token '{value}' does not match ` or \\")
            self.escape = value
            self._continuation = self._regex(value)

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """The line without its trailing escape, and whether the instruction ends here."""
        match = self._continuation.search(line)
        if match is None:
            return line, True
        return line[:match.start()] + (match.group(1) or ""), False


def _trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return _trim_newline(line).lstrip(_GO_SPACES).startswith("#")


def _split_lines(text: str) -> list[str]:
    """Lines with their ``\\n`` kept (only ``\\n`` ends a line, as in Docker)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _extract_flags(text: str) -> tuple[str, list[str]]:
    """Leading ``--flag[=value]`` words and the rest of the line (Docker's flag scanner).

    Docker scans these byte by byte, so it is done on UTF-8 bytes here too; a ``--`` word ends
    the flags. Quotes and backslashes inside a flag are removed.
    """
    data = text.encode("utf-8", "surrogateescape")
    flags: list[str] = []
    word: list[str] = []
    quote = 0
    blank_ok = False
    in_word = False
    pos = 0
    n = len(data)
    while pos <= n:
        ch = data[pos] if pos < n else -1
        if not in_word:
            if pos == n:
                break
            if ch in _BYTE_SPACES:
                pos += 1
                continue
            if ch != 0x2D or pos + 1 == n or data[pos + 1] != 0x2D:
                return data[pos:].decode("utf-8", "surrogateescape"), flags
            in_word = True
        if pos == n:
            current = "".join(word)
            if current != "--" and (blank_ok or current):
                flags.append(current)
            break
        if not quote:
            if ch in _BYTE_SPACES:
                current = "".join(word)
                if current == "--":
                    return data[pos:].decode("utf-8", "surrogateescape"), flags
                if blank_ok or current:
                    flags.append(current)
                word = []
                blank_ok = False
                in_word = False
                pos += 1
                continue
            if ch in (0x22, 0x27):
                quote = ch
                blank_ok = True
                pos += 1
                continue
        elif ch == quote:
            quote = 0
            pos += 1
            continue
        if ch == 0x5C:
            if pos + 1 == n:
                quote = 0
                pos += 1
                continue
            pos += 1
            ch = data[pos]
        word.append(chr(ch))  # one byte, one character: as Docker does it
        pos += 1
    return "", flags


def _split_command(line: str) -> tuple[str, list[str], str]:
    parts = _WS.split(line.strip(_GO_SPACES), maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    rest, flags = _extract_flags(parts[1])
    return parts[0], flags, rest.strip(_GO_SPACES)


def _parse_json(rest: str) -> tuple[str, ...] | None:
    """The strings of a JSON array, or None when ``rest`` is not one (then: shell form)."""
    rest = rest.lstrip(_GO_SPACES)
    if not rest.startswith("["):
        return None

    def no_constants(name: str) -> object:
        raise ValueError(name)

    try:
        value, _ = json.JSONDecoder(parse_constant=no_constants).raw_decode(rest)
    except ValueError:
        return None
    if value is None:
        return ()
    if not all(isinstance(item, str) for item in value):
        raise _NotStringArray
    # Go turns lone surrogates into U+FFFD
    return tuple(re.sub("[\ud800-\udfff]", "\ufffd", item) for item in value)


def _maybe_json(rest: str) -> tuple[tuple[str, ...], bool]:
    if rest == "":
        return (), False
    values = _parse_json(rest)
    if values is not None:
        return values, True
    return (rest,), False


def _maybe_json_list(rest: str) -> tuple[tuple[str, ...], bool]:
    values = _parse_json(rest)
    if values is not None:
        return values, True
    return _whitespace_list(rest), False


def _whitespace_list(rest: str) -> tuple[str, ...]:
    return tuple(_WS.split(rest)) if rest else ()


def _name_val(rest: str, key: str, escape: str) -> tuple[str, ...]:
    words = shell.split_raw_words(rest, escape)
    if not words:
        return ()
    if "=" not in words[0]:
        parts = _WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{key} must have two arguments")
        return (parts[0], parts[1], "")
    values: list[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(
                f"Syntax error - can't find = in {_go_quote(word)}. "
                "Must be of the form: name=value")
        name, _, value = word.partition("=")
        values += [name, value, "="]
    return tuple(values)


def _health(rest: str) -> tuple[tuple[str, ...], bool]:
    data = rest.encode("utf-8", "surrogateescape")
    sep = 0
    while sep < len(data) and data[sep] not in _BYTE_SPACES:
        sep += 1
    if sep == 0:
        return (), False
    nxt = sep
    while nxt < len(data) and data[nxt] in _BYTE_SPACES:
        nxt += 1
    kind = data[:sep].decode("utf-8", "surrogateescape")
    values, is_json = _maybe_json(data[nxt:].decode("utf-8", "surrogateescape"))
    return (kind, *values), is_json


def _node_from_line(line: str, escape: str, start: int, end: int) -> Node:
    name, flags, rest = _split_command(line)
    key = name.lower()
    child = None
    is_json = False
    if key in ("add", "copy", "volume"):
        values, is_json = _maybe_json_list(rest)
    elif key in ("cmd", "entrypoint", "run", "shell"):
        values, is_json = _maybe_json(rest)
    elif key == "arg":
        values = tuple(shell.split_raw_words(rest, escape))
    elif key in ("env", "label"):
        values = _name_val(rest, name.upper(), escape)
    elif key in ("expose", "from"):
        values = _whitespace_list(rest)
    elif key == "healthcheck":
        values, is_json = _health(rest)
    elif key in ("maintainer", "stopsignal", "user", "workdir"):
        values = (rest,) if rest else ()
    elif key == "onbuild":
        values = ()
        if rest:
            child = _node_from_line(rest, escape, start, end)
    else:
        values = ("",)  # Docker's parser keeps unknown words; the typed layer refuses them
    return Node(name=name, flags=tuple(flags), values=values, json=is_json, original=line,
                start_line=start, end_line=end, child=child)


def _can_have_heredocs(node: Node) -> bool:
    if node.name.lower() == "onbuild" and node.child is not None:
        node = node.child
    return node.name.lower() in _HEREDOC_INSTRUCTIONS and not node.json


def _heredoc_names(line: str) -> list[tuple[str, bool, bool, int]]:
    """``(name, expand, chomp, fd)`` of each ``<<NAME`` word of a line.

    As in Docker, the backslash is the escape here whatever the escape directive says, and
    a quoted name (``<<'EOF'``, ``<<"EOF"``) means: do not expand the content.
    """
    try:
        words = shell.lex_words(line, raw_quotes=True, raw_escapes=True)
    except shell.ExpansionError:
        return []
    found = []
    for word in words:
        match = _HEREDOC.fullmatch(word)
        if not match or not match.group(3):
            continue
        rest = match.group(3)
        try:
            plain = shell.lex_words(rest)
            raw = shell.lex_words(rest, raw_quotes=True)
        except shell.ExpansionError as exc:
            raise ValueError(f"bad heredoc name {rest!r}: {exc.reason}") from None
        if len(plain) != 1 or len(raw) != 1:
            continue
        quotes = plain[0].count("'") + plain[0].count('"')
        raw_quotes = raw[0].count("'") + raw[0].count('"')
        fd = int(match.group(1)) if match.group(1) else 0
        found.append((plain[0], quotes == raw_quotes, match.group(2) == "-", fd))
    return found


@dataclass
class _Parsed:
    nodes: list[Node]
    escape: str
    directives: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def _parse(text: str, path: str) -> _Parsed:
    text = text.removeprefix("\ufeff")
    lines = _split_lines(text)
    directives = _Directives()
    nodes: list[Node] = []
    warnings: list[str] = []
    current = 0
    i = 0

    def fail(message: str, line: int) -> DockerfileError:
        return DockerfileError(message, path=path, line=line)

    while i < len(lines):
        raw = lines[i]
        i += 1
        token = _trim_newline(raw).lstrip(_GO_SPACES)
        try:
            directives.check(token)
        except ValueError as exc:
            raise fail(str(exc), current + 1) from None
        if token.startswith("#"):
            token = ""
        current += 1
        start = current
        line, done = directives.trim_continuation(token)
        if done and line == "":
            continue
        empty_continuation = False
        while not done and i < len(lines):
            raw = lines[i]
            i += 1
            token = _trim_newline(raw)
            try:
                directives.check(token)
            except ValueError as exc:
                raise fail(str(exc), current + 1) from None
            if token.startswith("#"):
                token = ""
            current += 1
            if _is_comment(raw):
                continue
            if token.lstrip(_GO_SPACES) == "":
                empty_continuation = True
                continue
            more, done = directives.trim_continuation(token)
            line += more
        if empty_continuation:
            warnings.append(f"{path}:{current}: empty continuation line in: {line}")
        try:
            node = _node_from_line(line, directives.escape, start, current)
        except _NotStringArray:
            raise fail("when using JSON array syntax, arrays must be comprised of strings "
                       "only", start) from None
        except ValueError as exc:
            raise fail(str(exc), start) from None
        heredocs: list[Heredoc] = []
        if _can_have_heredocs(node):
            try:
                names = _heredoc_names(line)
            except ValueError as exc:
                raise fail(str(exc), start) from None
            for name, expand, chomp, fd in names:
                content: list[str] = []
                terminated = False
                while i < len(lines):
                    raw = lines[i]
                    i += 1
                    current += 1
                    candidate = _trim_newline(raw)
                    if chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == name:
                        terminated = True
                        break
                    content.append(raw)
                if not terminated:
                    raise fail(f"unterminated heredoc {name!r} (started here, file ends at "
                               f"line {current})", start)
                heredocs.append(Heredoc(name, "".join(content), expand, chomp, fd))
        docs = tuple(heredocs)
        child = node.child and dataclasses.replace(node.child, end_line=current, heredocs=docs)
        nodes.append(dataclasses.replace(node, end_line=current, heredocs=docs, child=child))
    if not nodes:
        raise DockerfileError("file with no instructions", path=path)
    return _Parsed(nodes, directives.escape, dict(directives.seen), warnings)


def parse_nodes(text: str, path: str = "Dockerfile") -> list[Node]:
    """The raw nodes of a Dockerfile, as Docker's parser gives them (unknown words kept)."""
    return _parse(text, path).nodes


# ---------------------------------------------------------------------------------------------
# The typed layer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """What every instruction carries: where it is, how it was written, its raw parts."""

    keyword: ClassVar[str] = ""
    # the fields Docker expands ($VAR) before it runs the instruction, one word each
    expands: ClassVar[tuple[str, ...]] = ()
    path: str
    line: int
    end_line: int
    original: str
    flags: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    escape: str = "\\"

    @property
    def name(self) -> str:
        """The keyword, upper-case (``RUN``)."""
        return self.keyword

    def expanded(self, env: Mapping[str, str]) -> Instruction:
        """A copy with ``$VAR`` expanded where Docker expands it (ENV and LABEL keys and
        values, ARG names and defaults, COPY/ADD paths, ``--chown``/``--chmod``/``--from``,
        RUN ``--mount``, WORKDIR, USER, STOPSIGNAL, VOLUME, EXPOSE, the FROM image and
        ``--platform``). Commands (RUN, CMD, ENTRYPOINT, HEALTHCHECK) are left to the shell.

        Raises :class:`~pytest_pycontain.shell.ExpansionError` at this instruction's line.
        """
        changes: dict[str, object] = {}
        try:
            for name in self.expands:
                changes[name] = self._expand_value(getattr(self, name), env)
        except shell.ExpansionError as exc:
            raise exc.at(self.path, self.line) from None
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def _expand_value(self, value: object, env: Mapping[str, str]) -> object:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return shell.expand(value, env, self.escape)
        if isinstance(value, tuple):
            return tuple(self._expand_value(item, env) for item in value)
        raise TypeError(f"cannot expand {value!r}")

    def error(self, message: str) -> DockerfileError:
        """A DockerfileError placed at this instruction."""
        return DockerfileError(message, path=self.path, line=self.line)


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    """``FROM image [AS name]``; expand it with the meta ARGs (those before the first FROM)."""

    keyword: ClassVar[str] = "FROM"
    expands: ClassVar[tuple[str, ...]] = ("image", "platform")
    image: str
    stage_name: str | None = None
    platform: str | None = None


@dataclass(frozen=True, kw_only=True)
class _Command(Instruction):
    """RUN, CMD, ENTRYPOINT: a JSON list (exec form) or one string (shell form)."""

    command: tuple[str, ...] | str = ()

    @property
    def shell_form(self) -> bool:
        return not self.json


@dataclass(frozen=True, kw_only=True)
class Run(_Command):
    keyword: ClassVar[str] = "RUN"
    expands: ClassVar[tuple[str, ...]] = ("mounts",)
    mounts: tuple[str, ...] = ()
    network: str | None = None
    security: str | None = None
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Cmd(_Command):
    keyword: ClassVar[str] = "CMD"


@dataclass(frozen=True, kw_only=True)
class Entrypoint(_Command):
    keyword: ClassVar[str] = "ENTRYPOINT"


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    keyword: ClassVar[str] = "SHELL"
    shell: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class _Files(Instruction):
    expands: ClassVar[tuple[str, ...]] = ("sources", "dest", "chown", "chmod")
    sources: tuple[str, ...]
    dest: str
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: tuple[str, ...] = ()

    def heredoc_for(self, source: str) -> Heredoc | None:
        """The heredoc a ``<<NAME`` source stands for, if it is one."""
        match = _HEREDOC.fullmatch(source)
        if not match:
            return None
        for doc in self.heredocs:
            if shell.unquote(match.group(3)) == doc.name:
                return doc
        return None


@dataclass(frozen=True, kw_only=True)
class Copy(_Files):
    keyword: ClassVar[str] = "COPY"
    expands: ClassVar[tuple[str, ...]] = ("sources", "dest", "chown", "chmod", "from_")
    from_: str | None = None
    parents: bool = False


@dataclass(frozen=True, kw_only=True)
class Add(_Files):
    keyword: ClassVar[str] = "ADD"
    expands: ClassVar[tuple[str, ...]] = ("sources", "dest", "chown", "chmod", "checksum")
    keep_git_dir: bool = False
    checksum: str | None = None
    unpack: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    keyword: ClassVar[str] = "ENV"
    expands: ClassVar[tuple[str, ...]] = ("pairs",)
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Label(Instruction):
    keyword: ClassVar[str] = "LABEL"
    expands: ClassVar[tuple[str, ...]] = ("pairs",)
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    """``ARG name[=default] ...``: a default of None means none was given."""

    keyword: ClassVar[str] = "ARG"
    expands: ClassVar[tuple[str, ...]] = ("pairs",)
    pairs: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    keyword: ClassVar[str] = "EXPOSE"
    ports: tuple[str, ...]

    def expanded(self, env: Mapping[str, str]) -> Expose:
        """EXPOSE is the one that splits: ``EXPOSE $PORTS`` may give several ports."""
        try:
            ports = tuple(word for port in self.ports
                          for word in shell.expand_words(port, env, self.escape))
        except shell.ExpansionError as exc:
            raise exc.at(self.path, self.line) from None
        return dataclasses.replace(self, ports=ports)


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    keyword: ClassVar[str] = "VOLUME"
    expands: ClassVar[tuple[str, ...]] = ("paths",)
    paths: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    keyword: ClassVar[str] = "WORKDIR"
    expands: ClassVar[tuple[str, ...]] = ("workdir",)
    workdir: str


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    keyword: ClassVar[str] = "USER"
    expands: ClassVar[tuple[str, ...]] = ("user",)
    user: str


@dataclass(frozen=True, kw_only=True)
class Stopsignal(Instruction):
    keyword: ClassVar[str] = "STOPSIGNAL"
    expands: ClassVar[tuple[str, ...]] = ("signal",)
    signal: str


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    keyword: ClassVar[str] = "MAINTAINER"
    maintainer: str


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    """``test`` is shaped like Docker's config: ``("NONE",)``, ``("CMD", ...)`` or
    ``("CMD-SHELL", "cmd")``; durations are in nanoseconds, None when not given."""

    keyword: ClassVar[str] = "HEALTHCHECK"
    test: tuple[str, ...]
    interval_ns: int | None = None
    timeout_ns: int | None = None
    start_period_ns: int | None = None
    start_interval_ns: int | None = None
    retries: int | None = None


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    """``trigger`` is the wrapped instruction; ``expression`` its text, as images store it."""

    keyword: ClassVar[str] = "ONBUILD"
    trigger: Instruction
    expression: str


INSTRUCTIONS: dict[str, type[Instruction]] = {
    cls.keyword: cls
    for cls in (From, Run, Cmd, Entrypoint, Shell, Copy, Add, Env, Label, Arg, Expose, Volume,
                Workdir, User, Stopsignal, Maintainer, Healthcheck, Onbuild)
}

_BOOL, _STR, _LIST = "bool", "str", "list"
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": _STR},
    "RUN": {"mount": _LIST, "network": _STR, "security": _STR, "device": _LIST},
    "COPY": {"from": _STR, "chown": _STR, "chmod": _STR, "link": _BOOL, "parents": _BOOL,
             "exclude": _LIST},
    "ADD": {"chown": _STR, "chmod": _STR, "link": _BOOL, "keep-git-dir": _BOOL,
            "checksum": _STR, "exclude": _LIST, "unpack": _BOOL},
    "HEALTHCHECK": {"interval": _STR, "timeout": _STR, "start-period": _STR,
                    "start-interval": _STR, "retries": _STR},
}
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
_DURATION_UNITS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000,
                   "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
                   "h": 3_600_000_000_000}


def _flag_values(node: Node, keyword: str, fail, strict: bool) -> dict[str, object]:
    """Docker's BFlags rules: known names only, values where needed, no repeats."""
    known = _FLAGS.get(keyword, {})
    values: dict[str, object] = {}
    for raw in node.flags:
        if raw == "--":
            break
        name, has_value, value = raw[2:].partition("=")
        kind = known.get(name)
        if kind is None:
            if strict:
                accepts = (f"{keyword} accepts {', '.join('--' + k for k in known)}"
                           if known else f"{keyword} takes no flags")
                raise fail(f"unknown flag: {raw.split('=')[0]} ({accepts})")
            continue
        if name in values and kind != _LIST:
            raise fail(f"duplicate flag specified: --{name}")
        if kind == _BOOL:
            if has_value and value == "":
                raise fail(f"missing a value on flag: --{name}")
            lowered = value.lower() if has_value else "true"
            if lowered not in ("true", "false"):
                raise fail(f"expecting boolean value for flag --{name}, not: {value}")
            values[name] = lowered == "true"
        elif not has_value:
            raise fail(f"missing a value on flag: --{name}")
        elif kind == _LIST:
            values.setdefault(name, [])
            values[name].append(value)  # type: ignore[union-attr]
        else:
            values[name] = value
    return values


def _duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds (``1m30s``, ``500ms``, ``0``)."""
    sign = 1
    rest = text
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    for match in re.finditer(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)", rest):
        if not match.group(0):
            continue
        number, unit = match.groups()
        if number in ("", ".") or unit not in _DURATION_UNITS:
            raise ValueError(f"invalid duration {text!r}")
        total += float(number) * _DURATION_UNITS[unit]
    return sign * round(total)


def _typed(node: Node, path: str, strict: bool, escape: str = "\\",
           onbuild: bool = False) -> Instruction:
    keyword = node.name.upper()
    line = node.start_line

    def fail(message: str) -> DockerfileError:
        return DockerfileError(f"{keyword}: {message}" if not message.startswith(keyword)
                               else message, path=path, line=line)

    cls = INSTRUCTIONS.get(keyword)
    if cls is None:
        what = node.name or "(nothing but a line continuation)"
        raise DockerfileError(f"unknown instruction: {what}", path=path, line=line)
    if onbuild and keyword in ("ONBUILD", "FROM", "MAINTAINER"):
        raise fail(f"{keyword} isn't allowed as an ONBUILD trigger")
    base = {"path": path, "line": line, "end_line": node.end_line, "original": node.original,
            "flags": node.flags, "args": node.values, "json": node.json,
            "heredocs": node.heredocs, "escape": escape}
    args = node.values
    if keyword == "HEALTHCHECK":
        return _healthcheck(node, base, fail, strict)
    flags = _flag_values(node, keyword, fail, strict)

    def need(count: int, exact: bool = False) -> None:
        if (len(args) != count) if exact else (len(args) < count):
            many = "exactly" if exact else "at least"
            noun = "argument" if count == 1 else "arguments"
            raise fail(f"{keyword} requires {many} {count} {noun}, got {len(args)}")

    if keyword == "FROM":
        if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
            raise fail("FROM requires either one or three arguments: FROM image [AS name]")
        stage = args[2].lower() if len(args) == 3 else None
        if stage is not None and not _STAGE_NAME.fullmatch(stage):
            raise fail(f"invalid name for build stage: {args[2]!r}, name can't start with a "
                       "number or contain symbols")
        return From(**base, image=args[0], stage_name=stage,
                    platform=flags.get("platform"))  # type: ignore[arg-type]
    if keyword in ("RUN", "CMD", "ENTRYPOINT"):
        if keyword == "RUN":
            need(1)
        command: tuple[str, ...] | str = args if node.json else (args[0] if args else "")
        if keyword != "RUN":
            return cls(**base, command=command)  # type: ignore[call-arg]
        return Run(**base, command=command, mounts=tuple(flags.get("mount", ())),
                   network=flags.get("network"), security=flags.get("security"),
                   devices=tuple(flags.get("device", ())))  # type: ignore[arg-type]
    if keyword == "SHELL":
        if not node.json:
            raise fail("SHELL requires the arguments to be in JSON form")
        need(1)
        return Shell(**base, shell=args)
    if keyword in ("COPY", "ADD"):
        if len(args) < 2:
            raise fail(f"{keyword} requires at least two arguments, but only {len(args)} "
                       "provided. Destination could not be determined")
        common = {"sources": args[:-1], "dest": args[-1], "chown": flags.get("chown"),
                  "chmod": flags.get("chmod"), "link": bool(flags.get("link", False)),
                  "exclude": tuple(flags.get("exclude", ()))}  # type: ignore[arg-type]
        if keyword == "COPY":
            return Copy(**base, **common, from_=flags.get("from"),  # type: ignore[arg-type]
                        parents=bool(flags.get("parents", False)))
        return Add(**base, **common, keep_git_dir=bool(flags.get("keep-git-dir", False)),
                   checksum=flags.get("checksum"),  # type: ignore[arg-type]
                   unpack=flags.get("unpack"))  # type: ignore[arg-type]
    if keyword in ("ENV", "LABEL"):
        need(1)
        pairs = tuple((args[i], args[i + 1]) for i in range(0, len(args), 3))
        if any(not key for key, _ in pairs):
            raise fail(f"{keyword} names can not be blank")
        return cls(**base, pairs=pairs)  # type: ignore[call-arg]
    if keyword == "ARG":
        need(1)
        arg_pairs: list[tuple[str, str | None]] = []
        for word in args:
            name, has_value, value = word.partition("=")
            if not name:
                raise fail(f"ARG names can not be blank: {word!r}")
            arg_pairs.append((name, value if has_value else None))
        return Arg(**base, pairs=tuple(arg_pairs))
    if keyword == "EXPOSE":
        need(1)
        return Expose(**base, ports=args)
    if keyword == "VOLUME":
        need(1)
        if any(not item.strip() for item in args):
            raise fail("VOLUME specified can not be an empty string")
        return Volume(**base, paths=args)
    if keyword in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        need(1, exact=True)
        field_name = {"WORKDIR": "workdir", "USER": "user", "STOPSIGNAL": "signal",
                      "MAINTAINER": "maintainer"}[keyword]
        return cls(**base, **{field_name: args[0]})  # type: ignore[call-arg]
    # ONBUILD
    if node.child is None:
        raise fail("ONBUILD requires at least one argument")
    trigger = _typed(node.child, path, strict, escape, onbuild=True)
    expression = re.sub(r"(?i)^[\t\n\v\f\r ]*ONBUILD[\t\n\v\f\r ]*", "", node.original)
    return Onbuild(**base, trigger=trigger, expression=expression)


def _healthcheck(node: Node, base: dict, fail, strict: bool) -> Healthcheck:
    args = node.values
    if not args:
        if strict:
            raise fail("HEALTHCHECK requires at least one argument")
        return Healthcheck(**base, test=())
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) != 1:
            raise fail("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(**base, test=("NONE",))
    flags = _flag_values(node, "HEALTHCHECK", fail, strict)
    command = args[1:] if node.json else ((" ".join(args[1:]),) if len(args) > 1 else ())
    if kind != "CMD":
        if strict:
            raise fail(f"Unknown type {args[0]!r} in HEALTHCHECK (try CMD)")
        return Healthcheck(**base, test=(kind, *command))
    if not command and strict:
        raise fail("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *command) if node.json else ("CMD-SHELL", *command)
    durations: dict[str, int | None] = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        text = flags.get(name)
        if not text:
            durations[name.replace("-", "_") + "_ns"] = None
            continue
        try:
            value = _duration(str(text))
        except ValueError:
            raise fail(f"--{name}: time: invalid duration {text!r}") from None
        if value < 0:
            raise fail(f"--{name}: Interval {name!r} cannot be negative ({text})")
        if 0 < value < 1_000_000:
            raise fail(f"--{name}: Interval {name!r} cannot be less than 1ms ({text})")
        durations[name.replace("-", "_") + "_ns"] = value
    retries = None
    if flags.get("retries"):
        try:
            retries = int(str(flags["retries"]), 10)
        except ValueError:
            raise fail(f"--retries: invalid number {flags['retries']!r}") from None
        if retries < 0:
            raise fail(f"--retries cannot be negative ({retries})")
    return Healthcheck(**base, test=test, retries=retries, **durations)


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` and the instructions up to the next."""

    index: int
    name: str | None
    from_: From
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its instructions in order, and what the directives set."""

    path: str
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    syntax: str | None = None
    directives: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def meta_args(self) -> tuple[Arg, ...]:
        """The ARGs before the first FROM (usable in FROM lines only)."""
        found = []
        for item in self.instructions:
            if isinstance(item, From):
                break
            if isinstance(item, Arg):
                found.append(item)
        return tuple(found)

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The build stages; anything but ARG before the first FROM is an error here."""
        stages: list[Stage] = []
        current: From | None = None
        body: list[Instruction] = []
        for item in self.instructions:
            if isinstance(item, From):
                if current is not None:
                    stages.append(Stage(len(stages), current.stage_name, current, tuple(body)))
                current, body = item, []
            elif current is None:
                if not isinstance(item, Arg):
                    raise item.error(f"{item.keyword} before the first FROM: no build stage "
                                     "in current context")
            else:
                body.append(item)
        if current is None:
            raise DockerfileError("no FROM instruction: nothing to build", path=self.path)
        stages.append(Stage(len(stages), current.stage_name, current, tuple(body)))
        seen: set[str] = set()
        for stage in stages:
            if stage.name in seen:
                raise stage.from_.error(f"duplicate stage name {stage.name!r}")
            if stage.name:
                seen.add(stage.name)
        return tuple(stages)


def parse(text: str, path: str | os.PathLike[str] = "Dockerfile", *,
          strict: bool = True) -> Dockerfile:
    """Parse Dockerfile text into typed instructions.

    ``strict=False`` accepts what Docker's parser accepts but its builder refuses (unknown
    flags, ``HEALTHCHECK`` without a command); unknown instructions are always refused.
    """
    name = os.fspath(path)
    parsed = _parse(text, name)
    instructions = tuple(_typed(node, name, strict, parsed.escape) for node in parsed.nodes)
    return Dockerfile(path=name, instructions=instructions, escape=parsed.escape,
                      syntax=parsed.directives.get("syntax"), directives=parsed.directives,
                      warnings=tuple(parsed.warnings))


def parse_file(path: str | os.PathLike[str], *, strict: bool = True) -> Dockerfile:
    """Read and parse a Dockerfile; a missing or unreadable file is a DockerfileError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DockerfileError(f"cannot read Dockerfile: {exc.strerror}",
                              path=os.fspath(path)) from exc
    return parse(data.decode("utf-8", "surrogateescape"), path, strict=strict)
