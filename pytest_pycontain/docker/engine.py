"""The engine protocol over a Docker Engine (local or remote).

For users without Linux root (macOS, Windows, CI with a remote ``DOCKER_HOST``). The engine
keeps the books of what it made (``containers``, ``networks``), turns a ``RunSpec`` into the
engine's create and start calls, and removes its objects on ``close()`` and dead owners' on
start (``reap()``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import errors
from ..dockerhost import podman_version
from ..engine import HOST_NAME, Reused, ReuseKey, RunSpec
from ..security import security_options
from .build import BuildRequest, build_image, builder
from .client import (
    DEFAULT_HOST,
    EngineApi,
    connect,
    load_docker,
    message,
    unique_suffix,
)
from .containers import DockerContainer
from .images import DockerImage, inspect_image, pull_image
from .labels import (
    KEPT_SUFFIX,
    LABEL_NAME,
    LABEL_PID,
    LABEL_REUSE_KEY,
    LABEL_REUSE_NAME,
    LABEL_REUSE_NETSLOT,
    LABEL_REUSE_NETWORK,
    LABEL_REUSE_SLOT,
    LABEL_SESSION,
    LABEL_SHARED,
    left_by_dead_owner,
    owner_died,
    owner_labels,
)
from .networks import DockerNetwork, let_go_of_reused
from .volumes import DockerVolume, reused_volume


class DockerEngine:
    """The engine protocol over a Docker Engine (local or remote)."""

    name = "docker"

    def __init__(self, settings: Any, *, base_url: str | None = None,
                 session_id: str | None = None, reap: bool = True):
        from ..config import Settings
        from ..dockerhost import docker_sockets

        self.settings = settings if settings is not None else Settings()
        self.session_id = session_id or secrets.token_hex(6)
        self.base_url = base_url or (docker_sockets() or [DEFAULT_HOST])[0]
        self.containers: dict[str, DockerContainer] = {}
        self.networks: dict[str, DockerNetwork] = {}
        self.volumes: dict[str, DockerVolume] = {}  # named volumes by the user's name
        self.shared_volumes: dict[str, DockerVolume] = {}  # ``shared_volume``: never removed
        self._lock = threading.Lock()
        self._relays: dict[int, Any] = {}  # expose_host_port: port -> a relay on the gateway
        self._version: dict[str, Any] = {}
        self.api = self._connect()
        self.reaped: list[str] = self.reap() if reap else []

    def _connect(self) -> EngineApi:
        api, self._version = connect(self.base_url, max(60, int(self.settings.timeout)))
        return api

    @property
    def podman(self) -> str | None:
        """Podman's version when Podman serves this socket (it builds through its own API),
        else None."""
        return podman_version(self._version)

    # -- where things are -----------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """Whether the engine runs on this host (a unix socket here, not a Desktop VM)."""
        if not sys.platform.startswith("linux"):
            return False
        if not self.base_url.startswith("unix://"):
            return False
        return "desktop" not in str(self._version.get("Platform", {}).get("Name", "")).lower()

    @property
    def address_host(self) -> str:
        """The host where published ports are reached from this process."""
        url = urlsplit(self.base_url)
        if url.scheme in ("tcp", "http", "https", "ssh") and url.hostname:
            return url.hostname
        return "127.0.0.1"

    @property
    def loopback(self) -> bool:
        """Whether published ports are reached over this host's loopback."""
        host = self.address_host
        return host == "localhost" or host == "::1" or host.startswith("127.")

    def local_pid(self, container: DockerContainer | None,
                  info: Mapping[str, Any] | None = None) -> int | None:
        """The host pid of the container's first process, when the engine is local and the
        process is visible here (its cgroup names the container)."""
        if container is None or not self.is_local:
            return None
        try:
            info = info or container.inspect()
        except errors.ContainerError:
            return None
        pid = int(info["State"].get("Pid") or 0)
        if not pid:
            return None
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        return pid if container.id in cgroup or info["Id"] in cgroup else None

    def require_local(self, what: str) -> None:
        if not self.is_local:
            raise errors.NotSupported(
                f"{what} need the container's network namespace, which only a Docker engine on "
                f"this host gives (this one is at {self.base_url}); use the native engine or a "
                "local Docker")

    # -- labels, bookkeeping --------------------------------------------------------------------
    def labels(self, **extra: str) -> dict[str, str]:
        """The labels of everything this engine makes (see ``labels.py``)."""
        return owner_labels(self.session_id, **extra)

    def forget(self, thing: DockerContainer | DockerNetwork) -> None:
        """Drop ``thing`` from this engine's books (removed, or kept beyond close())."""
        with self._lock:
            if isinstance(thing, DockerContainer):
                self.containers.pop(thing.id, None)
            else:
                self.networks.pop(thing.id, None)

    # -- protocol -------------------------------------------------------------------------------
    def describe(self) -> str:
        version = self._version.get("Version", "?")
        api = self._version.get("ApiVersion", "?")
        if self.podman:
            return (f"Podman {self.podman} (Docker API {api}) at {self.base_url}; builds with "
                    "Podman's own builder through its API")
        found = builder()
        builds = (f"BuildKit via {found[0]}" + (" buildx" if found[1] == "buildx" else "")
                  if found else "the classic builder (no docker CLI with BuildKit found)")
        return f"Docker Engine {version} (API {api}) at {self.base_url}; builds with {builds}"

    def image(self, ref: Any) -> DockerImage:
        """The engine's image ``ref`` (a reference or an image object)."""
        key = ref if isinstance(ref, str) else (getattr(ref, "id", None)
                                                or (getattr(ref, "tags", None) or [None])[0])
        if not key:
            raise errors.ImageNotFound(f"{ref!r} is neither an image reference nor an image")
        return inspect_image(self.api, key)

    def pull(self, ref: str) -> DockerImage:
        """Pull ``ref`` through the engine (with its own mirrors and credentials)."""
        return pull_image(self.api, ref)

    def _ensure_image(self, image: Any) -> str:
        """The engine's id for ``image``, pulled as the ``pull`` setting says; an image object
        (``.id``, ``.tags``) that the engine lacks is pulled by its first tag."""
        if not isinstance(image, str):
            tags = list(getattr(image, "tags", None) or [])
            key = getattr(image, "id", None) or (tags[0] if tags else None)
            if not key:
                raise errors.ImageNotFound(f"{image!r} is neither an image reference nor an "
                                           "image")
            try:
                return self.image(key).id
            except errors.ImageNotFound:
                if not tags:
                    raise errors.ImageNotFound(f"image {key} is not in the Docker engine at "
                                               f"{self.base_url}, and has no tag to pull it by"
                                               ) from None
                return self._ensure_image(tags[0])
        policy = getattr(self.settings, "pull", "missing")
        if policy == "always":
            return self.pull(image).id
        try:
            return self.image(image).id
        except errors.ImageNotFound:
            if policy == "never":
                raise errors.ImageNotFound(
                    f"image {image} is not in the Docker engine and pull=never") from None
            return self.pull(image).id

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
    ) -> DockerImage:
        """Build with BuildKit through the ``docker`` command line, or the engine's classic
        builder where no such command line is installed or the engine is Podman (neither has
        ``secrets`` here)."""
        request = BuildRequest.resolve(context, dockerfile=dockerfile, target=target,
                                       build_args=build_args, tag=tag, no_cache=no_cache,
                                       secrets=secrets)
        return self.image(build_image(self.api, request, podman=self.podman is not None))

    def volume(self, name: str | None = None) -> DockerVolume:
        """A named volume (Docker's, labelled as ours): made on first use of ``name``, the
        same one after, until removed; ``None`` makes one with a name of its own."""
        from ..runspec import check_volume_name

        if name is not None:
            check_volume_name(name, "volume")
            found = self.find_volume(name)
            if found is not None:
                return found
        given = name or f"pycontain-{unique_suffix()}"
        engine_name = f"{given}-{unique_suffix()}" if name else given
        with self.api.mapped(f"create volume {given}"):
            self.api.create_volume(engine_name, labels=self.labels(**{LABEL_NAME: given}))
        volume = DockerVolume(self.api, given, engine_name)
        with self._lock:
            self.volumes[given] = volume
        return volume

    def shared_volume(self, name: str, *, create: bool = True) -> DockerVolume:
        """The engine's volume named exactly ``name``, which outlives this engine
        (``pycontain compose up -d``'s project volumes, compose's ``external`` ones): made
        when missing and ``create`` (labelled ``pycontain.shared``, which the reaper never
        removes), else a ConfigError naming it; only its ``remove()`` deletes it."""
        from ..runspec import check_volume_name

        docker = load_docker()
        check_volume_name(name, "volume")
        with self._lock:
            found = self.shared_volumes.get(name)
        if found is not None and not found.removed:
            return found
        with self.api.mapped(f"find volume {name}"):
            try:
                self.api.inspect_volume(name)
            except docker.errors.NotFound:
                if not create:
                    raise errors.ConfigError(f"volume {name!r} does not exist in the Docker "
                                             f"engine at {self.base_url}") from None
                self.api.create_volume(name, labels={LABEL_SHARED: "1"})
        volume = DockerVolume(self.api, name, name)
        with self._lock:
            self.shared_volumes[name] = volume
        return volume

    def _require_api(self, version: str, what: str) -> None:
        """NotSupported naming ``what`` when the engine's API is older than ``version``."""
        have = str(self._version.get("ApiVersion") or "0")
        if tuple(int(p) for p in have.split(".") if p.isdigit()) < tuple(
                int(p) for p in version.split(".")):
            raise errors.NotSupported(f"{what}: needs Docker Engine API {version} or later "
                                      f"(the engine at {self.base_url} speaks {have})")

    def find_volume(self, name: str) -> DockerVolume | None:
        """The live named volume ``name`` of this engine, or None."""
        with self._lock:
            found = self.volumes.get(name)
        return found if found is not None and not found.removed else None

    def expose_host_port(self, port: int) -> str:
        """Containers started from now on reach this process's ``127.0.0.1:port`` as
        ``host.pycontain.internal:port`` (returned): Docker's host-gateway (the default
        bridge's gateway, an address of this host) with a relay listening there to our
        loopback. A remote engine cannot reach this process: ``NotSupported``."""
        from ..native.engine import check_host_port
        from ..native.listening import shared_watch
        from ..native.netns import open_netns
        from ..native.proxy import PortProxy

        port = check_host_port(port)
        if not self.is_local:
            raise errors.NotSupported(
                f"expose_host_port({port}): the Docker Engine at {self.base_url} is not on "
                "this machine, so its containers cannot reach this process's loopback")
        with self._lock:
            if port in self._relays:
                return HOST_NAME
        with self.api.mapped("expose_host_port: inspect the default bridge",
                             error=errors.NetworkError):
            configs = (self.api.inspect_network("bridge").get("IPAM") or {}).get("Config") or []
        gateway = next((c["Gateway"] for c in configs if c.get("Gateway")), None)
        if gateway is None:
            raise errors.NotSupported(f"expose_host_port({port}): this Docker Engine's default "
                                      "bridge has no gateway address (host-gateway)")
        watch = shared_watch()  # made here, in our namespace, the first time
        home = open_netns("/proc/thread-self/ns/net")
        try:
            relay = self._in_engine_netns(lambda: PortProxy(home, port, port, host=gateway,
                                                            pausable=True))
        except errors.NetworkError as exc:
            raise errors.NetworkError(f"expose_host_port(port={port}): {exc}") from exc
        finally:
            os.close(home)
        with self._lock:
            self._relays[port] = relay
        watch.follow(relay, port)  # nothing listening: refused, as Docker's host-gateway gives
        return HOST_NAME

    def _in_engine_netns(self, make: Callable[[], Any]) -> Any:
        """``make()`` with the sockets it opens in the engine's network namespace, where its
        bridges are: ours for a usual local engine, its own for one that runs in a namespace
        of its own (rootless Docker, the test suite's private dockerd). The engine is found
        as the peer of its unix socket."""
        from ..native.netns import enter_netns, open_netns

        path = urlsplit(self.base_url).path
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
                pid = struct.unpack("3i", probe.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
            theirs = f"/proc/{pid}/ns/net"
            if not pid or os.readlink(theirs) == os.readlink("/proc/thread-self/ns/net"):
                return make()
            fd = open_netns(theirs)
        except (OSError, errors.NetworkError):
            return make()  # not ours to see: as a usual local engine
        result: list[Any] = []

        def run() -> None:  # a thread of its own: setns moves only it, and it ends here
            try:
                enter_netns(fd)
                result.append(make())
            except BaseException as exc:  # handed to the caller below
                result.append(exc)

        try:
            thread = threading.Thread(target=run, name="pycontain-engine-netns", daemon=True)
            thread.start()
            thread.join()
        finally:
            os.close(fd)
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def network(self, name: str | None = None, *, internal: bool = False,
                kept: bool = False) -> DockerNetwork:
        """A user-defined bridge network, labelled as ours; ``internal``: Docker's internal
        network, with no way out; ``kept``: it outlives this engine, out of the reaper's reach
        (for kept containers: ``pycontain compose up -d``), until its ``remove()``."""
        if not isinstance(internal, bool):
            raise errors.ConfigError(f"network(internal={internal!r}): expected True or False")
        return self._network(name, internal=internal, kept=kept)

    def _network(self, name: str | None, internal_use: bool = False,
                 internal: bool = False, kept: bool = False) -> DockerNetwork:
        given = name or f"pycontain-{unique_suffix()}"
        engine_name = f"{given}-{unique_suffix()}" if name else given
        engine_name += KEPT_SUFFIX if kept else ""
        with self.api.mapped(f"create network {given}", error=errors.NetworkError):
            nid = self.api.create_network(engine_name, driver="bridge", internal=internal,
                                          labels=self.labels(**{LABEL_NAME: given}))["Id"]
        network = DockerNetwork(self, nid, name=given, engine_name=engine_name,
                                internal_use=internal_use)
        if not kept:
            with self._lock:
                self.networks[nid] = network
        return network

    def run(self, spec: RunSpec, *, reuse: ReuseKey | None = None) -> DockerContainer:
        """Create and start a container; a command that cannot start raises ContainerError
        (Docker's message, exit code 127 or 126) and leaves nothing behind. ``reuse``: its
        labels carry the key, for ``reused`` (``keep`` then puts it out of the reaper's
        reach)."""
        docker = load_docker()
        if reuse is not None and spec.network not in (None, "host", "none") and not getattr(
                spec.network, "reused", False):
            raise errors.NotSupported("reuse=True with a network of the run: a reused container "
                                      "outlives the network; run it on the network kept for "
                                      "it (reused_network), as the factory does")
        image_key = self._ensure_image(spec.image)
        given = spec.name or f"pycontain-{unique_suffix()}"
        engine_name = f"{given}-{unique_suffix()}" if spec.name else given
        host_ip = "127.0.0.1" if self.loopback else ""  # a remote host: every interface
        # the spec is checked and normalised already: only the engine API's shapes are made
        ports = {port: (host_ip, host) for port, host in spec.ports.items()}
        binds = [str(mount) for mount in spec.mounts]
        own_volumes: list[DockerVolume] = []  # a reused container's: kept and removed with it
        mounts: list[dict[str, Any]] = []  # what binds cannot say (a volume's subpath)
        anonymous: list[str] = []
        for wanted in spec.volumes:
            volume = wanted.source
            if volume is None:  # anonymous: Docker makes it, and removes it with the container
                if wanted.read_only or wanted.nocopy or wanted.subpath is not None:
                    mounts.append(_volume_mount(None, wanted))
                else:
                    anonymous.append(wanted.target)
                continue
            if isinstance(volume, str) and reuse is not None:
                volume = reused_volume(self.api, volume, f"{volume}-{unique_suffix()}",
                                       self.labels(**_reuse_labels(reuse, None)))
                own_volumes.append(volume)
            elif isinstance(volume, str):
                volume = self.volume(volume)
            elif not isinstance(volume, DockerVolume) or (
                    self.volumes.get(volume.name) is not volume
                    and self.shared_volumes.get(volume.name) is not volume):
                raise errors.ConfigError(f"container {given}: volumes: {wanted.name!r} is not "
                                         "a volume of this engine")
            if volume.removed:
                raise errors.ConfigError(f"container {given}: volumes: {wanted.name!r} was "
                                         "removed")
            if wanted.subpath is not None:
                self._require_api("1.45", f"container {given}: volumes: {wanted}: subpath "
                                  f"{wanted.subpath!r}")
                mounts.append(_volume_mount(volume.engine_name, wanted))
                continue
            binds.append(f"{volume.engine_name}:{wanted.target}"
                         + (":ro" if wanted.read_only else "")
                         + (":nocopy" if wanted.nocopy else ""))
        nano_cpus = int(spec.cpus * 1e9) if spec.cpus is not None else None
        security = security_options(  # bad input (a profile that is not one): before anything
            privileged=spec.privileged, cap_add=spec.cap_add, cap_drop=spec.cap_drop,
            security_opt=spec.security_opt, sysctls=spec.sysctls,
            host_network=spec.network == "host")
        network = spec.network
        own_network = None
        network_mode = None
        if isinstance(network, DockerNetwork):
            network_mode = network.engine_name
        elif isinstance(network, str):  # "host", "none" or an engine's network name
            network_mode = network
        elif network is None:
            if ports:
                own_network = self._network(None, internal_use=True)
                network_mode = own_network.engine_name
            else:
                network_mode = "none"
        else:
            raise errors.NetworkError(f"network={network!r}: expected a network of this engine, "
                                      "'host', 'none' or None")
        if network_mode == "host":  # Docker ignores published ports there (RunSpec refuses "none")
            ports = {}
        hostname = spec.hostname  # None: Docker's own, the id's first 12 characters
        try:
            with self.api.mapped(f"run {given}"):
                host_config = self.api.create_host_config(
                    network_mode=network_mode,
                    port_bindings=ports or None,
                    binds=binds or None,
                    mounts=mounts or None,
                    tmpfs=dict(spec.tmpfs) or None,
                    read_only=spec.read_only,
                    init=spec.init or None,
                    mem_limit=spec.memory,
                    nano_cpus=nano_cpus,
                    pids_limit=spec.pids,
                    privileged=security.privileged or None,
                    cap_add=list(security.cap_add) or None,
                    cap_drop=list(security.cap_drop) or None,
                    security_opt=list(security.docker_security_opt) or None,
                    sysctls=dict(security.sysctls) or None,
                    shm_size=spec.shm_size,
                    extra_hosts=({HOST_NAME: "host-gateway", **spec.extra_hosts}
                                 if self._relays and network_mode != "host"
                                 else dict(spec.extra_hosts) or None),
                )
                networking = None
                if network_mode not in ("host", "none", None) and not network_mode.startswith(
                        "container:"):
                    networking = self.api.create_networking_config({
                        network_mode: self.api.create_endpoint_config(
                            aliases=[given, *spec.aliases])})
                created = self.api.create_container(
                    image_key,
                    command=list(spec.command) if spec.command is not None else None,
                    # [""] drops the image's entrypoint, as docker run --entrypoint "" sends
                    # it (Podman reads an empty list as "the image's")
                    entrypoint=(list(spec.entrypoint) or [""]) if spec.entrypoint is not None
                    else None,
                    environment=dict(spec.env) or None,
                    hostname=hostname,
                    user=spec.user or None,
                    working_dir=spec.workdir or None,
                    ports=list(ports) or None,
                    volumes=anonymous or None,
                    labels={**spec.labels, **self.labels(**{LABEL_NAME: given},
                                                         **_reuse_labels(reuse, own_network))},
                    stop_signal=spec.stop_signal,
                    name=engine_name,
                    host_config=host_config,
                    networking_config=networking,
                )
        except BaseException:  # nothing left behind: not even the network made for it
            if own_network is not None:
                own_network.remove()
            for volume in own_volumes:
                with contextlib.suppress(errors.PycontainError):
                    volume.remove()
            raise
        container = DockerContainer(
            self, created["Id"], name=given, engine_name=engine_name,
            hostname=hostname or created["Id"][:12], image=spec.image,
            network=spec.network if isinstance(spec.network, DockerNetwork) else None,
            own_network=own_network, network_mode=network_mode, spec=spec)
        container.reuse_key = reuse.key if reuse is not None else None
        with self._lock:
            self.containers[container.id] = container
        try:
            self.api.start(container.id)
        except docker.errors.APIError as exc:
            reason = message(exc)
            code = 127 if ("not found" in reason or "no such file" in reason) else 126
            with contextlib.suppress(Exception):
                code = int(self.api.inspect_container(container.id)["State"]["ExitCode"]) or code
            logs = ""
            with contextlib.suppress(Exception):
                logs = container.logs()
            container.remove()
            raise errors.ContainerError(f"run {given}: {reason}", exit_code=code, logs=logs,
                                        container=container.id) from exc
        return container

    def reused_network(self, name: str, slot: str, *, internal: bool = False) -> DockerNetwork:
        """The network kept across runs for the reused containers asked for on a network
        named ``name`` (``slot``: that name in one project): found by its label, else made.
        Its engine-level name ends as a kept container's, so neither the reaper nor the run's
        teardown takes it; ``pycontain prune --reused`` does. The caller holds the slot's
        lock (one network per slot across processes)."""
        with self.api.mapped(f"find the kept network {name}", error=errors.NetworkError):
            found = self.api.networks(filters={"label": f"{LABEL_REUSE_NETSLOT}={slot}"})
            if found:
                nid, engine_name = found[0]["Id"], found[0]["Name"]
            else:
                engine_name = f"{name}-{slot[:12]}{KEPT_SUFFIX}"
                nid = self.api.create_network(
                    engine_name, driver="bridge", internal=internal,
                    labels=self.labels(**{LABEL_NAME: name, LABEL_REUSE_NETSLOT: slot}))["Id"]
        network = DockerNetwork(self, nid, name=name, engine_name=engine_name)
        network.reused = True
        return network

    def reused(self, slot: str) -> list[Reused]:
        """The reused containers of ``slot`` that outlived their runs (by their labels)."""
        found = []
        with self.api.mapped(f"list reused containers of {slot}"):
            listed = self.api.containers(all=True,
                                         filters={"label": f"{LABEL_REUSE_SLOT}={slot}"})
        for info in listed:
            labels = info.get("Labels") or {}
            engine_name = (info.get("Names") or ["?"])[0].lstrip("/")
            own = None
            network_name = labels.get(LABEL_REUSE_NETWORK)
            nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
            if network_name and network_name in nets:
                own = DockerNetwork(self, nets[network_name].get("NetworkID") or network_name,
                                    name=network_name, engine_name=network_name,
                                    internal_use=True)
            mode = (info.get("HostConfig") or {}).get("NetworkMode")
            container = DockerContainer(
                self, info["Id"], name=labels.get(LABEL_NAME, engine_name),
                engine_name=engine_name, hostname=info["Id"][:12], image=info.get("Image"),
                network=None, own_network=own, network_mode=mode)
            container.reuse_key = labels.get(LABEL_REUSE_KEY) or None
            found.append(Reused(container, labels.get(LABEL_REUSE_KEY, "")))
        return found

    def keep(self, container: DockerContainer) -> str:
        """Leave ``container`` running after close(), out of the reaper's reach (keep-on-failure);
        returns its id, for ``docker exec -it ID sh`` and ``docker rm -f ID``."""
        if not isinstance(container, DockerContainer) or container.engine is not self:
            raise errors.ContainerError(f"{container!r} is not a container of this engine")
        return container.keep()

    def enter_command(self, container: DockerContainer) -> list[str]:
        return ["docker", "exec", "-it", container.id, "sh"]

    def remove_command(self, container: DockerContainer) -> list[str]:
        return ["docker", "rm", "-f", container.id]

    # -- cleanup --------------------------------------------------------------------------------
    def _remove_labelled(self, match: Callable[[Mapping[str, str], str], bool]) -> list[str]:
        """Remove the containers, networks and volumes with our labels that ``match``
        (labels, engine-level name) selects."""
        docker = load_docker()
        removed = []
        api = self.api
        for info in api.containers(all=True, filters={"label": LABEL_PID}):
            name = (info.get("Names") or ["?"])[0].lstrip("/")
            if match(info.get("Labels") or {}, name):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_container(info["Id"], force=True, v=True)
                    removed.append(f"container {name}")
        for info in api.networks(filters={"label": LABEL_PID}):
            if match(info.get("Labels") or {}, info["Name"]):
                let_go_of_reused(api, info["Id"])  # a dead run's, that reused ones joined
                with contextlib.suppress(docker.errors.APIError):
                    # a kept container still on it keeps it: Docker refuses to remove a
                    # network with members, Podman removes it from under them
                    if not api.inspect_network(info["Id"]).get("Containers"):
                        api.remove_network(info["Id"])
                        removed.append(f"network {info['Name']}")
        for info in (api.volumes(filters={"label": LABEL_PID}) or {}).get("Volumes") or []:
            if match(info.get("Labels") or {}, info["Name"]):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_volume(info["Name"], force=True)
                    removed.append(f"volume {info['Name']}")
        return removed

    def remove_left_by(self, info: Mapping[str, Any]) -> list[str]:
        """After a kept container (``info``, as listed) is removed: the named volumes and
        networks it used that a dead owner of ours left, once nothing else uses them (what
        the next reap would take; the engine refuses what is still in use). Their names."""
        docker = load_docker()
        api = self.api
        removed = []
        for mount in info.get("Mounts") or ():
            name = mount.get("Name")
            if mount.get("Type") != "volume" or not name:
                continue
            with contextlib.suppress(docker.errors.APIError):
                labels = api.inspect_volume(name).get("Labels") or {}
                if LABEL_PID in labels and owner_died(labels):
                    api.remove_volume(name)
                    removed.append(f"volume {name}")
        for name, net in ((info.get("NetworkSettings") or {}).get("Networks") or {}).items():
            with contextlib.suppress(docker.errors.APIError):
                found = api.inspect_network(net.get("NetworkID") or name)
                labels = found.get("Labels") or {}
                if LABEL_PID in labels and owner_died(labels) and not found.get("Containers"):
                    api.remove_network(found["Id"])
                    removed.append(f"network {name}")
        return removed

    def reap(self) -> list[str]:
        """Remove what owners that died on this host left (never a live owner's, never a kept
        container); returns what was removed."""
        removed = self._remove_labelled(left_by_dead_owner)
        return removed + self._remove_orphan_volumes()

    def _remove_orphan_volumes(self) -> list[str]:
        """A reused container's volumes whose maker died before the container was kept (no
        container has their key): nobody else would ever remove them."""
        api = self.api
        keys = {(info.get("Labels") or {}).get(LABEL_REUSE_KEY) for info in
                api.containers(all=True, filters={"label": LABEL_REUSE_KEY})}
        removed = []
        for info in (api.volumes(filters={"label": LABEL_REUSE_KEY}) or {}).get("Volumes") or []:
            labels = info.get("Labels") or {}
            if labels.get(LABEL_REUSE_KEY) not in keys and owner_died(labels):
                with contextlib.suppress(errors.PycontainError):
                    DockerVolume(api, info["Name"], info["Name"]).remove()
                    removed.append(f"volume {info['Name']}")
        return removed

    def close(self) -> None:
        """Remove everything this engine made (kept containers excepted)."""
        with self._lock:
            relays, self._relays = list(self._relays.values()), {}
        for relay in relays:
            relay.close()
        for container in list(self.containers.values()):
            with contextlib.suppress(errors.PycontainError):
                container.remove()
        for network in list(self.networks.values()):
            with contextlib.suppress(errors.PycontainError):
                network.remove()
        for volume in list(self.volumes.values()):
            with contextlib.suppress(errors.PycontainError):
                volume.remove()
        with contextlib.suppress(Exception):
            self._remove_labelled(lambda labels, name: labels.get(LABEL_SESSION)
                                  == self.session_id and not name.endswith(KEPT_SUFFIX))
        with contextlib.suppress(Exception):
            self.api.close()

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _volume_mount(engine_name: str | None, wanted: Any) -> dict[str, Any]:
    """A volume in the engine API's ``Mounts`` form (None: an anonymous one)."""
    options: dict[str, Any] = {}
    if wanted.nocopy:
        options["NoCopy"] = True
    if wanted.subpath is not None:
        options["Subpath"] = wanted.subpath
    mount: dict[str, Any] = {"Target": wanted.target, "Type": "volume",
                             "ReadOnly": bool(wanted.read_only)}
    if engine_name is not None:
        mount["Source"] = engine_name
    if options:
        mount["VolumeOptions"] = options
    return mount


def _reuse_labels(reuse: ReuseKey | None, own_network: DockerNetwork | None) -> dict[str, str]:
    if reuse is None:
        return {}
    labels = {LABEL_REUSE_KEY: reuse.key, LABEL_REUSE_SLOT: reuse.slot,
              LABEL_REUSE_NAME: reuse.label}
    if own_network is not None:
        labels[LABEL_REUSE_NETWORK] = own_network.engine_name
    return labels

