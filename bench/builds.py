"""A 10-step Dockerfile built by pycontain and by ``docker build`` (BuildKit): a no-change
rebuild and a cold build (base image present, layer cache bypassed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .env import Env, skipped
from .stats import summarize

DOCKERFILE = """\
FROM busybox
ENV GREETING=hello
WORKDIR /app
COPY a.txt /app/
RUN echo one > /one
COPY b.txt /app/
RUN echo "$GREETING" > /two
LABEL bench=pycontain
ENV SECOND=2
RUN cat /app/a.txt /app/b.txt > /app/c
CMD ["cat", "/app/c"]
"""
STEPS = 10


def context(workdir: Path) -> Path:
    """The build context: the Dockerfile and the two files it copies."""
    ctx = workdir / "build-context"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    return ctx


def _timed(fn: Any, samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure(env: Env, samples: int, docker: bool = True) -> tuple[dict, dict]:
    """``(rebuild, cold_build)`` sections, each ``{"pycontain": …, "docker": …}``."""
    ctx = context(env.workdir)
    rebuild: dict[str, Any] = {"pycontain": None, "docker": None}
    cold: dict[str, Any] = {"pycontain": None, "docker": None}
    try:
        engine = env.native
        engine.build(ctx, tag="bench-build:latest")  # fills the cache
        rebuild["pycontain"] = summarize(_timed(
            lambda: engine.build(ctx, tag="bench-build:latest"), samples), None)
        cold["pycontain"] = summarize(_timed(
            lambda: engine.build(ctx, tag="bench-build:cold", no_cache=True), samples), None)
    except Exception as exc:
        skipped(f"builds pycontain: failed: {type(exc).__name__}: {exc}")
    if docker and env.dockerd is not None:
        try:
            # RUN in the host's network namespace, as pycontain's RUN does (and docker0 is
            # shared by every dockerd on the machine: another one may remove it at its exit)
            argv = ["build", "-q", "--network", "host", "-t", "bench-build:latest", str(ctx)]
            env.docker(argv)
            rebuild["docker"] = summarize(_timed(lambda: env.docker(argv), samples), None)
            cold["docker"] = summarize(_timed(
                lambda: env.docker(["build", "-q", "--network", "host", "--no-cache", "-t",
                                    "bench-build:cold", str(ctx)]), samples), None)
        except Exception as exc:
            skipped(f"builds docker: failed: {type(exc).__name__}: {exc}")
    for section in (rebuild, cold):
        for row in section.values():
            if row is not None:
                row["steps"] = STEPS
        if section["docker"] and section["pycontain"]:
            section["x_docker_over_pycontain"] = round(
                section["docker"]["median_ms"] / section["pycontain"]["median_ms"], 1)
    cold["how"] = "base image present, layer cache bypassed (no_cache / --no-cache)"
    rebuild["how"] = ("same context rebuilt; docker: DOCKER_BUILDKIT=1 docker build "
                      "--network host (20.10); pycontain's RUN uses the host network too")
    return rebuild, cold
