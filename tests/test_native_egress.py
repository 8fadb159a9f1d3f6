"""Networks of the native engine reach the outside world as Docker's bridge does, never the
host's loopback, and resolve outside names through the host's resolver; ``internal=True`` ones
do neither; the host's own network is left as it was.

Everything runs in a network namespace of the test's own (``unshare --net``), which stands for
the host: a veth there carries "the outside world" (198.51.100.2, a documentation address that
only exists in that namespace, with an HTTP server and the resolver the namespace's own
``/etc/resolv.conf`` names, bound over the real one in a mount namespace of the test's own) and
its loopback stands for the host's. No packet leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_contract import busybox_rootfs

from pytest_pycontain.native import egress

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the native engine needs root"),
    pytest.mark.skipif(egress.pasta_path() is None or shutil.which("iptables") is None,
                       reason="a way out needs pasta (passt) and iptables (.ci/setup)"),
]

# "The outside world", in the namespace that stands for the host: a veth with 198.51.100.2, an
# HTTP handler (Hello) and a resolver there for outside.example; needs sh() and resolv (a path).
OUTSIDE_WORLD = r"""
import socket
sh("ip", "link", "add", "pc-out0", "type", "veth", "peer", "name", "pc-out1")
sh("ip", "addr", "add", "198.51.100.1/24", "dev", "pc-out0")
sh("ip", "addr", "add", "198.51.100.2/24", "dev", "pc-out0")   # "the outside world"
sh("ip", "link", "set", "pc-out1", "up")
sh("ip", "link", "set", "pc-out0", "up")
sh("ip", "route", "add", "default", "via", "198.51.100.254", "dev", "pc-out0")

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"reached {self.server.server_address[0]} from {self.client_address[0]}\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass

# the host's resolver, out there: this mount namespace's /etc/resolv.conf names it
from pytest_pycontain.native.dns import respond
with open(resolv, "w") as conf:
    conf.write("nameserver 198.51.100.2\n")
sh("mount", "--bind", str(resolv), "/etc/resolv.conf")
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("198.51.100.2", 53))
def serve_dns():
    table = {"outside.example": ["198.51.100.2"]}
    while True:
        query, peer = dns.recvfrom(4096)
        answer = respond(query, lambda name: table.get(name, ()), lambda ip: ())
        if answer is not None:
            dns.sendto(answer, peer)
threading.Thread(target=serve_dns, daemon=True).start()
"""

_IN_OWN_NETNS = r"""
import faulthandler, json, os, subprocess, sys, threading, http.server
from types import SimpleNamespace
faulthandler.dump_traceback_later(100, exit=True)  # a hang fails with where it hung
rootfs, state_dir, resolv = sys.argv[1:4]
def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout
sh("ip", "link", "set", "lo", "up")
""" + OUTSIDE_WORLD + r"""
ports = {}
for host in ("198.51.100.2", "127.0.0.1"):
    server = http.server.ThreadingHTTPServer((host, 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ports[host] = server.server_address[1]

def host_network():
    return (sh("ip", "-o", "link"), sh("ip", "route"), sh("iptables-save"),
            open("/proc/sys/net/ipv4/ip_forward").read())

before = host_network()
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native.engine import NativeEngine
image = SimpleNamespace(config={"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
                        layer_dirs=[rootfs], tags=["busybox:test"])
def fetch(container, host):
    got = container.exec(f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc {host} "
                         f"{ports[host]} > /tmp/r; cat /tmp/r | tail -n 1", timeout=20)
    return got.stdout.strip() or "blocked"

def our_pastas():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = open(f"/proc/{pid}/comm").read()
            parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if comm.startswith(("pasta", "passt")) and parent == os.getpid():
            found.append(pid)
    return found

def tracked(network):
    # connections the kernel tracks in the network's namespace: its bridge's own reports and a
    # member's start are not among them (see netegress._rules)
    fd = network.netns_fd()
    try:
        return int(sh("nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", "cat",
                      "/proc/sys/net/netfilter/nf_conntrack_count"))
    finally:
        os.close(fd)

found = {}
engine = NativeEngine(state_dir=state_dir)
try:
    out, shut = engine.network(), engine.network(internal=True)
    a = engine.run(RunSpec(image=image, network=out, command="sleep 1000"))
    b = engine.run(RunSpec(image=image, network=out, command="sleep 1000"))
    c = engine.run(RunSpec(image=image, network=shut, command="sleep 1000"))
    a.exec(f"ping -c 1 -W 2 {out.gateway}")  # the network's own traffic: answers from
    b.exec("nslookup localhost")  # the gateway, a name asked of it, multicast reports
    found["tracked-before-traffic"] = tracked(out)
    found["out"] = fetch(a, "198.51.100.2")
    found["out-second-member"] = fetch(b, "198.51.100.2")
    found["loop"] = fetch(a, "127.0.0.1")
    found["internal"] = fetch(c, "198.51.100.2")
    ports["outside.example"] = ports["198.51.100.2"]
    found["by-name"] = fetch(b, "outside.example")
    found["by-name-internal"] = c.exec("nslookup outside.example", timeout=20).exit_code != 0
    found["pasta-running"] = len(our_pastas())
    for container in (a, b, c):
        container.remove()
    out.remove()
    shut.remove()
    again = engine.network()  # a spare's way out is kept: nothing new is started
    d = engine.run(RunSpec(image=image, network=again, command="sleep 1000"))
    found["spare"] = fetch(d, "198.51.100.2")
    d.remove()
finally:
    engine.close()
found["pasta-left"] = our_pastas()
found["host-network-unchanged"] = host_network() == before
print(json.dumps(found))
"""

_DIE_WITH_US = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


def test_networks_reach_out_but_not_the_hosts_loopback(tmp_path: Path) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    done = subprocess.run(
        [shutil.which("unshare") or "unshare", "--net", "--mount", "--", *_DIE_WITH_US,
         sys.executable, "-c", _IN_OWN_NETNS, str(rootfs), str(tmp_path / "state"),
         str(tmp_path / "resolv.conf")],
        capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    reached = found.pop("out")
    assert reached.startswith("reached 198.51.100.2 from "), reached
    assert found.pop("out-second-member").startswith("reached 198.51.100.2 from ")
    assert found.pop("by-name") == reached  # the network's DNS forwards what is not its own
    assert found.pop("by-name-internal") is True  # an internal network's does not
    assert found == {"tracked-before-traffic": 0, "loop": "blocked", "internal": "blocked",
                     "pasta-running": 1, "spare": reached, "pasta-left": [],
                     "host-network-unchanged": True}
