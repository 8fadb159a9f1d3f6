"""The resolved Compose project as typed, frozen values: what the loader hands the stack and
what ``pycontain compose config`` prints. Each part keeps the file:line it was written at, so
the stack's own errors (a missing image, a bad build) can point at the file too."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from .source import Mark

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


@dataclasses.dataclass(frozen=True)
class Port:
    """A published (or only exposed-to-the-host) container port."""

    target: int
    published: int | None = None
    host_ip: str | None = None
    protocol: str = "tcp"


@dataclasses.dataclass(frozen=True)
class Healthcheck:
    """A service's healthcheck; ``test`` is an argv (``CMD-SHELL`` made ``/bin/sh -c``).
    What the file left out stays None (compose prints only what was written); the ``*_s``
    properties give Docker's defaults for those."""

    test: tuple[str, ...]
    kind: str  # "CMD", "CMD-SHELL" or "NONE"
    interval: float | None = None
    timeout: float | None = None
    retries: int | None = None
    start_period: float | None = None
    start_interval: float | None = None
    disable: bool = False
    mark: Mark | None = None

    @property
    def interval_s(self) -> float:
        return 30.0 if self.interval is None else self.interval

    @property
    def timeout_s(self) -> float:
        return 30.0 if self.timeout is None else self.timeout

    @property
    def retries_n(self) -> int:
        return 3 if self.retries is None else self.retries

    @property
    def start_period_s(self) -> float:
        return 0.0 if self.start_period is None else self.start_period

    @property
    def start_interval_s(self) -> float:
        return 5.0 if self.start_interval is None else self.start_interval


@dataclasses.dataclass(frozen=True)
class DependsOn:
    service: str
    condition: str = "service_started"
    required: bool = True
    restart: bool = False


@dataclasses.dataclass(frozen=True)
class ServiceNetwork:
    """A service's membership of a network (by the file's key)."""

    network: str
    aliases: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ServiceVolume:
    """A bind mount, a tmpfs, or a volume: ``source`` the file's key of a top-level volume,
    None for an anonymous one (a fresh volume per container)."""

    type: str  # "bind", "tmpfs" or "volume"
    target: str
    source: str | None = None
    read_only: bool = False
    tmpfs_size: int | None = None
    nocopy: bool = False  # volume.nocopy: a new volume is not filled from the image
    subpath: str | None = None  # volume.subpath: only that directory of the volume
    create_host_path: bool = True  # bind.create_host_path: a missing source is made


@dataclasses.dataclass(frozen=True)
class Build:
    context: Path
    dockerfile: str | None = None
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    target: str | None = None


@dataclasses.dataclass(frozen=True)
class Limits:
    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    mark: Mark
    image: str | None = None
    build: Build | None = None
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    expose: tuple[str, ...] = ()
    depends_on: tuple[DependsOn, ...] = ()
    healthcheck: Healthcheck | None = None
    networks: tuple[ServiceNetwork, ...] = ()
    volumes: tuple[ServiceVolume, ...] = ()
    tmpfs: tuple[str, ...] = ()
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    init: bool | None = None
    read_only: bool | None = None
    limits: Limits = Limits()
    replicas: int = 1
    profiles: tuple[str, ...] = ()
    stop_grace_period: float | None = None
    privileged: bool | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    sysctls: Mapping[str, str] = dataclasses.field(default_factory=dict)
    shm_size: int | None = None  # bytes; None: the engine's default (64m)
    extra_hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> address
    stop_signal: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class NetworkDef:
    """A top-level network; ``name`` is the engine-level one (``<project>_<key>``);
    ``internal``: no way out of it (Docker's internal networks)."""

    key: str
    name: str
    mark: Mark | None = None
    internal: bool = False


@dataclasses.dataclass(frozen=True)
class VolumeDef:
    """A top-level volume; ``name`` is the engine-level one (``<project>_<key>``; an
    ``external`` one's is its key or ``name:``, and it must exist already)."""

    key: str
    name: str
    mark: Mark | None = None
    external: bool = False


@dataclasses.dataclass(frozen=True)
class Project:
    """A loaded project: the services its profiles enable, and the ones they leave out."""

    name: str
    working_dir: Path
    files: tuple[Path, ...]
    services: Mapping[str, Service]
    networks: Mapping[str, NetworkDef]
    disabled: Mapping[str, tuple[str, ...]]  # service -> the profiles that would enable it
    volumes: Mapping[str, VolumeDef] = dataclasses.field(default_factory=dict)

    def order(self) -> list[str]:
        """The services in start order: every one after what it depends on."""
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            for dep in self.services[name].depends_on:
                if dep.service in self.services:
                    visit(dep.service)
            done.append(name)

        for name in sorted(self.services):
            visit(name)
        return done
