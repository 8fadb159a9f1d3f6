"""The test environment itself: the registry serves the seeded images, dockerd pulls through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from testenv.errors import EnvironmentProblem
from testenv.podman import PodmanHome, RunningPodman, start_podman
from testenv.registry import RunningRegistry, start_registry
from testenv.tools import require


def skopeo_inspect(registry: RunningRegistry, repo: str) -> dict:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/{repo}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_registry_serves_busybox_and_debian(test_registry: RunningRegistry) -> None:
    busybox = skopeo_inspect(test_registry, "library/busybox:latest")
    debian = skopeo_inspect(test_registry, "library/debian:bookworm")
    assert busybox["Os"] == "linux" and len(busybox["Layers"]) == 1
    assert debian["Os"] == "linux" and len(debian["Layers"]) == 1
    assert busybox["Digest"].startswith("sha256:")


def test_mirror_is_exported(test_registry: RunningRegistry) -> None:
    assert os.environ["PYCONTAIN_REGISTRY_MIRROR"] == test_registry.url


def test_busybox_has_upstream_users(test_registry: RunningRegistry, tmp_path: Path) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--insecure-policy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{test_registry.host}/library/busybox:latest",
            f"dir:{tmp_path}",
        ],
        check=True,
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    layer = tmp_path / manifest["layers"][0]["digest"].split(":")[1]
    listing = subprocess.run(
        ["tar", "-tvzf", str(layer)], capture_output=True, text=True, check=True
    ).stdout
    assert "drwxrwxrwt" in next(
        line for line in listing.splitlines() if line.rstrip("/").endswith(" tmp")
    )
    passwd = subprocess.run(
        ["tar", "-xzOf", str(layer), "etc/passwd"], capture_output=True, text=True, check=True
    ).stdout
    users = [line.split(":")[0] for line in passwd.splitlines()]
    assert users == [
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "mail",
        "www-data",
        "operator",
        "nobody",
    ]


def test_taken_port_is_one_clear_line(test_registry: RunningRegistry, tmp_path: Path) -> None:
    with pytest.raises(
        EnvironmentProblem,
        match=rf"port 127.0.0.1:{test_registry.port} is "
        "already in use",
    ):
        start_registry(tmp_path, port=test_registry.port)


def test_missing_tool_names_its_package() -> None:
    with pytest.raises(EnvironmentProblem, match="apt-get install no-such-tool"):
        require("no-such-tool")


def test_missing_tool_stops_the_session_at_once(pytester: pytest.Pytester) -> None:
    """With docker-registry off PATH, the whole session stops with one line, not N errors."""
    repo = Path(__file__).resolve().parent.parent
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    empty = pytester.mkdir("emptybin")
    env = {**os.environ, "PATH": str(empty),
           "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "tests")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "`docker-registry` is not installed: apt-get install docker-registry" in proc.stdout
    assert "passed" not in proc.stdout
    assert proc.stdout.count("not installed") == 1


@pytest.mark.dockerd
def test_dockerd_pulls_busybox_through_the_mirror(dockerd) -> None:
    done = subprocess.run(
        ["docker", "run", "--rm", "busybox", "cat", "/etc/hostname"],
        env=dockerd.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def _podman_ok(home: PodmanHome, *argv: str) -> str:
    done = home.run(*argv, timeout=300)
    assert done.returncode == 0, f"podman {' '.join(argv)}: {done.stderr}"
    return done.stdout.strip()


def _http_get(address: str) -> bytes:
    """The body at ``address`` (host:port), tried a few times while the server starts."""
    for _ in range(50):
        try:
            return urllib.request.urlopen(f"http://{address}/x", timeout=10).read()
        except OSError:
            time.sleep(0.2)
    return urllib.request.urlopen(f"http://{address}/x", timeout=10).read()


@pytest.mark.podman
def test_two_private_podmans_do_not_share_state(podman_service: RunningPodman,
                                                test_registry: RunningRegistry,
                                                tmp_path: Path) -> None:
    """Another session's podman, started and stopped while this one has a container on a
    network, takes none of this one's state with it (address leases, DNS, namespaces,
    bridges), and leaves nothing of its own."""
    one = podman_service.home
    _podman_ok(one, "network", "create", "shared-name")
    _podman_ok(one, "run", "-d", "--name", "web", "--network", "shared-name",
               "-p", "127.0.0.1::8080", "busybox", "sh", "-c",
               "mkdir /w && echo one > /w/x && exec httpd -f -p 8080 -h /w")
    address = _podman_ok(one, "port", "web", "8080")
    assert _http_get(address) == b"one\n"

    other = start_podman(tmp_path / "other", registry_host=test_registry.host)
    try:
        _podman_ok(other.home, "network", "create", "shared-name")
        _podman_ok(other.home, "run", "-d", "--name", "web", "--network", "shared-name",
                   "busybox", "sleep", "600")
        sandbox = _podman_ok(other.home, "inspect", "-f", "{{.NetworkSettings.SandboxKey}}",
                             "web")
        assert sandbox.startswith("/run/netns/") and not Path(sandbox).exists()  # not ours
        subnets = [json.loads(_podman_ok(home, "network", "inspect", "shared-name"))[0]
                   ["subnets"][0]["subnet"] for home in (one, other.home)]
        assert subnets[0] != subnets[1]
        bridge = json.loads(_podman_ok(other.home, "network", "inspect", "podman"))[0][
            "network_interface"]
    finally:
        other.stop()
    assert other.home.holder.poll() is not None  # its namespace and every process in it
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    assert [m for m in Path("/proc/self/mounts").read_text().splitlines()
            if str(tmp_path / "other") in m] == []

    assert _http_get(address) == b"one\n"  # still served, on its network and port
    found = _podman_ok(one, "run", "--rm", "--network", "shared-name", "busybox",
                       "wget", "-q", "-O-", "http://web:8080/x")
    assert found == "one"  # its DNS and a new lease on that network
    _podman_ok(one, "rm", "-f", "-t", "0", "web")
    _podman_ok(one, "network", "rm", "shared-name")


# Run in a network namespace of the test's own (its firewall and links are its own): one
# live podman network (a bridge with a container's port on it) and one a killed podman left (an
# empty bridge), each with netavark's rules, including a DNAT of a published port.
LEFT_NETAVARK_STATE = r"""
import json, subprocess, sys
from pathlib import Path
from testenv.podman import tidy_netavark

def sh(*argv):
    subprocess.run(argv, check=True)

def ipt(table, *rule):
    sh("iptables", "-t", table, *rule)

sh("ip", "link", "set", "lo", "up")
for name, subnet, chain, port in (("pcp0a0b0c0d", "10.150.1", "AAAAAAAAAAAAA", "40001"),
                                  ("podman7", "10.150.2", "BBBBBBBBBBBBB", "40002")):
    sh("ip", "link", "add", name, "type", "bridge")
    sh("ip", "addr", "add", f"{subnet}.1/24", "dev", name)
    sh("ip", "link", "set", name, "up")
    for table, new in (("nat", "NETAVARK-HOSTPORT-DNAT"), ("filter", "NETAVARK_FORWARD"),
                       ("filter", "NETAVARK_ISOLATION_2")):
        if subprocess.run(["iptables", "-t", table, "-L", new], capture_output=True).returncode:
            ipt(table, "-N", new)
    ipt("nat", "-N", f"NETAVARK-{chain}")
    ipt("nat", "-A", f"NETAVARK-{chain}", "-d", f"{subnet}.0/24", "-j", "ACCEPT")
    ipt("nat", "-A", f"NETAVARK-{chain}", "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE")
    ipt("nat", "-A", "POSTROUTING", "-s", f"{subnet}.0/24", "-j", f"NETAVARK-{chain}")
    ipt("nat", "-N", f"NETAVARK-DN-{chain}")
    ipt("nat", "-A", f"NETAVARK-DN-{chain}", "-d", "127.0.0.1/32", "-p", "tcp", "--dport", port,
        "-j", "DNAT", "--to-destination", f"{subnet}.2:8080")
    ipt("nat", "-A", "NETAVARK-HOSTPORT-DNAT", "-p", "tcp", "--dport", port, "-j",
        f"NETAVARK-DN-{chain}")
    ipt("filter", "-A", "NETAVARK_FORWARD", "-s", f"{subnet}.0/24", "-j", "ACCEPT")
    ipt("filter", "-A", "NETAVARK_ISOLATION_2", "-o", name, "-j", "DROP")
ipt("nat", "-A", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
    "NETAVARK-HOSTPORT-DNAT")
ipt("filter", "-A", "FORWARD", "-j", "NETAVARK_FORWARD")
sh("ip", "link", "add", "ctr0", "type", "veth", "peer", "name", "ctr1")
sh("ip", "link", "set", "ctr0", "master", "pcp0a0b0c0d")

def state():
    rules = [subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True,
                            check=True).stdout for table in ("nat", "filter")]
    links = sorted(p.name for p in Path("/sys/class/net").iterdir())
    return {"rules": "".join(rules), "links": links}

tidy_netavark()
one = state()
sh("ip", "link", "delete", "ctr0")  # its last container leaves the live network, as at a kill
tidy_netavark()
json.dump({"one": one, "two": state()}, sys.stdout)
"""


def test_what_a_killed_podman_left_in_the_firewall_is_removed() -> None:
    """A stale DNAT of a published port takes every later connection to that port, whoever
    listens there (a native container's published port timed out on it): the test session
    removes netavark's rules and bridges of networks gone, and keeps a live network's."""
    done = subprocess.run(["unshare", "--net", "--mount", "sh", "-c",  # /sys of its namespace
                           'mount -t sysfs none /sys && exec "$0" -c "$1"', sys.executable,
                           LEFT_NETAVARK_STATE],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[1],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    one, two = result["one"], result["two"]
    assert "10.150.1.2:8080" in one["rules"] and "NETAVARK-DN-AAAAAAAAAAAAA" in one["rules"]
    assert "-o pcp0a0b0c0d -j DROP" in one["rules"]
    assert "10.150.2" not in one["rules"] and "BBBBBBBBBBBBB" not in one["rules"]
    assert "podman7" not in one["rules"] and "podman7" not in one["links"]
    assert "pcp0a0b0c0d" in one["links"]
    assert "NETAVARK" not in two["rules"]  # nothing of anyone's left: the chains went too
    assert "pcp0a0b0c0d" not in two["links"]
