"""Egress, the same check on both backends: containers on a network reach the outside world
(NAT'd: the server sees the host's side, never the container's address) and resolve its names
through the host's resolver; an internal network's containers do neither.

Each run is in a network and mount namespace of the test's own that stands for the host: a
veth there carries "the outside world" (198.51.100.2, a documentation address that exists only
in that namespace, with an HTTP server and the resolver its ``/etc/resolv.conf`` names) and
nothing leaves it. The Docker backend's daemon is a private dockerd started inside, in a
namespace of its own that it firewalls and NATs as on any Docker host (its own tables), routed
out through its link to the stand-in host. The stand-in is plain, or has a system Docker's
firewall (FORWARD policy DROP, br_netfilter's bridge-nf-call-iptables=1): neither backend may
depend on the host's firewall, and neither may change the stand-in's links, routes or rules.
(The native engine's own details, pasta and spare networks: tests/test_native_egress.py.)
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
from test_native_egress import OUTSIDE_WORLD
from test_testenv_dockerd import HOSTILE, PLAIN, relay_registry_into

from pytest_pycontain.native import egress
from testenv.registry import RunningRegistry

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces (root)"),
    pytest.mark.skipif(egress.pasta_path() is None or shutil.which("iptables") is None,
                       reason="a way out needs pasta (passt) and iptables (.ci/setup)"),
]

SCENARIO = r"""
import faulthandler, json, os, socket, subprocess, sys, threading, http.server
from pathlib import Path
from types import SimpleNamespace
faulthandler.dump_traceback_later(240, exit=True)  # a hang fails with where it hung
backend, rootfs, workdir, mirror = sys.argv[1:5]
workdir = Path(workdir)
def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout
resolv = workdir / "resolv.conf"
""" + OUTSIDE_WORLD + r"""
server = http.server.ThreadingHTTPServer(("198.51.100.2", 0), Hello)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]

def host_network():
    rules = [line for line in sh("iptables-save").splitlines() if not line.startswith("#")]
    return (sh("ip", "-o", "link"), sh("ip", "route"), rules,
            open("/proc/sys/net/ipv4/ip_forward").read())

before = host_network()
from pytest_pycontain.engine import RunSpec
daemon = None
if backend == "native":
    from pytest_pycontain.native.engine import NativeEngine
    engine = NativeEngine(state_dir=str(workdir / "state"))
    image = SimpleNamespace(config={"Cmd": ["sh"],
                                    "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
                            layer_dirs=[rootfs], tags=["busybox:test"])
else:
    from pytest_pycontain.config import Settings
    from pytest_pycontain.docker import DockerEngine
    from testenv.dockerd import start_dockerd
    daemon = start_dockerd(workdir / "d", mirror=mirror,  # (unix socket paths are short)
                           insecure=[mirror.split("//")[1]], egress=True, timeout=180)
    engine = DockerEngine(Settings(), base_url=daemon.host)
    image = engine.pull("busybox")

def fetch(container, host):
    got = container.exec(f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc {host} {port} "
                         "> /tmp/r; tail -n 1 /tmp/r", timeout=30)
    return got.stdout.strip() or "blocked"

found = {}
try:
    out, shut = engine.network(), engine.network(internal=True)
    a = engine.run(RunSpec(image=image, network=out, command="sleep 1000"))
    b = engine.run(RunSpec(image=image, network=out, command="sleep 1000"))
    c = engine.run(RunSpec(image=image, network=shut, command="sleep 1000"))
    found["members"] = [a.ip, b.ip]
    found["out"] = fetch(a, "198.51.100.2")
    found["out-second-member"] = fetch(b, "198.51.100.2")
    found["by-name"] = fetch(b, "outside.example")
    found["internal"] = fetch(c, "198.51.100.2")
    found["by-name-internal"] = c.exec("nslookup outside.example", timeout=30).exit_code != 0
    for container in (a, b, c):
        container.remove()
    out.remove()
    shut.remove()
finally:
    engine.close()
    if daemon is not None:
        daemon.stop()
found["host-network-unchanged"] = host_network() == before
print(json.dumps(found))
"""


@pytest.mark.parametrize("host", ["plain", "system-docker-firewall"])
@pytest.mark.parametrize("backend", ["native", pytest.param("docker", marks=pytest.mark.skipif(
    not shutil.which("dockerd"), reason="the Docker half needs dockerd (docker.io)"))])
def test_a_network_reaches_the_outside_world_an_internal_one_does_not(
        backend: str, host: str, tmp_path: Path, test_registry: RunningRegistry) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    setup = HOSTILE if host != "plain" else PLAIN
    script = setup + (f'exec setpriv --pdeathsig KILL -- "{sys.executable}" -c "$SCENARIO" '
                      f"{backend} {rootfs} {tmp_path} {test_registry.url}")
    process = subprocess.Popen(
        ["unshare", "--net", "--mount", "sh", "-c", script],
        env={**os.environ, "SCENARIO": SCENARIO, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if backend == "docker":  # its daemon pulls from the test registry through its loopback
        relay_registry_into(process.pid, test_registry.port)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    found = json.loads(out.strip().splitlines()[-1])
    members = found.pop("members")
    reached = found.pop("out")
    assert reached.startswith("reached 198.51.100.2 from "), reached
    assert reached.rsplit(" ", 1)[1] not in members  # NAT'd, as Docker's bridge does
    assert found.pop("out-second-member").startswith("reached 198.51.100.2 from ")
    assert found.pop("by-name") == reached  # through the host's resolver
    assert found == {"internal": "blocked", "by-name-internal": True,
                     "host-network-unchanged": True}
