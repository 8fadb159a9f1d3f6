"""Where a Docker-compatible engine may listen on this machine, and whether Podman is the one
that answers there: read both when the backend is chosen (``backends``) and when the Docker
backend connects (``docker.engine``), so that the two agree and neither imports the other.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["docker_sockets", "podman_at", "podman_version"]


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


def podman_version(version: Mapping[str, Any]) -> str | None:
    """Podman's version when an engine's ``/version`` answer is Podman's (a component named
    "Podman Engine"), else None: Podman serves the Docker API but not the BuildKit session the
    docker command line builds through, so builds go through its API instead."""
    for component in version.get("Components") or []:
        if "podman" in str(component.get("Name", "")).lower():
            return str(component.get("Version") or version.get("Version") or "?")
    return None


def podman_at(url: str, timeout: float = 2.0) -> str | None:
    """Podman's version when Podman answers on the local socket ``url`` (one plain HTTP request,
    for the report header, which must not load the docker package); None for anything else,
    including a remote engine or no answer."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return None
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(unquote(parts.path))
            sock.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    _, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return podman_version(answer) if isinstance(answer, dict) else None
