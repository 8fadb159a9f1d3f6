"""The pytest11 entry point: hooks, options, ini keys, the marker and the report header.

The fixtures live in ``fixtures.py`` (imported here so that pytest finds them in this plugin).
This module is imported in every pytest run, so it imports nothing heavy: the engine, pyroute2
and docker are loaded only when a pycontain fixture is first used.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any

import pytest

from . import backends
from .config import OPTIONS, Settings, read_pyproject, resolve
from .engine import Engine
from .errors import ConfigError, PycontainError
from .fixtures import (
    FAILED_KEY,
    KEPT_KEY,
    SESSION_KEY,
    PycontainSession,
    compose,
    container,
    containers_of,
    pycontain,
    pycontain_session,
)
from .reports import short_failure, wants_short

# the fixtures this plugin provides
__all__ = ["compose", "container", "pycontain", "pycontain_session"]

KEPT_ATTRIBUTE = "pycontain_kept"  # on a teardown report: survives xdist's serialisation


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pycontain", "disposable containers (pytest-pycontain)")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"dest": f"pycontain_{option.name}", "help": option.help}
        if option.name == "build_arg":
            kwargs.update(action="append", default=[], metavar="KEY=VALUE")
        elif option.name in ("compose", "compose_profiles"):
            kwargs.update(action="append", default=[], metavar=option.name.upper())
        elif option.name in ("no_cache", "reuse_enabled", "reuse"):
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
        "pycontain(image=, dockerfile=, context=, scope=, env=, ports=, wait=, build_args=, "
        "compose=, compose_profiles=, privileged=, cap_add=, cap_drop=, security_opt=, "
        "sysctls=): configure the `container` and `compose` fixtures for "
        "this test",
    )
    try:  # a bad value stops the run here, before any test, wherever it came from
        state = PycontainSession(config, settings(config))
    except ConfigError as exc:
        if config.option.help:  # --help still helps: the user may be looking for the fix
            return
        raise pytest.UsageError(f"pycontain: {exc}") from None
    state.progress.write = _terminal_progress(config)
    config.stash[SESSION_KEY] = state
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        # a failure here is the workers' engines' to say, at the first test that needs one
        with suppress(PycontainError):
            backends.prepare_workers(state.settings.backend)
    config.pluginmanager.register(KeptSummary(), "pycontain-kept-summary")


def settings(pytest_config: pytest.Config) -> Settings:
    """The session's resolved settings (CLI > environment > ini > pyproject > default)."""
    cli = {o.name: pytest_config.getoption(f"pycontain_{o.name}") for o in OPTIONS}
    ini = {o.name: pytest_config.getini(o.ini) for o in OPTIONS}
    ini_path = str(pytest_config.inipath) if pytest_config.inipath else "ini file"
    pyproject, pyproject_path = read_pyproject(Path(pytest_config.rootpath))
    return resolve(
        cli=cli, ini=ini, ini_path=ini_path, pyproject=pyproject, pyproject_path=pyproject_path
    )


@pytest.hookimpl(trylast=True)
def pytest_pycontain_make_engine(config: pytest.Config, settings: Settings) -> Engine | None:
    """The built-in engines: native or Docker, as the ``backend`` setting and the host say."""
    return backends.make(settings)


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None:
        return None
    line = f"pycontain: {backends.header(state.settings.backend)}"
    hook = config.pluginmanager.hook.pytest_pycontain_make_engine
    others = sorted({_plugin_label(impl.plugin, config) for impl in hook.get_hookimpls()
                     if impl.function is not pytest_pycontain_make_engine})
    if others:  # they decide first, at first use; the built-in choice is the fallback
        line += f"; a plugin may supply the engine first: {', '.join(others)}"
    return line


def _plugin_label(plugin: object, config: pytest.Config) -> str:
    """A plugin as a user knows it: a conftest's path, a module's or a class's name."""
    path = getattr(plugin, "__file__", None)
    if isinstance(plugin, types.ModuleType):
        if path and plugin.__name__.rpartition(".")[2] == "conftest":
            return os.path.relpath(path, config.rootpath)
        return plugin.__name__
    return type(plugin).__name__


def _terminal_progress(config: pytest.Config) -> Callable[[list[str]], None] | None:
    """Where build and pull steps go: the terminal, or nowhere under ``-q``."""
    if config.option.verbose < 0:
        return None

    def write(lines: list[str]) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        suspended = capture.global_and_fixture_disabled() if capture else nullcontext()
        with suspended:  # setup output is captured; progress is for the terminal now
            reporter.ensure_newline()
            for text in lines:
                reporter.write_line(f"pycontain: {text}")

    return write


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[FAILED_KEY] = True
        if call.excinfo is not None and wants_short(item.config):
            short = short_failure(item, call.excinfo)
            if short is not None:
                report.longrepr = short
        state = item.config.stash.get(SESSION_KEY, None)
        lines = state.settings.log_lines if state else 50
        titles = {title for title, _ in report.sections}
        for tracked in containers_of(item):
            try:
                text = tracked.logs()
            except Exception as exc:  # the log is evidence; never hide the failure itself
                text = f"(logs unavailable: {exc})"
            body = "\n".join(text.splitlines()[-lines:]) if lines else text
            title = f"pycontain log: {tracked.name}"
            if title in titles:  # two containers of one name (a restart): each its own section
                title = f"{title} ({str(getattr(tracked, 'id', ''))[:12]})"
            titles.add(title)
            report.sections.append((title, body))
    if report.when == "teardown" and item.stash.get(KEPT_KEY, None):
        setattr(report, KEPT_ATTRIBUTE, item.stash[KEPT_KEY])
    return report


class KeptSummary:
    """Collects what was kept from the teardown reports, here or (under xdist) from the
    workers', and prints it at the end: the controller is where the user looks."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.lines.extend(getattr(report, KEPT_ATTRIBUTE, None) or ())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("pycontain: kept containers")
            for line in self.lines:
                terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is not None:
        state.close()
