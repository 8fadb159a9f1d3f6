"""Paths inside a container's root, resolved and copied without ever leaving it.

``copy_to``/``copy_from`` act on a root the container itself can change while we copy: a
symlink it planted (``/data -> /``, ``x -> ../../../etc``) must resolve as it would inside the
container, never against the host's ``/``, and swapping a directory for a symlink between a
check and a write must not redirect the write (the ``docker cp`` bug class, CVE-2018-15664).
So nothing here follows a path from the host: the destination's parent is opened with
``openat2(RESOLVE_IN_ROOT)`` (Linux 5.6+) or, on older kernels, by a walk of our own, one
``O_NOFOLLOW`` component at a time; everything after is relative to directory descriptors, with
no-follow flags, so a symlink swapped in at the last moment is replaced or refused, not followed.
Copying itself, between two such descriptors, is ``fdcopy``'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import stat

from ..fdcopy import Location

# openat2(2): the same number on every architecture that has it (the generic syscall table).
_SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_HOPS = 40


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)  # libc, as in syscalls.py (no ctypes.util there)
_openat2_works: bool | None = None  # learnt on first use; False on kernels before 5.6


def openat2_available() -> bool:
    """Whether this kernel has openat2 (probed once with a harmless open of ``/``)."""
    global _openat2_works
    if _openat2_works is None:
        fd = _openat2(-100, "/", _PATH_DIR, 0)  # AT_FDCWD
        _openat2_works = fd >= 0
        if fd >= 0:
            os.close(fd)
    return _openat2_works


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    for _attempt in range(8):
        fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), os.fsencode(path),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EPERM):
            return -1  # no openat2 here (or a seccomp filter that hides it): walk instead
        if code != errno.EAGAIN:  # EAGAIN: a rename raced a ".." (the kernel asks to retry)
            raise OSError(code, os.strerror(code), path)
    return -1


def open_dir(root_fd: int, path: str, *, use_openat2: bool | None = None) -> int:
    """An ``O_PATH`` descriptor of directory ``path`` resolved inside ``root_fd`` (symlinks
    followed as the container would follow them; ``..`` stops at the root)."""
    rel = path.strip("/") or "."
    if use_openat2 is None:
        use_openat2 = openat2_available()
    if use_openat2:
        fd = _openat2(root_fd, rel, _PATH_DIR, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        if fd >= 0:
            return fd
    return _walk(root_fd, rel)


def _walk(root_fd: int, path: str) -> int:
    """What openat2(RESOLVE_IN_ROOT) does, for kernels without it: one component at a time,
    each opened with O_NOFOLLOW relative to the one before; a symlink is read and its target
    walked again from the root (absolute) or from where it was (relative)."""
    stack = [os.open(".", _PATH_DIR, dir_fd=root_fd)]
    parts = [p for p in path.split("/") if p and p != "."]
    hops = 0
    try:
        while parts:
            part = parts.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, path) from None
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                hops += 1
                if hops > _MAX_HOPS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts = [p for p in target.split("/") if p and p != "."] + parts
            elif stat.S_ISDIR(mode):
                stack.append(fd)
            else:
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def locate(root_fd: int, path: str, *, follow_last: bool,
           use_openat2: bool | None = None) -> Location:
    """Where ``path`` is inside ``root_fd``: its parent resolved in the root, and its last
    component as is, or (``follow_last``) with a symlink there followed, in the root too.

    The path is cleaned first as Docker cleans it (``/a/b/../c`` is ``/a/c``)."""
    current = posixpath.normpath("/" + path)
    for _hop in range(_MAX_HOPS):
        parent, name = posixpath.split(current)
        if current == "/":
            return Location(open_dir(root_fd, "/", use_openat2=use_openat2), "", "/")
        dir_fd = open_dir(root_fd, parent, use_openat2=use_openat2)
        if not follow_last:
            return Location(dir_fd, name, current)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return Location(dir_fd, name, current)
        except BaseException:
            os.close(dir_fd)
            raise
        if not stat.S_ISLNK(st.st_mode):
            return Location(dir_fd, name, current)
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        current = posixpath.normpath(posixpath.join(parent, target))
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def make_parents(root_fd: int, path: str, *, use_openat2: bool | None = None) -> None:
    """Make the missing directories of ``path`` inside the root (0755, as ``mkdir -p``), each
    with an in-root open of its parent, so a symlink on the way is followed only inside."""
    current = posixpath.normpath("/" + path)
    missing: list[str] = []
    while current != "/":
        try:
            os.close(open_dir(root_fd, current, use_openat2=use_openat2))
            break
        except FileNotFoundError:
            missing.append(current)
            current = posixpath.dirname(current)
    for directory in reversed(missing):
        parent = open_dir(root_fd, posixpath.dirname(directory), use_openat2=use_openat2)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(posixpath.basename(directory), 0o755, dir_fd=parent)
        finally:
            os.close(parent)
