"""The fixtures: ``container``, ``pycontain`` (per test) and ``pycontain_session``.

Nothing here touches an engine until a fixture is used: the engine is made on first use, once
per session (and per xdist worker), and reaps what killed runs left before it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .config import Settings, apply_marker
from .engine import Engine, Mount, RunSpec
from .errors import ConfigError, EngineUnavailable, PycontainError
from .frozen import FrozenMap
from .runspec import parse_env, parse_ports

MARKER_KEYS = ("image", "dockerfile", "context", "scope", "env", "ports", "wait", "build_args",
               "target", "compose", "compose_profiles")


class Factory:
    """Makes containers, images and networks, and removes what it made when closed."""

    def __init__(self, session: PycontainSession, label: str):
        self._session = session
        self._label = label
        self._containers: list[Any] = []
        self._networks: list[Any] = []
        self.on_container: Callable[[Any], None] | None = None

    @property
    def engine(self) -> Engine:
        return self._session.engine

    def run(self, image: Any, *, name: str | None = None,
            command: str | Sequence[str] | None = None,
            entrypoint: str | Sequence[str] | None = None, env: Mapping[str, str] | None = None,
            network: Any = None, aliases: Sequence[str] | None = None,
            ports: Sequence[int] | Mapping[int, int] | None = None, hostname: str | None = None,
            user: str | None = None, workdir: str | None = None,
            mounts: Sequence[str | Mount] | None = None, tmpfs: Mapping[str, str] | None = None,
            read_only: bool = False, init: bool = False, wait: Any = None,
            memory: int | str | None = None, cpus: float | None = None,
            pids: int | None = None) -> Any:
        """Start a container (DESIGN.md §1); with ``wait``, return once it is ready. Every
        option is checked before anything is pulled; relative mount sources are taken from the
        pytest rootdir."""
        spec = RunSpec.create(image, base=self._session.resolve_path("."), name=name,
                              command=command, entrypoint=entrypoint, env=env, network=network,
                              aliases=aliases, ports=ports, hostname=hostname, user=user,
                              workdir=workdir, mounts=mounts, tmpfs=tmpfs, read_only=read_only,
                              init=init, memory=memory, cpus=cpus, pids=pids)
        if isinstance(image, str) and self._session.settings.pull != "never":
            spec = dataclasses.replace(spec, image=self.pull(image))
        container = self.engine.run(spec)
        self._containers.append(container)
        if self.on_container is not None:
            self.on_container(container)
        if wait is not None:
            from .wait import until_ready

            until_ready(container, wait, self._session.settings.timeout)
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
                build: bool = True, wait: bool = True) -> Any:
        """Start a Compose project (``compose.yaml`` in the rootdir when no file is given),
        removed with this factory like the rest; without ``project=`` its name is unique."""
        from .compose import load
        from .compose.stack import Compose

        rootdir = self._session.resolve_path(".")
        loaded = load([self._session.resolve_path(f) for f in files], directory=rootdir,
                      project=project, profiles=profiles, env=env, unique=True)
        stack = Compose(self, loaded, timeout=self._session.settings.timeout)
        return stack.up(build=build, wait=wait)

    def network(self, name: str | None = None) -> Any:
        network = self.engine.network(name)
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
        self._containers.clear()
        self._networks.clear()
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

    def __init__(self, config: pytest.Config, settings: Settings, backend: tuple[str, str]):
        self.config = config
        self.settings = settings
        self.backend, self.reason = backend
        self.session_id = secrets.token_hex(6)
        self._engine: Engine | None = None
        self._images: dict[Any, Any] = {}
        self.shared: dict[Any, Any] = {}
        self.progress = Progress()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.backend, self.reason, self.settings, self.session_id)
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


def make_engine(backend: str, reason: str, settings: Settings, session_id: str) -> Engine:
    """Make the chosen engine; engines reap what dead owners left when they start."""
    if backend == "native":
        from .native.engine import NativeEngine

        return NativeEngine(settings)
    if backend == "docker":
        from .docker import DockerEngine

        return DockerEngine(settings, session_id=session_id)
    raise EngineUnavailable(f"no engine can run here: {reason}")


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
    except ConfigError as exc:
        raise ConfigError(f"{where}: @pytest.mark.pycontain: {exc}") from None
    return ContainerRequest(image=image, dockerfile=dockerfile, context=merged.context,
                            target=merged.target, build_args=merged.build_arg, env=env,
                            ports=ports, wait=marker.get("wait"), scope=merged.scope)


def start_container(factory: Factory, request: ContainerRequest) -> Any:
    """Build or pull the requested image and run its default command."""
    if request.image:
        image: Any = request.image
    else:
        image = factory.build(request.context, dockerfile=request.dockerfile,
                              target=request.target, build_args=request.build_args)
    network = factory.network()  # a private network per container: a name, an address, DNS
    return factory.run(image, env=request.env, ports=request.ports, wait=request.wait,
                       network=network)


__all__ = ["Factory", "PycontainError", "PycontainSession", "container_request"]
