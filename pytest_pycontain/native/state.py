"""Crash-safe bookkeeping: every resource is written down before it is made.

There is no daemon, so a SIGKILLed pytest cannot clean up after itself. Instead each owner (an
engine, or the keeper of a kept container) holds an exclusive ``flock`` on
``owners/<owner>.lock`` for its whole life and appends one JSON line per resource to
``owners/<owner>.journal`` *before* making it. ``reap()`` takes the lock of every owner it can:
a lock it gets belongs to a dead owner, whose journal is undone newest first. A live owner's
lock cannot be taken, so its resources are never touched. Directories of files kept per owner
(``netrecords/<owner>/``, see ``OWNER_DIRS``) are swept by the same rule, journalled or not.

Undo is idempotent (a resource already gone is fine), so a record written for a resource that
was never made, or reaped twice, does no harm. Other modules add kinds with ``register_undo``
or by naming a handler in the record: ``record(kind, handler="pkg.mod:func", ...)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..procinfo import process_start_time

Record = dict[str, Any]
_UNDO: dict[str, Callable[[Record], None]] = {}

# Directories of files kept per owner (``<root>/<name>/<owner>/``) and the handler that undoes
# one of a dead owner (called with ``{"records_dir": path}``). The owner's journal names such a
# directory once it makes something that needs it, but it may write there first and die, or
# never journal it (a published port without a network): ``reap`` sweeps them all.
OWNER_DIRS: dict[str, str] = {"netrecords": "pytest_pycontain.native.netrecords:undo_record"}


def register_undo(kind: str, undo: Callable[[Record], None]) -> None:
    """Teach ``reap`` how to remove resources of ``kind`` (called with the record)."""
    _UNDO[kind] = undo


class Journal:
    """One owner's lock and its append-only record of what it made."""

    def __init__(self, root: str | os.PathLike, owner: str | None = None):
        self.root = Path(root)
        self.owner = owner or f"{os.getpid()}-{os.urandom(4).hex()}"
        owners = self.root / "owners"
        owners.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock_path = owners / f"{self.owner}.lock"
        self.path = owners / f"{self.owner}.journal"
        self._lock_fd = _take_lock(self.lock_path, block=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                           0o600)
        self._records: list[Record] = read_journal(self.path)
        self._by_container: dict[str | None, list[Record]] = {}
        for entry in self._records:
            self._by_container.setdefault(entry.get("container"), []).append(entry)

    def record(self, kind: str, container: str | None = None, **data: Any) -> Record:
        """Write the record down (one atomic append) and return it."""
        return self.record_all([entry(kind, container, **data)])[0]

    def record_all(self, entries: Sequence[Record]) -> Sequence[Record]:
        """Write records (made with ``entry``) down in one append: resources made together
        cost one write. Each is still written before its resource is made; a crash mid-write
        tears at most the last line, whose resource was not made yet (reading skips it)."""
        if not entries:
            return entries
        os.write(self._fd, "".join(json.dumps(e, sort_keys=True) + "\n"
                                   for e in entries).encode())
        for item in entries:
            self._records.append(item)
            self._by_container.setdefault(item["container"], []).append(item)
        return entries

    def records(self, container: str | None = None) -> list[Record]:
        """What this journal holds (kept in memory too), or only ``container``'s records."""
        if container is None:
            return list(self._records)
        return list(self._by_container.get(container, ()))

    @property
    def lock_fd(self) -> int:
        return self._lock_fd

    def release(self) -> None:
        """Close our descriptors but keep the files: another process (a keeper) that was
        handed the lock's descriptor now owns this journal."""
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def close(self, *, undo: bool = True) -> None:
        """Undo what is still recorded (newest first), then drop the journal and the lock."""
        if self._fd < 0:
            return
        if undo:
            undo_records(self.records())
            for name, handler in OWNER_DIRS.items():  # what was written there unjournalled
                directory = self.root / name / self.owner
                if directory.is_dir():
                    with contextlib.suppress(Exception):
                        undo_one({"kind": name, "records_dir": str(directory),
                                  "handler": handler})
        os.close(self._fd)
        self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        os.close(self._lock_fd)


def entry(kind: str, container: str | None = None, **data: Any) -> Record:
    """One record for ``Journal.record_all``."""
    return {"kind": kind, "container": container, **data}


def _take_lock(path: Path, *, block: bool) -> int:
    """Lock ``path``; retry if a reaper unlinked it between our open and our flock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def read_journal(path: Path) -> list[Record]:
    records = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as file:
        for line in file:
            with contextlib.suppress(ValueError):  # a torn last line from a crash
                records.append(json.loads(line))
    return records


def undo_records(records: list[Record]) -> list[str]:
    """Undo records newest first, skipping containers handed to a keeper; return the errors."""
    handed = {r["container"] for r in records if r["kind"] == "handed"}
    errors = []
    for record in reversed(records):
        if record.get("container") in handed and record["kind"] != "handed":
            continue
        try:
            undo_one(record)
        except Exception as exc:
            errors.append(f"{record['kind']} {record}: {exc}")
    return errors


def undo_one(record: Record) -> None:
    handler = record.get("handler")
    if handler:
        module, _, name = handler.partition(":")
        getattr(importlib.import_module(module), name)(record)
        return
    undo = _UNDO.get(record["kind"])
    if undo is not None:
        undo(record)


def _owners(root: Path) -> Iterator[str]:
    owners = root / "owners"
    names = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(owners):
            stem, _, ext = entry.rpartition(".")
            if ext in ("lock", "journal"):
                names.add(stem)
    yield from sorted(names)


def reap(root: str | os.PathLike) -> list[str]:
    """Remove what dead owners left; return the owners reaped. Live owners are left alone."""
    root = Path(root)
    reaped = [owner for owner in _owners(root) if reap_owner(root, owner)]
    for owner in sweep_owner_dirs(root):
        if owner not in reaped:
            reaped.append(owner)
    return reaped


def sweep_owner_dirs(root: str | os.PathLike) -> list[str]:
    """Undo and remove the per-owner directories (``OWNER_DIRS``) of owners that are not
    alive; returns those owners. A live owner holds its lock from before it writes any."""
    root = Path(root)
    swept = []
    for name, handler in OWNER_DIRS.items():
        try:
            entries = sorted(os.listdir(root / name))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for owner in entries:
            directory = root / name / owner
            if not directory.is_dir() or owner_alive(root, owner):
                continue
            with contextlib.suppress(Exception):
                undo_one({"kind": name, "records_dir": str(directory), "handler": handler})
            if not directory.exists():
                swept.append(owner)
    return sorted(set(swept))


def owner_alive(root: str | os.PathLike, owner: str) -> bool:
    path = Path(root) / "owners" / f"{owner}.lock"
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def live_journals(root: str | os.PathLike) -> Iterator[tuple[str, list[Record]]]:
    """Each live owner and what its journal holds."""
    root = Path(root)
    for owner in _owners(root):
        if owner_alive(root, owner):
            yield owner, read_journal(root / "owners" / f"{owner}.journal")


def containers(root: str | os.PathLike) -> list[Record]:
    """Every container recorded by a live owner, with ``owner``, ``kept`` and ``published``
    (container port -> [host, port]) added."""
    root = Path(root)
    found = []
    for owner in _owners(root):
        if not owner_alive(root, owner):
            continue
        records = read_journal(root / "owners" / f"{owner}.journal")
        gone = {r["container"] for r in records if r["kind"] in ("handed", "removed")}
        published: dict[str, dict[str, list]] = {}
        for record in records:
            if record["kind"] == "ports":
                published.setdefault(record["container"], {}).update(record["published"])
        reuse = {r["container"]: r for r in records if r["kind"] == "reuse"}
        for record in records:
            if record["kind"] == "container" and record["container"] not in gone:
                found.append({**record, "owner": owner, "kept": owner.startswith("keep-"),
                              "published": published.get(record["container"], {}),
                              "reuse": reuse.get(record["container"])})
    return found


def remove_kept(root: str | os.PathLike, container_id: str, timeout: float = 5.0) -> bool:
    """Kill a kept container's keeper and undo its journal; False if there is no such keeper."""
    root = Path(root)
    owner = f"keep-{container_id}"
    journal = root / "owners" / f"{owner}.journal"
    records = read_journal(journal)
    if not records and not (root / "owners" / f"{owner}.lock").exists():
        return False
    for record in records:
        if record["kind"] == "process":
            _kill_process(record)
    deadline = time.monotonic() + timeout
    while True:
        if reap_owner(root, owner):
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"the keeper of {container_id} still holds its lock")
        time.sleep(0.01)


def prune(root: str | os.PathLike, *, kept: bool = False, reused: bool = False) -> list[str]:
    """What ``pycontain prune`` does: reap dead owners; with ``kept``, remove kept containers
    too, with ``reused`` the ones reused across runs. Returns the owners removed."""
    removed = reap(root)
    for record in containers(root):
        wanted = reused if record["reuse"] else kept
        if record["kept"] and wanted and remove_kept(root, record["container"]):
            removed.append(record["owner"])
    return removed


def reap_owner(root: Path, owner: str) -> bool:
    """Undo a dead owner's journal and drop it; False (nothing done) while the owner lives."""
    lock_path = root / "owners" / f"{owner}.lock"
    try:
        fd = _take_lock(lock_path, block=False)
    except (BlockingIOError, PermissionError):
        return False
    try:
        journal = root / "owners" / f"{owner}.journal"
        undo_records(read_journal(journal))
        with contextlib.suppress(FileNotFoundError):
            journal.unlink()
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
    finally:
        os.close(fd)
    return True


# --- the built-in kinds -------------------------------------------------------------------

def _kill_process(record: Record) -> None:
    pid = record["pid"]
    if process_start_time(pid) == record.get("start"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def mounts_under(path: str | os.PathLike) -> list[str]:
    """Mount points at or below ``path`` in our mount namespace, deepest first."""
    prefix = os.fspath(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as file:
        for line in file:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _undo_mount(record: Record) -> None:
    from . import syscalls

    for point in mounts_under(record["path"]):
        with contextlib.suppress(OSError):
            syscalls.umount(point, syscalls.MNT_DETACH)


def _undo_dir(record: Record) -> None:
    path = record["path"]
    if not os.path.lexists(path):
        return
    _undo_mount(record)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        raise OSError(f"could not remove {path}")


def _undo_cgroup(record: Record) -> None:
    path = Path(record["path"])
    if not path.is_dir():
        return
    deadline = time.monotonic() + 2.0
    while True:
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            _remove_children(path)  # a privileged container may make cgroups of its own
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _remove_children(path: Path) -> None:
    """The cgroups under ``path``, deepest first: their processes killed, then removed."""
    for directory, children, _ in os.walk(path, topdown=False):
        for child in children:
            with contextlib.suppress(OSError):
                for pid in Path(directory, child, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(directory, child))


register_undo("process", _kill_process)
register_undo("mount", _undo_mount)
register_undo("dir", _undo_dir)
register_undo("cgroup", _undo_cgroup)
