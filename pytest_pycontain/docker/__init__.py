"""The Docker Engine backend: the engine protocol over the Docker Engine API.

For users without Linux root (macOS, Windows, CI with a remote ``DOCKER_HOST``). One module per
job: ``client`` (connecting, and the one map from the ``docker`` package's errors to ours),
``labels`` (who owns what, and what a later run may reap), ``images`` and ``build`` (pulls, and
builds with BuildKit through the ``docker`` command line), ``containers`` (state, exec, files),
``networks`` (networks and their faults) and ``engine`` (``DockerEngine``, which ties them
together). The ``docker`` package and ``pyroute2`` are imported only inside the functions that
need them, so importing this package costs nothing.
"""

from __future__ import annotations

from .build import build_failure, builder, dockerfile_line
from .client import DEFAULT_HOST, map_error
from .containers import DockerContainer, listening
from .engine import DockerEngine
from .images import DockerImage
from .labels import KEPT_SUFFIX, LABEL_HOST, LABEL_NAME, LABEL_PID, LABEL_SESSION, LABEL_START
from .networks import DockerNetwork, in_netns

__all__ = [
    "DEFAULT_HOST",
    "KEPT_SUFFIX",
    "LABEL_HOST",
    "LABEL_NAME",
    "LABEL_PID",
    "LABEL_SESSION",
    "LABEL_START",
    "DockerContainer",
    "DockerEngine",
    "DockerImage",
    "DockerNetwork",
    "build_failure",
    "builder",
    "dockerfile_line",
    "in_netns",
    "listening",
    "map_error",
]
