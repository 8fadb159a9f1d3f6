"""The build cache: which layer a build step made, keyed like BuildKit's cache.

A step's key is a digest of its parent's key, the instruction after expansion, the build args
it sees and, for COPY/ADD, a checksum of the selected files (metadata and content, never
mtimes), so the first changed step misses and every later one follows. Entries are small JSON
files under ``<store>/buildcache/``; the layer blobs themselves live in the store.

Concurrency: a step runs under a file lock on its key, so N builds of one Dockerfile started at
once (xdist workers, two pytest runs) run each step once; the others wait and then hit. An
entry is written (atomically) only after its step completed, so a failed step leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

__all__ = ["BuildCache", "file_checksum", "step_key"]


def step_key(parent: str, *parts: Any) -> str:
    """The cache key of a step: ``parent``'s key and everything that decides its result."""
    payload = json.dumps([parent, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


def file_checksum(entries: Iterable[tuple[str, str | os.PathLike[str]]]) -> str:
    """A checksum of files as COPY sees them: name, type, mode, owner, content, link target.

    ``entries``: (name in the copy, real path) pairs; mtimes are left out on purpose, as in
    BuildKit, so touching a file does not invalidate the cache.
    """
    digest = hashlib.sha256()
    for name, path in entries:
        st = os.lstat(path)
        digest.update(f"{name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                      f"{st.st_uid}:{st.st_gid}\0".encode("utf-8", "surrogateescape"))
        if stat.S_ISLNK(st.st_mode):
            digest.update(os.fsencode(os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


class BuildCache:
    """Step results by key under ``root`` (``<store root>/buildcache``)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / "steps" / key.removeprefix("sha256:")

    def get(self, key: str) -> dict[str, Any] | None:
        """The recorded result of step ``key``, or None."""
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, result: dict[str, Any]) -> None:
        """Record a completed step's result (atomically: readers never see half of it)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, sort_keys=True))
        os.replace(tmp, path)

    def forget(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold step ``key``'s lock: whoever holds it runs the step, the rest wait."""
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / (key.removeprefix("sha256:")[:32] + ".lock"))):
            yield
