"""``RunSpec``: what ``run`` takes, in one typed form, checked once.

Users write ports as ``[8080]`` or ``{8080: 18080}``, mounts as ``"HOST:CONTAINER:ro"``, memory
as ``"256m"``, a command as a string or a list. Every backend used to re-read those forms on its
own, with its own rules and its own errors; here they are read once, when the request is made,
and a bad value is a ``ConfigError`` that names the option and the value. The backends take the
fields as they are: ports a ``{container port: host port or None}`` map, mounts ``Mount``\\ s,
memory bytes, command and entrypoint an argv, env and tmpfs maps, aliases a tuple.

A ``RunSpec`` is frozen and hashable, so it can key a memo (a shared container).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .frozen import FrozenMap
from .imageconfig import shell_argv
from .security import capability_name, check_security_opt, check_sysctl

MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses smaller memory limits; so do we, on every backend
DEFAULT_SHM = 64 * 1024 * 1024  # /dev/shm's size when none is asked for, as Docker's
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def byte_size(value: int | float | str) -> int:
    """``"256m"``, ``"1g"``, ``"1GiB"``, ``"100b"`` or a number -> bytes (units of 1024, as
    Docker and Compose read sizes). Raises ``ValueError``; callers say which option it was."""
    if isinstance(value, bool):
        raise ValueError("expected bytes or a size like '256m'")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError("expected bytes or a size like '256m'")
        return int(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?", str(value).strip().lower())
    if not match:
        raise ValueError("expected bytes or a size like '256m'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def memory_bytes(value: int | float | str) -> int:
    """A memory limit in bytes: a ``byte_size`` of at least 6 MiB (Docker's minimum)."""
    number = byte_size(value)
    if number < MIN_MEMORY:
        raise ValueError("the minimum memory limit is 6m, as Docker's")
    return number


@dataclasses.dataclass(frozen=True)
class Mount:
    """A bind mount: the host's ``source`` (absolute) at ``target`` (absolute) in the
    container, read-only or not. ``str(mount)`` is Docker's ``HOST:CONTAINER[:ro]``."""

    source: Path
    target: str
    read_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        if not self.source.is_absolute():
            raise ConfigError(f"mounts: {str(self)!r}: the host path must be absolute")
        if not isinstance(self.target, str) or not self.target.startswith("/"):
            raise ConfigError(f"mounts: {str(self)!r}: the container path must be absolute")
        if not isinstance(self.read_only, bool):
            raise ConfigError(f"mounts: {str(self)!r}: read_only must be True or False")

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")

    @classmethod
    def parse(cls, text: str, base: Path | None = None) -> Mount:
        """``HOST:CONTAINER[:ro|rw]``; a relative host path is taken from ``base`` (the
        current directory without one), and must exist."""
        parts = text.split(":")
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            source, target, mode = parts
        elif len(parts) == 2:
            (source, target), mode = parts, "rw"
        else:
            raise ConfigError(f"mounts: {text!r}: expected HOST:CONTAINER or HOST:CONTAINER:ro")
        if not source:
            raise ConfigError(f"mounts: {text!r}: the host path is empty")
        if not target.startswith("/"):
            raise ConfigError(f"mounts: {text!r}: the container path must be absolute")
        path = Path(source).expanduser()
        path = Path(os.path.abspath(base / path if base is not None else path))
        return cls(path, target, mode == "ro")


_ABSOLUTE = re.compile(r"(?<![\w.~-])/[^\s:'\"`]*")  # an absolute path in a line of a log
HOST_GATEWAY = "host-gateway"  # extra_hosts: the address where containers reach the host
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # what Docker accepts as a name


@dataclasses.dataclass(frozen=True)
class VolumeMount:
    """A volume at ``target`` in the container: ``source`` is a volume's name (made on first
    use, as Docker does), a ``Volume`` from ``pycontain.volume()``, or None for an anonymous
    volume of the container's own (made empty, removed with it). ``nocopy``: a new volume is
    not filled with the image's content there; ``subpath``: only that directory of the volume
    is mounted (it must exist in it)."""

    source: Any
    target: str
    read_only: bool = False
    nocopy: bool = False
    subpath: str | None = None

    @property
    def name(self) -> str:
        if self.source is None:
            return "(anonymous)"
        return self.source if isinstance(self.source, str) else self.source.name

    def __str__(self) -> str:
        head = self.target if self.source is None else f"{self.name}:{self.target}"
        return head + (":ro" if self.read_only else "")


def check_volume_name(name: Any, option: str = "volumes") -> str:
    """A name Docker would take for a volume, or a ``ConfigError`` naming it."""
    if not isinstance(name, str) or not VOLUME_NAME.fullmatch(name):
        raise ConfigError(f"{option}: {name!r}: not a valid volume name: only "
                          "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters "
                          "(as Docker's)")
    return name


def parse_volumes(option: str, value: Any) -> tuple[VolumeMount, ...]:
    """``{"data": "/var/lib/x"}`` (a name or a ``Volume`` -> a path, ``"/path:ro"`` too) or
    ``["data:/var/lib/x:ro"]`` -> one ``VolumeMount`` per container path."""
    if value is None:
        return ()
    items: list[tuple[Any, str, str, VolumeMount | None]] = []
    if isinstance(value, Mapping):
        for source, where in value.items():
            if not isinstance(where, str):
                raise ConfigError(f"{option}: {source!r}: {where!r}: expected a container path")
            target, _, mode = where.partition(":")
            items.append((source, target, mode, None))
    else:
        for item in _sequence(option, value):
            if isinstance(item, VolumeMount):
                items.append((item.source, item.target, "ro" if item.read_only else "", item))
                continue
            if not isinstance(item, str) or item.count(":") not in (1, 2):
                raise ConfigError(f"{option}: {item!r}: expected 'NAME:PATH' or "
                                  "'NAME:PATH:ro'")
            source, target, *mode = item.split(":")
            items.append((source, target, mode[0] if mode else "", None))
    volumes: list[VolumeMount] = []
    for source, target, mode, given in items:
        shown = f"{getattr(source, 'name', source)}:{target}" + (f":{mode}" if mode else "")
        if isinstance(source, str):
            check_volume_name(source, option)
        elif source is None and given is not None:
            shown = target  # an anonymous volume (only as a VolumeMount)
        elif not isinstance(getattr(source, "name", None), str):
            raise ConfigError(f"{option}: {source!r}: expected a volume's name or a Volume")
        if not target.startswith("/"):
            raise ConfigError(f"{option}: {shown!r}: the container path must be absolute")
        if mode not in ("", "ro", "rw"):
            raise ConfigError(f"{option}: {shown!r}: the mode must be 'ro' or 'rw'")
        if any(v.target.rstrip("/") == target.rstrip("/") for v in volumes):
            raise ConfigError(f"{option}: {shown!r}: {target} has a volume already")
        if given is not None and given.subpath is not None:
            check_subpath(given.subpath, f"{option}: {shown!r}")
        volumes.append(given if given is not None else VolumeMount(source, target, mode == "ro"))
    return tuple(volumes)


def check_subpath(subpath: Any, where: str) -> str:
    """A volume's ``subpath`` as Docker takes it: relative, and never out of the volume."""
    if not isinstance(subpath, str) or not subpath or subpath.startswith("/") or any(
            part == ".." for part in subpath.split("/")):
        raise ConfigError(f"{where}: subpath {subpath!r} must be a relative path inside the "
                          "volume (no '..')")
    return subpath


def parse_mounts(value: Any, base: Path | None = None) -> tuple[Mount, ...]:
    """Mount strings (or ``Mount``\\ s) -> ``Mount``\\ s whose host paths exist."""
    mounts = []
    for item in _sequence("mounts", value):
        if isinstance(item, Mount):
            mount = item
        elif isinstance(item, str | os.PathLike):
            mount = Mount.parse(os.fspath(item), base)
        else:
            raise ConfigError(f"mounts: {item!r}: expected 'HOST:CONTAINER[:ro]' or a Mount")
        if not mount.source.exists():
            raise ConfigError(f"mounts: {str(item)!r}: {mount.source} does not exist on the host")
        mounts.append(mount)
    return tuple(mounts)


def parse_ports(value: Any) -> FrozenMap[int, int | None]:
    """``[8080]`` (any free host port) or ``{8080: 18080}`` -> {container port: host port or
    None}. A port is a number or its text (``"8080"``, ``"8080/tcp"``); host port 0 is any."""
    if value is None:
        return FrozenMap()
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = [(port, None) for port in _sequence("ports", value)]
    ports: dict[int, int | None] = {}
    for container, host in pairs:
        number = _port(container, f"ports: {container!r}")
        if host is None or (host == 0 and not isinstance(host, bool)):
            ports[number] = None
        else:
            ports[number] = _port(host, f"ports: {container!r}: host port {host!r}")
    return FrozenMap(ports)


def _pairs(option: str, value: Any, sep: str, form: str) -> list[tuple[Any, Any]]:
    """A mapping's items, or ``KEY<sep>VALUE`` strings split at the first ``sep`` (``form``
    names the expected shape in the error)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return list(value.items())
    pairs = []
    for item in _sequence(option, value):
        if not isinstance(item, str) or sep not in item:
            raise ConfigError(f"{option}: {item!r}: expected {form}")
        key, _, text = item.partition(sep)
        pairs.append((key, text))
    return pairs


def parse_env(value: Any, option: str = "env") -> FrozenMap[str, str]:
    """A mapping, or ``KEY=VALUE`` strings -> {KEY: VALUE}."""
    pairs = _pairs(option, value, "=", "KEY=VALUE")
    env: dict[str, str] = {}
    for key, text in pairs:
        if not isinstance(key, str) or not key or "=" in key:
            raise ConfigError(f"{option}: {key!r}: expected a variable name (text without '=')")
        if text is None or isinstance(text, Mapping | list | tuple | set):
            raise ConfigError(f"{option}: {key}={text!r}: expected a text value")
        env[key] = str(text)
    return FrozenMap(env)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything ``run`` takes, normalised when made (see the module's docstring); it accepts
    each option in every form the user API allows and keeps the one form below.

    A new option is a field here and its reader in ``_FIELDS`` (a check that spans options
    goes in ``__post_init__``); the backends then read the field as it is."""

    image: Any  # a reference string or an Image
    name: str | None = None
    command: tuple[str, ...] | None = None  # None: the image's Cmd
    entrypoint: tuple[str, ...] | None = None  # None: the image's; () drops it
    env: Mapping[str, str] = FrozenMap()
    network: Any = None  # a Network, "host", "none" or None (own loopback-only namespace)
    aliases: tuple[str, ...] = ()
    ports: Mapping[int, int | None] = FrozenMap()  # container port -> host port (None: any)
    hostname: str | None = None
    user: str | None = None
    workdir: str | None = None
    mounts: tuple[Mount, ...] = ()
    tmpfs: Mapping[str, str] = FrozenMap()  # container path -> mount options
    read_only: bool = False
    init: bool = False
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None
    # the privilege boundary, with ``docker run``'s meaning (security.py says what it is)
    privileged: bool = False
    cap_add: tuple[str, ...] = ()  # names without CAP_, or "ALL"
    cap_drop: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    sysctls: Mapping[str, str] = FrozenMap()
    shm_size: int = DEFAULT_SHM  # bytes of /dev/shm
    extra_hosts: Mapping[str, str] = FrozenMap()  # name -> address, added to /etc/hosts
    volumes: tuple[VolumeMount, ...] = ()  # named volumes; an image VOLUME without one is anonymous
    stop_signal: str | None = None  # "SIGUSR1" or "10"; None: the image's StopSignal
    labels: Mapping[str, str] = FrozenMap()  # over the image's Labels, as Docker's --label

    def __post_init__(self) -> None:
        for option, parse in _FIELDS.items():
            object.__setattr__(self, option, parse(option, getattr(self, option)))
        if self.ports and isinstance(self.network, str) and self.network == "none":
            raise ConfigError(f"ports: {', '.join(map(str, self.ports))}: a container with "
                              "network='none' has nothing to publish them on (Docker refuses "
                              "it too); leave network out for a namespace of its own")

    def read_only_cause(self, logs: str) -> str:
        """Which read-only volume or mount of this request a log's "Read-only file system"
        lines write under ("volumes: 'data:/data:ro' mounts /data read-only"; "" when none):
        Docker refuses no such request, so the command's own error is all there is, and a
        container that exits of it is better told which option did that."""
        written = [path for line in logs.splitlines() if "Read-only file system" in line
                   for path in _ABSOLUTE.findall(line)]
        said = []
        for option, entries in (("volumes", self.volumes), ("mounts", self.mounts)):
            for entry in entries:
                target = entry.target.rstrip("/") or "/"
                if entry.read_only and any(
                        p == target or p.startswith(target.rstrip("/") + "/") for p in written):
                    said.append(f"{option}: {str(entry)!r} mounts {target} read-only")
        return "; ".join(said)

    @classmethod
    def create(cls, image: Any, *, base: Path | None = None, **options: Any) -> RunSpec:
        """A checked request; relative host paths of ``mounts`` are taken from ``base`` (the
        pytest rootdir for the fixtures, the current directory without one)."""
        if base is not None and options.get("mounts") is not None:
            options["mounts"] = parse_mounts(options["mounts"], base)
        if base is not None and options.get("security_opt") is not None:
            options["security_opt"] = _profiles_from(base, options["security_opt"])
        return cls(image, **options)


# -- one reader per option: (option name, raw value) -> the normalised value -----------------
def _text(option: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{option}: {value!r}: expected a string")
    return value


def _user(option: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)  # a uid
    return _text(option, value)


def _workdir(option: str, value: Any) -> str | None:
    text = _text(option, value)
    if text and not text.startswith("/"):
        raise ConfigError(f"workdir={text!r}: the working directory must be absolute")
    return text or None


def _command(option: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(shell_argv(value))
    return tuple(_word(option, value, word) for word in _sequence(option, value))


def _entrypoint(option: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):  # Docker splits a string entrypoint into words
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ConfigError(f"{option}: {value!r}: {exc}") from None
    return tuple(_word(option, value, word) for word in _sequence(option, value))


def _aliases(option: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(_sequence(option, value))
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{option}: {name!r}: expected a name")
    return names


def _tmpfs(option: str, value: Any) -> FrozenMap[str, str]:
    """``{"/run": "size=64m"}`` or ``["/run", "/tmp:size=1m"]``."""
    if value is None:
        return FrozenMap()
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = []
        for item in _sequence(option, value):
            if not isinstance(item, str):
                raise ConfigError(f"{option}: {item!r}: expected 'PATH' or 'PATH:OPTIONS'")
            path, _, options = item.partition(":")
            pairs.append((path, options))
    tmpfs: dict[str, str] = {}
    for path, options in pairs:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{option}: {path!r}: the container path must be absolute")
        if options is None:
            options = ""
        if not isinstance(options, str):
            raise ConfigError(f"{option}: {path}: {options!r}: expected mount options as text")
        tmpfs[path] = options
    return FrozenMap(tmpfs)


def _flag(option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{option}: {value!r}: expected True or False")
    return value


def _memory(option: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return memory_bytes(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {value!r}: {exc}") from None


def _cpus(option: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{option}: {value!r}: expected a positive number of CPUs")
    return number


def _pids(option: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool | float) or number < 1:
        raise ConfigError(f"{option}: {value!r}: expected a whole number >= 1")
    return number


def _capabilities(option: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    names: list[str] = []
    for item in _sequence(option, value):
        name = capability_name(item, option)
        if name not in names:
            names.append(name)
    return tuple(names)


def _security_opt(option: str, value: Any) -> tuple[str, ...]:
    """Docker's ``--security-opt`` words; what each means (and a profile's content) is read
    when the container starts (``security.security_options``)."""
    if value is None:
        return ()
    words = tuple(_sequence(option, value))
    for word in words:
        if not isinstance(word, str):
            raise ConfigError(f"{option}: {word!r}: expected text like 'no-new-privileges'")
        check_security_opt(word)
    return words


def _profiles_from(base: Path, value: Any) -> Any:
    """A relative ``seccomp=PROFILE.json`` is taken from ``base``, like mounts' host paths."""
    if value is None or isinstance(value, str):
        return value
    resolved = []
    for word in value:
        key, sep, path = str(word).partition("=")
        if key == "seccomp" and sep and path != "unconfined" and not os.path.isabs(path):
            word = f"seccomp={base / path}"
        resolved.append(word)
    return resolved


def _sysctls(option: str, value: Any) -> FrozenMap[str, str]:
    """Namespaced ones only (whether net.* may be set depends on the network: the engines
    check that); values as text."""
    if value is None:
        return FrozenMap()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{option}: {value!r}: expected a mapping like "
                          "{'net.ipv4.ip_forward': '1'}")
    return FrozenMap(dict(check_sysctl(key, text, host_network=False)
                          for key, text in value.items()))


def _shm_size(option: str, value: Any) -> int:
    if value is None:
        return DEFAULT_SHM
    try:
        number = byte_size(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {value!r}: {exc}") from None
    if number <= 0:
        raise ConfigError(f"{option}: {value!r}: expected a size above zero")
    return number


def _extra_hosts(option: str, value: Any) -> FrozenMap[str, str]:
    """``{"db": "10.0.0.5"}`` or Docker's ``["db:10.0.0.5"]``; each address is checked here,
    so a typo is an error naming it rather than a line in /etc/hosts that never resolves."""
    hosts: dict[str, str] = {}
    for name, address in _pairs(option, value, ":", "'NAME:ADDRESS'"):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"{option}: {name!r}: expected a host name")
        if address == HOST_GATEWAY:  # the host, as the container's network reaches it
            hosts[name] = HOST_GATEWAY
            continue
        try:
            hosts[name] = str(ipaddress.ip_address(str(address).strip("[]")))
        except ValueError:
            raise ConfigError(f"{option}: {name}={address!r}: not an IPv4 or IPv6 "
                              f"address (nor {HOST_GATEWAY})") from None
    return FrozenMap(hosts)


def _keep(option: str, value: Any) -> Any:
    """The image and the network: what they may be is each engine's to say (it pulls the one
    and knows its own kind of the other)."""
    return value


def stop_signal_name(option: str, value: Any) -> str | None:
    """``"SIGUSR1"``, ``"usr1"``, ``"10"`` or 10 -> ``"SIGUSR1"`` / ``"10"``: Docker's forms,
    checked here so a typo is not found only when the container is stopped."""
    if value is None:
        return None
    import signal

    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(
        value, bool) else ""
    if text.isdigit() and 0 < int(text) < 65:
        return text
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name in signal.Signals.__members__:
        return name
    raise ConfigError(f"{option}: {value!r}: not a signal name or number (e.g. 'SIGTERM')")


def _labels(option: str, value: Any) -> FrozenMap[str, str]:
    """``{"team": "db"}`` or ``["team=db"]``; ``pycontain.*`` keys are the engine's own."""
    labels = parse_env(value, option)
    for key in labels:
        if key.startswith("pycontain."):
            raise ConfigError(f"{option}: {key!r}: labels under 'pycontain.' are the engine's "
                              "own")
    return labels


_FIELDS = {
    "image": _keep, "name": _text, "command": _command, "entrypoint": _entrypoint,
    "env": lambda option, value: parse_env(value, option), "network": _keep,
    "aliases": _aliases, "ports": lambda option, value: parse_ports(value),
    "hostname": _text, "user": _user, "workdir": _workdir,
    "mounts": lambda option, value: parse_mounts(value) if value is not None else (),
    "tmpfs": _tmpfs, "read_only": _flag, "init": _flag, "memory": _memory, "cpus": _cpus,
    "pids": _pids, "privileged": _flag, "cap_add": _capabilities, "cap_drop": _capabilities,
    "security_opt": _security_opt, "sysctls": _sysctls, "shm_size": _shm_size,
    "extra_hosts": _extra_hosts, "volumes": parse_volumes, "stop_signal": stop_signal_name,
    "labels": _labels,
}


def _sequence(option: str, value: Any) -> list[Any]:
    """The items of a list-like option; a lone string is refused, not split into letters."""
    if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{option}: {value!r}: expected a list")
    return list(value)


def _word(option: str, whole: Any, word: Any) -> str:
    if isinstance(word, str):
        return word
    if isinstance(word, os.PathLike):
        return os.fspath(word)
    if isinstance(word, int | float) and not isinstance(word, bool):
        return str(word)
    raise ConfigError(f"{option}: {whole!r}: {word!r} is not a word of a command line")


def _port(value: Any, where: str) -> int:
    text = value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("/tcp"):
            text = text[:-len("/tcp")]
        if not text.isdigit():
            raise ConfigError(f"{where}: expected a TCP port number 1-65535")
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, int):
        raise ConfigError(f"{where}: expected a TCP port number 1-65535")
    if not 0 < text < 65536:
        raise ConfigError(f"{where}: out of range 1-65535")
    return text


__all__ = ["DEFAULT_SHM", "MIN_MEMORY", "Mount", "RunSpec", "VolumeMount", "byte_size",
           "check_volume_name", "memory_bytes", "parse_env", "parse_mounts", "parse_ports",
           "parse_volumes", "stop_signal_name"]
