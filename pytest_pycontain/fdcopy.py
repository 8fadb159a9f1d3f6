"""Copying a file tree between two open directories, never following a symlink on either side.

Both ends may be changed by someone else while we copy: a container's root (``copy_to``) or a
host directory that an earlier ``copy_from`` filled with the container's symlinks. Every step
is relative to a directory descriptor with no-follow flags, so a symlink is copied as a symlink
and one found (or swapped in) where we write is replaced, never written through, as ``docker
cp`` extracts. Portable (no ``O_PATH``): the Docker backend extracts through it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass


@dataclass
class Location:
    """An entry named ``name`` in the directory open as ``dir_fd`` (which the caller closes);
    ``name`` is never a symlink that was followed to get here, and "" means the root itself."""

    dir_fd: int
    name: str
    path: str  # what the user named, for messages

    def lstat(self) -> os.stat_result | None:
        try:
            if not self.name:
                return os.stat(self.dir_fd)
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        os.close(self.dir_fd)


_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy(source: Location, target: Location) -> None:
    """Copy the entry at ``source`` (a file, a symlink as a symlink, or a directory with all
    below it) to ``target``, merging into a directory already there and replacing anything
    else, as ``docker cp`` extracts. Modes and times are kept; owners are the caller's.
    Sockets, fifos and devices are left out."""
    st = source.lstat()
    if st is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), source.path)
    _copy_entry(source.dir_fd, source.name, st, target.dir_fd, target.name)


def _copy_entry(src_dir: int, name: str, st: os.stat_result, dst_dir: int,
                dst_name: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        src = os.open(name or ".", _DIR, dir_fd=src_dir)
        try:
            dst = _make_dir(dst_dir, dst_name)
            try:
                for child in sorted(os.listdir(src)):
                    try:
                        child_st = os.stat(child, dir_fd=src, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # gone while we copied (the container runs)
                    _copy_entry(src, child, child_st, dst, child)
                os.chmod(dst, stat.S_IMODE(st.st_mode))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
    elif stat.S_ISLNK(st.st_mode):
        link = os.readlink(name, dir_fd=src_dir)
        _clear(dst_dir, dst_name)
        os.symlink(link, dst_name, dir_fd=dst_dir)
        os.utime(dst_name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir,
                 follow_symlinks=False)
    elif stat.S_ISREG(st.st_mode):
        try:
            src = os.open(name, _READ, dir_fd=src_dir)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a symlink while we copied: not followed
                return
            raise
        try:
            now = os.fstat(src)
            if not stat.S_ISREG(now.st_mode):
                return
            _clear(dst_dir, dst_name)
            dst = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
            try:
                os.set_blocking(src, True)
                _copy_bytes(src, dst, now.st_size)
                os.chmod(dst, stat.S_IMODE(now.st_mode))
                os.utime(dst, ns=(now.st_atime_ns, now.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)


def _copy_bytes(src: int, dst: int, size: int) -> None:
    offset = 0
    try:
        while True:
            sent = os.sendfile(dst, src, offset, max(size - offset, 1 << 20))
            if sent == 0:
                return
            offset += sent
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK) or offset:
            raise
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)


def _make_dir(dir_fd: int, name: str) -> int:
    """An open directory ``name`` in ``dir_fd``: the one there, or a new one replacing any
    non-directory (a symlink there is replaced, never followed)."""
    if not name:
        return os.open(".", _DIR, dir_fd=dir_fd)
    for _attempt in range(3):
        try:
            return os.open(name, _DIR, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            _clear(dir_fd, name)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
    raise OSError(errno.EAGAIN, f"{name} keeps changing while it is copied to")


def _clear(dir_fd: int, name: str) -> None:
    """Remove whatever ``name`` is in ``dir_fd`` (a directory with all below it)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    try:
        fd = os.open(name, _DIR, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped meanwhile: unlink that
            os.unlink(name, dir_fd=dir_fd)
            return
        raise
    try:
        for child in os.listdir(fd):
            _clear(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
