"""The pytest11 entry point: options, ini keys, the marker, and the report header.

This module is imported in every pytest run, so it imports nothing heavy: the engine, pyroute2
and docker are loaded only when a pycontain fixture is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import backends
from .config import OPTIONS, Settings, read_pyproject, resolve
from .errors import ConfigError

SETTINGS_KEY = pytest.StashKey[Settings]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pycontain", "disposable containers (pytest-pycontain)")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"dest": f"pycontain_{option.name}", "help": option.help}
        if option.name == "build_arg":
            kwargs.update(action="append", default=[], metavar="KEY=VALUE")
        elif option.name == "no_cache":
            kwargs.update(action="store_const", const=True, default=None)
        elif option.choices:
            kwargs.update(default=None, choices=option.choices)
        else:
            kwargs.update(default=None, metavar=option.name.upper())
        group.addoption(option.flag, **kwargs)
        parser.addini(option.ini, help=option.help, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pycontain(image=, dockerfile=, context=, scope=, env=, ports=, wait=, build_args=): "
        "configure the `container` fixture for this test",
    )


def settings(pytest_config: pytest.Config) -> Settings:
    """The session's resolved settings (CLI > environment > ini > pyproject > default)."""
    cached = pytest_config.stash.get(SETTINGS_KEY, None)
    if cached is not None:
        return cached
    cli = {o.name: pytest_config.getoption(f"pycontain_{o.name}") for o in OPTIONS}
    ini = {o.name: pytest_config.getini(o.ini) for o in OPTIONS}
    ini_path = str(pytest_config.inipath) if pytest_config.inipath else "ini file"
    pyproject, pyproject_path = read_pyproject(Path(pytest_config.rootpath))
    resolved = resolve(
        cli=cli, ini=ini, ini_path=ini_path, pyproject=pyproject, pyproject_path=pyproject_path
    )
    pytest_config.stash[SETTINGS_KEY] = resolved
    return resolved


def choose_backend(pytest_config: pytest.Config) -> tuple[str, str]:
    """The engine for this run and why; hook implementations may decide first."""
    requested = settings(pytest_config).backend
    chosen = pytest_config.hook.pytest_pycontain_choose_backend(
        config=pytest_config, requested=requested
    )
    return chosen or backends.choose(requested)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        backend, reason = choose_backend(config)
    except ConfigError as exc:
        raise pytest.UsageError(f"pycontain: {exc}") from None
    return f"pycontain: engine {backend} ({reason}); started on first use"
