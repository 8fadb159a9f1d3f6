"""A private ``dockerd`` (Debian's docker.io) on its own socket, data root and exec root.

It uses the test registry as its Docker Hub mirror, leaves the host's firewall alone
(``--iptables=false``) and removes the ``docker0`` bridge it made when it stops.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from pathlib import Path

from .errors import EnvironmentProblem, stderr_tail
from .tools import require


@dataclasses.dataclass
class RunningDockerd:
    """``host`` is the ``DOCKER_HOST`` value (``unix:///.../docker.sock``)."""

    socket_path: Path
    workdir: Path
    process: subprocess.Popen
    made_docker0: bool

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

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        unmount_below(self.workdir)
        if self.made_docker0:
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True, check=False)


def unmount_below(directory: Path) -> None:
    """Lazily unmount everything dockerd left mounted below ``directory`` (netns, overlays)."""
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts]
    for target in reversed(targets):
        target = target.replace("\\040", " ")
        if target.startswith(prefix):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


def start_dockerd(
    workdir: Path, *, mirror: str | None = None, insecure: list[str] = (), timeout: float = 60
) -> RunningDockerd:
    """Start dockerd under ``workdir``; return once ``/_ping`` answers on its socket."""
    binary = require("dockerd")
    if os.geteuid() != 0:
        raise EnvironmentProblem("dockerd: the private test dockerd needs root")
    workdir = Path(workdir)
    for sub in ("data", "exec", "client"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    # unix socket paths are limited to 108 bytes: keep it short
    sock = Path(f"/tmp/pycontain-dockerd-{os.getpid()}-{time.monotonic_ns() % 100000}.sock")
    argv = [
        binary,
        "--host",
        f"unix://{sock}",
        "--data-root",
        str(workdir / "data"),
        "--exec-root",
        str(workdir / "exec"),
        "--pidfile",
        str(workdir / "dockerd.pid"),
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--config-file",
        str(workdir / "daemon.json"),
    ]
    (workdir / "daemon.json").write_text("{}")
    if mirror:
        argv += ["--registry-mirror", mirror]
    for host in insecure:
        argv += ["--insecure-registry", host]
    made_docker0 = not _link_exists("docker0")
    log = open(workdir / "dockerd.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    daemon = RunningDockerd(sock, workdir, process, made_docker0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EnvironmentProblem(
                f"dockerd exited {process.returncode} at start: "
                f"{stderr_tail((workdir / 'dockerd.log').read_bytes())}"
            )
        if _answers(sock):
            return daemon
        time.sleep(0.1)
    daemon.stop()
    raise EnvironmentProblem(
        f"dockerd did not answer on {sock} within {timeout:.0f}s: "
        f"{stderr_tail((workdir / 'dockerd.log').read_bytes())}"
    )
