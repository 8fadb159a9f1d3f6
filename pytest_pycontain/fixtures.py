"""The fixtures: ``container``, ``pycontain`` (per test) and ``pycontain_session``.

Nothing here touches an engine until a fixture is used: the engine is made on first use, once
per session (and per xdist worker), through the ``pytest_pycontain_make_engine`` hook, and
reaps what killed runs left before it starts. The plugin (``plugin.py``) makes the
``PycontainSession`` at configure time and keeps it, like all its state, in stashes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .config import Settings, apply_marker
from .engine import Engine, Mount, RunSpec
from .errors import ConfigError, EngineUnavailable, NotSupported, PycontainError
from .frozen import FrozenMap
from .namedvolumes import open_volume
from .runspec import parse_env, parse_ports

SESSION_KEY = pytest.StashKey["PycontainSession"]()  # config: made at configure time
CONTAINERS_KEY = pytest.StashKey[list[Any]]()  # item: containers a test used, for its report
FAILED_KEY = pytest.StashKey[bool]()  # item: the test failed (setup or call): keep-on-failure
KEPT_KEY = pytest.StashKey[list[str]]()  # item: what was kept, for its teardown report

BOUNDARY_KEYS = ("privileged", "cap_add", "cap_drop", "security_opt", "sysctls")
MARKER_KEYS = ("image", "dockerfile", "context", "scope", "env", "ports", "wait", "build_args",
               *BOUNDARY_KEYS,
               "target", "compose", "compose_profiles")


class Factory:
    """Makes containers, images and networks, and removes what it made when closed."""

    def __init__(self, session: PycontainSession, label: str):
        self._session = session
        self._label = label
        self._containers: list[Any] = []
        self._networks: list[Any] = []
        self._volumes: list[Any] = []
        self.on_container: Callable[[Any], None] | None = None

    @property
    def engine(self) -> Engine:
        return self._session.engine

    @property
    def reusing(self) -> bool:
        """Whether ``reuse=True`` takes effect: the user opted in (``--pycontain-reuse``)."""
        return self._session.settings.reuse_enabled

    def run(self, image: Any, *, name: str | None = None,
            command: str | Sequence[str] | None = None,
            entrypoint: str | Sequence[str] | None = None, env: Mapping[str, str] | None = None,
            network: Any = None, aliases: Sequence[str] | None = None,
            ports: Sequence[int] | Mapping[int, int | None] | None = None,
            hostname: str | None = None,
            user: str | None = None, workdir: str | None = None,
            mounts: Sequence[str | Mount] | None = None, tmpfs: Mapping[str, str] | None = None,
            read_only: bool = False, init: bool = False, wait: Any = None,
            memory: int | str | None = None, cpus: float | None = None,
            pids: int | None = None, privileged: bool = False,
            cap_add: Sequence[str] | None = None, cap_drop: Sequence[str] | None = None,
            security_opt: Sequence[str] | None = None,
            sysctls: Mapping[str, str] | None = None, shm_size: int | str | None = None,
            extra_hosts: Mapping[str, str] | Sequence[str] | None = None,
            volumes: Mapping[Any, str] | Sequence[str] | None = None,
            reuse: bool = False, stop_signal: str | int | None = None,
            labels: Mapping[str, str] | Sequence[str] | None = None) -> Any:
        """Start a container; with ``wait``, return once it is ready. Every option is checked
        before anything is pulled; relative mount sources (and seccomp profiles) are taken from
        the pytest rootdir. ``reuse``: with the opt-in (``--pycontain-reuse``), it outlives the
        run and the next run that asks for the same thing gets it again (see ``reuse.py``)."""
        if not isinstance(reuse, bool):
            raise ConfigError(f"reuse={reuse!r}: expected True or False")
        spec = RunSpec.create(image, base=self._session.resolve_path("."), name=name,
                              command=command, entrypoint=entrypoint, env=env, network=network,
                              aliases=aliases, ports=ports, hostname=hostname, user=user,
                              workdir=workdir, mounts=mounts, tmpfs=tmpfs, read_only=read_only,
                              init=init, memory=memory, cpus=cpus, pids=pids,
                              privileged=privileged, cap_add=cap_add, cap_drop=cap_drop,
                              security_opt=security_opt, sysctls=sysctls,
                              shm_size=shm_size, extra_hosts=extra_hosts, volumes=volumes,
                              stop_signal=stop_signal, labels=labels)
        reusing = reuse and self.reusing
        for wanted in spec.volumes:
            if reusing and not isinstance(wanted.source, str):
                raise ConfigError(
                    f"reuse=True: volumes: give the volume {wanted.name!r} by its name: a "
                    "reused container keeps volumes of its own, and a volume made by this run "
                    "ends with its scope")
            # a volume named here is this scope's, unless one was made already (a wider
            # scope's, say); a reused container's are its own (the engine makes them)
            if isinstance(wanted.source, str) and not reusing:
                self.volume(wanted.source)
        if isinstance(image, str) and self._session.settings.pull != "never":
            spec = dataclasses.replace(spec, image=self.pull(image))
        if reusing:
            container = self._reused(spec, name or _image_label(image), wait)
            if self.on_container is not None:
                self.on_container(container)
            return container
        container = self.engine.run(spec)
        self._containers.append(container)
        if self.on_container is not None:
            self.on_container(container)
        if wait is not None:
            from .wait import until_ready

            until_ready(container, wait, self._session.settings.timeout)
        return container

    def _reused(self, spec: RunSpec, label: str, wait: Any) -> Any:
        """The container of this request reused across runs: found again, else made and
        handed over so that it outlives the run; never removed by this factory."""
        from .reuse import call_site, find_or_make, kept_network, request_key

        engine = self.engine
        if not hasattr(engine, "reused"):
            raise NotSupported(f"reuse=True: the {engine.name} engine cannot reuse containers "
                               "across runs")
        if isinstance(spec.image, str):  # pull=never: the engine resolves the reference
            spec = dataclasses.replace(spec, image=engine.pull(spec.image))
        key = request_key(spec, self._session.resolve_path("."), label)
        self._session.reuse_claims.claim(key, call_site())
        settings = self._session.settings

        network = spec.network
        joined = self._session.reuse_joined
        rejoin = getattr(engine, "rejoin", None)

        def ready(container: Any) -> None:
            if wait is not None:
                from .wait import until_ready

                until_ready(container, wait, settings.timeout)
            engine.keep(container)
            if rejoin is not None and network not in (None, "host", "none"):  # made on it
                joined.add((container.id, network.id))

        config = getattr(spec.image, "config", None) or {}
        if network in (None, "host", "none"):
            return find_or_make(engine, spec, key, settings.state_path, config, ready)
        if rejoin is not None:  # native: made on the run's network, which its keeper keeps;
            # found again, joined to this run's, which it then resolves names through
            container = find_or_make(engine, spec, key, settings.state_path, config, ready)
            if (container.id, network.id) not in joined:
                rejoin(container, network, spec.name, spec.aliases)
                joined.add((container.id, network.id))
            return container
        # Docker: on the network kept for it (names resolve between reused containers from
        # run to run), and on the run's too, where this run's containers resolve it
        kept = kept_network(engine, network, self._session.resolve_path("."),
                            settings.state_path)
        container = find_or_make(engine, dataclasses.replace(spec, network=kept), key,
                                 settings.state_path, config, ready)
        if (container.id, network.id) not in joined:
            network.connect(container, aliases=list(spec.aliases) or None)
            joined.add((container.id, network.id))
        return container

    def build(self, context: str | os.PathLike = ".", *, dockerfile: str | None = None,
              target: str | None = None, build_args: Mapping[str, str] | None = None,
              tag: str | None = None, no_cache: bool = False,
              secrets: Mapping[str, str | os.PathLike] | None = None) -> Any:
        """Build an image; relative paths resolve against the pytest rootdir, ``secrets``
        (id -> file) too: what ``RUN --mount=type=secret,id=...`` gets."""
        context_path = self._session.resolve_path(context)
        dockerfile_path = None
        if dockerfile:  # against the rootdir, like the settings; docker-py's habit as a fallback
            dockerfile_path = self._session.resolve_path(dockerfile)
            in_context = self._session.resolve_path(dockerfile, base=context_path)
            if not dockerfile_path.exists() and in_context.exists():
                dockerfile_path = in_context
        kwargs: dict[str, Any] = {}
        if secrets:  # only when given: an engine of an older signature still builds
            kwargs["secrets"] = FrozenMap((k, self._session.resolve_path(v))
                                          for k, v in secrets.items())
        return self._session.build(context_path, dockerfile=dockerfile_path, target=target,
                                   build_args=FrozenMap(build_args or {}), tag=tag,
                                   no_cache=no_cache or self._session.settings.no_cache,
                                   **kwargs)

    def pull(self, ref: str) -> Any:
        with self._session.progress.operation():
            return self.engine.pull(ref)

    def compose(self, *files: str | os.PathLike, project: str | None = None,
                profiles: Sequence[str] = (), env: Mapping[str, str] | None = None,
                build: bool = True, wait: bool = True, reuse: bool = False) -> Any:
        """Start a Compose project (``compose.yaml`` in the rootdir when no file is given),
        removed with this factory like the rest; without ``project=`` its name is unique.
        ``reuse``: with the opt-in, every service is reused across runs as ``run(...,
        reuse=True)`` reuses a container (the project's name is then compose's own, so that
        the requests are the same from run to run); without it a normal stack."""
        if not isinstance(reuse, bool):
            raise ConfigError(f"compose(reuse={reuse!r}): expected True or False")
        reusing = reuse and self.reusing
        if reusing and not (hasattr(self.engine, "reused_network")
                            or hasattr(self.engine, "rejoin")):
            raise NotSupported(
                f"compose(..., reuse=True): the {self.engine.name} engine cannot keep a "
                "stack's networks across runs; reuse single services with run(..., "
                "reuse=True, ports=[...])")
        from .compose import load
        from .compose.stack import Compose

        rootdir = self._session.resolve_path(".")
        loaded = load([self._session.resolve_path(f) for f in files], directory=rootdir,
                      project=project, profiles=profiles, env=env, unique=not reusing)
        stack = Compose(self, loaded, timeout=self._session.settings.timeout, reuse=reusing)
        return stack.up(build=build, wait=wait)

    def volume(self, name: str | None = None, *, external: bool = False) -> Any:
        """A named volume (``.name``), removed with this factory's scope; a name that a
        volume of this run has already is that volume (and stays its own scope's).
        ``external``: one that exists already (made earlier in this run, or outside it:
        ``docker volume create``, a detached Compose project's), never removed by us; a
        missing one is a ConfigError naming it."""
        return open_volume(self.engine, name, external, self._volumes)

    def expose_host_port(self, port: int) -> str:
        """Containers reach this process's ``127.0.0.1:port`` as ``host.pycontain.internal:
        port`` (returned): mock servers and webhooks in the test process. Needs an engine on
        this machine (``NotSupported`` on a remote Docker Engine)."""
        expose = getattr(self.engine, "expose_host_port", None)
        if expose is None:
            raise NotSupported(f"expose_host_port: the {getattr(self.engine, 'name', '?')} "
                               "engine cannot expose this process's ports to containers")
        return expose(port)

    def network(self, name: str | None = None, *, internal: bool = False) -> Any:
        """A network, removed with this factory; it reaches the outside world as Docker's
        bridge does, unless ``internal``."""
        if not isinstance(internal, bool):
            raise ConfigError(f"network(internal={internal!r}): expected True or False")
        network = (self.engine.network(name, internal=True) if internal
                   else self.engine.network(name))
        self._networks.append(network)
        return network

    @property
    def containers(self) -> list[Any]:
        return list(self._containers)

    def detach(self, container: Any) -> None:
        """Forget ``container`` (it was kept alive for a failed test)."""
        if container in self._containers:
            self._containers.remove(container)

    def close(self) -> None:
        """Kill and remove everything this factory made; errors warn, never hide a result."""
        problems = []
        for container in reversed(self._containers):
            try:
                container.remove()
            except Exception as exc:  # best effort: every container gets its chance
                problems.append(f"container {getattr(container, 'name', '?')}: {exc}")
        for network in reversed(self._networks):
            try:
                network.remove(wait=False)  # the rest of the teardown is off the test's path
            except Exception as exc:
                problems.append(f"network {getattr(network, 'name', '?')}: {exc}")
        for volume in reversed(self._volumes):
            try:
                volume.remove()
            except Exception as exc:
                problems.append(f"volume {getattr(volume, 'name', '?')}: {exc}")
        self._containers.clear()
        self._networks.clear()
        self._volumes.clear()
        if problems:
            warnings.warn(f"pycontain: teardown of {self._label}: " + "; ".join(problems),
                          stacklevel=1)


class Progress:
    """Build and pull steps for the user, shown only once an operation takes a moment: a
    rebuild that is all cached, or a pull of an image already present, prints nothing."""

    delay = 0.5

    def __init__(self) -> None:
        self.write: Callable[[list[str]], None] | None = None
        self._pending: list[str] = []
        self._start: float | None = None

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        self._start, self._pending = time.monotonic(), []
        try:
            yield
        finally:
            self._start, self._pending = None, []

    def __call__(self, line: str) -> None:
        if self.write is None:
            return
        self._pending.append(line)
        if self._start is None or time.monotonic() - self._start >= self.delay:
            self.write(self._pending)
            self._pending = []


class PycontainSession:
    """Per-session state: settings, the engine (made on first use), built images."""

    def __init__(self, config: pytest.Config, settings: Settings):
        self.config = config
        self.settings = settings
        self._engine: Engine | None = None
        self._images: dict[Any, Any] = {}
        self.shared: dict[Any, Any] = {}
        self.progress = Progress()
        self.session_factory: Factory | None = None  # pycontain_session's, while it lives
        from .reuse import ReuseClaims

        # one run's id, which xdist's workers share: claims of one name in one run collide
        workerinput = getattr(config, "workerinput", None)
        run_id = workerinput.get("testrunuid") if isinstance(workerinput, dict) else None
        self.reuse_claims = ReuseClaims(run_id or uuid.uuid4().hex, settings.state_path)
        self.reuse_joined: set[tuple[str, str]] = set()  # (reused container, run's network)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.config, self.settings)
            self._engine.progress = self.progress  # type: ignore[attr-defined]
        return self._engine

    @property
    def started(self) -> bool:
        return self._engine is not None

    def resolve_path(self, path: str | os.PathLike, base: Path | None = None) -> Path:
        path = Path(path)
        if path.is_absolute():
            return path
        return (base or Path(self.config.rootpath)) / path

    def build(self, context: Path, **kwargs: Any) -> Any:
        key = (context, FrozenMap(kwargs))  # every value is hashable: build args are frozen
        if key not in self._images:
            with self.progress.operation():
                self._images[key] = self.engine.build(context, **kwargs)
        return self._images[key]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def make_engine(config: pytest.Config, settings: Settings) -> Engine:
    """The engine from the ``pytest_pycontain_make_engine`` hook (a plugin's, else the
    built-in native or Docker one); when none can run here, say why."""
    engine = config.hook.pytest_pycontain_make_engine(config=config, settings=settings)
    if engine is None:
        from .backends import choose

        _, reason = choose(settings.backend)
        raise EngineUnavailable(f"no engine can run here: {reason}")
    return engine


@dataclasses.dataclass(frozen=True)
class ContainerRequest:
    """What the ``container`` fixture should run, resolved from settings and the marker; frozen
    and hashable, it keys the containers that module- and session-scoped tests share."""

    image: str | None
    dockerfile: str | None
    context: str
    target: str | None
    build_args: Mapping[str, str]
    env: Mapping[str, str]
    ports: Mapping[int, int | None]
    wait: Any
    scope: str
    boundary: Mapping[str, Any] = FrozenMap()  # privileged, cap_add... as RunSpec has them
    reuse: bool = False  # reused across runs where the user opts in


def _image_label(image: Any) -> str:
    """How a reused container without a name is known: its image as the user gave it."""
    if isinstance(image, str):
        return image
    tags = getattr(image, "tags", None)
    return str(tags[0]) if tags else str(getattr(image, "id", image))


def container_request(settings: Settings, marker: Mapping[str, Any],
                      where: str) -> ContainerRequest:
    """Resolve the ``container`` fixture's settings: marker > command line > ... > default."""
    unknown = sorted(set(marker) - set(MARKER_KEYS))
    if unknown:
        raise ConfigError(f"{where}: @pytest.mark.pycontain has unknown key(s) "
                          f"{', '.join(unknown)} (known: {', '.join(MARKER_KEYS)})")
    merged = apply_marker(settings, marker, where)
    if "image" in marker and "dockerfile" in marker:
        raise ConfigError(f"{where}: @pytest.mark.pycontain takes image= or dockerfile=, "
                          "not both")
    if "image" in marker or "dockerfile" in marker:
        image, dockerfile = marker.get("image"), marker.get("dockerfile")
    else:
        image, dockerfile = settings.image, None if settings.image else settings.dockerfile
    if not image and not dockerfile:
        raise ConfigError("the `container` fixture needs an image: set dockerfile in "
                          "[tool.pycontain] or pass --pycontain-image")
    env = marker.get("env") or {}
    if not isinstance(env, Mapping):
        raise ConfigError(f"{where}: @pytest.mark.pycontain(env=...) must be a mapping")
    try:  # the run request's own readers: the same rules and words as pycontain.run()
        env, ports = parse_env(env), parse_ports(marker.get("ports"))
        # (a relative seccomp profile stays relative: factory.run takes it from the rootdir)
        asked = RunSpec(None, **{k: marker[k] for k in BOUNDARY_KEYS if k in marker})
        boundary = FrozenMap({k: getattr(asked, k) for k in BOUNDARY_KEYS if k in marker})
    except ConfigError as exc:
        raise ConfigError(f"{where}: @pytest.mark.pycontain: {exc}") from None
    return ContainerRequest(image=image, dockerfile=dockerfile, context=merged.context,
                            target=merged.target, build_args=merged.build_arg, env=env,
                            ports=ports, wait=marker.get("wait"), scope=merged.scope,
                            boundary=boundary, reuse=merged.reuse)


def start_container(factory: Factory, request: ContainerRequest) -> Any:
    """Build or pull the requested image and run its default command."""
    if request.image:
        image: Any = request.image
    else:
        image = factory.build(request.context, dockerfile=request.dockerfile,
                              target=request.target, build_args=request.build_args)
    if request.reuse and factory.reusing:  # it outlives the run, so no network of the run
        return factory.run(image, env=request.env, ports=request.ports, wait=request.wait,
                           reuse=True, **request.boundary)
    network = factory.network()  # a private network per container: a name, an address, DNS
    return factory.run(image, env=request.env, ports=request.ports, wait=request.wait,
                       network=network, **request.boundary)


def session_of(config: pytest.Config) -> PycontainSession:
    """The run's ``PycontainSession`` (the plugin made it at configure time)."""
    return config.stash[SESSION_KEY]


def track(item: pytest.Item, container: Any) -> None:
    """Remember that ``item`` used ``container``: its logs go into a failed test's report."""
    item.stash.setdefault(CONTAINERS_KEY, []).append(container)


def containers_of(item: pytest.Item) -> list[Any]:
    """The containers whose logs belong in ``item``'s report: those it used, and those of
    ``pycontain_session`` when its fixtures reach that factory (a session database's log is
    often the evidence), each once."""
    found = list(item.stash.get(CONTAINERS_KEY, []))
    state = item.config.stash.get(SESSION_KEY, None)
    factory = state.session_factory if state is not None else None
    if factory is not None and "pycontain_session" in getattr(item, "fixturenames", ()):
        found.extend(factory.containers)
    unique: list[Any] = []
    for container in found:
        if not any(container is seen for seen in unique):
            unique.append(container)
    return unique


@pytest.fixture(scope="session")
def pycontain_session(request: pytest.FixtureRequest) -> Generator[Factory, None, None]:
    """The container factory for session-scoped fixtures; what it made is removed at the end."""
    state = session_of(request.config)
    factory = Factory(state, "pycontain_session")
    state.session_factory = factory
    yield factory
    state.session_factory = None
    factory.close()


@pytest.fixture
def pycontain(request: pytest.FixtureRequest) -> Generator[Factory, None, None]:
    """The container factory: ``run``, ``build``, ``pull``, ``network``; removed after the test."""
    state = session_of(request.config)
    factory = Factory(state, f"pycontain of {request.node.nodeid}")
    factory.on_container = lambda c: track(request.node, c)
    yield factory
    keep_or_close(request.node, factory, state.settings.keep)


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """A container of the configured image running its default command; tests whose resolved
    settings are equal share one when the scope is ``module`` or ``session``."""
    state = session_of(request.config)
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
        factory.on_container = lambda c: track(request.node, c)
        try:
            yield start_container(factory, wanted)
        finally:
            keep_or_close(request.node, factory, state.settings.keep)
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

        def finish(key: Any = key, factory: Factory = factory) -> None:
            state.shared.pop(key, None)
            factory.close()

        owner.addfinalizer(finish)
    shared = state.shared[key]
    if isinstance(shared, Exception):
        raise shared
    track(request.node, shared)
    yield shared


@pytest.fixture
def compose(pycontain: Factory, request: pytest.FixtureRequest) -> Any:
    """A Compose stack per test: the marker's ``compose=``/``compose_profiles=``, else the
    configured files and profiles, else ``compose.yaml`` in the rootdir."""
    configured = session_of(request.config).settings
    marker = request.node.get_closest_marker("pycontain")
    wanted = dict(marker.kwargs) if marker else {}
    files = wanted.get("compose", configured.compose)
    profiles = wanted.get("compose_profiles", configured.compose_profiles)
    for key, value in (("compose", files), ("compose_profiles", profiles)):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            pytest.fail(f"pycontain: {request.node.nodeid}: @pytest.mark.pycontain({key}=...) "
                        f"must be a list of strings, not {value!r}", pytrace=False)
    return pycontain.compose(*files, profiles=tuple(profiles))


def keep_or_close(item: pytest.Item, factory: Factory, keep: str) -> None:
    """Keep the containers of a failed test alive (``--pycontain-keep``), close the rest; what
    was kept is noted on ``item`` for its teardown report (so that under xdist the controller
    can print it)."""
    if keep == "always" or (keep == "failed" and item.stash.get(FAILED_KEY, False)):
        notes = item.stash.setdefault(KEPT_KEY, [])
        engine = factory.engine
        for made in factory.containers:
            try:
                exited = made.status == "exited"
                engine.keep(made)
            except Exception as exc:  # keeping is a courtesy: removal must still happen
                notes.append(f"could not keep {made.name}: {exc}")
                continue
            factory.detach(made)
            remove = shlex.join(engine.remove_command(made))
            if exited:
                notes.append(f"kept {made.name} ({item.nodeid}): it has exited (code "
                             f"{made.exit_code}), so there is nothing to enter; its logs are in "
                             f"the test's report; remove with `{remove}`")
            else:
                notes.append(f"kept {made.name} ({item.nodeid}): enter with "
                             f"`{shlex.join(engine.enter_command(made))}`, remove with "
                             f"`{remove}`")
    factory.close()


__all__ = ["Factory", "PycontainError", "PycontainSession", "compose", "container",
           "container_request", "pycontain", "pycontain_session"]
