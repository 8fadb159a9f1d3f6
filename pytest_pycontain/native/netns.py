"""Network namespaces: opening and entering them, and a thread that lives in one.

Entering a namespace with ``setns`` moves only the calling thread, so every piece of work in
another namespace runs on a thread made for it: ``NetnsThread`` (long-lived, e.g. a network's
bridge namespace, which it holds open for as long as it runs) or ``in_netns`` (one call).
pyroute2 is imported lazily, inside those threads: its sockets belong to the namespace of the
thread that makes them. Namespaces are given as a path (``/proc/PID/ns/net``, see
``netns_of``) or an open fd.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Union

from ..errors import NetworkError

NetnsRef = Union[int, str, "os.PathLike[str]"]


def netns_of(pid: int) -> str:
    """The network namespace of a process, as a path ``attach`` and the proxy take."""
    return f"/proc/{int(pid)}/ns/net"


def open_netns(ref: NetnsRef) -> int:
    """An fd of its own on the namespace ``ref`` (a path, or an fd that is duplicated)."""
    try:
        if isinstance(ref, int) and not isinstance(ref, bool):
            fd = os.dup(ref)
        else:
            fd = os.open(os.fspath(ref), os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, TypeError) as exc:
        raise NetworkError(f"cannot open network namespace {ref!r}: {exc}") from exc
    try:
        kind = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        kind = "?"
    if not kind.startswith("net:["):
        os.close(fd)
        raise NetworkError(f"{ref!r} is not a network namespace (it is {kind}); pass "
                           "/proc/PID/ns/net or an fd opened on it")
    return fd


def enter_netns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace ``fd``."""
    from . import syscalls

    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    except OSError as exc:
        raise NetworkError(f"cannot enter network namespace (fd {fd}): {exc.strerror or exc}; "
                           "pass /proc/PID/ns/net or an fd opened on it") from exc


class NetnsThread:
    """A thread living in one network namespace that runs calls there with an IPRoute.

    ``netns=None`` makes a new, empty namespace for it. ``fd`` is the namespace's fd, held as
    long as the thread lives.
    """

    def __init__(self, netns: int | None = None, *, label: str = "netns"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.fd = -1
        self._ipr: Any = None
        self._thread = threading.Thread(target=self._run, args=(netns,), daemon=True,
                                        name=f"pycontain-{label}")
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def _run(self, netns: int | None) -> None:
        try:
            if netns is None:
                from . import syscalls

                syscalls.unshare(syscalls.CLONE_NEWNET)
            else:
                enter_netns(netns)
            self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException as exc:
            if isinstance(exc, OSError):
                exc = NetworkError(f"cannot make a network namespace: {exc}")
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, args, box, done = job
            try:
                box.append(fn(self.ipr, *args))
            except BaseException as exc:
                box.append(exc)
                box.append(done)  # marks an exception
            if done is not None:
                done.set()
        if self._ipr is not None:
            self._ipr.close()
        os.close(self.fd)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(ipr, *args)`` run in the namespace; its exception is raised here."""
        if not self._thread.is_alive():
            raise NetworkError("the namespace's thread has ended (network removed?)")
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((fn, args, box, done))
        done.wait()
        if len(box) == 2:
            raise box[0]
        return box[0]

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(ipr, *args)`` in the namespace, later: calls run in order, errors are dropped."""
        self._jobs.put((fn, args, [], None))

    def close(self, wait: bool = True) -> None:
        """End the thread after the calls queued so far (and with it, its hold on the netns)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            if wait:
                self._thread.join(10)


def in_netns(netns: NetnsRef, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(ipr, *args)`` in a short-lived thread inside ``netns``."""
    fd = open_netns(netns)
    try:
        worker = NetnsThread(fd, label="netns-call")
    finally:
        os.close(fd)
    try:
        return worker.call(fn, *args)
    finally:
        worker.close()


def delete_link(ipr: Any, ifname: str | None) -> None:
    """Delete the interface ``ifname`` of ``ipr``'s namespace, if it is there (best effort:
    undoing is never the error a caller reports)."""
    if not ifname:
        return
    found = ipr.link_lookup(ifname=ifname)
    if found:
        with contextlib.suppress(Exception):
            ipr.link("del", index=found[0])

