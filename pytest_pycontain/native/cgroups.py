"""Each container's cgroups (v1 or v2): its resource limits (memory, cpus, pids), its OOM
kills, and the cgroup filesystem it sees inside.

The engine gives every container cgroups of its own (``Limits(own=True)``), limits or not, so
that what it uses is counted apart from the test process, and so that runtimes which size
themselves from ``/sys/fs/cgroup`` (JVMs, Go, Node) find the container's own numbers there, as
under Docker. Every cgroup directory is journalled before it is made, so the reaper removes
what a killed run left. ``root`` is a parameter (``$PYCONTAIN_CGROUP_ROOT`` for the engine) so
that v2 runs for real on a hybrid host's unified hierarchy, or a subtree delegated to a user.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError, EngineUnavailable, NotSupported
from ..runspec import memory_bytes
from . import syscalls as sc
from .state import entry

GROUP = "pycontain"
V1_CONTROLLERS = {"memory": "memory", "cpus": "cpu", "pids": "pids"}
CPU_PERIOD = 100_000
ROOT_ENV = "PYCONTAIN_CGROUP_ROOT"
DEFAULT_ROOT = "/sys/fs/cgroup"


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where the engine makes containers' cgroups: ``$PYCONTAIN_CGROUP_ROOT`` (a cgroup v2
    directory, e.g. a hybrid host's ``/sys/fs/cgroup/unified``), else ``/sys/fs/cgroup``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ROOT_ENV) or DEFAULT_ROOT)


def parse_memory(value: int | str) -> int:
    """``"256m"`` -> bytes, as Docker reads ``--memory`` (the run request's one reader)."""
    try:
        return memory_bytes(value)
    except ValueError as exc:
        raise ConfigError(f"memory={value!r}: {exc}") from None


def detect_version(root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """2 if ``root`` is a directory of a v2 hierarchy (whichever controllers it has: a limit
    it lacks is refused by ``Limits.require``), 1 if v1 controllers are mounted there."""
    root = Path(root)
    if (root / "cgroup.controllers").exists():
        return 2
    if all((root / name).is_dir() for name in V1_CONTROLLERS.values()):
        return 1
    raise EngineUnavailable(
        f"{root}: no usable cgroup controllers (memory, cpu, pids) for container limits")


class Limits:
    """The cgroups of one container: made with ``create``, joined by pid, removed by ``remove``."""

    def __init__(self, container_id: str, *, memory: int | str | None = None,
                 cpus: float | None = None, pids: int | None = None,
                 root: str | os.PathLike = "/sys/fs/cgroup", version: int | None = None,
                 own: bool = False):
        self.memory = parse_memory(memory) if memory is not None else None
        if cpus is not None and not cpus > 0:
            raise ConfigError(f"cpus={cpus!r}: expected a positive number of CPUs")
        if pids is not None and (isinstance(pids, bool) or int(pids) < 1):
            raise ConfigError(f"pids={pids!r}: expected a whole number >= 1")
        self.cpus = cpus
        self.pids = int(pids) if pids is not None else None
        self.root = Path(root)
        self.container_id = container_id
        self.own = False
        if version is not None:
            self.version, self.own = version, own
        elif self.wanted:
            self.version, self.own = detect_version(root), own
        elif own:  # a cgroup of its own where the host has the controllers; none is no error
            try:
                self.version, self.own = detect_version(root), True
            except EngineUnavailable:
                self.version = 0
        else:
            self.version = 0

    @property
    def wanted(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpus, self.pids))

    @property
    def shim_joins(self) -> bool:
        """Whether the container's shim joins these cgroups too, so that PID 1's children and
        every exec'd command are born inside rather than moved in. On v1 each move takes a lock
        whose writer waits for an RCU grace period (up to ~10 ms on a busy machine), and there
        ``cgroup.procs`` lists only the tasks of the reader's pid namespace, so the container
        never sees its shim. Not with limits: the shim's memory and pid are not the container's
        to count. (v2's ``cgroup.procs`` would show the shim as pid 0: it stays out there.)"""
        return self.own and self.version == 1 and not self.wanted

    def controllers(self) -> list[str]:
        """The v2 controllers the limits asked for need (memory, cpu, pids)."""
        return [V1_CONTROLLERS[name] for name, value in (
            ("memory", self.memory), ("cpus", self.cpus), ("pids", self.pids))
            if value is not None]

    def require(self, name: str) -> None:
        """On v2, before anything is made: each limit's controller must be in ``root``'s
        ``cgroup.controllers``, else ``NotSupported`` naming it (never a silent no-limit)."""
        if self.version != 2 or not self.wanted:
            return
        listing = self.root / "cgroup.controllers"
        try:
            have = listing.read_text().split()
        except OSError as exc:
            raise NotSupported(f"container {name}: cannot read {listing}: "
                               f"{exc.strerror or exc}") from exc
        missing = [c for c in self.controllers() if c not in have]
        if missing:
            options = ", ".join(o for o, c in (("memory", "memory"), ("cpus", "cpu"),
                                               ("pids", "pids")) if c in missing)
            needs, plural = ("need", "s") if len(missing) > 1 else ("needs", "")
            raise NotSupported(
                f"container {name}: {options} {needs} the cgroup v2 "
                f"{', '.join(missing)} controller{plural}, which {listing} does not offer (it "
                f"lists: {' '.join(have) or 'none'}); enable them in the parent's "
                "cgroup.subtree_control (or delegate them: Delegate=cpu memory pids), or "
                "drop the limit")

    def paths(self) -> list[Path]:
        """The cgroup directories this container uses (parent first is not included): one
        per controller with a limit, or, with ``own``, one per controller the engine uses."""
        if not (self.wanted or self.own):
            return []
        if self.version == 2:
            return [self.root / GROUP / self.container_id]
        used = [name for name, value in (("memory", self.memory), ("cpus", self.cpus),
                                         ("pids", self.pids)) if value is not None or self.own]
        return [self.root / V1_CONTROLLERS[name] / GROUP / self.container_id for name in used]

    @functools.cached_property
    def dirs(self) -> tuple[str, ...]:
        """``paths()`` as strings, made once (the limits never change): every exec's plan
        names them."""
        return tuple(str(path) for path in self.paths())

    def create(self, journal=None, *, make: bool = True) -> list[Path]:
        """Make the cgroups and write the limits; all are journalled (one write) before any is
        made.
        ``make=False``: only journalled, for the shim to make (``shim_joins``: it renames its
        spare set to them)."""
        made = []
        if journal is not None and self.dirs:  # all before any is made, in one write
            journal.record_all([entry("cgroup", self.container_id, path=path)
                                for path in self.dirs])
        for path in self.paths():
            if not make:
                made.append(path)
                continue
            if self.version == 2:
                self._enable_v2_controllers(path.parent)
            path.mkdir(parents=True, exist_ok=True)
            made.append(path)
        for path in made if make else ():
            self._write_limits(path)
        return made

    def _enable_v2_controllers(self, parent: Path) -> None:
        """v2 needs controllers enabled in every ancestor's ``cgroup.subtree_control``: the
        limits' (``require`` checked ``root`` offers them), and every other one ``root``
        offers where allowed, as runc and crun give a container all of them (a cgroup holding
        processes refuses them: no internal processes)."""
        parent.mkdir(exist_ok=True)
        needed = self.controllers()
        try:
            offered = (self.root / "cgroup.controllers").read_text().split()
        except OSError:
            offered = []
        extra = [c for c in offered if c not in needed]
        for directory in (self.root, parent):
            control = directory / "cgroup.subtree_control"
            have = control.read_text().split() if control.exists() else []
            missing = [f"+{c}" for c in needed if c not in have]
            if missing:
                try:
                    with open(control, "a") as file:
                        file.write(" ".join(missing))
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    procs = " ".join(read_quietly(directory / "cgroup.procs").split()) or "none now"
                    raise NotSupported(
                        f"{control}: cannot enable {' '.join(missing)}: {directory} holds "
                        f"processes (its cgroup.procs: {procs}), and cgroup v2 enables "
                        "controllers for the children of a cgroup without processes only "
                        "(rootless, the engine moves itself into a leaf: these are others); "
                        "run pytest in a cgroup of its own (systemd-run --user --scope -p "
                        "Delegate=yes pytest), or as root set $PYCONTAIN_CGROUP_ROOT to a "
                        "cgroup without processes") from exc
            for name in extra:
                if name not in have:
                    with contextlib.suppress(OSError), open(control, "a") as file:
                        file.write(f"+{name}")

    def _write_limits(self, path: Path) -> None:
        def put(name: str, value: object) -> None:
            with open(path / name, "w") as file:
                file.write(f"{value}\n")

        if self.version == 2:
            if self.memory is not None:
                put("memory.max", self.memory)
                with contextlib.suppress(OSError):
                    put("memory.swap.max", 0)
            if self.cpus is not None:
                put("cpu.max", f"{int(self.cpus * CPU_PERIOD)} {CPU_PERIOD}")
            if self.pids is not None:
                put("pids.max", self.pids)
            return
        controller = path.parent.parent.name
        if controller == "memory" and self.memory is not None:
            put("memory.limit_in_bytes", self.memory)
            with contextlib.suppress(OSError):  # only with swap accounting
                put("memory.memsw.limit_in_bytes", self.memory)
        elif controller == "cpu" and self.cpus is not None:
            put("cpu.cfs_period_us", CPU_PERIOD)
            put("cpu.cfs_quota_us", int(self.cpus * CPU_PERIOD))
        elif controller == "pids" and self.pids is not None:
            put("pids.max", self.pids)

    def join(self, pid: int) -> None:
        """Move ``pid`` into every cgroup of the container (before it unshares its cgroup ns)."""
        for path in self.paths():
            with open(path / "cgroup.procs", "w") as file:
                file.write(f"{pid}\n")

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this container."""
        if self.memory is None:
            return False
        path = self.paths()[0]
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (path / name).read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        return False

    def remove(self) -> None:
        for path in self.paths():
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()


def read_quietly(path: Path) -> str:
    """The text of a cgroup file, or "" where it cannot be read (gone meanwhile)."""
    try:
        return path.read_text()
    except OSError:
        return ""


def mount_inside(target: str, writable: bool = False, host: str = "/sys/fs/cgroup",
                 membership: str = "/proc/self/cgroup", cgroup2: bool = False) -> None:
    """In PID 1, once it has a cgroup namespace of its own and before it enters its root: the
    cgroup filesystem at ``target`` (its root's /sys/fs/cgroup, or a stage to move it there
    from), rooted at the container's own cgroups, as
    Docker mounts it (read-only unless privileged). A v2 host gets cgroup2; a v1 (or hybrid)
    host a tmpfs (writable, as Docker's) with one read-only mount per hierarchy PID 1 belongs
    to (co-mounted controllers also by each name), as runc lays them out. ``cgroup2``: the
    container's cgroup is a v2 one (a v2 root set elsewhere than ``host``): cgroup2 too."""
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    read_only = 0 if writable else sc.MS_RDONLY
    if cgroup2 or os.path.exists(os.path.join(host, "cgroup.controllers")):
        sc.mount("cgroup", target, "cgroup2", flags | read_only)
        return
    sc.mount("tmpfs", target, "tmpfs", flags, "mode=755")
    fd = os.open(membership, os.O_RDONLY | os.O_CLOEXEC)  # not open(): see rootfs.read_file
    try:
        listed = os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)
    hierarchies = [line.split(":", 2)[1] for line in listed.split("\n") if line.strip()]
    for controllers in hierarchies:
        if not controllers:  # a hybrid host's unified hierarchy: Docker leaves it out on v1
            continue
        name = controllers.removeprefix("name=")
        os.mkdir(os.path.join(target, name), 0o755)
        sc.mount("cgroup", os.path.join(target, name), "cgroup", flags | read_only, controllers)
        if "," in name:  # cpu,cpuacct: reachable as cpu and as cpuacct
            for alias in name.split(","):
                if not os.path.lexists(os.path.join(target, alias)):
                    os.symlink(name, os.path.join(target, alias))
