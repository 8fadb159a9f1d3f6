"""Network faults, the same on both backends: partitions, delay, jitter and loss.

``FaultState`` is what a network knows of its faults (which members are partitioned from
which, each member's ``Fault``, and where a userspace ``DelayLine`` stands in for netem); each
backend says how a fault is made through a ``Shaper``. The native engine shapes what a
container receives, with tc on the bridge end of its veth: a partition is a u32 filter into a
class whose queue holds nothing; delay and partial loss use netem where the kernel has it, and
elsewhere a delay line (frames are redirected into a packet socket, held, and sent on past the
queueing discipline). The Docker backend shapes what a container sends, inside its namespace.

The tc steps run in the namespace of the interface (``ipr`` is a pyroute2 IPRoute there, see
``netns.NetnsThread``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import os
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import NetworkError, NotSupported
from .netns import delete_link

DROP_CLASS = 0x10020  # 1:20, a class whose leaf queue holds nothing: what goes there is dropped
NETEM_CLASS = 0x10030  # 1:30, netem for delay and loss
PRIO_PARTITION = 10
PRIO_FAULT = 20
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PACKET_QDISC_BYPASS = 20
SOL_PACKET = 263
SIOCETHTOOL = 0x8946
# legacy ethtool "set" commands: tx checksum, scatter-gather, TSO, GSO offloads off, so that
# frames reach the delay line as plain packets with their checksums filled in
ETHTOOL_OFFLOADS_OFF = (0x1F, 0x24, 0x19, 0x17)


# -- tc and the delay line (run in the interface's namespace) ------------------------------
def _tc_root(ipr: Any, index: int) -> None:
    """HTB at the root (unclassified traffic passes straight through) with a dropping class."""
    qdiscs = [q for q in ipr.get_qdiscs(index=index) if q["parent"] == 0xFFFFFFFF]
    if any(q.get_attr("TCA_KIND") == "htb" for q in qdiscs):
        return
    ipr.tc("add", "htb", index, 0x10000, default=0)
    ipr.tc("add-class", "htb", index, DROP_CLASS, parent=0x10000, rate="10gbit",
           ceil="10gbit")
    ipr.tc("add", "pfifo", index, 0x200000, parent=DROP_CLASS, limit=0)


def tc_drop_from(ipr: Any, index: int, source: str, prio: int) -> None:
    """Drop what ``source`` sends to the interface ``index`` (a u32 filter into the drop class)."""
    _tc_root(ipr, index)
    key = f"0x{int(ipaddress.IPv4Address(source)):08x}/0xffffffff+12"
    ipr.tc("add-filter", "u32", index, parent=0x10000, prio=prio, protocol=ETH_P_IP,
           target=DROP_CLASS, keys=[key])


def tc_clear(ipr: Any, index: int, prio: int) -> None:
    """Remove the filters of priority ``prio`` (a partition's, or a fault's) from ``index``."""
    with contextlib.suppress(Exception):
        ipr.tc("del-filter", "u32", index, parent=0x10000, prio=prio, protocol=0,
               target=0, keys=[])


def tc_fault(ipr: Any, index: int, delay_us: int, jitter_us: int, loss: float) -> None:
    """All of the endpoint's traffic into netem (delay, loss), or into the drop class."""
    _tc_root(ipr, index)
    tc_clear(ipr, index, PRIO_FAULT)
    with contextlib.suppress(Exception):
        ipr.tc("del-class", "htb", index, NETEM_CLASS, parent=0x10000,
                   rate="10gbit", ceil="10gbit")
    if not delay_us and not loss:
        return
    if loss >= 100 and not delay_us:
        target = DROP_CLASS
    else:
        ipr.tc("add-class", "htb", index, NETEM_CLASS, parent=0x10000, rate="10gbit",
               ceil="10gbit")
        try:
            ipr.tc("add", "netem", index, 0x300000, parent=NETEM_CLASS, delay=delay_us,
                   jitter=jitter_us, loss=loss, limit=100000)
        except Exception as exc:
            with contextlib.suppress(Exception):
                ipr.tc("del-class", "htb", index, NETEM_CLASS, parent=0x10000,
                   rate="10gbit", ceil="10gbit")
            if getattr(exc, "code", None) in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
                raise NotSupported(
                    "network delay and partial loss need the kernel's netem queue "
                    "(CONFIG_NET_SCH_NETEM), which this kernel lacks: "
                    f"{exc}") from exc
            raise
        target = NETEM_CLASS
    ipr.tc("add-filter", "u32", index, parent=0x10000, prio=PRIO_FAULT, protocol=ETH_P_IP,
           target=target, keys=["0x0/0x0+0"])


def _offloads_off(ifname: str) -> None:
    import ctypes
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for cmd in ETHTOOL_OFFLOADS_OFF:
            value = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
            request = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
            with contextlib.suppress(OSError):
                fcntl.ioctl(sock, SIOCETHTOOL, request)


def _add_delay_line(ipr: Any, tag: str, host_ifname: str) -> tuple[socket.socket, ...]:
    """A veth pair (not on the bridge) that redirected frames cross into a packet socket, and
    a socket that sends them on to the container's veth, past its queueing discipline."""
    inlet, outlet = f"vpd{tag}", f"vpe{tag}"
    ipr.link("add", ifname=inlet, kind="veth", peer={"ifname": outlet})
    for ifname in (inlet, outlet):
        ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
    _offloads_off(inlet)
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind((outlet, ETH_P_ALL))
        tx.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        tx.bind((host_ifname, 0))
    except BaseException:
        rx.close()
        tx.close()
        delete_link(ipr, inlet)
        raise
    return rx, tx


def _tc_redirect(ipr: Any, index: int, inlet: str) -> None:
    """Every frame to the container goes to the delay line instead."""
    _tc_root(ipr, index)
    tc_clear(ipr, index, PRIO_FAULT)
    target = ipr.link_lookup(ifname=inlet)[0]
    ipr.tc("add-filter", "u32", index, parent=0x10000, prio=PRIO_FAULT, protocol=ETH_P_ALL,
           target=DROP_CLASS, keys=["0x0/0x0+0"],
           action={"kind": "mirred", "direction": "egress", "action": "redirect",
                   "ifindex": target})


def start_delay_line(ipr: Any, ifname: str, tag: str) -> DelayLine:
    """Send what leaves ``ifname`` through a userspace ``DelayLine``: the fallback where the
    kernel has no netem. Runs inside the interface's namespace (``ipr`` is of it); the Docker
    backend uses it on a container's own interface."""
    rx, tx = _add_delay_line(ipr, tag, ifname)
    line = DelayLine(rx, tx, f"vpd{tag}")
    try:
        _tc_redirect(ipr, ipr.link_lookup(ifname=ifname)[0], line.inlet)
    except BaseException:
        stop_delay_line(ipr, ifname, line)
        raise
    return line


def stop_delay_line(ipr: Any, ifname: str, line: DelayLine) -> None:
    """Undo ``start_delay_line``: frames flow straight again, the line's links go."""
    found = ipr.link_lookup(ifname=ifname)
    if found:
        tc_clear(ipr, found[0], PRIO_FAULT)
    delete_link(ipr, line.inlet)
    line.close()


class DelayLine:
    """Holds each frame for the delay (and drops a share of them) in userspace: the fallback
    where the kernel has no netem. Frames keep their order."""

    def __init__(self, rx: socket.socket, tx: socket.socket, inlet: str):
        self.rx, self.tx, self.inlet = rx, tx, inlet
        self.delay = self.jitter = self.loss = 0.0
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pycontain-delay-{inlet}")
        self._thread.start()

    def set(self, delay_ms: float, jitter_ms: float, loss: float) -> None:
        self.delay, self.jitter, self.loss = delay_ms / 1000, jitter_ms / 1000, loss

    def _run(self) -> None:
        pending: list[tuple[float, bytes]] = []
        self.rx.setblocking(False)
        last = 0.0
        while True:
            now = time.monotonic()
            timeout = max(0.0, pending[0][0] - now) if pending else None
            ready, _, _ = select.select([self.rx, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                return
            while True:
                try:
                    frame, address = self.rx.recvfrom(65535)
                except OSError:
                    break
                if address[2] == PACKET_OUTGOING or random.random() * 100 < self.loss:
                    continue
                jitter = random.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
                last = max(last, time.monotonic() + max(0.0, self.delay + jitter))
                pending.append((last, frame))
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                with contextlib.suppress(OSError):
                    self.tx.send(pending.pop(0)[1])

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self.rx.close()
        self.tx.close()


# -- the state --------------------------------------------------------------------------------
def check_delay(ms: float, jitter_ms: float) -> None:
    """``NetworkError`` for a delay no network can have (both backends say it alike)."""
    if ms < 0 or jitter_ms < 0:
        raise NetworkError(f"delay: ms and jitter_ms must be >= 0, got {ms}, {jitter_ms}")


def check_loss(percent: float) -> None:
    """``NetworkError`` for a share of packets that is not one."""
    if not 0 <= percent <= 100:
        raise NetworkError(f"loss: percent must be between 0 and 100, got {percent}")


@dataclasses.dataclass(frozen=True)
class Fault:
    """What one member's traffic suffers: a delay (± jitter) and a share of packets lost."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # percent

    def delayed(self, ms: float, jitter_ms: float = 0) -> Fault:
        """This fault with a new delay; a bad value is a ``NetworkError`` naming it."""
        check_delay(ms, jitter_ms)
        return dataclasses.replace(self, delay_ms=float(ms), jitter_ms=float(jitter_ms))

    def lossy(self, percent: float) -> Fault:
        """This fault with a new loss; a bad value is a ``NetworkError`` naming it."""
        check_loss(percent)
        return dataclasses.replace(self, loss=float(percent))

    @property
    def shaping(self) -> bool:
        """Whether it needs netem or a delay line (nothing at all and a total loss do not)."""
        return bool(self.delay_ms) or 0 < self.loss < 100


@dataclasses.dataclass(frozen=True)
class Member:
    """A container as the fault state knows it: the network's key for it, and its address."""

    key: str
    ip: str


@dataclasses.dataclass(frozen=True)
class Partition:
    """Two members that cannot reach each other."""

    a: Member
    b: Member

    def ways(self) -> tuple[tuple[Member, Member], tuple[Member, Member]]:
        """(member, peer) both ways: each side is cut off from the other."""
        return (self.a, self.b), (self.b, self.a)

    def involves(self, key: str) -> bool:
        return key in (self.a.key, self.b.key)


class Shaper(Protocol):
    """How a backend shapes one member's traffic."""

    def netem(self, fault: Fault) -> None:
        """Put ``fault`` in place in the kernel (``Fault()`` undoes it); ``NotSupported``
        where the kernel has no netem and the fault is ``shaping``."""

    def start_line(self) -> DelayLine:
        """Send the member's traffic through a new userspace delay line."""

    def stop_line(self, line: DelayLine) -> None:
        """Undo ``start_line``: frames flow straight again, the line is closed."""


class FaultState:
    """One network's faults. Not locked: the network that holds it guards it with its own lock
    (a fault is made in the kernel and recorded here as one step)."""

    def __init__(self) -> None:
        self._partitions: dict[frozenset[str], Partition] = {}
        self._faults: dict[str, Fault] = {}
        self._lines: dict[str, DelayLine] = {}

    def fault(self, key: str) -> Fault:
        return self._faults.get(key, Fault())

    def partitioned(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self._partitions

    def partition(self, partition: Partition,
                  cut: Callable[[Member, Member], None],
                  mend: Callable[[Member, Member], None]) -> None:
        """``cut(member, peer)`` both ways and record it (nothing if it is in place already);
        when the second way fails, the first is mended."""
        pair = frozenset((partition.a.key, partition.b.key))
        if pair in self._partitions:
            return
        (one, peer_one), (two, peer_two) = partition.ways()
        cut(one, peer_one)
        try:
            cut(two, peer_two)
        except BaseException:
            with contextlib.suppress(Exception):
                mend(one, peer_one)
            raise
        self._partitions[pair] = partition

    def heal(self) -> list[Partition]:
        """Forget every partition; returns them, for the backend to undo."""
        healed = list(self._partitions.values())
        self._partitions.clear()
        return healed

    def set(self, key: str, fault: Fault, shaper: Shaper) -> None:
        """Make ``key``'s traffic suffer ``fault``: with netem where the kernel has it, else
        with a delay line (one already running just takes the new numbers). On failure the
        recorded fault stays as it was."""
        line = self._lines.get(key)
        if line is not None and fault.shaping:
            line.set(fault.delay_ms, fault.jitter_ms, fault.loss)
            self._faults[key] = fault
            return
        if line is not None:
            del self._lines[key]
            shaper.stop_line(line)
        try:
            shaper.netem(fault)
        except NotSupported as exc:
            try:
                line = shaper.start_line()
            except Exception as fallback:
                raise NotSupported(f"{exc}; the userspace fallback failed too: "
                                   f"{fallback}") from fallback
            line.set(fault.delay_ms, fault.jitter_ms, fault.loss)
            self._lines[key] = line
        self._faults[key] = fault

    def forget(self, key: str) -> DelayLine | None:
        """A member left: drop its partitions and its fault; returns its delay line, if it had
        one, for the backend to stop."""
        self._partitions = {p: v for p, v in self._partitions.items() if key not in p}
        self._faults.pop(key, None)
        return self._lines.pop(key, None)

    def take_lines(self) -> dict[str, DelayLine]:
        """Every running delay line (key -> line), forgotten here: the network is going."""
        lines, self._lines = self._lines, {}
        return lines

    def line(self, key: str) -> DelayLine | None:
        return self._lines.get(key)
