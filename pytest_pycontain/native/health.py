"""A container's HEALTHCHECK, scheduled as Docker schedules it, in one background thread.

The native engine has no daemon to run health probes, so the engine process does it for each
of its containers that has a ``Healthcheck`` in its image config.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["HealthCheck"]

SECOND = 1e9  # the config's durations are in nanoseconds


class HealthCheck:
    """Runs ``probe(command, timeout) -> exit code`` on Docker's schedule until ``ended()``
    says the container is gone (or :meth:`stop`); :attr:`status` is Docker's health status."""

    def __init__(self, command: str | Sequence[str], check: Mapping[str, Any],
                 probe: Callable[[str | Sequence[str], float], int],
                 ended: Callable[[], bool], *, name: str):
        self._command = command
        self._check = check
        self._probe = probe
        self._ended = ended
        self._name = name
        self._stopped = False
        self.status: str | None = "starting"
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, check: Mapping[str, Any] | None,
                    probe: Callable[[str | Sequence[str], float], int],
                    ended: Callable[[], bool], *, name: str) -> HealthCheck | None:
        """The check an image config's ``Healthcheck`` asks for; None for none (or NONE).
        ``CMD-SHELL`` runs its words joined with the shell, ``CMD`` as they are."""
        test = list((check or {}).get("Test") or [])
        if not check or not test or test[0] == "NONE":
            return None
        command: str | list[str]
        if test[0] == "CMD-SHELL":
            command = " ".join(test[1:])
        elif test[0] == "CMD":
            command = test[1:]
        else:
            command = test
        return cls(command, check, probe, ended, name=name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"health-{self._name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No more probes and no status (a container kept for after the run)."""
        self._stopped = True
        self.status = None

    def _run(self) -> None:
        """Docker's rules: first probe after one interval; failures in the start period do not
        count; ``retries`` failures in a row make it unhealthy, one success healthy."""
        check = self._check
        interval = (check.get("Interval") or 30 * SECOND) / SECOND
        timeout = (check.get("Timeout") or 30 * SECOND) / SECOND
        start_period = (check.get("StartPeriod") or 0) / SECOND
        start_interval = (check.get("StartInterval") or 5 * SECOND) / SECOND
        retries = check.get("Retries") or 3
        started = time.monotonic()
        failures = 0
        while not self._stopped:
            in_start = time.monotonic() - started < start_period
            time.sleep(start_interval if in_start and self.status == "starting" else interval)
            if self._stopped or self._ended():
                return
            try:
                ok = self._probe(self._command, timeout) == 0
            except Exception:
                ok = False
            if self._stopped:
                return
            if ok:
                failures = 0
                self.status = "healthy"
            elif not (time.monotonic() - started < start_period):
                failures += 1
                if failures >= retries:
                    self.status = "unhealthy"
