"""Every message between the native engine's processes, and the one place that encodes them.

The engine process (pytest, or ``pycontain``) never forks containers itself; a single-threaded
zygote does, and each container has a shim that stays beside its PID 1 (see
docs/architecture.md for the process tree)::

    engine ──zygote socket──► zygote ──fork──► shim ──fork──► PID 1 ──exec──► the command
       │                         └─────fork──► exec helper (a container of another owner)
       └──────────── control socket (one per shim; one per exec) ─────────┘

Sockets are ``AF_UNIX``/``SOCK_SEQPACKET``: one message per datagram, file descriptors passed
alongside (``[fds]`` below). The exchanges:

=====================  =======================================  ==============================
who -> whom            message [fds]                            answer
=====================  =======================================  ==============================
engine -> zygote       ``Warm(cgroups, stage)`` [ctl]           a shim that readies its
                                                                namespaces and PID 1 (in
                                                                ``cgroups``; its mounts in
                                                                ``stage``), then waits for
                                                                ``Run`` on ctl
engine -> zygote       ``Run(RunPlan)`` [ctl]                   a shim for that container
engine -> zygote       ``Exec(ExecPlan)`` [ctl, in, out, err]   an exec helper that joins the
                                                                container's namespaces
engine -> warm shim    ``Run(RunPlan)``                         as above, on its ctl
shim -> engine         ``Created(pid, shim)``                   only with ``plan.pause``: the
                                                                engine sets up networks, then
engine -> shim         ``Go``                                   PID 1 may start the command
shim -> engine         ``Started(pid, shim)`` or ``Failed``     the command runs (or not)
engine -> shim         ``Signal(number)``                       relayed to PID 1
engine -> shim         ``Exec(ExecPlan)`` [ctl, in, out, err]   forked in the container
shim/helper -> engine  ``ExecStarted(pid)``, ``ExecExited``     on the exec's own ctl
shim -> engine         ``Exited(code)``                         PID 1 ended
engine -> shim         ``Keep`` [lock, netns?, dns?, ports...]  ``Kept``: the shim outlives us
engine -> shim         ``Exit`` (or closing ctl)                kill PID 1 (``Exited`` once
                                                                 reaped); the shim ends
shim -> PID 1          ``Launch`` (a pipe, then closed)         PID 1 enters the root, execs
PID 1 -> shim          ``Failed`` (a close-on-exec pipe)        EOF alone: the exec worked
=====================  =======================================  ==============================

On the wire a message is a JSON object: ``{"op": <Op>, <its fields>}``; plans are nested
objects. JSON keeps a start as cheap as it was (one ``dumps``, one ``loads``) and readable in
``strace``. Both sides always come from the same installed package, so the format has no
version of its own.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

from .boundary import UNCONFINED, Boundary
from .syscalls import write_fully

__all__ = [
    "Bind", "Created", "Exec", "ExecExited", "ExecPlan", "ExecStarted", "Exit", "Exited",
    "Failed", "Go", "Keep", "Kept", "Launch", "Message", "Op", "ProtocolError", "Run", "RunPlan",
    "Signal", "Started", "Warm", "decode", "encode", "read_all", "receive", "receive_with_fds",
    "send", "write_all",
]


class ProtocolError(ValueError):
    """A datagram that is not a message of this protocol (a bug, never user input)."""


class Op(str, enum.Enum):
    """The name of each message on the wire."""

    # requests
    RUN = "run"
    EXEC = "exec"
    WARM = "warm"
    GO = "go"
    SIGNAL = "signal"
    KEEP = "keep"
    EXIT = "exit"
    LAUNCH = "launch"
    # answers
    CREATED = "created"
    STARTED = "started"
    EXITED = "exited"
    KEPT = "kept"
    EXEC_STARTED = "exec-started"
    EXEC_EXITED = "exec-exited"
    FAILED = "failed"


# --- plans ---------------------------------------------------------------------------------

class Bind(NamedTuple):
    """A bind mount: host ``source`` on container ``target``; ``nocopy``: a volume that is
    not filled with the image's content even when empty; ``subpath``: a directory of the
    volume, resolved inside it when mounted (a symlink in it never leads out)."""

    source: str
    target: str
    read_only: bool = False
    nocopy: bool = False
    subpath: str | None = None  # only this directory of ``source``, resolved inside it


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(a), str(b)) for a, b in value)


def _binds(value: Any) -> tuple[Bind, ...]:
    return tuple(Bind(*item) for item in value)


def _load(cls: type, data: Mapping[str, Any], convert: Mapping[str, Callable[[Any], Any]]
          ) -> Any:
    """``cls(**data)`` with JSON's lists turned back into the fields' tuples; an unknown or
    missing field is a ``ProtocolError``."""
    try:
        return cls(**{k: convert[k](v) if k in convert else v for k, v in data.items()})
    except TypeError as exc:
        raise ProtocolError(f"{cls.__name__}: {exc}") from None


def _boundary(value: Any) -> Boundary | None:
    return None if value is None else Boundary.from_json(value)


def _dump(value: Any) -> dict[str, Any]:
    """A dataclass's fields, one level deep (tuples and NamedTuples are JSON lists as such; a
    ``Boundary`` says its own JSON form)."""
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    for name, field in fields.items():
        if isinstance(field, Boundary):
            fields[name] = field.to_json()
    return fields


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Everything a shim needs to start one container; made once by the engine, never changed.

    ``directory`` holds ``l/0..`` (links to ``lower``, bottom first), ``upper``, ``work`` and
    ``merged``; the shim writes the logs, ``exit`` and ``mountpoints.json`` there. ``etc`` maps
    ``hosts``, ``hostname`` and ``resolv.conf`` to their text. With ``pause`` the shim answers
    ``Created`` and waits for ``Go`` before the command starts. With ``shim_joins`` the shim
    is in ``cgroups`` too, so that its children are born there (``Limits.shim_joins``): a warm
    shim renames its spare set (``Warm.cgroups``) to them, a cold one joins them."""

    directory: str
    lower: tuple[str, ...]
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    user: str
    hostname: str
    host_network: bool = False
    read_only: bool = False
    mounts: tuple[Bind, ...] = ()
    tmpfs: tuple[tuple[str, str], ...] = ()  # (target, Docker's --tmpfs options)
    init: bool = False
    cgroups: tuple[str, ...] = ()
    shim_joins: bool = False
    cgroup2: bool = False  # ``cgroups`` is one v2 cgroup: PID 1 mounts cgroup2 inside
    etc: dict[str, str] = dataclasses.field(default_factory=dict)
    pause: bool = False
    boundary: Boundary = UNCONFINED  # what confines PID 1 and every exec (boundary.py)
    shm_size: int = 64 * 1024 * 1024  # bytes of /dev/shm (Docker's default)
    volumes: tuple[Bind, ...] = ()  # bound like mounts; an empty one takes the image's content

    _CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "lower": _strings, "argv": _strings, "mounts": _binds, "volumes": _binds,
        "tmpfs": _pairs,
        "cgroups": _strings, "boundary": _boundary}


@dataclasses.dataclass(frozen=True)
class ExecPlan:
    """One command to run in the running container whose PID 1 is ``pid``."""

    pid: int
    argv: tuple[str, ...]
    env: dict[str, str]
    user: str
    workdir: str
    cgroups: tuple[str, ...] = ()
    boundary: Boundary | None = None  # None: the shim's own (an exec helper needs it said)

    _CONVERT: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "argv": _strings, "cgroups": _strings, "boundary": _boundary}


# --- messages ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Message:
    """A message of this protocol; each kind says its ``op``."""

    op: ClassVar[Op]

    def fields(self) -> dict[str, Any]:
        return _dump(self)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Message:
        return _load(cls, data, {})


@dataclasses.dataclass(frozen=True)
class Run(Message):
    """Start a container (to the zygote, or to a warm shim)."""

    op = Op.RUN
    plan: RunPlan

    def fields(self) -> dict[str, Any]:
        return {"plan": _dump(self.plan)}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Message:
        return cls(_load(RunPlan, data["plan"], RunPlan._CONVERT))


@dataclasses.dataclass(frozen=True)
class Exec(Message):
    """Run a command in a container (to its shim, or to the zygote for an exec helper)."""

    op = Op.EXEC
    plan: ExecPlan

    def fields(self) -> dict[str, Any]:
        return {"plan": _dump(self.plan)}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Message:
        return cls(_load(ExecPlan, data["plan"], ExecPlan._CONVERT))


@dataclasses.dataclass(frozen=True)
class Warm(Message):
    """Make a shim ahead of time (to the zygote). ``cgroups``: a spare set its PID 1 is born
    in (``process.warm_shim``): v1's are renamed into the container's, a v2 one is named as
    the container that takes it. ``stage``: where, in its own mount namespace, PID 1 mounts its
    /proc and cgroup filesystem while it waits, moved into the root at the start."""

    op = Op.WARM
    cgroups: tuple[str, ...] = ()
    stage: str | None = None  # an empty directory where PID 1 mounts ahead (``warm_shim``)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Message:
        return _load(cls, data, {"cgroups": _strings})


@dataclasses.dataclass(frozen=True)
class Go(Message):
    """The engine is done with a paused container: start its command."""

    op = Op.GO


@dataclasses.dataclass(frozen=True)
class Signal(Message):
    """Send ``number`` to the container's PID 1."""

    op = Op.SIGNAL
    number: int


@dataclasses.dataclass(frozen=True)
class Keep(Message):
    """Outlive the engine: hold the journal lock passed first, then, for each of its networks,
    that network's namespace and DNS socket (answering the names in ``dns``, one table per
    network, in that order), and serve published container ``ports`` on the listening
    sockets passed last, relaying to ``target`` (its address) from the first network's
    namespace."""

    op = Op.KEEP
    dns: tuple[dict[str, list[str]], ...] = ()
    ports: tuple[int, ...] = ()
    target: str | None = None

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Message:
        return _load(cls, data, {"ports": tuple, "dns": tuple})


@dataclasses.dataclass(frozen=True)
class Exit(Message):
    """Kill PID 1 and end (closing the control socket means the same)."""

    op = Op.EXIT


@dataclasses.dataclass(frozen=True)
class Launch(Message):
    """What PID 1 needs from its shim to become the command: resolved user, root, workdir."""

    op = Op.LAUNCH
    root: str
    argv: tuple[str, ...]
    env: dict[str, str]
    uid: int
    gid: int
    groups: tuple[int, ...]
    workdir: str
    init: bool = False
    boundary: Boundary = UNCONFINED
    cgroup2: bool = False
    staged_cgroups: bool = False  # PID 1 is in the cgroups it mounted ahead (read-only) in

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Message:
        return _load(cls, data, {"argv": _strings, "groups": tuple, "boundary": _boundary})


@dataclasses.dataclass(frozen=True)
class Created(Message):
    """The namespaces and PID 1 exist, the command has not started (``RunPlan.pause``)."""

    op = Op.CREATED
    pid: int
    shim: int


@dataclasses.dataclass(frozen=True)
class Started(Message):
    """The command runs as ``pid`` (PID 1) under shim ``shim``."""

    op = Op.STARTED
    pid: int
    shim: int


@dataclasses.dataclass(frozen=True)
class Exited(Message):
    """PID 1 ended: ``code`` as a shell says it (128 + signal when killed)."""

    op = Op.EXITED
    code: int


@dataclasses.dataclass(frozen=True)
class Kept(Message):
    """The shim holds the container for a keeper now."""

    op = Op.KEPT


@dataclasses.dataclass(frozen=True)
class ExecStarted(Message):
    """An exec'd command runs as ``pid`` (in the container's pid namespace's parent's view)."""

    op = Op.EXEC_STARTED
    pid: int


@dataclasses.dataclass(frozen=True)
class ExecExited(Message):
    """An exec'd command ended with ``code``; ``error`` when it could not even start."""

    op = Op.EXEC_EXITED
    code: int
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Failed(Message):
    """A container (or a helper) could not start: Docker's words and exit code (125-127)."""

    op = Op.FAILED
    error: str
    exit_code: int


_KINDS: dict[str, type[Message]] = {
    kind.op.value: kind for kind in (Run, Exec, Warm, Go, Signal, Keep, Exit, Launch, Created,
                                     Started, Exited, Kept, ExecStarted, ExecExited, Failed)}


def encode(message: Message) -> bytes:
    """One datagram's bytes."""
    return json.dumps({"op": message.op.value, **message.fields()}).encode()


def decode(data: bytes) -> Message:
    """The message in ``data``; ``ProtocolError`` if it is none."""
    try:
        fields = json.loads(data)
        kind = _KINDS[fields.pop("op")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"not a message: {data[:200]!r}") from exc
    return kind.load(fields)


# --- sockets -------------------------------------------------------------------------------

def send(sock: socket.socket, message: Message, fds: list[int] | None = None) -> None:
    """One message (and ``fds``) as one datagram."""
    data = encode(message)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket, size: int = 65536) -> Message | None:
    """The next message, or None once the other end has closed."""
    data = sock.recv(size)
    return decode(data) if data else None


def receive_with_fds(sock: socket.socket, size: int = 65536, max_fds: int = 8
                     ) -> tuple[Message | None, list[int]]:
    """The next message and the file descriptors that came with it (None, [] at the end)."""
    data, fds, _, _ = socket.recv_fds(sock, size, max_fds)
    try:
        return (decode(data) if data else None), fds
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise


def write_all(fd: int, message: Message) -> None:
    """A message down a pipe (``Launch``, ``Failed``): the reader reads to EOF."""
    write_fully(fd, encode(message))


def read_all(fd: int) -> Message | None:
    """The message a pipe carried, read to EOF (None when the writer sent nothing)."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return decode(data) if data else None
