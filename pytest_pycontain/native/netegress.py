"""A network's way out: pasta on its bridge's namespace, and NAT there, as Docker's bridge has.

Containers route through the gateway (the bridge's address) into the bridge's namespace, which
forwards what is not for the subnet to pasta's tap, masqueraded to the tap's address: pasta
then turns each connection into a socket of the engine's own namespace (see ``egress.py``:
never the host's loopback, no port forwarded in). Everything is made inside the bridge's
namespace, so the host's network is never changed, and once per network (a spare network keeps
it), in the background from the network's birth to its first member's start.

Linux hands pasta forwarded packets whose checksum is left to the sending device (veth offload),
and pasta drops them: members of a network with a way out send with checksums filled in
(``tx_checksum_off``, one ioctl in their namespace at join).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import threading
from typing import Any

from ..errors import NetworkError
from ..procinfo import process_start_time
from . import egress
from .netns import NetnsThread
from .netrecords import drop_record, write_record

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def tx_checksum_off(sock: socket.socket, ifname: str) -> None:
    """Have ``ifname`` (of ``sock``'s namespace) fill in its checksums itself."""
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
    request = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)


def _thread_id(ipr: Any) -> int:
    return threading.get_native_id()


def _rules(subnet: str) -> str:
    """iptables-restore's input: masquerade what leaves the subnet, and track nothing else.

    Only connections NATed on their way out need the kernel's connection tracking. Tracked,
    the namespace's own packets (the bridge's multicast reports, DNS answers) would leave an
    entry behind for minutes, and while a namespace has one, every interface that goes down in
    it (a member's veth, at each container's end) makes the kernel walk its whole tracking
    table for the masquerade (~0.6 ms of CPU with this host's 262144 buckets). The raw table
    comes first: it is in place before tracking starts in the namespace."""
    return "".join((
        "*raw\n",
        "-A OUTPUT -j NOTRACK\n",  # the namespace's own: answers, reports
        f"-A PREROUTING -d {subnet} -j NOTRACK\n",  # to the gateway and between members
        "-A PREROUTING -d 224.0.0.0/4 -j NOTRACK\n",  # multicast
        "-A PREROUTING -d 255.255.255.255 -j NOTRACK\n",
        "COMMIT\n",
        "*nat\n",
        f"-A POSTROUTING -s {subnet} ! -d {subnet} -j MASQUERADE\n",
        "COMMIT\n"))


def _forward_and_masquerade(ipr: Any, subnet: str, iptables: str) -> None:
    """In the bridge's namespace (its thread): route, and masquerade what leaves the subnet
    (tracking nothing else: see ``_rules``)."""
    with open("/proc/sys/net/ipv4/ip_forward", "w") as knob:  # this namespace's own
        knob.write("1\n")
    done = subprocess.run([iptables + "-restore", "-w", "--noflush"], input=_rules(subnet),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:  # a kernel without the raw table: the masquerade alone
        done = subprocess.run([iptables, "-w", "-t", "nat", "-A", "POSTROUTING", "-s", subnet,
                               "!", "-d", subnet, "-j", "MASQUERADE"],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"iptables could not masquerade {subnet} in the network's own "
                           f"namespace: {done.stderr.strip() or done.returncode}")


class NetworkEgress:
    """The way out of one network, made in the background; ``ready()`` waits for it."""

    def __init__(self, worker: NetnsThread, subnet: str, name: str,
                 records_dir: str | os.PathLike | None = None):
        self.name = name
        self._worker = worker
        self._subnet = subnet
        self._records_dir = records_dir
        self._egress: egress.Egress | None = None
        self._record: Any = None
        self._failure: BaseException | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._make, daemon=True,
                                        name=f"pycontain-egress-{name}")
        self._thread.start()

    def _make(self) -> None:
        try:
            iptables = shutil.which("iptables")
            if egress.pasta_path() is None or iptables is None:
                raise NetworkError(
                    f"network {self.name!r}: a way out needs pasta (Debian's {egress.PACKAGE} "
                    "package) and iptables; install them, or pass internal=True for a network "
                    "without one")
            tid = self._worker.call(_thread_id)
            made = egress.start(self._worker.fd, f"/proc/{os.getpid()}/task/{tid}",
                                f"network {self.name!r}", spawn=egress.on_lasting_thread)
            with self._lock:
                self._egress = made
                self._record = write_record(self._records_dir, "pasta", str(made.process.pid),
                                            pid=made.process.pid,
                                            start=process_start_time(made.process.pid))
                closed = self._closed
            if closed:
                self.close()
                return
            self._worker.call(_forward_and_masquerade, self._subnet, iptables)
        except BaseException as exc:
            self._failure = exc

    def ready(self) -> None:
        """Wait until the way out is there; its failure, said as a ``NetworkError``."""
        self._thread.join()
        if self._failure is not None:
            raise NetworkError(str(self._failure)) from self._failure

    def close(self) -> None:
        """End pasta (the NAT goes with the namespace)."""
        with self._lock:
            self._closed = True
            made, self._egress = self._egress, None
            record, self._record = self._record, None
        if made is not None:
            made.close()
        drop_record(record)
