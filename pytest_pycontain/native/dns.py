"""A small DNS responder per network, like Docker's embedded DNS.

It answers A queries for the names and aliases of the containers on its network (and PTR
queries for their addresses). Other names with a dot are forwarded to the host's resolvers when
the network has a way out (``forward_to``: from the network's own namespace, through its pasta, as
Docker's embedded DNS forwards), and answered at once with NXDOMAIN when it has none: there,
forwarding would only turn a wrong name into a hang. Static binaries such as
busybox-static's ``wget`` cannot use ``/etc/hosts`` reliably, so DNS is what makes names work.

The socket is handed in already bound (the network creates it inside its own namespace, on the
gateway address); the responder only serves it, from a thread of the owner process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence

QTYPE_A = 1
QTYPE_PTR = 12
QTYPE_AAAA = 28
QTYPE_ANY = 255
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
TTL = 0  # names come and go with containers: nothing should cache them
FORWARD_TIMEOUT = 5.0  # a forwarded query unanswered this long is forgotten (clients retry)


def _read_name(packet: bytes, offset: int) -> tuple[str, int]:
    """A (non-compressed) name at ``offset``; queries never use compression."""
    labels = []
    while True:
        if offset >= len(packet):
            raise ValueError("name runs past the packet")
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        raw = label.encode("ascii", "replace")[:63]
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _ptr_address(name: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4``."""
    parts = name.split(".")
    if len(parts) != 6 or ".".join(parts[4:]) != "in-addr.arpa":
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(parts[:4]))))
    except ValueError:
        return None


def respond(query: bytes, lookup: Callable[[str], Sequence[str]],
            reverse: Callable[[str], Sequence[str]]) -> bytes | None:
    """The answer to one query packet, or None when it is too broken to answer.

    ``lookup(name)`` gives the addresses of a (lower-case, dot-less) name, ``reverse(ip)`` its
    names; an empty result means "not on this network" -> NXDOMAIN.
    """
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:  # a response, not a query
        return None
    opcode = (flags >> 11) & 0xF
    rd = flags & 0x0100

    def header(rcode: int, ancount: int, qd: int) -> bytes:
        out_flags = 0x8000 | (opcode << 11) | 0x0400 | rd | 0x0080 | rcode
        return struct.pack("!HHHHHH", qid, out_flags, qd, ancount, 0, 0)

    if opcode != 0:
        return header(RCODE_NOTIMP, 0, 0)
    if qdcount != 1:
        return header(RCODE_FORMERR, 0, 0)
    try:
        name, end = _read_name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[end:end + 4])
    except (ValueError, struct.error):
        return header(RCODE_FORMERR, 0, 0)
    question = query[12:end + 4]
    key = name.lower().rstrip(".")
    answers: list[bytes] = []
    address = _ptr_address(key)
    if address is not None:
        names = list(reverse(address))
        if not names:
            return header(RCODE_NXDOMAIN, 0, 1) + question
        if qtype in (QTYPE_PTR, QTYPE_ANY):
            for target in names:
                data = _encode_name(target)
                answers.append(b"\xc0\x0c" + struct.pack("!HHIH", QTYPE_PTR, qclass, TTL,
                                                         len(data)) + data)
    else:
        addresses = list(lookup(key))
        if not addresses:
            return header(RCODE_NXDOMAIN, 0, 1) + question
        if qtype in (QTYPE_A, QTYPE_ANY):
            for ip in addresses:
                answers.append(b"\xc0\x0c" + struct.pack("!HHIH", QTYPE_A, qclass, TTL, 4)
                               + socket.inet_aton(ip))
        # AAAA and other types of a known name: NOERROR with no answer, so the client goes on
    return header(0, len(answers), 1) + question + b"".join(answers)


class Responder:
    """Serves a bound UDP socket from a daemon thread until ``close()``."""

    def __init__(self, sock: socket.socket, *, label: str = "dns"):
        self.sock = sock
        self.address = sock.getsockname()
        self._names: dict[str, list[str]] = {}
        self._by_ip: dict[str, set[str]] = {}  # the same, the other way: O(1) to forget one
        self._views: dict[str, list[Callable[[str], list[str]]]] = {}  # asker -> more names
        import threading  # here: the zygote's shims load this module, and fork (see zygote.py)

        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._upstream: socket.socket | None = None  # made in the network's namespace
        self._servers: tuple[str, ...] = ()
        self._pending: dict[int, tuple[bytes, tuple[str, int], float]] = {}
        self._next_id = int.from_bytes(os.urandom(2), "big")
        self._thread = threading.Thread(target=self._serve, name=f"pycontain-{label}",
                                        daemon=True)
        self._thread.start()

    # -- the table ------------------------------------------------------------------------
    def add(self, names: Iterable[str], ip: str) -> None:
        with self._lock:
            mine = self._by_ip.setdefault(ip, set())
            for name in names:
                key = name.lower().rstrip(".")
                entry = self._names.setdefault(key, [])
                if ip not in entry:
                    entry.append(ip)
                mine.add(key)

    def also(self, asker: str, lookup: Callable[[str], list[str]]) -> None:
        """Answer ``asker`` (a member's address) from ``lookup`` too, for names this table
        lacks: the names of another network it joined."""
        with self._lock:
            self._views.setdefault(asker, []).append(lookup)

    def lookup_for(self, asker: str) -> Callable[[str], list[str]]:
        """The lookup an asker at ``asker`` gets: this table, then its other networks'."""
        def lookup(name: str) -> list[str]:
            found = self.lookup(name)
            with self._lock:
                views = list(self._views.get(asker, ()))
            for view in views:
                if found:
                    break
                found = view(name)
            return found

        return lookup

    def remove(self, ip: str) -> None:
        """Forget every name of ``ip`` (and what it was told of its other networks)."""
        with self._lock:
            self._views.pop(ip, None)
            for name in self._by_ip.pop(ip, ()):
                entry = self._names[name]
                entry.remove(ip)
                if not entry:
                    del self._names[name]

    def lookup(self, name: str) -> list[str]:
        with self._lock:
            return list(self._names.get(name.lower().rstrip("."), ()))

    def reverse(self, ip: str) -> list[str]:
        with self._lock:
            return sorted(self._by_ip.get(ip, ()))

    def snapshot(self) -> dict[str, list[str]]:
        """The table as it is: name -> addresses (for a keeper that serves it on)."""
        with self._lock:
            return {name: list(ips) for name, ips in self._names.items()}

    def forward_to(self, upstream: socket.socket, servers: Sequence[str]) -> None:
        """Forward what is not ours to ``servers`` (IPv4 addresses, port 53; the first that
        is there) through ``upstream``, a UDP socket of the network's namespace. Before the
        first query only (the serving thread takes it up on its next wake)."""
        if servers:
            self._upstream, self._servers = upstream, tuple(servers)
            os.write(self._wake_w, b"u")

    # -- serving --------------------------------------------------------------------------
    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            watching_upstream = False
            while True:
                events = sel.select(1.0 if self._pending else None)
                for key, _ in events:
                    if key.fileobj == self._wake_r:
                        if os.read(self._wake_r, 1) != b"u":
                            return
                    elif key.fileobj is self.sock:
                        self._answer_or_forward()
                    else:
                        self._relay_back()
                if self._upstream is not None and not watching_upstream:
                    sel.register(self._upstream, selectors.EVENT_READ)
                    watching_upstream = True
                now = time.monotonic()
                for qid in [q for q, (_, _, at) in self._pending.items()
                            if now - at > FORWARD_TIMEOUT]:
                    del self._pending[qid]

    def _answer_or_forward(self) -> None:
        """A name of ours (or a broken query) is answered here; one we would say NXDOMAIN to
        goes upstream under an id of ours, and its answer back to the asker."""
        try:
            packet, peer = self.sock.recvfrom(4096, socket.MSG_DONTWAIT)
        except OSError:
            return
        reply = respond(packet, self.lookup_for(peer[0]), self.reverse)
        if reply is not None and reply[3] & 0xF == RCODE_NXDOMAIN and self._upstream \
                and _forwardable(packet):
            self._next_id = (self._next_id + 1) & 0xFFFF
            ours = self._next_id
            self._pending[ours] = (packet[:2], peer, time.monotonic())
            with contextlib.suppress(OSError):
                self._upstream.sendto(struct.pack("!H", ours) + packet[2:],
                                      (self._servers[0], 53))
                return
            del self._pending[ours]
        if reply is not None:
            with contextlib.suppress(OSError):
                self.sock.sendto(reply, peer)

    def _relay_back(self) -> None:
        assert self._upstream is not None
        try:
            packet, source = self._upstream.recvfrom(65536, socket.MSG_DONTWAIT)
        except OSError:
            return
        if len(packet) < 12 or source[0] not in self._servers:
            return
        waiting = self._pending.pop(struct.unpack("!H", packet[:2])[0], None)
        if waiting is not None:
            their_id, peer, _ = waiting
            with contextlib.suppress(OSError):
                self.sock.sendto(their_id + packet[2:], peer)

    def close(self) -> None:
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_w = -1
        self.sock.close()
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None


def _forwardable(query: bytes) -> bool:
    """Whether an unknown name goes upstream: a name with a dot that is not a reverse lookup.
    A single label is a container's name (one that is gone is NXDOMAIN at once, as before),
    and the addresses asked about in reverse are the network's own."""
    try:
        name, _ = _read_name(query, 12)
    except ValueError:
        return False
    name = name.lower().rstrip(".")
    return "." in name and not name.endswith((".in-addr.arpa", ".ip6.arpa"))


def names_of(table: dict[str, list[str]], ip: str) -> list[str]:
    """The names ``table`` (name -> addresses) gives ``ip``, for a reverse lookup."""
    return sorted(n for n, ips in table.items() if ip in ips)


def answer_one(sock: socket.socket, lookup: Callable[[str], Sequence[str]],
               reverse: Callable[[str], Sequence[str]]) -> None:
    """Answer the query waiting on ``sock``, if it is still there: a kept container's keeper
    shares the socket with the live responder, and either may have taken it already."""
    try:
        packet, peer = sock.recvfrom(4096, socket.MSG_DONTWAIT)
    except OSError:
        return
    reply = respond(packet, lookup, reverse)
    if reply is not None:
        with contextlib.suppress(OSError):
            sock.sendto(reply, peer)


def answer_from(table: dict[str, list[str]], sock: socket.socket) -> None:
    """Answer a query on ``sock`` from a fixed ``table`` (a kept container's keeper, once the
    network's responder has ended with its process)."""
    answer_one(sock, lambda name: table.get(name, ()), lambda ip: names_of(table, ip))


def resolv_conf(server: str) -> str:
    """``/etc/resolv.conf`` for a container on a network whose responder is ``server``."""
    return f"nameserver {server}\noptions ndots:0\n"


# Docker's first lines of every /etc/hosts: loopback, and the IPv6 names glibc's hosts carry
LOCAL_HOSTS = (("127.0.0.1", "localhost"), ("::1", "localhost ip6-localhost ip6-loopback"),
               ("fe00::0", "ip6-localnet"), ("ff00::0", "ip6-mcastprefix"),
               ("ff02::1", "ip6-allnodes"), ("ff02::2", "ip6-allrouters"))


def hosts_file(hostname: str, addresses: Iterable[str],
               extra: Iterable[tuple[str, str]] = ()) -> str:
    """``/etc/hosts`` as Docker writes it: the local names, the ``extra`` ``(name, address)``
    entries (``extra_hosts``), then the container's own ``addresses`` under its hostname.
    Nothing of its peers: the system resolver reads this file before DNS, so a peer's line
    would outlive the peer (its name and address taken by others); the responder answers."""
    lines = [f"{address}\t{names}" for address, names in LOCAL_HOSTS]
    lines += [f"{address}\t{name}" for name, address in extra]
    lines += [own_line(hostname, address).rstrip("\n") for address in addresses]
    return "\n".join(lines) + "\n"


def own_line(hostname: str, address: str) -> str:
    """The /etc/hosts line of a container's ``address``: its hostname, and a dotted one's first
    label too (Docker's rule)."""
    short = hostname.split(".", 1)[0]
    return f"{address}\t{hostname}{' ' + short if short != hostname else ''}\n"
