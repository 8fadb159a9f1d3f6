"""Who owns what in a shared Docker engine: the labels on everything we make.

A Docker engine outlives our process and is shared with everything else on the host, so each
object carries its session and its owner (host, pid and the pid's start time). ``close()``
removes a session's objects; a later run removes those whose owner died on this host, and never
a kept container (its engine-level name ends with ``KEPT_SUFFIX``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from ..procinfo import process_alive, process_start_time

LABEL_SESSION = "pycontain.session"
LABEL_PID = "pycontain.owner.pid"
LABEL_HOST = "pycontain.owner.host"
LABEL_START = "pycontain.owner.start"
LABEL_NAME = "pycontain.name"
LABEL_REUSE_KEY = "pycontain.reuse.key"  # reused across runs: the request's key
LABEL_REUSE_SLOT = "pycontain.reuse.slot"  # ... the slot it holds (rootdir and name)
LABEL_REUSE_NAME = "pycontain.reuse.name"  # ... the name it was asked under
LABEL_REUSE_NETWORK = "pycontain.reuse.network"  # ... the network made for its ports
LABEL_REUSE_NETSLOT = "pycontain.reuse.netslot"  # a network kept for reused containers
LABEL_SHARED = "pycontain.shared"  # a volume that outlives its engine (never reaped)
KEPT_SUFFIX = ".kept"  # a kept container's engine-level name ends so; the reaper skips it


def owner_labels(session_id: str, **extra: str) -> dict[str, str]:
    """The labels that say this process, in session ``session_id``, made an object."""
    pid = os.getpid()
    labels = {LABEL_SESSION: session_id, LABEL_PID: str(pid), LABEL_HOST: socket.gethostname()}
    start = process_start_time(pid)
    if start is not None:
        labels[LABEL_START] = str(start)
    return {**labels, **extra}


def left_by_dead_owner(labels: Mapping[str, str], name: str) -> bool:
    """Whether an object (its labels, its engine-level name) belongs to an owner that died on
    this host and is not kept: the reaper's rule."""
    return not name.endswith(KEPT_SUFFIX) and owner_died(labels)


def owner_died(labels: Mapping[str, str]) -> bool:
    """Whether the process that made an object (by its labels) died on this host."""
    if labels.get(LABEL_HOST) != socket.gethostname():
        return False
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    try:
        start: int | None = int(labels[LABEL_START])
    except (KeyError, ValueError):
        start = None
    return not process_alive(pid, start)
