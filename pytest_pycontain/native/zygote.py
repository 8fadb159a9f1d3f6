"""The single-threaded helper that forks every container shim and exec helper.

pytest has threads, and forking a threaded process is unsafe (a lock held by another thread
stays locked forever in the child). So the engine starts this process once, with everything
pre-imported, and sends it requests over a unix socket (``Warm``, ``Run`` or ``Exec`` of
``protocol.py``, with the file descriptors the child needs); each fork costs about a
millisecond. It dies with its owner (parent-death signal), and so, in a chain, does every
container it started. The engine's side is ``zygote_client.py``.

What it imports is what every shim, PID 1 and exec'd command starts from, and each forked child
pays for touching it (copy-on-write faults). No module it loads may register an at-fork hook:
``threading``'s and ``random``'s run Python code in every child (about 170 faults, ~0.4 ms of
CPU each), so the modules below import those where they use them, never at the top.

Run as ``python -m pytest_pycontain.native.zygote FD OWNER_PID``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from ..idmap import in_user_namespace
from . import process
from . import syscalls as sc
from .protocol import Exec, Failed, Message, ProtocolError, Run, Warm, receive_with_fds, send


def serve(sock: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    zygote = os.getpid()
    while True:
        try:
            message, fds = receive_with_fds(sock, 1 << 20, 8)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except ProtocolError:
            continue  # not ours to guess at: the engine's request gets no helper
        if message is None:
            return  # the engine closed its end, or died
        if isinstance(message, Warm):
            _fork_warm(sock, fds[0], zygote, message.cgroups, message.stage)
        elif isinstance(message, (Run, Exec)):
            _fork_helper(sock, message, fds, zygote)
        for fd in fds:
            os.close(fd)


def _fork_warm(sock: socket.socket, ctl: int, zygote: int, cgroups: tuple[str, ...],
               stage: str | None) -> None:
    """A shim made ahead: it readies its namespaces and PID 1 (in the spare ``cgroups``, its
    mounts in ``stage``), then waits on ``ctl`` for the engine's plan (the engine keeps the
    other end)."""
    if os.fork() == 0:
        try:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.set_inheritable(ctl, False)
            process.warm_shim(socket.socket(fileno=ctl), zygote, cgroups, stage)
        finally:
            os._exit(1)


def _fork_helper(sock: socket.socket, request: Message, fds: list[int], zygote: int) -> None:
    if os.fork() != 0:
        return
    status = 1
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in fds:
            os.set_inheritable(fd, False)
        ctl = socket.socket(fileno=fds[0])
        if isinstance(request, Run):
            process.run_shim(request.plan, ctl, zygote)
        elif isinstance(request, Exec):
            process.run_exec(request.plan, ctl, fds[1:4], zygote)
        status = 0
    except BaseException as exc:
        with contextlib.suppress(Exception):
            send(socket.socket(fileno=os.dup(fds[0])), Failed(f"helper failed: {exc!r}", 125))
    finally:
        os._exit(status)


def main(argv: list[str]) -> None:
    fd, owner = int(argv[1]), int(argv[2])
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != owner:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    in_user_namespace()  # answered here once, for every child (they share our namespace)
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main(sys.argv)
