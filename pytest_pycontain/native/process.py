"""What runs in the zygote's children: a container's shim, its PID 1, and exec helpers.

The shim unshares the namespaces, forks PID 1 (which waits), builds the root filesystem, lets
PID 1 pivot into it and exec, and then stays, small and single-threaded, to copy PID 1's output
into the log files, relay signals, fork the commands its engine execs (it is in the container's
namespaces already, so they need no setns) and report exit codes over its control socket.
What goes over that socket and over PID 1's pipes is defined in ``protocol.py``.
"""

from __future__ import annotations

import _signal  # what signal.signal wraps: see _exec
import contextlib
import dataclasses
import os
import selectors
import signal
import socket
import struct
from collections.abc import Mapping, Sequence

from ..idmap import in_user_namespace
from . import boundary as bd  # imported before the fork: a kept shim's root may be elsewhere
from . import dns, rootfs
from . import syscalls as sc
from .cgroups import mount_inside as mount_cgroups
from .keptports import MAX_KEPT_NETWORKS, MAX_KEPT_PORTS, KeptPorts
from .keptports import TAG as KEPT_PORT
from .protocol import (
    Created,
    Exec,
    ExecExited,
    ExecPlan,
    ExecStarted,
    Exit,
    Exited,
    Failed,
    Go,
    Keep,
    Kept,
    Launch,
    ProtocolError,
    Run,
    RunPlan,
    Signal,
    Started,
    decode,
    encode,
    read_all,
    receive,
    receive_with_fds,
    send,
    write_all,
)

EXEC_NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")
# A launch like a real one, encoded once here in the zygote: a warm PID 1 decodes it while it
# waits. A forked child's first run of the decoder copies every page it writes to (~140 faults,
# ~0.4 ms); rehearsed, that is done before the container's start, not in it, for the same CPU.
# (The shim's first decode of its plan and its user lookup are not rehearsed: a rehearsal there
# cost ~230 faults and saved ~25 in the real ones, whose pages are mostly the plan's own.)
_REHEARSAL = bd.Boundary(capabilities=1, seccomp=bytes(8), masked_paths=("/x",),
                         sysctls=(("a.b", "1"),))
_REHEARSED_LAUNCH = encode(Launch("/", ("true",), {"A": "b"}, 0, 0, (1,), "/", False,
                                  _REHEARSAL))
_RESET_SIGNALS = tuple(int(number) for number in (
    signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT, signal.SIGTERM))
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2, signal.SIGWINCH)


def exit_status(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _die_with_parent(expected_parent: int) -> None:
    """SIGKILL us when our parent dies; if it died already, go now. (A child whose parent is
    outside its pid namespace sees a parent pid of 0.)"""
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != expected_parent:
        os._exit(137)


def _lo_up() -> None:
    """Bring up the loopback of a fresh network namespace: one ioctl, no ``ip`` binary."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, 0x8913, request))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1 | 0x40))


def not_found_message(argv0: str, error: OSError) -> tuple[int, str]:
    """Docker's (runc's) words for a command that cannot be started, and the exit code."""
    if isinstance(error, FileNotFoundError):
        if "/" in argv0:
            return 127, f'exec: "{argv0}": stat {argv0}: no such file or directory'
        return 127, f'exec: "{argv0}": executable file not found in $PATH'
    if isinstance(error, PermissionError):
        return 126, f'exec: "{argv0}": permission denied'
    return 126, f'exec: "{argv0}": {error.strerror or error}'


def _which(name: str, env: Mapping[str, str]) -> str | None:
    """Where execvp would find ``name`` on ``env``'s PATH: the first directory where it is
    executable and no directory. execvp finds it by an execve in each directory, each failure
    an exception (~130 copy-on-write faults in a fresh PID 1 or exec'd command); ``access``
    asks the same question of the same credentials without one. None when that is not plain (a
    name with a slash, a relative PATH entry, nothing found): execvp then searches itself."""
    if "/" in name:
        return None
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        if not directory.startswith("/"):
            return None
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def _exec(argv: Sequence[str], env: dict[str, str], report: int | None,
          found: str | None = None) -> None:
    """Replace this process with ``argv`` (at ``found``, ``_which``'s answer, when given);
    on failure tell ``report`` (a pipe to the shim: a ``Failed``) or stderr why, and exit 127
    or 126. An ignored signal stays ignored across exec, so those are reset; through
    ``_signal``, as ``signal.signal`` does, without its enum conversion of the old handler
    (~70 faults in a fresh child)."""
    for number in _RESET_SIGNALS:
        _signal.signal(number, _signal.SIG_DFL)
    try:
        if found is not None:
            with contextlib.suppress(OSError):  # then execvp's own search says why
                os.execve(found, argv, env)
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        code, message = not_found_message(argv[0], exc)
        with contextlib.suppress(OSError):
            if report is None:
                os.write(2, f"{message}\n".encode())
            else:
                write_all(report, Failed(message, code))
        os._exit(code)


def _init(child: int) -> None:
    """A tiny init for ``init=True``: forwards signals to ``child``, reaps every zombie, and
    exits as ``child`` did."""
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for number in _FORWARDED:
        signal.signal(number, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os._exit(exit_status(status))


# --- the container shim --------------------------------------------------------------------

def enter_namespaces(host_network: bool) -> None:
    """New mount, uts, ipc, pid (for our children) and, unless ``host_network``, network
    namespaces with loopback up. No cgroup namespace: PID 1 and each exec'd command make their
    own once they are in the container's cgroups, so that they see those as their root."""
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID
    if not host_network:
        flags |= sc.CLONE_NEWNET
    sc.unshare(flags)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    if not host_network:
        _lo_up()


def fork_into(cgroup: int | None) -> tuple[int, bool]:
    """``os.fork``, the child born in the cgroup v2 directory ``cgroup`` (an ``O_PATH`` fd)
    where the kernel allows it (``syscalls.fork_into_cgroup``): nothing is moved at a start.
    Returns the pid (0 in the child) and whether the child is there; if not (no ``cgroup``, an
    old kernel, an outer seccomp), a plain fork, and the caller moves the child as before."""
    if cgroup is not None:
        try:
            return sc.fork_into_cgroup(cgroup), True
        except OSError:
            pass
    return os.fork(), False


def cgroup_dir(plan: RunPlan) -> int | None:
    """An ``O_PATH`` fd of the container's cgroup v2 directory, for ``fork_into``, or None (v1,
    no cgroup, or one not made yet: a spare is renamed to it later)."""
    if not (plan.cgroup2 and len(plan.cgroups) == 1 and not plan.shim_joins):
        return None
    try:
        return _directory(plan.cgroups[0])
    except OSError:
        return None  # then PID 1 is moved there, and its write says why it cannot be


class _Pid1:
    """A container's PID 1, forked as soon as the namespaces exist and waiting until the shim
    has the root ready (and the engine said go): its pid, the shim's pipe ends, and whether it
    was born in the container's v2 cgroup (``into``)."""

    def __init__(self, rehearse: bool = False, into: int | None = None,
                 stage: str | None = None, prepared: bd.Prepared | None = None) -> None:
        self.out_r, self.out_w = out_r, out_w = os.pipe()
        self.err_r, self.err_w = err_r, err_w = os.pipe()
        # close-on-exec: EOF alone means the exec succeeded
        self.report_r, self.report_w = report_r, report_w = os.pipe()
        go_r, self.go_w = os.pipe()
        self.pid, self.placed = fork_into(into)
        if self.pid == 0:
            try:
                _die_with_parent(0)
                for fd in (out_r, err_r, report_r, self.go_w):
                    os.close(fd)
                if rehearse:  # a warm PID 1: it has the time (see _REHEARSED_LAUNCH)
                    decode(_REHEARSED_LAUNCH)
                    bd.rehearse()
                # a warm one in a spare set (v1: its shim's; v2: born there) mounts ahead
                staged = (_stage(stage, cgroups=self.placed or into is None,
                                 cgroup2=into is not None) if stage else _Staged())
                launch = read_all(go_r)
                if not isinstance(launch, Launch):
                    os._exit(0)
                _pid1(launch, out_w, err_w, report_w, staged, prepared)
            finally:
                os._exit(125)
        os.close(go_r)  # the other write ends are closed by run_shim once PID 1 has them

    def go(self, launch: Launch) -> None:
        write_all(self.go_w, launch)
        os.close(self.go_w)


@dataclasses.dataclass(frozen=True)
class _Staged:
    """What a warm PID 1 mounted ahead in its stage (``_stage``): a /proc of its pid namespace,
    and the cgroup filesystem of the cgroups it was born in (read-only), in a cgroup namespace
    of its own rooted there."""

    proc: str | None = None  # with the boundary's default masked and read-only paths
    cgroups: str | None = None


def _stage(stage: str, cgroups: bool, cgroup2: bool) -> _Staged:
    """In a warm PID 1, while it waits for its launch: mount in ``stage`` (an empty directory;
    the mounts are in the shim's own mount namespace) what it would mount at the start, so that
    the start only moves them into the root: its /proc, confined as by default, and its cgroups
    if it is in the ones it will keep (``cgroups``). What cannot be had so is mounted at the
    start, as without a stage."""
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    try:
        sc.mount("tmpfs", stage, "tmpfs", flags, "mode=700,size=16k")
        proc = os.path.join(stage, "proc")
        os.mkdir(proc)
        sc.mount("proc", proc, "proc", flags)
    except OSError:
        return _Staged()
    try:
        bd.confine_proc_ahead(proc)
    except OSError:  # half masked: a fresh one at the start
        with contextlib.suppress(OSError):
            sc.umount(proc, sc.MNT_DETACH)
        proc = None
    if not cgroups:
        return _Staged(proc)
    try:
        cgroup = os.path.join(stage, "cgroup")
        os.mkdir(cgroup)
        sc.unshare(sc.CLONE_NEWCGROUP)
        mount_cgroups(cgroup, cgroup2=cgroup2)
    except OSError:
        with contextlib.suppress(OSError):
            sc.umount(cgroup, sc.MNT_DETACH)
        return _Staged(proc)
    return _Staged(proc, cgroup)


def _pid1(launch: Launch, out_w: int, err_w: int, report_w: int,
          staged: _Staged = _Staged(), prepared: bd.Prepared | None = None) -> None:
    """In the container's PID 1: fresh /proc, pivot_root, stdio, user, workdir, then exec
    (or, with ``init``, fork the command and stay as its init). Never returns. What was
    ``staged`` ahead is moved into the root instead of mounted; ``prepared`` is the launch's
    boundary as the shim made it ready from the same plan before forking us (a warm PID 1 has
    none: ``enter`` prepares it)."""
    try:
        target = os.path.join(launch.root, "sys/fs/cgroup")
        if staged.cgroups is not None and launch.staged_cgroups:
            sc.mount(staged.cgroups, target, None, sc.MS_MOVE)
        else:
            sc.unshare(sc.CLONE_NEWCGROUP)  # born in our cgroups, or the shim moved us by now
            mount_cgroups(target, writable=launch.boundary.privileged, cgroup2=launch.cgroup2)
        proc_ready = staged.proc is not None and bd.proc_is_default(launch.boundary)
        if proc_ready:
            sc.mount(staged.proc, os.path.join(launch.root, "proc"), None, sc.MS_MOVE)
        rootfs.enter(launch.root, proc=not proc_ready)
        bd.confine_filesystem(launch.boundary, outside_proc=proc_ready)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        bd.enter(prepared or launch.boundary, launch.uid, launch.gid, list(launch.groups))
        os.chdir(launch.workdir)
        if launch.init:
            child = os.fork()
            if child:
                os.close(report_w)
                _init(child)
            _die_with_parent(1)
        _exec(launch.argv, launch.env, report_w, _which(launch.argv[0], launch.env))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            write_all(report_w, Failed(f"cannot start the container: {exc}", 125))
    os._exit(125)


def _is_v2(cgroup: str) -> bool:
    """Whether ``cgroup`` is a cgroup v2 directory (v1 ones have a ``tasks`` file)."""
    return not os.path.exists(os.path.join(cgroup, "tasks"))


def _joining_file(cgroup: str) -> str:
    """Where a process of one thread writes "0" to move itself into ``cgroup``: on cgroup v1
    ``tasks``, which moves the writing thread alone and so without the kernel's global lock of
    whole-process moves (taking it waits for an RCU grace period after a quiet spell, ~5-20
    ms, and holds up every fork on the machine meanwhile); ``cgroup.procs`` on v2."""
    return os.path.join(cgroup, "cgroup.procs" if _is_v2(cgroup) else "tasks")


def _directory(cgroup: str) -> int:
    """An ``O_PATH`` fd of a cgroup v2 directory, to fork into (``fork_into``)."""
    return os.open(cgroup, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def warm_shim(sock: socket.socket, zygote: int, spare: Sequence[str] = (),
              stage: str | None = None) -> None:
    """A shim made ahead of time: namespaces ready and PID 1 forked, waiting for the plan on
    ``sock``, which then stays its control socket. Takes the forks and the unshares off the
    start of a container. With ``spare`` cgroups PID 1 is born there, and nothing is moved at
    the start: on v1 we join them first and ``run_shim`` renames them to the container's; on
    v2 we stay out, PID 1 is forked into the one spare (``fork_into``, else moved there now),
    and the engine gives the container that cgroup (its name is the container's id). With a
    ``stage`` PID 1 mounts its /proc and cgroup filesystem there meanwhile (``_stage``)."""
    _die_with_parent(zygote)
    try:
        enter_namespaces(host_network=False)
        v2 = len(spare) == 1 and _is_v2(spare[0])
        for path in () if v2 else spare:
            fd = os.open(_joining_file(path), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        into = _directory(spare[0]) if v2 else None
        pid1 = _Pid1(rehearse=True, into=into, stage=stage if spare else None)
        if into is not None:
            os.close(into)
            if not pid1.placed:  # moved now, ahead of the start
                with open(os.path.join(spare[0], "cgroup.procs"), "w") as file:
                    file.write(str(pid1.pid))
                pid1.placed = True
    except OSError:
        os._exit(1)
    try:
        message = receive(sock, 1 << 20)
    except (OSError, ProtocolError):
        message = None
    if not isinstance(message, Run):  # the engine went away, or closed us unused
        os._exit(0)
    run_shim(message.plan, sock, zygote, warm=pid1, spare=tuple(spare))


def run_shim(plan: RunPlan, ctl: socket.socket, zygote: int,
             warm: _Pid1 | None = None, spare: tuple[str, ...] = ()) -> None:
    """Start one container and look after it until told to go (or its owner dies)."""
    if warm is None:
        _die_with_parent(zygote)
    directory = plan.directory
    dir_fd = os.open(directory, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        into = cgroup_dir(plan)  # v2: PID 1 (if not forked yet) and execs are born there
        # made ready once for every process we fork (see bd.Prepared); we never exec
        prepared = bd.prepare(plan.boundary)
        if warm is None:
            enter_namespaces(plan.host_network)
            prepared.cut()
            pid1 = _Pid1(into=into, prepared=prepared)
        else:
            pid1 = warm
            # born in a v2 spare: in the container's cgroup if that is the one (``Warm``)
            pid1.placed = pid1.placed and plan.cgroup2 and spare == plan.cgroups
        if plan.pause:  # the engine joins its network while we make its root
            send(ctl, Created(pid1.pid, os.getpid()))
        renamed = plan.shim_joins and _rename_spare(spare, plan.cgroups)
        cgroup_fds = [] if renamed else [  # else moved there (a one-thread one by itself)
            os.open(_joining_file(path), os.O_WRONLY | os.O_CLOEXEC) for path in plan.cgroups]
        socket.sethostname(plan.hostname)
        rootfs.mount_overlay(directory, len(plan.lower), flags=plan.boundary.device_flags)
        root = os.path.join(directory, "merged")
        uid, gid, groups, home = rootfs.resolve_user(plan.user, root)
        env = dict(plan.env)
        env.setdefault("HOME", home)
        new_workdir = not rootfs.path_exists(root, plan.workdir)
        rootfs.prepare(plan, root, workdir_owner=(uid, gid) if new_workdir else None)
    except (OSError, rootfs.UnknownUser) as exc:
        send(ctl, Failed(f"cannot create the container: {exc}", 125))
        os._exit(125)
    logs = {name: os.open(f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                          0o644, dir_fd=dir_fd) for name in ("stdout", "stderr", "combined")}
    # PID 1 stays in the cgroups it was born in: those it mounted ahead are the container's
    staged_cgroups = (warm is not None and (renamed or pid1.placed)
                      and not plan.boundary.privileged)
    launch = Launch(root, plan.argv, env, uid, gid, tuple(groups), plan.workdir, plan.init,
                    plan.boundary, plan.cgroup2, staged_cgroups)
    if plan.pause:  # the engine sets up more (a network) before the command starts
        cgroup_fds = _join_cgroups(plan, pid1, cgroup_fds, ctl)  # meanwhile: see there
        _cut(prepared, pid1.pid, ctl)  # meanwhile too
        try:
            answer = receive(ctl)
        except (OSError, ProtocolError):
            answer = None
        if not isinstance(answer, Go):
            os._exit(125)  # PID 1 dies with us
    else:
        cgroup_fds = _join_cgroups(plan, pid1, cgroup_fds, ctl)
    pid1.go(launch)
    for fd in (pid1.out_w, pid1.err_w, pid1.report_w):
        os.close(fd)
    _cut(prepared, pid1.pid, ctl)  # if not yet: a warm PID 1 cuts its own meanwhile
    failure = read_all(pid1.report_r)
    os.close(pid1.report_r)
    if isinstance(failure, Failed):
        os.waitpid(pid1.pid, 0)
        send(ctl, failure)
        os._exit(failure.exit_code)
    send(ctl, Started(pid1.pid, os.getpid()))
    _supervise(pid1.pid, ctl, pid1.out_r, pid1.err_r, logs, dir_fd, (cgroup_fds, into),
               prepared)


def _cut(prepared: bd.Prepared, pid1: int, ctl: socket.socket) -> None:
    """Cut our bounding and ambient sets for the execs we fork (``bd.Prepared.cut``); on
    failure ``Failed``, PID 1 killed, and exit."""
    try:
        prepared.cut()
    except OSError as exc:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid1, signal.SIGKILL)
        send(ctl, Failed(f"cannot start the container: its capabilities: {exc}", 125))
        os._exit(125)


def _rename_spare(spare: tuple[str, ...], cgroups: tuple[str, ...]) -> bool:
    """Make the container's cgroups (``plan.shim_joins``: the engine left that to us) by
    renaming the spare ones we and PID 1 were born in, one per hierarchy (v1 renames within a
    parent; nobody is moved, so no grace period is waited for); a container started again
    has empty ones already, which go first. False, with them made empty, if that cannot be."""
    by_parent = {os.path.dirname(path): path for path in spare}
    if cgroups and {os.path.dirname(path) for path in cgroups} == set(by_parent):
        try:
            for path in cgroups:
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(path)
                os.rename(by_parent[os.path.dirname(path)], path)
            return True
        except OSError:
            pass
    for path in cgroups:
        os.makedirs(path, exist_ok=True)
    return False


def _join_cgroups(plan: RunPlan, pid1: _Pid1, fds: list[int], ctl: socket.socket) -> list[int]:
    """Move PID 1 into the container's cgroups (``fds``: their ``cgroup.procs``) unless it was
    born there (v2: ``fork_into``); returns what each exec'd command not born there must
    still write itself into. With limits we stay out
    (they are not ours to count against, and its OOM killer must not pick us), so every exec
    is moved in too; without, we join (``plan.shim_joins``) and our children are born inside.
    A move can wait for an RCU grace period (``Limits.shim_joins``), so a paused start does it
    while the engine joins the container to its network. On failure: ``Failed``, and exit."""
    try:
        for fd in () if pid1.placed else fds:
            if plan.shim_joins:
                os.write(fd, b"0")  # "0": the writer itself
            os.write(fd, str(pid1.pid).encode())
    except OSError as exc:
        send(ctl, Failed(f"cannot create the container: its cgroups: {exc}", 125))
        os._exit(125)
    if not plan.shim_joins:
        return fds
    for fd in fds:
        os.close(fd)
    return []


def _supervise(pid: int, ctl: socket.socket, out_r: int, err_r: int, logs: dict[str, int],
               dir_fd: int, cgroups: tuple[list[int], int | None],
               boundary: bd.Prepared) -> None:
    """Copy PID 1's output to the logs, answer the engine, run its execs (in ``cgroups``:
    the fds each writes itself into, and the v2 directory it is forked into where it can)."""
    pidfd = os.pidfd_open(pid)
    selector = selectors.DefaultSelector()
    kept_ports = KeptPorts(selector)
    selector.register(out_r, selectors.EVENT_READ, "stdout")
    selector.register(err_r, selectors.EVENT_READ, "stderr")
    selector.register(ctl, selectors.EVENT_READ, "ctl")
    selector.register(pidfd, selectors.EVENT_READ, "exit")
    kept = False
    running = True
    while True:
        for key, _ in selector.select():
            what = key.data
            if what in ("stdout", "stderr"):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    continue
                os.write(logs[what], data)
                os.write(logs["combined"], data)
            elif what == "exit":
                selector.unregister(pidfd)
                _, status = os.waitpid(pid, 0)
                running = False
                for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
                    with contextlib.suppress(KeyError, OSError):
                        selector.unregister(fd)
                        os.set_blocking(fd, False)
                        while data := os.read(fd, 65536):
                            os.write(logs[name], data)
                            os.write(logs["combined"], data)
                code = exit_status(status)
                exit_fd = os.open("exit", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644,
                                  dir_fd=dir_fd)
                os.write(exit_fd, str(code).encode())
                os.close(exit_fd)
                with contextlib.suppress(OSError):
                    send(ctl, Exited(code))
            elif what == "ctl":
                try:
                    request, fds = receive_with_fds(
                        ctl, 65536, 1 + 2 * MAX_KEPT_NETWORKS + MAX_KEPT_PORTS)
                except OSError:
                    request, fds = None, []
                for fd in fds:
                    os.set_inheritable(fd, False)
                if request is None:
                    selector.unregister(ctl)
                    if kept:
                        continue
                    _finish(pid, running, ctl, selector)
                if isinstance(request, Signal) and running:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, request.number)
                elif isinstance(request, Keep):
                    held = fds[1:1 + 2 * len(request.dns)]  # (namespace, DNS) per network
                    if request.ports:
                        listeners = fds[len(fds) - len(request.ports):]
                        kept_ports.listen(listeners, request.ports, request.target,
                                          held[0] if held else None)
                    for table, dns_fd in zip(request.dns, held[1::2], strict=False):
                        dns_sock = socket.socket(fileno=dns_fd)
                        selector.register(dns_sock, selectors.EVENT_READ,
                                          ("dns", dns_sock, table))
                    sc.prctl(sc.PR_SET_PDEATHSIG, 0)
                    null = os.open("/dev/null", os.O_RDWR)  # let go of the owner's terminal
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                    os.close(null)
                    kept = True  # the lock fd we were given stays open for our life
                    send(ctl, Kept())
                elif isinstance(request, Exit):
                    _finish(pid, running, ctl, selector)
                elif isinstance(request, Exec):
                    _start_exec(request.plan, fds, selector, cgroups, boundary)
            elif isinstance(what, tuple) and what[0] == "dns":  # kept: names of its network
                dns.answer_from(what[2], what[1])
            elif isinstance(what, tuple) and what[0] == KEPT_PORT:  # kept: a published port
                kept_ports.ready(what)
            elif isinstance(what, tuple):  # an exec'd process ended
                _, child, exec_ctl = what
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(child, 0)
                with contextlib.suppress(OSError):
                    send(exec_ctl, ExecExited(exit_status(status)))
                exec_ctl.close()


def _start_exec(plan: ExecPlan, fds: list[int], selector: selectors.BaseSelector,
                cgroups: tuple[list[int], int | None], boundary: bd.Prepared) -> None:
    """Run a command for our engine: we are in the container's namespaces and root already,
    and our children are born in its pid namespace."""
    exec_ctl = socket.socket(fileno=fds[0])
    try:
        child = spawn_exec(plan, fds[1:4], boundary, *cgroups)
    except (OSError, rootfs.UnknownUser) as exc:
        with contextlib.suppress(OSError):
            os.write(fds[3], f"{exc}\n".encode())
            send(exec_ctl, ExecExited(126, str(exc)))
        for fd in fds[1:4]:
            with contextlib.suppress(OSError):
                os.close(fd)
        exec_ctl.close()
        return
    send(exec_ctl, ExecStarted(child))
    selector.register(os.pidfd_open(child), selectors.EVENT_READ, ("exec", child, exec_ctl))


def _finish(pid: int, running: bool, ctl: socket.socket,
            selector: selectors.BaseSelector) -> None:
    """Kill PID 1 and end. ``Exited`` is said once PID 1 is reaped (every process of the
    container is gone then), so that a removal need not wait for our own end too: our
    namespaces and the root's mounts going with us take a while. The commands we exec'd are
    reaped meanwhile (their ``ExecExited`` said): PID 1's namespace ends only once they are,
    so waiting for PID 1 alone would wait for ever."""
    if running:
        execs = {data[1]: data[2] for data in (key.data for key in selector.get_map().values())
                 if isinstance(data, tuple) and data[0] == "exec"}
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while True:
                child, status = os.waitpid(-1, 0)
                if child == pid:
                    with contextlib.suppress(OSError):
                        send(ctl, Exited(exit_status(status)))
                    break
                if child in execs:
                    with contextlib.suppress(OSError):
                        send(execs[child], ExecExited(exit_status(status)))
    os._exit(0)


# --- exec helpers --------------------------------------------------------------------------

def run_exec(plan: ExecPlan, ctl: socket.socket, stdio: list[int], zygote: int) -> None:
    """Join a running container's namespaces and cgroups, run one command, report its exit.
    (For containers of another process, such as kept ones; a container's own engine asks its
    shim, which is in those namespaces already.) On v2 we stay out of its cgroup, and the
    command is forked into it (``fork_into``); not in its cgroup namespace either, which
    would hide that cgroup from us: the command makes its own, as PID 1 did."""
    _die_with_parent(zygote)
    target = plan.pid
    try:
        ns_fds = [os.open(f"/proc/{target}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                  for name in EXEC_NAMESPACES]
        root_fd = os.open(f"/proc/{target}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        into, joining = None, []
        for path in plan.cgroups:
            fd = os.open(_joining_file(path), os.O_WRONLY | os.O_CLOEXEC)
            if len(plan.cgroups) == 1 and _is_v2(path):
                into = _directory(path)
                joining.append(fd)  # where the command writes itself if clone3 is refused
                continue
            try:
                os.write(fd, b"0")  # "0": the writer itself
            finally:
                os.close(fd)
        for name, fd in zip(EXEC_NAMESPACES, ns_fds, strict=True):
            if not (name == "cgroup" and into is not None):
                sc.setns(fd)
            os.close(fd)
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        prepared = bd.prepare(plan.boundary or bd.UNCONFINED)
        prepared.cut()  # ours, inherited by the command (we never exec)
        pid = spawn_exec(plan, stdio, prepared, joining, into)
    except (OSError, rootfs.UnknownUser) as exc:
        said = str(exc)
        if isinstance(exc, PermissionError) and in_user_namespace():
            said = (f"{exc}: rootless, this container lives in another user namespace than "
                    "this run's (runs of one user share the one its pause process holds in "
                    "$XDG_RUNTIME_DIR/pycontain: was that directory another?); remove it with "
                    "pycontain rm")
        os.write(stdio[2], f"{said}\n".encode())
        send(ctl, ExecExited(126, said))
        os._exit(126)
    send(ctl, ExecStarted(pid))
    _, status = os.waitpid(pid, 0)
    send(ctl, ExecExited(exit_status(status)))
    os._exit(0)


def spawn_exec(plan: ExecPlan, stdio: list[int], boundary: bd.Boundary | bd.Prepared,
               cgroup_fds: Sequence[int] = (), into: int | None = None) -> int:
    """Fork ``plan.argv`` as ``plan.user`` in ``plan.workdir``, inside ``boundary`` as PID 1
    is; we must be in the container's namespaces and root already. The child is born in the
    v2 cgroup ``into`` (``fork_into``), or joins the cgroups (their ``_joining_file``s opened
    before the root changed), and then a cgroup namespace of its own, rooted there, as PID 1
    has. Closes ``stdio`` here; returns the child's pid."""
    uid, gid, groups, home = rootfs.resolve_user(plan.user, "/")
    env = dict(plan.env)
    env.setdefault("HOME", home)
    found = _which(plan.argv[0], env)  # here, not in each child (see _which)
    exec_r, exec_w = os.pipe()  # close-on-exec: EOF once the child has exec'd, or ended
    try:
        pid, placed = fork_into(into)
    except BaseException:
        os.close(exec_r)
        os.close(exec_w)
        raise
    if pid == 0:
        try:
            _die_with_parent(0)
            for fd in () if placed else cgroup_fds:
                os.write(fd, b"0")  # "0": the writer itself
            sc.unshare(sc.CLONE_NEWCGROUP)
            for number, fd in enumerate(stdio):
                os.dup2(fd, number)
            bd.enter(boundary, uid, gid, groups)
            try:
                os.chdir(plan.workdir)
            except OSError as exc:
                os.write(2, f"chdir to cwd (\"{plan.workdir}\") set in config.json "
                            f"failed: {(exc.strerror or str(exc)).lower()}\n".encode())
                os._exit(126)
            _exec(plan.argv, env, None, found)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(2, f"exec failed: {exc}\n".encode())
            os._exit(126)
    os.close(exec_w)
    for fd in stdio:
        os.close(fd)
    # Until it execs, the child shares our pages, and each we wrote now would be copied (~2.4
    # us a page against ~0.5 once it is gone: ~0.3 ms of the shim's CPU an exec); it gets there
    # in about a millisecond, and what we do next (say ExecStarted) can wait for that.
    os.read(exec_r, 1)
    os.close(exec_r)
    return pid
