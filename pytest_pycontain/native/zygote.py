"""The single-threaded helper that forks every container shim and exec helper.

pytest has threads, and forking a threaded process is unsafe (a lock held by another thread
stays locked forever in the child). So the engine starts this process once, with everything
pre-imported, and sends it requests over a unix socket (one JSON datagram plus the file
descriptors the child needs); each fork costs about a millisecond. It dies with its owner
(parent-death signal), and so, in a chain, does every container it started.

Run as ``python -m pytest_pycontain.native.zygote FD OWNER_PID``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

from . import process
from . import syscalls as sc


def serve(sock: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    zygote = os.getpid()
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 8)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not message:
            return  # the engine closed its end, or died
        plan = json.loads(message)
        if plan["op"] == "warm":
            _fork_warm(sock, fds[0], zygote)
        else:
            _fork_helper(sock, plan, fds, zygote)
        for fd in fds:
            os.close(fd)


def _fork_warm(sock: socket.socket, ctl: int, zygote: int) -> None:
    """A shim made ahead: it readies its namespaces and PID 1, then waits on ``ctl`` for the
    engine's plan (the engine keeps the other end)."""
    if os.fork() == 0:
        try:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.set_inheritable(ctl, False)
            process.warm_shim(socket.socket(fileno=ctl), zygote)
        finally:
            os._exit(1)


def _fork_helper(sock: socket.socket, plan: dict, fds: list[int], zygote: int) -> None:
    if os.fork() != 0:
        return
    status = 1
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in fds:
            os.set_inheritable(fd, False)
        ctl = socket.socket(fileno=fds[0])
        if plan["op"] == "run":
            process.run_shim(plan, ctl, zygote)
        elif plan["op"] == "exec":
            process.run_exec(plan, ctl, fds[1:4], zygote)
        status = 0
    except BaseException as exc:
        with contextlib.suppress(Exception):
            process.send(socket.socket(fileno=os.dup(fds[0])),
                         {"error": f"helper failed: {exc!r}", "exit_code": 125})
    finally:
        os._exit(status)


def main(argv: list[str]) -> None:
    fd, owner = int(argv[1]), int(argv[2])
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != owner:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main(sys.argv)
