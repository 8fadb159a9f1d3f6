"""Finding the host tools the test environment needs, with one clear line when one is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import EnvironmentProblem, stderr_tail

PACKAGES = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "docker-proxy": "docker.io",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
    "podman": "podman",
}


def require(tool: str) -> str:
    """The path of ``tool``, or EnvironmentProblem naming the Debian package to install."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path is None:
        package = PACKAGES.get(tool, tool)
        raise EnvironmentProblem(
            f"`{tool}` is not installed: apt-get install {package} (or run .ci/run)"
        )
    return path


def run(argv: list[str], *, what: str, timeout: float = 600, **kwargs) -> str:
    """Run a command; on failure raise one line naming it, with the tail of its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(
            f"{what}: `{' '.join(argv)}` timed out after {timeout:.0f}s: "
            f"{stderr_tail(exc.stderr or b'')}"
        ) from None
    if done.returncode != 0:
        raise EnvironmentProblem(
            f"{what}: `{' '.join(map(str, argv))}` exited "
            f"{done.returncode}: {stderr_tail(done.stderr)}"
        )
    return done.stdout.decode("utf-8", "replace")


def end(process: subprocess.Popen, grace: float = 20) -> None:
    """Stop a daemon we started: SIGTERM, ``grace`` seconds to go, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cache_root() -> Path:
    """Where slow-to-make inputs (the debootstrapped debian rootfs) are kept between runs.

    Outside the repository so a fresh clone reuses it: ``$PYCONTAIN_TESTENV_CACHE``, else
    ``~/.cache/pycontain-testenv``.
    """
    import os

    return Path(
        os.environ.get("PYCONTAIN_TESTENV_CACHE") or Path.home() / ".cache" / "pycontain-testenv"
    )
