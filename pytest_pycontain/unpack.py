"""Unpacking a layer into a directory, safely, and removing trees without following links.

Layers come from registries and archives we do not control: every write goes through file
descriptors opened with ``O_NOFOLLOW`` below the destination, ``..`` and hard links out of it
are refused, device nodes are skipped, and OCI whiteouts become overlayfs whiteouts. The
uncompressed stream is hashed on the way through, against the layer's diff_id.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import queue
import shutil
import stat
import tarfile
import threading
import zlib
from pathlib import Path
from typing import IO, BinaryIO

from .errors import LayerError
from .idmap import add_ids_command, current_map, host_uid, in_user_namespace, user_name

CHUNK = 1 << 20


def remove_tree(path: Path) -> None:
    """Remove ``path`` whatever it is (file, tree with read-only dirs), never following links."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink()
        return
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_tree_at(parent, path.name)
    finally:
        os.close(parent)



class _ReadAhead:
    """A read-only stream filled by a thread of its own that decompresses and hashes (the
    layer's diff_id) while the caller extracts: zlib and hashlib release the GIL, so the two
    overlap on two cores (unpacking the bases is a first build's largest cost). The thread's
    errors are raised by the next :meth:`read`; :meth:`close` stops and joins it."""

    def __init__(self, stream: IO[bytes], depth: int = 4):
        self.hasher = hashlib.sha256()
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._buf = b""
        self._pos = 0
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True,
                                        name="pycontain-unpack")
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        try:
            while not self._stop.is_set():
                data = stream.read(CHUNK)
                self.hasher.update(data)
                self._put(data)  # b"": the end
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        want = size
        while size < 0 or want > 0:
            if self._pos >= len(self._buf):
                if self._done:
                    break
                item = self._queue.get()
                if isinstance(item, BaseException):
                    self._done = True
                    raise item
                if not item:
                    self._done = True
                    break
                self._buf, self._pos = item, 0
            left = len(self._buf) - self._pos
            take = left if size < 0 else min(want, left)
            parts.append(self._buf[self._pos:self._pos + take])
            self._pos += take
            want -= take
        return b"".join(parts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _decompressed(raw: BinaryIO, where: str) -> IO[bytes]:
    magic = raw.read(4)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard
        except ImportError:
            raise LayerError(f"{where}: zstd-compressed layers are unsupported here; install "
                             "the 'zstandard' package") from None
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


def unpack_layer(blob: Path, dest: Path, *, diff_id: str | None = None) -> list[str]:
    """Unpack layer ``blob`` (tar, gzip or zstd) into the empty directory ``dest``, safely.

    Nothing is written outside ``dest``: ``..`` that climbs out and hard links to paths outside
    are refused with ``LayerError``, absolute names are taken relative to ``dest``, parents
    are never followed through symlinks (an entry written through one is refused), device nodes
    are skipped (a container gets a fresh ``/dev``). Whiteouts become overlayfs whiteouts.
    Returns the names it skipped. Verifies ``diff_id`` over the uncompressed stream.
    """
    where = f"layer {diff_id or blob.name}"
    with blob.open("rb") as raw:
        hashing = _ReadAhead(_decompressed(raw, where))
        try:
            extractor = _Extractor(dest, where)
            try:
                with tarfile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[arg-type]
                    for member in tar:
                        extractor.add(member, tar)
                while hashing.read(CHUNK):
                    pass
                extractor.finish()
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise LayerError(f"{where}: corrupt or truncated layer: {exc}") from exc
            finally:
                extractor.close()
        finally:
            hashing.close()
    if diff_id is not None and "sha256:" + hashing.hasher.hexdigest() != diff_id:
        raise LayerError(f"{where}: uncompressed content hashes to "
                         f"sha256:{hashing.hasher.hexdigest()}, not its diff_id {diff_id}")
    os.chmod(dest, 0o755)
    return extractor.skipped


OPAQUE_TRUSTED = "trusted.overlay.opaque"
OPAQUE_USER = "user.overlay.opaque"


def single_id_namespace() -> bool:
    """Whether this process is root of a user namespace that maps one id only (rootless
    without subordinate ids): files can belong to root there and to nobody else."""
    ranges = current_map()
    return in_user_namespace() and len(ranges) == 1 and ranges[0].count == 1


class _Extractor:
    """Writes tar members below one directory, only through file descriptors opened with
    ``O_NOFOLLOW`` from that directory, so no symlink can redirect a write."""

    def __init__(self, dest: Path, where: str):
        self.where = where
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.privileged = os.geteuid() == 0
        # in a user namespace (rootless) trusted.* is out of reach: overlayfs mounts there
        # with userxattr and reads user.overlay.*
        self.opaque_key = OPAQUE_USER if in_user_namespace() else OPAQUE_TRUSTED
        self.single_id = single_id_namespace()
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []
        self.skipped: list[str] = []
        self._cached: tuple[tuple[str, ...], int] | None = None

    def _parent(self, name: str, parts: list[str]) -> int:
        """The fd of the last entry's parent when it is the same (tars go dir by dir)."""
        key = tuple(parts)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        fd = self.open_dir(name, parts)
        self._forget()
        self._cached = (key, fd)
        return fd

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def close(self) -> None:
        self._forget()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def refuse(self, name: str, why: str) -> LayerError:
        return LayerError(f"{self.where}: refusing entry {name!r}: {why}")

    def clean(self, name: str) -> list[str]:
        if len(name.encode("utf-8", "surrogateescape")) > 4095:
            raise self.refuse(name[:80] + "...", "name longer than 4095 bytes")
        parts: list[str] = []
        for part in name.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise self.refuse(name, "'..' climbs out of the layer")
                parts.pop()
                continue
            if len(part.encode("utf-8", "surrogateescape")) > 255:
                raise self.refuse(name[:80] + "...", "a path component is longer than 255 bytes")
            parts.append(part)
        return parts

    def open_dir(self, name: str, parts: list[str], create: bool = True) -> int:
        """An fd of directory ``parts`` below the root, made if missing, never via a symlink."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    child = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise self.refuse(name, f"{'/'.join(parts)} is not in this layer") \
                            from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, flags, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self.refuse(name, f"{part!r} on its path is a symlink or not a "
                                                "directory; it would be written through it") \
                            from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _remove(self, parent: int, leaf: str, keep_dir: bool = False) -> None:
        try:
            st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            _remove_tree_at(parent, leaf)
            if self._cached is not None and self._cached[1] != parent:
                self._forget()  # the cached directory may have been inside the removed one
        else:
            os.unlink(leaf, dir_fd=parent)

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = member.name
        parts = self.clean(name)
        if not parts:
            return  # the layer's root directory itself
        leaf = parts[-1]
        parent = self._parent(name, parts[:-1])
        try:
            self._add(member, tar, name, parts, leaf, parent)
        except LayerError:
            raise
        except OSError as exc:
            raise LayerError(f"{self.where}: cannot unpack {name!r}: {exc}") from exc

    def _add(self, member: tarfile.TarInfo, tar: tarfile.TarFile, name: str,
             parts: list[str], leaf: str, parent: int) -> None:
        if self.single_id and (member.uid, member.gid) != (0, 0):
            user = user_name(host_uid())
            raise LayerError(
                f"{self.where}: {name!r} belongs to uid {member.uid} gid {member.gid}, and "
                f"rootless mode without subordinate ids maps only root (uid {host_uid()}): "
                f"/etc/subuid and /etc/subgid have no entry for {user}; add one (as root) "
                f"with: {add_ids_command(user)}")
        if leaf == ".wh..wh..opq":
            self._xattr(parent, self.opaque_key, b"y", name)
            return
        if leaf.startswith(".wh..wh."):
            return  # aufs bookkeeping, meaningless to overlayfs
        if leaf.startswith(".wh."):
            target = leaf[4:]
            self._remove(parent, target)
            try:
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
            except PermissionError as exc:
                raise LayerError(f"{self.where}: whiteout {name!r} needs a 0/0 character "
                                 "device, which only root can make") from exc
            return
        mode = member.mode & 0o7777
        if member.isdir():
            self._remove(parent, leaf, keep_dir=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf, 0o700, dir_fd=parent)
            self.dirs.append((parts, member))
        elif member.isreg():
            self._remove(parent, leaf)
            fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600, dir_fd=parent)
            with open(fd, "wb", closefd=True) as out:
                source = tar.extractfile(member)
                if source is not None:
                    shutil.copyfileobj(source, out, CHUNK)
                out.flush()
                self._owner(out.fileno(), member)
                os.fchmod(out.fileno(), mode)
                self._xattrs(out.fileno(), member)
                os.utime(out.fileno(), ns=(int(member.mtime * 1e9),) * 2)
        elif member.issym():
            self._remove(parent, leaf)
            os.symlink(member.linkname, leaf, dir_fd=parent)
            if self.privileged:
                os.chown(leaf, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(leaf, ns=(int(member.mtime * 1e9),) * 2, dir_fd=parent,
                     follow_symlinks=False)
        elif member.islnk():
            try:
                target = self.clean(member.linkname)
                if not target:
                    raise self.refuse(name, "hard link to the layer's root")
                target_fd = self.open_dir(name, target[:-1], create=False)
            except LayerError as exc:
                raise self.refuse(name, f"hard link to {member.linkname!r}, which is outside "
                                        "this layer or behind a symlink") from exc
            try:
                try:
                    st = os.stat(target[-1], dir_fd=target_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise self.refuse(name, f"hard link to {member.linkname!r}, which is not "
                                            "in this layer") from None
                if stat.S_ISDIR(st.st_mode):
                    raise self.refuse(name, f"hard link to directory {member.linkname!r}")
                if (target[:-1], target[-1]) == (parts[:-1], leaf):
                    return
                self._remove(parent, leaf)
                os.link(target[-1], leaf, src_dir_fd=target_fd, dst_dir_fd=parent,
                        follow_symlinks=False)
            finally:
                os.close(target_fd)
        elif member.isfifo():
            self._remove(parent, leaf)
            os.mkfifo(leaf, mode, dir_fd=parent)
            if self.privileged:
                os.chown(leaf, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        elif member.ischr() or member.isblk():
            self.skipped.append(name)  # a container's /dev is made fresh; never a host device
        else:
            self.skipped.append(name)

    def _owner(self, fd: int, member: tarfile.TarInfo) -> None:
        if self.privileged:
            os.fchown(fd, member.uid, member.gid)

    def _xattr(self, fd: int, key: str, value: bytes, name: str) -> None:
        try:
            os.setxattr(fd, key, value)
        except OSError as exc:
            raise LayerError(f"{self.where}: cannot mark {name!r} opaque ({key}): {exc}") \
                from exc

    @staticmethod
    def _xattrs(fd: int, member: tarfile.TarInfo) -> None:
        for key, value in (member.pax_headers or {}).items():
            if key.startswith("SCHILY.xattr."):
                with contextlib.suppress(OSError):
                    os.setxattr(fd, key[len("SCHILY.xattr."):],
                                value.encode("utf-8", "surrogateescape"))

    def finish(self) -> None:
        """Set directories' owner, mode and mtime last (writing into them changes mtime)."""
        for parts, member in reversed(self.dirs):
            try:
                fd = self.open_dir(member.name, parts, create=False)
            except LayerError:
                continue  # replaced by a later entry
            try:
                self._owner(fd, member)
                os.fchmod(fd, member.mode & 0o7777)
                self._xattrs(fd, member)
                os.utime(fd, ns=(int(member.mtime * 1e9),) * 2)
            finally:
                os.close(fd)


def _remove_tree_at(parent: int, name: str) -> None:
    """Remove directory ``name`` below ``parent`` without following any symlink."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=parent)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o700)
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _remove_tree_at(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
