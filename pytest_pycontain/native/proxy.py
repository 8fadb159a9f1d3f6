"""Published ports: a userspace TCP proxy from 127.0.0.1 of the host into a container.

The proxy listens in the test process's own namespace; each connection is relayed by a thread
that first enters a network namespace and connects to ``TARGET:PORT`` there, so it needs no
route into the network. The engine gives it the namespace of the container's network bridge
and the container's address there, so published traffic crosses the container's interface as
on Docker (``probe_port`` looks inside the container's own namespace instead).
Streams of any size pass through unchanged; a half-close travels to the other side, and a
connection ends when both directions have.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import NetworkError
from .netns import NetnsRef, enter_netns, open_netns
from .netrecords import drop_record, write_record

CONNECT_TIMEOUT = 5.0


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until EOF, then pass the half-close on."""
    try:
        while True:
            data = src.recv(262144)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):  # one side broke: end both directions
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class SocketMaker:
    """Makes TCP sockets in the network namespace of the thread that made it, on a thread of
    its own kept there. A socket belongs to the namespace it was made in and works from any
    thread, so a relay whose threads live elsewhere connects through the maker's sockets where
    its threads cannot enter that namespace (rootless: the host's namespace belongs to the
    host's user namespace, and setns back into it is refused)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="pycontain-sockets").start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            box, done = job
            try:
                box.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            except OSError as exc:
                box.append(exc)
            done.set()

    def socket(self) -> socket.socket:
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((box, done))
        done.wait()
        if isinstance(box[0], OSError):
            raise box[0]
        return box[0]

    def close(self) -> None:
        self._jobs.put(None)


class PortProxy:
    """``host:host_port`` (0: any free port) relayed to ``target:container_port`` in ``netns``.

    ``netns`` is a path such as ``/proc/PID/ns/net`` or an open fd (duplicated: the caller keeps
    its own). ``port`` is the host port actually bound. ``pausable``: a relay to a port that
    may have no listener (``expose_host_port``, under ``listening.ListenWatch``), where a
    connection that finds none is reset and the relay pauses (its port then refuses).
    """

    def __init__(self, netns: NetnsRef, container_port: int, host_port: int = 0, *,
                 host: str = "127.0.0.1", target: str = "127.0.0.1",
                 records_dir: str | os.PathLike | None = None,
                 sockets: SocketMaker | None = None, pausable: bool = False):
        for value, what in ((container_port, "container port"), (host_port, "host port")):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise NetworkError(f"publish: {what} must be a number 0-65535, got {value!r}")
        if container_port == 0:
            raise NetworkError("publish: container port 0 is not a port")
        self.container_port = container_port
        self.host = host
        self.target = target
        self._sockets = sockets  # upstream sockets made in ``netns`` by another thread (owned)
        self._nsfd = open_netns(netns)
        self._record: Path | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._resumed = threading.Condition(self._lock)
        self._closed = False
        self._paused = False
        self._pausable = pausable
        self._handed = False
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if records_dir is not None:
                self._record = write_record(records_dir, "proxy", f"{os.getpid()}-{id(self)}",
                                            host=host, host_port=host_port,
                                            container_port=container_port)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((host, host_port))
            except OSError as exc:
                reason = ("already in use" if exc.errno == errno.EADDRINUSE
                          else exc.strerror or str(exc))
                raise NetworkError(f"cannot publish container port {container_port} on "
                                   f"{host}:{host_port}: {reason}") from exc
            listener.listen(128)
        except BaseException:
            listener.close()
            os.close(self._nsfd)
            drop_record(self._record)
            raise
        self._listener = listener
        self.port: int = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                         name=f"pycontain-proxy-{self.port}")
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def closed(self) -> bool:
        return self._closed

    def pause(self) -> None:
        """Stop listening, keeping the port bound: a connection to it is refused by the kernel
        (the waiting ones are reset) until ``resume``."""
        with self._lock:
            if self._closed or self._paused:
                return
            self._paused = True
            with contextlib.suppress(OSError):  # wakes the blocked accept()
                self._listener.shutdown(socket.SHUT_RDWR)

    def resume(self) -> None:
        """Listen again after ``pause``."""
        with self._lock:
            if self._closed or not self._paused:
                return
            self._listener.listen(128)
            self._paused = False
            self._resumed.notify_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # closed (or broken): the end
                    return
                with self._lock:  # paused: not listening until resumed
                    while self._paused and not self._closed:
                        self._resumed.wait()
                    if self._closed:
                        return
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True,
                             name=f"pycontain-relay-{self.port}").start()
            if self._handed:
                return

    def _relay(self, client: socket.socket) -> None:
        try:
            if self._sockets is not None:
                upstream = self._sockets.socket()
                try:
                    upstream.settimeout(CONNECT_TIMEOUT)
                    upstream.connect((self.target, self.container_port))
                except OSError:
                    upstream.close()
                    raise
            else:
                enter_netns(self._nsfd)  # this thread only; it ends with the connection
                upstream = socket.create_connection((self.target, self.container_port),
                                                    timeout=CONNECT_TIMEOUT)
            upstream.settimeout(None)
        except (OSError, NetworkError):
            if self._pausable:  # as near a refusal as an accepted connection gets
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.pause()
            client.close()  # nothing listens (yet): the client sees the connection close
            return
        pair = (client, upstream)
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._pairs.add(pair)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._pairs.discard(pair)
        client.close()
        upstream.close()

    def close(self) -> None:
        """Stop listening and cut the open connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._resumed.notify_all()
            pairs = list(self._pairs)
        with contextlib.suppress(OSError):  # shutdown wakes the blocked accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        os.close(self._nsfd)
        if self._sockets is not None:
            self._sockets.close()
        drop_record(self._record)

    def listener_fd(self) -> int:
        """A duplicate of the listening socket, for a keeper to accept on (``let_go`` next);
        the caller closes it once it has passed it on."""
        return os.dup(self._listener.fileno())

    def let_go(self) -> None:
        """Stop accepting (a keeper does now) and let go of the port without closing it; the
        connections this proxy relays stay."""
        if self._closed:
            return
        self._handed = True
        for _ in range(50):  # wake our accept(): a connection to ourselves (either side relays
            if not self._thread.is_alive():  # it to the container port, which is harmless)
                break
            with contextlib.suppress(OSError), socket.create_connection(self.address, 1):
                pass
            self._thread.join(0.1)
        with self._lock:
            self._closed = True
        self._listener.close()  # no shutdown: the keeper's duplicate stays open
        os.close(self._nsfd)
        drop_record(self._record)

    def __enter__(self) -> PortProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish(netns: NetnsRef, ports: Mapping[int, int | None], *,
            records_dir: str | os.PathLike | None = None,
            target: str = "127.0.0.1") -> dict[int, PortProxy]:
    """Proxies for ``{8080: 18080}`` (``None``: any free host port): container port -> proxy
    relaying to ``target`` as seen from ``netns``; the run request's ports, as ``RunSpec``
    normalised them.

    All or nothing: when one port cannot be published, the ones already made are closed.
    """
    made: dict[int, PortProxy] = {}
    try:
        for container_port, host_port in ports.items():
            made[container_port] = PortProxy(netns, container_port, host_port or 0,
                                             target=target, records_dir=records_dir)
    except BaseException:
        for proxy in made.values():
            proxy.close()
        raise
    return made


def probe_port(netns: NetnsRef, port: int, *, host: str = "127.0.0.1",
               timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port`` inside ``netns``.

    A namespace that is gone (its process exited) gives False; a bad reference raises.
    """
    try:
        fd = open_netns(netns)
    except NetworkError as exc:
        if isinstance(exc.__cause__, FileNotFoundError | ProcessLookupError):
            return False
        raise
    result: list[bool] = [False]

    def attempt() -> None:
        try:
            enter_netns(fd)
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = True
        except (OSError, NetworkError):
            pass

    try:
        thread = threading.Thread(target=attempt, name="pycontain-probe", daemon=True)
        thread.start()
        thread.join(timeout + 5)
    finally:
        os.close(fd)
    return result[0]
