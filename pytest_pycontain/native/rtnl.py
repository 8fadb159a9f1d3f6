"""The few rtnetlink requests of joining a network, on a plain socket: one fd, ~20 µs each.

pyroute2's ``IPRoute`` costs about a millisecond to make and half of one per request (an event
loop, dumps behind ``link_lookup``); a container's join makes a dozen requests, on the path of
every container start. So this sends pyroute2's own message classes over a bare
``NETLINK_ROUTE`` socket, which stays bound to the namespace it was opened in wherever it is
used from: the network's thread configures a container without living in it.

It also keeps the neighbour (ARP) entries. The kernel keeps one neighbour table for all network
namespaces and counts its dynamic entries against the host's ``gc_thresh3`` (1024 by default);
a full mesh of 50 containers needs ~2,500 and, past the limit, loses packets ("neighbor table
overflow!" in dmesg). Permanent entries are not counted and need no ARP round trip, so every
member gets one for every other member and the gateway, with MAC addresses the network chose:
``mac_for(ip)``, as Docker derives them.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import Any

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
_ACK = struct.Struct("=IHHIIi")  # nlmsghdr, then the error code of an nlmsgerr


def mac_for(ip: str) -> str:
    """The MAC address of the interface holding ``ip``: 02:42 (locally administered) and the
    address's four bytes, unique as long as no two networks overlap (the IPAM's promise)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def check(error: int, what: str) -> None:
    """Raise for the errno of a kernel's answer (0: done), saying what could not be done."""
    if error:
        raise NetworkError(f"cannot {what}: {os.strerror(error)}")


class RouteSocket:
    """rtnetlink in the namespace the calling thread is in when this is made."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    # -- links, addresses, routes -----------------------------------------------------------
    def add_veth(self, ifname: str, master: int, peer_ifname: str, peer_netns: int,
                 peer_mac: str) -> int:
        """A veth pair, this end up on bridge ``master``, the other in ``peer_netns``; the
        errno of the kernel's answer (0: made)."""
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        peer = {"attrs": [("IFLA_IFNAME", peer_ifname), ("IFLA_NET_NS_FD", peer_netns),
                          ("IFLA_ADDRESS", peer_mac)]}
        info = {"attrs": [("IFLA_INFO_KIND", "veth"),
                          ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
        msg = ifinfmsg()
        msg["flags"] = msg["change"] = IFF_UP
        msg["attrs"] = [("IFLA_IFNAME", ifname), ("IFLA_MASTER", master),
                        ("IFLA_LINKINFO", info)]
        return self._request(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)

    def set_up(self, index: int) -> None:
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        msg = ifinfmsg()
        msg["index"] = index
        msg["flags"] = msg["change"] = IFF_UP
        check(self._request(msg, RTM_NEWLINK, 0), f"bring interface {index} up")

    def add_address(self, index: int, ip: str, prefix: int) -> None:
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = prefix
        msg["index"] = index
        msg["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
        check(self._request(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL),
                    f"give interface {index} the address {ip}/{prefix}")

    def add_default_route(self, gateway: str, index: int) -> bool:
        """The default route via ``gateway``; False if there is one already."""
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_BOOT
        msg["type"] = RTN_UNICAST
        msg["attrs"] = [("RTA_GATEWAY", gateway), ("RTA_OIF", index)]
        error = self._request(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL)
        if error == errno.EEXIST:
            return False
        check(error, f"route via {gateway}")
        return True

    # -- neighbours ---------------------------------------------------------------------------
    def set_neighbour(self, index: int, ip: str, mac: str) -> None:
        """``ip`` is at ``mac`` on interface ``index``, for good (made or replaced)."""
        check(self._neighbour(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, index, ip, mac),
                    f"add the neighbour entry {ip} at {mac} on interface {index}")

    def delete_neighbour(self, index: int, ip: str) -> None:
        """Forget ``ip`` on ``index``; an entry or interface already gone is fine."""
        error = self._neighbour(RTM_DELNEIGH, 0, index, ip, None)
        if error not in (errno.ENOENT, errno.ENODEV):
            check(error, f"delete the neighbour entry {ip} on interface {index}")

    def _neighbour(self, kind: int, flags: int, index: int, ip: str, mac: str | None) -> int:
        from pyroute2.netlink.rtnl.ndmsg import ndmsg

        msg = ndmsg()
        msg["family"] = socket.AF_INET
        msg["ifindex"] = index
        msg["state"] = NUD_PERMANENT
        msg["attrs"] = [("NDA_DST", ip)] + ([("NDA_LLADDR", mac)] if mac else [])
        return self._request(msg, kind, flags)

    # -- the exchange -------------------------------------------------------------------------
    def _request(self, msg: Any, kind: int, flags: int) -> int:
        """Send one request; the errno of the kernel's answer (0: done)."""
        self._seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._sock.send(msg.data)
        while True:  # the ack of this request (a late one of an earlier request is skipped)
            reply = self._sock.recv(65536)
            _, kind_got, _, seq, _, error = _ACK.unpack_from(reply)
            if kind_got == NLMSG_ERROR and seq == self._seq:
                return -error
