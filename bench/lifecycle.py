"""The lifecycle (docs/benchmarks.md) for each engine and peer: create and start a busybox
container on a network, exec ``true``, kill, remove.

Each peer is a ``Peer``: ``setup()`` makes the network (once per run, or per lifecycle when
``fresh_network``), ``once()`` does one lifecycle, ``teardown()`` removes what setup made.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from typing import Any

from .env import DOCKER_CLI, IMAGE, Env, skipped
from .stats import summarize

SLEEP = ["sleep", "3600"]  # busybox's Cmd is ``sh``, which exits at once without a terminal


def drain(engine: Any) -> None:
    """Wait until the native engine's background teardown has caught up, so that
    back-to-back timings count it (engines without background teardown have no ``drain``)."""
    waiting = getattr(engine, "drain", None)
    if waiting is not None:
        waiting()


class Peer:
    fresh_network = False

    def setup(self) -> None: ...

    def once(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None: ...

    def settle(self) -> None:
        """Called before the clock stops on a batch."""


class EnginePeer(Peer):
    """Our engines (native, docker backend) through the engine protocol."""

    def __init__(self, engine: Any, fresh_network: bool = False, loopback: bool = False):
        from pytest_pycontain.engine import RunSpec

        self.engine = engine
        self.fresh_network = fresh_network
        self.loopback = loopback  # own network namespace with ``lo`` only, no bridge
        self.RunSpec = RunSpec
        self.net: Any = None

    def setup(self) -> None:
        if not self.fresh_network and not self.loopback:
            self.net = self.engine.network()

    def once(self) -> None:
        net = self.engine.network() if self.fresh_network and not self.loopback else self.net
        container = self.engine.run(self.RunSpec(image=IMAGE, command=SLEEP, network=net))
        result = container.exec(["true"])
        if result.exit_code != 0:
            raise RuntimeError(f"exec true exited {result.exit_code}: {result.output}")
        container.kill()
        container.remove()
        if self.fresh_network and net is not None:
            net.remove()

    def teardown(self) -> None:
        if self.net is not None:
            self.net.remove()
            self.net = None

    def settle(self) -> None:
        drain(self.engine)


class RawDockerPeer(Peer):
    """The ``docker`` package's low-level client, the calls the backend makes and no more."""

    def __init__(self, base_url: str):
        import docker

        self.api = docker.APIClient(base_url=base_url, version="auto")
        self.net = ""

    def setup(self) -> None:
        self.net = f"bench-raw-{secrets.token_hex(4)}"
        self.api.create_network(self.net, driver="bridge")

    def once(self) -> None:
        host_config = self.api.create_host_config(network_mode=self.net)
        cid = self.api.create_container(IMAGE, SLEEP, host_config=host_config)["Id"]
        self.api.start(cid)
        exec_id = self.api.exec_create(cid, ["true"])["Id"]
        self.api.exec_start(exec_id)
        if self.api.exec_inspect(exec_id)["ExitCode"] != 0:
            raise RuntimeError("exec true failed")
        self.api.kill(cid)
        self.api.remove_container(cid, force=True)

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.api.remove_network(self.net)
        self.api.close()


class CliPeer(Peer):
    """``docker run --rm`` or ``podman run --rm`` on a user network, as a shell user would."""

    def __init__(self, command: list[str], env: dict[str, str],
                 rm: tuple[str, ...] = ("rm", "-f")):
        self.command = command  # the CLI, with what runs it where its engine is (nsenter)
        self.env = env
        self.rm = rm
        self.net = ""

    def _run(self, *argv: str, ok_errors: tuple[str, ...] = ()) -> str:
        result = subprocess.run([*self.command, *argv], env=self.env, capture_output=True,
                                text=True)
        if result.returncode != 0 and not any(e in result.stderr for e in ok_errors):
            raise RuntimeError(f"{self.command[-1]} {' '.join(argv)}: exit {result.returncode}: "
                               f"{result.stderr.strip()[-300:]}")
        return result.stdout.strip()

    def setup(self) -> None:
        self.net = f"bench-cli-{secrets.token_hex(4)}"
        self._run("network", "create", self.net)

    def once(self) -> None:
        cid = self._run("run", "--rm", "-d", "--network", self.net, IMAGE, *SLEEP)
        self._run("exec", cid, "true")
        # kill (SIGKILL, no grace period) and remove, returning once it is gone: docker's
        # ``rm -f`` does both; podman's needs ``-t 0`` or it waits 10 s for SIGTERM first
        self._run(*self.rm, cid, ok_errors=("already in progress", "No such container",
                                              "no such container"))

    def teardown(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("network", "rm", self.net)


class TestcontainersPeer(Peer):
    """testcontainers-python with its reaper (Ryuk) disabled."""

    def __init__(self, docker_host: str):
        self.saved = {k: os.environ.get(k) for k in ("DOCKER_HOST",
                                                      "TESTCONTAINERS_RYUK_DISABLED")}
        os.environ["DOCKER_HOST"] = docker_host
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.network import Network

        self.DockerContainer = DockerContainer
        self.network = Network()

    def setup(self) -> None:
        self.network.create()

    def once(self) -> None:
        container = (self.DockerContainer(IMAGE).with_command(" ".join(SLEEP))
                     .with_network(self.network))
        container.start()
        code, _ = container.exec(["true"])
        if code != 0:
            raise RuntimeError(f"exec true exited {code}")
        container.stop()  # remove(force=True): kill and remove

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.network.remove()
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure_peer(peer: Peer, singles: int, batch: int, warmup: int = 2) -> dict:
    """Median and p90 of ``singles`` lifecycles and ``batch`` back-to-back ÷ ``batch``."""
    peer.setup()
    try:
        for _ in range(warmup):
            peer.once()
        peer.settle()
        samples = []
        for _ in range(singles):
            start = time.perf_counter()
            peer.once()
            samples.append((time.perf_counter() - start) * 1000)
            peer.settle()
        start = time.perf_counter()
        for _ in range(batch):
            peer.once()
        peer.settle()
        amortized = (time.perf_counter() - start) * 1000 / batch if batch else None
    finally:
        peer.teardown()
    row = summarize(samples, amortized)
    network = "fresh per lifecycle" if peer.fresh_network else "one shared per run"
    if getattr(peer, "loopback", False):
        network = "none: own namespace, loopback only"
    row.update(batch=batch, warmup=warmup, network=network)
    return row


def measure_pair(first: Peer, second: Peer, singles: int, batch: int,
                 warmup: int = 2) -> tuple[dict, dict]:
    """Two peers with their single lifecycles interleaved, so that a noisy neighbour on the
    machine hits both alike: for quoting one's overhead over the other."""
    pair = (first, second)
    samples: tuple[list[float], list[float]] = ([], [])
    for peer in pair:
        peer.setup()
    try:
        for peer in pair:
            for _ in range(warmup):
                peer.once()
            peer.settle()
        for _ in range(singles):
            for peer, times in zip(pair, samples, strict=True):
                start = time.perf_counter()
                peer.once()
                times.append((time.perf_counter() - start) * 1000)
                peer.settle()
        amortized = []
        for peer in pair:
            start = time.perf_counter()
            for _ in range(batch):
                peer.once()
            peer.settle()
            amortized.append((time.perf_counter() - start) * 1000 / batch if batch else None)
    finally:
        for peer in pair:
            peer.teardown()
    rows = []
    for times, each in zip(samples, amortized, strict=True):
        row = summarize(times, each)
        row.update(batch=batch, warmup=warmup, network="one shared per run",
                   interleaved=True)
        rows.append(row)
    return rows[0], rows[1]


def peers(env: Env) -> dict[str, Callable[[], Peer | None]]:
    """Makers of each peer, by its JSON key; a maker returns None (and says why) if missing."""

    def native() -> Peer:
        return EnginePeer(env.native)

    def native_loopback() -> Peer:
        return EnginePeer(env.native, loopback=True)

    def native_fresh() -> Peer:
        return EnginePeer(env.native, fresh_network=True)

    def backend() -> Peer | None:
        engine = env.docker_backend
        return None if engine is None else EnginePeer(engine)

    def raw() -> Peer | None:
        return None if env.dockerd is None else RawDockerPeer(env.dockerd.host)

    def docker_cli() -> Peer | None:
        if not os.path.exists(DOCKER_CLI):
            skipped(f"docker_cli: {DOCKER_CLI} is missing")
            return None
        return None if env.dockerd is None else CliPeer([DOCKER_CLI], env.dockerd.env())

    def podman_cli() -> Peer | None:
        podman = env.podman
        return None if podman is None else CliPeer(podman.command(), podman.env(),
                                                   rm=("rm", "-f", "-t", "0"))

    def testcontainers() -> Peer | None:
        if env.dockerd is None:
            return None
        try:
            return TestcontainersPeer(env.dockerd.host)
        except ImportError as exc:
            skipped(f"testcontainers: not installed ({exc}); pip install testcontainers")
            return None

    return {"native": native, "native_loopback": native_loopback,
            "native_fresh_network": native_fresh,
            "docker_backend": backend, "docker_raw": raw, "docker_cli": docker_cli,
            "podman_cli": podman_cli, "testcontainers": testcontainers}


def measure(env: Env, singles: int, batch: int, only: tuple[str, ...] | None = None) -> dict:
    """The lifecycle section: every peer's row (None when missing or failed, with a line)."""
    results: dict[str, Any] = {}
    makers = peers(env)
    wanted = [k for k in makers if only is None or k in only]
    if "docker_backend" in wanted and "docker_raw" in wanted:
        try:
            backend, raw = makers["docker_backend"](), makers["docker_raw"]()
            if backend is not None and raw is not None:
                results["docker_backend"], results["docker_raw"] = measure_pair(
                    backend, raw, singles, batch)
        except Exception as exc:
            skipped(f"lifecycle docker_backend/docker_raw: failed: {type(exc).__name__}: {exc}")
    for key, make in makers.items():
        if key not in wanted or key in results:
            continue
        try:
            peer = make()
            results[key] = None if peer is None else measure_peer(peer, singles, batch)
        except Exception as exc:  # a peer failing is a line in the report, not a crash
            skipped(f"lifecycle {key}: failed: {type(exc).__name__}: {exc}")
            results[key] = None
    native = (results.get("native") or {}).get("median_ms")
    native_amortized = (results.get("native") or {}).get("amortized_ms")
    for row in results.values():
        if row is not None and native:
            row["x_native_median"] = round(row["median_ms"] / native, 1)
            if native_amortized and row["amortized_ms"]:
                row["x_native_amortized"] = round(row["amortized_ms"] / native_amortized, 1)
    raw, backend = results.get("docker_raw"), results.get("docker_backend")
    if raw and backend:
        results["docker_backend_overhead_pct"] = round(
            (backend["median_ms"] / raw["median_ms"] - 1) * 100, 1)
    return results
