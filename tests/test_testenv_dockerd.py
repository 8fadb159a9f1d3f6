"""The private dockerd where a system Docker's firewall runs: containers on one of its networks
reach each other, a published port is reached from the test process, two daemons run at once,
and the host's ``docker0`` and firewall are left as they were.

The hostile host is a network namespace this test makes (never the real host's firewall): a
``docker0`` of a "system Docker", ``FORWARD`` policy ``DROP`` and ``bridge-nf-call-iptables=1``
(br_netfilter's switch is per namespace). The same script runs in a plain namespace too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testenv import nsproxy
from testenv.registry import RunningRegistry

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not all(map(shutil.which, ("dockerd", "iptables", "unshare", "busybox"))),
    reason="starts dockerd in a network namespace of its own (root, docker.io, iptables)")

HOSTILE = """
set -e
ip link set lo up
ip link add docker0 type bridge
iptables -P FORWARD DROP
echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
"""
PLAIN = "set -e\nip link set lo up\n"

# Two namespaces on a plain bridge of the namespace above: does its firewall drop them?
PROBE = """
ip link add probe0 type bridge && ip link set probe0 up
unshare --net sleep 60 & A=$!
unshare --net sleep 60 & B=$!
sleep 0.2
for end in a b; do
  pid=$A; [ $end = b ] && pid=$B
  ip link add probe$end type veth peer name eth0 netns $pid
  ip link set probe$end master probe0 up
done
nsenter -t $A -n sh -c 'ip addr add 10.9.0.1/24 dev eth0 && ip link set eth0 up'
nsenter -t $B -n sh -c 'ip addr add 10.9.0.2/24 dev eth0 && ip link set eth0 up'
sleep 1
FIREWALL=dropped
nsenter -t $A -n busybox ping -c1 -W2 10.9.0.2 >/dev/null 2>&1 && FIREWALL=passed
kill $A $B; wait $A $B 2>/dev/null || true
ip link delete probe0
export FIREWALL
"""

INNER = r'''
import json, socket, subprocess, sys, time, urllib.request
from pathlib import Path
from testenv.dockerd import start_dockerd

workdir, mirror = Path(sys.argv[1]), sys.argv[2]
for _ in range(200):  # the test relays its registry onto our loopback
    try:
        socket.create_connection(("127.0.0.1", int(mirror.rsplit(":", 1)[1])), 1).close()
        break
    except OSError:
        time.sleep(0.05)
def state():
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    return sorted(l.split(":")[1].strip() for l in links.splitlines()), rules
before = state()
daemons = [start_dockerd(workdir / str(n), mirror=mirror, insecure=[mirror.split("//")[1]])
           for n in (1, 2)]
import os
report = {"during": state()[0], "firewall": os.environ["FIREWALL"]}
try:
    for n, daemon in enumerate(daemons):
        def docker(*argv):
            done = subprocess.run(["docker", *argv], env=daemon.env(), capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, (argv, done.stderr)
            return done.stdout.strip()
        docker("network", "create", "pair")
        docker("run", "-d", "--network", "pair", "--name", "srv", "busybox", "sh", "-c",
               f"echo over the bridge {n} > /tmp/i; exec httpd -f -p 8080 -h /tmp")
        report[f"bridged{n}"] = docker(
            "run", "--rm", "--network", "pair", "busybox", "sh", "-c",
            "for i in $(seq 100); do wget -qO- http://srv:8080/i && exit; sleep 0.1; done")
        docker("run", "-d", "--name", "web", "-p", "127.0.0.1::8080", "busybox", "sh", "-c",
               f"echo published {n} > /tmp/i; exec httpd -f -p 8080 -h /tmp")
        port = docker("port", "web", "8080/tcp").rsplit(":", 1)[1]
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/i", timeout=5) as answer:
                    report[f"published{n}"] = answer.read().decode().strip()
                    break
            except OSError:
                time.sleep(0.1)
        docker("rm", "-f", "srv", "web")
finally:
    for daemon in daemons:
        daemon.stop()
time.sleep(0.5)
report["same_after"] = state() == before
print(json.dumps(report))
'''


def relay_registry_into(pid: int, port: int) -> None:
    """The test registry on the new namespace's loopback too (its daemons pull through it)."""
    netns = f"/proc/{pid}/ns/net"
    for _ in range(200):
        try:
            server = nsproxy.listen_in(netns, "127.0.0.1", port)
            break
        except OSError:
            time.sleep(0.02)  # `ip link set lo up` has not run yet
    else:
        raise AssertionError("no loopback in the new namespace")
    threading.Thread(target=nsproxy.serve, args=(server, ("127.0.0.1", port)),
                     daemon=True).start()


@pytest.mark.parametrize("host", ["plain", "system-docker-firewall"])
def test_private_dockerd_in_a_namespace_of_its_own(
    host: str, tmp_path: Path, test_registry: RunningRegistry
) -> None:
    setup = HOSTILE if host != "plain" else PLAIN
    script = setup + PROBE + f"exec {sys.executable} -c \"$INNER\" {tmp_path} {test_registry.url}"
    process = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", script], env={**os.environ, "INNER": INNER,
                                                        "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    relay_registry_into(process.pid, test_registry.port)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    # the hostile namespace is hostile: a plain bridge there loses its traffic
    assert report["firewall"] == ("passed" if host == "plain" else "dropped")
    assert report["bridged0"] == "over the bridge 0"
    assert report["bridged1"] == "over the bridge 1"
    assert report["published0"] == "published 0"
    assert report["published1"] == "published 1"
    # each daemon's bridge is in its own namespace: only the two veth ends appear here
    assert [link for link in report["during"] if link.startswith("docker")] == (
        ["docker0"] if host != "plain" else [])
    assert report["same_after"], "links or firewall rules of the host's namespace changed"


def _mounts_below(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]


@pytest.fixture
def short_tmp():
    """A short directory: containerd's socket path below it must fit a unix socket's 108."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="pcd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_what_a_killed_dockerd_left_mounted_is_reaped_by_the_next_start(short_tmp: Path) -> None:
    """A run killed half-way never stops its dockerd: the daemon's data root, netns and
    overlays stay mounted. The next start unmounts them (the veth to its namespace goes with
    it); a live daemon's mounts stay."""
    import signal

    from testenv.dockerd import reap_dead_dockerds, start_dockerd

    tmp_path = short_tmp

    killed = start_dockerd(tmp_path / "killed")
    live = start_dockerd(tmp_path / "live")
    try:
        os.killpg(killed.process.pid, signal.SIGKILL)  # dockerd and its containerd
        killed.process.wait()
        for relay in killed.relays:
            relay.kill()
        assert _mounts_below(tmp_path / "killed")
        assert reap_dead_dockerds(tmp_path) == [tmp_path / "killed"]
        assert _mounts_below(tmp_path / "killed") == []
        assert _mounts_below(tmp_path / "live")
        deadline = time.monotonic() + 10
        while killed.host_link in os.listdir("/sys/class/net") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert killed.host_link not in os.listdir("/sys/class/net")
    finally:
        live.stop()
    assert reap_dead_dockerds(tmp_path) == []
