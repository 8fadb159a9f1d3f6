"""Networks of the native engine: a bridge in its own network namespace, containers joined by
veth pairs, names served by a DNS responder, faults made with tc.

Nothing on the host changes: the bridge lives in a namespace made for it (held open by a thread
of the owner process, so it vanishes with that process even when it is killed), and has no
uplink, so containers reach each other and nothing else. A container joins with one end of a
veth pair on the bridge and the other moved into its namespace as ``eth0``, addressed from the
network's subnet (``ipam.py``) with a default route via the gateway, the bridge's address, where
the DNS responder (``dns.py``) listens. Members know each other's (and the gateway's) MAC
addresses for good from the start (``rtnl.py``): no ARP, and no overflow of the kernel's
shared neighbour table however many containers talk to each other.

Faults are tc on the bridge end of a container's veth (so they act on what the container
receives): a partition is a u32 filter into a class whose queue holds nothing; delay and partial
loss use netem where the kernel has it, and elsewhere a userspace delay line (the frames are
redirected into a packet socket, held, and sent on past the queueing discipline).

Every resource is recorded (a JSON file per resource in the owner's records directory) before it
is made, so ``reap_network_records`` can undo what a killed owner left.

The engine's use::

    net = BridgeNetwork("backend", state_dir=state, records_dir=owner_dir)
    ip = net.attach(netns_of(pid), "cache", ["redis"], key=container_id)
    write(rootfs / "etc/resolv.conf", net.resolv_conf()); write(..., net.hosts(container_id))
    net.partition(a, b); net.heal(); net.delay(a, 200); net.loss(a, 100)
    net.detach(container_id); net.remove()

Namespaces are given as a path (``/proc/PID/ns/net``, see ``netns_of``) or an open fd.
pyroute2 is imported lazily, inside the threads that enter a namespace; its sockets belong to
the namespace of the thread that makes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import json
import os
import queue
import random
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Union

from ..errors import NetworkError, NotSupported
from .rtnl import RouteSocket, check, mac_for

NetnsRef = Union[int, str, "os.PathLike[str]"]

BRIDGE = "br0"
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


# -- namespaces -------------------------------------------------------------------------------
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


# -- records ----------------------------------------------------------------------------------
def write_record(records_dir: str | os.PathLike | None, kind: str, ident: str,
                 **data: Any) -> Path | None:
    """Record a resource before it is made (atomically: a reaper never reads half a record)."""
    if records_dir is None:
        return None
    directory = Path(records_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"net-{kind}-{ident}.json"
    tmp = directory / f".{path.name}.tmp"
    tmp.write_text(json.dumps({"kind": kind, "id": ident, "pid": os.getpid(), **data}),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def update_record(path: Path | None, **data: Any) -> None:
    if path is None:
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(data)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def drop_record(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_recorded(record: dict[str, Any]) -> str:
    """Undo one recorded resource of a dead owner; returns what was done (for the reaper's log).

    The bridge namespace and everything in it (bridge, veths, DNS socket) died with the owner
    process that held it, and so did proxies; what outlives the owner is its subnet lease.
    """
    kind = record.get("kind")
    if kind == "network" and record.get("ipam") and record.get("id"):
        from .ipam import IPAM

        released = IPAM(record["ipam"]).release_network(record["id"])  # killed before or after
        return f"released subnet {', '.join(released) or '(none)'} of network {record.get('name')}"
    if kind == "veth" and record.get("netns_path") and os.path.exists(record["netns_path"]):
        with contextlib.suppress(NetworkError):
            in_netns(record["netns_path"], _delete_link, record.get("host_ifname"))
        return f"deleted veth {record.get('host_ifname')}"
    return f"forgot {kind} {record.get('id')}"


def reap_network_records(records_dir: str | os.PathLike) -> list[str]:
    """Undo every network resource recorded in ``records_dir`` (an owner known to be dead)."""
    done = []
    directory = Path(records_dir)
    if not directory.is_dir():
        return done
    for path in sorted(directory.glob("net-*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        with contextlib.suppress(Exception):
            done.append(remove_recorded(record))
        drop_record(path)
    return done


def undo_record(record: dict[str, Any]) -> None:
    """A handler for the state journal (``handler="pytest_pycontain.native.network:undo_record"``).

    The engine journals ``records_dir=`` before making a network with that records directory,
    so the reaper of its dead owner reaches every network record; a record without it is one
    resource (``remove_recorded``).
    """
    if record.get("records_dir"):
        reap_network_records(record["records_dir"])
        with contextlib.suppress(OSError):
            os.rmdir(record["records_dir"])
    else:
        remove_recorded(record)


# -- netlink steps (run inside a NetnsThread) -------------------------------------------------
def _setup_bridge(ipr: Any, gateway: str, prefix: int) -> tuple[RouteSocket, int]:
    """The bridge, with a MAC address of its own choosing (a bridge otherwise takes its
    ports' lowest, which changes as they come and go); a RouteSocket here, and its index."""
    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    ipr.link("add", ifname=BRIDGE, kind="bridge", address=mac_for(gateway))
    index = ipr.link_lookup(ifname=BRIDGE)[0]
    ipr.addr("add", index=index, address=gateway, prefixlen=prefix)
    ipr.link("set", index=index, state="up")
    return RouteSocket(), index


def _dns_socket(ipr: Any, address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    return sock


def _exists(ifname: str) -> bool:
    """Whether the calling thread's namespace has an interface ``ifname``."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def _add_veth(bridge: tuple[RouteSocket, int], host_ifname: str, peer_netns: int,
              mac: str) -> str:
    """The pair, its bridge end up on the bridge, the other end (with address ``mac``) in the
    container's namespace under the first name of eth0, eth1, ... it does not have yet."""
    sock, bridge_index = bridge
    for n in range(64):
        peer = f"eth{n}"
        error = sock.add_veth(host_ifname, bridge_index, peer, peer_netns, mac)
        if error == errno.EEXIST and not _exists(host_ifname):
            continue  # the container has this name already
        check(error, f"add the veth pair {host_ifname}/{peer}")
        return peer
    raise NetworkError("the container has eth0 to eth63 already")


def _delete_link(ipr: Any, ifname: str | None) -> None:
    if not ifname:
        return
    found = ipr.link_lookup(ifname=ifname)
    if found:
        with contextlib.suppress(Exception):
            ipr.link("del", index=found[0])


def _join(ipr: Any, home: int, tables: Sequence[tuple[RouteSocket, int]], host_ifname: str,
          netns: int, ip: str, prefix: int, gateway: str, known: Sequence[tuple[str, str]]
          ) -> tuple[int, str, int, RouteSocket]:
    """On the network's thread (in the bridge's namespace, ``home``): a newcomer's veth pair,
    its end addressed, up and routed, and neighbour entries for good on every side: in the
    newcomer for ``known`` (address, MAC: the gateway and the members), in ``tables`` (the
    bridge's, then the members', each with its interface's index) for the newcomer.

    Returns the bridge end's index, the container's interface name and index, and a
    RouteSocket in the container's namespace."""
    mac = mac_for(ip)
    ifname = _add_veth(tables[0], host_ifname, netns, mac)
    inside: RouteSocket | None = None
    try:
        host_index = socket.if_nametoindex(host_ifname)
        enter_netns(netns)  # only to open a socket there, and to learn the index
        try:
            inside = RouteSocket()
            index = socket.if_nametoindex(ifname)
        finally:
            enter_netns(home)
        inside.add_address(index, ip, prefix)
        inside.set_up(index)
        inside.set_up(1)  # loopback is ifindex 1 in every namespace
        inside.add_default_route(gateway, index)  # the first network gives it, as with Docker
        for address, their_mac in known:
            inside.set_neighbour(index, address, their_mac)
        _introduce(ipr, ip, mac, tables)
    except BaseException:
        if inside is not None:
            inside.close()
        _delete_link(ipr, host_ifname)
        _forget(ipr, ip, tables)
        raise
    return host_index, ifname, index, inside


def _introduce(ipr: Any, ip: str, mac: str, tables: Sequence[tuple[RouteSocket, int]]) -> None:
    """Tell the bridge and the members (``(socket, ifindex)`` each, the bridge's first) where
    a newcomer is. Best effort for members: one that is going away learns by ARP if it must."""
    for n, (sock, index) in enumerate(tables):
        try:
            sock.set_neighbour(index, ip, mac)
        except (NetworkError, OSError):
            if n == 0:
                raise


def _forget(ipr: Any, ip: str, tables: Sequence[tuple[RouteSocket, int]],
            closing: RouteSocket | None = None) -> None:
    """Undo ``_introduce`` (for a member that left), and close the leaver's socket."""
    for sock, index in tables:
        with contextlib.suppress(NetworkError, OSError):
            sock.delete_neighbour(index, ip)
    if closing is not None:
        closing.close()


def _close_sockets(ipr: Any, tables: Sequence[tuple[RouteSocket, int]]) -> None:
    for sock, _ in tables:
        sock.close()


def _tc_root(ipr: Any, index: int) -> None:
    """HTB at the root (unclassified traffic passes straight through) with a dropping class."""
    qdiscs = [q for q in ipr.get_qdiscs(index=index) if q["parent"] == 0xFFFFFFFF]
    if any(q.get_attr("TCA_KIND") == "htb" for q in qdiscs):
        return
    ipr.tc("add", "htb", index, 0x10000, default=0)
    ipr.tc("add-class", "htb", index, DROP_CLASS, parent=0x10000, rate="10gbit",
           ceil="10gbit")
    ipr.tc("add", "pfifo", index, 0x200000, parent=DROP_CLASS, limit=0)


def _tc_drop_from(ipr: Any, index: int, source: str, prio: int) -> None:
    _tc_root(ipr, index)
    key = f"0x{int(ipaddress.IPv4Address(source)):08x}/0xffffffff+12"
    ipr.tc("add-filter", "u32", index, parent=0x10000, prio=prio, protocol=ETH_P_IP,
           target=DROP_CLASS, keys=[key])


def _tc_clear(ipr: Any, index: int, prio: int) -> None:
    with contextlib.suppress(Exception):
        ipr.tc("del-filter", "u32", index, parent=0x10000, prio=prio, protocol=0,
               target=0, keys=[])


def _tc_fault(ipr: Any, index: int, delay_us: int, jitter_us: int, loss: float) -> None:
    """All of the endpoint's traffic into netem (delay, loss), or into the drop class."""
    _tc_root(ipr, index)
    _tc_clear(ipr, index, PRIO_FAULT)
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
        _delete_link(ipr, inlet)
        raise
    return rx, tx


def _tc_redirect(ipr: Any, index: int, inlet: str) -> None:
    """Every frame to the container goes to the delay line instead."""
    _tc_root(ipr, index)
    _tc_clear(ipr, index, PRIO_FAULT)
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
        _tc_clear(ipr, found[0], PRIO_FAULT)
    _delete_link(ipr, line.inlet)
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


# -- networks ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Endpoint:
    """A container on a network."""

    key: str
    names: list[str]
    ip: str
    host_ifname: str
    host_index: int
    ifname: str = "eth0"
    record: Path | None = None
    faults: dict[str, float] = dataclasses.field(default_factory=dict)
    line: DelayLine | None = None
    index: int = 0  # of its interface, in its namespace
    rtnl: RouteSocket | None = None  # in its namespace; used on the network's thread only


@dataclasses.dataclass
class Spare:
    """What a removed network that no container was on anymore leaves for the next one: its
    namespace and thread, bridge, DNS responder, subnet lease and record. Making a network's
    namespace costs little, but the kernel tears one down in a worker of its own that holds
    the lock every network change waits for; a network per test would pay for that."""

    id: str
    ipam: Any
    records_dir: str | os.PathLike | None
    record: Path | None
    subnet: str
    addresses: Any
    worker: NetnsThread
    bridge: tuple[RouteSocket, int]
    responder: Any

    def close(self) -> None:
        """Tear it down (a spare nobody took)."""
        BridgeNetwork(spare=self).remove(wait=False)


class BridgeNetwork:
    """A network: a bridge in its own namespace, a subnet, a DNS responder.

    ``state_dir`` holds the IPAM table; ``records_dir`` (the owner's directory from the state
    bookkeeping) gets a record per resource. Satisfies ``engine.Network``. ``spare``: what a
    removed network left (the engine's pool) to build this one on; ``recycle``: where
    ``remove`` hands this one's own, when no container is on it anymore (``recycle`` returns
    False to have it torn down instead).
    """

    def __init__(self, name: str | None = None, *, state_dir: str | os.PathLike | None = None,
                 records_dir: str | os.PathLike | None = None, ipam: Any = None,
                 spare: Spare | None = None, recycle: Callable[[Spare], bool] | None = None):
        from . import dns
        from .ipam import IPAM, AddressPool, gateway_of

        self.id = "pcn" + secrets.token_hex(5)
        self.name = name or self.id
        self._recycle = recycle
        self._endpoints: dict[str, Endpoint] = {}
        self._partitions: set[frozenset[str]] = set()
        self._lock = threading.RLock()
        self._removed = False
        self._worker: NetnsThread | None = None
        self._responder: Any = None
        self._subnet: str | None = None
        self._bridge: tuple[RouteSocket, int] | None = None  # and the bridge's index
        if spare is not None:
            self._adopt(spare)
            return
        if state_dir is None and ipam is None:
            raise TypeError("BridgeNetwork needs state_dir (or ipam)")
        self.records_dir = records_dir
        self._ipam = ipam or IPAM(state_dir)
        self._record = write_record(records_dir, "network", self.id, name=self.name,
                                    ipam=str(self._ipam.state_dir))
        try:
            self._subnet = self._ipam.allocate_subnet(self.id, name=self.name)
            update_record(self._record, subnet=self._subnet)
            self._addresses = AddressPool(self._subnet)
            net = ipaddress.IPv4Network(self._subnet)
            self.prefix = net.prefixlen
            self.gateway = gateway_of(self._subnet)
            self._worker = NetnsThread(None, label=f"net-{self.name}")
            self._bridge = self._worker.call(_setup_bridge, self.gateway, self.prefix)
            sock = self._worker.call(_dns_socket, self.gateway)
            self._responder = dns.Responder(sock, label=f"dns-{self.name}")
        except BaseException:
            self._teardown()
            raise

    def _adopt(self, spare: Spare) -> None:
        from .ipam import gateway_of

        self.records_dir, self._ipam, self._record = spare.records_dir, spare.ipam, spare.record
        self._subnet, self._addresses = spare.subnet, spare.addresses
        self._worker, self._bridge, self._responder = spare.worker, spare.bridge, spare.responder
        self.prefix = ipaddress.IPv4Network(spare.subnet).prefixlen
        self.gateway = gateway_of(spare.subnet)
        try:
            update_record(self._record, id=self.id, name=self.name)
            self._ipam.relabel(spare.subnet, spare.id, self.id, self.name)
        except BaseException:
            self.id = spare.id  # the lease and the record still name the spare
            self._teardown()
            raise

    def _spare(self) -> Spare | None:
        """This network's kernel side for the next one, when it is clean: no container on
        it, its thread and responder alive (under ``_lock``, once removed)."""
        if self._endpoints or self._worker is None or self._responder is None or \
                self._bridge is None or not self._worker.alive or self._addresses.used():
            return None
        try:
            self._ipam.relabel(self._subnet, self.id, self.id, None)  # the name is free again
        except NetworkError:
            return None
        return Spare(self.id, self._ipam, self.records_dir, self._record, self._subnet,
                     self._addresses, self._worker, self._bridge, self._responder)

    # -- what the engine needs ------------------------------------------------------------
    @property
    def subnet(self) -> str:
        return self._subnet or ""

    @property
    def dns_server(self) -> str:
        return self.gateway

    @property
    def netns_path(self) -> str:
        """A path on which the bridge's namespace can be opened while the owner lives."""
        self._check()
        return f"/proc/{os.getpid()}/fd/{self._worker.fd}"

    def netns_fd(self) -> int:
        """An fd of the caller's own on the bridge's namespace: whoever holds it keeps the
        bridge and its veth pairs alive (a kept container's keeper, after this process)."""
        self._check()
        return os.dup(self._worker.fd)

    def dns_handover(self) -> tuple[int, dict[str, list[str]]]:
        """An fd of the caller's own on the DNS responder's socket, and the names it serves:
        for a kept container's keeper to answer from after this process."""
        self._check()
        return os.dup(self._responder.sock.fileno()), self._responder.snapshot()

    def resolv_conf(self) -> str:
        from . import dns

        return dns.resolv_conf(self.gateway)

    def hosts(self, key: str | None = None, hostname: str | None = None) -> str:
        """``/etc/hosts`` for a container (its own entry first, then the others')."""
        from . import dns

        with self._lock:
            eps = sorted(self._endpoints.values(), key=lambda e: e.key != key)
            return dns.hosts_file(((e.ip, e.names) for e in eps), hostname)

    def addresses(self) -> dict[str, str]:
        """The addresses handed out on this network: address -> container key."""
        return self._addresses.used() if self._subnet else {}

    def endpoints(self) -> dict[str, Endpoint]:
        with self._lock:
            return dict(self._endpoints)

    def _check(self) -> None:
        if self._removed:
            raise NetworkError(f"network {self.name!r} has been removed")

    # -- joining --------------------------------------------------------------------------
    def attach(self, netns: NetnsRef, name: str | None = None, aliases: Sequence[str] = (),
               *, key: str | None = None) -> str:
        """Join the container whose namespace is ``netns``; returns its address.

        ``name`` and ``aliases`` are what the others resolve; ``key`` (default: ``name``) is
        how ``detach`` and the faults refer to it.
        """
        with self._lock:
            self._check()
            names = [n for n in dict.fromkeys([name or "", *aliases]) if n]
            for n in names:
                if self._responder.lookup(n):
                    raise NetworkError(f"name {n!r} is already taken on network {self.name!r}")
            key = key or name or "c" + secrets.token_hex(5)
            if key in self._endpoints:
                raise NetworkError(f"{key!r} is already attached to network {self.name!r}")
            nsfd = open_netns(netns)
            host_ifname = f"vpc{secrets.token_hex(5)}"
            ip = record = None
            known = [(self.gateway, mac_for(self.gateway))]
            known += [(ep.ip, mac_for(ep.ip)) for ep in self._endpoints.values()]
            try:
                ip = self._addresses.allocate(key)
                record = write_record(self.records_dir, "veth", host_ifname, network=self.id,
                                      host_ifname=host_ifname, ip=ip)
                host_index, ifname, index, rtnl = self._worker.call(
                    _join, self._worker.fd, self._tables(), host_ifname, nsfd, ip,
                    self.prefix, self.gateway, known)
            except BaseException as exc:
                if ip is not None:
                    self._addresses.release(ip)
                drop_record(record)
                if isinstance(exc, Exception) and not isinstance(exc, NetworkError):
                    raise NetworkError(f"cannot attach {key!r} to network {self.name!r}: "
                                       f"{exc}") from exc
                raise
            finally:
                os.close(nsfd)
            self._endpoints[key] = Endpoint(key, names, ip, host_ifname, host_index, ifname,
                                            record, index=index, rtnl=rtnl)
            self._responder.add(names, ip)
            return ip

    def _tables(self) -> list[tuple[RouteSocket, int]]:
        """Where neighbour entries go: the bridge's RouteSocket and the members', each with
        its interface's index, for the network's thread to use."""
        tables = [self._bridge] if self._bridge else []
        return tables + [(ep.rtnl, ep.index) for ep in self._endpoints.values()
                         if ep.rtnl is not None]

    def detach(self, key: str, *, link_gone: bool = False) -> None:
        """Take a container off the network (gone already is fine).

        ``link_gone``: the container's namespace is going away, and its veth pair with it (the
        kernel deletes both ends in its own time), so no deletion is queued here: a removal
        then costs the next attach nothing."""
        with self._lock:
            ep = self._endpoints.pop(key, None)
            if ep is None:
                return
            self._responder.remove(ep.ip)
            self._partitions = {p for p in self._partitions if key not in p}
            if ep.line is not None:
                ep.line.close()
                if self._worker is not None:
                    self._worker.submit(_delete_link, ep.line.inlet)
            if self._worker is not None and not link_gone:  # in order, before a later attach
                self._worker.submit(_delete_link, ep.host_ifname)
            if self._worker is not None:
                self._worker.submit(_forget, ep.ip, self._tables(), ep.rtnl)
            self._addresses.release(ep.ip)
            drop_record(ep.record)

    # -- faults ---------------------------------------------------------------------------
    def _endpoint(self, container: Any) -> Endpoint:
        with self._lock:
            self._check()
            if isinstance(container, Endpoint):
                container = container.key
            if isinstance(container, str):
                for ep in self._endpoints.values():
                    if container == ep.key or container in ep.names or container == ep.ip:
                        return ep
            else:
                for attr in ("id", "name"):
                    value = getattr(container, attr, None)
                    if value in self._endpoints:
                        return self._endpoints[value]
                ip = getattr(container, "ip", None)
                for ep in self._endpoints.values():
                    if ip is not None and ep.ip == ip:
                        return ep
            raise NetworkError(f"{getattr(container, 'name', container)!r} is not on "
                               f"network {self.name!r}")

    def partition(self, a: Any, b: Any) -> None:
        """Drop all IP traffic between ``a`` and ``b`` (both ways) until ``heal()``."""
        ea, eb = self._endpoint(a), self._endpoint(b)
        if ea.key == eb.key:
            raise NetworkError(f"cannot partition {ea.key!r} from itself")
        with self._lock:
            pair = frozenset((ea.key, eb.key))
            if pair in self._partitions:
                return
            self._worker.call(_tc_drop_from, ea.host_index, eb.ip, PRIO_PARTITION)
            self._worker.call(_tc_drop_from, eb.host_index, ea.ip, PRIO_PARTITION)
            self._partitions.add(pair)

    def heal(self) -> None:
        """Undo every partition of this network (delay and loss stay: set them to 0)."""
        with self._lock:
            self._check()
            keys = {k for p in self._partitions for k in p}
            for key in keys:
                ep = self._endpoints.get(key)
                if ep is not None:
                    self._worker.call(_tc_clear, ep.host_index, PRIO_PARTITION)
            self._partitions.clear()

    def _apply_fault(self, ep: Endpoint) -> None:
        """netem where the kernel has it, else the userspace delay line."""
        delay, jitter = float(ep.faults.get("delay_ms", 0)), float(ep.faults.get("jitter_ms", 0))
        loss = float(ep.faults.get("loss", 0))
        if ep.line is not None and (delay or 0 < loss < 100):
            ep.line.set(delay, jitter, loss)  # already in userspace: just new numbers
            return
        self._stop_line(ep)
        try:
            self._worker.call(_tc_fault, ep.host_index, int(delay * 1000), int(jitter * 1000),
                              loss)
        except NotSupported as exc:
            try:
                self._start_line(ep).set(delay, jitter, loss)
            except Exception as fallback:
                self._stop_line(ep)
                raise NotSupported(f"{exc}; the userspace fallback failed too: "
                                   f"{fallback}") from fallback

    def _start_line(self, ep: Endpoint) -> DelayLine:
        tag = ep.host_ifname[3:]
        rx, tx = self._worker.call(_add_delay_line, tag, ep.host_ifname)
        ep.line = DelayLine(rx, tx, f"vpd{tag}")
        self._worker.call(_tc_redirect, ep.host_index, ep.line.inlet)
        return ep.line

    def _stop_line(self, ep: Endpoint) -> None:
        if ep.line is None:
            return
        line, ep.line = ep.line, None
        if self._worker is not None:
            self._worker.call(_tc_clear, ep.host_index, PRIO_FAULT)
            self._worker.submit(_delete_link, line.inlet)
        line.close()

    def delay(self, container: Any, ms: int, jitter_ms: int = 0) -> None:
        """Delay every frame to ``container`` by ``ms`` (± ``jitter_ms``); 0 undoes it.

        Raises ``NotSupported`` (and changes nothing) where neither netem nor packet sockets
        are available."""
        if ms < 0 or jitter_ms < 0:
            raise NetworkError(f"delay: ms and jitter_ms must be >= 0, got {ms}, {jitter_ms}")
        ep = self._endpoint(container)
        with self._lock:
            saved = dict(ep.faults)
            ep.faults.update(delay_ms=ms, jitter_ms=jitter_ms)
            try:
                self._apply_fault(ep)
            except BaseException:
                ep.faults = saved
                raise

    def loss(self, container: Any, percent: float) -> None:
        """Drop ``percent`` % of the packets to ``container``; 0 undoes it."""
        if not 0 <= percent <= 100:
            raise NetworkError(f"loss: percent must be between 0 and 100, got {percent}")
        ep = self._endpoint(container)
        with self._lock:
            saved = dict(ep.faults)
            ep.faults["loss"] = percent
            try:
                self._apply_fault(ep)
            except BaseException:
                ep.faults = saved
                raise

    # -- the end --------------------------------------------------------------------------
    def remove(self, wait: bool = True) -> None:
        """Tear everything down: endpoints, DNS, bridge, namespace, lease, records.

        The bridge goes with the namespace when the network's thread lets go of it (the
        kernel removes a namespace's devices in one batch; deleting one takes it ~20 ms).
        ``wait=False`` leaves the members' veth pairs to go that way too, in the background,
        and the subnet is released once the thread is done; ``wait=True`` deletes them first,
        so that no member has the interface when this returns.
        """
        with self._lock:
            if self._removed:
                return
            self._removed = True
            spare = self._spare() if self._recycle is not None else None
            if spare is not None and self._recycle(spare):
                self._worker = self._responder = self._bridge = None
                return
            self._teardown(wait)

    def _teardown(self, wait: bool = True) -> None:
        self._removed = True
        if self._responder is not None:
            self._responder.close()
            self._responder = None
        records = [ep.record for ep in self._endpoints.values()] + [self._record]
        subnet, ipam, ident = self._subnet, self._ipam, self.id

        def finish(ipr: Any = None) -> None:
            if subnet is not None:
                ipam.release_subnet(subnet, network_id=ident)
            for record in records:
                drop_record(record)

        if self._worker is not None:
            for ep in self._endpoints.values():
                if ep.line is not None:
                    ep.line.close()
                    self._worker.submit(_delete_link, ep.line.inlet)
                if wait:  # the members lose their interface before this returns
                    self._worker.submit(_delete_link, ep.host_ifname)
            self._worker.submit(_close_sockets, self._tables())
            self._worker.submit(finish)
            self._worker.close(wait)
            self._worker = None
        else:
            finish()
        self._endpoints.clear()

    def __enter__(self) -> BridgeNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"<BridgeNetwork {self.name} {self._subnet}>"


def names_of(endpoints: Iterable[Endpoint]) -> dict[str, str]:
    """name -> address, for a quick look in tests and error messages."""
    return {n: ep.ip for ep in endpoints for n in ep.names}
