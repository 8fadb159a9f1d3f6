"""The privilege-boundary options of ``run`` with ``docker run``'s meaning, checked once.

``privileged``, ``cap_add``, ``cap_drop``, ``security_opt`` and ``sysctls`` are validated here
for every backend alike, so that bad input is the same ``ConfigError`` before anything starts
whichever engine runs the container; the native engine turns the result into its boundary, the
Docker backend passes it on as the Docker CLI would.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Capability numbers are the kernel's (linux/capability.h); names without the CAP_ prefix.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
# Docker's default set (its documentation lists the same 14).
DEFAULT_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})

# sysctls that live in the container's IPC namespace (the kernel's ipc sysctl table)
_IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})
_SECCOMP_ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
})
_SECCOMP_OPS = frozenset({
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
})


@dataclasses.dataclass(frozen=True)
class SeccompProfile:
    """A seccomp profile in Docker's JSON format: where it came from, its text and data."""

    source: str  # the file, or "default"
    text: str
    data: Mapping[str, Any] = dataclasses.field(compare=False, hash=False)


@dataclasses.dataclass(frozen=True)
class SecurityOptions:
    """The boundary a container asked for, validated: what both backends start from."""

    privileged: bool = False
    cap_add: tuple[str, ...] = ()  # normalised names without CAP_, or "ALL"
    cap_drop: tuple[str, ...] = ()
    capabilities: frozenset[str] = DEFAULT_CAPABILITIES  # the resulting set (bounding)
    no_new_privileges: bool = False
    seccomp: SeccompProfile | None = None  # None: the engine's default profile
    seccomp_unconfined: bool = False
    systempaths_unconfined: bool = False  # no masked or read-only /proc and /sys paths
    sysctls: tuple[tuple[str, str], ...] = ()
    docker_security_opt: tuple[str, ...] = ()  # as the Docker CLI sends them

    @property
    def confined(self) -> bool:
        """Whether a seccomp filter applies at all."""
        return not (self.privileged or self.seccomp_unconfined)


def capability_name(value: str, option: str) -> str:
    """``"net_admin"``, ``"CAP_NET_ADMIN"`` -> ``"NET_ADMIN"``; ``"all"`` -> ``"ALL"``."""
    name = str(value).strip().upper()
    if name == "ALL":
        return name
    name = name.removeprefix("CAP_")
    if name not in CAPABILITIES:
        raise ConfigError(f"{option}: unknown capability {value!r} (known: CAP_CHOWN ... "
                          f"CAP_{CAPABILITIES[-1]}, or ALL)")
    return name


def _names(values: Sequence[str] | str | None, option: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    seen: list[str] = []
    for value in values:
        name = capability_name(value, option)
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def capability_set(cap_add: Sequence[str], cap_drop: Sequence[str],
                   privileged: bool) -> frozenset[str]:
    """Docker's rule: ALL in cap_add starts from every capability (minus cap_drop); ALL in
    cap_drop keeps only cap_add; else the defaults minus cap_drop plus cap_add."""
    every = frozenset(CAPABILITIES)
    if privileged:
        return every
    adds = frozenset(cap_add) - {"ALL"}
    drops = frozenset(cap_drop) - {"ALL"}
    if "ALL" in cap_add:
        return every - drops
    if "ALL" in cap_drop:
        return adds
    return (DEFAULT_CAPABILITIES - drops) | adds


def check_sysctl(key: str, value: Any, *, host_network: bool) -> tuple[str, str]:
    """One ``sysctls`` entry, allowed only where the container has a namespace of its own for
    it (IPC, network, UTS), as Docker (runc) allows it; else ConfigError naming it."""
    name = str(key).strip()
    if not name or not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"sysctls: {key!r}={value!r}: expected a name and a string value")
    if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
        return name, str(value)
    if name.startswith("net."):
        if host_network:
            raise ConfigError(f"sysctls: {name!r} is not allowed in the host's network "
                              "namespace (network='host')")
        return name, str(value)
    if name == "kernel.domainname":
        return name, str(value)
    if name == "kernel.hostname":
        raise ConfigError(f"sysctls: {name!r} conflicts with the hostname option; pass "
                          "hostname= instead")
    raise ConfigError(f"sysctls: {name!r} is not in a separate kernel namespace of the "
                      "container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, "
                      "kernel.shm*, kernel.domainname)")


def load_profile(path: str | os.PathLike) -> SeccompProfile:
    """A seccomp profile file in Docker's format, checked: a missing file, bad JSON (line and
    column) or a bad field (its JSON path) is a ConfigError naming the file."""
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"security_opt seccomp={where}: cannot read the profile: "
                          f"{exc.strerror or exc}") from None
    return parse_profile(text, where)


def parse_profile(text: str, source: str) -> SeccompProfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"security_opt seccomp={source}:{exc.lineno}:{exc.colno}: not JSON: "
                          f"{exc.msg}") from None

    def bad(path: str, why: str) -> ConfigError:
        return ConfigError(f"security_opt seccomp={source}: {path}: {why}")

    if not isinstance(data, dict):
        raise bad("$", "expected an object")
    action = data.get("defaultAction")
    if action not in _SECCOMP_ACTIONS:
        raise bad("$.defaultAction", f"unknown action {action!r}")
    for key in ("defaultErrnoRet",):
        if key in data and data[key] is not None and not isinstance(data[key], int):
            raise bad(f"$.{key}", "expected a number")
    for i, entry in enumerate(data.get("archMap") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
            raise bad(f"$.archMap[{i}].architecture", "expected a string")
    if "architectures" in data and not isinstance(data["architectures"] or [], list):
        raise bad("$.architectures", "expected a list")
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise bad("$.syscalls", "expected a list")
    for i, rule in enumerate(syscalls):
        here = f"$.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise bad(here, "expected an object")
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else None)
        if not names or not all(isinstance(n, str) for n in names):
            raise bad(f"{here}.names", "expected a list of syscall names")
        if rule.get("action") not in _SECCOMP_ACTIONS:
            raise bad(f"{here}.action", f"unknown action {rule.get('action')!r}")
        if "errnoRet" in rule and rule["errnoRet"] is not None and not isinstance(
                rule["errnoRet"], int):
            raise bad(f"{here}.errnoRet", "expected a number")
        for j, arg in enumerate(rule.get("args") or []):
            there = f"{here}.args[{j}]"
            if not isinstance(arg, dict):
                raise bad(there, "expected an object")
            if not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
                raise bad(f"{there}.index", "expected 0 to 5")
            if not isinstance(arg.get("value", 0), int):
                raise bad(f"{there}.value", "expected a number")
            if not isinstance(arg.get("valueTwo", 0), int):
                raise bad(f"{there}.valueTwo", "expected a number")
            if arg.get("op") not in _SECCOMP_OPS:
                raise bad(f"{there}.op", f"unknown operator {arg.get('op')!r}")
        for part in ("includes", "excludes"):
            cond = rule.get(part) or {}
            if not isinstance(cond, dict):
                raise bad(f"{here}.{part}", "expected an object")
            for k, cap in enumerate(cond.get("caps") or []):
                try:
                    capability_name(cap, f"{here}.{part}.caps[{k}]")
                except ConfigError as exc:
                    raise bad(f"{here}.{part}.caps[{k}]", f"unknown capability {cap!r}"
                              ) from exc
    return SeccompProfile(source, text, data)


def check_security_opt(text: str) -> tuple[str, str]:
    """One ``security_opt`` word, as Docker reads it (``KEY=VALUE``, or the older
    ``KEY:VALUE``) -> (key, value); ConfigError for one Docker does not know."""
    key, sep, value = text.partition("=")
    if not sep:
        key, sep, value = text.partition(":")
    key = key.strip()
    if key == "no-new-privileges":
        if value not in ("", "true", "false"):
            raise ConfigError(f"security_opt {text!r}: no-new-privileges takes true or false")
        return key, value
    if (key == "seccomp" and sep and value) or (key == "systempaths" and value == "unconfined"):
        return key, value
    if key in ("apparmor", "label") and sep:
        return key, value
    raise ConfigError(f"security_opt {text!r}: unknown option (known: no-new-privileges, "
                      "seccomp=unconfined, seccomp=PROFILE.json, systempaths=unconfined, "
                      "apparmor=..., label=...)")


def security_options(*, privileged: bool = False, cap_add: Sequence[str] | None = None,
                     cap_drop: Sequence[str] | None = None,
                     security_opt: Sequence[str] | None = None,
                     sysctls: Mapping[str, Any] | None = None,
                     host_network: bool = False) -> SecurityOptions:
    """Check the options of one ``run`` and work out what they mean (see the module doc)."""
    if not isinstance(privileged, bool):
        raise ConfigError(f"privileged={privileged!r}: expected True or False")
    adds = _names(cap_add, "cap_add")
    drops = _names(cap_drop, "cap_drop")
    no_new_privileges = False
    profile: SeccompProfile | None = None
    unconfined = systempaths = False
    sent: list[str] = []
    if isinstance(security_opt, str):
        security_opt = [security_opt]
    for option in security_opt or ():
        text = str(option)
        key, value = check_security_opt(text)
        if key == "no-new-privileges":
            no_new_privileges = value != "false"
            sent.append(text)
        elif key == "seccomp" and value == "unconfined":
            unconfined, profile = True, None
            sent.append(text)
        elif key == "seccomp":
            profile, unconfined = load_profile(value), False
            sent.append(f"seccomp={profile.text}")  # the content, as the Docker CLI sends it
        elif key == "systempaths":
            systempaths = True
            sent.append(text)
        else:
            sent.append(text)  # apparmor=, label=: Docker's own; the native engine refuses them
    checked: dict[str, str] = {}
    for key, value in (sysctls or {}).items():
        name, text = check_sysctl(key, value, host_network=host_network)
        checked[name] = text
    return SecurityOptions(
        privileged=privileged, cap_add=adds, cap_drop=drops,
        capabilities=capability_set(adds, drops, privileged),
        no_new_privileges=no_new_privileges, seccomp=profile, seccomp_unconfined=unconfined,
        systempaths_unconfined=systempaths, sysctls=tuple(sorted(checked.items())),
        docker_security_opt=tuple(sent))
