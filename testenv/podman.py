"""A private ``podman system service`` (Debian's podman) on its own socket and storage.

The Docker backend talks to it as to any Docker-compatible socket. Everything podman keeps lives
below one work directory: its storage (graphroot, runroot), its network definitions, a
registries.conf whose docker.io mirror is the test registry, and a containers.conf of its own
(lower ulimits: podman as root raises ``nofile`` to 1048576, which fails in a container without
CAP_SYS_RESOURCE). ``stop()`` removes what it made, the firewall chains netavark added included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .dockerd import await_ping, unmount_below
from .errors import EnvironmentProblem
from .tools import require

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

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
{init}tmp_dir = "{root}/tmp"
"""


@dataclasses.dataclass
class RunningPodman:
    """``host`` is the ``DOCKER_HOST`` value (``unix:///.../podman.sock``)."""

    socket_path: Path
    workdir: Path
    process: subprocess.Popen
    chains_before: bool
    made_dirs: list[Path]  # host directories podman's network tools make, absent before

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def env(self) -> dict[str, str]:
        """Environment for the ``podman`` command line on this service's storage."""
        return podman_env(self.workdir)

    def stop(self) -> None:
        """Remove the containers, pods and networks it holds, stop it, undo its firewall
        chains (when there were none before) and its mounts."""
        env = self.env()
        for argv in (["rm", "-af", "-t", "0"], ["network", "prune", "-f"]):
            subprocess.run(["podman", *argv], env=env, capture_output=True, check=False,
                           timeout=120)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        subprocess.run(["podman", "system", "reset", "-f"], env=env, capture_output=True,
                       check=False, timeout=120)
        _kill_leftovers(self.workdir)
        unmount_below(self.workdir)
        if not self.chains_before:
            remove_netavark_chains()
        for directory in self.made_dirs:  # /run/netns only when empty: others mount there
            if directory.name == "netns":
                with contextlib.suppress(OSError):
                    directory.rmdir()
            else:
                shutil.rmtree(directory, ignore_errors=True)
        self.socket_path.unlink(missing_ok=True)


def _kill_leftovers(workdir: Path) -> None:
    """Kill what podman started and left below ``workdir``: conmon outlives an exec session by
    up to its ``--exit-delay`` (300 s). They are found by the private storage in their argv."""
    marker = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in argv:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


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
    """The storage, registries and containers configuration of a private podman."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    (root / "networks").mkdir(exist_ok=True)
    (root / "registries.conf").write_text(REGISTRIES_CONF.format(host=registry_host))
    (root / "storage.conf").write_text(STORAGE_CONF.format(root=root))
    # Debian's podman looks for catatonit as its --init, which it does not install; Docker's
    # docker-init (Debian's tini-static, bind-mounted into images without a libc) does the job
    init = "" if Path("/usr/libexec/podman/catatonit").exists() or not Path(
        "/usr/bin/tini-static").exists() else 'init_path = "/usr/bin/tini-static"\n'
    (root / "containers.conf").write_text(CONTAINERS_CONF.format(root=root, init=init))


def _iptables(*argv: str) -> str:
    done = subprocess.run(["iptables", *argv], capture_output=True, text=True, check=False)
    return done.stdout


def netavark_chains() -> bool:
    """Whether netavark's firewall chains are there (it adds them and never removes them)."""
    if not shutil.which("iptables"):
        return False
    return any("NETAVARK" in _iptables("-t", table, "-S") for table in ("filter", "nat"))


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
    """Start ``podman system service`` under ``workdir``; return once ``/_ping`` answers."""
    binary = require("podman")
    if os.geteuid() != 0:
        raise EnvironmentProblem("podman: the private test podman service runs as root")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(workdir, registry_host)
    # unix socket paths are limited to 108 bytes: keep it short
    sock = Path(f"/tmp/pycontain-podman-{os.getpid()}-{time.monotonic_ns() % 100000}.sock")
    chains_before = netavark_chains()
    # netavark keeps its address leases in /run/containers/networks and its namespaces in
    # /run/netns whatever the configuration says: removed at the end when they were not there
    made_dirs = [Path(d) for d in ("/run/containers", "/run/netns") if not Path(d).exists()]
    log = open(workdir / "podman.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [binary, "system", "service", "--time=0", f"unix://{sock}"],
        env=podman_env(workdir), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    service = RunningPodman(sock, workdir, process, chains_before, made_dirs)
    await_ping("podman system service", process, sock, workdir / "podman.log", timeout,
               service.stop)
    return service
