"""Networks of the native engine: a bridge in its own network namespace, containers joined by
veth pairs, names served by a DNS responder.

Nothing on the host changes: the bridge lives in a namespace made for it (held open by a thread
of the owner process, ``netns.NetnsThread``, so it vanishes with that process even when it is
killed), and has no uplink, so containers reach each other and nothing else. A container joins
with one end of a veth pair on the bridge and the other moved into its namespace as ``eth0``,
addressed from the network's subnet (``ipam.py``) with a default route via the gateway, the
bridge's address, where the DNS responder (``dns.py``) listens. Members know each other's (and
the gateway's) MAC addresses for good from the start (``rtnl.py``): no ARP, and no overflow of
the kernel's shared neighbour table however many containers talk to each other.

Faults act on what a container receives, on the bridge end of its veth (``faults.py``). Every
resource that could outlive its owner is recorded before it is made (``netrecords.py``), so
that the next run can undo what a killed owner left; a veth pair needs no record: it lives in
the bridge's namespace, and goes with it (a pair goes as soon as one end does).

The engine's use::

    net = BridgeNetwork("backend", state_dir=state, records_dir=owner_dir)
    ip = net.attach(netns_of(pid), "cache", ["redis"], key=container_id)
    write(rootfs / "etc/resolv.conf", net.resolv_conf()); write(..., net.hosts(hostname, ip))
    net.partition(a, b); net.heal(); net.delay(a, 200); net.loss(a, 100)
    net.detach(container_id); net.remove()
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import HOST_NAME
from ..errors import ConfigError, NetworkError
from . import rtnl
from .faults import (
    PRIO_FAULT,
    PRIO_PARTITION,
    DelayLine,
    Fault,
    FaultState,
    Member,
    Partition,
    check_delay,
    check_loss,
    start_delay_line,
    tc_clear,
    tc_drop_from,
    tc_fault,
)
from .netegress import NetworkEgress, tx_checksum_off
from .netns import NetnsRef, NetnsThread, delete_link, enter_netns, open_netns
from .netrecords import drop_record, update_record, write_record
from .rtnl import RouteSocket, check, mac_for

if TYPE_CHECKING:  # dns and ipam are imported when a network is made
    from .dns import Responder
    from .ipam import IPAM, AddressPool

BRIDGE = "br0"

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


def _udp_socket(ipr: Any) -> socket.socket:
    """A UDP socket of the calling thread's namespace (the bridge's)."""
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _exists(ifname: str) -> bool:
    """Whether the calling thread's namespace has an interface ``ifname``."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def _add_veth(bridge: tuple[RouteSocket, int], host_ifname: str, peer_netns: int,
              mac: str, also: Sequence[rtnl.Request] = ()) -> str:
    """The pair, its bridge end up on the bridge, the other end (up, with address ``mac``) in
    the container's namespace under the first name of eth0, eth1, ... it does not have yet.
    ``also``: requests for the bridge's namespace sent with the first try."""
    sock, bridge_index = bridge
    for n in range(64):
        peer = f"eth{n}"
        made = rtnl.veth_pair(host_ifname, bridge_index, peer, peer_netns, mac)
        error, *others = sock.exchange([made, *also])
        if error != errno.EEXIST or _exists(host_ifname):  # else the container has the name
            check(error, made.what)
        for request, other in zip(also, others, strict=True):
            if other not in request.fine:
                check(other, request.what)
        also = ()
        if not error:
            return peer
    raise NetworkError("the container has eth0 to eth63 already")


def _join(ipr: Any, home: int, tables: Sequence[tuple[RouteSocket, int]], host_ifname: str,
          netns: int, ip: str, prefix: int, gateway: str, known: Sequence[tuple[str, str]],
          fill_checksums: bool = False) -> tuple[int, str, int, RouteSocket]:
    """On the network's thread (in the bridge's namespace, ``home``): a newcomer's veth pair,
    its end addressed, up and routed, and neighbour entries for good on every side: in the
    newcomer for ``known`` (address, MAC: the gateway and the members), in ``tables`` (the
    bridge's, then the members', each with its interface's index) for the newcomer.
    ``fill_checksums``: its interface computes its checksums (a network with a way out).
    One batch of requests per namespace: the pair with the bridge's entry, then the
    newcomer's own, then one per member.

    Returns the bridge end's index, the container's interface name and index, and a
    RouteSocket in the container's namespace."""
    mac = mac_for(ip)
    inside: RouteSocket | None = None
    try:
        bridge_index = tables[0][1]
        ifname = _add_veth(tables[0], host_ifname, netns, mac,
                           also=[rtnl.neighbour(bridge_index, ip, mac)])
        host_index = socket.if_nametoindex(host_ifname)
        enter_netns(netns)  # only to open a socket there, and to learn the index
        try:
            inside = RouteSocket()
            index = socket.if_nametoindex(ifname)
            if fill_checksums:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as there:
                    tx_checksum_off(there, ifname)
        finally:
            enter_netns(home)
        # the first network gives the default route, as with Docker (a later one finds it)
        inside.run([rtnl.address(index, ip, prefix), rtnl.link_up(index),
                    rtnl.link_up(1),  # loopback is ifindex 1 in every namespace
                    rtnl.default_route(gateway, index),
                    *(rtnl.neighbour(index, address, their_mac) for address, their_mac in known)])
        _introduce(ipr, ip, mac, tables[1:])
    except BaseException:
        if inside is not None:
            inside.close()
        delete_link(ipr, host_ifname)
        _forget(ipr, ip, tables)
        raise
    return host_index, ifname, index, inside


def _introduce(ipr: Any, ip: str, mac: str, tables: Sequence[tuple[RouteSocket, int]]) -> None:
    """Tell the members (``(socket, ifindex)`` each) where a newcomer is. Best effort: one
    that is going away learns by ARP if it must."""
    for sock, index in tables:
        with contextlib.suppress(OSError):
            sock.exchange([rtnl.neighbour(index, ip, mac)])


def _forget(ipr: Any, ip: str, tables: Sequence[tuple[RouteSocket, int]],
            closing: RouteSocket | None = None) -> None:
    """Undo ``_introduce`` and the bridge's entry (for a member that left), and close the
    leaver's socket."""
    for sock, index in tables:
        with contextlib.suppress(OSError):
            sock.exchange([rtnl.forget_neighbour(index, ip)])
    if closing is not None:
        closing.close()


def _close_sockets(ipr: Any, tables: Sequence[tuple[RouteSocket, int]]) -> None:
    for sock, _ in tables:
        sock.close()


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
    index: int = 0  # of its interface, in its namespace
    rtnl: RouteSocket | None = None  # in its namespace; used on the network's thread only


@dataclasses.dataclass
class Spare:
    """What a removed network that no container was on anymore leaves for the next one: its
    namespace and thread, bridge, DNS responder, subnet lease and record. Making a network's
    namespace costs little, but the kernel tears one down in a worker of its own that holds
    the lock every network change waits for; a network per test would pay for that."""

    id: str
    ipam: IPAM
    records_dir: str | os.PathLike | None
    record: Path | None
    subnet: str
    addresses: AddressPool
    worker: NetnsThread
    bridge: tuple[RouteSocket, int]
    responder: Responder
    egress: NetworkEgress | None = None

    def close(self) -> None:
        """Tear it down (a spare nobody took)."""
        BridgeNetwork(spare=self).remove(wait=False)


@dataclasses.dataclass
class _Shaper:
    """Faults on what one member receives, made on its bridge end from the network's thread."""

    worker: NetnsThread
    ep: Endpoint

    def netem(self, fault: Fault) -> None:
        self.worker.call(tc_fault, self.ep.host_index, int(fault.delay_ms * 1000),
                         int(fault.jitter_ms * 1000), fault.loss)

    def start_line(self) -> DelayLine:
        return self.worker.call(start_delay_line, self.ep.host_ifname, self.ep.host_ifname[3:])

    def stop_line(self, line: DelayLine) -> None:
        try:
            self.worker.call(tc_clear, self.ep.host_index, PRIO_FAULT)
            self.worker.submit(delete_link, line.inlet)
        finally:
            line.close()


class BridgeNetwork:
    """A network: a bridge in its own namespace, a subnet, a DNS responder.

    ``state_dir`` holds the IPAM table; ``records_dir`` (the owner's directory from the state
    bookkeeping) gets a record per resource. Satisfies ``engine.Network``. ``spare``: what a
    removed network left (the engine's pool) to build this one on; ``recycle``: where
    ``remove`` hands this one's own, when no container is on it anymore (``recycle`` returns
    False to have it torn down instead). ``egress``: a way out as Docker's bridge has
    (``netegress.py``), made in the background. ``internal``: said so (members still
    route through the gateway, as on Docker's internal networks, and get no further).
    ``exposed``: ports of the engine's loopback its members reach as ``host.pycontain.internal``
    (``expose`` adds more). ``resolvers``: where its DNS responder forwards the names that are
    not its own, through the way out (IPv4 addresses; none without ``egress``).
    """

    def __init__(self, name: str | None = None, *, state_dir: str | os.PathLike | None = None,
                 records_dir: str | os.PathLike | None = None, ipam: IPAM | None = None,
                 spare: Spare | None = None, recycle: Callable[[Spare], bool] | None = None,
                 egress: bool = False, internal: bool = False, exposed: Iterable[int] = (),
                 resolvers: Sequence[str] = ()):
        from . import dns
        from .ipam import IPAM, AddressPool, gateway_of

        self.id = "pcn" + secrets.token_hex(5)
        self.name = name or self.id
        self._recycle = recycle
        self._endpoints: dict[str, Endpoint] = {}
        self._faults = FaultState()
        self._lock = threading.RLock()
        self._removed = False
        self._worker: NetnsThread | None = None
        self._responder: Responder | None = None
        self._subnet: str | None = None
        self._bridge: tuple[RouteSocket, int] | None = None  # and the bridge's index
        self._egress: NetworkEgress | None = None
        self._internal = internal
        self._relays: dict[int, Any] = {}  # exposed ports of the engine: port -> PortProxy
        if spare is not None:
            self._adopt(spare)
            self._expose_all(exposed)
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
            self._expose_all(exposed)
            if egress:
                self._egress = NetworkEgress(self._worker, self._subnet, self.name,
                                             records_dir)
                if resolvers:
                    self._responder.forward_to(self._worker.call(_udp_socket), resolvers)
        except BaseException:
            self._teardown()
            raise

    def _adopt(self, spare: Spare) -> None:
        from .ipam import gateway_of

        self.records_dir, self._ipam, self._record = spare.records_dir, spare.ipam, spare.record
        self._subnet, self._addresses = spare.subnet, spare.addresses
        self._worker, self._bridge, self._responder = spare.worker, spare.bridge, spare.responder
        self._egress = spare.egress
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
                     self._addresses, self._worker, self._bridge, self._responder, self._egress)

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
        self.ensure_usable()
        return f"/proc/{os.getpid()}/fd/{self._worker.fd}"

    def netns_fd(self) -> int:
        """An fd of the caller's own on the bridge's namespace: whoever holds it keeps the
        bridge and its veth pairs alive (a kept container's keeper, after this process)."""
        self.ensure_usable()
        return os.dup(self._worker.fd)

    def dns_handover(self) -> tuple[int, dict[str, list[str]]]:
        """An fd of the caller's own on the DNS responder's socket, and the names it serves:
        for a kept container's keeper to answer from after this process."""
        self.ensure_usable()
        return os.dup(self._responder.sock.fileno()), self._responder.snapshot()

    def resolv_conf(self) -> str:
        from . import dns

        return dns.resolv_conf(self.gateway)

    def hosts(self, hostname: str, address: str, extra: Iterable[tuple[str, str]] = ()) -> str:
        """``/etc/hosts`` for the member at ``address`` (``dns.hosts_file``: itself, never its
        peers, whom the responder names), with the engine's name at the gateway once a port is
        exposed (Docker's host-gateway line)."""
        from . import dns

        with self._lock:
            exposed = [(HOST_NAME, self.gateway)] if self._relays else []
        return dns.hosts_file(hostname, [address], [*extra, *exposed])

    def addresses(self) -> dict[str, str]:
        """The addresses handed out on this network: address -> container key."""
        return self._addresses.used() if self._subnet else {}

    def endpoints(self) -> dict[str, Endpoint]:
        with self._lock:
            return dict(self._endpoints)

    def expose(self, port: int) -> None:
        """Members reach the engine's ``127.0.0.1:port`` as ``host.pycontain.internal:port``
        (the gateway's address), as Docker's host-gateway: a relay listening there, in the
        bridge's namespace, to the loopback of the calling thread's namespace (the engine's).
        Nothing listening there: the connection is refused, as on Docker's host (the relay
        pauses meanwhile, ``listening.ListenWatch``). An internal network has no way there."""
        from ..idmap import in_user_namespace
        from .listening import shared_watch
        from .proxy import PortProxy, SocketMaker

        with self._lock:
            self.ensure_usable()
            if self._internal or port in self._relays:
                return
            watch = shared_watch()  # made here, in the engine's namespace, the first time
            home = open_netns("/proc/thread-self/ns/net")
            # rootless: the relay's threads cannot enter the host's namespace again, so a
            # thread kept here makes their sockets
            sockets = SocketMaker() if in_user_namespace() else None
            try:
                relay = self._worker.call(
                    lambda ipr: PortProxy(home, port, port, host=self.gateway,
                                          sockets=sockets, pausable=True))
            except BaseException:
                if sockets is not None:
                    sockets.close()
                raise
            finally:
                os.close(home)
            self._relays[port] = relay
            watch.follow(relay, port)
            self._responder.add([HOST_NAME], self.gateway)

    def _expose_all(self, ports: Iterable[int]) -> None:
        """The ports the engine exposed so far, and its name with the first (a spare forgets
        its last network's)."""
        self._responder.remove(self.gateway)
        for port in ports:
            self.expose(port)

    @property
    def internal(self) -> bool:
        """Whether it has no way out (Docker's ``internal``)."""
        return self._internal

    @property
    def removed(self) -> bool:
        """Whether ``remove()`` has been called."""
        return self._removed

    def ensure_usable(self) -> None:
        """A clear ``NetworkError`` if the network has been removed (the engine asks before it
        makes anything for a container that is to join it)."""
        if self._removed:
            raise NetworkError(f"network {self.name!r} has been removed")

    # -- joining --------------------------------------------------------------------------
    def attach(self, netns: NetnsRef, name: str | None = None, aliases: Sequence[str] = (),
               *, key: str | None = None, address: str | None = None) -> str:
        """Join the container whose namespace is ``netns``; returns its address.

        ``name`` and ``aliases`` are what the others resolve; ``key`` (default: ``name``) is
        how ``detach`` and the faults refer to it; ``address``, the one it had here before
        (a container started again), is taken again if nobody has it since.
        """
        with self._lock:
            self.ensure_usable()
            names = [n for n in dict.fromkeys([name or "", *aliases]) if n]
            for n in names:
                if n == HOST_NAME:
                    raise NetworkError(f"name {n!r} is the engine's own on network "
                                       f"{self.name!r}")
                if self._responder.lookup(n):
                    raise NetworkError(f"name {n!r} is already taken on network {self.name!r}")
            key = key or name or "c" + secrets.token_hex(5)
            if key in self._endpoints:
                raise NetworkError(f"{key!r} is already attached to network {self.name!r}")
            if self._egress is not None:
                self._egress.ready()  # made in the background since the network's birth
            nsfd = open_netns(netns)
            host_ifname = f"vpc{secrets.token_hex(5)}"
            ip = None
            known = [(self.gateway, mac_for(self.gateway))]
            known += [(ep.ip, mac_for(ep.ip)) for ep in self._endpoints.values()]
            try:
                ip = self._addresses.allocate(key, prefer=address)
                host_index, ifname, index, rtnl = self._worker.call(
                    _join, self._worker.fd, self._tables(), host_ifname, nsfd, ip,
                    self.prefix, self.gateway, known, self._egress is not None)
            except BaseException as exc:
                if ip is not None:
                    self._addresses.release(ip)
                if isinstance(exc, Exception) and not isinstance(exc, NetworkError):
                    raise NetworkError(f"cannot attach {key!r} to network {self.name!r}: "
                                       f"{exc}") from exc
                raise
            finally:
                os.close(nsfd)
            self._endpoints[key] = Endpoint(key, names, ip, host_ifname, host_index, ifname,
                                            index=index, rtnl=rtnl)
            self._responder.add(names, ip)
            return ip

    def connect(self, container: Any, aliases: Sequence[str] | None = None) -> None:
        """Join a running ``container`` to this network as well (``docker network connect``):
        the others here resolve its name and ``aliases``, and it resolves theirs."""
        connect = getattr(container, "connect", None)
        if connect is None or not hasattr(container, "pid"):
            raise NetworkError(f"{container!r} is not a container of this engine")
        connect(self, _alias_list(aliases))

    def resolve_also(self, asker: str, other: BridgeNetwork) -> None:
        """The member at ``asker`` also resolves ``other``'s names through this network's
        responder (the one its resolv.conf names)."""
        self._responder.also(asker, other.lookup_name)

    def lookup_name(self, name: str) -> list[str]:
        """The addresses this network's responder gives ``name`` (none once it is removed)."""
        return [] if self._removed else self._responder.lookup(name)

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
            line = self._faults.forget(key)
            if line is not None:
                line.close()
                if self._worker is not None:
                    self._worker.submit(delete_link, line.inlet)
            if self._worker is not None and not link_gone:  # in order, before a later attach
                self._worker.submit(delete_link, ep.host_ifname)
            if self._worker is not None:
                self._worker.submit(_forget, ep.ip, self._tables(), ep.rtnl)
            self._addresses.release(ep.ip)

    def hand_over(self, key: str, keeper: int | None = None) -> None:
        """A kept container's endpoint leaves this network's books but not the network: its
        veth pair, address and name stay for as long as its keeper holds the namespace; this
        process's teardown no longer deletes them.
        ``keeper`` (its pid) takes the subnet's lease too, so that no later network gets the
        same subnet while the keeper lives (a reused container joins later runs' networks)."""
        with self._lock:
            self._endpoints.pop(key, None)
            if keeper is not None and self._subnet is not None:
                self._ipam.hand_to(self._subnet, self.id, keeper)

    # -- faults ---------------------------------------------------------------------------
    def _endpoint(self, container: Any) -> Endpoint:
        with self._lock:
            self.ensure_usable()
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
        worker = self._worker

        def cut(member: Member, peer: Member) -> None:
            worker.call(tc_drop_from, self._endpoints[member.key].host_index, peer.ip,
                        PRIO_PARTITION)

        def mend(member: Member, peer: Member) -> None:
            worker.call(tc_clear, self._endpoints[member.key].host_index, PRIO_PARTITION)

        with self._lock:
            self.ensure_usable()
            self._faults.partition(Partition(Member(ea.key, ea.ip), Member(eb.key, eb.ip)),
                                   cut, mend)

    def heal(self) -> None:
        """Undo every partition of this network (delay and loss stay: set them to 0)."""
        with self._lock:
            self.ensure_usable()
            keys = {m.key for p in self._faults.heal() for m in (p.a, p.b)}
            for key in sorted(keys):
                ep = self._endpoints.get(key)
                if ep is not None:
                    self._worker.call(tc_clear, ep.host_index, PRIO_PARTITION)

    def delay(self, container: Any, ms: int, jitter_ms: int = 0) -> None:
        """Delay every frame to ``container`` by ``ms`` (± ``jitter_ms``); 0 undoes it.

        Raises ``NotSupported`` (and changes nothing) where neither netem nor packet sockets
        are available."""
        check_delay(ms, jitter_ms)
        ep = self._endpoint(container)
        with self._lock:
            self.ensure_usable()
            fault = self._faults.fault(ep.key).delayed(ms, jitter_ms)
            self._faults.set(ep.key, fault, _Shaper(self._worker, ep))

    def loss(self, container: Any, percent: float) -> None:
        """Drop ``percent`` % of the packets to ``container``; 0 undoes it."""
        check_loss(percent)
        ep = self._endpoint(container)
        with self._lock:
            self.ensure_usable()
            fault = self._faults.fault(ep.key).lossy(percent)
            self._faults.set(ep.key, fault, _Shaper(self._worker, ep))

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
            for relay in self._relays.values():  # the next network exposes its own
                relay.close()
            self._relays.clear()
            spare = self._spare() if self._recycle is not None else None
            if spare is not None and self._recycle(spare):
                self._worker = self._responder = self._bridge = self._egress = None
                return
            self._teardown(wait)

    def _teardown(self, wait: bool = True) -> None:
        self._removed = True
        for relay in self._relays.values():
            relay.close()
        self._relays.clear()
        if self._egress is not None:
            self._egress.close()
            self._egress = None
        if self._responder is not None:
            self._responder.close()
            self._responder = None
        record = self._record
        subnet, ipam, ident = self._subnet, self._ipam, self.id

        def finish(ipr: Any = None) -> None:
            if subnet is not None:
                ipam.release_subnet(subnet, network_id=ident)
            drop_record(record)

        if self._worker is not None:
            for line in self._faults.take_lines().values():
                line.close()
                self._worker.submit(delete_link, line.inlet)
            for ep in self._endpoints.values():
                if wait:  # the members lose their interface before this returns
                    self._worker.submit(delete_link, ep.host_ifname)
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


def _alias_list(aliases: Sequence[str] | None) -> list[str]:
    if aliases is None:
        return []
    if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(f"connect(aliases={aliases!r}): expected a list of names")
    return list(aliases)


def names_of(endpoints: Iterable[Endpoint]) -> dict[str, str]:
    """name -> address, for a quick look in tests and error messages."""
    return {n: ep.ip for ep in endpoints for n in ep.names}
