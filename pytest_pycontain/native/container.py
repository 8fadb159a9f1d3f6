"""``NativeContainer``: the engine-side handle of one container of the native engine.

It reaches the container through a ``control.Control`` (its shim's control socket, or from
outside for another owner's container), reads the log files the shim writes, and reaches the
container's files through ``/proc/SHIM/root`` (the shim stays, holding the mount namespace,
until removal). What it needs of its engine comes in ``Services``; the exec plumbing is
``execio.py``, the healthcheck ``health.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import posixpath
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import ExecResult
from ..errors import ConfigError, ContainerError, NetworkError, NotSupported, WaitTimeout
from ..imageconfig import shell_argv, split_env
from ..procinfo import process_start_time
from . import state, volumes
from .control import Control, ForeignShim, OwnShim
from .dns import own_line
from .execio import collect, wait_exit
from .health import HealthCheck
from .keptports import MAX_KEPT_NETWORKS
from .protocol import ExecPlan, Failed, RunPlan, Started
from .rootfs import write_file

if TYPE_CHECKING:
    from ..engine import ReuseKey
    from ..runspec import RunSpec
    from .boundary import Boundary
    from .cgroups import Limits
    from .janitor import Janitor
    from .zygote_client import WarmShim, ZygoteClient


def signal_number(value: str | int | None, default: int = signal.SIGTERM) -> int:
    """``"SIGQUIT"``, ``"QUIT"``, ``"3"`` or 3 -> 3 (Docker's StopSignal forms)."""
    if value is None or value == "":
        return default
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    name = str(value).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise ConfigError(f"StopSignal {value!r}: not a signal name") from None


def image_name(image: Any) -> str:
    """How messages name an image: its first tag, else its id."""
    tags = getattr(image, "tags", None)
    if tags:
        return str(tags[0])
    return str(getattr(image, "id", None) or image)


class AttachedLimits:
    """The cgroups of a container we did not make: only their paths are known."""

    def __init__(self, paths: list[Path]):
        self._paths = paths
        self.dirs = tuple(str(path) for path in paths)

    def paths(self) -> list[Path]:
        return list(self._paths)

    def oom_killed(self) -> bool:
        return False


@dataclasses.dataclass(frozen=True)
class Services:
    """What a container uses of its engine, and nothing more: the engine's journal and state
    directory, its zygote, its janitor, its start timeout, and ``forget`` (the engine stops
    listing a removed container)."""

    journal: state.Journal
    state_root: Path
    zygote: ZygoteClient
    janitor: Janitor
    timeout: float
    forget: Callable[[str], None]
    store: Callable[[], Any] | None = None  # the engine's image store, for commit


@dataclasses.dataclass(frozen=True)
class Relaunch:
    """How the engine first started a container, for ``start()`` to do again: its plan, the
    hook that joined its first network before the command ran (and the caller's own), its
    published ports and where their records go, and the engine's exit watch (for a
    networked container), which takes it off its networks when PID 1 ends."""

    plan: RunPlan
    hook: Callable[[NativeContainer], None] | None
    ports: Mapping[int, int | None]
    records_dir: Path
    watch: Callable[[int, Callable[[], None]], None] | None


@dataclasses.dataclass(frozen=True)
class Found:
    """A container of another owner, as its journal and directory record it
    (``NativeEngine.attach``); ``boundary`` is what its PID 1 is confined by, and so every
    command exec'd into it from here."""

    pid: int
    shim: int
    started_at: int | None
    kept: bool
    boundary: Boundary


class NativeContainer:
    """The engine-side handle of one container (implements ``engine.Container``)."""

    def __init__(self, services: Services, container_id: str, name: str, hostname: str,
                 image: Any, config: Mapping[str, Any], directory: Path, env: dict[str, str],
                 user: str, workdir: str, limits: Limits, *, found: Found | None = None):
        self._services = services
        self.id = container_id
        self.name = name
        self.hostname = hostname
        self._image = image
        self.config = config
        self.dir = directory
        self.env = env
        self.user = user
        self.workdir = workdir
        self.limits = limits
        self.stop_signal = signal_number(config.get("StopSignal"))
        self.labels: dict[str, str] = {}  # the image's Labels and the run's (set by the engine)
        self.spec: RunSpec | None = None  # the run request (set by the engine; None: found)
        self.pid: int | None = None
        self.shim: int | None = None
        self.kept = False
        # Docker's container Config as far as commit carries it (Cmd, Entrypoint, Env...)
        self.run_config: dict[str, Any] = {}
        self.reuse: ReuseKey | None = None  # reused across runs: keep() records it
        self.relaunch: Relaunch | None = None  # set by the engine once started: for start()
        self._removed = False
        self._health: HealthCheck | None = None
        self._ip: str | None = None
        self._networks: list[Any] = []  # the networks it joined (detached at removal)
        self._proxies: dict[int, Any] = {}  # published ports: container port -> PortProxy
        self._relayed: dict[int, tuple[str, int]] = {}  # ... by another owner's keeper
        self._connected: list[tuple[Any, tuple[str, ...]]] = []  # connect(): joined again
        self._had: list[tuple[Any, str | None]] = []  # (network, address) it was ever given
        self._leaving = threading.Lock()  # the exit watch and removal both leave networks
        self._starting = threading.Lock()  # one start() at a time
        self._own: OwnShim | None = None  # set while we start it: our shim's channel
        self._control: Control
        if found is None:
            self._own = OwnShim(services.zygote)
            self._control = self._own
        else:  # another owner's: no control socket of ours
            self.pid, self.shim, self.kept = found.pid, found.shim, found.kept
            self._control = ForeignShim(services.zygote, found.pid, found.started_at,
                                        directory, found.boundary)

    def __repr__(self) -> str:
        return f"<NativeContainer {self.id[:12]} {self.name} {self.status}>"

    # --- what the engine does while it makes the container ---

    def launch(self, plan: RunPlan,
              before_start: Callable[[NativeContainer], None] | None = None,
              warm: WarmShim | None = None) -> None:
        """Start it from ``plan`` (on ``warm``, a shim the engine took for it, if given);
        ``before_start(self)`` runs once the namespaces and PID 1 exist (``plan.pause``),
        before the command does. Raises ``ContainerError``."""
        if self._own is None or self.pid is not None:
            raise ContainerError(f"container {self.name} was started already", container=self.id)

        def created(pid: int, shim: int) -> None:
            self.pid, self.shim = pid, shim
            if before_start is not None:
                before_start(self)

        timeout = self._services.timeout
        for name, text in plan.etc.items():  # ours, not the shim's: the start hook rewrites
            write_file(os.path.join(plan.directory, name), text.encode())  # them meanwhile
        reply = None
        try:
            reply = self._own.start(plan, timeout, created if before_start else None, warm)
        except TimeoutError:
            raise ContainerError(f"container {self.name} did not start within {timeout}s",
                                 container=self.id) from None
        finally:
            if not (plan.shim_joins and isinstance(reply, Started)):
                # the warm shim's spare cgroups were not renamed to ours: they hold our shim
                # (with limits it stays out of ours), or nothing; removed with the container
                self._services.journal.record_all([
                    state.entry("cgroup", self.id, path=path)
                    for path in self._own.spare_cgroups])
        if not isinstance(reply, Started):
            error, code = ((reply.error, reply.exit_code) if isinstance(reply, Failed) else
                           ("the container's helper exited without a word", None))
            raise ContainerError(f"container {self.name} ({image_name(self._image)}): {error}",
                                 exit_code=code, container=self.id)
        self.pid, self.shim = reply.pid, reply.shim
        self._services.journal.record_all([
            state.entry("process", self.id, pid=pid, role=role, start=process_start_time(pid))
            for role, pid in (("shim", self.shim), ("pid1", self.pid))])
        self._health = HealthCheck.from_config(
            self.config.get("Healthcheck"), self._probe, self._health_ended, name=self.name)
        if self._health is not None:
            self._health.start()

    def joined(self, network: Any, ip: str | None) -> None:
        """It is on ``network`` now, at ``ip``: left again at removal."""
        if self._ip is None:
            self._ip = ip
        self._networks.append(network)
        self._had.append((network, ip))

    def last_address(self, network: Any) -> str | None:
        """The address it last had on ``network`` (None if never there): a start again asks
        for it back, as Docker's IPAM (lowest free first) gives it back while nobody has it."""
        return next((ip for net, ip in reversed(self._had) if net is network), None)

    def connect(self, network: Any, aliases: Sequence[str] = ()) -> str:
        """Join another network while running (``docker network connect``): a veth of its own
        there (eth1, ...), its name and ``aliases`` for that network's members, and the
        network's names for it through the responder its resolv.conf names (its first
        network's), as Docker's embedded DNS answers for every network of a container."""
        if self.status != "running":
            raise NetworkError(f"container {self.name} is {self.status}: only a running "
                               f"container joins another network here")
        if not self._networks or self._ip is None:
            raise NetworkError(f"container {self.name} has no network of its own to resolve "
                               f"names through; start it on a network first")
        if network in self._networks:
            raise NetworkError(f"container {self.name} is on network {network.name!r} already")
        ip = self._join_also(network, tuple(aliases))
        self._connected.append((network, tuple(aliases)))
        return ip

    def _join_also(self, network: Any, aliases: tuple[str, ...]) -> str:
        """Join ``network`` besides its first one (``connect``, and again at ``start``)."""
        ip = network.attach(f"/proc/{self.pid}/ns/net", self.name, list(aliases), key=self.id,
                            address=self.last_address(network))
        with self._leaving:
            first = self._networks[0] if self._networks else None
            if first is not None:
                self._networks.append(network)
                self._had.append((network, ip))
        if first is None:  # it exited meanwhile, and left its networks
            network.detach(self.id)
            raise NetworkError(f"container {self.name} exited while joining {network.name!r}")
        first.resolve_also(self._ip, network)
        with open(self.dir / "hosts", "a") as hosts:  # Docker's line for each address of it
            hosts.write(own_line(self.hostname, ip))
        return ip

    def publish(self, ports: Mapping[int, int | None], records_dir: Path) -> None:
        """Publish ``ports`` on the host's loopback, relayed to its address on its first
        network from that network's bridge, as Docker's published ports reach a container's
        interface: a server bound to its loopback only is not reached, the server sees a peer
        that is not 127.0.0.1, and the network's faults on the container apply."""
        from .proxy import publish

        if not self._networks or self._ip is None:
            raise ContainerError(f"container {self.name}: ports are published through a "
                                 "network, and it has none", container=self.id)
        self._proxies = publish(self._networks[0].netns_path, ports, records_dir=records_dir,
                                target=self._ip)
        self._services.journal.record("ports", container=self.id, published={
            str(port): list(proxy.address) for port, proxy in self._proxies.items()})

    def exited(self) -> None:
        """Its PID 1 has ended: leave its networks now, as Docker does (the name, aliases and
        address are free for the next container; a kept one keeps them)."""
        if not self.kept:  # its veth pair goes with its namespace, when the shim ends
            self._leave_networks(link_gone=True)

    def ended(self, pid: int) -> None:
        """PID 1 ``pid`` has ended (the engine's exit watch): ``exited()``, unless the
        container was started again since (a later PID 1 is not watched by this call)."""
        if pid == self.pid:
            self.exited()

    def abandon(self) -> None:
        """Undo what was made of a container whose start failed (the shim ends with its
        control socket closed)."""
        self._cleanup()

    # --- the Container protocol ---

    @property
    def image(self) -> Any:
        return self._image

    @property
    def networks(self) -> tuple[Any, ...]:
        """The networks it is on, first first."""
        return tuple(self._networks)

    @property
    def ip(self) -> str | None:
        """Its address on its (first) network; None with loopback only or the host's network."""
        return self._ip

    @property
    def status(self) -> str:
        if self._removed:
            return "removed"
        if self.pid is None:
            return "created"
        return "exited" if self._control.poll(0) else "running"

    @property
    def _exit_code(self) -> int | None:
        return self._control.exit_code

    @property
    def exit_code(self) -> int | None:
        self._control.poll(0)
        return self._control.exit_code

    @property
    def oom_killed(self) -> bool:
        return self.limits.oom_killed()

    @property
    def health(self) -> str | None:
        return self._health.status if self._health is not None else None

    def ensure_running(self) -> None:
        """Raise ``ContainerError`` (exit code, log tail; OOM said so) unless it runs."""
        if self._removed:
            raise ContainerError(f"container {self.name} was removed", container=self.id)
        if not self._control.poll(0):
            return
        why = "was killed by the OOM killer (memory limit reached)" if self.oom_killed else (
            f"exited with code {self._exit_code}")
        logs = self.logs()
        cause = self.spec.read_only_cause(logs) if self.spec is not None else ""
        raise ContainerError(f"container {self.name} is not running: it {why}"
                             + (f" ({cause})" if cause else ""),
                             exit_code=self._exit_code, logs=logs, container=self.id)

    def _exec_plan(self, argv: Sequence[str], user: str | None,
                   env: Mapping[str, str] | None, workdir: str | None) -> ExecPlan:
        return ExecPlan(pid=self.pid or 0, argv=tuple(argv), env={**self.env, **split_env(env)},
                        user=self.user if user is None else user,
                        workdir=workdir or self.workdir,
                        cgroups=self.limits.dirs)

    def exec(self, cmd: str | Sequence[str], *, user: str | None = None,
             env: Mapping[str, str] | None = None, workdir: str | None = None,
             stdin: bytes | str | None = None, timeout: float | None = None) -> ExecResult:
        self.ensure_running()
        argv = shell_argv(cmd)
        if not argv:
            raise ContainerError("exec: no command given", container=self.id)
        plan = self._exec_plan(argv, user, env, workdir)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self._control.exec(plan, [theirs.fileno(), in_r, out_w, err_w])
        finally:
            theirs.close()
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        return collect(ours, in_w, out_r, err_r, data, timeout, argv, name=self.name,
                       container_id=self.id)

    def exec_stdio(self, cmd: Sequence[str], *, user: str | None = None,
                   env: Mapping[str, str] | None = None, workdir: str | None = None) -> int:
        """Run ``cmd`` in the container on this process's own stdin/stdout/stderr (a terminal
        for ``pycontain exec ID sh``); returns its exit code."""
        self.ensure_running()
        plan = self._exec_plan([str(a) for a in cmd], user, env, workdir)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._control.exec(plan, [theirs.fileno(), 0, 1, 2])
        finally:
            theirs.close()
        return wait_exit(ours)

    def logs(self) -> str:
        try:
            return (self.dir / "combined.log").read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stream_logs(self, *, follow: bool = True, poll: float = 0.02) -> Iterator[str]:
        """The combined log line by line as it grows, until the container exits (``follow``)
        or up to now."""
        path = self.dir / "combined.log"
        pending = b""
        with open(path, "rb") as file:
            while True:
                chunk = file.read(65536)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace") + "\n"
                    continue
                if not follow or self._removed or self._control.poll(0):
                    rest = file.read()
                    if rest or pending:
                        pending += rest
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            yield line.decode("utf-8", "replace") + "\n"
                        if pending:
                            yield pending.decode("utf-8", "replace")
                    return
                time.sleep(poll)

    @property
    def mountpoints(self) -> list[str]:
        """Container paths the engine created only to mount on (/etc/hosts, a tmpfs target...):
        what a build committing ``dir/upper`` leaves out of the layer."""
        try:
            return json.loads((self.dir / "mountpoints.json").read_text())
        except FileNotFoundError:
            return []

    def stdout_log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "stdout.log").read_bytes().decode("utf-8", "replace")
        return ""

    def stderr_log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "stderr.log").read_bytes().decode("utf-8", "replace")
        return ""

    def address(self, port: int) -> tuple[str, int]:
        """Where the test process reaches container port ``port``: its published proxy, or the
        port itself when the container shares the host's network."""
        proxy = self._proxies.get(int(port))
        if proxy is not None:
            return proxy.address
        if int(port) in self._relayed:
            return self._relayed[int(port)]
        if self._network_host():
            return "127.0.0.1", int(port)
        published = ", ".join(map(str, sorted(self._proxies))) or "none"
        raise NotSupported(f"container {self.name}: port {port} is not published (published: "
                           f"{published}); pass ports=[{port}] to run()")

    def relayed(self, published: Mapping[str, Sequence[Any]]) -> None:
        """The ports its keeper relays (a kept container of another owner, a reused one):
        what ``address`` answers, as recorded when they were published."""
        self._relayed = {int(port): (str(host), int(number))
                         for port, (host, number) in published.items()}

    def _leave_networks(self, link_gone: bool = False) -> None:
        """Close published ports and leave networks (best effort: removal must go on). Once:
        at the exit of PID 1 or at removal, whichever comes first; the second caller waits
        until the first is done, so ``remove()`` returns only once the container has left
        (its name and address are free, and its network can be reused at once)."""
        with self._leaving:
            proxies, self._proxies = self._proxies, {}
            networks, self._networks = self._networks, []
            for proxy in proxies.values():
                with contextlib.suppress(Exception):
                    proxy.close()
            gone = link_gone or (self._removed and (
                self.shim is None or not os.path.exists(f"/proc/{self.shim}")))
            for network in networks:
                with contextlib.suppress(Exception):
                    network.detach(self.id, link_gone=gone)

    def probe_port(self, port: int) -> bool:
        """Whether something accepts TCP connections on ``port`` in the container's own network
        namespace (for ``wait.port``: no published port needed)."""
        if self.pid is None or self._removed or self._control.poll(0):
            return False
        from .proxy import probe_port

        return probe_port(f"/proc/{self.pid}/ns/net", port)

    def _network_host(self) -> bool:
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{self.pid}/ns/net") == os.readlink("/proc/self/ns/net")
        return False

    def _root(self) -> str:
        if self._removed or self.shim is None:
            raise ContainerError(f"container {self.name} was removed", container=self.id)
        return f"/proc/{self.shim}/root"

    def copy_to(self, src: str | os.PathLike, dest: str) -> None:
        """Copy a host file or directory into the container, like ``docker cp``: into ``dest``
        if it is a directory there, else as ``dest``. ``dest`` resolves inside the container's
        root, race-free (see ``inroot``): no symlink the container planted leads out."""
        from .. import fdcopy
        from . import inroot

        src = os.fspath(src)
        if not os.path.exists(src):
            raise FileNotFoundError(f"copy_to: {src} does not exist on the host")
        host = os.path.abspath(src)
        with self._root_fd() as root, _closing(os.open(os.path.dirname(host), _PATH_DIR)) as up:
            try:
                try:
                    where = inroot.locate(root, dest, follow_last=True)
                except FileNotFoundError:
                    inroot.make_parents(root, posixpath.dirname(posixpath.normpath("/" + dest)))
                    where = inroot.locate(root, dest, follow_last=True)
                try:
                    st = where.lstat()
                    if st is not None and stat.S_ISDIR(st.st_mode):
                        into = os.open(where.name or ".", _PATH_DIR | os.O_NOFOLLOW,
                                       dir_fd=where.dir_fd)
                        where.close()
                        where = fdcopy.Location(into, os.path.basename(host), dest)
                    fdcopy.copy(fdcopy.Location(up, os.path.basename(host), src), where)
                finally:
                    where.close()
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise ContainerError(f"copy_to {self.name}:{dest}: {exc.strerror or exc}",
                                     container=self.id) from exc

    def copy_from(self, src: str, dest: str | os.PathLike) -> None:
        """Copy a file or directory out of the container (running or exited), like ``docker
        cp``: a symlink is copied as a symlink (followed only for ``src/`` or ``src/.``), and
        ``src`` resolves inside the container's root, race-free (see ``inroot``)."""
        from .. import fdcopy
        from . import inroot

        follow = src.endswith("/") or src.endswith("/.")
        target = os.fspath(dest)
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(src.rstrip("/")) or "root")
        with self._root_fd() as root:
            try:
                try:
                    where = inroot.locate(root, src, follow_last=follow)
                except FileNotFoundError:
                    where = None
                if where is None or where.lstat() is None:
                    if where is not None:
                        where.close()
                    raise FileNotFoundError(
                        f"copy_from: {src} does not exist in container {self.name}")
                try:
                    host = os.path.abspath(target)
                    os.makedirs(os.path.dirname(host), exist_ok=True)
                    with _closing(os.open(os.path.dirname(host), _PATH_DIR)) as up:
                        fdcopy.copy(where, fdcopy.Location(up, os.path.basename(host), target))
                finally:
                    where.close()
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise ContainerError(f"copy_from {self.name}:{src}: {exc.strerror or exc}",
                                     container=self.id) from exc

    def _root_fd(self) -> contextlib.AbstractContextManager[int]:
        """The container's root directory, open (``O_PATH``) for paths resolved inside it."""
        return _closing(os.open(self._root(), _PATH_DIR))

    def start(self) -> None:
        """Start it again once it has exited, as ``docker start`` does: the same id, name,
        root filesystem (its upper dir) and volumes, a new shim and PID 1; its networks joined
        again under its name and aliases (at an address of the moment), its ports published
        again (one asked as ``None`` gets a new host port, as Docker's do), its healthcheck
        from the start. A running container is left as it is. If it cannot start now (say
        its command is gone), ``ContainerError`` says why and it stays exited, off its
        networks, with nothing of the attempt left behind."""
        if self._removed:
            raise ContainerError(f"container {self.name} was removed; it cannot be started "
                                 "again", container=self.id)
        relaunch = self.relaunch
        if self.kept or self._own is None or relaunch is None:
            raise ContainerError(f"container {self.name} is not this engine's to start (kept, "
                                 "or made by another run)", container=self.id)
        with self._starting:
            if self.pid is not None and not self._control.poll(0):
                return  # running: nothing to do, as docker start
            before = self.pid
            if self._health is not None:
                self._health.stop()
                self._health = None
            self._leave_networks(link_gone=True)  # its namespace goes with the old shim
            self._own.end()  # the old shim, its namespaces and its overlay mount go
            self._own.close()
            self._own = OwnShim(self._services.zygote)
            self._control = self._own
            self.pid = self.shim = None
            self._ip = None
            try:
                self.launch(relaunch.plan, self._rejoining(relaunch.hook))
                if relaunch.ports:
                    self.publish(relaunch.ports, relaunch.records_dir)
            except BaseException as exc:
                self._start_failed(before, exc)
                raise
            if relaunch.watch is not None and self.pid is not None:
                relaunch.watch(self.pid, functools.partial(self.ended, self.pid))

    def _rejoining(self, hook: Callable[[NativeContainer], None] | None,
                   ) -> Callable[[NativeContainer], None] | None:
        """The start hook of a start again: its first network (the engine's hook), then the
        ones it was connected to, before the command runs."""
        connected = list(self._connected)
        if hook is None:
            return None

        def join(container: NativeContainer) -> None:
            hook(container)
            for network, aliases in connected:
                self._join_also(network, aliases)

        return join

    def _start_failed(self, before: int | None, exc: BaseException) -> None:
        """A start again did not come up: off its networks, its new shim ended (our socket
        closed ends one still waiting for Go), and exited with the code the attempt gave."""
        self._leave_networks(link_gone=True)
        own = self._own
        if own is not None:
            with contextlib.suppress(Exception):
                own.end()
            own.close()
            code = getattr(exc, "exit_code", None)
            own.exit_code = code if isinstance(code, int) else 125
        if self.pid is None:
            self.pid = before

    def kill(self, signal: int = 9) -> None:
        if self.pid is None or self._control.poll(0):
            return
        self._control.signal(int(signal))

    def stop(self, timeout: float = 10) -> None:
        """The image's StopSignal, then SIGKILL after ``timeout`` seconds."""
        if self.pid is None:
            return
        if self._control.poll(0):
            self.exited()
            return
        self.kill(self.stop_signal)
        if not self._control.poll(timeout):
            self.kill(9)
            self._control.poll(None)
        self.exited()

    def wait(self, timeout: float | None = None) -> int:
        if self.pid is None:
            raise ContainerError(f"container {self.name} never started", container=self.id)
        if not self._control.poll(timeout):
            if self._exit_code is None and self._control.lost(timeout):
                raise ContainerError(f"container {self.name}: lost its shim", container=self.id)
            raise WaitTimeout(f"container {self.name} still runs after {timeout}s",
                              logs=self.logs(), container=self.id)
        self.exited()  # before the caller starts the next one under its name
        return self._exit_code  # type: ignore[return-value]

    def commit(self, tag: str | None = None) -> Any:
        """Its changes (the overlay upper dir; volumes and the engine's mounts left out, as
        ``docker commit``) as a new image on top of its own, in the store (``tag`` names it).
        The container keeps running; stop it first for a consistent copy of a busy service."""
        from .commit import commit_upper

        if self._removed:
            raise ContainerError(f"commit: container {self.name} was removed",
                                 container=self.id)
        if self._services.store is None:
            raise NotSupported("commit: this engine has no image store")
        return commit_upper(self._services.store(), self._image, self.dir / "upper",
                            self.run_config, leave_out=_engine_stubs(self.mountpoints), tag=tag,
                            container=self.id)

    def keep(self) -> str:
        """Hand this container to a keeper that outlives the engine (see NativeEngine.keep)."""
        if self.kept or self._own is None:
            raise ContainerError(f"container {self.name} is not ours to keep", container=self.id)
        if len(self._networks) > MAX_KEPT_NETWORKS:
            raise ContainerError(f"container {self.name} is on {len(self._networks)} networks; "
                                 f"a keeper holds at most {MAX_KEPT_NETWORKS}",
                                 container=self.id)
        services = self._services
        owner = f"keep-{self.id}"
        keeper = state.Journal(services.state_root, owner=owner)
        for record in services.journal.records(self.id):
            keeper.record(**record)
        volumes.hand_over(services.journal, keeper, self.id)  # its named volumes stay for it
        if self.reuse is not None:  # found again by later runs (``NativeEngine.reused``)
            keeper.record("reuse", container=self.id, key=self.reuse.key, slot=self.reuse.slot,
                          label=self.reuse.label)
        # Its networks' bridges stay for as long as the keeper holds them, and the keeper
        # answers each network's names of the moment on its DNS socket when we are gone.
        held: list[int] = []
        tables: list[dict[str, list[str]]] = []
        for network in self._networks:
            with contextlib.suppress(Exception):
                netns = network.netns_fd()
                try:
                    if self.reuse is not None:  # a reused one's names are the next run's
                        # network's (``NativeEngine.rejoin``): its keeper must not answer from
                        # a snapshot while the engine's responder still serves this one, so
                        # a socket that nothing reaches takes the DNS socket's place
                        dns_fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
                        names: dict[str, list[str]] = {}
                    else:
                        dns_fd, names = network.dns_handover()
                except BaseException:
                    os.close(netns)
                    raise
                held.extend((netns, dns_fd))
                tables.append(names)
                network.hand_over(self.id, keeper=self.shim)  # our teardown leaves its
                # veth pair alone, and its keeper holds the subnet's lease
        # so do its published ports: the keeper accepts on our listening sockets and relays
        # to its address from the first network's namespace, as our proxies do
        held.extend(proxy.listener_fd() for proxy in self._proxies.values())
        try:
            self._own.keep([keeper.lock_fd, *held], tuple(tables), tuple(self._proxies),
                           self._ip)
        finally:
            for fd in held:
                os.close(fd)
        for proxy in self._proxies.values():
            proxy.let_go()
        keeper.release()
        services.journal.record("handed", container=self.id)
        self.kept = True
        if self._health is not None:
            self._health.stop()
        return owner

    def remove(self) -> None:
        """Kill (SIGKILL), then remove every trace: processes, cgroups, files (the last two
        in the background: the engine's ``drain()`` waits for them)."""
        if self._removed:
            return
        if self.kept:
            self._removed = True
            state.remove_kept(self._services.state_root, self.id)
            self._services.forget(self.id)
            return
        self._removed = True
        if self._control.end(settle=False):  # its processes are gone; its shim is going
            self._cleanup(ending=True)

    def _cleanup(self, ending: bool = False) -> None:
        """Leave its networks, then hand what is left to the janitor. ``ending``: PID 1 is
        gone and the shim was told to end, which the janitor waits for (its namespaces and
        mounts go with it); else closing our socket ends a shim still waiting."""
        self._removed = True
        self._leave_networks(link_gone=ending)
        if not ending:
            self._control.close()
        self._services.forget(self.id)
        # its cgroups and files go in the background, newest first, once its shim is gone;
        # their records stay until then (a crash leaves them to the reaper), and ``drain()``
        # waits for them
        self._services.janitor.discard(self.id, [
            r for r in reversed(self._services.journal.records(self.id))
            if r["kind"] in ("cgroup", "dir")], before=self._control.settle if ending else None)

    # --- health ---

    def _probe(self, command: str | Sequence[str], timeout: float) -> int:
        return self.exec(command, timeout=timeout).exit_code

    def _health_ended(self) -> bool:
        return self._removed or self.kept or self._control.poll(0)


# What the engine itself mounts on, which ``docker commit`` leaves out (Docker's init layer):
# a bind mount's or tmpfs's target directory stays in the image, as in Docker's.
_RUNTIME_STUBS = frozenset({"etc/hosts", "etc/hostname", "etc/resolv.conf", "dev", "proc", "sys"})


def _engine_stubs(made: Sequence[str]) -> list[str]:
    return sorted(p.strip("/") for p in made if p.strip("/") in _RUNTIME_STUBS)


_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)
