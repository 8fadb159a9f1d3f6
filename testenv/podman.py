"""A private podman (Debian's): its own storage, configuration and run directories, and a
``podman system service`` on its own socket.

The Docker backend talks to the service as to any Docker-compatible socket. Everything podman
keeps lives below one work directory: its storage (graphroot, runroot, tmp_dir, volumes), its
network definitions, a registries.conf whose docker.io mirror is the test registry, and a
containers.conf of its own (lower ulimits: podman as root raises ``nofile`` to 1048576, which
fails in a container without CAP_SYS_RESOURCE).

Podman as root keeps some state at fixed paths whatever its configuration says: netavark's
address leases and aardvark-dns's files in /run/containers/networks, network namespaces in
/run/netns, runc's state in /run/runc. Two test sessions on one machine would share them (and
one's clean-up would pull them from under the other), so every podman command runs in a mount
namespace of its own (held by one process, ``PodmanHome.holder``) whose /run is a tmpfs with the
host's entries bound back in, but for those. Its networks use bridges and subnets of their own
(a default network of its own, subnets from a /16 no other session is likely to pick) in the
host's network namespace, where published ports are reached as with any podman.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .dockerd import await_ping, unmount_below
from .errors import EnvironmentProblem, stderr_tail
from .tools import end, require

REGISTRIES_CONF = """\
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "{host}"
insecure = true

[[registry]]
location = "{host}"
insecure = true
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}/graph"
runroot = "{root}/run"
"""

# Limits lowered, never raised, are always allowed; k8s-file logs and file events need no
# journald; cgroupfs needs no systemd.
CONTAINERS_CONF = """\
[containers]
log_driver = "k8s-file"
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]


[network]
network_backend = "netavark"
network_config_dir = "{root}/networks"
default_subnet_pools = [{{"base" = "{pool}", "size" = 24}}]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
{init}tmp_dir = "{root}/tmp"
"""


# Run as the holder of the mount namespace: the host's /run seen at $1, a tmpfs over /run with
# the host's entries bound back in but podman's fixed-path state, then wait to be killed.
NAMESPACE_SETUP = r"""
set -eu
host_run=$1
mount --rbind /run "$host_run"
mount -t tmpfs -o mode=0755,nosuid,nodev pycontain-podman-run /run
for entry in "$host_run"/* "$host_run"/.[!.]*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    name=${entry##*/}
    case "$name" in containers|netns|runc|crun|libpod|podman) continue ;; esac
    if [ -L "$entry" ]; then
        ln -s "$(readlink "$entry")" "/run/$name"
    elif [ -d "$entry" ]; then
        mkdir "/run/$name" && mount --rbind "$entry" "/run/$name"
    else
        : > "/run/$name" && mount --bind "$entry" "/run/$name"
    fi
done
umount -l "$host_run"
mkdir -p /run/containers /run/netns
echo ready
exec sleep infinity
"""

# The /16s a session's networks come from: clear of the usual private ranges' common users
# (podman's own 10.88-10.127, the native engine's 10.208.0.0/12).
SUBNET_BASES = range(128, 208)


@dataclasses.dataclass
class PodmanHome:
    """A private podman's configuration (below ``root``) and the mount namespace all its
    commands run in; ``command()`` is the argv prefix that runs ``podman`` there."""

    root: Path
    holder: subprocess.Popen

    @property
    def mount_ns(self) -> str:
        return f"/proc/{self.holder.pid}/ns/mnt"

    def command(self) -> list[str]:
        """``podman`` in the private mount namespace (pass ``env()`` as its environment)."""
        return ["nsenter", f"--mount={self.mount_ns}", "--", "podman"]

    def env(self) -> dict[str, str]:
        """The environment that points podman at this home's configuration files."""
        return podman_env(self.root)

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``podman ARGV`` here, its output captured, never raising on its exit status."""
        return subprocess.run([*self.command(), *argv], env=self.env(), capture_output=True,
                              text=True, check=False, timeout=timeout)

    def close(self) -> None:
        """Remove every container, pod, network, image and volume, end every process of the
        namespace (conmons, aardvark-dns) and the namespace with them, and tidy the firewall
        (``tidy_netavark``)."""
        if self.holder.poll() is None:
            for argv in (["rm", "-af", "-t", "0"], ["network", "prune", "-f"],
                         ["system", "reset", "-f"]):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.run(*argv)
            _kill_namespace(self.holder)
        unmount_below(self.root)
        tidy_netavark()


def _kill_namespace(holder: subprocess.Popen) -> None:
    """SIGKILL every process in the holder's mount namespace (conmon outlives an exec session
    by up to its ``--exit-delay``, aardvark-dns its last network), then the holder."""
    try:
        ours = os.readlink(f"/proc/{holder.pid}/ns/mnt")
    except OSError:
        ours = None
    if ours is not None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == holder.pid:
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") != ours:
                    continue
            except OSError:
                continue
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
    if holder.poll() is None:
        holder.kill()
    holder.wait()


def _free_base() -> ipaddress.IPv4Network:
    """A /16 of 10.128.0.0-10.207.255.255 that no address or route here is in."""
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                           check=False).stdout
    shown += subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=False).stdout
    taken = []
    for word in shown.split():
        with contextlib.suppress(ValueError):
            if word[:1].isdigit() and "." in word:
                taken.append(ipaddress.ip_network(word, strict=False))
    bases = [ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in SUBNET_BASES]
    free = [b for b in bases if not any(b.overlaps(t) for t in taken if t.prefixlen)]
    if not free:
        raise EnvironmentProblem("podman: every /16 of 10.128.0.0-10.207.255.255 is in use here")
    return random.choice(free)


def podman_env(root: Path) -> dict[str, str]:
    """The environment that points podman at the configuration files below ``root``."""
    return {
        **os.environ,
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "TMPDIR": str(root / "tmp"),
    }


def write_config(root: Path, registry_host: str) -> None:
    """The storage, registries, containers and default-network configuration of a private
    podman: its default network ("podman") on a bridge and a /24 of its own, and the subnets
    of the networks it makes from the same free /16."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    (root / "networks").mkdir(exist_ok=True)
    (root / "registries.conf").write_text(REGISTRIES_CONF.format(host=registry_host))
    (root / "storage.conf").write_text(STORAGE_CONF.format(root=root))
    # Debian's podman looks for catatonit as its --init, which it does not install; Docker's
    # docker-init (Debian's tini-static, bind-mounted into images without a libc) does the job
    init = "" if Path("/usr/libexec/podman/catatonit").exists() or not Path(
        "/usr/bin/tini-static").exists() else 'init_path = "/usr/bin/tini-static"\n'
    base = _free_base()
    (root / "containers.conf").write_text(CONTAINERS_CONF.format(root=root, init=init,
                                                                 pool=base))
    default = next(base.subnets(new_prefix=24))
    (root / "networks" / "podman.json").write_text(json.dumps({
        "name": "podman",
        "id": secrets.token_hex(32),
        "driver": "bridge",
        "network_interface": f"pcp{secrets.token_hex(4)}",
        "created": "2000-01-01T00:00:00Z",
        "subnets": [{"subnet": str(default), "gateway": str(next(default.hosts()))}],
        "ipv6_enabled": False,
        "internal": False,
        "dns_enabled": False,
        "ipam_options": {"driver": "host-local"},
    }, indent=2))


def open_home(root: Path, registry_host: str, timeout: float = 30) -> PodmanHome:
    """Write a private podman's configuration below ``root`` and make its mount namespace."""
    for tool in ("podman", "nsenter", "setpriv"):
        require(tool)
    if os.geteuid() != 0:
        raise EnvironmentProblem("podman: the private test podman runs as root")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    write_config(root, registry_host)
    (root / "host-run").mkdir(exist_ok=True)
    tidy_netavark()  # a stale DNAT would take the ports of this session's tests
    holder = subprocess.Popen(
        [require("unshare"), "--mount", "--propagation", "slave", "--", "setpriv",
         "--pdeathsig", "KILL", "--", "sh", "-c", NAMESPACE_SETUP, "sh", str(root / "host-run")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    home = PodmanHome(root, holder)
    try:
        ready = _read_line(holder, timeout)
    except BaseException:
        _kill_namespace(holder)
        raise
    if ready != "ready":
        _kill_namespace(holder)
        raise EnvironmentProblem(f"podman: no mount namespace of its own: "
                                 f"{stderr_tail(holder.stderr.read() or b'')}")
    return home


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line ``process`` prints, or "" when it ends or ``timeout`` passes first."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline().decode(errors="replace").strip()


@dataclasses.dataclass
class RunningPodman:
    """``host`` is the ``DOCKER_HOST`` value (``unix:///.../podman.sock``)."""

    socket_path: Path
    home: PodmanHome
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def workdir(self) -> Path:
        return self.home.root

    def stop(self) -> None:
        """Stop the service, then close its home (which removes what it made)."""
        end(self.process)
        self.home.close()
        self.socket_path.unlink(missing_ok=True)


# netavark's chains of one network (NETAVARK-<id>) and of one container's DNAT (NETAVARK-DN-<id>)
NETWORK_CHAIN = re.compile(r"NETAVARK-(DN-)?[0-9A-F]{13}")
# the bridges of netavark's networks (podmanN) and of a private podman's default one (pcp<hex>)
LEFT_BRIDGE = re.compile(r"podman[0-9]+|pcp[0-9a-f]{8}")


def _iptables(*argv: str) -> str:
    done = subprocess.run(["iptables", *argv], capture_output=True, text=True, check=False)
    return done.stdout


def netavark_rules_in_use() -> bool:
    """Whether netavark's chains hold rules of a live network (another podman's): a rule in a
    chain of a network, or one for a network in its forwarding, isolation or DNAT chains."""
    if not shutil.which("iptables"):
        return False
    static = {"NETAVARK-HOSTPORT-MASQ", "NETAVARK-HOSTPORT-SETMARK"}
    for table in ("filter", "nat"):
        for rule in _iptables("-t", table, "-S").splitlines():
            words = rule.split()
            if words[:1] == ["-A"] and "NETAVARK" in words[1] and words[1] not in static:
                return True
    return False


def _empty_bridge(name: str) -> bool:
    ports = Path("/sys/class/net") / name / "brif"
    return ports.is_dir() and not any(ports.iterdir())


def live_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this network namespace's interfaces but empty bridges: a podman
    network's bridge carries its subnet while a container is on it (a bridge a killed podman
    left has no port, and none of its containers is there)."""
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                           check=False).stdout
    networks = []
    for line in shown.splitlines():
        words = line.split()
        if "inet" in words and not _empty_bridge(words[1]):
            networks.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    return networks


def _dead_interfaces(words: list[str]) -> bool:
    """Whether a rule (its words) names (``-i``/``-o``) an interface that is gone or an empty
    bridge."""
    names = [words[n + 1] for n, word in enumerate(words[:-1]) if word in ("-i", "-o")]
    return any(not Path("/sys/class/net", name).exists() or _empty_bridge(name)
               for name in names)


def _rule_networks(words: list[str]) -> list[ipaddress.IPv4Network]:
    """The container networks a netavark rule (its words) is for: its ``-s``/``-d`` subnets
    and its DNAT target (negated matches and loopback, multicast or public addresses are not a
    network's)."""
    found = []
    for n, word in enumerate(words[:-1]):
        if word not in ("-s", "-d", "--to-destination") or (n and words[n - 1] == "!"):
            continue
        with contextlib.suppress(ValueError):
            network = ipaddress.IPv4Network(words[n + 1].split(":")[0], strict=False)
            if network.is_private and not (network.is_loopback or network.is_multicast):
                found.append(network)
    return found


def prune_dead_netavark_rules() -> None:
    """Remove netavark's rules for networks whose bridge is gone from this host or left with
    no container on it (a podman killed before its clean-up leaves them), with the chains of
    those networks and their bridges.

    Such a rule is not harmless: a stale DNAT of a published port, ``127.0.0.1:PORT`` to a
    container long gone, takes every later connection to that port, whoever listens there
    now. Rules of live networks (another podman's) stay.
    """
    if not shutil.which("iptables"):
        return
    live = live_networks()

    def dead(words: list[str]) -> bool:
        networks = _rule_networks(words)
        gone = bool(networks) and not any(n.overlaps(up) for n in networks for up in live)
        return gone or _dead_interfaces(words)

    for table in ("filter", "nat"):
        rules = [shlex.split(rule) for rule in _iptables("-t", table, "-S").splitlines()]
        chains = {words[1] for words in rules
                  if words[:1] == ["-N"] and NETWORK_CHAIN.fullmatch(words[1])}
        alive = {words[1] for words in rules if words[:1] == ["-A"] and words[1] in chains
                 and _rule_networks(words) and not dead(words)}
        gone = chains - alive  # a network's chains: dead once none of it names a live network
        for words in rules:
            if words[:1] != ["-A"] or words[1] in gone or not any("NETAVARK" in w for w in words):
                continue
            target = words[words.index("-j") + 1] if "-j" in words[:-1] else None
            if target in gone or dead(words):
                _iptables("-t", table, "-D", *words[1:])
        for chain in gone:
            _iptables("-t", table, "-F", chain)
            _iptables("-t", table, "-X", chain)
    for bridge in Path("/sys/class/net").iterdir():  # the bridges of those networks
        if LEFT_BRIDGE.fullmatch(bridge.name) and _empty_bridge(bridge.name):
            subprocess.run(["ip", "link", "delete", bridge.name], capture_output=True,
                           check=False)


def tidy_netavark() -> None:
    """Remove what netavark left in the host's firewall for networks that are gone, and its
    chains too once no live network has a rule in them (netavark adds them and never removes
    them)."""
    prune_dead_netavark_rules()
    if not netavark_rules_in_use():
        remove_netavark_chains()


def remove_netavark_chains() -> None:
    """Undo what netavark added to the host's firewall: the jumps into its chains, then them."""
    if not shutil.which("iptables"):
        return
    for table in ("filter", "nat"):
        rules = _iptables("-t", table, "-S").splitlines()
        for rule in rules:
            words = rule.split()
            if words[:1] == ["-A"] and "NETAVARK" not in words[1] and "NETAVARK" in rule:
                _iptables("-t", table, "-D", *shlex.split(rule)[1:])
        chains = [r.split()[1] for r in rules if r.startswith("-N ") and "NETAVARK" in r]
        for chain in chains:
            _iptables("-t", table, "-F", chain)
        for chain in chains:
            _iptables("-t", table, "-X", chain)


def start_podman(workdir: Path, *, registry_host: str, timeout: float = 60) -> RunningPodman:
    """Start ``podman system service`` in a private home under ``workdir``; return once
    ``/_ping`` answers."""
    home = open_home(workdir, registry_host)
    # unix socket paths are limited to 108 bytes: keep it short
    sock = Path(f"/tmp/pycontain-podman-{os.getpid()}-{time.monotonic_ns() % 100000}.sock")
    log = open(home.root / "podman.log", "wb")  # noqa: SIM115 - lives as long as the process
    try:
        process = subprocess.Popen(
            [*home.command(), "system", "service", "--time=0", f"unix://{sock}"],
            env=home.env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        home.close()
        raise
    finally:
        log.close()
    service = RunningPodman(sock, home, process)
    await_ping("podman system service", process, sock, home.root / "podman.log", timeout,
               service.stop)
    return service
