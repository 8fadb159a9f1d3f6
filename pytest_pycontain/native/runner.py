"""The builder's RUN seam on the native engine: a ``RunRequest`` -> a container -> ``RunResult``.

The builder (``build.py``) knows only ``RunRequest``/``RunResult``; this module is the other
side, so that the builder never imports an engine and the engine can hand its builds a runner
of its own (see docs/architecture.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..build import RunRequest, RunResult
from ..engine import Mount, RunSpec

__all__ = ["NativeRunner"]


class NativeRunner:
    """Runs each RUN in the native engine. A RUN gets its own network namespace with a way
    out through pasta (``egress``: never to the host's loopback or abstract sockets, as
    Docker's NAT'd bridge), loopback only with ``--network=none``, and the host's namespace
    only when it asks (``--network=host``). Without an ``engine``, ``make_engine`` makes one
    at the first RUN (a build without RUN needs no root); :meth:`close` closes that one."""

    def __init__(self, engine: Any = None, *, make_engine: Callable[[], Any] | None = None):
        self.engine = engine
        self._make_engine = make_engine
        self._own = False
        self._lock = threading.Lock()  # stages build at once: one engine for all their RUNs

    def __call__(self, request: RunRequest) -> RunResult:
        with self._lock:
            if self.engine is None:
                if self._make_engine is None:
                    raise ValueError("NativeRunner: no engine and no way to make one")
                self.engine = self._make_engine()
                self._own = True
        image = RunImage({"Env": list(request.env), "WorkingDir": request.workdir,
                          "User": request.user}, list(request.lower_dirs))
        network = request.network
        if network not in ("default", "host", "none"):
            raise ValueError(f"RunRequest.network={network!r}: expected default, host or none")
        ways_out: list[Any] = []

        def attach_egress(container: Any) -> None:
            from . import egress

            made = egress.attach(container.pid, journal=self.engine.journal,
                                 container=container.id)
            if made is not None:
                ways_out.append(made)

        def remove(container: Any) -> None:
            try:
                container.remove()
            finally:
                for way in ways_out:
                    way.close()

        container = self.engine.run(RunSpec(
            image=image, entrypoint=request.argv, command=None,
            network="host" if network == "host" else None,
            user=request.user, workdir=request.workdir,
            mounts=tuple(Mount(Path(host), target, ro) for host, target, ro in request.mounts),
            tmpfs=dict(request.tmpfs)),
            before_start=attach_egress if network == "default" else None)
        try:
            code = container.wait()
            output = container.logs()
        except BaseException:
            remove(container)
            raise
        return RunResult(code, output, Path(container.dir) / "upper",
                         lambda: remove(container), mountpoints=container.mountpoints)

    def close(self) -> None:
        if self._own and self.engine is not None:
            self.engine.close()
            self.engine = None
            self._own = False


class RunImage:
    """What the engine needs of an image for a RUN: its config and its lower dirs."""

    def __init__(self, config: dict[str, Any], lower_dirs: list[str]):
        self.config = config
        self.lower_dirs = lower_dirs
        self.tags = ["<build step>"]
