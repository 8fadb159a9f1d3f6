"""The IPAM table: distinct subnets across processes, reclaiming dead owners, clear errors."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_pycontain.errors import NetworkError
from pytest_pycontain.native.ipam import (
    IPAM,
    AddressPool,
    gateway_of,
    host_routes,
)
from pytest_pycontain.procinfo import process_alive

REPO = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_subnets_are_distinct_and_from_the_pool(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/16", prefix=24, avoid=[])
    subnets = [ipam.allocate_subnet(f"n{i}") for i in range(5)]
    assert len(set(subnets)) == 5
    for subnet in subnets:
        net = ipaddress.IPv4Network(subnet)
        assert net.prefixlen == 24
        assert net.subnet_of(ipaddress.IPv4Network("10.213.0.0/16"))
    assert gateway_of(subnets[0]) == str(ipaddress.IPv4Network(subnets[0])[1])
    leases = ipam.leases()
    assert set(leases) == set(subnets)
    assert {lease["pid"] for lease in leases.values()} == {os.getpid()}


def test_subnets_overlapping_host_routes_are_skipped(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", prefix=24,
                avoid=["10.213.0.0/23", "10.213.2.128/25"])
    assert ipam.allocate_subnet("n") == "10.213.3.0/24"


def test_host_routes_are_read_from_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0000D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert host_routes(str(table)) == [ipaddress.IPv4Network("10.213.0.0/24")]
    assert host_routes(str(tmp_path / "missing")) == []
    # this machine's own routes parse, and the default route is never "overlapping"
    assert all(r.prefixlen > 0 for r in host_routes())


def test_exhausted_pool_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/23", prefix=24, avoid=[])
    ipam.allocate_subnet("a")
    ipam.allocate_subnet("b")
    before = (tmp_path / "ipam.json").read_bytes()
    with pytest.raises(NetworkError, match="exhausted") as info:
        ipam.allocate_subnet("c")
    assert "10.213.0.0/23" in str(info.value) and str(tmp_path / "ipam.json") in str(info.value)
    assert (tmp_path / "ipam.json").read_bytes() == before


def test_dead_owners_leases_are_reclaimed(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/24", prefix=24, avoid=[])
    subnet = ipam.allocate_subnet("ghost", pid=dead_pid())
    assert subnet == "10.213.0.0/24"
    assert ipam.allocate_subnet("live") == subnet  # the only subnet, taken back from the dead
    assert ipam.leases()[subnet]["network"] == "live"
    with pytest.raises(NetworkError, match="exhausted"):
        ipam.allocate_subnet("another")  # a live owner's lease is never taken


def test_a_lease_handed_to_keepers_lives_as_long_as_one_of_them(tmp_path: Path) -> None:
    """A kept container's keeper holds its network's namespace after the run: the subnet
    stays leased (a reused container joins later runs' networks, which must not get it)
    while any keeper it was handed to lives, whatever the network's removal gives back."""
    ipam = IPAM(tmp_path, pool="10.214.0.0/24", prefix=24, avoid=[])
    subnet = ipam.allocate_subnet("net1", pid=dead_pid())  # the run that made it is gone
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        ipam.hand_to(subnet, "net1", dead_pid())  # a keeper that is gone too
        ipam.hand_to(subnet, "net1", sleeper.pid)
        ipam.release_subnet(subnet, network_id="net1")  # the run's teardown: not its lease
        ipam.release_network("net1")  # the reaper of the run's records: neither
        with pytest.raises(NetworkError, match="exhausted"):
            ipam.allocate_subnet("net2")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert ipam.allocate_subnet("net2") == subnet  # every keeper gone: taken back


def test_a_recycled_pid_is_not_the_owner() -> None:
    assert process_alive(os.getpid(), None)
    assert not process_alive(os.getpid(), 1)  # same pid, another start time
    assert not process_alive(dead_pid(), None)


def test_reclaim_and_release_owner(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", prefix=24, avoid=[])
    mine = ipam.allocate_subnet("mine")
    ghost = ipam.allocate_subnet("ghost", pid=dead_pid())
    assert ipam.reclaim() == [ghost]
    other = ipam.allocate_subnet("other")
    assert ipam.release_network("other") == [other]
    assert ipam.release_network("other") == []
    assert ipam.release_owner(os.getpid()) == [mine]
    assert ipam.leases() == {}


def test_names_are_unique_per_owner(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", prefix=24, avoid=[])
    ipam.allocate_subnet("n1", name="backend")
    with pytest.raises(NetworkError, match="'backend' is already taken"):
        ipam.allocate_subnet("n2", name="backend")
    # another live process may use the same name (the pytest process's parent is alive)
    ipam.allocate_subnet("n3", name="backend", pid=os.getppid())


def test_release_subnet_only_for_its_network(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", prefix=24, avoid=[])
    subnet = ipam.allocate_subnet("n1")
    ipam.release_subnet(subnet, network_id="someone-else")
    assert subnet in ipam.leases()
    ipam.release_subnet(subnet, network_id="n1")
    assert subnet not in ipam.leases()
    ipam.release_subnet(subnet)  # twice is fine


def test_addresses() -> None:
    pool = AddressPool("10.213.0.0/29")
    got = [pool.allocate(f"c{i}") for i in range(5)]
    assert got == [f"10.213.0.{i}" for i in range(2, 7)]  # .1 is the gateway
    with pytest.raises(NetworkError, match=r"no address left in 10\.213\.0\.0/29 for 'c5'"):
        pool.allocate("c5")
    pool.release("10.213.0.4")
    pool.release("10.213.0.4")  # twice is fine
    assert "10.213.0.4" not in pool.used()
    assert pool.allocate("c6") == "10.213.0.4"
    assert pool.used()["10.213.0.4"] == "c6"


def test_released_addresses_are_reused_last() -> None:
    pool = AddressPool("10.213.0.0/24")
    first = pool.allocate("a")
    pool.release(first)
    assert pool.allocate("b") != first  # a neighbour's stale ARP entry cannot hit a newcomer


def test_an_address_given_back_is_taken_again_when_asked_for() -> None:
    """A container started again asks for its old address: it gets it while it is free, and
    the next one otherwise (never one still used, nor one not yet handed out)."""
    pool = AddressPool("10.213.0.0/24")
    first, second = pool.allocate("a"), pool.allocate("b")
    pool.release(first)
    assert pool.allocate("a", prefer=first) == first
    assert pool.allocate("c", prefer=second) == "10.213.0.4"  # b still has it
    assert pool.allocate("d", prefer="10.213.0.9") == "10.213.0.5"  # not handed out yet
    assert set(pool.used()) == {first, second, "10.213.0.4", "10.213.0.5"}


@pytest.mark.parametrize(("pool", "prefix", "message"), [
    ("10.213.0.0/33", 24, "not an IPv4 network"),
    ("banana", 24, "not an IPv4 network"),
    ("10.213.0.0/24", 16, "does not fit"),
])
def test_bad_settings(tmp_path: Path, pool: str, prefix: int, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        IPAM(tmp_path, pool=pool, prefix=prefix)


def test_a_corrupt_table_is_named(tmp_path: Path) -> None:
    (tmp_path / "ipam.json").write_text("{not json")
    with pytest.raises(NetworkError, match=r"ipam\.json is unreadable"):
        IPAM(tmp_path, avoid=[]).allocate_subnet("n")


WORKER = textwrap.dedent("""
    import json, sys
    from pytest_pycontain.native.ipam import IPAM
    ipam = IPAM(sys.argv[1], pool="10.213.0.0/20", prefix=24, avoid=[])
    got = [ipam.allocate_subnet(f"{sys.argv[2]}-{i}") for i in range(int(sys.argv[3]))]
    print(json.dumps(got), flush=True)
    sys.stdin.read()  # stay alive (owning the leases) until the test has looked
""")


def test_processes_side_by_side_never_share_a_subnet(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), f"w{n}", "4"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for n in range(4)]
    try:
        results = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(10)
    everything = [s for r in results for s in r]
    assert len(everything) == 16
    assert len(set(everything)) == 16, results
    nets = [ipaddress.IPv4Network(s) for s in everything]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    # the workers are gone now: their leases go back to the pool
    ipam = IPAM(tmp_path, pool="10.213.0.0/20", prefix=24, avoid=[])
    assert sorted(ipam.reclaim()) == sorted(everything)


def test_a_network_holds_more_than_a_slash_24_by_default(tmp_path: Path) -> None:
    subnet = IPAM(tmp_path, avoid=[]).allocate_subnet("big")
    net = ipaddress.IPv4Network(subnet)
    assert net.prefixlen == 20 and net.subnet_of(ipaddress.IPv4Network("10.208.0.0/12"))
    pool = AddressPool(subnet)
    got = [pool.allocate(f"c{i}") for i in range(4093)]  # addresses only: no container made
    assert len(set(got)) == 4093 and gateway_of(subnet) not in got
    assert all(ipaddress.IPv4Address(a) in net for a in got)
    assert str(net.network_address) not in got and str(net.broadcast_address) not in got
    assert got[253] == str(net.network_address + 255) and got[254] == str(net.network_address + 256)
    with pytest.raises(NetworkError, match=f"no address left in {subnet} for 'one-more'"):
        pool.allocate("one-more")
    pool.release(got[300])
    assert pool.allocate("again") == got[300]


def test_subnets_of_another_size_are_never_overlapped(tmp_path: Path) -> None:
    small = IPAM(tmp_path, pool="10.213.0.0/16", prefix=24, avoid=[])
    large = IPAM(tmp_path, pool="10.213.0.0/16", prefix=20, avoid=[])
    first = small.allocate_subnet("a")  # 10.213.0.0/24, as another process's setting had it
    second = large.allocate_subnet("b")
    third = small.allocate_subnet("c")
    nets = [ipaddress.IPv4Network(s) for s in (first, second, third)]
    assert second == "10.213.16.0/20" and not any(
        a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])


def test_the_pool_and_the_subnet_size_are_settings(tmp_path: Path) -> None:
    from pytest_pycontain.config import resolve
    from pytest_pycontain.errors import ConfigError

    settings = resolve(environ={})
    assert (settings.network_pool, settings.network_prefix) == ("10.208.0.0/12", 20)
    settings = resolve(environ={"PYCONTAIN_NETWORK_PREFIX": "/22"},
                       pyproject={"network_pool": "172.30.0.0/16"})
    assert (settings.network_pool, settings.network_prefix) == ("172.30.0.0/16", 22)
    ipam = IPAM(tmp_path, pool=settings.network_pool, prefix=settings.network_prefix, avoid=[])
    assert ipam.allocate_subnet("n") == "172.30.0.0/22"
    with pytest.raises(ConfigError, match=r"PYCONTAIN_NETWORK_PREFIX = '31': expected a prefix "
                                          r"length from 8 to 30"):
        resolve(environ={"PYCONTAIN_NETWORK_PREFIX": "31"})
    with pytest.raises(ConfigError, match=r"network_pool = '10\.1\.2\.3/16': expected an IPv4 "
                                          r"network"):
        resolve(environ={}, pyproject={"network_pool": "10.1.2.3/16"})
    with pytest.raises(ConfigError, match=r"--pycontain-network-prefix = 11: a /11 subnet does "
                                          r"not fit in the network pool 10\.208\.0\.0/12 "
                                          r"\(default\)"):
        resolve(environ={}, cli={"network_prefix": 11}, pyproject={})
    with pytest.raises(ConfigError, match=r"network pool 10\.9\.0\.0/16 \(environment variable "
                                          r"PYCONTAIN_NETWORK_POOL\); use a prefix of 16 or more"):
        resolve(environ={"PYCONTAIN_NETWORK_POOL": "10.9.0.0/16", "PYCONTAIN_NETWORK_PREFIX": "12"})
