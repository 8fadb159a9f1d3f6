"""The one error the test environment raises: a missing tool or a failing command, in one line."""

from __future__ import annotations


class EnvironmentProblem(RuntimeError):
    """The test environment cannot be set up; the message says which package or command."""


def stderr_tail(text: str | bytes, lines: int = 8) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.strip().splitlines()[-lines:])
