"""Networks with real namespaces: stand-in containers (``unshare --net``) reach each other by
address and by name, faults take effect and go away, and nothing is left on the host."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pycontain.errors import NetworkError, NotSupported
from pytest_pycontain.native import rtnl
from pytest_pycontain.native.ipam import IPAM
from pytest_pycontain.native.netns import in_netns, netns_of
from pytest_pycontain.native.netrecords import reap_network_records, undo_record
from pytest_pycontain.native.network import BridgeNetwork
from pytest_pycontain.native.rtnl import RouteSocket, mac_for

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter")
        or not os.path.exists(BUSYBOX),
        reason="needs root, unshare, nsenter and busybox: it makes network namespaces, "
               "bridges and veth pairs"),
]


class Standin:
    """A stand-in container: a process in its own network and mount namespaces, whose
    /etc/resolv.conf is the network's (bind-mounted privately inside its mount namespace)."""

    def __init__(self, resolv: Path | None = None):
        mount = f"mount --bind {resolv} /etc/resolv.conf && " if resolv else ""
        self.proc = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private",
                                      "--", "sh", "-c", f"{mount}echo ready && exec sleep 1000"],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid
        self.netns = netns_of(self.pid)
        self.servers: list[subprocess.Popen] = []

    def enter(self) -> list[str]:
        return ["nsenter", f"--net={self.netns}", f"--mount=/proc/{self.pid}/ns/mnt"]

    def run(self, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run([*self.enter(), BUSYBOX, *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def serve(self, *cmd: str) -> None:
        self.servers.append(subprocess.Popen([*self.enter(), BUSYBOX, *cmd]))

    def links(self) -> list[str]:
        out = subprocess.run(["nsenter", f"--net={self.netns}", "ip", "-o", "link"],
                             capture_output=True, text=True, check=True).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def kill(self) -> None:
        for proc in [*self.servers, self.proc]:
            proc.kill()
            proc.wait()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[BridgeNetwork]:
    network = BridgeNetwork("testnet", state_dir=tmp_path / "state",
                            records_dir=tmp_path / "records")
    yield network
    network.remove()


@pytest.fixture
def standins(net: BridgeNetwork, tmp_path: Path) -> Iterator[list[Standin]]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(net.resolv_conf())
    made = [Standin(resolv) for _ in range(3)]
    yield made
    for s in made:
        s.kill()


def ping(src: Standin, target: str) -> subprocess.CompletedProcess:
    """Reached: a few pings, stopping at the first answer (one packet lost on a loaded machine,
    or while a neighbour entry is made, is no verdict)."""
    return src.run("sh", "-c", f"for i in 1 2 3 4 5; do {BUSYBOX} ping -c1 -W2 \"$0\" && exit 0; "
                   "done; exit 1", target)


def ping_once(src: Standin, target: str) -> subprocess.CompletedProcess:
    """One ping and a second for its answer: for what must not get through."""
    return src.run("ping", "-c1", "-W1", target)


def host_view() -> dict[str, object]:
    """What of the host's network this code could change (other engineers' tests may add and
    remove their own links and routes on this machine meanwhile, so only ours are compared)."""
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    return {"routes": [r for r in out("ip", "route").splitlines() if "10.213." in r],
            "default": [r for r in out("ip", "route").splitlines() if r.startswith("default")],
            "links": [n for n in os.listdir("/sys/class/net") if n.startswith(("vp", "br0"))],
            "forward": Path("/proc/sys/net/ipv4/ip_forward").read_text()}


def nsfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("net:")
    return count


def thread_namespaces() -> set[str]:
    """The network namespaces the threads of this process are in."""
    found = set()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):
            found.add(os.readlink(f"/proc/self/task/{task}/ns/net"))
    return found


def wait_until(predicate, timeout: float = 10) -> bool:
    """Poll for something the kernel does in the background (netns teardown)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_containers_reach_each_other_by_address_and_name(net: BridgeNetwork,
                                                         standins: list[Standin],
                                                         tmp_path: Path) -> None:
    a, b, _ = standins
    ip_a = net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta", aliases=["db", "Cache"])
    assert ip_a != ip_b
    assert ipaddress.ip_address(ip_a) in ipaddress.ip_network(net.subnet)
    assert "eth0" in a.links()
    assert ping(a, ip_b).returncode == 0
    assert ping(b, ip_a).returncode == 0
    for name in ("beta", "db", "cache"):
        found = a.run("nslookup", name, net.dns_server)
        assert found.returncode == 0, found.stdout
        assert f"Address: {ip_b}" in found.stdout
    assert ping(a, "beta").returncode == 0  # resolved through resolv.conf -> the responder
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello from beta\n")
    b.serve("httpd", "-f", "-p", "8080", "-h", str(site))
    got = None
    for _ in range(50):  # httpd starts in the background
        got = a.run("wget", "-qO-", "http://db:8080/index.html")
        if got.returncode == 0:
            break
        time.sleep(0.1)
    assert got.stdout == "hello from beta\n"
    # /etc/hosts names the member alone: its peers are the responder's to name
    assert net.hosts("alpha-host", ip_a).splitlines()[6:] == [f"{ip_a}\talpha-host"]


def test_unknown_names_are_refused_at_once(net: BridgeNetwork, standins: list[Standin]) -> None:
    a = standins[0]
    net.attach(a.netns, "alpha")
    found = a.run("nslookup", "nothing-here.example", net.dns_server, timeout=10)
    assert found.returncode != 0
    assert "NXDOMAIN" in found.stdout
    assert a.run("wget", "-qO-", "http://nothing-here:80/", timeout=10).returncode != 0


def test_partition_and_heal(net: BridgeNetwork, standins: list[Standin]) -> None:
    a, b, c = standins
    net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta")
    ip_c = net.attach(c.netns, "gamma")
    assert ping(a, ip_b).returncode == 0
    net.partition("alpha", "beta")
    assert ping_once(a, ip_b).returncode != 0
    assert ping_once(b, "alpha").returncode != 0  # both ways
    assert ping(a, ip_c).returncode == 0  # the others are untouched
    assert ping(b, ip_c).returncode == 0
    net.heal()
    assert ping(a, ip_b).returncode == 0
    assert ping(b, "alpha").returncode == 0


def test_total_loss_means_nothing_arrives(net: BridgeNetwork, standins: list[Standin]) -> None:
    a, b, _ = standins
    net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta")
    net.loss("beta", 100)
    assert ping_once(a, ip_b).returncode != 0
    assert "0 packets received" in ping_once(a, ip_b).stdout
    net.loss("beta", 0)
    assert ping(a, ip_b).returncode == 0


def test_delay_makes_a_round_trip_at_least_that_long(net: BridgeNetwork,
                                                     standins: list[Standin]) -> None:
    a, b, _ = standins
    net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta")
    try:
        net.delay("beta", 200)
    except NotSupported as exc:
        pytest.skip(f"this kernel cannot delay packets: {exc}")
    result = ping(a, ip_b)
    rtt = float(re.search(r"time=([\d.]+) ms", result.stdout).group(1))
    assert rtt >= 200
    net.delay("beta", 0)
    assert ping(a, ip_b).returncode == 0


def test_partial_loss_drops_some_and_passes_some(net: BridgeNetwork,
                                                 standins: list[Standin]) -> None:
    a, b, _ = standins
    net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta")
    assert ping(a, ip_b).returncode == 0  # neighbours known before the loss starts
    net.loss("beta", 50)
    result = a.run("ping", "-c30", "-i", "0.02", "-W1", ip_b)
    received = int(re.search(r"(\d+) packets received", result.stdout).group(1))
    assert 0 < received < 30  # both all and none have odds of 1 in 10**9
    net.loss("beta", 0)
    assert ping(a, ip_b).returncode == 0


def test_a_stream_to_a_delayed_container_arrives_intact(net: BridgeNetwork,
                                                        standins: list[Standin],
                                                        tmp_path: Path) -> None:
    a, b, _ = standins
    ip_a = net.attach(a.netns, "alpha")
    net.attach(b.netns, "beta")
    site = tmp_path / "site"
    site.mkdir()
    payload = os.urandom(2 << 20)
    (site / "blob").write_bytes(payload)
    a.serve("httpd", "-f", "-p", "8080", "-h", str(site))
    assert wait_until(lambda: a.run("wget", "-qO/dev/null", "http://127.0.0.1:8080/blob")
                      .returncode == 0)
    net.delay("beta", 5, jitter_ms=2)
    got = b.run("sh", "-c", f"wget -qO- http://{ip_a}:8080/blob | {BUSYBOX} md5sum", timeout=60)
    assert got.stdout.split()[0] == hashlib.md5(payload).hexdigest()


def test_faults_are_undone(net: BridgeNetwork, standins: list[Standin]) -> None:
    a, b, _ = standins
    net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta")
    index = net.endpoints()["beta"].host_index

    def look(ipr):
        links = sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
        return links, len(ipr.get_filters(index=index, parent=0x10000))

    clean = in_netns(net.netns_path, look)
    net.partition("alpha", "beta")
    net.delay("beta", 50, 10)
    net.loss("beta", 20)
    assert in_netns(net.netns_path, look) != clean
    net.heal()
    net.delay("beta", 0)
    net.loss("beta", 0)
    assert wait_until(lambda: in_netns(net.netns_path, look) == clean)
    assert ping(a, ip_b).returncode == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda n: n.partition("alpha", "nobody"), "'nobody' is not on network 'testnet'"),
    (lambda n: n.partition("alpha", "alpha"), "from itself"),
    (lambda n: n.loss("alpha", 101), "between 0 and 100"),
    (lambda n: n.delay("alpha", -5), "must be >= 0"),
])
def test_bad_fault_requests(net: BridgeNetwork, standins: list[Standin], call,
                            message: str) -> None:
    net.attach(standins[0].netns, "alpha")
    with pytest.raises(NetworkError, match=message):
        call(net)


def test_faults_find_containers_by_their_attributes(net: BridgeNetwork,
                                                    standins: list[Standin]) -> None:
    class Box:
        def __init__(self, ident: str, ip: str | None = None):
            self.id, self.name, self.ip = ident, "box", ip

    a, b, _ = standins
    net.attach(a.netns, "alpha", key="c-1234")
    ip_b = net.attach(b.netns, "beta")
    net.partition(Box("c-1234"), Box("unknown", ip=ip_b))
    assert ping_once(a, ip_b).returncode != 0
    net.heal()
    assert ping(a, ip_b).returncode == 0


def test_egress_is_isolated(net: BridgeNetwork, standins: list[Standin]) -> None:
    net.attach(standins[0].netns, "alpha")

    def look(ipr):
        links = sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
        routes = [(r.get_attr("RTA_DST"), r["dst_len"])
                  for r in ipr.get_routes(family=socket.AF_INET, table=254)]
        return links, routes

    links, routes = in_netns(net.netns_path, look)
    assert [x for x in links if not x.startswith("vpc")] == ["br0", "lo"]
    assert routes == [(net.subnet.split("/")[0], int(net.subnet.split("/")[1]))]  # no default
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() in ("0", "1")


def test_detach(net: BridgeNetwork, standins: list[Standin]) -> None:
    a, b, _ = standins
    net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta")
    net.detach("beta")
    assert wait_until(lambda: b.links() == ["lo"])
    assert a.run("nslookup", "beta", net.dns_server).returncode != 0
    net.detach("beta")  # twice is fine
    assert set(net.endpoints()) == {"alpha"}
    ip_again = net.attach(b.netns, "beta")  # the name is free again
    assert ip_again != ip_b  # a released address is handed out again last
    assert ping(a, "beta").returncode == 0


def test_bad_input_leaves_nothing_half_made(net: BridgeNetwork, standins: list[Standin],
                                            tmp_path: Path) -> None:
    a, b, _ = standins
    net.attach(a.netns, "alpha")
    records = sorted(p.name for p in (tmp_path / "records").iterdir())
    used = net.addresses()
    with pytest.raises(NetworkError, match="'alpha' is already taken on network 'testnet'"):
        net.attach(b.netns, "alpha")
    with pytest.raises(NetworkError, match="is already attached"):
        net.attach(b.netns, "other", key="alpha")
    with pytest.raises(NetworkError, match="cannot open network namespace '/proc/0/ns/net'"):
        net.attach("/proc/0/ns/net", "ghost")
    with open(tmp_path / "plain", "w") as not_a_netns, \
            pytest.raises(NetworkError, match="is not a network namespace"):
        net.attach(not_a_netns.fileno(), "ghost")
    assert b.links() == ["lo"]
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == records
    assert net.addresses() == used  # no address kept by a failed attach
    net.remove()
    with pytest.raises(NetworkError, match="'testnet' has been removed"):
        net.attach(b.netns, "late")
    with pytest.raises(NetworkError, match="has been removed"):
        net.partition("alpha", "late")


def test_subnets_exhausted(tmp_path: Path) -> None:
    ipam = IPAM(tmp_path, pool="10.213.250.0/24", prefix=24, avoid=[])
    first = BridgeNetwork("one", state_dir=tmp_path, records_dir=tmp_path / "rec", ipam=ipam)
    try:
        held = nsfds()
        with pytest.raises(NetworkError, match="subnets exhausted"):
            BridgeNetwork("two", state_dir=tmp_path, records_dir=tmp_path / "rec", ipam=ipam)
        assert nsfds() == held
        assert [p.name for p in (tmp_path / "rec").iterdir()] == [f"net-network-{first.id}.json"]
        with pytest.raises(NetworkError, match="'one' is already taken"):
            BridgeNetwork("one", state_dir=tmp_path, ipam=IPAM(tmp_path, avoid=[]))
    finally:
        first.remove()


def test_teardown_leaves_the_host_as_it_was(tmp_path: Path) -> None:
    before, held = host_view(), nsfds()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    a, b = Standin(resolv), Standin(resolv)
    try:
        net = BridgeNetwork(None, state_dir=tmp_path / "state", records_dir=tmp_path / "rec")
        net.attach(a.netns, "alpha")
        net.attach(b.netns, "beta")
        net.partition("alpha", "beta")
        net.loss("alpha", 100)
        assert len(list((tmp_path / "rec").iterdir())) == 1  # the network (veths go with it)
        assert nsfds() > held
        net.remove()
        assert a.links() == ["lo"] and b.links() == ["lo"]
        assert nsfds() == held
        assert wait_until(lambda: thread_namespaces() == {os.readlink("/proc/self/ns/net")})
        assert list((tmp_path / "rec").iterdir()) == []
        assert IPAM(tmp_path / "state").leases() == {}
        assert host_view() == before
        net.remove()  # twice is fine
    finally:
        a.kill()
        b.kill()


def test_remove_without_waiting_finishes_in_the_background(tmp_path: Path) -> None:
    a = Standin()
    try:
        net = BridgeNetwork(None, state_dir=tmp_path / "state", records_dir=tmp_path / "rec")
        net.attach(a.netns, "alpha")
        net.remove(wait=False)
        assert wait_until(lambda: a.links() == ["lo"])
        assert wait_until(lambda: not list((tmp_path / "rec").iterdir()))
        assert wait_until(lambda: IPAM(tmp_path / "state").leases() == {})
    finally:
        a.kill()


OWNER = textwrap.dedent("""
    import json, sys
    from pytest_pycontain.native.network import BridgeNetwork
    net = BridgeNetwork("doomed", state_dir=sys.argv[1], records_dir=sys.argv[2])
    net.attach(sys.argv[3], "victim")
    print(json.dumps({"subnet": net.subnet}), flush=True)
    sys.stdin.read()
""")


def test_a_killed_owner_leaves_nothing_once_reaped(tmp_path: Path) -> None:
    a = Standin()
    state, records = tmp_path / "state", tmp_path / "rec"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(state), str(records), a.netns],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        subnet = json.loads(owner.stdout.readline())["subnet"]
        assert "eth0" in a.links()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        # the bridge's namespace died with its owner, and the veth pair with it
        assert wait_until(lambda: a.links() == ["lo"])
        # the network is recorded; its veth pairs went with its namespace and need no record
        kinds = sorted(json.loads(p.read_text())["kind"] for p in records.iterdir())
        assert kinds == ["network"]
        assert subnet in IPAM(state).leases()
        done = reap_network_records(records)
        assert f"released subnet {subnet} of network doomed" in done
        assert list(records.iterdir()) == []
        assert IPAM(state).leases() == {}
        assert reap_network_records(records) == []
        # an owner killed between writing its record and learning its subnet
        ipam = IPAM(state)
        half = ipam.allocate_subnet("pcnhalfmade", pid=a.pid)
        records.mkdir(exist_ok=True)
        (records / "net-network-pcnhalfmade.json").write_text(json.dumps(
            {"kind": "network", "id": "pcnhalfmade", "name": "half", "ipam": str(state)}))
        assert reap_network_records(records) == [f"released subnet {half} of network half"]
        assert ipam.leases() == {}
        # the state journal's way in: one record naming the directory
        ipam.allocate_subnet("pcnjournal", pid=a.pid)
        (records / "net-network-pcnjournal.json").write_text(json.dumps(
            {"kind": "network", "id": "pcnjournal", "name": "j", "ipam": str(state)}))
        undo_record({"kind": "network-records", "records_dir": str(records)})
        assert ipam.leases() == {}
        assert not records.exists()
    finally:
        owner.kill()
        a.kill()


def test_networks_are_isolated_from_each_other(net: BridgeNetwork, standins: list[Standin],
                                               tmp_path: Path) -> None:
    a, b, c = standins
    other = BridgeNetwork("othernet", state_dir=tmp_path / "state")
    try:
        assert other.subnet != net.subnet
        net.attach(a.netns, "alpha")
        ip_b = other.attach(b.netns, "beta")
        assert ping_once(a, ip_b).returncode != 0
        assert a.run("nslookup", "beta", net.dns_server).returncode != 0
        # a container on both networks reaches both, through eth0 and eth1
        net.attach(c.netns, "gamma")
        other.attach(c.netns, "gamma")
        assert [x for x in c.links() if x.startswith("eth")] == ["eth0", "eth1"]
        assert ping(c, ip_b).returncode == 0
        assert ping(c, "alpha").returncode == 0
    finally:
        other.remove()


def test_a_full_mesh_past_the_kernels_neighbour_limit(net: BridgeNetwork,
                                                      tmp_path: Path) -> None:
    """50 members, every ordered pair by name: ~2,500 neighbour entries, more than the host's
    gc_thresh3 (1024 by default) would let ARP keep; permanent entries are not counted."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(net.resolv_conf())
    names = [f"member-{n}" for n in range(50)]
    crowd: list[Standin] = []
    try:
        for name in names:
            crowd.append(Standin(resolv))
            net.attach(crowd[-1].netns, name)
        assert len(set(net.addresses())) == 50
        script = " ".join(names)
        script = (f"for n in {script}; do r='FAIL '$n; for i in 1 2 3; do "
                  f"{BUSYBOX} ping -c1 -W2 $n >/dev/null 2>&1 && r=ok && break; done; "
                  "echo $r; done")
        shells = [subprocess.Popen([*m.enter(), "sh", "-c", script], stdout=subprocess.PIPE,
                                   text=True) for m in crowd]
        results = {name: shell.communicate(timeout=120)[0].split("\n")
                   for name, shell in zip(names, shells, strict=True)}
        failed = [f"{name} -> {line.split()[1]}" for name, lines in results.items()
                  for line in lines if line.startswith("FAIL")]
        assert not failed, failed[:20]
        assert sum(lines.count("ok") for lines in results.values()) == 50 * 50
    finally:
        for member in crowd:
            member.kill()


def neighbours(netns: str) -> dict[str, tuple[str, str]]:
    """The neighbour table of a namespace: address -> (MAC, state)."""
    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-4", "neigh"], capture_output=True,
                         text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        words = line.split()
        if "lladdr" in words:
            table[words[0]] = (words[words.index("lladdr") + 1], words[-1])
    return table


def test_members_know_each_other_and_the_gateway_for_good(net: BridgeNetwork,
                                                         standins: list[Standin]) -> None:
    a, b, c = standins
    ip_a = net.attach(a.netns, "alpha")
    ip_b = net.attach(b.netns, "beta")
    assert neighbours(a.netns) == {net.gateway: (mac_for(net.gateway), "PERMANENT"),
                                   ip_b: (mac_for(ip_b), "PERMANENT")}
    assert neighbours(b.netns) == {net.gateway: (mac_for(net.gateway), "PERMANENT"),
                                   ip_a: (mac_for(ip_a), "PERMANENT")}
    assert neighbours(net.netns_path) == {ip_a: (mac_for(ip_a), "PERMANENT"),
                                          ip_b: (mac_for(ip_b), "PERMANENT")}
    eth0 = subprocess.run(["nsenter", f"--net={b.netns}", "ip", "-o", "-d", "link", "show",
                           "eth0"], capture_output=True, text=True, check=True).stdout
    assert f"link/ether {mac_for(ip_b)} " in eth0  # the address the entries name
    # made with the one queue each way a veth uses (cutting more to one waits for the kernel)
    assert "numtxqueues 1 numrxqueues 1 " in eth0
    assert ping(a, "beta").returncode == 0
    net.detach("beta")
    ip_c = net.attach(c.netns, "gamma")
    assert neighbours(a.netns) == {net.gateway: (mac_for(net.gateway), "PERMANENT"),
                                   ip_c: (mac_for(ip_c), "PERMANENT")}  # beta forgotten
    assert set(neighbours(net.netns_path)) == {ip_a, ip_c}
    assert ping(c, "alpha").returncode == 0


def test_mac_addresses_follow_the_ip() -> None:
    assert mac_for("10.213.0.2") == "02:42:0a:d5:00:02"
    assert mac_for("192.168.255.1") == "02:42:c0:a8:ff:01"
    with pytest.raises(ValueError):
        mac_for("10.213.0")


def test_a_route_socket_reports_what_the_kernel_refused(tmp_path: Path) -> None:
    standin = Standin()
    try:
        def check(ipr) -> None:
            sock = RouteSocket()
            try:
                with pytest.raises(NetworkError, match=r"cannot add the neighbour entry "
                                   r"10\.9\.0\.1 at 02:42:0a:09:00:01 on interface 4242: "
                                   r"No such device"):
                    sock.run([rtnl.neighbour(4242, "10.9.0.1", mac_for("10.9.0.1"))])
                sock.run([rtnl.forget_neighbour(1, "10.9.0.1")])  # nothing there: fine
                sock.run([rtnl.forget_neighbour(4242, "10.9.0.1")])  # no such interface: fine
                with pytest.raises(NetworkError, match="cannot bring interface 4242 up"):
                    sock.run([rtnl.link_up(4242)])
                sock.run([rtnl.address(1, "10.9.0.2", 24)])
                with pytest.raises(NetworkError, match=r"cannot give interface 1 the address "
                                   r"10\.9\.0\.2/24: File exists"):
                    sock.run([rtnl.address(1, "10.9.0.2", 24)])
                sock.run([rtnl.link_up(1)])
                assert sock.exchange([rtnl.default_route("10.9.0.1", 1)]) == [0]
                # there already: the kernel says so, and a join counts it as done
                assert sock.exchange([rtnl.default_route("10.9.0.1", 1)]) == [errno.EEXIST]
                sock.run([rtnl.default_route("10.9.0.1", 1)])
                with pytest.raises(NetworkError, match=r"cannot route via 10\.7\.0\.1: "
                                   r"Network is unreachable"):
                    sock.run([rtnl.default_route("10.7.0.1", 4242)])
            finally:
                sock.close()

        in_netns(standin.netns, check)
        routes = subprocess.run(["nsenter", f"--net={standin.netns}", "ip", "route"],
                                capture_output=True, text=True, check=True).stdout
        assert "default via 10.9.0.1 dev lo" in routes
    finally:
        standin.kill()


def test_a_batch_of_requests_is_done_in_order_and_answered_one_by_one() -> None:
    """The requests of one namespace go in one buffer: each gets its own answer, in order; a
    refused one stops none after it, and ``run`` names the first refusal that counts."""
    standin = Standin()
    show = ["nsenter", f"--net={standin.netns}", "ip"]
    try:
        subprocess.run([*show, "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                       check=True)

        def batch(ipr) -> tuple[list[int], list[int]]:
            d0 = socket.if_nametoindex("d0")
            sock = RouteSocket()
            try:
                first = sock.exchange([
                    rtnl.address(d0, "10.9.0.2", 24), rtnl.link_up(4242),  # no such device
                    rtnl.link_up(d0), rtnl.default_route("10.9.0.1", d0),
                    rtnl.neighbour(d0, "10.9.0.7", mac_for("10.9.0.7"))])
                again = sock.exchange([rtnl.default_route("10.9.0.1", d0),  # there already
                                       rtnl.forget_neighbour(d0, "10.9.0.8")])  # never was
                with pytest.raises(NetworkError, match=rf"cannot give interface {d0} the "
                                   r"address 10\.9\.0\.2/24: File exists"):
                    sock.run([rtnl.default_route("10.9.0.1", d0),  # fine: counts as done
                              rtnl.address(d0, "10.9.0.2", 24),
                              rtnl.neighbour(d0, "10.9.0.9", mac_for("10.9.0.9"))])
                many = [f"10.9.0.{n}" for n in range(20, 21 + 2 * rtnl.BATCH)]
                sock.run([rtnl.neighbour(d0, ip, mac_for(ip)) for ip in many])  # > 1 buffer
                sock.run([rtnl.forget_neighbour(d0, ip) for ip in many])
                return first, again
            finally:
                sock.close()

        first, again = in_netns(standin.netns, batch)
        assert first == [0, errno.ENODEV, 0, 0, 0]
        assert again == [errno.EEXIST, errno.ENOENT]
        routes = subprocess.run([*show, "route"], capture_output=True, text=True,
                                check=True).stdout
        assert "default via 10.9.0.1 dev d0" in routes
        neigh = subprocess.run([*show, "neigh", "show", "dev", "d0"], capture_output=True,
                               text=True, check=True).stdout
        # the one after the refusal was made too; the long batch's are gone again
        assert sorted(line.split()[0] for line in neigh.splitlines()) == ["10.9.0.7",
                                                                          "10.9.0.9"]
        assert f"10.9.0.7 lladdr {mac_for('10.9.0.7')} PERMANENT" in neigh
    finally:
        standin.kill()
