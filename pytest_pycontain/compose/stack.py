"""A running Compose project: one implementation over the factory's public ``run``,
``build``, ``pull`` and ``network``, so it behaves the same on every engine and is removed
with the factory's scope like anything else the factory made.

Start order follows ``depends_on``; its conditions are honoured always (as ``docker compose
up`` does), and ``wait=True`` also waits for every healthcheck and fails on a service that
exited with an error. Healthchecks written in the file are run here, through
``Container.exec``: the engines' run options carry no healthcheck of their own.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import (
    ConfigError,
    ContainerError,
    NotSupported,
    PycontainError,
    WaitTimeout,
    tail,
)
from ..namedvolumes import open_volume
from ..runspec import Mount, VolumeMount
from .model import DependsOn, Project, Service

_LOG_TAIL = 30


def _anonymous_name(service: str, target: str) -> str:
    """A name for a reused service's anonymous volume: its service and path, so that its
    request (and key) is the same from run to run."""
    import hashlib

    return f"{service}-{hashlib.sha256(target.encode()).hexdigest()[:12]}"


class Maker(Protocol):
    """What the stack needs from a factory (its public methods)."""

    def run(self, image: Any, **options: Any) -> Any: ...
    def build(self, context: Any, **options: Any) -> Any: ...
    def network(self, name: str | None = None, *, internal: bool = False) -> Any: ...
    def volume(self, name: str | None = None, *, external: bool = False) -> Any: ...
    # and of what ``network`` returns: ``connect(container, aliases=None)`` (a second network)


class Compose:
    """A started stack: ``services`` (name -> Container), ``service(name, index)``,
    ``network(key)``, ``stop``/``start``, ``logs``."""

    def __init__(self, maker: Maker, project: Project, *, timeout: float = 60.0,
                 prefixed: bool = False, reuse: bool = False):
        """``prefixed``: containers are named ``<project>-<service>-<n>`` as docker compose
        names them (the service's name stays an alias), so a detached stack's containers can
        be found by its project name. ``reuse``: every service is run with ``reuse=True``
        (found again by its own request; one changed is made again, the rest kept), and its
        named volumes are its containers' own (given by name)."""
        self.project = project
        self._prefixed = prefixed
        self._reuse = reuse
        self._maker = maker
        self._timeout = timeout
        self._networks: dict[str, Any] = {}
        self._volumes: dict[str, Any] = {}  # the file's key -> Volume
        self._containers: dict[str, list[Any]] = {}
        self._health: dict[str, str] = {}  # container id -> "healthy" (file healthchecks)
        self._born: dict[str, float] = {}  # container id -> when it was started (monotonic)
        self._satisfied: set[tuple[str, str]] = set()

    # -- bringing it up ---------------------------------------------------------------------
    def up(self, *, build: bool = True, wait: bool = True) -> Compose:
        """Start every enabled service in dependency order; see the module's docstring."""
        used = {m.network for s in self.project.services.values() for m in s.networks}
        for key in sorted(used):
            spec = self.project.networks[key]
            self._networks[key] = self._maker.network(spec.name, internal=spec.internal)
        wanted = {v.source for s in self.project.services.values() for v in s.volumes
                  if v.type == "volume" and v.source is not None}
        for key in sorted(wanted):
            spec = self.project.volumes[key]
            if self._reuse:  # a reused container's named volumes are its own (by name)
                if spec.external:
                    raise NotSupported(f"{spec.mark}: volume {key!r}: compose(reuse=True) "
                                       "with an external volume is not supported yet")
                continue
            try:
                self._volumes[key] = (self._maker.volume(spec.name, external=True)
                                      if spec.external else self._maker.volume(spec.name))
            except PycontainError as exc:
                where = f"{spec.mark}: " if spec.mark else ""
                raise type(exc)(f"{where}volume {key!r}: {exc}") from exc
        for name in self.project.order():
            service = self.project.services[name]
            for dep in service.depends_on:
                if dep.service in self._containers:
                    self._satisfy(service, dep)
            image = self._image(service, build)
            self._containers[name] = [self._start(service, image, index)
                                      for index in range(1, service.replicas + 1)]
        if wait:
            for name in self.project.order():
                self._wait_service(self.project.services[name])
        return self

    def _image(self, service: Service, build: bool) -> Any:
        if service.build is not None and build:
            spec = service.build
            try:
                return self._maker.build(spec.context, dockerfile=spec.dockerfile and str(
                    spec.context / spec.dockerfile), target=spec.target,
                    build_args=dict(spec.args), tag=service.image)
            except PycontainError as exc:
                raise _about(service, exc) from exc
        if service.image is None:
            raise ConfigError(f"{service.mark}: service {service.name!r} has only a build "
                              "context, and the stack was asked not to build (build=False)")
        return service.image

    def _start(self, service: Service, image: Any, index: int) -> Any:
        membership = service.networks[0] if service.networks else None
        first = index == 1
        aliases = list(membership.aliases) if membership and first else []
        if self._prefixed and first and membership:
            aliases.insert(0, service.name)
        reuse = {"reuse": True} if self._reuse else {}
        try:
            container = self._maker.run(
                image, **reuse,
                name=(service.name if first and not self._prefixed
                      else f"{self.project.name}-{service.name}-{index}"),
                command=list(service.command) if service.command is not None else None,
                entrypoint=(list(service.entrypoint) if service.entrypoint is not None
                            else None),  # [] drops the image's, as entrypoint: "" does
                env=dict(service.environment) or None,
                network=self._networks[membership.network] if membership else None,
                aliases=aliases or None,
                ports=self._ports(service), hostname=service.hostname, user=service.user,
                workdir=service.working_dir, mounts=self._mounts(service),
                volumes=self._volume_mounts(service),
                tmpfs=self._tmpfs(service), read_only=bool(service.read_only),
                init=bool(service.init), memory=service.limits.memory,
                cpus=service.limits.cpus, pids=service.limits.pids,
                privileged=bool(service.privileged), cap_add=service.cap_add or None,
                cap_drop=service.cap_drop or None, security_opt=service.security_opt or None,
                sysctls=dict(service.sysctls) or None, shm_size=service.shm_size,
                extra_hosts=dict(service.extra_hosts) or None,
                stop_signal=service.stop_signal, labels=dict(service.labels) or None)
            for other in service.networks[1:]:  # joined once it runs, as network connect
                more = list(other.aliases) if first else []
                if self._prefixed and first:
                    more.insert(0, service.name)
                self._networks[other.network].connect(container, aliases=more or None)
        except PycontainError as exc:
            raise _about(service, exc) from exc
        self._born[container.id] = time.monotonic()
        return container

    def _ports(self, service: Service) -> dict[int, int | None] | None:
        ports: dict[int, int | None] = {}
        for port in service.ports:
            if port.host_ip not in (None, "", "0.0.0.0", "127.0.0.1"):
                raise NotSupported(f"{service.mark}: service {service.name!r}: ports on host "
                                   f"address {port.host_ip} (published ports are on "
                                   "127.0.0.1)")
            ports[port.target] = port.published
        if ports and service.replicas > 1 and any(ports.values()):
            raise ConfigError(f"{service.mark}: service {service.name!r}: {service.replicas} "
                              "replicas cannot all publish the same host port")
        return ports or None

    def _mounts(self, service: Service) -> tuple[Mount, ...]:
        mounts = []
        for volume in service.volumes:
            if volume.type != "bind" or volume.source is None:
                continue
            if volume.create_host_path:
                Path(volume.source).mkdir(parents=True, exist_ok=True)  # as compose does
            elif not os.path.lexists(volume.source):
                raise ConfigError(f"{service.mark}: service {service.name!r}: bind source "
                                  f"path {volume.source} does not exist (create_host_path: "
                                  "false)")
            mounts.append(Mount(Path(volume.source), volume.target, bool(volume.read_only)))
        return tuple(mounts)

    def _volume_mounts(self, service: Service) -> list[VolumeMount] | None:
        """The service's volumes: the project's named ones, and for each anonymous volume
        one of the container's own (made empty, removed with it). Reused, by their names: the
        reused container's own (an anonymous one named by its path)."""
        if self._reuse:
            return [VolumeMount(self.project.volumes[v.source].name if v.source is not None
                                else _anonymous_name(service.name, v.target), v.target,
                                v.read_only, v.nocopy, v.subpath)
                    for v in service.volumes if v.type == "volume"] or None
        mounts = [VolumeMount(self._volumes[v.source] if v.source is not None else None,
                              v.target, v.read_only, v.nocopy, v.subpath)
                  for v in service.volumes if v.type == "volume"]
        return mounts or None

    def _tmpfs(self, service: Service) -> dict[str, str] | None:
        tmpfs: dict[str, str] = {}
        for entry in service.tmpfs:
            path, _, options = entry.partition(":")
            tmpfs[path] = options
        for volume in service.volumes:
            if volume.type == "tmpfs":
                options = [] if volume.tmpfs_size is None else [f"size={volume.tmpfs_size}"]
                if volume.read_only:
                    options.append("ro")
                tmpfs[volume.target] = ",".join(options)
        return tmpfs or None

    # -- conditions and waits ---------------------------------------------------------------
    def _satisfy(self, service: Service, dep: DependsOn) -> None:
        if (dep.service, dep.condition) in self._satisfied:
            return
        target = self.project.services[dep.service]
        for container in self._containers[dep.service]:
            if dep.condition == "service_healthy":
                self._wait_healthy(target, container, needed_by=service.name)
            elif dep.condition == "service_completed_successfully":
                self._wait_completed(target, container, needed_by=service.name)
        self._satisfied.add((dep.service, dep.condition))

    def _wait_completed(self, service: Service, container: Any, needed_by: str) -> None:
        try:
            code = container.wait(timeout=self._timeout)
        except WaitTimeout as exc:
            raise WaitTimeout(f"service {service.name!r} did not complete within "
                              f"{self._timeout:g}s ({needed_by!r} waits for it)",
                              logs=_logs(container), container=container.name) from exc
        if code != 0:
            raise ContainerError(f"service {service.name!r} exited with code {code}; "
                                 f"{needed_by!r} needs it to complete successfully",
                                 exit_code=code, logs=_logs(container), container=container.name)

    def _wait_service(self, service: Service) -> None:
        for container in self._containers[service.name]:
            check = service.healthcheck
            if (check is not None and not check.disable) or (check is None and
                                                             container.health is not None):
                self._wait_healthy(service, container)
            elif container.status != "running" and container.exit_code not in (0, None):
                raise ContainerError(f"service {service.name!r} exited with code "
                                     f"{container.exit_code}", exit_code=container.exit_code,
                                     logs=_logs(container), container=container.name)

    def _wait_healthy(self, service: Service, container: Any, needed_by: str | None = None) -> None:
        if container.id in self._health:
            return
        why = f" ({needed_by!r} waits for it)" if needed_by else ""
        check = service.healthcheck
        if check is None and container.health is not None:  # the image's own HEALTHCHECK
            from .. import wait

            wait.until_ready(container, wait.healthcheck(timeout=self._timeout), self._timeout)
            self._health[container.id] = "healthy"
            return
        if check is None or check.disable:
            raise ConfigError(f"{service.mark}: service {service.name!r} has no healthcheck, "
                              f"so it cannot become healthy{why}")
        # as Docker schedules it: the first check one interval after the start (the start
        # interval within the start period), failures within the start period not counted
        born = self._born.get(container.id, time.monotonic())
        deadline = time.monotonic() + self._timeout
        starting = check.start_period_s > 0
        next_check = born + (check.start_interval_s if starting else check.interval_s)
        failures, last = 0, ""
        while True:
            now = time.monotonic()
            if next_check > now:
                time.sleep(max(0.0, min(next_check, deadline) - now))
            if container.status != "running":
                raise ContainerError(f"service {service.name!r} exited with code "
                                     f"{container.exit_code} before it was healthy{why}",
                                     exit_code=container.exit_code, logs=_logs(container),
                                     container=container.name)
            try:
                result = container.exec(list(check.test), timeout=check.timeout_s)
                ok, last = result.exit_code == 0, result.output
            except WaitTimeout:
                ok, last = False, f"the check took longer than {check.timeout_s:g}s"
            except ContainerError:
                if container.status == "running":
                    raise
                continue  # it exited meanwhile: reported at the top of the loop
            if ok:
                self._health[container.id] = "healthy"
                return
            now = time.monotonic()
            starting = now - born < check.start_period_s
            failures += 0 if starting else 1
            if failures >= check.retries_n:
                self._health[container.id] = "unhealthy"
                raise ContainerError(f"service {service.name!r} is unhealthy: {failures} "
                                     f"checks failed in a row{why}; the last said: "
                                     f"{tail(last, 5) or '(nothing)'}", logs=_logs(container),
                                     container=container.name)
            if now >= deadline:
                raise WaitTimeout(f"service {service.name!r} not healthy after "
                                  f"{self._timeout:g}s{why}", logs=_logs(container),
                                  container=container.name)
            next_check = now + (check.start_interval_s if starting else check.interval_s)

    # -- the stack's API --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.project.name

    @property
    def services(self) -> Mapping[str, Any]:
        """Every started service's first container, one-shots that completed included."""
        return {name: containers[0] for name, containers in self._containers.items()
                if containers}

    def service(self, name: str, index: int = 1) -> Any:
        """The ``index``-th container of service ``name`` (replicas count from 1)."""
        if name in self.project.disabled:
            raise ConfigError(f"service {name!r} is not started: it needs profile(s) "
                              f"{', '.join(self.project.disabled[name])}")
        if name not in self._containers:
            raise ConfigError(f"no service {name!r} in project {self.name!r} (services: "
                              f"{', '.join(sorted(self.project.services))})")
        containers = self._containers[name]
        if not 1 <= index <= len(containers):
            raise ConfigError(f"service {name!r} has {len(containers)} container(s); "
                              f"index {index} is not one of them")
        return containers[index - 1]

    def replicas(self, name: str) -> list[Any]:
        """Every container of service ``name`` (empty for one not started)."""
        return list(self._containers.get(name, []))

    def health(self, name: str, index: int = 1) -> str | None:
        """The service's health: ``healthy``/``unhealthy`` once its file's healthcheck was
        waited for, else what the engine reports (an image's HEALTHCHECK), else None."""
        container = self.service(name, index)
        return self._health.get(container.id) or container.health

    def network(self, name: str = "default") -> Any:
        """The ``Network`` for the file's key ``name`` (partition, delay, loss)."""
        if name not in self._networks:
            raise ConfigError(f"no network {name!r} in project {self.name!r} (networks: "
                              f"{', '.join(sorted(self._networks)) or 'none'})")
        return self._networks[name]

    def volume(self, name: str) -> Any:
        """The ``Volume`` for the file's top-level key ``name`` (used by a started service)."""
        if self._reuse:
            raise ConfigError(f"project {self.name!r} is reused across runs: its volumes are "
                              "its containers' own, kept with them, with no Volume of the run")
        if name not in self._volumes:
            raise ConfigError(f"no volume {name!r} in project {self.name!r} (volumes: "
                              f"{', '.join(sorted(self._volumes)) or 'none'})")
        return self._volumes[name]

    def stop(self, service: str) -> None:
        """Stop the service's containers (its ``stop_grace_period``, else 10 s); the services
        that depend on it are left as they are, as ``docker compose stop SERVICE`` does."""
        spec = self.project.services.get(service)
        grace = spec.stop_grace_period if spec and spec.stop_grace_period is not None else 10
        for container in self._replicas_of(service):
            container.stop(timeout=grace)

    def start(self, service: str) -> None:
        """Start the service's stopped containers again, the same ones (``Container.start``:
        ids, files and named volumes kept, names and aliases resolving again, ports published
        again), and wait for them as ``wait=True`` does; running ones are left as they are,
        and so are the services that depend on it."""
        containers = self._replicas_of(service)  # a ConfigError for one not started
        spec = self.project.services[service]
        for container in containers:
            if container.status == "running":
                continue
            self._health.pop(container.id, None)  # healthy again only once checked again
            try:
                container.start()
            except PycontainError as exc:
                raise _about(spec, exc) from exc
            self._born[container.id] = time.monotonic()
        self._wait_service(spec)

    def restart(self, service: str) -> None:
        """``stop(service)``, then ``start(service)``, as ``docker compose restart``."""
        self.stop(service)
        self.start(service)

    def _replicas_of(self, service: str) -> list[Any]:
        """Every container of a started ``service``; ``ConfigError`` as ``service()`` says."""
        count = len(self._containers.get(service, [None]))
        return [self.service(service, index) for index in range(1, count + 1)]

    def logs(self) -> str:
        """Every container's log, each line prefixed with its service, as compose prints."""
        parts = []
        for name in self.project.order():
            for index, container in enumerate(self._containers.get(name, []), 1):
                label = f"{name}-{index}"
                text = container.logs()
                parts.extend(f"{label}  | {line}" for line in text.splitlines())
        return "\n".join(parts) + ("\n" if parts else "")

    def __repr__(self) -> str:
        return f"<Compose {self.name}: {', '.join(self._containers)}>"


class EngineMaker:
    """What the stack needs from a factory, straight over an engine: for the ``pycontain``
    command and the benchmark, where there is no pytest. ``close()`` removes what it made."""

    def __init__(self, engine: Any, base: Path | None = None):
        self.engine = engine
        self.base = base or Path.cwd()
        self.containers: list[Any] = []
        self.networks: list[Any] = []
        self.volumes: list[Any] = []

    def run(self, image: Any, **options: Any) -> Any:
        from ..engine import RunSpec

        spec = RunSpec.create(image, base=self.base, **options)
        if isinstance(image, str):
            spec = dataclasses.replace(spec, image=self.engine.pull(image))
        container = self.engine.run(spec)
        self.containers.append(container)
        return container

    def build(self, context: Any, **options: Any) -> Any:
        return self.engine.build(context, **options)

    def network(self, name: str | None = None, *, internal: bool = False) -> Any:
        network = (self.engine.network(name, internal=True) if internal
                   else self.engine.network(name))
        self.networks.append(network)
        return network

    def volume(self, name: str | None = None, *, external: bool = False) -> Any:
        """As the factory's: ``external`` is an existing volume, never removed here."""
        return open_volume(self.engine, name, external, self.volumes)

    def close(self) -> None:
        """Remove every container, then every network and volume; each gets its chance, the
        first error is raised after."""
        problems: list[Exception] = []
        for thing in [*reversed(self.containers), *reversed(self.networks),
                      *reversed(self.volumes)]:
            try:
                thing.remove()
            except Exception as exc:
                problems.append(exc)
        self.containers.clear()
        self.networks.clear()
        self.volumes.clear()
        if problems:
            raise problems[0]


def _logs(container: Any) -> str:
    try:
        return tail(container.logs(), _LOG_TAIL)
    except Exception:  # evidence only: never a reason to hide the real error
        return ""


def _about(service: Service, exc: PycontainError) -> PycontainError:
    """``exc`` with the service it is about in front (same type, same evidence), and for
    anything but a container's own failure the file:line of the service."""
    prefix = f"service {service.name!r}: "
    if isinstance(exc, ContainerError):
        message = str(exc).split("\n--- last lines of its log ---")[0]
        return type(exc)(prefix + message, exit_code=exc.exit_code, logs=exc.logs,
                         container=exc.container)
    prefix = f"{service.mark}: {prefix}"  # what the file asked, refused: where it asked it
    try:
        return type(exc)(prefix + str(exc))
    except TypeError:
        return PycontainError(prefix + str(exc))


def files_of(paths: Sequence[str | Path], base: Path) -> list[Path]:
    """The file arguments against ``base`` (the pytest rootdir)."""
    return [Path(p) if Path(p).is_absolute() else base / p for p in paths]
