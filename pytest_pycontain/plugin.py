"""The pytest11 entry point: options, ini keys, the marker, and the report header.

This module is imported in every pytest run, so it imports nothing heavy: the engine, pyroute2
and docker are loaded only when a pycontain fixture is first used.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from . import backends
from .config import OPTIONS, Settings, read_pyproject, resolve
from .errors import ConfigError

SETTINGS_KEY = pytest.StashKey[Settings]()
SESSION_KEY = pytest.StashKey[Any]()  # the PycontainSession, once a fixture has been used
CONTAINERS_KEY = pytest.StashKey[list]()  # containers a test used, for its report
FAILED_KEY = pytest.StashKey[bool]()  # the test failed (setup or call): keep-on-failure
KEPT_KEY = pytest.StashKey[list]()  # lines printed at the end for kept containers


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
        "pycontain(image=, dockerfile=, context=, scope=, env=, ports=, wait=, build_args=, "
        "compose=, compose_profiles=): configure the `container` and `compose` fixtures for "
        "this test",
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
    line = f"pycontain: engine {backend} ({reason}); started on first use"
    if backend == "docker":  # which builder: the docker CLI's BuildKit, or the API's classic
        from .docker import builder

        found = builder()
        line += (f"; builds with BuildKit through {found[0]}" if found
                 else "; builds with the engine's classic builder (no docker CLI with BuildKit)")
    return line


def _session(config: pytest.Config) -> Any:
    state = config.stash.get(SESSION_KEY, None)
    if state is None:
        from .fixtures import PycontainSession

        try:
            state = PycontainSession(config, settings(config), choose_backend(config))
        except ConfigError as exc:
            raise pytest.UsageError(f"pycontain: {exc}") from None
        state.progress.write = _terminal_progress(config)
        config.stash[SESSION_KEY] = state
    return state


def _terminal_progress(config: pytest.Config) -> Any:
    """Where build and pull steps go: the terminal, or nowhere under ``-q``."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.option.verbose < 0:
        return None

    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(lines: list[str]) -> None:
        suspended = capture.global_and_fixture_disabled() if capture else nullcontext()
        with suspended:  # setup output is captured; progress is for the terminal now
            reporter.ensure_newline()
            for text in lines:
                reporter.write_line(f"pycontain: {text}")

    return write


def _track(item: pytest.Item, container: Any) -> None:
    item.stash.setdefault(CONTAINERS_KEY, []).append(container)


@pytest.fixture(scope="session")
def pycontain_session(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """The container factory for session-scoped fixtures; what it made is removed at the end."""
    from .fixtures import Factory

    factory = Factory(_session(request.config), "pycontain_session")
    yield factory
    factory.close()


@pytest.fixture
def pycontain(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """The container factory: ``run``, ``build``, ``pull``, ``network``; removed after the test."""
    from .fixtures import Factory

    factory = Factory(_session(request.config), f"pycontain of {request.node.nodeid}")
    factory.on_container = lambda c: _track(request.node, c)
    yield factory
    _keep_or_close(request, factory)


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """A container of the configured image running its default command (DESIGN.md §1)."""
    from .fixtures import Factory, container_request, start_container

    state = _session(request.config)
    kwargs: dict[str, Any] = {}
    for marker in request.node.iter_markers("pycontain"):  # closest first: it wins per key
        for key, value in marker.kwargs.items():
            kwargs.setdefault(key, value)
    problem = None
    try:
        wanted = container_request(state.settings, kwargs, request.node.nodeid)
    except ConfigError as exc:
        problem = f"pycontain: {exc}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    if wanted.scope == "function":
        factory = Factory(state, f"container of {request.node.nodeid}")
        factory.on_container = lambda c: _track(request.node, c)
        try:
            yield start_container(factory, wanted)
        finally:
            _keep_or_close(request, factory)
        return
    owner: Any = request.session
    if wanted.scope == "module":
        owner = request.node.getparent(pytest.Module) or request.session
    key = (owner.nodeid, wanted)
    if key not in state.shared:
        factory = Factory(state, f"{wanted.scope}-scoped container")
        try:
            state.shared[key] = start_container(factory, wanted)
        except Exception as exc:
            state.shared[key] = exc
            factory.close()
            raise

        def finish(key: Any = key, factory: Any = factory) -> None:
            state.shared.pop(key, None)
            factory.close()

        owner.addfinalizer(finish)
    shared = state.shared[key]
    if isinstance(shared, Exception):
        raise shared
    _track(request.node, shared)
    yield shared


@pytest.fixture
def compose(pycontain: Any, request: pytest.FixtureRequest) -> Any:
    """A Compose stack per test: the marker's ``compose=``/``compose_profiles=``, else the
    configured files and profiles, else ``compose.yaml`` in the rootdir."""
    configured = settings(request.config)
    marker = request.node.get_closest_marker("pycontain")
    wanted = dict(marker.kwargs) if marker else {}
    files = wanted.get("compose", configured.compose)
    profiles = wanted.get("compose_profiles", configured.compose_profiles)
    for key, value in (("compose", files), ("compose_profiles", profiles)):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            pytest.fail(f"pycontain: {request.node.nodeid}: @pytest.mark.pycontain({key}=...) "
                        f"must be a list of strings, not {value!r}", pytrace=False)
    return pycontain.compose(*files, profiles=tuple(profiles))


def _keep_or_close(request: pytest.FixtureRequest, factory: Any) -> None:
    """Keep the containers of a failed test alive (``--pycontain-keep``), close the rest."""
    keep = factory._session.settings.keep
    failed = request.node.stash.get(FAILED_KEY, False)
    if keep == "always" or (keep == "failed" and failed):
        engine = factory.engine
        for item in factory.containers:
            try:
                engine.keep(item)
            except Exception as exc:  # keeping is a courtesy: removal must still happen
                request.config.stash.setdefault(KEPT_KEY, []).append(
                    f"could not keep {item.name}: {exc}")
                continue
            factory.detach(item)
            tool = "docker" if engine.name == "docker" else "pycontain"
            exec_flags = " -it" if tool == "docker" else ""
            remove = "rm -f" if tool == "docker" else "rm"
            request.config.stash.setdefault(KEPT_KEY, []).append(
                f"kept {item.name} ({request.node.nodeid}): enter with `{tool} exec{exec_flags} "
                f"{item.id} sh`, remove with `{tool} {remove} {item.id}`")
    factory.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[FAILED_KEY] = True
        state = item.config.stash.get(SESSION_KEY, None)
        lines = state.settings.log_lines if state else 50
        for tracked in item.stash.get(CONTAINERS_KEY, []):
            try:
                text = tracked.logs()
            except Exception as exc:  # the log is evidence; never hide the failure itself
                text = f"(logs unavailable: {exc})"
            body = "\n".join(text.splitlines()[-lines:]) if lines else text
            report.sections.append((f"pycontain log: {tracked.name}", body))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(KEPT_KEY, [])
    if kept:
        terminalreporter.section("pycontain: kept containers")
        for line in kept:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is not None:
        state.close()
