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
    ipam = IPAM(tmp_path, pool="10.213.0.0/16", avoid=[])
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
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", avoid=["10.213.0.0/23", "10.213.2.128/25"])
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
    ipam = IPAM(tmp_path, pool="10.213.0.0/23", avoid=[])
    ipam.allocate_subnet("a")
    ipam.allocate_subnet("b")
    before = (tmp_path / "ipam.json").read_bytes()
    with pytest.raises(NetworkError, match="exhausted") as info:
        ipam.allocate_subnet("c")
    assert "10.213.0.0/23" in str(info.value) and str(tmp_path / "ipam.json") in str(info.value)
    assert (tmp_path / "ipam.json").read_bytes() == before


def test_dead_owners_leases_are_reclaimed(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/24", avoid=[])
    subnet = ipam.allocate_subnet("ghost", pid=dead_pid())
    assert subnet == "10.213.0.0/24"
    assert ipam.allocate_subnet("live") == subnet  # the only subnet, taken back from the dead
    assert ipam.leases()[subnet]["network"] == "live"
    with pytest.raises(NetworkError, match="exhausted"):
        ipam.allocate_subnet("another")  # a live owner's lease is never taken


def test_a_recycled_pid_is_not_the_owner() -> None:
    assert process_alive(os.getpid(), None)
    assert not process_alive(os.getpid(), 1)  # same pid, another start time
    assert not process_alive(dead_pid(), None)


def test_reclaim_and_release_owner(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", avoid=[])
    mine = ipam.allocate_subnet("mine")
    ghost = ipam.allocate_subnet("ghost", pid=dead_pid())
    assert ipam.reclaim() == [ghost]
    other = ipam.allocate_subnet("other")
    assert ipam.release_network("other") == [other]
    assert ipam.release_network("other") == []
    assert ipam.release_owner(os.getpid()) == [mine]
    assert ipam.leases() == {}


def test_names_are_unique_per_owner(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", avoid=[])
    ipam.allocate_subnet("n1", name="backend")
    with pytest.raises(NetworkError, match="'backend' is already taken"):
        ipam.allocate_subnet("n2", name="backend")
    # another live process may use the same name (the pytest process's parent is alive)
    ipam.allocate_subnet("n3", name="backend", pid=os.getppid())


def test_release_subnet_only_for_its_network(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.0.0/22", avoid=[])
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
    ipam = IPAM(sys.argv[1], pool="10.213.0.0/20", avoid=[])
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
    assert sorted(IPAM(tmp_path, pool="10.213.0.0/20", avoid=[]).reclaim()) == sorted(everything)
