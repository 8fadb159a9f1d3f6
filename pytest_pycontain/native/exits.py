"""Learning at once that a container's PID 1 has exited, as Docker's daemon does.

Docker takes an exited container off its networks straight away: its name, aliases and address
are free for the next container, and peers no longer resolve it. Without a daemon, nobody would
notice the exit until the handle is asked; so one thread per engine waits on a pidfd of every
networked container's PID 1 and runs that container's callback when it ends.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from collections.abc import Callable


class ExitWatch:
    """One thread, one pidfd per watched process; started with the first ``watch``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, pid: int, then: Callable[[], None]) -> None:
        """Run ``then()`` (on the watch's thread) once process ``pid`` has exited; at once
        (here) when it is gone already."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            then()
            return
        with self._lock:
            if self._closed:
                os.close(fd)
                return
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
                self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                self._selector.register(self._wake_r, selectors.EVENT_READ, None)
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="pycontain-exits")
                self._thread.start()
            self._selector.register(fd, selectors.EVENT_READ, then)

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        while True:
            for key, _ in selector.select():
                if key.data is None:  # woken: closing
                    return
                with self._lock:
                    selector.unregister(key.fd)
                os.close(key.fd)
                with contextlib.suppress(Exception):  # a callback's failure ends nothing else
                    key.data()

    def close(self) -> None:
        """Stop watching (callbacks not yet run are dropped) and end the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            selector, thread = self._selector, self._thread
        if selector is None:
            return
        os.write(self._wake_w, b"x")
        if thread is not None:
            thread.join(5)
        for key in list(selector.get_map().values()):
            os.close(key.fd)
        selector.close()
        os.close(self._wake_w)
