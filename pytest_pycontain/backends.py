"""Which engine runs here, decided from cheap facts only (no engine is started or imported).

The native engine needs Linux, and root or user namespaces (rootless mode, ``idmap.py``);
otherwise a Docker-compatible socket is used when one exists.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import idmap
from .dockerhost import docker_sockets, podman_at

if TYPE_CHECKING:
    from .config import Settings
    from .engine import Engine


def native_blocker() -> str | None:
    """Why the native engine cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the native engine needs Linux (this is {sys.platform})"
    if idmap.host_uid() != 0:  # also inside rootless mode's namespace, where we are "root"
        blockers = idmap.blockers()
        if blockers:
            return ("the native engine needs root or user namespaces (rootless mode): "
                    + "; ".join(blockers))
    if not Path("/proc/self/ns/pid").exists():
        return "this kernel has no namespaces in /proc/self/ns"
    return None


def rootless_mode() -> str | None:
    """``rootless: <mapping>`` when the native engine would run rootless here, else None."""
    if idmap.host_uid() == 0:
        return None
    mapping = idmap.plan()
    line = f"rootless: {mapping.describe()}"
    return line + (f" ({mapping.why_single})" if mapping.why_single else "")


def choose(requested: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(backend, reason)`` for the ``backend`` setting ``requested``."""
    blocker = native_blocker()
    rootless = rootless_mode() if blocker is None else None
    if requested == "native":
        if rootless:
            return "native", f"requested; {rootless}"
        return "native", "requested" + (f" (but {blocker})" if blocker else "")
    if requested == "docker":
        sockets = docker_sockets(environ)
        where = sockets[0] if sockets else "no Docker socket found"
        return "docker", f"requested ({where})"
    if blocker is None:
        if rootless:
            return "native", f"{rootless}; auto: Linux with user namespaces, daemonless"
        return "native", "auto: Linux with root, daemonless"
    sockets = docker_sockets(environ)
    if sockets:
        return "docker", f"auto: {blocker}; using {sockets[0]}"
    return "none", f"auto: {blocker}, and no Docker socket was found"


def header(requested: str, environ: Mapping[str, str] | None = None) -> str:
    """The report header's line for the built-in choice, from cheap facts only."""
    backend, reason = choose(requested, environ)
    line = f"engine {backend} ({reason}); started on first use"
    if backend == "docker":  # which builder: the docker CLI's BuildKit, or the API's classic
        sockets = docker_sockets(environ)
        podman = podman_at(sockets[0]) if sockets else None
        if podman:
            return line + f"; Podman {podman} answers there: builds with its own builder"
        from .docker import builder

        found = builder()
        line += (f"; builds with BuildKit through {found[0]}" if found
                 else "; builds with the engine's classic builder (no docker CLI with BuildKit)")
    return line


def make(settings: Settings) -> Engine | None:
    """The built-in engine for ``settings.backend`` (``None`` when none can run here: the
    caller says why); engines reap what dead owners left when they start."""
    backend, _ = choose(settings.backend)
    if backend == "native":
        from .native.engine import NativeEngine

        return NativeEngine(settings)
    if backend == "docker":
        from .docker import DockerEngine

        return DockerEngine(settings)
    return None


def prepare_workers(requested: str) -> None:
    """Under pytest-xdist, the controller (one thread still) enters rootless mode's user
    namespace for its workers, which have execnet's threads from the start and so cannot
    (a few milliseconds, only when the native engine would run rootless)."""
    if idmap.host_uid() == 0 or choose(requested)[0] != "native":
        return
    from .native.userns import enter_for_children

    enter_for_children()
