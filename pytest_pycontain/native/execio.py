"""The engine's end of one exec: feed its stdin, gather stdout and stderr in the order they
came, and take its pid and exit code from its control socket (``protocol.py``).

One ``select`` loop over four descriptors, so that a command that fills one pipe while we
write to another never deadlocks, and a timeout can kill it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time
from collections.abc import Sequence

from ..engine import ExecResult
from ..errors import WaitTimeout
from .protocol import ExecExited, ExecStarted, ProtocolError, decode

__all__ = ["collect", "wait_exit"]


def collect(ctl: socket.socket, in_w: int, out_r: int, err_r: int, data: bytes,
            timeout: float | None, argv: Sequence[str], *, name: str,
            container_id: str) -> ExecResult:
    """Run the exchange to its end and close all five ends. ``WaitTimeout`` (with the output
    so far) kills the command once ``timeout`` seconds have passed."""
    selector = selectors.DefaultSelector()
    chunks: list[tuple[str, bytes]] = []
    pid = None
    exit_code = None
    opened = {in_w, out_r, err_r}

    def close(fd: int) -> None:
        if fd in opened:
            opened.discard(fd)
            os.close(fd)

    os.set_blocking(in_w, False)
    if data:
        selector.register(in_w, selectors.EVENT_WRITE, "stdin")
    else:
        close(in_w)
    selector.register(out_r, selectors.EVENT_READ, "stdout")
    selector.register(err_r, selectors.EVENT_READ, "stderr")
    selector.register(ctl, selectors.EVENT_READ, "ctl")
    deadline = None if timeout is None else time.monotonic() + timeout
    sent = 0
    try:
        while exit_code is None or len(selector.get_map()) > 1:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                output = b"".join(c for _, c in chunks).decode("utf-8", "replace")
                raise WaitTimeout(f"exec {list(argv)!r} in {name} did not finish within "
                                  f"{timeout}s", logs=output, container=container_id)
            events = selector.select(left)
            if exit_code is not None and not events:
                break
            for key, _ in events:
                if key.fileobj not in selector.get_map():
                    continue  # unregistered by an earlier event of this batch
                if key.data == "stdin":
                    try:
                        sent += os.write(in_w, data[sent:sent + 65536])
                    except BrokenPipeError:
                        sent = len(data)
                    if sent >= len(data):
                        selector.unregister(in_w)
                        close(in_w)
                elif key.data == "ctl":
                    raw = ctl.recv(65536)
                    if not raw:
                        selector.unregister(ctl)
                        if exit_code is None:
                            exit_code = 126
                        continue
                    try:
                        message = decode(raw)
                    except ProtocolError:
                        continue
                    if isinstance(message, ExecStarted):
                        pid = message.pid
                    elif isinstance(message, ExecExited):
                        exit_code = message.code
                        selector.unregister(ctl)
                        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
                            if fd in selector.get_map():  # drain: the process is gone
                                _drain(fd, stream, chunks)
                                selector.unregister(fd)
                else:
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        chunks.append((key.data, chunk))
                    else:
                        selector.unregister(key.fd)
    finally:
        selector.close()
        ctl.close()
        for fd in (in_w, out_r, err_r):
            close(fd)

    def text(stream: str | None) -> str:
        return b"".join(c for s, c in chunks if stream in (None, s)).decode("utf-8", "replace")

    return ExecResult(exit_code=exit_code if exit_code is not None else 126,
                      stdout=text("stdout"), stderr=text("stderr"), output=text(None))


def wait_exit(ctl: socket.socket) -> int:
    """The exit code of an exec whose stdio is not ours (a terminal); 126 if it never came."""
    try:
        while raw := ctl.recv(65536):
            with contextlib.suppress(ProtocolError):
                message = decode(raw)
                if isinstance(message, ExecExited):
                    return message.code
        return 126
    finally:
        ctl.close()


def _drain(fd: int, name: str, chunks: list[tuple[str, bytes]]) -> None:
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append((name, chunk))
