"""The engine's side of the zygote: starting it, handing it requests, keeping warm shims ready.

One per engine, shared by its containers (they ask it for a shim, or for an exec helper when
the container is another owner's). The zygote itself is ``zygote.py``; what the two say to each
other is ``protocol.py``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EngineUnavailable
from ..procinfo import process_start_time
from . import state
from .protocol import Message, Warm, send

__all__ = ["WarmShim", "ZygoteClient"]


@dataclasses.dataclass(frozen=True)
class WarmShim:
    """A shim made ahead: its control socket, and the spare cgroups it and its PID 1 are in
    (none where the engine makes no spare ones)."""

    sock: socket.socket
    cgroups: tuple[str, ...] = ()


class ZygoteClient:
    """Starts the zygote on first use (and again if it died), passes it requests, and keeps
    ``warm`` shims made ahead (namespaces and PID 1 ready) for the next container start;
    ``spare_cgroups()`` makes (and journals) the cgroups each is born in, if any; ``stage`` is
    an empty directory where each one's PID 1 mounts ahead (``process.warm_shim``)."""

    def __init__(self, journal: state.Journal, *, warm: int = 1,
                 spare_cgroups: Callable[[], tuple[str, ...]] | None = None,
                 stage: str | None = None):
        self._journal = journal
        self._warm_wanted = warm
        self._spare_cgroups = spare_cgroups
        self._stage = stage  # for warm PID 1s' mounts made ahead (``Warm.stage``)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._warm: list[WarmShim] = []  # shims made ahead

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs (it is journalled, so the reaper finds it)."""
        return self._process.pid if self._process is not None else None

    def send(self, message: Message, fds: list[int]) -> None:
        """Hand ``message`` (``Run`` or ``Exec``) and ``fds`` to the zygote, starting it first
        if needed."""
        with self._lock:
            self._ensure_started()
            send(self._sock, message, fds)  # type: ignore[arg-type]

    def take_warm(self) -> WarmShim | None:
        """A warm shim, if one is ready (``refill`` orders the next one)."""
        with self._lock:
            self._ensure_started()
            return self._warm.pop() if self._warm else None

    def refill(self) -> None:
        """Order warm shims up to the number wanted: after a start has been handed its shim,
        so that making the next one (its spare cgroups, the zygote's fork) does not delay it."""
        with self._lock:
            self._ensure_started()
            self._order_warm()

    def close(self) -> None:
        """Close the warm shims (they end unused) and the zygote's socket, then wait for it."""
        with self._lock:
            for warm in self._warm:
                warm.sock.close()
            self._warm.clear()
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._process is not None:
                try:
                    self._process.wait(5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
                self._process = None

    def _ensure_started(self) -> None:
        if self._process is None or self._process.poll() is not None:
            self._start()

    def _order_warm(self) -> None:
        while len(self._warm) < self._warm_wanted:
            cgroups = self._spare_cgroups() if self._spare_cgroups is not None else ()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            warm = Warm(cgroups, self._stage if cgroups else None)
            send(self._sock, warm, [theirs.fileno()])  # type: ignore[arg-type]
            theirs.close()
            self._warm.insert(0, WarmShim(ours, cgroups))

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH")) if p)
        started: list[Any] = []
        ready = threading.Event()

        def keeper() -> None:
            """The zygote's parent-death signal fires when the *thread* that forked it ends,
            so a thread that lives as long as this process forks it (not a pool worker)."""
            try:
                started.append(subprocess.Popen(
                    [sys.executable, "-m", "pytest_pycontain.native.zygote",
                     str(theirs.fileno()), str(os.getpid())],
                    pass_fds=[theirs.fileno()], start_new_session=True, env=env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
            except BaseException as exc:
                started.append(exc)
            ready.set()
            if isinstance(started[0], subprocess.Popen):
                started[0].wait()

        threading.Thread(target=keeper, name="pycontain-zygote", daemon=True).start()
        ready.wait()
        theirs.close()
        if isinstance(started[0], BaseException):
            ours.close()
            raise EngineUnavailable(f"cannot start the engine's helper: {started[0]}")
        if self._sock is not None:  # a zygote that died: its socket and warm shims are gone
            self._sock.close()
            for warm in self._warm:
                warm.sock.close()
            self._warm.clear()
        self._process = started[0]
        self._sock = ours
        self._journal.record("process", pid=self._process.pid,
                             start=process_start_time(self._process.pid))
