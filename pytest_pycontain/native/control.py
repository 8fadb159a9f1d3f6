"""How a container handle reaches its container: through a shim of ours, or from outside.

A container this engine started has a shim holding a control socket to us (``OwnShim``): it
starts the command, relays signals and execs, reports the exit, and can be kept alive for a
keeper. A container of another owner (``pycontain exec ID`` on a kept container, found by
``NativeEngine.attach``) has no socket of ours (``ForeignShim``): we signal its PID 1 directly,
ask the zygote for an exec helper that joins its namespaces, and read its exit from its
directory. ``NativeContainer`` reaches either through ``Control``; only starting and keeping
need an ``OwnShim``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..procinfo import process_alive
from .protocol import (
    Created,
    Exec,
    ExecPlan,
    Exit,
    Exited,
    Failed,
    Go,
    Keep,
    Kept,
    Message,
    Run,
    RunPlan,
    Signal,
    Started,
    decode,
    send,
)
from .zygote_client import WarmShim, ZygoteClient

if TYPE_CHECKING:
    from .boundary import Boundary

__all__ = ["Control", "ForeignShim", "OwnShim"]


class Control(Protocol):
    """What a container handle needs to reach its container, either way."""

    exit_code: int | None

    def poll(self, timeout: float | None = 0) -> bool:
        """Whether PID 1 has exited, waiting up to ``timeout`` seconds (None: for ever)."""
        ...

    def lost(self, timeout: float | None) -> bool:
        """After ``poll(timeout)`` said no: whether the shim is gone without a word."""
        ...

    def signal(self, number: int) -> None: ...

    def exec(self, plan: ExecPlan, fds: list[int]) -> None:
        """Start ``plan`` with ``fds`` (its control socket, stdin, stdout, stderr)."""
        ...

    def end(self, *, settle: bool = True) -> bool:
        """Kill PID 1 and wait for the end; True when what the container leaves (cgroups,
        files, network links) is ours to remove. ``settle=False``: return once every process
        of the container is gone, before the shim's own end, which ``settle()`` waits for."""
        ...

    def settle(self) -> None:
        """After ``end(settle=False)``: wait until the shim is gone too, then ``close()``."""
        ...

    def close(self) -> None: ...


class OwnShim:
    """The control socket to a shim this engine started (see ``protocol.py`` for what goes
    over it). One reader at a time: ``poll`` and ``keep`` hold the lock."""

    def __init__(self, zygote: ZygoteClient):
        self._zygote = zygote
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._shim_fd: int | None = None
        self.exit_code: int | None = None
        self.spare_cgroups: tuple[str, ...] = ()  # a warm shim's, where it was born

    def start(self, plan: RunPlan, timeout: float,
              created: Callable[[int, int], None] | None = None,
              warm: WarmShim | None = None) -> Message | None:
        """Start the container: a warm shim when one is ready (its own network namespace
        only), else a fresh one. With ``plan.pause``, ``created(pid, shim)`` runs between
        ``Created`` and ``Go``. Returns ``Started``, a ``Failed``, or None (the shim died);
        raises ``TimeoutError``. ``warm``: the one the engine took for it already."""
        if warm is None and not plan.host_network:
            warm = self._zygote.take_warm()
        if warm is not None:  # a shim with its namespaces and PID 1 made ahead
            self.spare_cgroups = warm.cgroups
            try:
                send(warm.sock, Run(plan))
                self._sock = warm.sock
            except OSError:
                warm.sock.close()
        if self._sock is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._sock = ours
            try:
                self._zygote.send(Run(plan), [theirs.fileno()])
            finally:
                theirs.close()
        if not plan.host_network:
            with contextlib.suppress(OSError):  # a zygote gone: the next start makes a new one
                self._zygote.refill()
        reply = self._receive(timeout)
        if isinstance(reply, Created) and created is not None:
            try:
                created(reply.pid, reply.shim)
            except Exception:
                # the shim makes the root meanwhile: if that failed (and PID 1 went with it,
                # which failed this), its reason is the one to give
                with contextlib.suppress(TimeoutError):
                    failed = self._receive(0.2)
                    if isinstance(failed, Failed):
                        return failed
                raise
            self._tell(Go())
            reply = self._receive(timeout)
        if isinstance(reply, Started):
            with contextlib.suppress(OSError):  # to wait for the shim's very end at removal
                self._shim_fd = os.pidfd_open(reply.shim)
        return reply

    def _receive(self, timeout: float | None) -> Message | None:
        """One message from the shim (None on EOF); raises TimeoutError."""
        assert self._sock is not None
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise TimeoutError from None
        except OSError:
            data = b""
        if not data:
            return None
        message = decode(data)
        if isinstance(message, Exited):
            self.exit_code = message.code
        return message

    def _tell(self, message: Message, fds: list[int] | None = None) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            send(self._sock, message, fds)

    def poll(self, timeout: float | None = 0) -> bool:
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.exit_code is None and self._sock is not None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    if self._receive(left) is None:
                        break
                except TimeoutError:
                    break
                except BlockingIOError:
                    break
            return self.exit_code is not None

    def lost(self, timeout: float | None) -> bool:
        return self._sock is None or timeout is None

    def signal(self, number: int) -> None:
        self._tell(Signal(int(number)))

    def exec(self, plan: ExecPlan, fds: list[int]) -> None:
        self._tell(Exec(plan), fds)

    def keep(self, fds: list[int], dns: tuple[dict[str, list[str]], ...] = (),
             ports: tuple[int, ...] = (), target: str | None = None) -> None:
        """Hand the container to a keeper: ``fds`` are the keeper's journal lock, then a
        namespace and a DNS socket for each network (``dns``: the names of each), then one
        listening socket for each published container port in ``ports`` (relayed to
        ``target``, its address, from the first network's namespace)."""
        self._tell(Keep(dns, ports, target), fds)
        with self._lock:
            while True:
                reply = self._receive(5)
                if reply is None or isinstance(reply, Kept):
                    break

    def end(self, *, settle: bool = True) -> bool:
        self._tell(Exit())
        with self._lock:
            self._wait_for_end(shim_too=settle)
        return True

    def settle(self) -> None:
        with self._lock:
            self._wait_for_end(shim_too=True)
            self.close()

    def _wait_for_end(self, shim_too: bool) -> None:
        """Until ``Exited`` (PID 1 reaped: the shim says so, or said so before) or, with
        ``shim_too``, the shim's very end: it closes its end as it goes, and EOF comes a
        moment before the process is gone (its pidfd then)."""
        while self._sock is not None and (shim_too or self.exit_code is None):
            try:
                if self._receive(10) is None:
                    break
            except TimeoutError:
                break
        if shim_too and self._shim_fd is not None:
            select.select([self._shim_fd], [], [], 10)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._shim_fd is not None:
            os.close(self._shim_fd)
            self._shim_fd = None


class ForeignShim:
    """A container of another owner, alive or kept: its PID 1 (told from a reused pid by its
    start time), its directory (``exit`` is written there), our zygote for execs and the
    boundary they are confined by (its own shim would know that; a zygote helper must be told)."""

    def __init__(self, zygote: ZygoteClient, pid: int, started_at: int | None,
                 directory: Path, boundary: Boundary):
        self._zygote = zygote
        self._pid = pid
        self._started_at = started_at
        self._dir = directory
        self._boundary = boundary
        self.exit_code: int | None = None

    def _exited(self) -> bool:
        if self.exit_code is not None:
            return True
        if process_alive(self._pid, self._started_at):
            return False
        try:
            self.exit_code = int((self._dir / "exit").read_text())
        except (OSError, ValueError):
            self.exit_code = 128 + signal.SIGKILL
        return True

    def poll(self, timeout: float | None = 0) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._exited():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def lost(self, timeout: float | None) -> bool:
        return False

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, int(number))

    def exec(self, plan: ExecPlan, fds: list[int]) -> None:
        # not our shim: a zygote child joins the namespaces, and confines the command as PID 1
        self._zygote.send(Exec(dataclasses.replace(plan, boundary=self._boundary)), fds)

    def end(self, *, settle: bool = True) -> bool:
        """Its owner is alive and cleans up once PID 1 is gone."""
        if not self._exited():
            self.signal(signal.SIGKILL)
            self.poll(10)
        return False

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass
