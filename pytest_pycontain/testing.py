"""``FakeEngine``: an engine in memory, for tests of code built on pytest-pycontain.

It implements the ``Engine``, ``Container`` and ``Network`` protocols of ``engine.py`` without
processes, namespaces or a daemon, so the plugin's own logic (scopes, sharing, teardown order,
keep-on-failure, reports) and a user's fixtures can be tested anywhere, as any user. It records
what was asked of it (``events``, ``runs``) and answers as scripted:

    engine = FakeEngine(images={"busybox"})           # pulling anything else fails
    engine.on_run("busybox", logs="ready\\n", listening=[8080])
    engine.on_exec("cat /etc/hostname", stdout="box\\n")

Supply it through the plugin's hook, from a conftest::

    def pytest_pycontain_make_engine(config, settings):
        return FakeEngine()

or as a plugin object: ``pytester.runpytest(plugins=[SupplyEngine(engine)])``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .config import Settings
from .engine import ExecResult, RunSpec
from .errors import (
    ConfigError,
    ContainerError,
    DockerfileError,
    NetworkError,
    PullError,
    WaitTimeout,
)

__all__ = ["FakeContainer", "FakeEngine", "FakeImage", "FakeNetwork", "OnRun", "SupplyEngine"]


@dataclasses.dataclass(frozen=True)
class FakeImage:
    """An image as the fake engine knows it: a reference (or a build's tag) and a config."""

    ref: str
    id: str
    tags: tuple[str, ...] = ()
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OnRun:
    """What a container of an image does once started: its output, whether it exits at once
    (``exit_code``), the ports something listens on inside, and its health."""

    logs: str = ""
    exit_code: int | None = None
    listening: tuple[int, ...] = ()
    health: str | None = None


def _command_key(cmd: str | Sequence[str]) -> str | tuple[str, ...]:
    return cmd if isinstance(cmd, str) else tuple(cmd)


class FakeContainer:
    """A container that exists only as this object: scripted output, a file table in memory."""

    def __init__(self, engine: FakeEngine, spec: RunSpec, image: FakeImage, behaviour: OnRun,
                 ip: str | None):
        self.engine = engine
        self.spec = spec
        self.id = secrets.token_hex(32)
        self.name = spec.name or f"fake-{self.id[:12]}"
        self.hostname = spec.hostname or self.id[:12]
        self._image = image
        self._ip = ip
        self._behaviour = behaviour
        self._status = "running" if behaviour.exit_code is None else "exited"
        self._exit_code = behaviour.exit_code
        self._ports = self._publish(spec.ports)
        self.kept = False
        self.files: dict[str, bytes] = {}  # what copy_to put in, for copy_from
        self.execs: list[str | tuple[str, ...]] = []  # every command exec'd, as given

    def _publish(self, ports: Mapping[int, int | None]) -> dict[int, int]:
        """The run request's ports (normalised already): a fixed host port, or the next."""
        return {inside: outside or self.engine.next_port() for inside, outside in ports.items()}

    @property
    def image(self) -> FakeImage:
        return self._image

    @property
    def ip(self) -> str | None:
        return self._ip

    @property
    def labels(self) -> dict[str, str]:
        """The image's Labels, then the run request's, as Docker shows them."""
        return {**(self._image.config.get("Labels") or {}), **self.spec.labels}

    @property
    def status(self) -> str:
        return self._status

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    @property
    def health(self) -> str | None:
        return self._behaviour.health

    def _must_run(self, what: str) -> None:
        if self._status != "running":
            raise ContainerError(f"{what} {self.name}: the container is {self._status}",
                                 exit_code=self._exit_code, logs=self.logs(), container=self.id)

    def exec(self, cmd: str | Sequence[str], *, user: str | None = None,
             env: Mapping[str, str] | None = None, workdir: str | None = None,
             stdin: bytes | str | None = None, timeout: float | None = None) -> ExecResult:
        """The result scripted with ``FakeEngine.on_exec`` (exit code 0, no output if none)."""
        self._must_run("exec in")
        key = _command_key(cmd)
        self.execs.append(key)
        self.engine.events.append(f"exec {self.name}")
        return self.engine.exec_results.get(key, ExecResult(0, "", "", ""))

    def logs(self) -> str:
        return self._behaviour.logs

    def address(self, port: int) -> tuple[str, int]:
        if port not in self._ports:
            raise NetworkError(f"container {self.name}: port {port} is not published "
                               f"(published: {sorted(self._ports) or 'none'})")
        return "127.0.0.1", self._ports[port]

    def copy_to(self, src: str | Path, dest: str) -> None:
        self._must_run("copy to")
        self.files[dest] = Path(src).read_bytes()

    def copy_from(self, src: str, dest: str | Path) -> None:
        if src not in self.files:
            raise ContainerError(f"copy from {self.name}: {src}: no such file", container=self.id)
        Path(dest).write_bytes(self.files[src])

    def stop(self, timeout: float = 10) -> None:
        self.kill(15)

    def start(self) -> None:
        """Run it again as scripted (a scripted exit code: it exits again at once); a running
        one is left as it is, a removed one is a ``ContainerError``."""
        if self._status == "removed":
            raise ContainerError(f"container {self.name} was removed; it cannot be started "
                                 "again", container=self.id)
        if self._status == "running":
            return
        self._status = "running" if self._behaviour.exit_code is None else "exited"
        self._exit_code = self._behaviour.exit_code
        self.engine.events.append(f"start {self.name}")

    def kill(self, signal: int = 9) -> None:
        if self._status == "running":
            self._status, self._exit_code = "exited", 128 + signal

    def wait(self, timeout: float | None = None) -> int:
        if self._status == "running":  # nothing runs, so nothing would ever exit by itself
            raise WaitTimeout(f"container {self.name} still runs (a fake container exits only "
                              "when killed, stopped or scripted to)", container=self.id)
        assert self._exit_code is not None
        return self._exit_code

    def commit(self, tag: str | None = None) -> FakeImage:
        """A new image with this container's image's config (and its run's command)."""
        if self._status == "removed":
            raise ContainerError(f"commit: container {self.name} was removed", container=self.id)
        digest = "sha256:" + hashlib.sha256(self.id.encode()).hexdigest()
        config = dict(self._image.config)
        if self.spec.command is not None:
            config["Cmd"] = list(self.spec.command)
        self.engine.events.append(f"commit {self.name}")
        return FakeImage(tag or digest, digest, (tag,) if tag else (), config)

    def remove(self) -> None:
        if self._status != "removed":
            self._status = "removed"
            self.engine.events.append(f"remove {self.name}")

    def probe_port(self, port: int) -> bool:
        return self._status == "running" and port in self._behaviour.listening


class FakeVolume:
    """A named volume: a name, and whether it was removed."""

    def __init__(self, engine: FakeEngine, name: str):
        self.engine = engine
        self.name = name
        self.removed = False

    def remove(self) -> None:
        if not self.removed:
            self.removed = True
            self.engine.events.append(f"remove volume {self.name}")


class FakeNetwork:
    """A network that records the faults asked of it."""

    def __init__(self, engine: FakeEngine, name: str, subnet: str):
        self.engine = engine
        self.name = name
        self._subnet = subnet
        self.faults: list[str] = []
        self.removed = False

    @property
    def subnet(self) -> str:
        return self._subnet

    def connect(self, container: Any, aliases: Any = None) -> None:
        self.engine.events.append(
            f"connect {container.name} to {self.name}"
            + (f" as {', '.join(aliases)}" if aliases else ""))

    def partition(self, a: Any, b: Any) -> None:
        self.faults.append(f"partition {a.name} {b.name}")

    def heal(self) -> None:
        self.faults.clear()

    def delay(self, container: Any, ms: int, jitter_ms: int = 0) -> None:
        self.faults.append(f"delay {container.name} {ms}ms")

    def loss(self, container: Any, percent: float) -> None:
        self.faults.append(f"loss {container.name} {percent}%")

    def remove(self, wait: bool = True) -> None:
        if not self.removed:
            self.removed = True
            self.engine.events.append(f"remove network {self.name}")


class FakeEngine:
    """The ``Engine`` protocol in memory; ``events`` is the order things happened in."""

    name = "fake"

    def __init__(self, settings: Settings | None = None, *, images: Iterable[str] | None = None):
        self.settings = settings or Settings()
        self.known_images = None if images is None else set(images)
        self.events: list[str] = []
        self.runs: list[RunSpec] = []
        self.containers: list[FakeContainer] = []
        self.networks: list[FakeNetwork] = []
        self.volumes: list[FakeVolume] = []
        self.shared: dict[str, FakeVolume] = {}  # shared_volume: outlives the engine
        self.exec_results: dict[str | tuple[str, ...], ExecResult] = {}
        self.behaviours: dict[str, OnRun] = {}
        self.closed = False
        self._numbers = itertools.count(1)
        self._ports = itertools.count(30000)

    # -- scripting -------------------------------------------------------------------------------
    def on_run(self, image: str, *, logs: str = "", exit_code: int | None = None,
               listening: Iterable[int] = (), health: str | None = None) -> None:
        """Script what containers of ``image`` (a reference or a build's tag) do."""
        self.behaviours[image] = OnRun(logs, exit_code, tuple(listening), health)

    def on_exec(self, cmd: str | Sequence[str], *, exit_code: int = 0, stdout: str = "",
                stderr: str = "") -> None:
        """Script the result of ``exec(cmd)`` in any container (matched as given)."""
        self.exec_results[_command_key(cmd)] = ExecResult(exit_code, stdout, stderr,
                                                          stdout + stderr)

    def next_port(self) -> int:
        return next(self._ports)

    # -- the Engine protocol --------------------------------------------------------------------
    def describe(self) -> str:
        return "fake (in memory, for tests)"

    def pull(self, ref: str) -> FakeImage:
        self.events.append(f"pull {ref}")
        if self.known_images is not None and ref not in self.known_images:
            raise PullError(f"pull {ref}: manifest unknown (the fake engine knows "
                            f"{', '.join(sorted(self.known_images)) or 'no image'})",
                            reference=ref)
        return FakeImage(ref, "sha256:" + hashlib.sha256(ref.encode()).hexdigest(), (ref,))

    def build(self, context: str | Path, *, dockerfile: str | Path | None = None,
              target: str | None = None, build_args: Mapping[str, str] | None = None,
              tag: str | None = None, no_cache: bool = False,
              secrets: Mapping[str, str | Path] | None = None) -> FakeImage:
        """An image named by its tag, else by its context; the Dockerfile must exist."""
        path = Path(dockerfile) if dockerfile else Path(context) / "Dockerfile"
        self.events.append(f"build {Path(context).name or context}")
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise DockerfileError(f"cannot read the Dockerfile: {exc.strerror}",
                                  path=str(path)) from exc
        digest = hashlib.sha256(text + repr(sorted((build_args or {}).items())).encode()
                                + repr(target).encode())
        ref = tag or str(context)
        return FakeImage(ref, "sha256:" + digest.hexdigest(), (tag,) if tag else ())

    def run(self, spec: RunSpec) -> FakeContainer:
        image = spec.image if isinstance(spec.image, FakeImage) else self.pull(str(spec.image))
        behaviour = self.behaviours.get(image.ref, OnRun())
        ip = None
        if isinstance(spec.network, FakeNetwork):
            ip = spec.network.subnet.rsplit(".", 1)[0] + f".{len(self.containers) + 2}"
        container = FakeContainer(self, spec, image, behaviour, ip)
        self.runs.append(spec)
        self.containers.append(container)
        self.events.append(f"run {container.name}")
        return container

    def network(self, name: str | None = None, *, internal: bool = False) -> FakeNetwork:
        number = next(self._numbers)
        network = FakeNetwork(self, name or f"fake-net-{number}", f"10.88.{number % 256}.0/24")
        self.networks.append(network)
        self.events.append(f"network {network.name}")
        return network

    def volume(self, name: str | None = None) -> FakeVolume:
        found = self.find_volume(name) if name is not None else None
        if found is not None:
            return found
        volume = FakeVolume(self, name or f"fake-volume-{next(self._numbers)}")
        self.volumes.append(volume)
        self.events.append(f"volume {volume.name}")
        return volume

    def find_volume(self, name: str) -> FakeVolume | None:
        return next((v for v in self.volumes if v.name == name and not v.removed), None)

    def shared_volume(self, name: str, *, create: bool = True) -> FakeVolume:
        found = self.shared.get(name)
        if found is None or found.removed:
            if not create:
                raise ConfigError(f"volume {name!r} does not exist")
            found = self.shared[name] = FakeVolume(self, name)
            self.events.append(f"shared volume {name}")
        return found

    def keep(self, container: Any) -> str:
        if not isinstance(container, FakeContainer) or container.engine is not self:
            raise ContainerError(f"{container!r} is not a container of this engine")
        container.kept = True
        self.events.append(f"keep {container.name}")
        return container.id

    def enter_command(self, container: Any) -> list[str]:
        return ["fake-engine", "exec", container.id, "sh"]

    def remove_command(self, container: Any) -> list[str]:
        return ["fake-engine", "rm", container.id]

    def close(self) -> None:
        """Remove what is left, except kept containers; like the real engines, once."""
        if self.closed:
            return
        for container in self.containers:
            if not container.kept:
                container.remove()
        holding = {id(c.spec.network) for c in self.containers if c.kept}
        for network in self.networks:
            if id(network) not in holding:  # a kept container keeps its network
                network.remove()
        self.closed = True
        self.events.append("close")


class SupplyEngine:
    """A pytest plugin object that hands ``engine`` to pytest-pycontain."""

    def __init__(self, engine: Any):
        self.engine = engine

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycontain_make_engine(self, config: pytest.Config, settings: Settings) -> Any:
        return self.engine
