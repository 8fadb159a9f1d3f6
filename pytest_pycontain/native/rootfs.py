"""The container's filesystem: overlayfs root, /dev, /proc, /sys, generated /etc files, mounts.

Everything here runs inside the shim's fresh mount namespace, so no mount is ever visible on the
host and all of them vanish with the namespace's last process, even after a SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..idmap import in_user_namespace
from . import syscalls as sc
from . import userns, volumes
from .inroot import open_dir

if TYPE_CHECKING:
    from .protocol import RunPlan

DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0)}
_TMPFS_FLAGS = {"ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV,
                "noexec": sc.MS_NOEXEC}
_TMPFS_CLEAR = {"rw": sc.MS_RDONLY, "suid": sc.MS_NOSUID, "dev": sc.MS_NODEV,
                "exec": sc.MS_NOEXEC}


def inside(root: str, path: str) -> str:
    """``path`` resolved inside ``root`` as the container would see it: symlinks (absolute or
    with ``..``) never lead out of ``root``."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise OSError(40, f"too many levels of symbolic links: {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def read_file(path: str) -> bytes:
    """The bytes of ``path``, through ``os`` alone: this runs in freshly forked shims, where
    the first use of Python's ``open()`` (io's objects and codecs) costs ~70 copy-on-write
    faults more than a plain read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def write_file(path: str | os.PathLike, data: bytes, mode: int = 0o666, *,
               in_place: bool = False) -> None:
    """``path`` made (or emptied) holding ``data``, through ``os`` alone (see ``read_file``).
    ``in_place``: written over and then cut to length, not emptied first (the same inode,
    which a container may have bind-mounted: its hosts and resolv.conf when it joins a
    network), as ext4 writes out a file truncated to zero when it is closed (~0.2 ms)."""
    truncate = 0 if in_place else os.O_TRUNC
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | truncate | os.O_CLOEXEC, mode)
    try:
        sc.write_fully(fd, data)
        if in_place:
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _new_paths(root: str, target: str) -> list[str]:
    """The container paths that making ``target`` will create (it and missing parents)."""
    created = []
    while target != root and not os.path.lexists(target):
        created.append("/" + os.path.relpath(target, root))
        target = os.path.dirname(target)
    return created


def _mkdirs(root: str, path: str, mode: int = 0o755, made: list[str] | None = None) -> str:
    target = inside(root, path)
    if made is not None:
        made.extend(_new_paths(root, target))
    os.makedirs(target, mode=mode, exist_ok=True)
    return target


def _touch(root: str, path: str, made: list[str] | None = None) -> str:
    target = inside(root, path)
    if made is not None:
        made.extend(_new_paths(root, target))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    return target


def mount_overlay(directory: str, layers: int, merged: str = "merged", flags: int = 0) -> None:
    """Mount the overlay with short relative names (``l/0``...) from inside ``directory``, so
    that the option string (one page at most) holds many layers."""
    os.chdir(directory)
    lower = ":".join(f"l/{i}" for i in reversed(range(layers)))
    options = f"lowerdir={lower},upperdir=upper,workdir=work"
    if in_user_namespace():  # rootless: trusted.* xattrs are the host root's alone
        options += ",userxattr"
    sc.mount("overlay", merged, "overlay", flags, options)


def prepare(plan: RunPlan, root: str, *, workdir_owner: tuple[int, int] | None = None) -> None:
    """Mount /dev, /sys, the generated /etc files, bind mounts and tmpfs under ``root``; make
    the working directory (owned by ``workdir_owner`` when it is new, as Docker does).

    Unless the container is privileged, /dev and bind mounts are ``nodev`` and the default
    devices are the host's own nodes bound in: a node the container makes with ``mknod``
    cannot be opened (the boundary's device rule, as Docker's device cgroup has it). Rootless,
    they are bound in when privileged too: a user namespace may not make device nodes.
    The paths created only to mount on are listed in ``mountpoints.json`` in the container's
    directory, so that a build committing the upper layer can leave them out, as Docker does.
    """
    made: list[str] = []
    privileged = plan.boundary.privileged
    nodev = plan.boundary.device_flags
    dev = _mkdirs(root, "/dev", made=made)
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME | nodev,
             "mode=755,size=65536k")
    # rootless: the kernel makes no device node in a user namespace, privileged or not
    bind_devices = bool(nodev) or in_user_namespace()
    for name, (major, minor) in DEVICES.items():
        path = os.path.join(dev, name)
        host = os.path.join("/dev", name)
        if bind_devices and _is_device(host, major, minor):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
            sc.mount(host, path, None, sc.MS_BIND)
            continue
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, mode in (("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o1777)):
        os.mkdir(os.path.join(dev, name), mode)
    pts_options = "newinstance,ptmxmode=0666,mode=0620"
    try:
        sc.mount("devpts", os.path.join(dev, "pts"), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
                 pts_options + ",gid=5")
    except OSError as exc:  # rootless with one id: group tty (5) is not mapped
        if exc.errno != errno.EINVAL or not in_user_namespace():
            raise
        sc.mount("devpts", os.path.join(dev, "pts"), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
                 pts_options)
    sc.mount("shm", os.path.join(dev, "shm"), "tmpfs",
             sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, f"mode=1777,size={plan.shm_size}")
    sc.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue",
             sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"),
                         ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    _mkdirs(root, "/proc", made=made)
    sys_dir = _mkdirs(root, "/sys", made=made)
    sys_flags = (0 if privileged else sc.MS_RDONLY) | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    try:
        sc.mount("sysfs", sys_dir, "sysfs", sys_flags)
    except PermissionError:
        if not in_user_namespace():
            raise
        # rootless on the host's network: sysfs belongs to the network namespace's owner,
        # so the host's /sys is bound in instead (what rootless Podman does)
        sc.mount("/sys", sys_dir, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, sys_dir, None, sc.MS_REMOUNT | sc.MS_BIND | sys_flags)
    # the generated /etc files' mount points first, as Docker's init layer has them: a new
    # volume over /etc is seeded with them, so they are there to mount on when it is read-only
    for name in plan.etc:
        _touch(root, f"/etc/{name}", made)
    # first, parents before children: /etc/hosts, a bind mount or another volume may be in one
    for source, target, read_only, nocopy, subpath in sorted(
            plan.volumes, key=lambda v: v.target.count("/")):
        found = inside(root, target)
        if os.path.lexists(found) and not os.path.isdir(found):
            raise NotADirectoryError(errno.ENOTDIR, f"VOLUME {target}: cannot mount volume "
                                     "over existing file (the image has a file there)")
        if not nocopy and os.path.isdir(found) and not os.listdir(source):  # a new volume
            volumes.seed(found, source)
        where = _mkdirs(root, target, made=made)
        if subpath is None:
            sc.mount(source, where, None, sc.MS_BIND | sc.MS_REC)
        else:  # resolved inside the volume now, as the container resolves it: never out
            _mount_inside(source, subpath, where)
        if read_only or nodev:
            sc.mount(source, where, None, sc.MS_REMOUNT | sc.MS_BIND | _kept_flags(where)
                     | nodev | (sc.MS_RDONLY if read_only else 0))
    for name in plan.etc:  # hosts, hostname, resolv.conf: written by the engine
        source = os.path.join(plan.directory, name)
        sc.mount(source, _touch(root, f"/etc/{name}", made), None, sc.MS_BIND)
    for source, target, read_only, *_ in plan.mounts:
        where = (_mkdirs(root, target, made=made) if os.path.isdir(source)
                 else _touch(root, target, made))
        sc.mount(source, where, None, sc.MS_BIND | sc.MS_REC)
        if read_only or nodev:
            sc.mount(source, where, None, sc.MS_REMOUNT | sc.MS_BIND | _kept_flags(where)
                     | nodev | (sc.MS_RDONLY if read_only else 0))
    for target, options in plan.tmpfs:
        flags, data = tmpfs_options(options)
        sc.mount("tmpfs", _mkdirs(root, target, made=made), "tmpfs", flags, data)
    listed = os.path.join(plan.directory, "mountpoints.json")
    # started again: the first start made them in upper/, so they are not new now
    with contextlib.suppress(FileNotFoundError, ValueError):
        made.extend(json.loads(read_file(listed)))
    write_file(listed, json.dumps(sorted(set(made))).encode())
    workdir = _mkdirs(root, plan.workdir)
    if workdir_owner is not None:
        os.chown(workdir, *workdir_owner)
    if plan.read_only:
        sc.mount(root, root, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | nodev)


def _kept_flags(path: str) -> int:
    """The flags of the mount at ``path`` that a bind remount must repeat to keep them."""
    have = os.statvfs(path).f_flag
    kept = 0
    for st_flag, ms_flag in ((os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID),
                             (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
                             (os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048),
                             (os.ST_RELATIME, 1 << 21)):
        if have & st_flag:
            kept |= ms_flag
    return kept


def _is_device(path: str, major: int, minor: int) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(major, minor)


def tmpfs_options(options: str) -> tuple[int, str]:
    """Docker's ``--tmpfs`` options: flags (``ro``, ``exec``...) apart, data (``size=``) kept.
    Default, as Docker's: noexec, nosuid, nodev."""
    flags = sc.MS_NOEXEC | sc.MS_NOSUID | sc.MS_NODEV
    data = []
    for word in (w.strip() for w in (options or "").split(",")):
        if word in _TMPFS_FLAGS:
            flags |= _TMPFS_FLAGS[word]
        elif word in _TMPFS_CLEAR:
            flags &= ~_TMPFS_CLEAR[word]
        elif word:
            data.append(word)
    return flags, ",".join(data)


def enter(root: str, proc: bool = True) -> None:
    """In the container's PID 1: a fresh /proc (unless ``proc`` is False: mounted already),
    then ``pivot_root`` into ``root``."""
    if proc:
        sc.mount("proc", os.path.join(root, "proc"), "proc",
                 sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")


# --- users ---------------------------------------------------------------------------------

class UnknownUser(LookupError):
    pass


def _table(path: str) -> list[list[str]]:
    try:
        text = read_file(path).decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as open() reads
    return [line.split(":") for line in lines if line.strip() and not line.startswith("#")]


def resolve_user(spec: str | None, root: str = "/") -> tuple[int, int, list[int], str]:
    """``user[:group]`` (names or numbers) -> uid, gid, supplementary gids, home; names are
    looked up in the image's /etc/passwd and /etc/group, as Docker does."""
    user, _, group = (spec or "").partition(":")
    passwd = _table(inside(root, "/etc/passwd"))
    groups = _table(inside(root, "/etc/group"))
    uid, gid, home, name = 0, 0, "/", "root"
    if user:
        entry = next((e for e in passwd if len(e) >= 6 and (e[0] == user or e[2] == user)), None)
        if entry is not None:
            name, uid, gid, home = entry[0], int(entry[2]), int(entry[3]), entry[5] or "/"
        elif user.isdigit():
            uid, name = int(user), ""
        else:
            raise UnknownUser(f"unable to find user {user}: no matching entries in passwd file")
    elif passwd:
        entry = next((e for e in passwd if len(e) >= 6 and e[2] == "0"), None)
        if entry is not None:
            home = entry[5] or "/"
    if group:
        entry = next((e for e in groups if len(e) >= 3 and (e[0] == group or e[2] == group)),
                     None)
        if entry is not None:
            gid = int(entry[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise UnknownUser(f"unable to find group {group}: no matching entries in group file")
    extra = sorted({int(e[2]) for e in groups if len(e) >= 4 and name
                    and name in e[3].split(",") and e[2].isdigit()} - {gid})
    mapping = userns.entered()
    refused = mapping.refuses(uid, gid) if mapping is not None else None
    if refused:
        raise UnknownUser(f"user {spec}: {refused}")
    return uid, gid, extra, home


def path_exists(root: str, path: str) -> bool:
    return Path(inside(root, path)).exists()


def _mount_inside(volume: str, subpath: str, where: str) -> None:
    """Bind directory ``subpath`` of ``volume`` on ``where``, through a descriptor opened
    inside the volume (``inroot``): a symlink that a container planted or swapped in there
    resolves within the volume, never to the host's tree."""
    top = os.open(volume, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        found = open_dir(top, subpath)
    finally:
        os.close(top)
    try:
        sc.mount(f"/proc/self/fd/{found}", where, None, sc.MS_BIND | sc.MS_REC)
    finally:
        os.close(found)
