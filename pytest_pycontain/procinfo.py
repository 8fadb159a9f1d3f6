"""Is the process that owns a resource still the one that made it?

Both engines write an owner down as a pid plus the process's start time, because pids are
reused: the native engine's journals and address leases, the Docker backend's labels. This
module is the one place that reads the start time and decides liveness.
"""

from __future__ import annotations

import os


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat); None
    when there is no such process or /proc does not say (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ")"
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def process_alive(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` still runs and, when ``start`` is given, is the process that started
    then (not a later one that got the same pid). Where /proc cannot tell the start time, a
    running ``pid`` counts as alive: better to leave a resource than to take a live owner's."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    if start is None:
        return True
    now = process_start_time(pid)
    return now is None or now == start
