"""Rootless mode: the engine's own process enters the user's user namespace (and a mount
namespace of its own) once, before it starts any thread; everything it does from then on --
the zygote, the shims, overlay mounts, the networks' namespaces, the unpacking of layers --
runs as root of that namespace, with the same code as root mode.

Why this process and not only its helpers: the engine's threads hold the networks' namespaces
and connect published ports from inside them, and joining a namespace owned by a user namespace
takes a capability in it. Why one namespace for all the user's runs: a container kept or left
for reuse by one run lives in namespaces owned by it, which a later run (or ``pycontain exec``)
can enter only from that same user namespace. So, as Podman does, a pause process
(``pause.py``, its pid in ``pause.pid`` in the user's runtime directory) holds it, and every
run joins it (``setns``), or makes it when there is none; a run's mounts stay in a mount
namespace of the run's own, so a killed run's mounts still end with it. The mapping
(``idmap.plan``) is the user as root plus, where the user has them, 65536 subordinate ids
written by the setuid ``newuidmap``/``newgidmap`` (as Podman and rootless Docker do); else the
pause process maps its one id itself. In a cgroup v2 delegated to the user, the process first
moves into a leaf of it (``cgroupleaf.py``), so that the pause process is born there too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EngineUnavailable
from ..idmap import (
    Mapping,
    current_map,
    host_uid,
    in_user_namespace,
    plan,
    state_dir,
    user_name,
)
from ..procinfo import process_alive, process_start_time
from . import cgroupleaf
from . import syscalls as sc
from .cgroups import default_root

if TYPE_CHECKING:
    import subprocess

# subprocess and threading are imported where used: rootfs brings this module into the zygote,
# and threading's at-fork hook would run in every child it forks (see zygote.py)

CLONE_NEWUSER = 0x10000000

__all__ = ["enter", "enter_for_children", "entered", "pause_files", "pause_state"]

INHERITED = "PYCONTAIN_USERNS"  # the namespace (/proc/self/ns/user) an engine entered

PAUSE = Path(__file__).with_name("pause.py")
PAUSE_INTERVAL = 2.0  # seconds between the pause process's looks for other processes

ALTERNATIVES = ("; the native engine needs root or a user namespace of its own (rootless mode), "
                "or run containers through the Docker backend: --pycontain-backend=docker")

_entered: list[Mapping] = []  # the mapping this process entered (at most one, for its life)


def entered() -> Mapping | None:
    """The mapping this process entered, or inherited from the process that entered it for
    its children (``enter_for_children``: pytest-xdist's controller for its workers)."""
    if not _entered and os.environ.get(INHERITED) and os.environ[INHERITED] == _namespace():
        _entered.append(_current())
    return _entered[0] if _entered else None


def _current(why_single: str = "") -> Mapping:
    """The mapping of the namespace this process is in, read back from /proc."""
    uids, gids = current_map("uid"), current_map("gid")
    uid = host_uid()
    return Mapping(user_name(uid), uid, gids[0].outside, uids, gids, full=len(uids) > 1,
                   why_single="" if len(uids) > 1 else why_single)


def _namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/user")
    except OSError:
        return ""


def enter_for_children(mapping: Mapping | None = None) -> Mapping:
    """Enter the namespace (as ``enter``) in a process whose children run the engine and
    have threads from their start (pytest-xdist's workers: execnet's), so cannot enter one
    themselves; they find it through the environment."""
    return enter(mapping)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def pause_files(environ: dict[str, str] | None = None) -> tuple[Path, Path]:
    """The pause process's pid file and the lock that joining and its ending share, in the
    user's runtime directory (``idmap.state_dir``)."""
    directory = state_dir(environ)
    return directory / "pause.pid", directory / "pause.lock"


def pause_state() -> str:
    """The user's namespace as ``pycontain info`` says it: its pause process, or none yet."""
    pid_file, _ = pause_files()
    found = _read_pid_file(pid_file)
    if found is not None and _holding(found[0], found[1]):
        return f"held by pause process {found[0]} ({pid_file}); every run joins it"
    return f"none now; the next run makes it, held by a pause process ({pid_file})"


def enter(mapping: Mapping | None = None) -> Mapping:
    """Join the user's namespace (made with ``mapping``, ``idmap.plan()`` by default, when
    there is none yet) and a mount namespace of this process's own; return the mapping. A
    second call returns the first mapping. Raises ``EngineUnavailable`` naming the cause and
    the fix when the kernel or the host says no."""
    if entered() is not None:
        return _entered[0]
    mapping = plan() if mapping is None else mapping
    pid_file, lock_file = pause_files()
    if in_user_namespace() and os.geteuid() == 0:
        if _namespace() and _namespace() == _recorded_namespace(pid_file):
            return _finish(_current(mapping.why_single), unshare_mounts=False)
        raise EngineUnavailable(
            "this process already runs as root of a user namespace it did not make "
            "(podman unshare, rootlesskit, a container), so it cannot make a mapping of its "
            "own; run it as the user itself" + ALTERNATIVES)
    threads = _threads()
    if threads > 1:
        import threading

        names = ", ".join(t.name for t in threading.enumerate())
        raise EngineUnavailable(
            f"rootless mode enters a user namespace, which a process can do only while it has "
            f"one thread; this one has {threads} ({names}): make the engine before starting "
            "threads (the plugin does so on first use of a fixture)" + ALTERNATIVES)
    _own_directory(pid_file.parent)
    # in a delegated cgroup v2, into a leaf of it before the pause process is born
    cgroupleaf.enter(default_root(), pid_file.parent, lambda: _pause_pid(pid_file))
    with _locked(lock_file):
        _join(pid_file, lock_file, mapping)
    return _finish(_current(mapping.why_single), unshare_mounts=True)


def _finish(mapping: Mapping, *, unshare_mounts: bool) -> Mapping:
    if unshare_mounts:
        sc.unshare(sc.CLONE_NEWNS)
        # root of the namespace now; this run's mounts stay its own
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    _entered.append(mapping)
    # children (pytester's subprocess runs, xdist's workers, the pycontain command a test
    # runs) are root here too: this tells their engines the namespace is rootless mode's
    os.environ[INHERITED] = _namespace()
    return mapping


def _own_directory(directory: Path) -> None:
    """The runtime directory may be /tmp/pycontain-UID: ours and closed to others, or another
    user could point us at a namespace of theirs."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = directory.lstat()
    except OSError as exc:
        raise EngineUnavailable(f"rootless mode cannot make its runtime directory {directory}: "
                                f"{exc.strerror or exc}; set XDG_RUNTIME_DIR to a directory "
                                "you may write" + ALTERNATIVES) from exc
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise EngineUnavailable(
            f"{directory}: rootless mode's runtime directory must be a directory of this "
            f"user's with mode 0700 (it is owned by uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}); remove it or set XDG_RUNTIME_DIR" + ALTERNATIVES)


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_pid_file(pid_file: Path) -> tuple[int, int, str] | None:
    try:
        pid, start, namespace = pid_file.read_text().split()
        return int(pid), int(start), namespace
    except (OSError, ValueError):
        return None


def _pause_pid(pid_file: Path) -> int | None:
    """The live pause process's pid, if any."""
    found = _read_pid_file(pid_file)
    return found[0] if found is not None and _holding(found[0], found[1]) else None


def _recorded_namespace(pid_file: Path) -> str:
    found = _read_pid_file(pid_file)
    return found[2] if found else ""


def _holding(pid: int, start: int) -> bool:
    """Whether the pause process ``pid`` still runs (killed, it may be a zombie a while)."""
    if not process_alive(pid, start):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def _namespace_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return ""


def _member(namespace: str) -> int | None:
    """A live engine helper in ``namespace`` (a run's zygote, a kept container's shim), if
    any. The kernel reuses a dead namespace's number, so the number alone could lead into
    another namespace of the user's (rootless Podman's): a helper of ours was started with
    ``PYCONTAIN_USERNS`` naming it in its environment."""
    mark = f"{INHERITED}={namespace}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _namespace_of(int(entry)) != namespace:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                if mark in file.read().split(b"\0"):
                    return int(entry)
        except OSError:
            continue
    return None


def _join(pid_file: Path, lock_file: Path, mapping: Mapping) -> None:
    """Under the lock: enter the namespace of the pause process that ``pid_file`` names; if
    it died while processes still live in its namespace, enter that through one of them and
    start a new pause process there; else make both."""
    found = _read_pid_file(pid_file)
    if found is not None:
        pid, start, namespace = found
        if _holding(pid, start) and _namespace_of(pid) == namespace:
            _setns(pid)
            return
        member = _member(namespace)
        if member is not None:
            _setns(member)
            _start_pause(pid_file, lock_file, "hold", mapping)
            return
    pid = _start_pause(pid_file, lock_file, "full" if mapping.full else "single", mapping)
    _setns(pid)


def _setns(pid: int) -> None:
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise EngineUnavailable(f"cannot open the user namespace of the pause process {pid}: "
                                f"{exc}" + ALTERNATIVES) from exc
    try:
        sc.setns(fd, CLONE_NEWUSER)
    except OSError as exc:
        raise EngineUnavailable(f"cannot join the user namespace of process {pid}: {exc}"
                                + ALTERNATIVES) from exc
    finally:
        os.close(fd)


def _start_pause(pid_file: Path, lock_file: Path, mode: str, mapping: Mapping) -> int:
    """Start the pause process in ``mode`` (``pause.py``), write its mapping for it when it
    is ``full``, record it in ``pid_file``; its pid."""
    argv = [sys.executable, "-I", "-S", str(PAUSE), mode, str(pid_file), str(lock_file),
            str(PAUSE_INTERVAL)]
    if mode == "single":
        argv += [str(mapping.uids[0].outside), str(mapping.gids[0].outside)]
    import subprocess

    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd="/", start_new_session=True,
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert process.stdin is not None and process.stdout is not None
    try:
        if mode == "full":
            if process.stdout.readline().strip() != b"unshared":
                raise EngineUnavailable(f"cannot make a user namespace: {_said(process)} "
                                        "(`pycontain info` says what this host needs)"
                                        + ALTERNATIVES)
            _write_mapping(process.pid, mapping)
            process.stdin.write(b"mapped\n")
            process.stdin.flush()
        ready = process.stdout.readline().split()
        if len(ready) != 2 or ready[0] != b"ready":
            raise EngineUnavailable(f"cannot make a user namespace: {_said(process)} "
                                    "(`pycontain info` says what this host needs)"
                                    + ALTERNATIVES)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.wait()  # the first of its two processes: the pause process is its child
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    pid = int(ready[1])
    record = f"{pid} {process_start_time(pid)} {_namespace_of(pid)}\n"
    temporary = pid_file.with_name(pid_file.name + ".new")
    temporary.write_text(record)
    temporary.replace(pid_file)
    return pid


def _said(process: subprocess.Popen) -> str:
    process.kill()
    _, err = process.communicate()
    return err.decode(errors="replace").strip() or f"the pause process ended ({process.returncode})"


def _write_mapping(pid: int, mapping: Mapping) -> None:
    """newuidmap/newgidmap (setuid, outside the namespace) write the subordinate ids."""
    import subprocess

    for tool, ranges in (("newuidmap", mapping.uids), ("newgidmap", mapping.gids)):
        numbers = [str(n) for r in ranges for n in (r.inside, r.outside, r.count)]
        done = subprocess.run([tool, str(pid), *numbers], capture_output=True, text=True)
        if done.returncode != 0:
            raise EngineUnavailable(
                "newuidmap/newgidmap could not write the user namespace's id mapping "
                f"({mapping.describe()}): {done.stderr.strip()}" + ALTERNATIVES)
