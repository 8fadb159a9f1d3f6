"""Rootless mode's pause process: one per user (per runtime directory), it holds the user
namespace that every run of the engine joins (``userns.py``), so that a later run, or the
``pycontain`` command, can enter the containers an earlier run kept or left for reuse (they
live in namespaces owned by it). Podman's pause process is the model.

It is a program of its own (run as ``python -I -S pause.py``, standard library only): small,
and free of the engine's threads and imports. Modes:

- ``full PIDFILE LOCKFILE INTERVAL``: make the namespace, print ``unshared``, wait for the
  starter to write the mapping (newuidmap/newgidmap run outside) and say ``mapped``;
- ``single PIDFILE LOCKFILE INTERVAL UID GID``: make it and map the one id itself;
- ``hold PIDFILE LOCKFILE INTERVAL``: hold the namespace it was started in (its first pause
  process was killed while containers still lived in it).

Then it detaches (a session of its own, not the starter's child), prints ``ready PID`` and
waits. It ends once it is the namespace's only process, under the starter's lock so that no
run is joining meanwhile: nothing of the user's is left behind by it, and the next run makes
a fresh namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import sys
import time

CLONE_NEWUSER = 0x10000000
PR_SET_NAME = 15
NAME = b"pycontain-pause"


def others_in(namespace: str, me: int) -> bool:
    """Whether a process other than ``me`` is in the user namespace ``namespace``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/user") == namespace:
                return True
        except OSError:  # gone, or another user's
            continue
    return False


def _unshare(libc: ctypes.CDLL) -> None:
    if libc.unshare(CLONE_NEWUSER) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"unshare(CLONE_NEWUSER): {os.strerror(number)}")


def _map_single(uid: int, gid: int) -> None:
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                       ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(text)


def _hold(pid_file: str, lock_file: str, interval: float) -> None:
    namespace = os.readlink("/proc/self/ns/user")
    me = os.getpid()
    while True:
        time.sleep(interval)
        if others_in(namespace, me):
            continue
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a run is joining: look again later
            os.close(fd)
            continue
        if others_in(namespace, me):
            os.close(fd)
            continue
        try:
            with open(pid_file) as file:
                ours = file.read().split()[:1] == [str(me)]
            if ours:
                os.unlink(pid_file)
        except OSError:
            pass
        os._exit(0)  # the lock goes with us


def main(argv: list[str]) -> int:
    mode, pid_file, lock_file, interval = argv[1], argv[2], argv[3], float(argv[4])
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if mode == "full":
            _unshare(libc)
            print("unshared", flush=True)
            if sys.stdin.readline().strip() != "mapped":
                return 1
        elif mode == "single":
            _unshare(libc)
            _map_single(int(argv[5]), int(argv[6]))
        elif mode != "hold":
            print(f"unknown mode {mode!r}", file=sys.stderr)
            return 2
    except OSError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    if os.fork():  # the starter reaps this one; the pause process is its child's
        os._exit(0)
    os.setsid()
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(NAME), 0, 0, 0)
    print(f"ready {os.getpid()}", flush=True)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.chdir("/")
    _hold(pid_file, lock_file, interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
