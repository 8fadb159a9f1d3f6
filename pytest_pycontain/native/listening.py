"""Which TCP ports something listens on at this namespace's loopback, and a watch that keeps
``expose_host_port``'s relays listening only while it does.

A relay is a listening socket: the kernel completes every handshake before the relay can ask
whether anything is there to relay to, so "nothing listens" would be a connection accepted and
closed. Docker's host-gateway is an address of the host, where nothing listening is a
connection refused. The watch reads the listening sockets (sock_diag, the dump ``ss -lt``
shows; no connection is made to the user's server) and pauses a relay whose port has none:
its socket stays bound but stops listening, so the kernel refuses as Docker's host does. A
change is seen within ``INTERVAL``; a relayed connection that finds the port gone meanwhile
is reset and pauses the relay at once.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Protocol

from ..errors import NetworkError

INTERVAL = 0.05  # seconds between two reads of the listening sockets

NETLINK_SOCK_DIAG = 4  # (the socket module does not name it)
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
INET_DIAG_SKV6ONLY = 11
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBBBI48s")  # inet_diag_req_v2: family, protocol, ext, pad, states
_MESSAGE = struct.Struct("=BBBB2s2s16s16s")  # inet_diag_msg up to its addresses
_MESSAGE_SIZE = 72  # the whole inet_diag_msg, after which its attributes follow

_LOOPBACK_V4 = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address("0.0.0.0"))
_LOOPBACK_V6 = (ipaddress.IPv6Address("::ffff:127.0.0.1"),)


def _reaches_loopback(family: int, address: bytes, v6only: bool) -> bool:
    """Whether a listener bound to ``address`` takes a connection to ``127.0.0.1``."""
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(address[:4]) in _LOOPBACK_V4
    six = ipaddress.IPv6Address(address)
    return six in _LOOPBACK_V6 or (six == ipaddress.IPv6Address("::") and not v6only)


def _v6only(attributes: bytes) -> bool:
    offset = 0
    while offset + 4 <= len(attributes):
        length, kind = struct.unpack_from("=HH", attributes, offset)
        if length < 4:
            break
        if kind == INET_DIAG_SKV6ONLY and length >= 5:
            return bool(attributes[offset + 4])
        offset += (length + 3) & ~3
    return False


class ListenerReader:
    """Reads the TCP listeners of the network namespace it is made in (its netlink socket
    belongs there, whichever thread reads later)."""

    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       NETLINK_SOCK_DIAG)
        except OSError as exc:
            raise NetworkError(f"cannot read this host's listening sockets (sock_diag): "
                               f"{exc.strerror or exc}") from exc
        self._sequence = 0
        self._lock = threading.Lock()

    def loopback_ports(self) -> set[int]:
        """The TCP ports on which a connection to ``127.0.0.1`` finds a listener."""
        with self._lock:
            found: set[int] = set()
            for family in (socket.AF_INET, socket.AF_INET6):
                found |= self._dump(family)
            return found

    def _dump(self, family: int) -> set[int]:
        self._sequence += 1
        request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN, bytes(48))
        self._sock.send(_HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY,
                                     NLM_F_REQUEST | NLM_F_DUMP, self._sequence, 0) + request)
        ports: set[int] = set()
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, sequence, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    return ports
                body = data[offset + _HEADER.size:offset + length]
                offset += (length + 3) & ~3
                if sequence != self._sequence:
                    continue
                if kind == NLMSG_DONE:
                    return ports
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code == 0:
                        continue
                    if family == socket.AF_INET6 and code in (errno.ENOENT, errno.EAFNOSUPPORT):
                        return ports  # no IPv6 here
                    raise NetworkError(f"sock_diag: {errno.errorcode.get(code, code)}")
                if kind != SOCK_DIAG_BY_FAMILY or len(body) < _MESSAGE_SIZE:
                    continue
                got, _, _, _, sport, _, source, _ = _MESSAGE.unpack_from(body)
                if _reaches_loopback(got, source, _v6only(body[_MESSAGE_SIZE:])):
                    ports.add(struct.unpack("!H", sport)[0])

    def close(self) -> None:
        self._sock.close()


class Pausable(Protocol):
    """A relay the watch can stop and start listening (``proxy.PortProxy``)."""

    closed: bool

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class ListenWatch:
    """Pauses each followed relay while its port has no listener on the loopback of the
    namespace the watch was made in, and resumes it when one comes; one thread for all."""

    def __init__(self) -> None:
        self._reader = ListenerReader()
        self._followed: dict[int, list[Pausable]] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def follow(self, relay: Pausable, port: int) -> None:
        """Watch ``relay`` of ``port``: paused now if nothing listens there."""
        with self._wake:
            self._followed.setdefault(port, []).append(relay)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name="pycontain-listen-watch")
                self._thread.start()
        self._apply(self._reader.loopback_ports(), [(port, relay)])

    def check(self) -> None:
        """Read the listeners now (a relayed connection found its port shut)."""
        self._apply(self._reader.loopback_ports(), self._pairs())

    def _pairs(self) -> list[tuple[int, Pausable]]:
        with self._wake:
            for port in list(self._followed):
                self._followed[port] = [r for r in self._followed[port] if not r.closed]
                if not self._followed[port]:
                    del self._followed[port]
            return [(port, r) for port, relays in self._followed.items() for r in relays]

    @staticmethod
    def _apply(listening: Iterable[int], pairs: Iterable[tuple[int, Pausable]]) -> None:
        ports = set(listening)
        for port, relay in pairs:
            if port in ports:
                relay.resume()
            else:
                relay.pause()

    def _watch(self) -> None:
        while True:
            pairs = self._pairs()
            if not pairs:
                with self._wake:
                    if not self._followed:  # the next follow starts a new thread
                        self._thread = None
                        return
                continue
            with contextlib.suppress(NetworkError, OSError):  # the next round reads again
                self._apply(self._reader.loopback_ports(), pairs)
            with self._wake:
                self._wake.wait(INTERVAL)


_shared: ListenWatch | None = None
_shared_lock = threading.Lock()


def shared_watch() -> ListenWatch:
    """The process's one watch, made by the first caller in its own network namespace (the
    engine's: where the exposed ports' servers listen)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ListenWatch()
        return _shared
