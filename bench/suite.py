"""A generated suite of N tests, each with a fresh container on its own network: the wall
time of ``pytest`` on the native engine and on the docker backend, plain and with ``-n 2``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .env import REPO, Env, skipped

TEST_FILE = '''\
import pytest


@pytest.mark.parametrize("i", range({count}))
def test_fresh_container(pycontain, i):
    net = pycontain.network()
    box = pycontain.run("busybox", command=["sleep", "3600"], network=net)
    assert box.exec(["true"]).exit_code == 0
'''


def write_suite(workdir: Path, count: int) -> Path:
    suite = workdir / "suite"
    suite.mkdir(parents=True, exist_ok=True)
    (suite / "test_generated.py").write_text(TEST_FILE.format(count=count))
    return suite


def run_suite(suite: Path, backend: str, workers: int, environ: dict[str, str]) -> float:
    """Wall time (s) of one pytest run of ``suite``; raises when a test fails."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--pycontain-backend={backend}", str(suite)]
    if workers:
        argv += ["-n", str(workers)]
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=suite, env=environ, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"pytest {backend} -n {workers}: exit {result.returncode}: "
                           f"{result.stdout.strip()[-600:]}")
    return elapsed


def measure(env: Env, count: int, docker: bool = True) -> dict:
    suite = write_suite(env.workdir, count)
    base = {**os.environ, "PYTHONPATH": str(REPO),
            "PYCONTAIN_REGISTRY_MIRROR": env.registry.url,
            "PYCONTAIN_CACHE_DIR": str(env.workdir / "cache")}
    results: dict[str, Any] = {"tests": count, "native": None, "docker_backend": None}
    backends = {"native": base}
    if docker and env.dockerd is not None:
        backends["docker_backend"] = {**base, "DOCKER_HOST": env.dockerd.host}
    elif docker:
        skipped("suite docker_backend: no private dockerd")
    for key, environ in backends.items():
        backend = "docker" if key == "docker_backend" else "native"
        row: dict[str, Any] = {}
        for workers in (0, 2):
            label = "plain_s" if workers == 0 else "n2_s"
            try:
                row[label] = round(run_suite(suite, backend, workers, environ), 2)
            except Exception as exc:
                skipped(f"suite {key} -n {workers}: failed: {exc}")
                row[label] = None
        row["per_test_ms"] = (round(row["plain_s"] * 1000 / count, 1)
                              if row.get("plain_s") else None)
        results[key] = row
    native, docker = results["native"], results["docker_backend"]
    if native and docker and native.get("plain_s") and docker.get("plain_s"):
        results["x_docker_over_native_plain"] = round(docker["plain_s"] / native["plain_s"], 1)
    if native and docker and native.get("n2_s") and docker.get("n2_s"):
        results["x_docker_over_native_n2"] = round(docker["n2_s"] / native["n2_s"], 1)
    return results
