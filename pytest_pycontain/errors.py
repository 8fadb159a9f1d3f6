"""One exception tree for everything pytest-pycontain raises.

Errors carry their evidence (file:line, reference, exit code, log tail) so that a failure
explains itself without a re-run::

    PycontainError
    ├── ConfigError          a setting with a bad value; names where it came from
    ├── DockerfileError      parse or expansion error at file:line
    ├── BuildError           a build step failed (step, exit code, log tail)
    ├── ImageError
    │   ├── ReferenceError_  a malformed image reference
    │   ├── ImageNotFound    not in the store (and not pulled)
    │   ├── PullError        registry, reference, what went wrong
    │   └── PushError
    ├── LayerError           a layer that is unsafe or corrupt
    ├── ContainerError       a container failed (exit code, logs)
    ├── WaitTimeout          a wait strategy gave up
    ├── NetworkError         network setup, IPAM, port publishing
    ├── EngineUnavailable    no engine can run here; says what is missing
    └── NotSupported         the chosen engine cannot do this
"""

from __future__ import annotations


class PycontainError(Exception):
    """The root of every error this package raises."""


class ConfigError(PycontainError, ValueError):
    """A setting has a bad value; the message names where the value came from."""


class DockerfileError(PycontainError):
    """A Dockerfile could not be parsed or expanded."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        self.reason = message
        where = (
            f"{path or 'Dockerfile'}:{line}: "
            if line is not None
            else (f"{path}: " if path else "")
        )
        super().__init__(f"{where}{message}")


class BuildError(PycontainError):
    """A build step failed; carries the step, its location and the log tail."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        exit_code: int | None = None,
        logs: str = "",
    ):
        self.path = path
        self.line = line
        self.exit_code = exit_code
        self.logs = logs
        where = f"{path or 'Dockerfile'}:{line}: " if line is not None else ""
        text = f"{where}{message}"
        if logs:
            text += "\n" + tail(logs)
        super().__init__(text)


class ImageError(PycontainError):
    """Something is wrong with an image or its reference."""


class ReferenceError_(ImageError, ValueError):
    """A malformed image reference."""


class ImageNotFound(ImageError, LookupError):
    """The image is not in the store (and pulling was not allowed or failed)."""


class PullError(ImageError):
    """A pull failed; names the reference and the registry."""

    def __init__(self, message: str, *, reference: str | None = None, registry: str | None = None):
        self.reference = reference
        self.registry = registry
        super().__init__(message)


class PushError(PullError):
    """A push failed; names the reference and the registry."""


class LayerError(ImageError):
    """A layer is corrupt or unsafe to unpack."""


class ContainerError(PycontainError):
    """A container failed: exited early, a command not found, an OOM kill, ...

    ``exit_code`` and ``logs`` are what the container left behind.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        logs: str = "",
        container: str | None = None,
    ):
        self.exit_code = exit_code
        self.logs = logs
        self.container = container
        text = message
        if logs:
            text += "\n--- last lines of its log ---\n" + tail(logs)
        super().__init__(text)


class WaitTimeout(ContainerError, TimeoutError):
    """A wait strategy did not succeed within its timeout."""


class NetworkError(PycontainError):
    """A network could not be made, joined or published."""


class EngineUnavailable(PycontainError):
    """No engine can run here; the message says what is missing and what to do."""


class NotSupported(PycontainError):
    """The chosen engine cannot do this (for example network faults on a remote Docker)."""


def tail(text: str, lines: int = 20) -> str:
    """The last ``lines`` lines of ``text``, for error messages."""
    parts = text.rstrip("\n").splitlines()
    return "\n".join(parts[-lines:])
