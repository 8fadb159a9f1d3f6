"""A private ``dockerd`` (Debian's docker.io) on its own socket, data root and exec root.

It uses the test registry as its Docker Hub mirror and runs in a network namespace of its own,
so its bridge (a ``docker0`` of its own, never the host's) and its containers' traffic are out of
reach of the host's firewall: a system Docker's ``FORWARD`` policy ``DROP`` with
``br_netfilter`` drops bridged traffic of the host's namespace only. Nothing of the host's
network changes beyond a veth whose peer lives in that namespace (it goes with it).
``nsproxy.py`` carries what must cross: published ports out to the test process's namespace,
and dockerd's pulls in to the registry on the host's loopback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .errors import EnvironmentProblem, stderr_tail
from .tools import end, require


@dataclasses.dataclass
class RunningDockerd:
    """``host`` is the ``DOCKER_HOST`` value (``unix:///.../docker.sock``); ``host_address`` is
    an address of the test process's namespace that is not loopback (the host end of a veth
    into the daemon's namespace), where a port published on every interface is reached."""

    socket_path: Path
    workdir: Path
    process: subprocess.Popen
    host_link: str
    host_address: str
    relays: list[subprocess.Popen] = dataclasses.field(default_factory=list)

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def env(self) -> dict[str, str]:
        """Environment for the ``docker`` command line against this daemon (BuildKit on)."""
        return {
            **os.environ,
            "DOCKER_HOST": self.host,
            "DOCKER_BUILDKIT": "1",
            "DOCKER_CONFIG": str(self.workdir / "client"),
        }

    @property
    def netns(self) -> str:
        """The daemon's network namespace (valid while it runs)."""
        return f"/proc/{self.process.pid}/ns/net"

    def stop(self) -> None:
        for process in [*self.relays, self.process]:
            end(process)
        unmount_below(self.workdir)
        # the veth goes with the namespace; say so at once rather than when the kernel gets to it
        subprocess.run(["ip", "link", "delete", self.host_link], capture_output=True, check=False)


def unmount_below(directory: Path) -> None:
    """Lazily unmount everything dockerd left mounted below ``directory`` (netns, overlays)."""
    prefix = str(directory.resolve()) + "/"
    for target in reversed(_mount_targets()):
        if target.startswith(prefix):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _mount_targets() -> list[str]:
    """Every mount point of our mount namespace, in mount order."""
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1].replace("\\040", " ") for line in mounts]


def reap_dead_dockerds(under: Path | None = None) -> list[Path]:
    """Unmount what private dockerds that were killed (a test run killed half-way: no ``stop``)
    left mounted below ``under`` (the temporary directory): their data root, the overlays of
    their containers, their network namespaces (and with them our veth to each). A dockerd's
    working directory is the one holding its ``dockerd.pid``; a live dockerd's is left alone.
    Returns the working directories unmounted."""
    prefix = str(Path(under or tempfile.gettempdir()).resolve()) + "/"
    workdirs = set()
    for target in _mount_targets():
        if not target.startswith(prefix):
            continue
        for parent in Path(target).parents:
            if (parent / "dockerd.pid").exists():
                workdirs.add(parent)
                break
    reaped = sorted(w for w in workdirs if not _dockerd_alive(w / "dockerd.pid"))
    for workdir in reaped:
        unmount_below(workdir)
    return reaped


def _dockerd_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip() == "dockerd"
    except (OSError, ValueError):
        return False


def _in_own_netns(pid: int, timeout: float = 10) -> None:
    """Wait until ``pid`` (``unshare --net``) has left our network namespace."""
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != ours:
                return
        except OSError as exc:
            raise EnvironmentProblem(f"dockerd: exited before it had a namespace ({exc})") from None
        time.sleep(0.01)
    raise EnvironmentProblem("dockerd: `unshare --net` did not make a network namespace")


def _free_link_net() -> ipaddress.IPv4Network:
    """A /30 of 198.18.0.0/15 (the benchmarking range) that no address here is in."""
    taken = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                           check=False).stdout
    addresses = [ipaddress.ip_interface(word) for word in taken.split() if "/" in word
                 and word[0].isdigit()]
    for _ in range(100):
        net = ipaddress.IPv4Network((0xC6120000 + 4 * random.randrange(1 << 15), 30))
        if not any(a.ip in net or net.overlaps(a.network) for a in addresses):
            return net
    raise EnvironmentProblem("dockerd: no free /30 in 198.18.0.0/15 for the host link")


def _host_link(pid: int, route_out: bool = False) -> tuple[str, str]:
    """A veth from our namespace to dockerd's: its name here and its address here;
    ``route_out``: dockerd's namespace routes everything else through it too."""
    name = f"pycd{pid % 100000}{random.randrange(16**4):04x}"
    net = _free_link_net()
    here, there = (str(ip) for ip in list(net.hosts())[:2])
    steps = [
        ["ip", "link", "add", name, "type", "veth", "peer", "name", "uplink", "netns", str(pid)],
        ["ip", "addr", "add", f"{here}/30", "dev", name],
        ["ip", "link", "set", name, "up"],
        ["nsenter", "-t", str(pid), "-n", "ip", "addr", "add", f"{there}/30", "dev", "uplink"],
        ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "uplink", "up"],
    ]
    if route_out:
        steps.append(["nsenter", "-t", str(pid), "-n", "ip", "route", "add", "default", "via",
                      here])
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode:
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
            raise EnvironmentProblem(f"dockerd: `{' '.join(argv)}`: {stderr_tail(done.stderr)}")
    return name, here


def _relay_in(netns: str, port: int) -> subprocess.Popen:
    """Relay ``127.0.0.1:port`` of ``netns`` to ours (dockerd pulling from the test registry)."""
    ready_r, ready_w = os.pipe()
    argv = [sys.executable, str(Path(__file__).with_name("nsproxy.py")), "-listen-netns", netns,
            "-host-ip", "127.0.0.1", "-host-port", str(port), "-container-ip", "127.0.0.1",
            "-container-port", str(port), "-ready-fd", str(ready_w)]
    process = subprocess.Popen(argv, pass_fds=[ready_w], stdin=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        answer = ready.read()
    if not answer.startswith(b"0\n"):
        process.kill()
        process.wait()
        raise EnvironmentProblem(f"dockerd: no relay to the registry on port {port}: "
                                 f"{answer[2:].decode(errors='replace')}")
    return process


def _proxy_wrapper(workdir: Path) -> Path:
    """dockerd's ``--userland-proxy-path``: published ports listen in our namespace."""
    wrapper = workdir / "docker-proxy"
    real = require("docker-proxy")
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec '{sys.executable}' '{Path(__file__).with_name('nsproxy.py')}' "
        f"-listen-netns /proc/{os.getpid()}/ns/net -real-proxy '{real}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


def await_ping(what: str, process: subprocess.Popen, sock: Path, log: Path, timeout: float,
               stop: Callable[[], None]) -> None:
    """Return once the Docker-compatible API on ``sock`` answers ``/_ping``; a daemon that
    exits first, or does not answer in time (then stopped), is an EnvironmentProblem with the
    tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EnvironmentProblem(f"{what} exited {process.returncode} at start: "
                                     f"{stderr_tail(log.read_bytes())}")
        if _answers(sock):
            return
        time.sleep(0.1)
    stop()
    raise EnvironmentProblem(f"{what} did not answer on {sock} within {timeout:.0f}s: "
                             f"{stderr_tail(log.read_bytes())}")


def start_dockerd(
    workdir: Path, *, mirror: str | None = None, insecure: list[str] = (), timeout: float = 60,
    egress: bool = False,
) -> RunningDockerd:
    """Start dockerd under ``workdir``; return once ``/_ping`` answers on its socket.

    ``egress``: its containers reach out as on any Docker host: dockerd manages the firewall
    and NAT of its own namespace (its own tables; the host's are never touched) and that
    namespace routes out through the host link. Only for a caller whose namespace is one a
    test made to stand for the host (what leaves the link arrives there, and goes no
    further): the session's daemon has no way out, so nothing of a test can leave the machine.
    """
    binary = require("dockerd")
    if os.geteuid() != 0:
        raise EnvironmentProblem("dockerd: the private test dockerd needs root")
    reap_dead_dockerds()  # what one of a killed run left mounted
    workdir = Path(workdir)
    for sub in ("data", "exec", "client"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    # unix socket paths are limited to 108 bytes: keep it short
    sock = Path(f"/tmp/pycontain-dockerd-{os.getpid()}-{time.monotonic_ns() % 100000}.sock")
    argv = [
        require("unshare"),
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        binary,
        "--host",
        f"unix://{sock}",
        "--data-root",
        str(workdir / "data"),
        "--exec-root",
        str(workdir / "exec"),
        "--pidfile",
        str(workdir / "dockerd.pid"),
        *(() if egress else ("--iptables=false", "--ip6tables=false", "--ip-masq=false")),
        "--bip",  # its own namespace: no clash; given, so its IPAM names the gateway
        "172.17.0.1/16",
        "--userland-proxy-path",
        str(_proxy_wrapper(workdir)),
        "--config-file",
        str(workdir / "daemon.json"),
    ]
    (workdir / "daemon.json").write_text("{}")
    if mirror:
        argv += ["--registry-mirror", mirror]
    for host in insecure:
        argv += ["--insecure-registry", host]
    log = open(workdir / "dockerd.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    try:
        _in_own_netns(process.pid)
        link, address = _host_link(process.pid, route_out=egress)
    except EnvironmentProblem:
        process.kill()
        process.wait()
        raise
    daemon = RunningDockerd(sock, workdir, process, link, address)
    try:
        ports = set()
        for url in [mirror or "", *insecure]:
            parts = urlsplit(url if "//" in url else f"//{url}")
            if parts.port and (parts.hostname or "").startswith("127."):
                ports.add(parts.port)
        for port in sorted(ports):
            daemon.relays.append(_relay_in(daemon.netns, port))
    except EnvironmentProblem:
        daemon.stop()
        raise
    try:
        await_ping("dockerd", process, sock, workdir / "dockerd.log", timeout, daemon.stop)
    except EnvironmentProblem:
        daemon.stop()  # its relays, and whatever it started before it died
        raise
    return daemon
