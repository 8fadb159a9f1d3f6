"""Removing removed containers' cgroups and files in the background, so that ``remove()``
returns at once.

A removed container's processes are gone already; its shim may still be ending (its
namespaces and the root's mounts go with it), which the janitor waits for first. What is left
then (its cgroups, whose removal waits while the kernel still counts an exiting task; its
directory: the overlay's upper layer, logs) can take a while to remove. The journal keeps the
records until they are gone too, so a run killed meanwhile leaves them to the next run's
reaper.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

from . import state

__all__ = ["Janitor"]


class Janitor:
    """One background thread, started with the first discard, that undoes journal records."""

    def __init__(self, journal: state.Journal):
        self._journal = journal
        self._trash: queue.Queue[tuple[str, list[state.Record], Callable[[], None] | None]
                                 | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def discard(self, container_id: str, records: list[state.Record],
                before: Callable[[], None] | None = None) -> None:
        """Undo ``records`` (best effort), then journal the container as removed.
        ``before``: what to wait for first (its shim's end: its cgroups and mounts are free
        only then)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._sweep, name="pycontain-janitor",
                                                daemon=True)
                self._thread.start()
        self._trash.put((container_id, records, before))

    def drain(self) -> None:
        """Wait until everything handed over so far is gone (a benchmark counts it so)."""
        self._trash.join()

    def close(self) -> None:
        """Finish what was handed over, then stop."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._trash.put(None)
            thread.join()

    def _sweep(self) -> None:
        while True:
            item = self._trash.get()
            try:
                if item is None:
                    return
                container_id, records, before = item
                if before is not None:
                    with contextlib.suppress(Exception):
                        before()
                for record in records:
                    with contextlib.suppress(Exception):
                        state.undo_one(record)
                self._journal.record("removed", container=container_id)
            finally:
                self._trash.task_done()
