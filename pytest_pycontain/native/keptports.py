"""Published ports of a kept container, served by its keeper (the shim) after the engine is gone.

The engine hands the keeper the listening sockets it made on the host's loopback, as it hands it
the network's DNS socket and namespace. Each connection goes on to the container's address from
that namespace (the bridge's side), as the engine's own proxies do, so a port stays where
``pycontain run -d -p`` said it is and behaves as it did.
The shim is one thread with one selector: each connection is two sockets on that selector, and
bytes move as they come (writes block only while a local peer is slow to read).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket

from .syscalls import CLONE_NEWNET, setns

CONNECT_TIMEOUT = 5.0
TAG = "port"
MAX_KEPT_PORTS = 60  # listening sockets one Keep message carries (SCM_RIGHTS allows 253 fds)
MAX_KEPT_NETWORKS = 16  # networks of a kept container (two fds each: namespace, DNS socket)


class KeptPorts:
    """The listeners and open connections of one kept container, on the shim's selector."""

    def __init__(self, selector: selectors.BaseSelector):
        self.selector = selector
        self._peer: dict[socket.socket, socket.socket] = {}
        self._done: set[socket.socket] = set()  # sockets whose reading side has ended
        self._target = "127.0.0.1"
        self._bridge: int | None = None  # the network's namespace (an fd), to connect from
        self._own: int | None = None  # ours, to come back to

    def listen(self, fds: list[int], ports: tuple[int, ...], target: str | None,
               bridge: int | None) -> None:
        """Take over listening socket ``fds[i]`` for container port ``ports[i]``, relayed to
        ``target`` from the namespace ``bridge`` (else from ours)."""
        self._target = target or "127.0.0.1"
        if target and bridge is not None:
            with contextlib.suppress(OSError):
                self._own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                self._bridge = os.dup(bridge)
        for fd, port in zip(fds, ports, strict=True):
            server = socket.socket(fileno=fd)
            server.setblocking(False)
            self.selector.register(server, selectors.EVENT_READ, (TAG, "listen", server, port))

    def ready(self, what: tuple) -> None:
        """A registered socket is readable: accept, or move bytes one step. Nothing that goes
        wrong with one connection may end the keeper (and with it the container)."""
        _, role, sock, port = what
        try:
            if role == "listen":
                self._accept(sock, port)
            else:
                self._move(sock)
        except Exception:  # whatever it was, it was this connection's
            if role != "listen":
                self._close_pair(sock)

    def _accept(self, server: socket.socket, port: int) -> None:
        try:
            client, _ = server.accept()
        except OSError:
            return
        # no create_connection: its getaddrinfo imports the idna codec, which the keeper
        # may no longer be able to import
        upstream = self._socket()
        try:
            upstream.settimeout(CONNECT_TIMEOUT)
            upstream.connect((self._target, port))
        except OSError:
            upstream.close()
            client.close()  # nothing listens in the container: the client sees a close
            return
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.settimeout(None)
        self._peer[client], self._peer[upstream] = upstream, client
        for sock in (client, upstream):
            self.selector.register(sock, selectors.EVENT_READ, (TAG, "relay", sock, port))

    def _socket(self) -> socket.socket:
        """A TCP socket of the bridge's namespace (a socket keeps the one it was made in)."""
        if self._bridge is None or self._own is None:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        setns(self._bridge, CLONE_NEWNET)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            setns(self._own, CLONE_NEWNET)

    def _move(self, sock: socket.socket) -> None:
        peer = self._peer[sock]
        try:
            data = sock.recv(262144)
            if data:
                peer.sendall(data)
                return
            peer.shutdown(socket.SHUT_WR)  # pass the half-close on
        except OSError:
            self._close_pair(sock)
            return
        self.selector.unregister(sock)
        self._done.add(sock)
        if peer in self._done:
            self._close_pair(sock)

    def _close_pair(self, sock: socket.socket) -> None:
        for end in (sock, self._peer.get(sock)):
            if end is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(end)
            self._peer.pop(end, None)
            self._done.discard(end)
            end.close()
