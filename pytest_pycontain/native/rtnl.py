"""The rtnetlink requests of joining a network, encoded here and sent in batches on a plain
socket: one fd, one ``send`` and one wait for the answers per namespace touched.

pyroute2's ``IPRoute`` costs about a millisecond to make and half of one per request (an event
loop, dumps behind ``link_lookup``), and even its message classes alone take ~0.3 ms of Python
to encode a veth pair; a container's join makes a dozen requests, on the path of every
container start. So the few fixed message layouts it needs are packed with ``struct`` (their
layouts are the kernel's ``linux/rtnetlink.h`` and ``linux/if_link.h``), and the requests for
one namespace go to the kernel in one message buffer, which it works through in order, answering
each. The socket stays bound to the namespace it was opened in wherever it is used from: the
network's thread configures a container without living in it.

It also keeps the neighbour (ARP) entries. The kernel keeps one neighbour table for all network
namespaces and counts its dynamic entries against the host's ``gc_thresh3`` (1024 by default);
a full mesh of 50 containers needs ~2,500 and, past the limit, loses packets ("neighbor table
overflow!" in dmesg). Permanent entries are not counted and need no ARP round trip, so every
member gets one for every other member and the gateway, with MAC addresses the network chose:
``mac_for(ip)``, as Docker derives them.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence

from ..errors import NetworkError

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
IFF_UP = 0x1
NUD_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RTN_UNICAST = 1
# attribute numbers (linux/if_link.h, veth.h, if_addr.h, rtnetlink.h, neighbour.h)
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 31, 32
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
NDA_DST, NDA_LLADDR = 1, 2

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_ACK = struct.Struct("=IHHIIi")  # nlmsghdr, then the error code of an nlmsgerr
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src length, tos, table, proto, scope, type
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
BATCH = 64  # requests per send: their answers stay well inside the socket's receive buffer


def mac_for(ip: str) -> str:
    """The MAC address of the interface holding ``ip``: 02:42 (locally administered) and the
    address's four bytes, unique as long as no two networks overlap (the IPAM's promise)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def check(error: int, what: str) -> None:
    """Raise for the errno of a kernel's answer (0: done), saying what could not be done."""
    if error:
        raise NetworkError(f"cannot {what}: {os.strerror(error)}")


@dataclasses.dataclass(frozen=True)
class Request:
    """One rtnetlink request: message type, flags, body (family header and attributes), what
    it does (for an error), and the errnos that count as done."""

    kind: int
    flags: int
    body: bytes
    what: str
    fine: tuple[int, ...] = ()


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _name(ifname: str) -> bytes:
    return ifname.encode() + b"\0"


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _ip(ip: str) -> bytes:
    return socket.inet_aton(ip)


def veth_pair(ifname: str, master: int, peer_ifname: str, peer_netns: int,
              peer_mac: str) -> Request:
    """A veth pair: this end up on bridge ``master``; the other in the namespace
    ``peer_netns`` (an fd) as ``peer_ifname`` with address ``peer_mac``, down (the kernel
    configures it before the pair is joined: up, it would find no peer, ENOTCONN).

    Each end is made with the one queue each way that veth uses anyway: made with one per
    CPU, the kernel cuts them to one at once, and cutting waits for an expedited RCU grace
    period (``synchronize_net``), twice per pair."""
    one_queue = _attr(IFLA_NUM_TX_QUEUES, struct.pack("=I", 1)) + \
        _attr(IFLA_NUM_RX_QUEUES, struct.pack("=I", 1))
    peer = _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(peer_ifname)) + \
        _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns)) + \
        _attr(IFLA_ADDRESS, _mac(peer_mac)) + one_queue
    info = _attr(IFLA_INFO_KIND, b"veth\0") + \
        _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
    body = _IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, _name(ifname)) + \
        _attr(IFLA_MASTER, struct.pack("=I", master)) + one_queue + \
        _attr(IFLA_LINKINFO, info)
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body,
                   f"add the veth pair {ifname}/{peer_ifname}")


def link_up(index: int) -> Request:
    return Request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, IFF_UP, IFF_UP),
                   f"bring interface {index} up")


def address(index: int, ip: str, prefix: int) -> Request:
    body = _IFADDR.pack(socket.AF_INET, prefix, 0, 0, index) + \
        _attr(IFA_LOCAL, _ip(ip)) + _attr(IFA_ADDRESS, _ip(ip))
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body,
                   f"give interface {index} the address {ip}/{prefix}")


def default_route(gateway: str, index: int) -> Request:
    """The default route via ``gateway``; one that is there already counts as done."""
    body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST,
                       0) + _attr(RTA_GATEWAY, _ip(gateway)) + \
        _attr(RTA_OIF, struct.pack("=I", index))
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"route via {gateway}",
                   fine=(errno.EEXIST,))


def neighbour(index: int, ip: str, mac: str) -> Request:
    """``ip`` is at ``mac`` on interface ``index``, for good (made or replaced)."""
    body = _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0) + \
        _attr(NDA_DST, _ip(ip)) + _attr(NDA_LLADDR, _mac(mac))
    return Request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body,
                   f"add the neighbour entry {ip} at {mac} on interface {index}")


def forget_neighbour(index: int, ip: str) -> Request:
    """No entry for ``ip`` on ``index``; an entry or interface already gone is fine."""
    body = _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0) + _attr(NDA_DST, _ip(ip))
    return Request(RTM_DELNEIGH, 0, body, f"delete the neighbour entry {ip} on interface "
                   f"{index}", fine=(errno.ENOENT, errno.ENODEV))


class RouteSocket:
    """rtnetlink in the namespace the calling thread is in when this is made."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    # -- batches ----------------------------------------------------------------------------
    def exchange(self, requests: Sequence[Request]) -> list[int]:
        """Send ``requests`` (in one buffer per ``BATCH``; the kernel does them in order, an
        error stopping none of the later ones); the errno of each answer (0: done)."""
        errors: list[int] = []
        for start in range(0, len(requests), BATCH):
            errors += self._exchange(requests[start:start + BATCH])
        return errors

    def run(self, requests: Sequence[Request]) -> None:
        """``exchange``, raising for the first answer that is an error the request does not
        count as done (the later requests were made all the same)."""
        for request, error in zip(requests, self.exchange(requests), strict=True):
            if error not in request.fine:
                check(error, request.what)

    def _exchange(self, requests: Sequence[Request]) -> list[int]:
        first = self._seq + 1
        parts = []
        for request in requests:
            self._seq += 1
            parts.append(_HEADER.pack(_HEADER.size + len(request.body), request.kind,
                                      NLM_F_REQUEST | NLM_F_ACK | request.flags, self._seq, 0))
            parts.append(request.body)
        self._sock.send(b"".join(parts))
        answers: dict[int, int] = {}
        while len(answers) < len(requests):
            reply = self._sock.recv(65536)
            offset = 0
            while offset + _ACK.size <= len(reply):  # answers of earlier batches are skipped
                length, kind, _, seq, _, error = _ACK.unpack_from(reply, offset)
                if kind == NLMSG_ERROR and first <= seq <= self._seq:
                    answers[seq] = -error
                offset += max(length + (-length % 4), _HEADER.size)
        return [answers[seq] for seq in range(first, self._seq + 1)]
