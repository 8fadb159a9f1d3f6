"""Debian's ``docker-registry`` on 127.0.0.1 with throwaway storage."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import subprocess
import time
from pathlib import Path

from .errors import EnvironmentProblem, stderr_tail
from .tools import end, require

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclasses.dataclass
class RunningRegistry:
    """A registry process: ``url`` is ``http://127.0.0.1:PORT``, ``host`` is ``127.0.0.1:PORT``."""

    port: int
    workdir: Path
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        end(self.process, grace=5)


@dataclasses.dataclass
class SeededRegistry:
    """A registry someone else started and seeded (``PYCONTAIN_TEST_REGISTRY``): what a
    rootless test run uses, since starting and seeding one needs root (debootstrap)."""

    url: str

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[-1].rstrip("/")

    def stop(self) -> None:
        """Not ours to stop."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def answers(host: str, port: int) -> bool:
    """True when ``GET /v2/`` answers 200 (a registry speaking the distribution API)."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=1)
        conn.request("GET", "/v2/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def start_registry(workdir: Path, port: int | None = None, timeout: float = 20) -> RunningRegistry:
    """Start a registry storing under ``workdir``; return once ``/v2/`` answers."""
    binary = require("docker-registry")
    workdir = Path(workdir)
    (workdir / "storage").mkdir(parents=True, exist_ok=True)
    if port is not None and _port_taken(port):
        raise EnvironmentProblem(f"docker-registry: port 127.0.0.1:{port} is already in use")
    port = port or free_port()
    config = workdir / "config.yml"
    config.write_text(CONFIG.format(storage=workdir / "storage", port=port))
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [binary, "serve", str(config)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    registry = RunningRegistry(port, workdir, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EnvironmentProblem(
                f"docker-registry exited {process.returncode} at start: "
                f"{stderr_tail((workdir / 'registry.log').read_bytes())}"
            )
        if answers("127.0.0.1", port):
            return registry
        time.sleep(0.05)
    registry.stop()
    raise EnvironmentProblem(
        f"docker-registry did not answer on {registry.url}/v2/ within "
        f"{timeout:.0f}s: {stderr_tail((workdir / 'registry.log').read_bytes())}"
    )
