"""Word expansion and splitting with the Dockerfile's rules (not a shell's).

Docker expands ``$VAR`` in instruction arguments itself, before anything runs, with a small
lexer of its own: quotes, the escape token (``\\`` or a backtick), ``${V:-x}`` and friends,
``${V#p}`` / ``${V%p}`` trimming and ``${V/a/b}`` replacement. This module reproduces that
behaviour (pinned by BuildKit's own vectors in ``shared/conformance``) so that a Dockerfile
means the same here as under Docker.

Two modes, as in BuildKit:

* :func:`expand` — one word in, one word out (ENV and LABEL values, COPY sources, WORKDIR...);
* :func:`expand_words` — expand, then split on unquoted blanks (EXPOSE, heredoc names...).

Raw, unexpanded splitting of ``KEY=VALUE`` lists (ENV, LABEL, ARG) is :func:`split_raw_words`
and :func:`parse_key_values`; the values they return still need :func:`expand`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import DockerfileError

__all__ = [
    "SPACES",
    "ExpansionError",
    "expand",
    "expand_words",
    "is_space",
    "lex_words",
    "parse_key_values",
    "split_raw_words",
    "unquote",
    "variables_used",
]

# Go's unicode.IsSpace: the Unicode White_Space set that Docker's Go code uses to split.
SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# POSIX special parameters: never set in a Dockerfile, so they expand to nothing.
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


def is_space(ch: str) -> bool:
    """Whether ``ch`` is a blank to Docker's Go code (unlike ``str.isspace`` for ``\\x1c``)."""
    return ch in SPACES


class ExpansionError(DockerfileError):
    """A word could not be expanded: bad syntax, or ``${V:?msg}`` with V unset.

    It has no location of its own; :meth:`at` gives the same error at a Dockerfile line.
    """

    def __init__(self, message: str, *, word: str | None = None, path: str | None = None,
                 line: int | None = None):
        self.word = word
        text = f"failed to process {word!r}: {message}" if word is not None else message
        super().__init__(text, path=path, line=line)
        self.reason = message

    def at(self, path: str | None, line: int | None) -> ExpansionError:
        """The same error, placed at ``path:line`` (for the build to raise)."""
        return ExpansionError(self.reason, word=self.word, path=path, line=line)


class _Syntax(Exception):
    """Internal: an expansion error before the word is known."""


@dataclass
class _Words:
    """Collects split words the way BuildKit does: expanded text splits, quoted text not."""

    word: str = ""
    words: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if is_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Lexer:
    """One pass over one word; the state BuildKit's shellWord keeps."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str, *,
                 raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False):
        if escape not in ("\\", "`"):
            raise ValueError(f"escape token must be '\\' or '`', not {escape!r}")
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.used: set[str] = set()

    # -- scanner ---------------------------------------------------------------------------
    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    # -- grammar ---------------------------------------------------------------------------
    def process(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, list[str]]:
        """Read up to ``stop`` (or the end): the word and its split words."""
        result: list[str] = []
        words = _Words()
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "'":
                text = self.single_quote()
                result.append(text)
                words.add_raw(text)
            elif ch == '"':
                text = self.double_quote()
                result.append(text)
                words.add_raw(text)
            elif ch == "$":
                text = self.dollar()
                result.append(text)
                words.add_string(text)
            else:
                ch = self.next()
                if ch == self.escape:
                    if raw_escapes or self.raw_escapes:
                        result.append(ch)
                        words.add_raw(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _Syntax(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        self.next()
        start = self.pos
        end = self.text.find("'", start)
        if end < 0:
            raise _Syntax("unexpected end of statement while looking for matching single-quote")
        self.pos = end + 1
        body = self.text[start:end]
        return f"'{body}'" if self.raw_quotes else body

    def double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise _Syntax(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                body = "".join(out)
                return f'"{body}"' if self.raw_quotes else body
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                following = self.peek()
                if not following:
                    continue  # an escape at the very end is dropped
                if following in ('"', "$", self.escape):
                    if self.raw_escapes:
                        out.append(ch)
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        """A variable name: letters, digits, ``_``; or all digits; or one special char."""
        ch = self.peek()
        if not ch:
            return ""
        if ch.isdecimal():
            start = self.pos
            while self.peek() and self.peek().isdecimal():
                self.pos += 1
            return self.text[start:self.pos]
        if ch in _SPECIAL_PARAMS:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalpha() or self.peek().isdecimal()
                               or self.peek() == "_"):
            self.pos += 1
        return self.text[start:self.pos]

    def lookup(self, name: str) -> tuple[str, bool]:
        self.used.add(name)
        if name in self.env:
            return self.env[name], True
        return "", False

    def dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()  # the {
        ch = self.peek()
        if not ch:
            raise _Syntax("syntax error: missing '}'")
        if ch in "{}:":
            raise _Syntax("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if not ch:
            raise _Syntax("syntax error: missing '}'")
        if ch == "}":
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if not name:
            raise _Syntax(f"unsupported modifier ({ch}) in substitution")
        if ch == "/":
            return self.replace(name)
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier = ":" + ch
        if ch not in ("+", "-", "?", "#", "%"):
            raise _Syntax(f"unsupported modifier ({modifier}) in substitution")
        trims = ch in "#%"
        if null_is_unset and trims:
            raise _Syntax(f"unsupported modifier ({modifier}) in substitution")
        word = self.closing(raw_escapes=trims)
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            return "${" + name + modifier + word + "}"
        missing = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if missing else value
        if ch == "+":
            return "" if missing else word
        if ch == "?":
            if not found:
                raise _Syntax(f"{name}: {word or 'is not allowed to be unset'}")
            if missing:
                raise _Syntax(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        longest = word.startswith(ch)
        if longest:
            word = word[1:]
        return _trim(value, word, suffix=ch == "%", longest=longest, escape=self.escape)

    def closing(self, *, raw_escapes: bool, stop: str = "}") -> str:
        try:
            word, _ = self.process(stop, raw_escapes=raw_escapes)
        except _Syntax:
            if not self.peek():
                raise _Syntax(f"syntax error: missing '{stop}'") from None
            raise
        return word

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self.closing(raw_escapes=True, stop="/")
        replacement = self.closing(raw_escapes=False)
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            return "${" + name + ("//" if replace_all else "/") + pattern + "/" + replacement + "}"
        if not pattern:
            return value
        regex = re.compile(_glob_to_regex(pattern, self.escape), re.DOTALL)
        return _replace(regex, value, replacement, replace_all)


def _glob_to_regex(pattern: str, escape: str) -> str:
    """A shell pattern (``*``, ``?``, ``[...]``, escapes) as a Python regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == escape and i < len(pattern):
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1 if i < len(pattern) and pattern[i] in "!^]" else i)
            if end < 0:
                out.append(re.escape(ch))
                continue
            body = pattern[i:end]
            i = end + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _replace(regex: re.Pattern[str], value: str, replacement: str, replace_all: bool) -> str:
    """Replace the first (or every) match; like Go, an empty match right after a match is
    skipped (Python's ``re.sub`` would replace it too: ``${V//*/X}`` must give one X)."""
    out: list[str] = []
    pos = 0
    last_end = -1
    while pos <= len(value):
        match = regex.search(value, pos)
        if match is None:
            break
        start, end = match.span()
        if start == end and start == last_end:
            if start < len(value):
                out.append(value[start])
            pos = start + 1
            continue
        out.append(value[pos:start])
        out.append(replacement)
        last_end = end
        if not replace_all:
            pos = end
            break
        if start == end:
            if start < len(value):
                out.append(value[start])
            pos = end + 1
        else:
            pos = end
    out.append(value[pos:])
    return "".join(out)


def _trim(value: str, pattern: str, *, suffix: bool, longest: bool, escape: str) -> str:
    """``${V#p}``, ``${V##p}``, ``${V%p}``, ``${V%%p}``: drop the shortest/longest match."""
    if not pattern:
        return value
    regex = re.compile(_glob_to_regex(pattern, escape), re.DOTALL)
    sizes = range(len(value), -1, -1) if longest else range(len(value) + 1)
    for size in sizes:
        part = value[len(value) - size:] if suffix else value[:size]
        if regex.fullmatch(part):
            return value[:len(value) - size] if suffix else value[size:]
    return value


def _run(word: str, env: Mapping[str, str] | Iterable[str] | None, escape: str,
         **options: bool) -> tuple[str, list[str]]:
    lexer = _Lexer(word, _as_mapping(env), escape, **options)
    try:
        return lexer.process()
    except _Syntax as exc:
        raise ExpansionError(str(exc), word=word) from None


def _as_mapping(env: Mapping[str, str] | Iterable[str] | None) -> Mapping[str, str]:
    """A mapping from a mapping, or from ``["K=V", ...]`` (first one wins, as in BuildKit)."""
    if env is None:
        return {}
    if isinstance(env, Mapping):
        return env
    result: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if key not in result:
            result[key] = value if sep else ""
    return result


def lex_words(text: str, escape: str = "\\", *, raw_quotes: bool = False,
              raw_escapes: bool = False, skip_unset: bool = True) -> list[str]:
    """Split without an environment, optionally keeping quotes and escapes as written.

    This is how Docker finds heredoc names (``<<EOF``, ``<<'EOF'``) in an instruction line:
    unset variables stay as written (``skip_unset``). Raises :class:`ExpansionError`.
    """
    return _run(text, {}, escape, raw_quotes=raw_quotes, raw_escapes=raw_escapes,
                skip_unset=skip_unset)[1]


def expand(word: str, env: Mapping[str, str] | Iterable[str] | None = None,
           escape: str = "\\") -> str:
    """Expand one word: quotes removed, escapes applied, variables substituted, no splitting.

    Raises :class:`ExpansionError` on bad syntax or a ``${V:?msg}`` whose V is unset.
    """
    return _run(word, env, escape)[0]


def expand_words(text: str, env: Mapping[str, str] | Iterable[str] | None = None,
                 escape: str = "\\") -> list[str]:
    """Expand, then split on blanks that were neither quoted nor escaped."""
    return _run(text, env, escape)[1]


def variables_used(word: str, escape: str = "\\") -> set[str]:
    """The names a word refers to (for build cache keys and unused-ARG warnings)."""
    lexer = _Lexer(word, {}, escape)
    with contextlib.suppress(_Syntax):
        lexer.process()
    return lexer.used


def unquote(text: str, escape: str = "\\") -> str:
    """Quote and escape removal without variable expansion (``$V`` stays as written)."""
    return _run(text, {}, escape, skip_unset=True)[0]


def split_raw_words(text: str, escape: str = "\\") -> list[str]:
    """Split on unquoted blanks, keeping quotes and escapes in the words (Docker's parseWords).

    This is how ENV, LABEL and ARG lines are cut into ``KEY=VALUE`` items before expansion.
    """
    words: list[str] = []
    word: list[str] = []
    quote = ""  # the open quote, if any
    started = False  # inside a word (or a quote)
    blank_ok = False  # a quoted empty word still counts
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        i += 1
        if not started:
            if is_space(ch):
                continue
            started = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i == n:
                    quote = ""
                    continue  # an escape at the very end is dropped
                word.append(ch)
                ch = text[i]
                i += 1
            word.append(ch)
            continue
        if is_space(ch):
            if blank_ok or word:
                words.append("".join(word))
            word = []
            blank_ok = False
            started = False
            continue
        if ch in ("'", '"'):
            quote = ch
            blank_ok = True
        elif ch == escape:
            if i == n:
                continue  # an escape at the very end is dropped
            word.append(ch)
            ch = text[i]
            i += 1
        word.append(ch)
    if started and (blank_ok or word):
        words.append("".join(word))
    return words


def parse_key_values(text: str, escape: str = "\\", *,
                     instruction: str = "ENV") -> list[tuple[str, str]]:
    """Raw ``(key, value)`` pairs of an ENV or LABEL line, in either form Docker accepts.

    ``KEY=VALUE KEY2="VALUE 2"`` gives one pair per word; the legacy ``KEY some value`` gives
    one pair whose value is the rest of the line. Values are as written: pass them through
    :func:`expand`. Raises :class:`DockerfileError` (no location) on a malformed line.
    """
    words = split_raw_words(text, escape)
    if not words:
        raise DockerfileError(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        parts = re.split(r"[\t\v\f\r ]+", text, maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(f"{instruction} must have two arguments")
        return [(parts[0], parts[1])]
    pairs: list[tuple[str, str]] = []
    for word in words:
        if "=" not in word:
            raise DockerfileError(
                f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        key, _, value = word.partition("=")
        pairs.append((key, value))
    return pairs
