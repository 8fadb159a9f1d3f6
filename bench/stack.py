"""A real per-module stack (issue 15): PostgreSQL and Redis started once per module and waited
for (postgres through its ``pg_isready`` healthcheck, redis on its port), then a fresh app
container per test that queries both by name and exits; all removed at the module's end.
Natively and on the Docker backend through the engine protocol, and with testcontainers-python
against the same private dockerd. The app image is built before the clock starts.

Also the native cold build of the app's multi-stage Dockerfile (two independent stages that
checksum the files of their base images, then a final stage on ``postgres:15`` copying their
output) beside ``docker build`` with BuildKit on the same machine, layer cache bypassed, base
images present.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .env import Env, skipped
from .lifecycle import drain
from .stats import summarize

PASSWORD = "bench-pw"
PG_ENV = {"POSTGRES_PASSWORD": PASSWORD, "POSTGRES_USER": "app", "POSTGRES_DB": "appdb"}
APP_TAG = "bench-stack-app:latest"

DOCKERFILE = """\
FROM postgres:15 AS libs
RUN find /usr -type f -exec sha256sum {} + > /libs.sha256

FROM debian:bookworm AS share
RUN find /usr /var -type f -exec sha256sum {} + > /share.sha256

FROM postgres:15
COPY --from=libs /libs.sha256 /app/
COPY --from=share /share.sha256 /app/
COPY query.sql app.sh /app/
ENV PGPASSWORD=bench-pw
ENTRYPOINT ["sh", "/app/app.sh"]
"""

APP = """\
set -e
psql -h db -U app -d appdb -tAf /app/query.sql
redis-cli -h cache incr hits
"""

PEERS = ("native", "docker_backend", "testcontainers")


def context(workdir: Path) -> Path:
    """The app's build context."""
    ctx = workdir / "stack-app"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "query.sql").write_text("SELECT count(*) FROM pg_stat_activity;\n")
    (ctx / "app.sh").write_text(APP)
    return ctx


class OurStack:
    """One module's stack on one of our engines (native or the Docker backend)."""

    def __init__(self, engine: Any):
        from pytest_pycontain import wait
        from pytest_pycontain.runspec import RunSpec

        self.engine, self.wait, self.RunSpec = engine, wait, RunSpec
        self.net: Any = None
        self.services: list[Any] = []

    def up(self) -> None:
        from pytest_pycontain.wait import until_ready

        self.net = self.engine.network()
        for image, name, port, env, ready in (
            ("postgres:15", "db", 5432, PG_ENV, self.wait.healthcheck(timeout=180)),
            ("redis:7", "cache", 6379, {}, self.wait.port(6379, timeout=60)),
        ):
            container = self.engine.run(self.RunSpec.create(
                image, name=name, network=self.net, ports=[port], env=env))
            self.services.append(container)
            until_ready(container, ready)

    def app(self) -> None:
        container = self.engine.run(self.RunSpec.create(APP_TAG, network=self.net))
        try:
            code = container.wait(timeout=60)
            if code != 0:
                raise RuntimeError(f"the app exited {code}: {container.logs()[-500:]}")
        finally:
            container.remove()

    def down(self) -> None:
        for container in self.services:
            container.remove()
        self.services = []
        if self.net is not None:
            self.net.remove()
            self.net = None
        drain(self.engine)


class TestcontainersStack:
    """The same module with testcontainers-python (its reaper off, as in the lifecycle)."""

    def __init__(self, docker_host: str):
        os.environ["DOCKER_HOST"] = docker_host
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.network import Network

        self.DockerContainer, self.Network = DockerContainer, Network
        self.net: Any = None
        self.services: list[Any] = []

    def up(self) -> None:
        self.net = self.Network()
        self.net.create()
        db = self.DockerContainer("postgres:15").with_exposed_ports(5432)
        for key, value in PG_ENV.items():
            db = db.with_env(key, value)
        db = db.with_network(self.net).with_network_aliases("db")
        db.start()
        self.services.append(db)
        self._healthy(db)
        cache = (self.DockerContainer("redis:7").with_exposed_ports(6379)
                 .with_network(self.net).with_network_aliases("cache"))
        cache.start()
        self.services.append(cache)
        self._answers(cache)

    @staticmethod
    def _healthy(container: Any) -> None:
        wrapped = container.get_wrapped_container()
        deadline = time.monotonic() + 180
        while True:
            wrapped.reload()
            if wrapped.attrs["State"].get("Health", {}).get("Status") == "healthy":
                return
            if time.monotonic() > deadline:
                raise RuntimeError("testcontainers: postgres not healthy within 180 s")
            time.sleep(0.02)

    @staticmethod
    def _answers(container: Any) -> None:
        """testcontainers' own way for redis: its ready line (the private dockerd's published
        ports live in its own namespace, so the host's ``localhost`` is not where they are)."""
        from testcontainers.core.waiting_utils import wait_for_logs

        wait_for_logs(container, "Ready to accept connections", timeout=60, interval=0.02)

    def app(self) -> None:
        app = self.DockerContainer(APP_TAG).with_network(self.net)
        app.start()
        try:
            code = app.get_wrapped_container().wait(timeout=60)["StatusCode"]
            if code != 0:
                raise RuntimeError(f"the app exited {code}")
        finally:
            app.stop()

    def down(self) -> None:
        for container in self.services:
            container.stop()
        self.services = []
        if self.net is not None:
            self.net.remove()
            self.net = None


def _module(stack: Any, tests: int) -> tuple[float, float, list[float]]:
    """One module: (whole module ms, stack up ms, each test's app ms)."""
    start = time.perf_counter()
    apps: list[float] = []
    try:
        stack.up()
        ready = time.perf_counter()
        for _ in range(tests):
            begin = time.perf_counter()
            stack.app()
            apps.append((time.perf_counter() - begin) * 1000)
    finally:
        stack.down()
    whole = (time.perf_counter() - start) * 1000
    return whole, (ready - start) * 1000, apps


def measure(env: Env, modules: int, tests: int,
            peers: tuple[str, ...] = PEERS) -> dict[str, Any]:
    """``modules`` modules of ``tests`` tests per peer (after one warm-up module each)."""
    from testenv.images import seed_services

    seed_services(env.registry.host)
    ctx = context(env.workdir)
    results: dict[str, Any] = dict.fromkeys(PEERS)
    makers: dict[str, Any] = {}
    try:
        for ref in ("postgres:15", "redis:7"):
            env.native.pull(ref)
        env.native.build(ctx, tag=APP_TAG)
        makers["native"] = lambda: OurStack(env.native)
    except Exception as exc:
        skipped(f"stack native: the app build failed: {type(exc).__name__}: {exc}")
    if {"docker_backend", "testcontainers"} & set(peers) and env.dockerd is not None:
        try:
            for ref in ("postgres:15", "redis:7"):
                env.docker(["pull", "-q", ref])
            env.docker(["build", "-q", "--network", "host", "-t", APP_TAG, str(ctx)])
            makers["docker_backend"] = lambda: OurStack(env.docker_backend)
            makers["testcontainers"] = lambda: TestcontainersStack(env.dockerd.host)
        except Exception as exc:
            skipped(f"stack docker: the app build failed: {type(exc).__name__}: {exc}")
    saved = {k: os.environ.get(k) for k in ("DOCKER_HOST", "TESTCONTAINERS_RYUK_DISABLED")}
    try:
        for peer in peers:
            if peer not in makers:
                continue
            try:
                _module(makers[peer](), 1)  # a warm-up: images pulled, engines started
                rounds = [_module(makers[peer](), tests) for _ in range(modules)]
            except Exception as exc:
                skipped(f"stack {peer}: failed: {type(exc).__name__}: {exc}")
                continue
            row = summarize([whole for whole, _, _ in rounds], None)
            row["up_median_ms"] = summarize([up for _, up, _ in rounds], None)["median_ms"]
            row["app_median_ms"] = summarize([a for _, _, apps in rounds for a in apps],
                                             None)["median_ms"]
            row["tests_per_module"] = tests
            results[peer] = row
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    native = (results.get("native") or {}).get("median_ms")
    for row in results.values():
        if row and native:
            row["x_native_median"] = round(row["median_ms"] / native, 1)
    return results


def cold_build(env: Env, samples: int, docker: bool = True) -> dict[str, Any]:
    """The multi-stage app built with the layer cache bypassed: pycontain vs ``docker build``,
    their samples interleaved."""
    from testenv.images import seed_services

    seed_services(env.registry.host)
    ctx = context(env.workdir)
    out: dict[str, Any] = {"pycontain": None, "docker": None}

    def native() -> None:
        env.native.build(ctx, tag=APP_TAG, no_cache=True)

    def docker_build() -> None:
        env.docker(["build", "-q", "--network", "host", "--no-cache", "-t", APP_TAG, str(ctx)])

    builders = {"pycontain": native}
    if docker and env.dockerd is not None:
        builders["docker"] = docker_build
    times: dict[str, list[float]] = {name: [] for name in builders}
    for name, fn in list(builders.items()):
        try:
            fn()  # base images present, unpacked and warm on both sides
        except Exception as exc:
            skipped(f"stack build {name}: failed: {type(exc).__name__}: {exc}")
            del builders[name]
    for _ in range(samples):  # interleaved, so a noisy neighbour hits both alike
        for name, fn in list(builders.items()):
            start = time.perf_counter()
            try:
                fn()
            except Exception as exc:
                skipped(f"stack build {name}: failed: {type(exc).__name__}: {exc}")
                del builders[name]
                continue
            times[name].append((time.perf_counter() - start) * 1000)
    for name in builders:
        out[name] = summarize(times[name], None)
    if out["pycontain"] and out["docker"]:
        out["x_docker_over_pycontain"] = round(
            out["docker"]["median_ms"] / out["pycontain"]["median_ms"], 2)
    return out
