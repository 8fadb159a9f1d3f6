"""The daemonless engine: containers as Linux namespaces, overlayfs and cgroups.

Nothing heavy is imported here: the plugin loads ``native.engine`` only when a test asks for a
container, so a run that uses no container pays nothing. ``NativeEngine`` is loaded on first
use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NativeEngine"]


def __getattr__(name: str) -> Any:
    if name == "NativeEngine":
        from .engine import NativeEngine

        return NativeEngine
    raise AttributeError(f"module 'pytest_pycontain.native' has no attribute {name!r}")
