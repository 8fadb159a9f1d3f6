"""Make a layer tar from a directory: a RUN's overlay upper dir, or a COPY's staged files.

The tar is what BuildKit's differ writes: entries in a stable depth-first order sorted by
name (so the same tree always gives the same diff_id), owners, modes, link targets and
extended attributes exact, hard links kept as links, mtimes clamped to SOURCE_DATE_EPOCH when
one is given. Overlayfs records deletions as 0/0 character devices and opaque directories as a
``trusted.overlay.opaque`` xattr; in an image they are ``.wh.<name>`` files and
``.wh..wh..opq`` (the OCI whiteout convention), which is what :func:`write_tar` emits.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["OPAQUE", "WHITEOUT_PREFIX", "LayeredFS", "add_dir_layer", "is_whiteout", "write_tar"]

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")

Owner = tuple[int, int]


def is_whiteout(st: os.stat_result) -> bool:
    """An overlayfs whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in names:
        with contextlib.suppress(OSError):
            found[name] = os.getxattr(path, name, follow_symlinks=False)
    return found


def _opaque(attrs: Mapping[str, bytes]) -> bool:
    return any(attrs.get(prefix + "opaque") == b"y" for prefix in _OVERLAY_XATTRS)


def _sorted_entries(directory: str) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return sorted(it, key=lambda e: os.fsencode(e.name))


def write_tar(root: Path | str, dest: Path | str, *, epoch: int | None = None,
              overlay: bool = False, exclude: Iterable[str] = (),
              owners: Mapping[str, Owner] | Callable[[str], Owner | None] | None = None) -> Path:
    """Write the tree under ``root`` as a layer tar at ``dest``; return ``dest``.

    ``overlay``: ``root`` is an overlayfs upper dir, whose whiteouts and opaque markers become
    OCI whiteouts. ``exclude``: relative paths left out with everything below them (mount
    stubs a container made). ``owners``: relative path -> (uid, gid) replacing the file's own
    (COPY --chown without chowning the staging files).
    """
    root = os.fspath(root)
    skip = {p.strip("/") for p in exclude}
    links: dict[tuple[int, int], str] = {}
    owner_of: Callable[[str], Owner | None]
    if owners is None:
        owner_of = lambda _rel: None  # noqa: E731
    elif callable(owners):
        owner_of = owners
    else:
        owner_of = owners.get

    def clamp(mtime: float) -> int:
        value = int(mtime)
        return min(value, epoch) if epoch is not None else value

    def header(rel: str, st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = owner_of(rel) or (st.st_uid, st.st_gid)
        info.uname = info.gname = ""
        info.mtime = clamp(st.st_mtime)
        return info

    with open(dest, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                                               encoding="utf-8", errors="surrogateescape") as tar:

        def add(info: tarfile.TarInfo, attrs: Mapping[str, bytes], data: Any = None) -> None:
            for key, value in sorted(attrs.items()):
                if key.startswith(_OVERLAY_XATTRS):
                    continue
                info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
            tar.addfile(info, data)

        def visit(directory: str, prefix: str) -> None:
            for entry in _sorted_entries(directory):
                rel = prefix + entry.name
                if rel in skip:
                    continue
                path = entry.path
                st = os.lstat(path)
                if overlay and is_whiteout(st):
                    info = header(prefix + WHITEOUT_PREFIX + entry.name, st)
                    info.type = tarfile.REGTYPE
                    add(info, {})
                    continue
                attrs = _xattrs(path)
                info = header(rel, st)
                if stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    add(info, attrs)
                    if overlay and _opaque(attrs):
                        marker = header(rel + "/" + OPAQUE, st)
                        marker.type = tarfile.REGTYPE
                        marker.mode = 0o644 & info.mode
                        add(marker, {})
                    visit(path, rel + "/")
                elif stat.S_ISLNK(st.st_mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(path)
                    add(info, attrs)
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in links:
                        info.type = tarfile.LNKTYPE
                        info.linkname = links[key]
                        add(info, attrs)
                        continue
                    links[key] = rel
                    info.size = st.st_size
                    with open(path, "rb") as data:
                        add(info, attrs, data)
                elif stat.S_ISFIFO(st.st_mode):
                    info.type = tarfile.FIFOTYPE
                    add(info, attrs)
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                    info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                    add(info, attrs)
                # sockets are not part of an image (Docker skips them too)

        visit(root, "")
    return Path(dest)


def add_dir_layer(store: Any, root: Path | str, *, epoch: int | None = None,
                  overlay: bool = False, exclude: Iterable[str] = (),
                  owners: Mapping[str, Owner] | Callable[[str], Owner | None] | None = None,
                  tmp_dir: Path | str | None = None) -> Any:
    """Tar ``root`` (see :func:`write_tar`) into ``store``; return its ``Layer``."""
    fd, name = tempfile.mkstemp(prefix="layer-", suffix=".tar", dir=tmp_dir)
    os.close(fd)
    try:
        write_tar(root, name, epoch=epoch, overlay=overlay, exclude=exclude, owners=owners)
        return store.add_layer(Path(name))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


# ---------------------------------------------------------------------------------------------
# Reading an image's file tree without mounting it
# ---------------------------------------------------------------------------------------------


class LayeredFS:
    """The merged view of unpacked layer dirs (bottom first), read without mounting.

    Whiteouts (0/0 char devices) hide what is below, opaque directories hide the directories
    below them, and a non-directory in an upper layer hides everything under its path below,
    exactly as overlayfs merges them. Symlinks resolve inside the root, never outside it.
    """

    def __init__(self, layers: Iterable[Path | str]):
        self.layers = [os.fspath(p) for p in layers]

    @staticmethod
    def _parts(path: str) -> list[str]:
        parts: list[str] = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return parts

    def find(self, path: str) -> tuple[str, os.stat_result] | None:
        """(real path, lstat) of ``path`` in the topmost layer that has it, no symlinks followed
        (except that each parent must be a directory); None when absent."""
        parts = self._parts(path)
        if not parts:
            top = self.layers[-1] if self.layers else None
            return (top, os.lstat(top)) if top else None
        for layer in reversed(self.layers):
            real = layer
            hidden = False
            for index, part in enumerate(parts):
                real = os.path.join(real, part)
                try:
                    st = os.lstat(real)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if is_whiteout(st):
                    return None
                last = index == len(parts) - 1
                if last:
                    return real, st
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a file here hides the rest of the path below
                if _opaque(_xattrs(real)):
                    hidden = True
            if hidden:
                return None  # an opaque directory on the path hides the layers below
        return None

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """``path`` with every symlink on it resolved inside the root (absolute, normalised)."""
        parts = self._parts(path)  # the path itself is cleaned first, as Docker cleans it
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":  # from a link's target: up from where the link is, not past /
                if done:
                    done.pop()
                continue
            candidate = "/" + "/".join([*done, part])
            found = self.find(candidate)
            if found and stat.S_ISLNK(found[1].st_mode) and (parts or follow_last):
                hops += 1
                if hops > 40:
                    raise OSError(40, f"too many levels of symbolic links: {path}")
                target = os.readlink(found[0])
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/" + "/".join(done)

    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path`` across the layers, sorted."""
        parts = self._parts(path)
        names: set[str] = set()
        gone: set[str] = set()
        for layer in reversed(self.layers):
            real = os.path.join(layer, *parts) if parts else layer
            try:
                st = os.lstat(real)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISDIR(st.st_mode):
                break
            for entry in os.scandir(real):
                if entry.name in names or entry.name in gone:
                    continue
                if is_whiteout(entry.stat(follow_symlinks=False)):
                    gone.add(entry.name)
                else:
                    names.add(entry.name)
            if _opaque(_xattrs(real)):
                break
        return sorted(names)

    def read_text(self, path: str) -> str | None:
        found = self.find(self.resolve(path))
        if not found or not stat.S_ISREG(found[1].st_mode):
            return None
        with open(found[0], encoding="utf-8", errors="replace") as file:
            return file.read()
