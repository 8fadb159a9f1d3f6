"""Short reports for our own errors: the message and the user's line, not our internals.

A ``PullError`` raised three layers down, from a registry client that wraps ``http.client``
and ``socket``, would otherwise fill a screen with frames that are ours or the standard
library's and say nothing the message does not. The user needs the message and the line of
their code that led there; ``--tb=long``, ``--tb=native``, ``--full-trace`` and ``-v`` still show
everything (pytest-timeout and pytest-xdist report their failures as briefly).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import pluggy
import pytest

from .errors import PycontainError

PACKAGE = Path(__file__).resolve().parent
HIDDEN = (PACKAGE,  # and the machinery between a test and its fixtures: pytest and pluggy
          Path(pytest.__file__).resolve().parent,
          Path(inspect.getfile(pytest.Item)).resolve().parent,
          Path(inspect.getfile(pluggy.PluginManager)).resolve().parent)


def wants_short(config: pytest.Config) -> bool:
    """Short unless the user asked for more: a long traceback style, ``-v`` or full traces."""
    option = config.option
    return (getattr(option, "tbstyle", "auto") in ("auto", "short")
            and getattr(option, "verbose", 0) <= 0
            and not getattr(option, "fulltrace", False))


def short_failure(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> str | None:
    """The report for a ``PycontainError``: where the user's code led to it, then the error;
    ``None`` for any other exception (pytest's own report stays)."""
    if not isinstance(excinfo.value, PycontainError):
        return None
    entries = list(excinfo.traceback)
    ours = next((n for n, e in enumerate(entries) if _inside(e.path, PACKAGE)), len(entries))
    users = [e for e in entries[:ours] if not _hidden(e.path)]
    if not users and ours == len(entries):  # raised by the user's own code: their last line
        users = [e for e in entries if not _hidden(e.path)]
    invocation = Path(item.config.invocation_params.dir)
    if users:
        entry = users[-1]
        statement = " ".join(str(entry.statement).split()) if entry.statement else ""
        where = (f"at {_relative(Path(entry.path), invocation)}:{entry.lineno + 1}, in "
                 f"{entry.name}" + (f": {statement}" if statement else ""))
    else:  # one of our fixtures failed: the test that asked for it is the user's line
        path, lineno, domain = item.location
        fixture = entries[ours].name if ours < len(entries) else "a pycontain fixture"
        where = f"at {path}:{(lineno or 0) + 1}, in {domain}: setting up `{fixture}`"
    # the error first: pytest's short summary shows the first line of a text report
    return "\n".join([f"{type(excinfo.value).__name__}: {excinfo.value}", f"  {where}",
                      "  (pytest-pycontain hid its own frames; --tb=long or -v shows them)"])


def _inside(path: Any, directory: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(directory)
    except (OSError, ValueError, TypeError):
        return False


def _hidden(path: Any) -> bool:
    return any(_inside(path, directory) for directory in HIDDEN)


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base) if path.is_relative_to(base) else str(path)
    except ValueError:
        return str(path)
