"""Where a Docker-compatible engine may listen on this machine: one list, read both when the
backend is chosen (``backends``) and when the Docker backend connects (``docker.engine``), so
that the two agree and neither imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["docker_sockets"]


def docker_sockets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Docker-compatible endpoints in the order tried: DOCKER_HOST, the system, rootless and
    Podman sockets."""
    environ = os.environ if environ is None else environ
    candidates = []
    if environ.get("DOCKER_HOST"):
        candidates.append(environ["DOCKER_HOST"])
    runtime = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    for path in (
        "/var/run/docker.sock",
        f"{runtime}/docker.sock",
        f"{runtime}/podman/podman.sock",
        "/run/podman/podman.sock",
        str(Path.home() / ".docker/run/docker.sock"),
    ):
        if Path(path).exists():
            candidates.append(f"unix://{path}")
    return candidates
