"""Disposable containers for pytest.

This module stays light: pytest imports it in every run through the plugin entry point, so the
public names below are loaded on first use, not at import.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Compose",
    "Container",
    "ExecResult",
    "Image",
    "Network",
    "Volume",
    "errors",
    "wait",
]

_LAZY = {
    "errors": ("pytest_pycontain.errors", None),
    "wait": ("pytest_pycontain.wait", None),
    "ExecResult": ("pytest_pycontain.engine", "ExecResult"),
    "Compose": ("pytest_pycontain.compose.stack", "Compose"),
    "Container": ("pytest_pycontain.engine", "Container"),
    "Network": ("pytest_pycontain.engine", "Network"),
    "Volume": ("pytest_pycontain.engine", "Volume"),
    "Image": ("pytest_pycontain.image", "Image"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pytest_pycontain' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
