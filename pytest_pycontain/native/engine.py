"""``NativeEngine``: the daemonless backend. The pytest process (or ``pycontain``) is the engine.

Containers are forked by a single-threaded zygote (``zygote.py``, reached through
``zygote_client.py``) and looked after by one small shim each (``process.py``); what they say
to each other is ``protocol.py``. This module turns a ``RunSpec`` into a ``RunPlan`` and
``container.py`` holds the handles. Every resource is journalled (``state.py``) before it is
made, and reaped at the next start if we are killed. See docs/architecture.md.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import secrets
import socket
import stat
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import idmap
from ..engine import HOST_NAME, Reused, ReuseKey, RunSpec
from ..errors import (
    ConfigError,
    ContainerError,
    EngineUnavailable,
    ImageError,
    NetworkError,
    NotSupported,
)
from ..imageconfig import DEFAULT_PATH, split_env
from ..runspec import HOST_GATEWAY
from ..security import security_options
from . import cgroups, rootfs, state
from .boundary import UNCONFINED, Boundary, boundary_for
from .cgroups import Limits
from .container import (
    AttachedLimits,
    Found,
    NativeContainer,
    Relaunch,
    Services,
    image_name,
)
from .exits import ExitWatch
from .janitor import Janitor
from .protocol import Bind, RunPlan
from .userns import enter, entered
from .zygote_client import WarmShim, ZygoteClient

__all__ = ["NativeContainer", "NativeEngine", "command_line", "image_config", "native_runner"]

WARM_SHIMS = 1  # shims kept ready (namespaces made, PID 1 forked) for the next start
ROOTLESS_BLOCKED = (
    "the native engine needs root or user namespaces (rootless mode), and this host "
    "stops the latter: {}; or run containers through the Docker backend: "
    "--pycontain-backend=docker with a reachable Docker Engine")


def enter_rootless() -> Any:
    """Enter the user namespace of rootless mode (once per process): the ``idmap.Mapping``."""
    if entered() is None:
        if os.getuid() == 0:  # root that set another effective uid: not a user of its own
            raise EngineUnavailable(
                f"the native engine needs root: this process is root with effective uid "
                f"{os.geteuid()}, which is neither root nor a user that rootless mode can "
                "map; or run containers through the Docker backend: --pycontain-backend=docker")
        blockers = idmap.blockers()
        if blockers:
            raise EngineUnavailable(ROOTLESS_BLOCKED.format("; ".join(blockers)))
    return enter()


def rootless_limits(root: str | os.PathLike = "/sys/fs/cgroup") -> str:
    """Why memory/cpus/pids cannot be set rootless here (no delegated subtree), with the fix."""
    _, why = idmap.cgroup_delegation(root)
    return (f"memory, cpus and pids limits in rootless mode need a cgroup v2 subtree "
            f"delegated to the user: {why}; run as root for limits, or drop them")


def own_directory(path: Path) -> None:
    """A rootless state directory may sit in /tmp: it must be ours and closed to others, or
    another user could plant records that the reaper acts on."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise EngineUnavailable(
            f"{path}: the engine's state directory must be a directory of this user's with "
            f"mode 0700 (it is owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); "
            "remove it or set PYCONTAIN_STATE_DIR")


def image_config(image: Any) -> dict[str, Any]:
    """The Docker-shaped config of anything with ``.config`` (an Image, or a test double)."""
    config = dict(getattr(image, "config", None) or {})
    if "config" in config and "Env" not in config:  # an OCI config blob, not its "config"
        config = dict(config["config"] or {})
    return config


def command_line(config: Mapping[str, Any], spec: RunSpec) -> list[str]:
    """Entrypoint + Cmd as Docker combines them: a run ``entrypoint`` drops the image's Cmd
    (the spec holds both as argvs already)."""
    if spec.entrypoint is not None:
        entrypoint, cmd = list(spec.entrypoint), []
    else:
        entrypoint = list(config.get("Entrypoint") or [])
        cmd = list(config.get("Cmd") or [])
    if spec.command is not None:
        cmd = list(spec.command)
    return entrypoint + cmd


class NativeEngine:
    """Runs containers in Linux namespaces on this machine: as root, or rootless inside a user
    namespace of the engine's own (``userns.py``)."""

    name = "native"

    def __init__(self, settings: Any = None, *, state_dir: str | os.PathLike | None = None,
                 store: Any = None, reap: bool = True,
                 cgroup_root: str | os.PathLike | None = None):
        if not sys.platform.startswith("linux"):
            raise EngineUnavailable(f"the native engine needs Linux (this is {sys.platform})")
        self.rootless = enter_rootless() if os.geteuid() != 0 or entered() else None
        if settings is None:
            from ..config import Settings

            settings = Settings()
        self.settings = settings
        self.state_root = Path(state_dir) if state_dir is not None else settings.state_path
        try:
            self.state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise EngineUnavailable(
                f"the native engine cannot make its state directory {self.state_root}: "
                f"{exc.strerror or exc}; set PYCONTAIN_STATE_DIR (or XDG_RUNTIME_DIR) to a "
                "directory you may write") from exc
        if self.rootless is not None:
            own_directory(self.state_root)
        if reap:
            state.reap(self.state_root)
        self._store = store
        self.cgroup_root = (Path(cgroup_root) if cgroup_root is not None
                            else cgroups.default_root())
        # rootless: containers' cgroups go under our v2 cgroup when it is delegated to us
        # (we sit in a leaf of it: cgroupleaf.py)
        self._delegated = (idmap.delegated_cgroup(self.cgroup_root)
                           if self.rootless is not None else None)
        self.journal = state.Journal(self.state_root)
        self._lock = threading.Lock()
        self._spares = self.rootless is None  # spare cgroups for warm shims, where useful
        self._v2_spares = False  # they are v2 ones: a start claims one (``_claim_warm``)
        stage = None
        if self._spares:  # an empty directory warm shims mount on in their own namespaces
            stage = self.state_root / "stage"
            stage.mkdir(mode=0o700, exist_ok=True)
        self.zygote = ZygoteClient(self.journal, warm=WARM_SHIMS,
                                   spare_cgroups=self._spare_cgroups,
                                   stage=None if stage is None else str(stage))
        self.janitor = Janitor(self.journal)
        self.containers: dict[str, NativeContainer] = {}
        self._services = Services(self.journal, self.state_root, self.zygote, self.janitor,
                                  settings.timeout, self._forget, lambda: self.store)
        self._closed = False
        self._networks: list[Any] = []
        self._spare_networks: list[Any] = []  # network.Spare: removed networks' namespaces
        self._networks_recorded = False
        self._volumes: dict[str, Any] = {}  # named volumes by name: volumes.NativeVolume
        self._shared: dict[str, Any] = {}  # volumes that outlive us (``shared_volume``)
        self._default_network: Any = None  # made for the first container with ports and none
        self._default_lock = threading.Lock()
        self._exits = ExitWatch()
        self._exposed: set[int] = set()  # ports of our loopback that containers reach
        self.progress: Callable[[str], None] | None = None  # lines for the user (the plugin's)
        atexit.register(self.close)  # tidy even if nobody calls close(); reaping is the backstop

    def _spare_cgroups(self) -> tuple[str, ...]:
        """A cgroup set (journalled) for the next warm shim's PID 1 to be born in, which a
        container without limits takes over: on v1 by renaming it (``Limits.shim_joins``),
        on v2 (which cannot rename a cgroup) by taking its name as its id (``_claim_warm``).
        None rootless."""
        if not self._spares:
            return ()
        spare = Limits(f"spare-{secrets.token_hex(8)}", root=self.cgroup_root, own=True)
        if spare.version == 2:  # named as a container, whose id it becomes
            spare = Limits(secrets.token_hex(32), root=self.cgroup_root, version=2, own=True)
        if not (spare.shim_joins or spare.version == 2):
            self._spares = False
            return ()
        self._v2_spares = spare.version == 2
        try:
            return tuple(str(p) for p in spare.create(self.journal))
        except OSError:
            self._spares = False
            return ()

    def describe(self) -> str:
        if self.rootless is not None:
            return (f"native (rootless: {self.rootless.describe()}; Linux namespaces, "
                    f"daemonless; state in {self.state_root})")
        return f"native (Linux namespaces, daemonless; state in {self.state_root})"

    # --- images ---

    @property
    def store(self) -> Any:
        if self._store is None:
            try:
                from ..store import Store
            except ImportError as exc:
                raise NotSupported(f"the image store is not available yet: {exc}") from exc
            self._store = Store.from_settings(self.settings)
        return self._store

    def pull(self, ref: str) -> Any:
        return self.store.pull(ref, progress=pull_progress(self.progress))

    def build(self, context: str | os.PathLike, *, dockerfile: str | os.PathLike | None = None,
              target: str | None = None, build_args: Mapping[str, str] | None = None,
              tag: str | None = None, no_cache: bool = False,
              progress: Callable[[str], None] | None = None,
              secrets: Mapping[str, str | os.PathLike] | None = None) -> Any:
        """Build a Dockerfile into the store; RUN steps run in this engine (host network)."""
        from ..build import build

        return build(self.store, Path(context), dockerfile=Path(dockerfile) if dockerfile
                     else None, target=target, build_args=build_args, tag=tag,
                     no_cache=no_cache, run_step=native_runner(self),
                     progress=progress or self.progress, secrets=secrets)

    SPARE_NETWORKS = 2

    def volume(self, name: str | None = None) -> Any:
        """A named volume (a ``volumes.NativeVolume``): made on first use of ``name``, the same
        one after, until removed; ``None`` makes one with a name of its own."""
        from ..runspec import check_volume_name
        from .volumes import NativeVolume

        if name is not None:
            check_volume_name(name, "volume")
        with self._lock:
            found = self._volumes.get(name) if name is not None else None
            if found is not None and not found.removed:
                return found
            volume = NativeVolume.create(self.state_root / "volumes", self.journal,
                                         name or secrets.token_hex(32))
            self._volumes[volume.name] = volume
            return volume

    def shared_volume(self, name: str, *, create: bool = True) -> Any:
        """A volume that outlives this engine and every other (``pycontain compose up -d``'s
        project volumes, compose's ``external`` ones): ``<state>/volumes/shared/<name>``, never
        journalled, never reaped, removed only by its ``remove()``. Missing and not ``create``:
        a ConfigError naming it."""
        from ..runspec import check_volume_name
        from .volumes import NativeVolume

        check_volume_name(name, "volume")
        with self._lock:
            found = self._shared.get(name)
            if found is not None and not found.removed:
                return found
            volume = NativeVolume.open_shared(self.state_root / "volumes", name, create=create)
            if volume is None:
                raise ConfigError(f"volume {name!r} does not exist (no volume of that name was "
                                  f"made in this run, nor kept in {self.state_root})")
            self._shared[name] = volume
            return volume

    def find_volume(self, name: str) -> Any:
        """The live named volume ``name`` of this engine, or None."""
        with self._lock:
            found = self._volumes.get(name)
        return found if found is not None and not found.removed else None

    def network(self, name: str | None = None, *, internal: bool = False) -> Any:
        """A bridge network in its own namespace; removed at close if still there. A removed
        network no container was on anymore leaves its namespace, bridge and subnet for the
        next one (up to ``SPARE_NETWORKS``): a network per test then costs no namespace.

        It reaches the outside world as Docker's bridge does (through pasta, never the host's
        loopback; see ``netegress.py``), unless ``internal``. Without pasta or iptables on this
        host, one warning says so and networks have no way out."""
        from .ipam import IPAM
        from .network import BridgeNetwork

        if not isinstance(internal, bool):
            raise ConfigError(f"network(internal={internal!r}): expected True or False")
        egress = not internal and _egress_possible()

        records = self._net_records()
        with self._lock:
            self._networks = [n for n in self._networks if not n.removed]
            if name is not None and any(n.name == name for n in self._networks):
                raise NetworkError(f"a network named {name!r} already exists in this session")
            # the newest spare first (the namespace just removed, still warm), with a way out
            # or without as asked
            spare = next((s for s in reversed(self._spare_networks)
                          if (s.egress is not None) == egress), None)
            if spare is not None:
                self._spare_networks.remove(spare)
        ipam = IPAM(self.state_root, pool=self.settings.network_pool,
                    prefix=self.settings.network_prefix)
        network = BridgeNetwork(name, ipam=ipam, records_dir=records, spare=spare,
                                recycle=self._keep_spare, egress=egress, internal=internal,
                                exposed=sorted(self._exposed),
                                resolvers=upstream_resolvers() if egress else ())
        with self._lock:
            self._networks.append(network)
        return network

    def expose_host_port(self, port: int) -> str:
        """Containers on this engine's networks reach this process's ``127.0.0.1:port`` as
        ``host.pycontain.internal:port`` (returned); nothing listening there is a connection
        refused inside, as Docker gives. Internal networks have no way there."""
        port = check_host_port(port)
        with self._lock:
            self._exposed.add(port)
            networks = [n for n in self._networks if not n.removed]
        for network in networks:
            try:
                network.expose(port)
            except NetworkError as exc:
                raise NetworkError(f"expose_host_port(port={port}) on network "
                                   f"{network.name!r}: {exc}") from exc
        return HOST_NAME

    def _net_records(self) -> Path:
        """This owner's directory of network records, journalled (once) for the reaper."""
        records = self.state_root / "netrecords" / self.journal.owner
        if not self._networks_recorded:
            self.journal.record("netrecords", records_dir=str(records),
                                handler="pytest_pycontain.native.netrecords:undo_record")
            self._networks_recorded = True
        return records

    def default_network(self) -> Any:
        """The engine's own network for containers with ``ports`` and no network, as Docker's
        default bridge: published ports always go through a real interface. Made once, at
        first use; its members do not resolve each other by name (as on Docker's)."""
        with self._default_lock:
            if self._default_network is None or self._default_network.removed:
                self._default_network = self.network()
            return self._default_network

    def _keep_spare(self, spare: Any) -> bool:
        with self._lock:
            if self._closed or len(self._spare_networks) >= self.SPARE_NETWORKS:
                return False
            self._spare_networks.append(spare)
            return True

    def _image(self, image: Any) -> Any:
        if isinstance(image, str):
            return self.pull(image)
        return image

    def _lower_dirs(self, image: Any) -> list[str]:
        for attribute in ("lower_dirs", "layer_dirs"):
            value = getattr(image, attribute, None)
            if value is not None:
                dirs = value() if callable(value) else value
                return [os.fspath(d) for d in dirs]
        return [os.fspath(d) for d in self.store.layer_dirs(image)]

    # --- containers ---

    def run(self, spec: RunSpec, *,
            before_start: Callable[[NativeContainer], None] | None = None,
            reuse: ReuseKey | None = None) -> NativeContainer:
        """Create and start a container. ``before_start(container)`` runs once its namespaces
        exist (``container.pid`` is PID 1, its network namespace is ``/proc/PID/ns/net``) but
        before its command starts: where networks attach it. ``reuse``: it is to outlive the
        run (``keep`` then records the key, for ``reused``)."""
        image = self._image(spec.image)
        config = image_config(image)
        if spec.stop_signal is not None:  # the container's config, as Docker's --stop-signal
            config = {**config, "StopSignal": spec.stop_signal}
        network = spec.network
        bridge = None
        if network not in (None, "host", "none"):
            if not hasattr(network, "attach"):
                raise ConfigError(f"network={network!r}: expected a network from "
                                  "pycontain.network(), 'host' or None")
            bridge = network
            bridge.ensure_usable()  # a removed network is a clear error before anything is made
        if spec.aliases and bridge is None:
            raise ConfigError("aliases need a network: pass network=pycontain.network()")
        if spec.ports and network == "none":
            raise NetworkError("ports cannot be published with network='none'")
        named = True
        if spec.ports and network is None:
            bridge, named = self.default_network(), False
        argv = command_line(config, spec)
        if not argv:
            raise ContainerError("no command specified: the image has no Entrypoint or Cmd and "
                                 "none was given")
        workdir = spec.workdir or config.get("WorkingDir") or "/"
        if not workdir.startswith("/"):
            raise ConfigError(f"workdir={workdir!r}: the working directory must be absolute")
        lower = self._lower_dirs(image)
        for path in lower:
            if not os.path.isdir(path):
                raise ImageError(f"image {image_name(image)}: its layer directory {path} does "
                                 "not exist (was the store cleaned?)")
        if not lower:
            raise ImageError(f"image {image_name(image)}: it has no layers to run")
        mounts = tuple(Bind(str(m.source), m.target, m.read_only) for m in spec.mounts)
        boundary = boundary_for(security_options(
            privileged=spec.privileged, cap_add=spec.cap_add, cap_drop=spec.cap_drop,
            security_opt=spec.security_opt, sysctls=spec.sysctls,
            host_network=network == "host"))
        # checked first: a shim is taken for it next
        warm = self._claim_warm(spec, network)
        container_id = (os.path.basename(warm.cgroups[0]) if warm and warm.cgroups
                        else secrets.token_hex(32))
        # on the host's network, the host's name (as Docker does); else the id's first 12
        hostname = spec.hostname or (socket.gethostname() if network == "host"
                                     else container_id[:12])
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
        env.update(split_env(config.get("Env")))
        env.update(spec.env)
        user = spec.user if spec.user is not None else (config.get("User") or "")
        if self.rootless is None or self._delegated is not None:
            limits = Limits(container_id, memory=spec.memory, cpus=spec.cpus, pids=spec.pids,
                            root=self._delegated or self.cgroup_root, own=True)
        else:  # rootless without a delegated subtree: no cgroups of its own either
            limits = Limits(container_id, memory=spec.memory, cpus=spec.cpus, pids=spec.pids,
                            root=self.cgroup_root, version=0)
            if limits.wanted:
                raise NotSupported(rootless_limits(self.cgroup_root))
        directory = self.state_root / "containers" / container_id[:16]
        name = spec.name or f"pycontain-{container_id[:12]}"
        limits.require(name)
        # the engine-level name carries a unique suffix, so parallel runs never clash
        engine_name = f"{spec.name}-{container_id[:8]}" if spec.name else name
        labels = {**(config.get("Labels") or {}), **spec.labels}
        self.journal.record_all([
            state.entry("container", container_id, name=engine_name, dns_name=spec.name,
                        labels=labels, image=image_name(image), dir=str(directory), argv=argv,
                        hostname=hostname, env=env, user=user, workdir=workdir,
                        stop_signal=config.get("StopSignal"), cgroups=list(limits.dirs)),
            state.entry("dir", container_id, path=str(directory))])
        container = NativeContainer(self._services, container_id, name, hostname, image, config,
                                    directory, env, user, workdir, limits)
        container.run_config = _run_config(config, spec, env, user, workdir)
        container.labels = labels
        container.spec = spec
        container.reuse = reuse
        try:
            (directory / "l").mkdir(parents=True)
            # for an exec from another process (``attach``): the same boundary as PID 1
            (directory / "boundary.json").write_text(json.dumps(boundary.to_json()))
            for number, path in enumerate(lower):
                os.symlink(path, directory / "l" / str(number))
            for part in ("upper", "work", "merged"):
                (directory / part).mkdir()
            volumes = self._volume_binds(spec, config, container_id, name, reuse is not None)
            try:
                cgroups = [str(p) for p in limits.create(self.journal,
                                                         make=not limits.shim_joins)]
            except OSError as exc:
                where = exc.filename or limits.root
                raise ContainerError(f"container {name}: cannot set its limits (memory, cpus, "
                                     f"pids) in {where}: {exc.strerror or exc}",
                                     container=container_id) from exc
            start_hook = before_start
            if bridge is not None:
                start_hook = _joining(bridge, spec, name, hostname, before_start, named)
            plan = RunPlan(
                directory=str(directory), lower=tuple(lower), argv=tuple(argv), env=env,
                workdir=workdir, user=user, hostname=hostname, host_network=network == "host",
                read_only=spec.read_only, mounts=mounts,
                tmpfs=tuple(sorted(spec.tmpfs.items())), init=spec.init,
                cgroups=tuple(cgroups), shim_joins=limits.shim_joins,
                cgroup2=limits.version == 2 and bool(cgroups),
                etc=_etc_files(hostname, network == "host", spec),
                pause=start_hook is not None, boundary=boundary, shm_size=spec.shm_size,
                volumes=volumes)
            container.launch(plan, start_hook, warm)
            records_dir = self.state_root / "netrecords" / self.journal.owner
            ports = spec.ports if network != "host" else {}
            if ports:
                container.publish(ports, records_dir)
            watch = self._exits.watch if bridge is not None else None
            if watch is not None and container.pid is not None:
                watch(container.pid, functools.partial(container.ended, container.pid))
            container.relaunch = Relaunch(plan, start_hook, ports, records_dir, watch)
        except BaseException:
            if warm is not None:  # not started: it ends unused, its PID 1 with it
                warm.sock.close()
            container.abandon()
            raise
        self.containers[container_id] = container
        return container

    def _claim_warm(self, spec: RunSpec, network: Any) -> WarmShim | None:
        """On cgroup v2, for a container without limits on a network namespace of its own: a
        warm shim whose PID 1 was born in a spare v2 cgroup (``process.fork_into``), whose
        name then becomes the container's id, so that the spare is the container's cgroup and
        nothing is moved at the start. (v2 cannot rename a cgroup, as v1's spares are.)"""
        if (not (self._spares and self._v2_spares) or network == "host"
                or self.rootless is not None
                or any(v is not None for v in (spec.memory, spec.cpus, spec.pids))):
            return None
        return self.zygote.take_warm()  # with no spare (none could be made): moved as before

    def _volume_binds(self, spec: RunSpec, config: Mapping[str, Any], container_id: str,
                      name: str, reused: bool = False) -> tuple[Bind, ...]:
        """The run request's named volumes, then an anonymous volume (journalled under the
        container, so it goes with it) for each image VOLUME that nothing else covers.
        ``reused``: a volume named here is the container's own (journalled under it as an
        anonymous one is), so its keeper keeps it and it goes with the container."""
        from .volumes import NativeVolume

        binds = []
        for wanted in spec.volumes:
            volume = wanted.source
            if volume is None or (isinstance(volume, str) and reused):
                # the container's own: an anonymous one, or (reused) one named here
                volume = NativeVolume.create(self.state_root / "volumes", self.journal,
                                             name=volume, container=container_id)
            elif isinstance(volume, str):
                volume = self.volume(volume)
            elif not isinstance(volume, NativeVolume) or (
                    self._volumes.get(volume.name) is not volume
                    and self._shared.get(volume.name) is not volume):
                raise ConfigError(f"container {name}: volumes: {wanted.name!r} is not a volume "
                                  "of this engine")
            if volume.removed:
                raise ConfigError(f"container {name}: volumes: {wanted.name!r} was removed")
            volume.used_by(container_id)  # if it is kept, its keeper keeps the volume too
            subpath = (None if wanted.subpath is None else volume.check_subpath(
                wanted.subpath, f"container {name}: volumes: {wanted}"))
            binds.append(Bind(str(volume.data), wanted.target, wanted.read_only,
                              wanted.nocopy or subpath is not None, subpath))
        covered = {b.target.rstrip("/") or "/" for b in binds}
        covered |= {m.target.rstrip("/") or "/" for m in spec.mounts}
        covered |= {target.rstrip("/") or "/" for target in spec.tmpfs}
        for target in sorted(config.get("Volumes") or {}):
            if not target.startswith("/"):
                raise ImageError(f"container {name}: the image's VOLUME {target!r} is not an "
                                 "absolute path")
            if (target.rstrip("/") or "/") in covered:
                continue
            anonymous = NativeVolume.create(self.state_root / "volumes", self.journal,
                                            container=container_id)
            binds.append(Bind(str(anonymous.data), target, False))
        return tuple(binds)

    def attach(self, ref: str) -> NativeContainer:
        """A handle on a live or kept container of any owner, by id (or a prefix) or name: what
        ``pycontain exec ID`` and ``pycontain rm ID`` use."""
        found = [c for c in state.containers(self.state_root)
                 if matches(c, ref)]
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise ContainerError(f"{what} container matches {ref!r} in {self.state_root}")
        record = found[0]
        journal = self.state_root / "owners" / f"{record['owner']}.journal"
        processes = {r.get("role"): r for r in state.read_journal(journal)
                     if r["kind"] == "process" and r.get("container") == record["container"]}
        cgroups = [Path(p) for p in record.get("cgroups", ())]
        try:
            boundary = Boundary.from_json(json.loads(
                (Path(record["dir"]) / "boundary.json").read_text()))
        except (OSError, ValueError):
            boundary = UNCONFINED  # made before containers had a boundary
        found = Found(pid=processes["pid1"]["pid"], shim=processes["shim"]["pid"],
                      started_at=processes["pid1"].get("start"), kept=record["kept"],
                      boundary=boundary)
        container = NativeContainer(
            self._services, record["container"], record["name"], record["hostname"],
            record["image"], {"StopSignal": record.get("stop_signal")}, Path(record["dir"]),
            record["env"], record["user"], record["workdir"], AttachedLimits(cgroups),
            found=found)
        container.labels = dict(record.get("labels") or {})
        return container

    def reused(self, slot: str) -> list[Reused]:
        """The reused containers of ``slot`` that outlived their runs (``run(reuse=...)``),
        as handles of this process; their keepers relay their published ports."""
        found = []
        for record in state.containers(self.state_root):
            mark = record.get("reuse")
            if not mark or mark.get("slot") != slot or not record["kept"]:
                continue
            container = self.attach(record["container"])
            container.relayed(record.get("published") or {})
            found.append(Reused(container, mark["key"]))
        return found

    def rejoin(self, container: NativeContainer, network: Any, name: str | None,
               aliases: tuple[str, ...] = ()) -> str:
        """Join a reused container of an earlier run (its keeper holds the network it was
        made on) to this run's ``network``, as its network for names: its ``name`` and
        ``aliases`` resolve there, and its resolv.conf and hosts become that network's, so
        that it resolves this run's members (the other reused ones rejoined too)."""
        if not hasattr(network, "attach"):
            raise ConfigError(f"network={network!r}: expected a network from "
                              "pycontain.network()")
        ip = network.attach(f"/proc/{container.pid}/ns/net", name or container.hostname,
                            list(aliases), key=container.id)
        # its /etc files are bound from its directory: rewritten in place, it sees them
        rootfs.write_file(container.dir / "resolv.conf", network.resolv_conf().encode(),
                          in_place=True)
        rootfs.write_file(container.dir / "hosts",
                          network.hosts(container.id, container.hostname).encode(), in_place=True)
        return ip

    def keep(self, container: NativeContainer) -> str:
        """Hand ``container`` to a keeper (its own shim) that outlives this process; the reaper
        leaves it alone. Returns the keeper's owner name; ``state.remove_kept`` removes it."""
        return container.keep()

    def leave_networks(self, container: NativeContainer) -> None:
        """Leave the networks of kept ``container`` to its keeper (which holds their bridge
        and answers their names): ``close`` does not remove them (``pycontain run -d``)."""
        with self._lock:
            for network in container.networks:
                if network in self._networks:
                    self._networks.remove(network)
                if network is self._default_network:
                    self._default_network = None

    def drain(self) -> None:
        """Wait until removed containers' cgroups and files are gone (that runs in the
        background)."""
        self.janitor.drain()

    def enter_command(self, container: NativeContainer) -> list[str]:
        """``pycontain exec ID sh``, spelled so that it runs without the venv on ``PATH``."""
        from ..invocation import pycontain_argv

        return [*pycontain_argv(), "exec", container.id, "sh"]

    def remove_command(self, container: NativeContainer) -> list[str]:
        from ..invocation import pycontain_argv

        return [*pycontain_argv(), "rm", container.id]

    def _forget(self, container_id: str) -> None:
        """A removed container's handle is no longer ours to close."""
        self.containers.pop(container_id, None)

    def close(self) -> None:
        """Kill and remove every container this engine made (except kept ones), then the
        zygote, then whatever the journal still holds. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for container in list(self.containers.values()):
            if not container.kept:
                with contextlib.suppress(Exception):
                    container.remove()
        self.janitor.drain()  # their shims gone before their networks and volumes go
        self._exits.close()
        for network in self._networks:
            with contextlib.suppress(Exception):
                network.remove()
        self._networks.clear()
        for volume in self._volumes.values():
            with contextlib.suppress(Exception):
                volume.remove()
        self._volumes.clear()
        with self._lock:
            spares, self._spare_networks = self._spare_networks, []
        for spare in spares:
            with contextlib.suppress(Exception):
                spare.close()
        self.janitor.close()
        self.zygote.close()
        self.journal.close()

    def __enter__(self) -> NativeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def native_runner(engine: NativeEngine | None = None, settings: Any = None) -> Any:
    """The builder's RUN seam (a ``native.runner.NativeRunner``) on ``engine``, or on an engine
    made at the first RUN with ``settings`` (and closed by the runner's ``close``)."""
    from .runner import NativeRunner

    return NativeRunner(engine, make_engine=lambda: NativeEngine(settings))


def matches(record: Mapping[str, Any], ref: str) -> bool:
    """Whether a container record answers to ``ref``: an id prefix, its engine-level name
    (with the unique suffix) or the name it was given."""
    return (record["container"].startswith(ref) or record.get("name") == ref
            or record.get("dns_name") == ref)


def pull_progress(say: Callable[[str], None] | None) -> Callable[..., None] | None:
    """The store's progress events as lines for ``say`` (finished blobs and layers only)."""
    if say is None:
        return None

    def relay(event: str, digest: str, done: int, total: int | None) -> None:
        short = digest.removeprefix("sha256:")[:12]
        if event == "downloaded":
            say(f"pulled {short} ({done / 1e6:.1f} MB)")
        elif event == "unpacked":
            say(f"unpacked {short}")

    return relay


def _joining(bridge: Any, spec: RunSpec, name: str, hostname: str,
             then: Callable[[NativeContainer], None] | None,
             named: bool = True) -> Callable[[NativeContainer], None]:
    """The start hook that joins ``bridge`` before the command runs: a veth into the
    container's namespace, its DNS name and aliases, and /etc/hosts and resolv.conf for it
    (its peers are the responder's to name, not /etc/hosts': a line there would outlive them).
    ``named=False`` (the default network): no name for others, and the host's resolvers, as
    on Docker's default bridge."""

    def join(container: NativeContainer) -> None:
        dns_name = spec.name or hostname
        ip = bridge.attach(f"/proc/{container.pid}/ns/net", dns_name if named else None,
                           list(spec.aliases), key=container.id,
                           address=container.last_address(bridge))
        container.joined(bridge, ip)
        rootfs.write_file(container.dir / "hosts",
                          bridge.hosts(hostname, ip, _extra_hosts(spec, bridge.gateway)).encode(),
                          in_place=True)
        if named:
            rootfs.write_file(container.dir / "resolv.conf", bridge.resolv_conf().encode(),
                              in_place=True)
        if then is not None:
            then(container)

    return join


def check_host_port(port: Any) -> int:
    """A port ``expose_host_port`` takes, or a ``ConfigError`` naming it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"expose_host_port(port={port!r}): expected a TCP port, 1-65535")
    return port


def _egress_possible() -> bool:
    """Whether networks can have a way out here (pasta and iptables); a warning once if not."""
    import shutil

    from . import egress

    if egress.pasta_path() is None or shutil.which("iptables") is None:
        warnings.warn(f"pycontain: networks of the native engine have no way out on this host: "
                      f"it needs pasta (Debian's {egress.PACKAGE} package) and iptables",
                      RuntimeWarning, stacklevel=3)
        return False
    blocked = egress.tun_blocked()  # rootless: pasta's tap may be closed to the user
    if blocked is not None:
        warnings.warn(f"pycontain: {blocked}: networks have no way out", RuntimeWarning,
                      stacklevel=3)
        return False
    if not egress.host_online():  # nothing to reach: networks as before, just offline
        warnings.warn("pycontain: this host has no default route: networks have no way out",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def _extra_hosts(spec: RunSpec, gateway: str = "127.0.0.1") -> list[tuple[str, str]]:
    """``extra_hosts`` as ``(name, address)``; ``host-gateway`` is ``gateway``: its network's
    gateway, where ``host.pycontain.internal`` is (the host's loopback on the host's network),
    as Docker's is its bridge's gateway."""
    return [(name, gateway if address == HOST_GATEWAY else address)
            for name, address in spec.extra_hosts.items()]


def _etc_files(hostname: str, host_network: bool, spec: RunSpec) -> dict[str, str]:
    """The files of a container off any bridge (a join rewrites hosts and resolv.conf): its
    hostname at 127.0.1.1, as Debian names a host without a network."""
    from .dns import hosts_file

    hosts = hosts_file(hostname, ["127.0.1.1"], _extra_hosts(spec))
    resolv = _read("/etc/resolv.conf")
    if not host_network:
        resolv = own_loopback_resolv_conf(resolv, _read(SYSTEMD_RESOLVED_UPSTREAM))
    return {"hosts": hosts, "hostname": hostname + "\n", "resolv.conf": resolv}


SYSTEMD_RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"


def upstream_resolvers() -> list[str]:
    """The IPv4 resolvers a network's DNS responder forwards to: the host's, as a namespace
    with a loopback of its own sees them (a systemd-resolved host's upstream servers)."""
    import ipaddress

    conf = own_loopback_resolv_conf(_read("/etc/resolv.conf"), _read(SYSTEMD_RESOLVED_UPSTREAM))
    found = []
    for line in conf.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(words[1]).version == 4:
                    found.append(words[1])
    return found


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def own_loopback_resolv_conf(host: str, upstream: str) -> str:
    """The host's resolv.conf for a namespace with a loopback of its own, where the host's
    127.0.0.x resolvers are not: those lines go, and where no other nameserver is left (a
    systemd-resolved host's 127.0.0.53), the upstream servers it forwards to come in their
    place, from ``upstream`` (``/run/systemd/resolve/resolv.conf``), as Docker does."""

    def loopback(line: str) -> bool:
        words = line.split()
        return len(words) > 1 and words[0] == "nameserver" and words[1].startswith("127.")

    def nameservers(lines: list[str]) -> list[str]:
        return [line for line in lines if line.split()[:1] == ["nameserver"]]

    lines = [line for line in host.splitlines() if not loopback(line)]
    if not nameservers(lines) and any(loopback(line) for line in host.splitlines()):
        lines += [line for line in nameservers(upstream.splitlines()) if not loopback(line)]
    return "".join(line + "\n" for line in lines)


def _run_config(config: Mapping[str, Any], spec: RunSpec, env: Mapping[str, str], user: str,
                workdir: str) -> dict[str, Any]:
    """The container's Config as ``docker commit`` keeps it: the run's command and entrypoint
    where given (an entrypoint drops the image's Cmd), its Env (without HOSTNAME, which each
    container gets anew), user and working directory."""
    out: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in env.items() if k != "HOSTNAME"],
        "User": user, "WorkingDir": workdir}
    if spec.entrypoint is not None:
        out["Entrypoint"] = list(spec.entrypoint) or None
        out["Cmd"] = None
    if spec.command is not None:
        out["Cmd"] = list(spec.command)
    return out
