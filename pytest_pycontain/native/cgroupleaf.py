"""Rootless mode in a delegated cgroup v2: the engine's own process moves into a leaf of it.

systemd delegates a cgroup to the user (``systemd-run --user --scope -p Delegate=yes``, a
user service) with pytest itself inside, and cgroup v2 enables controllers for a cgroup's
children only while it holds no process ("no internal processes"). So, as rootless Podman
and crun do, the engine moves itself into ``<delegated>/pycontain-engine-PID`` before its
pause process, zygote or any helper exists (they are born there too), and its containers'
cgroups go beside that leaf (``<delegated>/pycontain/<id>``, ``cgroups.Limits``). At exit,
the last engine out (no other leaf holds a process of its own, no container cgroup is left)
disables what was enabled in the delegated cgroup's ``cgroup.subtree_control``, moves itself
and the pause process back and removes the leaves: the cgroup is as it was given. Leaves of
dead engines (kill -9) are removed by the next engine that starts or ends there. What the
delegated cgroup's subtree control held first is noted in the runtime directory, once, so
that a killed run's additions are undone by the next.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..idmap import LEAF_PREFIX, delegated_cgroup
from .cgroups import GROUP, read_quietly

__all__ = ["enter", "leave", "leaves"]

SETTLE = 3.0  # seconds the engine's own helpers get to end before it moves back out


def enter(root: str | os.PathLike, runtime: Path,
          pause: Callable[[], int | None]) -> Path | None:
    """Move this process (and the user's pause process, if it waits in the delegated cgroup
    itself) into a leaf of its own of the delegated cgroup under ``root``; the delegated
    cgroup, or None where there is none (not v2, not writable by the user) or the move is
    refused. ``runtime``: the user's runtime directory (the lock and the note live there);
    ``pause``: the live pause process's pid, if any. ``leave`` is registered for exit."""
    parent = delegated_cgroup(root)
    if parent is None:
        return None
    try:
        placed = _enter(parent, runtime, pause)
    except OSError:  # the lock or the note cannot be had: stay where we are
        return None
    if placed:
        atexit.register(leave, parent, runtime, pause)
    return parent if placed else None


def _enter(parent: Path, runtime: Path, pause: Callable[[], int | None]) -> bool:
    leaf = parent / f"{LEAF_PREFIX}{os.getpid()}"
    with _locked(runtime):
        _reap(parent)
        note = _note(runtime, parent)
        if not note.exists():
            with contextlib.suppress(OSError):
                note.write_text(read_quietly(parent / "cgroup.subtree_control"))
        try:
            leaf.mkdir(exist_ok=True)
            _move(os.getpid(), leaf)
        except OSError:
            with contextlib.suppress(OSError):
                leaf.rmdir()
            return False
        held = pause()
        if held is not None and str(held) in _procs(parent):
            with contextlib.suppress(OSError):
                _move(held, leaf)
    return True


def leave(parent: Path, runtime: Path, pause: Callable[[], int | None]) -> bool:
    """The last engine out puts the delegated cgroup back as it was given: whether it did.
    It stays in its leaf (removed by a later engine) while another engine's leaf holds a
    process, a container's cgroup is left (kept ones, another engine's), or its own helpers
    outlive ``SETTLE``."""
    try:
        return _leave(parent, runtime, pause)
    except OSError:  # the runtime directory went (a test's): another engine tidies up
        return False


def _leave(parent: Path, runtime: Path, pause: Callable[[], int | None]) -> bool:
    me = os.getpid()
    with _locked(runtime):
        _reap(parent)
        held = pause()
        ours = {str(me), str(held)}
        mine = parent / f"{LEAF_PREFIX}{me}"
        if any(set(_procs(leaf)) - ours for leaf in leaves(parent) if leaf != mine):
            return False
        try:
            (parent / GROUP).rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # containers' cgroups are left there
            return False
        deadline = time.monotonic() + SETTLE
        while set(_procs(mine)) - ours:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        note = _note(runtime, parent)
        try:
            first = note.read_text().split()
        except OSError:
            first = read_quietly(parent / "cgroup.subtree_control").split()
        now = read_quietly(parent / "cgroup.subtree_control").split()
        added = [c for c in now if c not in first]
        try:
            if added:
                _write(parent / "cgroup.subtree_control", " ".join(f"-{c}" for c in added))
            for leaf in leaves(parent):
                for pid in _procs(leaf):
                    _move(int(pid), parent)
        except OSError:
            return False
        for leaf in leaves(parent):
            with contextlib.suppress(OSError):
                leaf.rmdir()
        with contextlib.suppress(OSError):
            note.unlink()
        return True


def leaves(parent: Path) -> list[Path]:
    """The engines' leaves in ``parent``, live or dead."""
    try:
        return sorted(p for p in parent.iterdir()
                      if p.name.startswith(LEAF_PREFIX) and p.is_dir())
    except OSError:
        return []


def _reap(parent: Path) -> None:
    """Remove the leaves no process is in (their engines ended or were killed)."""
    for leaf in leaves(parent):
        if not _procs(leaf):
            with contextlib.suppress(OSError):
                leaf.rmdir()


def _procs(cgroup: Path) -> list[str]:
    return read_quietly(cgroup / "cgroup.procs").split()


def _write(path: Path, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _move(pid: int, cgroup: Path) -> None:
    """Every thread of ``pid`` into ``cgroup`` (v2: ``cgroup.procs`` moves the whole process)."""
    _write(cgroup / "cgroup.procs", f"{pid}\n")


def _note(runtime: Path, parent: Path) -> Path:
    """Where the delegated cgroup's first subtree control is noted (one file per cgroup)."""
    return runtime / f"cgroup-{hashlib.sha256(str(parent).encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def _locked(runtime: Path) -> Iterator[None]:
    """One engine at a time moves in or out (xdist's workers and pytester's runs share it)."""
    fd = os.open(runtime / "cgroup.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
