"""The privilege boundary of a native container, Docker's by default (runc's standard_init is
the model).

The engine works out a ``Boundary`` for a container's options (``boundary_for``, cached: the
capability sets, the seccomp program compiled once per profile and capability set, masked and
read-only paths, sysctls); it travels in the plan to the shim as plain JSON. In the
container, PID 1 calls ``confine_filesystem`` once its /proc exists, and PID 1 and every
exec'd command call ``enter`` in place of becoming the user, right before exec, with what
their shim made ready before forking them (``Prepared``: the bounding set cut there once,
the ctypes arguments built). Devices are
kept to the defaults by mounting every writable filesystem ``nodev`` (``device_flags``): a
node made with ``mknod`` cannot be opened, as Docker's device cgroup has it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import functools
import os
import stat
from collections.abc import Iterator
from typing import Any

from ..errors import NotSupported
from ..security import CAPABILITIES, SecurityOptions
from . import syscalls as sc

# Docker's defaults: what a container may not read at all, and what it may only read.
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
_PROC_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
_LSM_NOOPS = ("apparmor=unconfined", "label=disable", "label:disable")


@dataclasses.dataclass(frozen=True)
class Boundary:
    """What confines one container; the same for PID 1 and every exec."""

    privileged: bool = False
    capabilities: int = 0  # bit n = capability n: the bounding set, and root's other sets
    no_new_privileges: bool = False
    seccomp: bytes | None = None  # a compiled BPF program; None: unconfined
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def _json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seccomp"] = None if self.seccomp is None else base64.b64encode(
            self.seccomp).decode()
        return data

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the plan (computed once: the same boundary serves many containers)."""
        return self._json

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Boundary:
        program = data.get("seccomp")
        boundary = cls(privileged=bool(data.get("privileged")),
                       capabilities=int(data.get("capabilities", 0)),
                       no_new_privileges=bool(data.get("no_new_privileges")),
                       seccomp=None if program is None else base64.b64decode(program),
                       masked_paths=tuple(data.get("masked_paths", ())),
                       readonly_paths=tuple(data.get("readonly_paths", ())),
                       sysctls=tuple((k, v) for k, v in data.get("sysctls", ())))
        if data.keys() >= _FIELDS:  # the shim sends it on to PID 1 as it came, not encoded
            boundary.__dict__["_json"] = data  # again in a fresh fork (~0.25 ms)
        return boundary

    @property
    def device_flags(self) -> int:
        """``MS_NODEV`` for every writable mount unless privileged (see the module doc)."""
        return 0 if self.privileged else sc.MS_NODEV


_FIELDS = frozenset(field.name for field in dataclasses.fields(Boundary))

# What a container that predates the boundary (or a caller that names none) runs with.
UNCONFINED = Boundary(privileged=True, capabilities=(1 << len(CAPABILITIES)) - 1)


@functools.lru_cache(maxsize=1)
def _last_capability() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())
    return len(CAPABILITIES) - 1


@functools.lru_cache(maxsize=64)
def boundary_for(options: SecurityOptions) -> Boundary:
    """The boundary ``options`` ask for, on this host; NotSupported (naming the option) where
    it cannot be had. Compiling the seccomp program is cached per profile and capability set."""
    for option in options.docker_security_opt:
        if option.startswith(("apparmor", "label")) and option not in _LSM_NOOPS:
            raise NotSupported(f"security_opt {option!r}: the native engine applies no "
                               "AppArmor or SELinux policy (only apparmor=unconfined and "
                               "label=disable mean something here); use the Docker backend")
    host_caps = (1 << (_last_capability() + 1)) - 1
    mask = 0
    for name in options.capabilities:
        mask |= 1 << CAPABILITIES.index(name)
    mask &= host_caps
    program = None
    if options.confined:
        from . import seccomp

        which = options.seccomp.source if options.seccomp is not None else "default"
        if not seccomp.kernel_supports_seccomp():
            raise NotSupported(f"security_opt seccomp={which}: this kernel has no seccomp; run "
                               "with security_opt=['seccomp=unconfined']")
        text = (options.seccomp.text if options.seccomp is not None
                else seccomp.default_profile_text())
        program = seccomp.compile_profile(text, options.capabilities, which)
    paths = not (options.privileged or options.systempaths_unconfined)
    return Boundary(privileged=options.privileged, capabilities=mask,
                    no_new_privileges=options.no_new_privileges, seccomp=program,
                    masked_paths=MASKED_PATHS if paths else (),
                    readonly_paths=READONLY_PATHS if paths else (),
                    sysctls=options.sysctls)


# --- in the container ----------------------------------------------------------------------

def proc_is_default(boundary: Boundary) -> bool:
    """Whether ``boundary`` confines /proc as ``confine_proc_ahead`` does: Docker's defaults,
    no sysctl to write first."""
    return (boundary.masked_paths == MASKED_PATHS and boundary.readonly_paths == READONLY_PATHS
            and not boundary.sysctls)


def confine_proc_ahead(proc: str) -> None:
    """In a warm PID 1, before it knows its container: the default masked and read-only paths
    of /proc on the /proc mounted at ``proc``, to be moved into a root whose boundary is the
    default (``proc_is_default``); the rest is left to ``confine_filesystem(outside_proc)``."""
    _confine(Boundary(masked_paths=MASKED_PATHS, readonly_paths=READONLY_PATHS), proc, True)


def confine_filesystem(boundary: Boundary, outside_proc: bool = False) -> None:
    """In PID 1, root and /proc in place: write the sysctls (while /proc/sys is writable), then
    hide the masked paths (files under /dev/null, directories under an empty read-only tmpfs)
    and make the read-only ones so. ``outside_proc``: /proc's are done (``confine_proc_ahead``)."""
    _confine(boundary, "/proc", False if outside_proc else None)


def _confine(boundary: Boundary, proc: str, under_proc: bool | None) -> None:
    """``confine_filesystem`` with /proc at ``proc``, for the paths under /proc only (True),
    the others only (False) or all (None)."""
    def chosen(paths: tuple[str, ...]) -> Iterator[str]:
        for path in paths:
            inside = path.startswith("/proc/")
            if under_proc is None or under_proc == inside:
                yield proc + path[len("/proc"):] if inside else path

    for key, value in boundary.sysctls:
        path = proc + "/sys/" + key.replace(".", "/")
        with open(path, "w") as file:
            file.write(value)
    empty = None  # the first masked directory's tmpfs, bound over the others: one superblock
    for path in chosen(boundary.masked_paths):
        try:
            directory = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:  # not on this kernel
            continue
        try:
            if not directory:
                sc.mount("/dev/null", path, None, sc.MS_BIND)
            elif empty is None:
                sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY | _PROC_FLAGS, "size=0,mode=0555")
                empty = path
            else:  # a bind keeps the tmpfs's read-only, nosuid, nodev and noexec flags
                sc.mount(empty, path, None, sc.MS_BIND)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
    for path in chosen(boundary.readonly_paths):
        try:
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue
            raise
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _PROC_FLAGS)


class Prepared:
    """A ``Boundary`` made ready in a parent (a shim, an exec helper) for the processes it
    forks: the seccomp ``sock_fprog`` and root's capability sets built once (in a fresh fork
    each ctypes object is first touches of ctypes' pages), and, once ``cut`` has run here, the
    bounding set cut and the ambient set emptied already, inherited by every child forked
    after."""

    __slots__ = ("_filter", "_root", "_user", "boundary", "is_cut")

    def __init__(self, boundary: Boundary) -> None:
        self.boundary = boundary
        self.is_cut = boundary.privileged  # nothing to cut
        self._filter = None if boundary.seccomp is None else sc.SeccompFilter(boundary.seccomp)
        granted = boundary.capabilities
        self._root = sc.CapSets(granted, granted, 0)
        self._user = sc.CapSets(0, 0, 0)

    def cut(self) -> None:
        """Cut this process's bounding set to the boundary's capabilities and empty its
        ambient set. Our effective and permitted sets stay (those two only limit what an exec
        gains), and both are inherited by fork: so a shim does it once, and PID 1 and every
        exec'd command it forks after skip it. For a process that never execs itself."""
        if not self.is_cut:
            sc.drop_bounding(self.boundary.capabilities)
            with contextlib.suppress(OSError):  # kernels before 4.3 have no ambient set
                sc.prctl_args(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
            self.is_cut = True


def prepare(boundary: Boundary | Prepared) -> Prepared:
    """``boundary`` made ready for ``enter`` (a ``Prepared`` as it is)."""
    return boundary if isinstance(boundary, Prepared) else Prepared(boundary)


def rehearse() -> None:
    """In a process that waits before it confines itself (a warm PID 1): run what ``enter``
    runs, reading only, so that what it writes to is copied now, not on the start's path."""
    sc.rehearse_capabilities()


def enter(boundary: Boundary | Prepared, uid: int, gid: int, groups: list[int]) -> None:
    """Become ``uid:gid`` inside ``boundary``, right before exec: no_new_privs, the seccomp
    filter (loaded while we may still: it needs CAP_SYS_ADMIN without no_new_privs; it allows
    what follows), the bounding and ambient sets cut (unless a parent did, see ``Prepared``),
    the user, then root's sets reduced to the container's capabilities or, for another user,
    emptied, as Docker does."""
    prepared = prepare(boundary)
    boundary = prepared.boundary
    if boundary.no_new_privileges:
        sc.prctl_args(sc.PR_SET_NO_NEW_PRIVS, 1)
    if prepared._filter is not None:
        prepared._filter.load()
    if boundary.privileged:
        _become(uid, gid, groups)
        return
    prepared.cut()
    if uid == 0:  # root stays root: no set is cleared by the change of user
        _become(uid, gid, groups)
        prepared._root.apply()
        return
    sc.prctl_args(sc.PR_SET_KEEPCAPS, 1)
    _become(uid, gid, groups)
    sc.prctl_args(sc.PR_SET_KEEPCAPS, 0)
    prepared._user.apply()


def _become(uid: int, gid: int, groups: list[int]) -> None:
    try:
        os.setgroups(groups)
    except PermissionError:
        if not _setgroups_denied():
            raise
        # rootless with one id: the kernel refuses setgroups in such a namespace, and no
        # other group is mapped there to have
    os.setgid(gid)
    os.setuid(uid)


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as file:
            return file.read().strip() == "deny"
    except OSError:
        return False
