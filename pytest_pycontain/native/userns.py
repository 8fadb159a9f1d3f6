"""Rootless mode: the engine's own process enters a user namespace (and a mount namespace of
its own) once, before it starts any thread; everything it does from then on -- the zygote, the
shims, overlay mounts, the networks' namespaces, the unpacking of layers -- runs as root of
that namespace, with the same code as root mode.

Why this process and not only its helpers: the engine's threads hold the networks' namespaces
and connect published ports from inside them, and joining a namespace owned by a user namespace
takes a capability in it. The mapping (``idmap.plan``) is the user as root plus, where the user
has them, 65536 subordinate ids written by the setuid ``newuidmap``/``newgidmap`` (as Podman and
rootless Docker do); else the process maps its one id itself.
"""

from __future__ import annotations

import os
import subprocess
import threading

from ..errors import EngineUnavailable
from ..idmap import Mapping, current_map, host_uid, in_user_namespace, plan, user_name
from . import syscalls as sc

CLONE_NEWUSER = 0x10000000

__all__ = ["enter", "enter_for_children", "entered"]

INHERITED = "PYCONTAIN_USERNS"  # the namespace (/proc/self/ns/user) an engine entered

ALTERNATIVES = ("; the native engine needs root or a user namespace of its own (rootless mode), "
                "or run containers through the Docker backend: --pycontain-backend=docker")

_entered: list[Mapping] = []  # the mapping this process entered (at most one, for its life)


def entered() -> Mapping | None:
    """The mapping this process entered, or inherited from the process that entered it for
    its children (``enter_for_children``: pytest-xdist's controller for its workers)."""
    if not _entered and os.environ.get(INHERITED) and os.environ[INHERITED] == _namespace():
        uids, gids = current_map("uid"), current_map("gid")
        uid = host_uid()
        _entered.append(Mapping(user_name(uid), uid, gids[0].outside, uids, gids,
                                full=len(uids) > 1))
    return _entered[0] if _entered else None


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
        return threading.active_count()


def enter(mapping: Mapping | None = None) -> Mapping:
    """Enter a user and mount namespace with ``mapping`` (``idmap.plan()`` by default) and
    return it; a second call returns the first mapping. Raises ``EngineUnavailable`` naming
    the cause and the fix when the kernel or the host says no."""
    if entered() is not None:
        return _entered[0]
    if in_user_namespace() and os.geteuid() == 0:
        raise EngineUnavailable(
            "this process already runs as root of a user namespace it did not make "
            "(podman unshare, rootlesskit, a container), so it cannot make a mapping of its "
            "own; run it as the user itself" + ALTERNATIVES)
    mapping = plan() if mapping is None else mapping
    threads = _threads()
    if threads > 1:
        names = ", ".join(t.name for t in threading.enumerate())
        raise EngineUnavailable(
            f"rootless mode enters a user namespace, which a process can do only while it has "
            f"one thread; this one has {threads} ({names}): make the engine before starting "
            "threads (the plugin does so on first use of a fixture)" + ALTERNATIVES)
    helper = None
    if mapping.full:
        # newuidmap must run outside the namespace: started now, it waits for our word
        script = ('read _ && newuidmap "$0" ' + " ".join(r.line() for r in mapping.uids)
                  + ' && newgidmap "$0" ' + " ".join(r.line() for r in mapping.gids))
        helper = subprocess.Popen(["sh", "-c", script, str(os.getpid())],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
    try:
        sc.unshare(CLONE_NEWUSER | sc.CLONE_NEWNS)
    except OSError as exc:
        if helper is not None:
            helper.kill()
            helper.wait()
        raise EngineUnavailable(f"cannot make a user namespace: {exc} (`pycontain info` "
                                "says what this host needs)" + ALTERNATIVES) from exc
    if helper is not None:
        _, err = helper.communicate(b"go\n")
        if helper.returncode != 0:
            raise EngineUnavailable(
                "newuidmap/newgidmap could not write the user namespace's id mapping "
                f"({mapping.describe()}): {err.decode(errors='replace').strip()}"
                + ALTERNATIVES)
    else:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(mapping.uids[0].line())
        with open("/proc/self/gid_map", "w") as f:
            f.write(mapping.gids[0].line())
    # we are root of the new namespace now; its mounts stay ours
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    _entered.append(mapping)
    # children (pytester's subprocess runs, xdist's workers, the pycontain command a test
    # runs) are root here too: this tells their engines the namespace is rootless mode's
    os.environ[INHERITED] = _namespace()
    return mapping
