"""What the benchmark starts and stops: the seeded registry, a private dockerd, a private
podman (the test session's set-up), the engines. One ``Env`` per run; ``close()`` stops
everything it started."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DOCKER_CLI = "/usr/bin/docker"  # Debian's docker.io 20.10 client (BuildKit with DOCKER_BUILDKIT)
IMAGE = "busybox"


def skipped(reason: str) -> None:
    print(f"skipped: {reason}", file=sys.stderr, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Env:
    """Starts lazily what a measurement asks for; ``close()`` stops it all, newest first."""

    def __init__(self, workdir: Path | None = None, registry: Any = None):
        """``registry``: a running seeded registry to use (and leave running)."""
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pycontain-bench-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.stack = contextlib.ExitStack()
        self._registry: Any = registry
        self._dockerd: Any = None
        self._dockerd_error: str | None = None
        self._native: Any = None
        self._docker_backend: Any = None
        self._podman: Any = None
        self._podman_error: str | None = None
        self.saved_environ = {k: os.environ.get(k) for k in (
            "PYCONTAIN_REGISTRY_MIRROR", "PYCONTAIN_CACHE_DIR", "PYCONTAIN_STATE_DIR")}

    # --- the registry and the pycontain settings ---

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from testenv.images import seed
            from testenv.registry import start_registry

            registry = start_registry(self.workdir / "registry")
            self.stack.callback(registry.stop)
            seed(registry.host)
            self._registry = registry
            os.environ["PYCONTAIN_REGISTRY_MIRROR"] = registry.url
            os.environ["PYCONTAIN_CACHE_DIR"] = str(self.workdir / "cache")
            os.environ.setdefault("PYCONTAIN_STATE_DIR", "/run/pycontain-bench")
            self.stack.callback(self._restore_environ)
        return self._registry

    def _restore_environ(self) -> None:
        for key, value in self.saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def settings(self, cache_dir: Path | None = None) -> Any:
        """Settings with the registry as mirror; ``cache_dir`` gives a store of its own."""
        from pytest_pycontain.config import resolve

        environ = dict(os.environ)
        environ["PYCONTAIN_REGISTRY_MIRROR"] = self.registry.url
        environ["PYCONTAIN_CACHE_DIR"] = str(cache_dir or self.workdir / "cache")
        environ.setdefault("PYCONTAIN_STATE_DIR", "/run/pycontain-bench")
        return resolve(environ=environ)

    # --- engines ---

    @property
    def native(self) -> Any:
        if self._native is None:
            from pytest_pycontain.native.engine import NativeEngine

            engine = NativeEngine(self.settings())
            self.stack.callback(engine.close)
            engine.pull(IMAGE)
            self._native = engine
        return self._native

    @property
    def dockerd(self) -> Any:
        """The private dockerd, or None (and a line why) when it can't start here."""
        if self._dockerd is None and self._dockerd_error is None:
            from testenv.dockerd import start_dockerd
            from testenv.errors import EnvironmentProblem

            try:
                daemon = start_dockerd(self.workdir / "dockerd", mirror=self.registry.url,
                                       insecure=[self.registry.host])
            except EnvironmentProblem as exc:
                self._dockerd_error = str(exc)
                skipped(f"no private dockerd: {exc}")
                return None
            self.stack.callback(daemon.stop)
            self.stack.callback(self._docker_tidy, daemon)
            self._dockerd = daemon
            self.docker(["pull", "-q", IMAGE])
        return self._dockerd

    def docker(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run Debian's docker CLI against the private dockerd; raise with its stderr."""
        result = subprocess.run([DOCKER_CLI, *argv], env=self._dockerd.env(),
                                capture_output=True, text=True, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(argv)}: exit {result.returncode}: "
                               f"{result.stderr.strip()[-500:]}")
        return result

    def _docker_tidy(self, daemon: Any) -> None:
        """Remove whatever the benchmark left in the private dockerd before it stops."""
        env = daemon.env()
        ids = subprocess.run([DOCKER_CLI, "ps", "-aq"], env=env, capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run([DOCKER_CLI, "rm", "-f", *ids], env=env, capture_output=True)
        subprocess.run([DOCKER_CLI, "network", "prune", "-f"], env=env, capture_output=True)

    @property
    def docker_backend(self) -> Any:
        if self._docker_backend is None and self.dockerd is not None:
            from pytest_pycontain.docker import DockerEngine

            engine = DockerEngine(self.settings(), base_url=self.dockerd.host)
            self.stack.callback(engine.close)
            self._docker_backend = engine
        return self._docker_backend

    # --- podman, on private storage ---

    @property
    def podman(self) -> Any:
        """The test session's private podman (``testenv.podman.PodmanHome``: its storage, its
        configuration with the local registry as docker.io mirror, a mount namespace of its
        own), with busybox pulled; None (and a line why) when it can't be had here."""
        if self._podman is None and self._podman_error is None:
            if not shutil.which("podman"):
                note("podman is missing: apt-get install -y podman")
                subprocess.run(["apt-get", "install", "-y", "-q", "podman"],
                               capture_output=True, check=False)
            from testenv.errors import EnvironmentProblem
            from testenv.podman import open_home

            try:
                home = open_home(self.workdir / "podman", self.registry.host)
            except EnvironmentProblem as exc:
                self._podman_error = str(exc)
                skipped(f"no private podman: {exc}")
                return None
            self.stack.callback(home.close)
            self._podman = home
            result = home.run("pull", "-q", f"docker.io/library/{IMAGE}", timeout=600)
            if result.returncode != 0:
                self._podman_error = f"podman pull failed: {result.stderr.strip()[-300:]}"
                skipped(self._podman_error)
                return None
        return self._podman

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            if self._tmp is not None:
                from testenv.dockerd import unmount_below

                unmount_below(self.workdir)
                self._tmp.cleanup()

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
