"""The protocols every backend implements: ``Engine``, ``Container``, ``Network``.

The native engine (``native/``) and the Docker backend (``docker.py``) both satisfy these, and
the engine contract tests run against each, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .runspec import Mount, RunSpec, VolumeMount

__all__ = ["HOST_NAME", "Container", "Engine", "ExecResult", "Mount", "Network", "ReuseKey",
           "Reused", "RunSpec", "Volume", "VolumeMount"]

# The name under which containers reach the test process (``expose_host_port``), on every
# backend: Docker's own ``host.docker.internal`` is Docker Desktop's, and not ours to take.
HOST_NAME = "host.pycontain.internal"


@dataclasses.dataclass(frozen=True)
class ReuseKey:
    """What marks a container reused across runs (``run(..., reuse=True)``): ``key``, the
    digest of the fully resolved request and the project's rootdir (a match is the same
    container); ``slot``, the digest of the rootdir and the name it was asked under (one
    reused container per slot: a changed request replaces the old one); ``label``, that name
    as the user wrote it, for ``pycontain ps``."""

    key: str
    slot: str
    label: str


@dataclasses.dataclass(frozen=True)
class Reused:
    """A reused container an engine found in a slot, and the key it was made under."""

    container: Any
    key: str


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """What a command run in a container left: exit code and output."""

    exit_code: int
    stdout: str
    stderr: str
    output: str  # both streams, in the order they came

    def __iter__(self):  # allows ``code, out = container.exec(...)`` like docker-py
        return iter((self.exit_code, self.output))


@runtime_checkable
class Container(Protocol):
    id: str
    name: str
    hostname: str
    spec: RunSpec | None  # the request it was made from (None: found again, another run's)

    @property
    def image(self) -> Any: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def status(self) -> str: ...  # "created", "running", "exited", "removed"
    @property
    def exit_code(self) -> int | None: ...
    @property
    def health(self) -> str | None: ...  # None, "starting", "healthy", "unhealthy"
    @property
    def labels(self) -> Mapping[str, str]: ...  # the image's Labels, then the run's

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> ExecResult: ...
    def logs(self) -> str: ...
    def address(self, port: int) -> tuple[str, int]: ...
    def copy_to(self, src: str | Path, dest: str) -> None: ...
    def copy_from(self, src: str, dest: str | Path) -> None: ...
    def stop(self, timeout: float = 10) -> None: ...
    def start(self) -> None:
        """Start it again once it has exited (``docker start``): the same id, name, files and
        volumes, its networks and aliases joined again, its ports published again; a running
        container is left as it is, a removed one is a ``ContainerError``."""
        ...
    def kill(self, signal: int = 9) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def remove(self) -> None: ...
    def commit(self, tag: str | None = None) -> Any:
        """Its filesystem (volumes left out) as a new image, as ``docker commit``."""
        ...
    def probe_port(self, port: int) -> bool:
        """True when something accepts TCP connections on ``port`` inside the container's own
        network namespace (no published port needed); used by ``wait.port``."""
        ...


@runtime_checkable
class Network(Protocol):
    name: str

    @property
    def subnet(self) -> str: ...

    def connect(self, container: Container, aliases: Sequence[str] | None = None) -> None:
        """Join a running ``container`` started on another network to this one as well
        (``docker network connect``): its name and ``aliases`` resolve here, and it resolves
        this network's names."""
        ...
    def partition(self, a: Container, b: Container) -> None: ...
    def heal(self) -> None: ...
    def delay(self, container: Container, ms: int, jitter_ms: int = 0) -> None: ...
    def loss(self, container: Container, percent: float) -> None: ...
    def remove(self, wait: bool = True) -> None:
        """Remove the network; ``wait=False`` may finish in the background (its name and
        address range are free once that is done)."""
        ...


@runtime_checkable
class Volume(Protocol):
    """A named volume (``pycontain.volume()``): kept across the containers that mount it."""

    name: str

    def remove(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """A backend. ``describe()`` is the report header's line: the engine and why it was chosen."""

    name: str

    def describe(self) -> str: ...
    def pull(self, ref: str) -> Any: ...
    def build(
        self,
        context: str | Path,
        *,
        dockerfile: str | Path | None = None,
        target: str | None = None,
        build_args: Mapping[str, str] | None = None,
        tag: str | None = None,
        no_cache: bool = False,
        secrets: Mapping[str, str | Path] | None = None,
    ) -> Any: ...
    def run(self, spec: RunSpec) -> Container: ...
    def network(self, name: str | None = None, *, internal: bool = False) -> Network:
        """A network with a way out as Docker's bridge has, unless ``internal``."""
        ...
    def volume(self, name: str | None = None) -> Volume:
        """A named volume: made on first use of ``name``, that one after, until removed."""
        ...
    def find_volume(self, name: str) -> Volume | None: ...
    def shared_volume(self, name: str, *, create: bool = True) -> Volume:
        """The volume ``name`` that outlives this engine (``pycontain compose up -d``'s,
        compose's ``external`` ones): made if missing and ``create``, else a ConfigError;
        never removed but by its ``remove()``."""
        ...
    def keep(self, container: Container) -> str:
        """Leave ``container`` running after ``close()``, out of the reaper's reach
        (``--pycontain-keep``); returns the id the engine's own commands take."""
        ...
    def enter_command(self, container: Container) -> list[str]:
        """The command line that opens a shell in ``container`` (a kept one, too), as a user
        types it on this host; the plugin prints it for kept containers."""
        ...
    def remove_command(self, container: Container) -> list[str]:
        """The command line that removes ``container`` once it is kept."""
        ...
    def close(self) -> None: ...
