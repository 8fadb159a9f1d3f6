"""Permanent neighbour (ARP) entries, so that a big network never loses packets to the kernel.

The kernel keeps one neighbour table for all network namespaces, and counts its dynamic entries
against the host's ``net.ipv4.neigh.default.gc_thresh3`` (1024 by default). A full mesh of 50
containers needs ~2,500 of them: past the limit the kernel drops packets ("neighbor table
overflow!" in dmesg). Permanent entries are not counted, and need no ARP round trip either, so
the network installs one in every member for every other member (and the gateway), with MAC
addresses it chose itself: ``mac_for(ip)``, as Docker derives them.

A ``NeighbourTable`` is a netlink socket opened inside one namespace; it stays bound to that
namespace wherever it is used from, so the network can update a member without entering it.
Messages are pyroute2's ``ndmsg``; the socket is plain, one fd and no event loop per member.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from ..errors import NetworkError

NETLINK_ROUTE = 0
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NUD_PERMANENT = 0x80
_HEADER = struct.Struct("=IHHIIi")  # nlmsghdr, then the error code of an nlmsgerr


def mac_for(ip: str) -> str:
    """The MAC address of the interface holding ``ip``: 02:42 (locally administered) and the
    address's four bytes, unique as long as no two networks overlap (the IPAM's promise)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


class NeighbourTable:
    """The neighbour table of the namespace the calling thread is in when this is made."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def set(self, ifindex: int, ip: str, mac: str) -> None:
        """``ip`` is at ``mac`` on interface ``ifindex``, for good (made or replaced)."""
        error = self._send(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, ifindex, ip, mac)
        if error:
            raise NetworkError(f"cannot add the neighbour entry {ip} at {mac} on interface "
                               f"{ifindex}: {os.strerror(error)}")

    def delete(self, ifindex: int, ip: str) -> None:
        """Forget ``ip`` on ``ifindex``; an entry or interface already gone is fine."""
        error = self._send(RTM_DELNEIGH, 0, ifindex, ip, None)
        if error and error not in (errno.ENOENT, errno.ENODEV):
            raise NetworkError(f"cannot delete the neighbour entry {ip} on interface "
                               f"{ifindex}: {os.strerror(error)}")

    def close(self) -> None:
        self._sock.close()

    def _send(self, kind: int, flags: int, ifindex: int, ip: str, mac: str | None) -> int:
        """One request; the errno of the kernel's answer (0: done)."""
        from pyroute2.netlink.rtnl.ndmsg import ndmsg

        self._seq += 1
        msg = ndmsg()
        msg["family"] = socket.AF_INET
        msg["ifindex"] = ifindex
        msg["state"] = NUD_PERMANENT
        msg["attrs"] = [("NDA_DST", ip)] + ([("NDA_LLADDR", mac)] if mac else [])
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._sock.send(msg.data)
        while True:  # the ack of this request (a late one of an earlier request is skipped)
            reply = self._sock.recv(65536)
            _, kind_got, _, seq, _, error = _HEADER.unpack_from(reply)
            if kind_got == NLMSG_ERROR and seq == self._seq:
                return -error
