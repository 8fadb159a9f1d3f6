"""Volumes: directories under the engine's state that outlive a container's overlay.

A volume is ``<state>/volumes/<dir>/_data``; ``_data`` is what containers see, so that its
owner and mode can be the image's (a new volume takes the image's content at its path, and
that directory's owner and mode, when first mounted: ``seed``). Each volume directory is
journalled before it is made: an anonymous one under its container (removed with it, reaped
with a dead owner), a named one under its own key (removed with the factory's scope or the
engine, reaped with a dead owner); a reused container's named ones under the container, so
that its keeper keeps them and they go with it.

A named volume that a kept container uses stays for it, as Docker's stays while a container
uses it: each container journals its use of a named volume (``USE``), its keeper carries that
use and a record of its own to remove the volume, and whoever removes it (the factory, the
engine, the reaper, the keeper's end) leaves it while another live owner's container still
uses it (``undo_volume``): the last one out removes it.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from . import state

USE = "volume-use"  # a container uses the named volume at ``path`` (no undo: a fact)
UNDO = "pytest_pycontain.native.volumes:undo_volume"


class NativeVolume:
    """A volume of the native engine: ``name`` is the user's (or, anonymous, 64 hex digits);
    ``data`` the directory bound into containers."""

    def __init__(self, name: str, directory: Path, journal: Any, key: str | None,
                 shared: bool = False):
        self.name = name
        self.directory = directory
        self._journal = journal
        self._key = key  # the journal's key for a named volume; None: its container's
        self.shared = shared  # outlives every engine (``shared``): only remove() deletes it
        self.removed = False

    @property
    def data(self) -> Path:
        return self.directory / "_data"

    @classmethod
    def create(cls, root: Path, journal: Any, name: str | None = None,
               container: str | None = None) -> NativeVolume:
        """A new, empty volume: named (``container`` None), or its container's own (an
        anonymous one, or a named one of a reused container), which goes with it."""
        token = os.urandom(32).hex()
        directory = root / (f"{name}-{token[:8]}" if name else token)
        key = None if container else f"volume:{directory.name}"
        if container:
            journal.record("dir", container=container, path=str(directory))
        else:
            journal.record("volume", container=key, path=str(directory), owner=journal.owner,
                           state=str(journal.root), handler=UNDO)
        (directory / "_data").mkdir(parents=True, mode=0o755)
        return cls(name or token, directory, journal, key)

    def used_by(self, container: str) -> None:
        """``container`` mounts it (journalled: a keeper of it keeps the volume too)."""
        if self._key is not None:
            self._journal.record(USE, container=container, path=str(self.directory))

    @classmethod
    def open_shared(cls, root: Path, name: str, *, create: bool) -> NativeVolume | None:
        """The volume ``name`` that outlives every engine, at ``<root>/shared/<name>`` (made
        when ``create``, else None if it is not there). Nothing journals it: it is meant to
        stay, as a Docker volume does, until ``remove()``."""
        directory = root / "shared" / name
        if not (directory / "_data").is_dir():
            if not create:
                return None
            (directory / "_data").mkdir(parents=True, mode=0o755, exist_ok=True)
        return cls(name, directory, None, None, shared=True)

    def check_subpath(self, subpath: str, where: str) -> str:
        """``subpath``, once it is known to be a directory of this volume, resolved inside
        it (a symlink the container planted resolves within the volume, as the mount will)."""
        from ..errors import ConfigError
        from .inroot import open_dir

        top = os.open(self.data, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.close(open_dir(top, subpath))
        except OSError:
            raise ConfigError(f"{where}: subpath {subpath!r} does not exist in volume "
                              f"{self.name!r} (as Docker, it is not made)") from None
        finally:
            os.close(top)
        return subpath

    def remove(self) -> None:
        """Delete it and its content (named volumes; anonymous ones go with their container),
        unless a kept container still uses it: then its keeper does, at its end."""
        if self.removed:
            return
        self.removed = True
        if self.shared:
            state.undo_one({"kind": "dir", "path": str(self.directory)})
            return
        if self._key is None:
            return
        for record in self._journal.records(self._key):
            state.undo_one(record)
        self._journal.record("removed", container=self._key)

    def __repr__(self) -> str:
        return f"<NativeVolume {self.name}>"


def hand_over(journal: Any, keeper: Any, container: str) -> None:
    """``container`` is kept: its keeper's journal takes its uses of named volumes, and a
    record to remove each when the keeper ends (unless another live owner uses it then)."""
    for use in journal.records(container):
        if use["kind"] == USE:
            keeper.record("volume", container=container, path=use["path"],
                          owner=keeper.owner, state=str(keeper.root), handler=UNDO)


def undo_volume(record: dict[str, Any]) -> None:
    """Remove a named volume for its owner (``record["owner"]``) unless a container of another
    live owner still uses it (that owner's end removes it, then)."""
    path = record["path"]
    for owner, records in state.live_journals(record["state"]):
        if owner == record["owner"]:
            continue
        gone = {r["container"] for r in records if r["kind"] in ("handed", "removed")}
        if any(r["kind"] == USE and r.get("path") == path and r["container"] not in gone
               for r in records):
            return
    state.undo_one({"kind": "dir", "path": path})


def seed(image_dir: str, volume: str) -> None:
    """Copy the image's ``image_dir`` into an empty ``volume`` as Docker does for a new volume:
    content, owners, modes and symlinks (never followed); ``volume`` takes the directory's own
    owner and mode. Devices are not copied (the container could not open them anyway)."""
    info = os.lstat(image_dir)
    for name in os.listdir(image_dir):
        _copy(os.path.join(image_dir, name), os.path.join(volume, name))
    os.chown(volume, info.st_uid, info.st_gid)
    os.chmod(volume, stat.S_IMODE(info.st_mode))


def _copy(source: str, target: str) -> None:
    info = os.lstat(source)
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISDIR(mode):
        os.mkdir(target, 0o700)
        for name in os.listdir(source):
            _copy(os.path.join(source, name), os.path.join(target, name))
    elif stat.S_ISREG(mode):
        shutil.copyfile(source, target, follow_symlinks=False)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(target)
    else:
        return
    os.lchown(target, info.st_uid, info.st_gid)
    if not stat.S_ISLNK(mode):
        os.chmod(target, stat.S_IMODE(mode))
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
