"""A three-service Compose stack (issue 17): up until healthy, one request to the published
port from this process, down. Natively and on the Docker backend through
``pytest_pycontain.compose``, and with Debian's ``docker-compose`` against the same private
dockerd (it has no ``--wait``: its containers' health is polled with ``docker inspect``)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from .env import DOCKER_CLI, Env, skipped
from .lifecycle import drain
from .stats import summarize

STACK = """\
services:
  migrate:
    image: busybox
    command: ["true"]
  db:
    image: busybox
    command: sh -c 'mkdir -p /www && echo db > /www/index.html && exec httpd -f -p 5432 -h /www'
    healthcheck: {test: [CMD, wget, -q, -O, /dev/null, "http://127.0.0.1:5432/"],
                  interval: 100ms, retries: 50}
  web:
    image: busybox
    command: sh -c 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www'
    ports: ["8080"]
    depends_on:
      migrate: {condition: service_completed_successfully}
      db: {condition: service_healthy}
    healthcheck: {test: [CMD, wget, -q, -O, /dev/null, "http://127.0.0.1:8080/"],
                  interval: 100ms, retries: 50}
"""

PEERS = ("native", "docker_backend", "docker_compose")


def _get(host: str, port: int) -> None:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as response:
        if response.read() != b"ok\n":
            raise RuntimeError("the stack's web service answered something else")


def _ours(engine: Any, directory: Path) -> float:
    from pytest_pycontain.compose import load
    from pytest_pycontain.compose.stack import Compose, EngineMaker

    start = time.perf_counter()
    maker = EngineMaker(engine, base=directory)
    try:
        stack = Compose(maker, load(directory=directory, environ={}, unique=True)).up()
        _get(*stack.service("web").address(8080))
    finally:
        maker.close()
    drain(engine)
    return (time.perf_counter() - start) * 1000


def _docker_compose(env: Env, directory: Path) -> float:
    environ = {**env.dockerd.env(), "COMPOSE_PROJECT_NAME": f"bench{secrets.token_hex(3)}"}

    def compose(*argv: str) -> str:
        done = subprocess.run(["docker-compose", *argv], cwd=directory, env=environ,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(argv)}: {done.stderr[-500:]}")
        return done.stdout

    start = time.perf_counter()
    try:
        compose("up", "-d", "--quiet-pull")
        web = compose("ps", "-q", "web").strip()
        deadline = time.monotonic() + 60
        while subprocess.run([DOCKER_CLI, "inspect", "-f", "{{.State.Health.Status}}", web],
                             env=environ, capture_output=True, text=True,
                             check=False).stdout.strip() != "healthy":
            if time.monotonic() > deadline:
                raise RuntimeError("docker-compose: web not healthy within 60 s")
            time.sleep(0.02)
        port = compose("port", "web", "8080").strip().rpartition(":")[2]
        _get("127.0.0.1", int(port))
    finally:
        compose("down", "--timeout", "0")
    return (time.perf_counter() - start) * 1000


def measure(env: Env, samples: int, peers: tuple[str, ...] = PEERS) -> dict[str, Any]:
    """``samples`` rounds of up + request + down per peer; a missing one is None with a line
    saying why."""
    directory = env.workdir / "compose"
    directory.mkdir(exist_ok=True)
    (directory / "compose.yaml").write_text(STACK)
    results: dict[str, Any] = dict.fromkeys(PEERS)
    runners = {"native": lambda: _ours(env.native, directory)}
    if {"docker_backend", "docker_compose"} & set(peers) and env.dockerd is not None:
        runners["docker_backend"] = lambda: _ours(env.docker_backend, directory)
        if shutil.which("docker-compose"):
            runners["docker_compose"] = lambda: _docker_compose(env, directory)
        else:
            skipped("compose: docker-compose is not installed (.ci/setup installs it)")
    for peer in peers:
        if peer in runners:
            runners[peer]()  # a warm-up: images pulled, engines started
            results[peer] = summarize([runners[peer]() for _ in range(samples)], None)
    native = (results.get("native") or {}).get("median_ms")
    for row in results.values():
        if row and native:
            row["x_native_median"] = round(row["median_ms"] / native, 1)
    return results
