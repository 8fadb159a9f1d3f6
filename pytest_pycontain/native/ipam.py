"""Address management shared by every process on the machine: subnets for networks, addresses
for containers.

One JSON table in the state directory, guarded by a file lock, so that xdist workers and two
pytest runs side by side never hand out overlapping subnets. Every lease names its owner (pid
and the process's start time, so a recycled pid is not mistaken for the owner); a lease whose
owner is gone is reclaimed on the next allocation. Addresses inside a subnet belong to the
network that leased it (``AddressPool``). Subnets that overlap any route of the host
are never handed out.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import socket
import struct
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import NETWORK_POOL, NETWORK_PREFIX
from ..errors import NetworkError
from ..procinfo import process_alive, process_start_time

DEFAULT_POOL = NETWORK_POOL
DEFAULT_PREFIX = NETWORK_PREFIX
TABLE = "ipam.json"


def host_routes(path: str = "/proc/net/route") -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations the host routes, except the default route."""
    routes = []
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(fields[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(fields[7], 16)))
        net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        if net.prefixlen:
            routes.append(net)
    return routes


class IPAM:
    """The allocation table at ``state_dir/ipam.json`` (locked by ``ipam.json.lock``)."""

    def __init__(self, state_dir: str | os.PathLike, *, pool: str = DEFAULT_POOL,
                 prefix: int = DEFAULT_PREFIX, avoid: Iterable[str] | None = None):
        try:
            self.pool = ipaddress.IPv4Network(pool)
        except ValueError as exc:
            raise NetworkError(f"IPAM pool {pool!r} is not an IPv4 network: {exc}") from None
        if not self.pool.prefixlen <= prefix <= 30:
            raise NetworkError(f"IPAM prefix /{prefix} does not fit in the pool {pool} "
                               "(it must be between the pool's and /30)")
        self.prefix = prefix
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / TABLE
        self._avoid = None if avoid is None else [ipaddress.IPv4Network(a) for a in avoid]

    # -- the table ------------------------------------------------------------------------
    def _lock(self):
        from filelock import FileLock

        self.state_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=30)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"subnets": {}}
        except (OSError, ValueError) as exc:
            raise NetworkError(f"IPAM table {self.path} is unreadable: {exc}") from exc
        data.setdefault("subnets", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{TABLE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    @staticmethod
    def _reclaim(data: dict[str, Any]) -> list[str]:
        dead = [s for s, lease in data["subnets"].items()
                if not process_alive(lease["pid"], lease.get("start")) and not any(
                    process_alive(pid, start) for pid, start in lease.get("keepers", ()))]
        for subnet in dead:
            del data["subnets"][subnet]
        return dead

    # -- subnets --------------------------------------------------------------------------
    def allocate_subnet(self, network_id: str, *, name: str | None = None,
                        pid: int | None = None) -> str:
        """Lease a free subnet for ``network_id``; raises ``NetworkError`` when none is left.

        ``name`` must be unique among the live networks of the same owner.
        """
        pid = os.getpid() if pid is None else pid
        avoid = host_routes() if self._avoid is None else self._avoid
        with self._lock():
            data = self._read()
            self._reclaim(data)
            for subnet, lease in data["subnets"].items():
                if name is not None and lease.get("name") == name and lease["pid"] == pid:
                    raise NetworkError(f"network name {name!r} is already taken "
                                       f"(subnet {subnet}, owner pid {pid})")
            # leases of other sizes or pools (another process's settings) are avoided too
            taken = [ipaddress.IPv4Network(s) for s in data["subnets"]]
            for candidate in self.pool.subnets(new_prefix=self.prefix):
                if any(candidate.overlaps(r) for r in taken) or \
                        any(candidate.overlaps(r) for r in avoid):
                    continue
                data["subnets"][str(candidate)] = {
                    "network": network_id, "name": name, "pid": pid,
                    "start": process_start_time(pid),
                }
                self._write(data)
                return str(candidate)
        raise NetworkError(
            f"IPAM: subnets exhausted: every /{self.prefix} of the pool {self.pool} is leased "
            f"by a live process or overlaps a host route (table {self.path})")

    def release_subnet(self, subnet: str, *, network_id: str | None = None) -> None:
        """Give a subnet back; a subnet not leased is ignored, and so is
        one leased by another network than ``network_id`` (when given)."""
        with self._lock():
            data = self._read()
            lease = data["subnets"].get(str(subnet))
            if lease is None or (network_id is not None and lease["network"] != network_id):
                return
            del data["subnets"][str(subnet)]
            self._write(data)

    def relabel(self, subnet: str, network_id: str, new_id: str, name: str | None) -> None:
        """Hand the lease of ``network_id`` on ``subnet`` to ``new_id`` named ``name`` (a
        network's namespace reused for another network of the same owner)."""
        with self._lock():
            data = self._read()
            lease = data["subnets"].get(str(subnet))
            if lease is None or lease["network"] != network_id:
                raise NetworkError(f"IPAM: {subnet} is not leased to network {network_id}")
            lease.update(network=new_id, name=name)
            self._write(data)

    def hand_to(self, subnet: str, network_id: str, pid: int) -> None:
        """Hand the lease of ``network_id`` on ``subnet`` to process ``pid`` (a kept
        container's keeper, which holds the network's namespace): its network's removal and
        its owner's reaper no longer give it back; it is reclaimed once every keeper it was
        handed to is gone."""
        with self._lock():
            data = self._read()
            lease = data["subnets"].get(str(subnet))
            if lease is None or lease["network"] not in (network_id, f"{network_id}-kept"):
                return
            keepers = list(lease.get("keepers", ()))
            keepers.append([pid, process_start_time(pid)])
            lease.update(network=f"{network_id}-kept", pid=keepers[0][0],
                         start=keepers[0][1], keepers=keepers)
            self._write(data)

    def release_network(self, network_id: str) -> list[str]:
        """Give back the subnet(s) of ``network_id`` (a reaper that never learnt the subnet)."""
        return self._release_where("network", network_id)

    def release_owner(self, pid: int) -> list[str]:
        """Give back every subnet leased by ``pid`` (the reaper's call); returns them."""
        return self._release_where("pid", pid)

    def _release_where(self, field: str, value: Any) -> list[str]:
        """Drop every lease whose ``field`` is ``value``, in one locked write; returns them."""
        with self._lock():
            data = self._read()
            mine = [s for s, lease in data["subnets"].items() if lease[field] == value]
            for subnet in mine:
                del data["subnets"][subnet]
            if mine:
                self._write(data)
            return mine

    def reclaim(self) -> list[str]:
        """Drop the leases of dead owners now; returns the subnets freed."""
        with self._lock():
            data = self._read()
            dead = self._reclaim(data)
            if dead:
                self._write(data)
            return dead

    def leases(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the table: subnet -> lease."""
        with self._lock():
            return self._read()["subnets"]


class AddressPool:
    """The host addresses of one leased subnet, handed out by the network that leased it.

    Only the lease's owner attaches containers to its network, so this needs no file and no
    lock between processes (an attach stays a few system calls); the first address is the
    gateway's and never handed out. Addresses never used are counted off, not listed: a large
    subnet costs nothing to set up.
    """

    def __init__(self, subnet: str):
        self.subnet = ipaddress.IPv4Network(subnet)
        first, last = int(self.subnet.network_address), int(self.subnet.broadcast_address)
        if self.subnet.prefixlen >= 31:  # no network or broadcast address to leave out
            first, last = first - 1, last + 1
        self._next = first + 2  # after the gateway
        self._end = last  # the broadcast address, never handed out
        self._released: collections.deque[str] = collections.deque()
        self._used: dict[str, str] = {}
        self._lock = threading.Lock()

    def allocate(self, owner: str, prefer: str | None = None) -> str:
        """The next address; ``prefer``, an address given back earlier, when it is still free
        (a container started again gets its address back while free, as on Docker)."""
        with self._lock:
            if prefer is not None and prefer in self._released:
                self._released.remove(prefer)
                address = prefer
            elif self._next < self._end:
                address = str(ipaddress.IPv4Address(self._next))
                self._next += 1
            elif self._released:
                address = self._released.popleft()
            else:
                raise NetworkError(f"IPAM: no address left in {self.subnet} for {owner!r}")
            self._used[address] = owner
            return address

    def release(self, address: str) -> None:
        """Give an address back (it is handed out again last); unknown ones are ignored."""
        with self._lock:
            if self._used.pop(str(address), None) is not None:
                self._released.append(str(address))

    def used(self) -> dict[str, str]:
        """address -> owner."""
        with self._lock:
            return dict(self._used)


def gateway_of(subnet: str) -> str:
    """The subnet's first host address: the bridge's, the DNS responder's, the default route."""
    return str(next(ipaddress.IPv4Network(subnet).hosts()))
