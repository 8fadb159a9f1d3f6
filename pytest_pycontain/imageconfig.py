"""The rules of Docker's image config that more than one part of the package applies.

The builder writes an image's ``Env`` and runs RUN with its shell, the engines start containers
and exec commands: each of them must read ``Env``, fall back to the same ``PATH`` and run a
string with the same shell, or the backends and the builder drift apart. So these live here,
once, with nothing else (this module imports nothing of the package).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_PATH", "DEFAULT_SHELL", "shell_argv", "split_env"]

# What Docker puts in an image's (and a container's) Env when nothing sets PATH.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The shell that runs a command given as a string: ``run(command="...")``, ``exec("...")``
# and a Dockerfile's shell-form RUN/CMD/ENTRYPOINT while no SHELL instruction says otherwise.
DEFAULT_SHELL = ("/bin/sh", "-c")


def shell_argv(command: str | Sequence[str]) -> list[str]:
    """A string runs with ``/bin/sh -c``; a list runs as it is (each word as a string)."""
    if isinstance(command, str):
        return [*DEFAULT_SHELL, command]
    return [str(word) for word in command]


def split_env(items: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["K=V", ...]`` (an image's ``Env``) or a mapping -> a dict; a later duplicate wins,
    as in Docker, and an item without ``=`` is a variable with an empty value."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    result: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        result[key] = value
    return result
