"""Rootless facts: which user-namespace id mapping this user can have, whether this process is
in one already, and what on the host stands in the way (each with the command that fixes it).

Cheap reads of /proc and /etc only, so the report header and ``pycontain info`` can use them
without starting anything. Entering the namespace is ``native/userns.py``; this module is
shared with the store (which unpacks differently inside one) and the backend choice.
"""

from __future__ import annotations

import functools
import os
import platform
import pwd
import shutil
from collections.abc import Mapping as EnvMap
from dataclasses import dataclass
from pathlib import Path

SUBORDINATE_COUNT = 65536  # what useradd hands out, and what Podman asks for
PROC_SYS = Path("/proc/sys")


@dataclass(frozen=True)
class IdRange:
    """One line of a uid_map/gid_map: ``count`` ids from ``inside`` are ``outside`` on the host."""

    inside: int
    outside: int
    count: int

    def line(self) -> str:
        return f"{self.inside} {self.outside} {self.count}"


@dataclass(frozen=True)
class Mapping:
    """The user namespace a rootless engine makes: the user is root inside, and with
    subordinate ids (``full``) ids 1..65536 are the user's ranges from /etc/subuid, /etc/subgid."""

    user: str
    uid: int
    gid: int
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]
    full: bool
    why_single: str = ""  # why a single-id mapping: the missing entry or tool, and the fix

    def describe(self) -> str:
        if self.full:
            sub = self.uids[1]
            return (f"uid {self.uid} is root, ids 1-{sub.count} are {sub.outside}-"
                    f"{sub.outside + sub.count - 1} from /etc/subuid")
        return f"single id: uid {self.uid} is root, no other ids"

    def refuses(self, uid: int, gid: int) -> str | None:
        """Why a process in this namespace cannot become ``uid:gid`` (the kernel's bare
        EINVAL otherwise), or None when both are mapped."""
        if (any(r.inside <= uid < r.inside + r.count for r in self.uids)
                and any(r.inside <= gid < r.inside + r.count for r in self.gids)):
            return None
        if not self.full:
            return (f"uid {uid} gid {gid} is not mapped: rootless mode without subordinate "
                    f"ids maps only root (uid {self.uid}); /etc/subuid and /etc/subgid have "
                    f"no entry for {self.user}; add one (as root) with: "
                    f"{add_ids_command(self.user)}")
        last = max(r.inside + r.count - 1 for r in self.uids)
        return f"uid {uid} gid {gid} is not mapped: rootless mode maps ids 0-{last} only"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def subordinate_range(path: str | os.PathLike, user: str, uid: int) -> IdRange | None:
    """The first range of at least 65536 ids that ``path`` (/etc/subuid or /etc/subgid) gives
    ``user`` (by name or by uid), as the mapping's ids 1..65536; None when there is none."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if count >= SUBORDINATE_COUNT:
            return IdRange(1, start, SUBORDINATE_COUNT)
    return None


def add_ids_command(user: str) -> str:
    """The command (as root) that gives ``user`` subordinate ids, as useradd would have."""
    return (f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} "
            "(pick a range no other user has in /etc/subuid and /etc/subgid)")


def plan(uid: int | None = None, gid: int | None = None, *, subuid: str = "/etc/subuid",
         subgid: str = "/etc/subgid") -> Mapping:
    """The mapping this user gets: full with subordinate ids and newuidmap/newgidmap, else a
    single id (and ``why_single`` says what is missing and how to add it)."""
    uid = host_uid() if uid is None else uid
    gid = _outside(os.getgid(), current_map("gid")) if gid is None else gid
    user = user_name(uid)
    single = (IdRange(0, uid, 1),), (IdRange(0, gid, 1),)
    sub_u = subordinate_range(subuid, user, uid)
    sub_g = subordinate_range(subgid, user, uid)
    if sub_u is None or sub_g is None:
        missing = subuid if sub_u is None else subgid
        return Mapping(user, uid, gid, *single, full=False, why_single=(
            f"no entry for {user} in {missing}; add one with: {add_ids_command(user)}"))
    tools = [t for t in ("newuidmap", "newgidmap") if shutil.which(t) is None]
    if tools:
        return Mapping(user, uid, gid, *single, full=False, why_single=(
            f"{' and '.join(tools)} not found; install them: apt-get install uidmap "
            "(dnf install shadow-utils)"))
    return Mapping(user, uid, gid, (IdRange(0, uid, 1), sub_u), (IdRange(0, gid, 1), sub_g),
                   full=True)


def current_map(kind: str = "uid") -> tuple[IdRange, ...]:
    """This process's ``uid_map`` (or ``gid_map``); the identity map in the host's namespace."""
    try:
        text = Path(f"/proc/self/{kind}_map").read_text()
    except OSError:
        return (IdRange(0, 0, 4294967295),)
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3:
            ranges.append(IdRange(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(ranges)


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace below the host's (ours, or one it was
    started in): then trusted.* xattrs are out of reach and overlayfs needs ``userxattr``.
    Answered once per namespace: a forked shim asks twice per start, and reading the map
    afresh there cost ~0.5 ms."""
    try:
        namespace = os.readlink("/proc/self/ns/user")
    except OSError:
        namespace = ""
    return _below_host(namespace)


@functools.lru_cache(maxsize=8)
def _below_host(_namespace: str) -> bool:
    return current_map() != (IdRange(0, 0, 4294967295),)


def host_uid() -> int:
    """The uid this process has on the host, also after it entered a user namespace (where
    ``os.getuid()`` says 0): what names the user's own runtime directory."""
    return _outside(os.geteuid(), current_map())


def _outside(inside: int, ranges: tuple[IdRange, ...]) -> int:
    for r in ranges:
        if r.inside <= inside < r.inside + r.count:
            return r.outside + inside - r.inside
    return inside


def _sysctl(name: str) -> str | None:
    try:
        return (PROC_SYS / name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def kernel_version(release: str | None = None) -> tuple[int, int]:
    release = platform.release() if release is None else release
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def blockers() -> list[str]:
    """What stops an unprivileged user from running the native engine here, each with its fix;
    empty when user namespaces and overlayfs in them are available."""
    found = []
    if _sysctl("user.max_user_namespaces") == "0":
        found.append("user namespaces are disabled (user.max_user_namespaces = 0); enable "
                     "them: sysctl -w user.max_user_namespaces=28633")
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        found.append("unprivileged user namespaces are off (kernel.unprivileged_userns_clone "
                     "= 0); turn them on: sysctl -w kernel.unprivileged_userns_clone=1")
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        found.append("AppArmor restricts unprivileged user namespaces "
                     "(kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10 and "
                     "later); allow them: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
                     " (or an AppArmor profile for python with 'userns,')")
    if not Path("/proc/self/ns/user").exists():
        found.append("this kernel has no user namespaces (CONFIG_USER_NS)")
    if kernel_version() < (5, 11):
        found.append(f"kernel {platform.release()} cannot mount overlayfs in a user namespace "
                     "(5.11 or later can, with userxattr); run as root or upgrade the kernel")
    return found


def state_dir(environ: EnvMap[str, str] | None = None) -> Path:
    """A rootless user's runtime state: ``$XDG_RUNTIME_DIR/pycontain``, else a directory of
    the user's own under /tmp (made mode 0700 by the engine, which checks its owner)."""
    environ = os.environ if environ is None else environ
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "pycontain"
    return Path(f"/tmp/pycontain-{host_uid()}")


def own_cgroup(root: str | os.PathLike = "/sys/fs/cgroup") -> Path | None:
    """This process's directory in the v2 hierarchy mounted at ``root`` (the ``0::`` line of
    /proc/self/cgroup), or None."""
    try:
        line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines()
                    if x.startswith("0::"))
    except (OSError, StopIteration):
        return None
    return Path(root) / line[3:].lstrip("/")


LEAF_PREFIX = "pycontain-engine-"  # a rootless engine's leaf in its delegated cgroup


def home_cgroup(root: str | os.PathLike = "/sys/fs/cgroup") -> Path | None:
    """The v2 cgroup this process was given: its own, or, once a rootless engine moved into a
    leaf of it (``native/cgroupleaf.py``: ``<home>/pycontain-engine-PID``), that leaf's parent."""
    own = own_cgroup(root)
    if own is not None and own.name.startswith(LEAF_PREFIX):
        return own.parent
    return own


def delegated_cgroup(root: str | os.PathLike = "/sys/fs/cgroup") -> Path | None:
    """Where a rootless engine makes its containers' cgroups: the v2 cgroup this process was
    given (``home_cgroup``) when the user may write it (what systemd's user delegation gives),
    whichever controllers it has (a limit whose controller is missing is refused by name when
    asked), else None."""
    if not (Path(root) / "cgroup.controllers").exists():
        return None
    own = home_cgroup(root)
    if own is None or not (own / "cgroup.controllers").exists():
        return None
    if not all(os.access(own / name, os.W_OK)
               for name in ("", "cgroup.procs", "cgroup.subtree_control")):
        return None
    return own


def cgroup_delegation(root: str | os.PathLike = "/sys/fs/cgroup") -> tuple[Path | None, str]:
    """This process's cgroup v2 directory when it is delegated to the user (writable, with
    the memory and pids controllers), else None; and what it is, or the fix."""
    root = Path(root)
    if not (root / "cgroup.controllers").exists():
        return None, (f"{root} is cgroup v1 (or hybrid), which is never delegated to a user; "
                      "boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2")
    own = home_cgroup(root)
    if own is None:
        return None, "/proc/self/cgroup names no cgroup v2 directory"
    fix = ("run under a systemd user session (user@UID.service is delegated; "
           "loginctl enable-linger USER) or systemd-run --user --scope -p Delegate=yes")
    if not os.access(own, os.W_OK):
        return None, f"{own} is not delegated to uid {host_uid()}: {fix}"
    try:
        have = set((own / "cgroup.controllers").read_text().split())
    except OSError:
        have = set()
    missing = sorted({"memory", "pids", "cpu"} - have)
    if missing:
        return None, (f"{own} is delegated without the {', '.join(missing)} controller(s): "
                      "add Delegate=cpu memory pids to user@.service "
                      "(/etc/systemd/system/user@.service.d/delegate.conf)")
    return own, f"cgroup v2 delegated: {own}"
