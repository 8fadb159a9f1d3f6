"""Wait strategies: when is a container ready?

Each strategy says what it waits for and checks it once; ``until_ready`` polls it with a
timeout and gives up at once when the container exits, with the exit status and its last log
lines, so a crashed service fails the test in milliseconds instead of after the timeout.

    pycontain.run("redis:7", wait=wait.port(6379))
    pycontain.run(image, wait=wait.all(wait.log("ready"), wait.http(8080, "/health")))
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .errors import ContainerError, NotSupported, WaitTimeout, tail

__all__ = ["Wait", "all", "command", "healthcheck", "http", "log", "port", "until_ready"]


@dataclasses.dataclass(frozen=True)
class Wait:
    """A readiness check; ``timeout`` (seconds) overrides the configured default."""

    description: str
    timeout: float | None = None
    # what the last check saw, by container (a wait may serve many): the timeout's evidence
    _seen: dict[int, str] = dataclasses.field(default_factory=dict, init=False, compare=False,
                                              repr=False)

    def ready(self, container: Any) -> bool:
        raise NotImplementedError

    def last_seen(self, container: Any) -> str | None:
        """What the last check of ``container`` saw (a status, an error), forgotten once read;
        None when the strategy has nothing to say."""
        return self._seen.pop(id(container), None)

    def __str__(self) -> str:
        return self.description


@dataclasses.dataclass(frozen=True)
class _Port(Wait):
    port_number: int = 0

    def ready(self, container: Any) -> bool:
        return bool(container.probe_port(self.port_number))


@dataclasses.dataclass(frozen=True)
class _Log(Wait):
    pattern: str = ""

    def ready(self, container: Any) -> bool:
        return re.search(self.pattern, container.logs(), re.MULTILINE) is not None


@dataclasses.dataclass(frozen=True)
class _Http(Wait):
    port_number: int = 0
    path: str = "/"
    status: int = 200

    def ready(self, container: Any) -> bool:
        try:
            host, port = container.address(self.port_number)
        except (NotSupported, LookupError, ValueError):
            return self._ready_inside(container)
        url = f"http://{host}:{port}{self.path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            self._seen[id(container)] = f"{type(reason).__name__}: {reason} from {url}"
            return False
        self._seen[id(container)] = f"HTTP {code} from {url}"
        return code == self.status

    def _ready_inside(self, container: Any) -> bool:
        """No published port: ask from inside the container with its own wget."""
        url = f"http://127.0.0.1:{self.port_number}{self.path}"
        result = container.exec(["wget", "-q", "-S", "-O", "/dev/null", url], timeout=5)
        first = re.search(r"HTTP/\S+ (\d{3})", result.output)
        self._seen[id(container)] = (
            f"HTTP {first.group(1)} from {url} inside the container" if first else
            f"wget {url} inside the container: {tail(result.output, 2).strip() or 'no answer'}"
            f" (exit {result.exit_code})")
        return first is not None and int(first.group(1)) == self.status


@dataclasses.dataclass(frozen=True)
class _Command(Wait):
    cmd: str | tuple[str, ...] = ()

    def ready(self, container: Any) -> bool:
        cmd = self.cmd if isinstance(self.cmd, str) else list(self.cmd)
        return container.exec(cmd, timeout=self.timeout).exit_code == 0


@dataclasses.dataclass(frozen=True)
class _Healthcheck(Wait):
    def ready(self, container: Any) -> bool:
        health = container.health
        if health is None:
            raise ContainerError(
                f"wait.healthcheck(): container {container.name} has no HEALTHCHECK",
                container=container.name,
            )
        return health == "healthy"


@dataclasses.dataclass(frozen=True)
class _All(Wait):
    waits: tuple[Wait, ...] = ()

    def ready(self, container: Any) -> bool:
        return all_ready(self.waits, container)

    def last_seen(self, container: Any) -> str | None:
        seen = [f"{w}: {said}" for w in self.waits if (said := w.last_seen(container))]
        return "; ".join(seen) or None


def all_ready(waits: Sequence[Wait], container: Any) -> bool:
    return builtins.all(w.ready(container) for w in waits)


def port(p: int, *, timeout: float | None = None) -> Wait:
    """Something listens on TCP port ``p`` inside the container (no published port needed)."""
    return _Port(f"wait.port({p})", timeout, port_number=int(p))


def log(regex: str, *, timeout: float | None = None) -> Wait:
    """A line of the container's log (either stream) matches ``regex``."""
    re.compile(regex)
    return _Log(f"wait.log({regex!r})", timeout, pattern=regex)


def http(p: int, path: str = "/", status: int = 200, *, timeout: float | None = None) -> Wait:
    """``GET http://container:p{path}`` answers ``status``."""
    return _Http(f"wait.http({p}, {path!r}, status={status})", timeout, port_number=int(p),
                 path=path, status=status)


def command(cmd: str | Sequence[str], *, timeout: float | None = None) -> Wait:
    """``cmd`` run in the container exits 0 (a string runs with ``/bin/sh -c``)."""
    frozen = cmd if isinstance(cmd, str) else tuple(cmd)
    return _Command(f"wait.command({cmd!r})", timeout, cmd=frozen)


def healthcheck(*, timeout: float | None = None) -> Wait:
    """The image's (or run's) HEALTHCHECK reports healthy."""
    return _Healthcheck("wait.healthcheck()", timeout)


def all(*waits: Wait, timeout: float | None = None) -> Wait:
    """Every one of ``waits`` at once."""
    return _All("wait.all(" + ", ".join(map(str, waits)) + ")", timeout, waits=tuple(waits))


def until_ready(container: Any, strategy: Wait, default_timeout: float = 60.0,
                interval: float = 0.02) -> None:
    """Poll ``strategy`` until it holds; raise at once if the container exits.

    :raises ContainerError: the container exited while waiting (exit code, log tail).
    :raises WaitTimeout: the wait did not hold within its timeout.
    """
    timeout = strategy.timeout if strategy.timeout is not None else default_timeout
    start = time.monotonic()
    delay = interval
    while True:
        if container.status != "running":
            code = container.exit_code
            logs = _logs(container)
            cause = container.spec.read_only_cause(logs) if container.spec else ""
            raise ContainerError(
                f"{strategy}: container {container.name} exited with status {code} "
                f"after {time.monotonic() - start:.1f}s, before it was ready"
                + (f" ({cause})" if cause else ""),
                exit_code=code, logs=logs, container=container.name)
        if strategy.ready(container):
            strategy.last_seen(container)
            return
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            seen = strategy.last_seen(container)
            raise WaitTimeout(
                f"{strategy}: container {container.name} not ready after {elapsed:.1f}s "
                f"(timeout {timeout:g}s; status {container.status})"
                + (f"; last seen: {seen}" if seen else ""),
                exit_code=container.exit_code, logs=_logs(container), container=container.name)
        time.sleep(min(delay, max(0.0, timeout - elapsed)))
        delay = min(delay * 1.5, 0.5)


def _logs(container: Any) -> str:
    try:
        return tail(container.logs(), 30)
    except Exception:  # the log is evidence, never a reason to hide the real error
        return ""
