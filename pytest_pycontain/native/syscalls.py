"""Thin ctypes wrappers for the syscalls Python < 3.12 lacks (unshare, setns, mount, ...).

Going through libc directly (rather than the ``mount``/``ip`` binaries) keeps a container start
to a few system calls; every failure raises ``OSError`` with the errno and what was attempted.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

# libc through the process's own symbols (dlopen(NULL)): ``ctypes.util.find_library`` would
# import subprocess and threading, and every module here is loaded in the zygote, whose forks
# would run their at-fork hooks (~0.4 ms of copy-on-write faults in each forked child)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _fail(what: str) -> NoReturn:
    """Raise the OSError of the call that just failed. Callers say ``what`` only then: these
    run in every fresh PID 1 and exec'd command, where formatting it for each successful call
    (``os.fsdecode`` of a mount's target...) is work and copy-on-write faults for nothing."""
    errno = ctypes.get_errno()
    raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _b(value: str | os.PathLike | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python >= 3.12
        os.unshare(flags)
        return
    if _libc.unshare(flags) != 0:
        _fail(f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
        return
    if _libc.setns(fd, nstype) != 0:
        _fail(f"setns({nstype:#x})")


def mount(source: str | None, target: str | os.PathLike, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        _fail(f"mount {source or fstype or ''} on {os.fsdecode(target)}")


def umount(target: str | os.PathLike, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        _fail(f"umount {os.fsdecode(target)}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {platform.machine()}")
    if _libc.syscall(number, _b(new_root), _b(put_old)) != 0:
        _fail("pivot_root")


def prctl(option: int, arg: int = 0) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        _fail(f"prctl({option})")


# --- a fork born in a cgroup v2 directory (clone3) ---

CLONE_INTO_CGROUP = 0x200000000
_SYS_CLONE3 = 435  # the same on every architecture the engine runs on (new syscalls share one)
_SIGCHLD = 17


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


# PyDLL: the call keeps the GIL, as os.fork does, so no other thread runs Python across it
_pylibc = ctypes.PyDLL(None, use_errno=True)
_clone3 = _pylibc.syscall
_clone3.restype = ctypes.c_long
_before_fork = ctypes.pythonapi.PyOS_BeforeFork
_after_fork_child = ctypes.pythonapi.PyOS_AfterFork_Child
_after_fork_parent = ctypes.pythonapi.PyOS_AfterFork_Parent
for _hook in (_before_fork, _after_fork_child, _after_fork_parent):
    _hook.restype, _hook.argtypes = None, []
_clone_refused: list[int] = []  # the errno of a first refusal: not asked again


def fork_into_cgroup(cgroup_fd: int) -> int:
    """``os.fork``, the child born in the cgroup v2 directory ``cgroup_fd`` (clone3 with
    ``CLONE_INTO_CGROUP``, Linux >= 5.7) instead of moved there after: a move of a whole
    process takes the kernel's global lock of such moves, which waits for an RCU grace period
    after a quiet spell and holds up every fork on the machine meanwhile. Returns the pid (0 in
    the child). Where the kernel refuses (ENOSYS before 5.7, EPERM or ENOSYS from an outer
    container's seccomp, EINVAL...) raises ``OSError`` with nothing forked, and so at once
    from then on: callers fall back to ``os.fork`` and a write to ``cgroup.procs``."""
    if _clone_refused:
        raise OSError(_clone_refused[0], "clone3 into a cgroup: refused before")
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=_SIGCHLD, cgroup=cgroup_fd)
    _before_fork()
    pid = _clone3(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args),
                  ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        _after_fork_child()
        return 0
    errno = ctypes.get_errno()
    _after_fork_parent()
    if pid < 0:
        if errno != 9:  # EBADF is the caller's fd, not the kernel's answer
            _clone_refused.append(errno)
        raise OSError(errno, f"clone3 into a cgroup: {os.strerror(errno)}")
    return pid


def write_fully(fd: int, data: bytes) -> None:
    """``data`` written to ``fd`` whole (``os.write`` may take part of it: a pipe, a signal)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --- the privilege boundary (capabilities, no_new_privs, seccomp) ---

PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


# Made here, in the zygote, not in each forked shim or command: a ctypes array type made in a
# fresh child costs about half a millisecond (with the copy-on-write faults it brings).
_CapPair = _CapData * 2
_capset = _libc.capset
_prctl_as_is = _libc["prctl"]  # without argtypes: for arguments made as C values ahead


def prctl_args(option: int, arg2: int = 0, arg3: int = 0) -> None:
    if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
        _fail(f"prctl({option}, {arg2})")


def drop_bounding(keep: int) -> None:
    """Drop every capability not in ``keep`` (bit n = capability n) from the bounding set, up
    to the kernel's last one (where ``PR_CAPBSET_DROP`` says EINVAL). One loop over libc
    here, no exception per call: it runs in every shim, warm PID 1 and exec helper."""
    prctl = _libc.prctl
    for number in range(64):
        if keep & (1 << number):
            continue
        if prctl(PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            if errno == 22:  # EINVAL: past the kernel's last capability
                return
            raise OSError(errno, f"prctl(PR_CAPBSET_DROP, {number}): {os.strerror(errno)}")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks, capability number = bit)."""
    CapSets(effective, permitted, inheritable).apply()


class SeccompFilter:
    """A classic BPF seccomp program (``struct sock_filter`` array) as the ``sock_fprog`` to
    install it on a thread, made in a parent so that the children it forks load it with one
    ``prctl``: a ctypes structure made in a fresh fork costs it first touches of ctypes' pages
    (~0.07 ms). The kernel reads the program where it is (a ``c_char_p`` field holds the
    bytes, kept alive here): a copy into a ctypes buffer would make a new array type."""

    __slots__ = ("_args", "_fprog")

    def __init__(self, program: bytes) -> None:
        self._fprog = _SockFprog(len(program) // 8, program)  # holds ``program``
        # the call's arguments as C values already: no conversion (argtypes) in the child
        self._args = (ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                      ctypes.c_ulong(ctypes.addressof(self._fprog)), ctypes.c_ulong(0),
                      ctypes.c_ulong(0))

    def load(self) -> None:
        if _prctl_as_is(*self._args) != 0:
            _fail("prctl(PR_SET_SECCOMP)")


class CapSets:
    """``capset``'s arguments for given sets (64-bit masks, capability number = bit), made in
    a parent for the same reason as ``SeccompFilter``."""

    __slots__ = ("_args", "_data", "_header")

    def __init__(self, effective: int, permitted: int, inheritable: int) -> None:
        self._header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        self._data = _CapPair(
            _CapData(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF),
            _CapData(effective >> 32, permitted >> 32, inheritable >> 32))
        self._args = (ctypes.byref(self._header), self._data)

    def apply(self) -> None:
        if _capset(*self._args) != 0:
            _fail("capset")


def rehearse_capabilities() -> None:
    """Run the calls the boundary makes (``drop_bounding``, ``CapSets``, ``SeccompFilter``,
    the ambient set), reading only: in a process that waits before it confines itself (a
    warm PID 1), the pages of ctypes and libc they write to are copied then, not on its
    start's path. Changes nothing."""
    prctl = _libc.prctl
    for number in range(64):
        if prctl(PR_CAPBSET_READ, number, 0, 0, 0) < 0:
            break
    _prctl_as_is(ctypes.c_int(PR_CAPBSET_READ), ctypes.c_ulong(0), ctypes.c_ulong(0),
                 ctypes.c_ulong(0), ctypes.c_ulong(0))
    prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, 0, 0, 0)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = _CapPair()
    _libc.capget(ctypes.byref(header), data)
    SeccompFilter(b"")
