"""Reuse across runs: a suite whose session fixture is a slow-starting service (it takes
``START_S`` seconds before it answers), run three ways on each backend — without the opt-in
(the service starts every run), the first run with ``--pycontain-reuse`` (it starts, and
stays), and the next run with it (found again) — as wall times of ``pytest``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .env import REPO, Env, skipped

START_S = 2  # how long the service takes before it answers

TEST_FILE = '''\
import urllib.request

import pytest
from pytest_pycontain import wait


@pytest.fixture(scope="session")
def service(pycontain_session):
    return pycontain_session.run(
        "busybox", name="slow-service", ports=[8080], reuse=True,
        command=["sh", "-c", "sleep {start}; mkdir -p /www && echo up > /www/ok && "
                 "exec httpd -f -p 8080 -h /www"],
        wait=wait.http(8080, "/ok"))


@pytest.mark.parametrize("i", range({count}))
def test_uses_the_service(service, i):
    host, port = service.address(8080)
    assert urllib.request.urlopen(f"http://{{host}}:{{port}}/ok", timeout=10).read() == b"up\\n"
'''


def write_suite(workdir: Path, count: int) -> Path:
    suite = workdir / "reuse-suite"
    suite.mkdir(parents=True, exist_ok=True)
    (suite / "test_reused.py").write_text(TEST_FILE.format(count=count, start=START_S))
    return suite


def run_suite(suite: Path, backend: str, environ: dict[str, str], *extra: str) -> float:
    """Wall time (s) of one pytest run of ``suite``; raises when a test fails."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--pycontain-backend={backend}", *extra, str(suite)]
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=suite, env=environ, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"pytest {backend} {' '.join(extra)}: exit {result.returncode}: "
                           f"{result.stdout.strip()[-600:]}")
    return elapsed


def remove_reused(backend: str, environ: dict[str, str]) -> None:
    """Remove what the reused runs left (the bench leaves nothing)."""
    if backend == "native":
        subprocess.run([sys.executable, "-m", "pytest_pycontain", "prune", "--reused"],
                       env=environ, capture_output=True, timeout=120, check=True)
        return
    import docker

    api = docker.APIClient(base_url=environ["DOCKER_HOST"], version="auto")
    try:
        for info in api.containers(all=True, filters={"label": "pycontain.reuse.key"}):
            api.remove_container(info["Id"], force=True, v=True)
    finally:
        api.close()


def measure(env: Env, count: int, docker: bool = True) -> dict:
    suite = write_suite(env.workdir, count)
    base = {**os.environ, "PYTHONPATH": str(REPO),
            "PYCONTAIN_REGISTRY_MIRROR": env.registry.url,
            "PYCONTAIN_CACHE_DIR": str(env.workdir / "cache"),
            "PYCONTAIN_STATE_DIR": str(env.workdir / "reuse-state")}
    base.pop("PYCONTAIN_REUSE", None)
    results: dict[str, Any] = {"tests": count, "service_start_s": START_S, "native": None,
                               "docker_backend": None}
    backends = {"native": base}
    if docker and env.dockerd is not None:
        backends["docker_backend"] = {**base, "DOCKER_HOST": env.dockerd.host}
    elif docker:
        skipped("reuse docker_backend: no private dockerd")
    for key, environ in backends.items():
        backend = "docker" if key == "docker_backend" else "native"
        row: dict[str, Any] = {}
        try:
            row["fresh_s"] = round(run_suite(suite, backend, environ), 2)
            row["first_reuse_s"] = round(run_suite(suite, backend, environ,
                                                   "--pycontain-reuse"), 2)
            row["reused_s"] = round(run_suite(suite, backend, environ, "--pycontain-reuse"), 2)
            row["x_fresh_over_reused"] = round(row["fresh_s"] / row["reused_s"], 1)
        except Exception as exc:
            skipped(f"reuse {key}: failed: {exc}")
        finally:
            try:
                remove_reused(backend, environ)
            except Exception as exc:
                skipped(f"reuse {key}: could not remove the reused container: {exc}")
        results[key] = row or None
    return results
