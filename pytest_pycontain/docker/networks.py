"""Docker networks and their faults, made from this process inside the members' namespaces.

On a local engine a fault is made in the container's network namespace
(``/proc/<State.Pid>/ns/net``), so the image needs no ``tc``: a partition is a blackhole route
to the peer in each side, delay and loss a netem queue on the interface (or, on kernels without
netem, the native engine's userspace delay line). What is in place is kept as the native
engine keeps it (``native.faults.FaultState``). A remote engine raises NotSupported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
from collections.abc import Callable
from typing import Any

from .. import errors
from ..native.faults import (
    DelayLine,
    Fault,
    FaultState,
    Member,
    Partition,
    check_delay,
    check_loss,
)
from .client import load_docker
from .containers import DockerContainer
from .labels import KEPT_SUFFIX, LABEL_REUSE_KEY, LABEL_REUSE_NETWORK
from .views import EngineView


def in_netns(pid: int, fn: Callable[[Any], Any]) -> Any:
    """``fn(ipr)`` with a pyroute2 IPRoute inside the network namespace of ``pid`` (in a
    thread of its own, as the native engine does it)."""
    from ..native.netns import in_netns as native_in_netns

    path = f"/proc/{pid}/ns/net"
    try:
        return native_in_netns(path, fn)
    except errors.NetworkError as exc:
        if isinstance(exc.__cause__, PermissionError):
            raise errors.NotSupported(
                f"network faults on a Docker engine enter the container's network namespace "
                f"({path}), which needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): "
                f"{exc.__cause__}") from exc
        raise


def _eth_index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise errors.NetworkError(f"no interface {ifname!r} in the container's namespace")
    return found[0]


def _set_netem(ifname: str, delay_us: int, jitter_us: int, loss: float) -> Callable[[Any], None]:
    def apply(ipr: Any) -> None:
        index = _eth_index(ipr, ifname)
        with contextlib.suppress(Exception):
            ipr.tc("del", index=index, root=True)
        if not delay_us and not loss:
            return
        if loss >= 100 and not delay_us:  # no netem needed: a class whose queue holds nothing
            ipr.tc("add", "htb", index, 0x10000, default=0x20)
            ipr.tc("add-class", "htb", index, 0x10020, parent=0x10000, rate="10gbit",
                   ceil="10gbit")
            ipr.tc("add", "pfifo", index, 0x200000, parent=0x10020, limit=0)
            return
        try:
            ipr.tc("add", "netem", index, 0x10000, delay=delay_us, jitter=jitter_us, loss=loss,
                   limit=100000)
        except Exception as exc:
            raise errors.NotSupported(
                f"network delay and loss need the kernel's netem queue "
                f"(CONFIG_NET_SCH_NETEM): {exc}") from exc

    return apply


def _blackhole(ip: str, add: bool) -> Callable[[Any], None]:
    def apply(ipr: Any) -> None:
        if add:
            ipr.route("replace", dst=ip, dst_len=32, type="blackhole")
        else:
            with contextlib.suppress(Exception):
                ipr.route("del", dst=ip, dst_len=32, type="blackhole")

    return apply

@dataclasses.dataclass
class _Shaper:
    """Faults on what one member sends, made on its interface inside its namespace."""

    pid: int
    ifname: str

    def netem(self, fault: Fault) -> None:
        in_netns(self.pid, _set_netem(self.ifname, int(fault.delay_ms * 1000),
                                      int(fault.jitter_ms * 1000), fault.loss))

    def start_line(self) -> DelayLine:
        from ..native.faults import start_delay_line

        tag = secrets.token_hex(5)
        return in_netns(self.pid, lambda ipr: start_delay_line(ipr, self.ifname, tag))

    def stop_line(self, line: DelayLine) -> None:
        from ..native.faults import stop_delay_line

        with contextlib.suppress(errors.PycontainError):
            in_netns(self.pid, lambda ipr: stop_delay_line(ipr, self.ifname, line))
            return
        line.close()  # its namespace is gone with the container: only our sockets remain


class DockerNetwork:
    """A user-defined bridge network; faults are made inside the members' namespaces."""

    def __init__(self, engine: EngineView, nid: str, *, name: str, engine_name: str,
                 internal_use: bool = False):
        self.engine = engine
        self.id = nid
        self.name = name
        self.engine_name = engine_name
        self.internal_use = internal_use
        self.reused = False  # kept across runs for reused containers (``reused_network``)
        self._removed = False
        self._faults = FaultState()  # keyed by container id
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DockerNetwork {self.name} {self.id[:12]}>"

    @property
    def subnet(self) -> str:
        api = self.engine.api
        with api.mapped(f"network {self.name}", error=errors.NetworkError):
            info = api.inspect_network(self.id)
        configs = (info.get("IPAM") or {}).get("Config") or []
        return configs[0]["Subnet"] if configs else ""

    @property
    def internal(self) -> bool:
        """Whether Docker made it internal (no way out), as its inspect says."""
        api = self.engine.api
        with api.mapped(f"network {self.name}", error=errors.NetworkError):
            return bool(api.inspect_network(self.id).get("Internal"))

    def _member(self, container: Any) -> tuple[int, str, str]:
        """(pid, interface, ip) of ``container`` on this network, for a local engine."""
        if not isinstance(container, DockerContainer) or container.engine is not self.engine:
            raise errors.NetworkError(f"{container!r} is not a container of this engine")
        self.engine.require_local("network faults")
        info = container.inspect()
        member = (info["NetworkSettings"].get("Networks") or {}).get(self.engine_name)
        if not member:
            raise errors.NetworkError(f"{container.name!r} is not on network {self.name!r}")
        pid = self.engine.local_pid(container, info)
        if not pid:
            raise errors.NetworkError(
                f"{container.name!r} is not running; faults need a running container")
        return pid, self._ifname(pid, member.get("MacAddress", "")), member["IPAddress"]

    @staticmethod
    def _ifname(pid: int, mac: str) -> str:
        def find(ipr: Any) -> str:
            for link in ipr.get_links():
                if link.get_attr("IFLA_ADDRESS") == mac.lower():
                    return link.get_attr("IFLA_IFNAME")
            return "eth0"

        return in_netns(pid, find)

    def partition(self, a: Any, b: Any) -> None:
        """Drop all traffic between ``a`` and ``b`` (a blackhole route in each) until heal()."""
        pid_a, _, ip_a = self._member(a)
        pid_b, _, ip_b = self._member(b)
        if a.id == b.id:
            raise errors.NetworkError(f"cannot partition {a.name!r} from itself")
        pids = {a.id: pid_a, b.id: pid_b}

        def cut(member: Member, peer: Member) -> None:
            in_netns(pids[member.key], _blackhole(peer.ip, True))

        def mend(member: Member, peer: Member) -> None:
            in_netns(pids[member.key], _blackhole(peer.ip, False))

        with self._lock:
            self._faults.partition(Partition(Member(a.id, ip_a), Member(b.id, ip_b)), cut, mend)

    def heal(self) -> None:
        """Undo every partition of this network."""
        with self._lock:
            for partition in self._faults.heal():
                for member, peer in partition.ways():
                    pid = self.engine.local_pid(self.engine.containers.get(member.key))
                    if pid:
                        in_netns(pid, _blackhole(peer.ip, False))

    def _apply(self, container: Any, change: Callable[[Fault], Fault]) -> None:
        pid, ifname, _ = self._member(container)
        with self._lock:
            fault = change(self._faults.fault(container.id))
            self._faults.set(container.id, fault, _Shaper(pid, ifname))

    def delay(self, container: Any, ms: int, jitter_ms: int = 0) -> None:
        """Delay every packet ``container`` sends by ``ms`` (± ``jitter_ms``); 0 undoes it."""
        check_delay(ms, jitter_ms)
        self._apply(container, lambda fault: fault.delayed(ms, jitter_ms))

    def loss(self, container: Any, percent: float) -> None:
        """Drop ``percent`` % of the packets ``container`` sends; 0 undoes it."""
        check_loss(percent)
        self._apply(container, lambda fault: fault.lossy(percent))

    def connect(self, container: Any, aliases: Any = None) -> None:
        """Join ``container`` to this network as well (``docker network connect``): its name
        and ``aliases`` resolve here, as they do on the network it was started on."""
        if not isinstance(container, DockerContainer) or container.engine is not self.engine:
            raise errors.NetworkError(f"{container!r} is not a container of this engine")
        if aliases is not None and (isinstance(aliases, str) or not all(
                isinstance(a, str) and a for a in aliases)):
            raise errors.ConfigError(f"connect(aliases={aliases!r}): expected a list of names")
        if self._removed:
            raise errors.NetworkError(f"network {self.name!r} has been removed")
        api = self.engine.api
        with api.mapped(f"connect {container.name} to network {self.name}",
                        error=errors.NetworkError):
            api.connect_container_to_network(container.id, self.id,
                                             aliases=[container.name, *(aliases or ())])

    def remove(self, wait: bool = True) -> None:
        """Remove the network (members still on it are disconnected first). A network that a
        kept container is on stays for it; the reaper removes it once that container is gone."""
        docker = load_docker()
        if self._removed:
            return
        self._removed = True
        for line in self._faults.take_lines().values():  # the namespaces go with their
            line.close()  # containers
        api = self.engine.api
        try:
            with api.mapped(f"remove network {self.name}", error=errors.NetworkError), \
                    contextlib.suppress(docker.errors.NotFound):
                info = api.inspect_network(self.id)
                kept = False
                for cid, member in (info.get("Containers") or {}).items():
                    if str(member.get("Name", "")).endswith(KEPT_SUFFIX) and not lent(
                            api, cid, self.engine_name):
                        kept = True
                        continue
                    with contextlib.suppress(docker.errors.APIError):
                        api.disconnect_container_from_network(cid, self.id, force=True)
                if not kept:
                    api.remove_network(self.id)
        finally:
            self.engine.forget(self)


def lent(api: Any, cid: str, network: str) -> bool:
    """Whether container ``cid`` is reused across runs and only lent to the run's network
    ``network`` (an engine-level name): the network lets go of it (it is on the network kept
    for it as well), where a kept container, or its own network for its ports, keeps it."""
    with contextlib.suppress(Exception):
        labels = (api.inspect_container(cid).get("Config") or {}).get("Labels") or {}
        return LABEL_REUSE_KEY in labels and labels.get(LABEL_REUSE_NETWORK) != network
    return False


def let_go_of_reused(api: Any, nid: str) -> None:
    """Disconnect the reused containers lent to network ``nid`` (before it is removed)."""
    with contextlib.suppress(Exception):
        info = api.inspect_network(nid)
        for cid in (info.get("Containers") or {}):
            if lent(api, cid, info["Name"]):
                with contextlib.suppress(Exception):
                    api.disconnect_container_from_network(cid, nid, force=True)
