"""Seccomp profiles in Docker's format compiled to a classic BPF program, through libseccomp.

The engine compiles a profile once for a capability set (the rules that apply depend on the
container's capabilities, as in Docker) and hands the raw program to the shim, which loads it
with one ``prctl`` right before exec: no libseccomp and no compiling in the container's path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import platform
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, NotSupported

DEFAULT_PROFILE = os.path.join(os.path.dirname(__file__), "seccomp_default.json")

_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
            "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
            "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
            "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# Docker's architecture names (profiles' "arches") and libseccomp's, per machine
_MACHINES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64")}
_GO_ARCH = {"SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "amd64", "SCMP_ARCH_X32": "x32",
            "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "arm64"}
# SCMP_FLTATR_CTL_OPTIMIZE (libseccomp >= 2.5) = 2: the syscalls in a binary tree, not a list.
# The kernel runs the program once per syscall number and ABI when it loads it (to cache what
# is always allowed), so a list of ~1000 instructions cost ~0.9 ms per load, the tree ~0.25.
_ATTR_OPTIMIZE = 8
_BINARY_TREE = 2
_LIB_ARCH = {"SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
             "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64"}


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise NotSupported(f"security_opt seccomp: libseccomp is not installed ({exc}); "
                           "install libseccomp2, or run with security_opt="
                           "['seccomp=unconfined']") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_exist.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_remove.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return lib


@functools.lru_cache(maxsize=1)
def kernel_supports_seccomp() -> bool:
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        return any(line.startswith("Seccomp:") for line in status)
    return False


@functools.lru_cache(maxsize=1)
def default_profile_text() -> str:
    with open(DEFAULT_PROFILE, encoding="utf-8") as file:
        return file.read()


def compile_profile(text: str, capabilities: frozenset[str], source: str = "default",
                    machine: str | None = None) -> bytes:
    """The BPF program (``struct sock_filter`` array) of a profile for a capability set, for
    this machine (or ``machine``: ``x86_64``, ``aarch64``); cached, so a profile is compiled
    once per set however many containers use it."""
    key = hashlib.sha256(text.encode()).hexdigest()
    return _compiled(key, text, capabilities, source, machine or platform.machine())


@functools.lru_cache(maxsize=32)
def _compiled(_key: str, text: str, capabilities: frozenset[str], source: str,
              machine: str) -> bytes:
    return _compile(json.loads(text), capabilities, source, machine)


def _kernel_version() -> tuple[int, ...]:
    release = platform.release().split("-")[0]
    parts = []
    for piece in release.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _applies(rule: Mapping[str, Any], capabilities: frozenset[str], arch: str) -> bool:
    """Docker's includes/excludes: every included capability present, the machine among the
    included arches, the kernel new enough; no excluded capability, not an excluded arch."""
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}

    def caps(names: Any) -> set[str]:
        return {str(n).upper().removeprefix("CAP_") for n in names or ()}

    if includes.get("caps") and not caps(includes["caps"]) <= capabilities:
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("minKernel"):
        wanted = tuple(int(p) for p in str(includes["minKernel"]).split(".")[:2])
        if _kernel_version() < wanted:
            return False
    if excludes.get("caps") and caps(excludes["caps"]) & capabilities:
        return False
    return not (excludes.get("arches") and arch in excludes["arches"])


def _action(name: str, errno: Any, default_errno: Any, where: str) -> int:
    if name not in _ACTIONS:
        raise ConfigError(f"security_opt seccomp={where}: unknown action {name!r}")
    value = _ACTIONS[name]
    if name == "SCMP_ACT_ERRNO":
        value |= int(errno if errno is not None else (default_errno or 1)) & 0xFFFF
    elif name == "SCMP_ACT_TRACE":
        value |= int(errno or 0) & 0xFFFF
    return value


def _compile(profile: Mapping[str, Any], capabilities: frozenset[str], source: str,
             machine: str) -> bytes:
    if machine not in _MACHINES:
        raise NotSupported(f"security_opt seccomp: no profile architecture for {machine}; run "
                           "with security_opt=['seccomp=unconfined']")
    lib = _library()
    go_arch, native = _MACHINES[machine]
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"),
                      profile.get("defaultErrnoRet"), source)
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError(f"seccomp_init failed for {source}")
    try:
        lib.seccomp_attr_set(ctx, _ATTR_OPTIMIZE, _BINARY_TREE)  # refused by older: a list
        arches = _arches(profile, native)
        for arch in arches:
            token = lib.seccomp_arch_resolve_name(_LIB_ARCH.get(arch, "").encode())
            if token and lib.seccomp_arch_exist(ctx, token) != 0:
                lib.seccomp_arch_add(ctx, token)
        if machine != platform.machine():  # another machine's program: without this one's
            lib.seccomp_arch_remove(ctx, 0)  # SCMP_ARCH_NATIVE
        for index, rule in enumerate(profile.get("syscalls") or []):
            if not _applies(rule, capabilities, go_arch):
                continue
            action = _action(rule["action"], rule.get("errnoRet"),
                             profile.get("defaultErrnoRet"), f"{source}: $.syscalls[{index}]")
            if action == default:
                continue  # libseccomp refuses rules that do what the default does
            names = rule.get("names") or [rule.get("name")]
            for condition_set in _condition_sets(rule.get("args") or []):
                array = (_ArgCmp * max(1, len(condition_set)))(*[
                    _ArgCmp(a["index"], _OPS[a["op"]], int(a.get("value", 0)) & (2**64 - 1),
                            int(a.get("valueTwo", 0)) & (2**64 - 1)) for a in condition_set])
                for name in names:
                    number = lib.seccomp_syscall_resolve_name(str(name).encode())
                    if number == -1:  # a syscall this libseccomp (or machine) does not know
                        continue
                    result = lib.seccomp_rule_add_array(ctx, action, number,
                                                        len(condition_set), array)
                    if result < 0:
                        raise ConfigError(
                            f"security_opt seccomp={source}: $.syscalls[{index}] ({name}): "
                            f"libseccomp refused the rule: {os.strerror(-result)}")
        fd = os.memfd_create("pycontain-seccomp", os.MFD_CLOEXEC)
        try:
            result = lib.seccomp_export_bpf(ctx, fd)
            if result < 0:
                raise OSError(-result, f"seccomp_export_bpf: {os.strerror(-result)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def _arches(profile: Mapping[str, Any], native: str) -> list[str]:
    """The architectures the filter knows (others get the bad-arch action): the native one
    with its sub-architectures from ``archMap``, or the old ``architectures`` list."""
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            return [native, *(entry.get("subArchitectures") or [])]
    listed = [a for a in profile.get("architectures") or [] if a in _GO_ARCH]
    return listed or [native]


def _condition_sets(args: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Conditions on different arguments all hold together (one rule); several on the same
    argument are alternatives (a rule each), as runc reads Docker's profiles."""
    indexes = [a["index"] for a in args]
    if len(set(indexes)) == len(indexes):
        return [list(args)]
    return [[a] for a in args]
