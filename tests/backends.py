"""The engines that the plugin's own tests run inner sessions on (``backend`` and its kin in
conftest.py): their command-line arguments and how each finds what a session left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Imported here, before any pytester: pytester unloads the modules that a test imported first,
# and a second import of requests under the first one's leftovers breaks its cookie jars.
try:
    import docker
except ImportError:  # the Docker half skips
    docker = None

from pytest_pycontain.backends import native_blocker

NEEDS_ROOT = pytest.mark.skipif(  # root, or rootless (user namespaces)
    native_blocker() is not None, reason=native_blocker() or "")
SESSION_LABEL = "pycontain.session"
REUSE_LABEL = "pycontain.reuse.key"


class Backend:
    """One engine the inner sessions run on: its command-line arguments and its leftovers."""

    name = "native"

    def __init__(self) -> None:
        self.args: tuple[str, ...] = ("-p", "no:cacheprovider", "--pycontain-backend=native")

    def assert_no_leftovers(self) -> None:
        """No mounts left below the state and cache directories, and no containers of ours in
        the state directory."""
        from pytest_pycontain.native import state

        root = os.environ["PYCONTAIN_STATE_DIR"]
        ours = (root.rstrip("/") + "/", os.environ["PYCONTAIN_CACHE_DIR"].rstrip("/") + "/")
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        assert [m for m in mounts if m.startswith(ours)] == []
        assert [c for c in state.containers(root)
                if c["owner"].startswith(str(os.getpid()))] == []

    def reused(self) -> list[str]:
        """The containers kept for reuse across runs (``run(..., reuse=True)``)."""
        from pytest_pycontain.native import state

        return sorted(r["container"] for r in state.containers(os.environ["PYCONTAIN_STATE_DIR"])
                      if r.get("reuse"))

    def volumes(self) -> list[str]:
        """The reused containers' named volumes ("data", a stack's "<project>_data")."""
        root = os.environ["PYCONTAIN_STATE_DIR"]
        return sorted(p.name for p in Path(root, "volumes").glob("*data-*"))

    def networks(self) -> list[str]:
        """Networks kept across runs and the runs' own, where they outlive a run (none)."""
        return []

    def prune_reused(self) -> None:
        """Remove them, as a user does (``pycontain prune --reused``)."""
        subprocess.run([sys.executable, "-m", "pytest_pycontain", "prune", "--reused",
                        "--backend", self.name], check=True, capture_output=True, timeout=120)


class DockerBackend(Backend):
    """The private dockerd as ``DOCKER_HOST``; sessions labelled before this test are not ours
    to judge (an outer fixture may hold some)."""

    name = "docker"

    def __init__(self, host: str) -> None:
        self.host = host
        self.args = ("-p", "no:cacheprovider", "--pycontain-backend=docker")
        self.api = docker.APIClient(base_url=host, version="auto")
        self.before = self.sessions()

    def labelled(self, session: str | None = None) -> list[str]:
        """Containers, networks and volumes labelled with ``session`` (or any session)."""
        label = {"label": f"{SESSION_LABEL}={session}" if session else SESSION_LABEL}
        found = [f"container {c['Names'][0]} ({c['Labels'][SESSION_LABEL]})"
                 for c in self.api.containers(all=True, filters=label)]
        found += [f"network {n['Name']} ({n['Labels'][SESSION_LABEL]})"
                  for n in self.api.networks(filters=label)]
        found += [f"volume {v['Name']} ({v['Labels'][SESSION_LABEL]})"
                  for v in (self.api.volumes(filters=label) or {}).get("Volumes") or []]
        return found

    def sessions(self) -> set[str]:
        return {entry.rsplit("(", 1)[1].rstrip(")") for entry in self.labelled()}

    def assert_no_leftovers(self) -> None:
        new = self.sessions() - self.before
        assert not new, [x for s in new for x in self.labelled(s)]

    def reused(self) -> list[str]:
        return sorted(c["Id"] for c in self.api.containers(
            all=True, filters={"label": REUSE_LABEL}))

    def networks(self) -> list[str]:
        """Every network of ours: the runs' and the ones kept for reused containers."""
        return sorted(n["Id"] for n in self.api.networks(filters={"label": SESSION_LABEL}))

    def volumes(self) -> list[str]:
        listed = self.api.volumes(filters={"label": REUSE_LABEL}) or {}
        return sorted(v["Name"] for v in listed.get("Volumes") or [])
