"""The Docker backend against the test session's private dockerd: the engine contract, plus what
only it has (ports through the engine, networks by name, faults from the host, BuildKit builds,
labels and reaping) and its bad input."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_contract import PING_ONCE, REACH, SECOND, EngineContract

from pytest_pycontain import errors
from pytest_pycontain.config import Settings
from pytest_pycontain.docker import (
    LABEL_HOST,
    LABEL_PID,
    LABEL_SESSION,
    DockerEngine,
    DockerImage,
    build_failure,
    dockerfile_line,
    listening,
)
from pytest_pycontain.engine import Engine, RunSpec

pytestmark = pytest.mark.dockerd


def module_engine(host: str) -> Iterator[DockerEngine]:
    """A Docker engine on ``host`` for a module's tests; nothing of its session is left after."""
    engine = DockerEngine(Settings(), base_url=host)
    yield engine
    engine.close()
    api = engine._connect()
    left = api.containers(all=True, filters={"label": f"{LABEL_SESSION}={engine.session_id}"})
    nets = api.networks(filters={"label": f"{LABEL_SESSION}={engine.session_id}"})
    api.close()
    assert not left and not nets, "the engine left containers or networks behind"


def image_maker(engine: DockerEngine, make_one: Callable[..., DockerImage]
                ) -> Iterator[Callable[..., DockerImage]]:
    """``make_image`` over ``make_one(**config)``: each image made is removed at the end."""
    made: list[str] = []

    def make(**config: Any) -> DockerImage:
        image = make_one(**config)
        if image.id not in made:  # the same config again may be the same image
            made.append(image.id)
        return image

    yield make
    for image_id in made:
        engine.api.remove_image(image_id, force=True)


@pytest.fixture(scope="module")
def engine(dockerd):
    yield from module_engine(dockerd.host)


@pytest.fixture(scope="module")
def busybox(engine) -> DockerImage:
    return engine.pull("busybox")


@pytest.fixture(scope="module")
def make_image(engine, busybox):
    """``busybox`` with its config overridden, committed by the engine."""

    def commit(**config: Any) -> DockerImage:
        base = engine.api.create_container(busybox.id, command=["true"])
        try:
            conf = {**{k: v for k, v in busybox.config.items() if v is not None}, **config}
            image_id = engine.api.commit(base["Id"], conf=conf)["Id"]
        finally:
            engine.api.remove_container(base["Id"], force=True)
        return engine.image(image_id)

    yield from image_maker(engine, commit)


class TestDockerContract(EngineContract):
    """The shared contract, on a Docker Engine."""

    def test_healthcheck(self, run, make_image) -> None:
        """Docker counts failures from the first probe (one interval after start), so with a
        50 ms interval "starting" is already over when the second container is up: only the
        end states are the contract here."""
        check = {"Interval": SECOND // 20, "Timeout": SECOND, "Retries": 2}
        good = run(make_image(Healthcheck={**check, "Test": ["CMD-SHELL", "test -e /tmp/ready"]},
                              Cmd=["sh", "-c", "sleep 0.2; touch /tmp/ready; sleep 1000"]))
        bad = run(make_image(Healthcheck={**check, "Test": ["CMD", "false"]},
                             Cmd=["sleep", "1000"]))
        assert good.health in ("starting", "unhealthy", "healthy")
        _until(lambda: good.health == "healthy" and bad.health == "unhealthy")
        plain = run(command="sleep 1000")
        assert plain.health is None


def test_is_an_engine(engine) -> None:
    assert isinstance(engine, Engine)
    line = engine.describe()
    assert "Docker Engine" in line and engine.base_url in line
    assert "BuildKit" in line or "classic" in line


def test_a_served_file_reaches_the_test_process(engine, busybox) -> None:
    web = engine.run(RunSpec(busybox, name="web", ports=[8080], command=(
        "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www")))
    try:
        _until(lambda: web.probe_port(8080))
        assert not web.probe_port(8081)
        host, port = web.address(8080)
        assert host == "127.0.0.1"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy
        with direct.open(f"http://{host}:{port}/index.html", timeout=10) as answer:
            assert answer.read() == b"served\n"
        with pytest.raises(errors.NetworkError, match="port 9999 of web is not published"):
            web.address(9999)
    finally:
        web.remove()
    assert web.status == "removed"


def test_a_chosen_host_port(engine, busybox) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    web = engine.run(RunSpec(busybox, ports={8080: free}, command="exec httpd -f -p 8080"))
    try:
        assert web.address(8080) == ("127.0.0.1", free)
    finally:
        web.remove()


@pytest.fixture
def pair(engine, busybox):
    """A server (httpd on 8080, also called "db") and a client on one network."""
    net = engine.network("backend")
    server = engine.run(RunSpec(busybox, name="server", network=net, aliases=["db"],
                                command="echo pong > /tmp/ping; exec httpd -f -p 8080 -h /tmp"))
    client = engine.run(RunSpec(busybox, name="client", network=net, command="sleep 1000"))
    _until(lambda: server.probe_port(8080))
    yield net, server, client
    server.remove()
    client.remove()
    net.remove()


FETCH = "printf 'GET /ping HTTP/1.0\\r\\n\\r\\n' | nc -w 2 server 8080"


def test_containers_reach_each_other_by_name(pair) -> None:
    net, server, client = pair
    assert net.name == "backend" and net.engine_name.startswith("backend-")
    assert net.subnet.count(".") == 3 and "/" in net.subnet
    assert server.engine_name.startswith("server-") and server.name == "server"
    for name in ("server", "db"):
        found = client.exec(f"nslookup {name}")
        assert found.exit_code == 0 and server.ip in found.stdout, found.output
    assert client.exec(FETCH).stdout.endswith("pong\n")


def test_partition_and_heal(pair) -> None:
    net, server, client = pair
    net.partition(client, server)
    assert client.exec(FETCH, timeout=10).exit_code != 0
    assert server.exec(PING_ONCE.format(client.ip)).exit_code != 0
    net.heal()
    assert client.exec(FETCH).stdout.endswith("pong\n")
    with pytest.raises(errors.NetworkError, match="from itself"):
        net.partition(client, client)


def test_total_loss(pair) -> None:
    net, server, client = pair
    net.loss(client, 100)
    assert client.exec(PING_ONCE.format(server.ip)).exit_code != 0
    net.loss(client, 0)
    assert client.exec(REACH.format(server.ip)).exit_code == 0
    with pytest.raises(errors.NetworkError, match="between 0 and 100"):
        net.loss(client, 120)


def test_delay_makes_a_round_trip_at_least_that_long(pair) -> None:
    net, server, client = pair
    try:
        net.delay(client, 200)
    except errors.NotSupported as exc:
        pytest.skip(f"this kernel cannot delay packets: {exc}")
    rtt = client.exec(REACH.format(server.ip))
    assert rtt.exit_code == 0, rtt.output
    assert _ping_ms(rtt.stdout) >= 200
    net.delay(client, 0)
    assert client.exec(REACH.format(server.ip)).exit_code == 0


def test_faults_need_a_member_of_the_network(engine, busybox) -> None:
    net = engine.network()
    loner = engine.run(RunSpec(busybox, command="sleep 1000"))
    try:
        with pytest.raises(errors.NetworkError, match="is not on network"):
            net.delay(loner, 100)
    finally:
        loner.remove()
        net.remove()


@pytest.fixture
def tcp_engine(dockerd, engine):
    """The same daemon behind a tcp:// DOCKER_HOST (a byte relay to its socket) on a host
    address that is not loopback (the daemon's link to this namespace), as a remote engine is
    reached."""
    relay = _TcpToUnix(str(dockerd.socket_path), dockerd.host_address)
    engine = DockerEngine(Settings(), base_url=f"tcp://{relay.host}:{relay.port}", reap=False)
    yield engine
    engine.close()
    relay.close()


def test_a_remote_engine(tcp_engine, busybox) -> None:
    """Ports are published on every interface of the engine's host and addressed by its name,
    probed by exec (no namespace to read), and faults say they cannot be made."""
    engine = tcp_engine
    assert not engine.is_local and engine.address_host == engine.base_url[6:].split(":")[0]
    net = engine.network()
    web = engine.run(RunSpec(busybox.id, network=net, ports=[8080],
                             command="echo remote > /tmp/i; exec httpd -f -p 8080 -h /tmp"))
    _until(lambda: web.probe_port(8080))
    assert engine.local_pid(web) is None and not web.probe_port(8081)
    published = {b["HostIp"] for b in web.inspect()["NetworkSettings"]["Ports"]["8080/tcp"]}
    assert published == {"127.0.0.1"} if engine.loopback else published <= {"0.0.0.0", "::"}
    host, port = web.address(8080)
    assert host == engine.address_host
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(f"http://{host}:{port}/i", timeout=10) as answer:
        assert answer.read() == b"remote\n"
    assert web.exec("cat", stdin="through the relay").output == "through the relay"
    with pytest.raises(errors.NotSupported, match="only a Docker engine on this host"):
        net.delay(web, 100)
    with pytest.raises(errors.NotSupported, match=re.escape(engine.base_url)):
        net.partition(web, web)


def test_host_network_and_an_image_object(engine, busybox) -> None:
    by_tag = type("Tagged", (), {"tags": ["busybox:latest"]})()
    container = engine.run(RunSpec(by_tag, network="host", command="sleep 1000"))
    try:
        assert container.image is by_tag
        assert container.address(8080) == ("127.0.0.1", 8080)
        assert container.exec("cat /proc/net/dev").exit_code == 0
        assert container.ip is None
        assert container.exec("hostname").output == socket.gethostname() + "\n"  # as native
    finally:
        container.remove()


def test_build_with_its_config(engine, busybox, tmp_path: Path) -> None:
    (tmp_path / "greeting.txt").write_text("hello from the context\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\n"
        "ARG FLAVOUR=plain\n"
        "RUN echo $FLAVOUR > /flavour\n"
        "COPY greeting.txt /srv/\n"
        "ENV MODE=test\n"
        "WORKDIR /srv\n"
        "EXPOSE 8080\n"
        "LABEL org.example.kind=demo\n"
        'CMD ["cat", "/srv/greeting.txt", "/flavour"]\n')
    image = engine.build(tmp_path, build_args={"FLAVOUR": "spicy"},
                         tag="pycontain-test/built:1")
    try:
        assert image.id.startswith("sha256:") and "pycontain-test/built:1" in image.tags
        assert "MODE=test" in image.config["Env"]
        assert image.config["Cmd"] == ["cat", "/srv/greeting.txt", "/flavour"]
        assert image.config["WorkingDir"] == "/srv"
        assert image.config["ExposedPorts"] == {"8080/tcp": {}}
        assert image.config["Labels"] == {"org.example.kind": "demo"}
        assert image.config["Entrypoint"] is None
        container = engine.run(RunSpec(image))
        assert container.wait(timeout=10) == 0
        assert container.logs() == "hello from the context\nspicy\n"
        container.remove()
    finally:
        engine.api.remove_image(image.id, force=True)


def test_a_failing_build_says_where(engine, busybox, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\n\n# a comment\nRUN echo fine\nRUN echo something broke >&2 && \\\n"
        "    exit 3\n")
    with pytest.raises(errors.BuildError) as info:
        engine.build(tmp_path, no_cache=True)
    assert info.value.line == 5 and info.value.exit_code == 3
    assert str(info.value).startswith(f"{tmp_path / 'Dockerfile'}:5: ")
    assert "something broke" in info.value.logs
    (tmp_path / "Dockerfile").write_text("FROM busybox\nFROBNICATE now\n")
    with pytest.raises(errors.BuildError, match="unknown instruction") as info:
        engine.build(tmp_path)
    assert info.value.line == 2
    with pytest.raises(errors.DockerfileError, match="no such Dockerfile"):
        engine.build(tmp_path, dockerfile="Missing.dockerfile")


def test_build_secrets_reach_buildkit(engine, busybox, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /len\n"
        'CMD ["cat", "/len"]\n')
    image = engine.build(context, secrets={"token": secret}, no_cache=True)
    try:
        container = engine.run(RunSpec(image))
        assert container.wait(timeout=10) == 0
        assert container.logs().strip() == "6"
        container.remove()
    finally:
        engine.api.remove_image(image.id, force=True)


def test_the_classic_builder_where_no_cli_builds(engine, busybox, tmp_path: Path,
                                                 monkeypatch) -> None:
    import pytest_pycontain.docker.build as backend

    monkeypatch.setattr(backend, "_BUILDERS", [])
    assert "classic builder" in engine.describe()
    (tmp_path / "Dockerfile").write_text("FROM busybox\nENV MODE=classic\nCMD [\"true\"]\n")
    image = engine.build(tmp_path)
    try:
        assert "MODE=classic" in image.config["Env"] and image.config["Cmd"] == ["true"]
    finally:
        engine.api.remove_image(image.id, force=True)
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo fine\nRUN echo broke >&2 && \\\n"
                                         "    exit 4\n")
    with pytest.raises(errors.BuildError, match="returned a non-zero code: 4") as info:
        engine.build(tmp_path)
    assert (info.value.line, info.value.exit_code) == (3, 4)
    assert "broke" in info.value.logs
    with pytest.raises(errors.NotSupported, match="build secrets need BuildKit"):
        engine.build(tmp_path, secrets={"token": tmp_path / "Dockerfile"})


def test_build_failure_parsing() -> None:
    text = "FROM busybox\nRUN a \\\n  b\nRUN   echo   hi\n"
    assert dockerfile_line(text, "RUN a b") == 2
    assert dockerfile_line(text, "run echo hi") == 4
    assert dockerfile_line(text, "RUN nope") is None
    assert dockerfile_line("RUN a b\nRUN a\n", "RUN a") == 2  # exact before prefix
    buildx = ("Dockerfile:7\n--------------------\nERROR: failed to solve: process "
              '"/bin/sh -c false" did not complete successfully: exit code: 1\n')
    assert build_failure(buildx, Path("/nonexistent/Dockerfile"))[1:] == (7, 1)
    classic = "Step 2/3 : RUN a b\n ---> Running\nThe command '/bin/sh -c a b' returned a " \
              "non-zero code: 5\n"
    assert build_failure(classic, Path("/nonexistent/Dockerfile"))[2] == 5


def test_listening_reads_proc_net_tcp() -> None:
    table = ("  sl  local_address rem_address   st tx_queue rx_queue\n"
             "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000\n"
             "   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000\n")
    assert listening(table, 8080)
    assert not listening(table, 80)  # established, not listening


def test_pull_and_image_errors(engine) -> None:
    image = engine.pull("busybox:latest")
    assert "busybox:latest" in image.tags and image.config["Cmd"] == ["sh"]
    with pytest.raises(errors.PullError, match="no-such-image"):
        engine.pull("no-such-image-anywhere:1")
    never = DockerEngine.__new__(DockerEngine)
    never.__dict__.update(engine.__dict__, settings=Settings(pull="never"))
    with pytest.raises(errors.ImageNotFound, match="pull=never"):
        never.run(RunSpec("not-pulled-here:1"))


def test_bad_run_arguments_leave_nothing(engine, busybox) -> None:
    before = _ours(engine)
    with pytest.raises(errors.ConfigError, match="mounts: 'relative'"):
        engine.run(RunSpec(busybox, mounts=["relative"]))
    with pytest.raises(errors.ConfigError, match="memory: 'lots'"):
        engine.run(RunSpec(busybox, memory="lots", ports=[80]))
    with pytest.raises(errors.ConfigError, match="does not exist on the host"):
        engine.run(RunSpec(busybox, mounts=["/no/such/dir:/data"], ports=[80]))
    with pytest.raises(errors.ConfigError, match="ports: 70000"):
        engine.run(RunSpec(busybox, ports=[70000]))
    with pytest.raises(errors.ContainerError, match="executable file not found"):
        engine.run(RunSpec(busybox, command=["nope"], ports=[80]))
    assert _ours(engine) == before


def test_limits(engine, busybox) -> None:
    container = engine.run(RunSpec(busybox, command="sleep 1000", memory="64m", cpus=0.5,
                                   pids=50))
    try:
        host = container.inspect()["HostConfig"]
        assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 5 * 10**8, 50)
    finally:
        container.remove()


def test_volumes_are_dockers_own(engine, busybox, make_image) -> None:
    """A named volume is a labelled Docker volume under a unique name; an image VOLUME's
    anonymous one goes with its container."""
    api = engine.api
    named = engine.volume("docker-data")
    info = api.inspect_volume(named.engine_name)
    assert info["Labels"][LABEL_SESSION] == engine.session_id
    assert named.engine_name.startswith("docker-data-")
    container = engine.run(RunSpec(image=make_image(Volumes={"/anon": {}}),
                                   command=["sleep", "1000"], volumes={named: "/named"}))
    mounts = {m["Destination"]: m for m in api.inspect_container(container.id)["Mounts"]}
    anonymous = mounts["/anon"]["Name"]
    assert mounts["/named"]["Name"] == named.engine_name
    container.remove()
    left = {v["Name"] for v in api.volumes().get("Volumes") or []}
    assert anonymous not in left and named.engine_name in left
    named.remove()
    assert named.engine_name not in {v["Name"] for v in api.volumes().get("Volumes") or []}

def test_labels_and_reaping_a_dead_owner(engine, busybox) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    leftovers = {LABEL_SESSION: "dead-session", LABEL_PID: str(dead.pid), LABEL_HOST: here}
    alive = {LABEL_SESSION: "live-session", LABEL_PID: "1", LABEL_HOST: here}
    api = engine.api
    made = []
    for labels in (leftovers, alive):
        net = api.create_network(f"reap-{labels[LABEL_SESSION]}", labels=labels)["Id"]
        box = api.create_container(busybox.id, command=["sleep", "1000"], labels=labels)["Id"]
        api.start(box)
        volume = api.create_volume(labels=labels)["Name"]
        made.append((net, box, volume))
    container = engine.run(RunSpec(busybox, command="sleep 1000"))
    try:
        labels = container.inspect()["Config"]["Labels"]
        assert labels[LABEL_SESSION] == engine.session_id
        assert labels[LABEL_PID] == str(__import__("os").getpid())
        removed = engine.reap()
        (net, box, volume), live = made
        assert f"volume {volume}" in removed
        assert not api.containers(all=True, filters={"id": box})
        assert not api.networks(ids=[net])
        assert all(volume != v["Name"] for v in api.volumes()["Volumes"] or [])
        assert api.containers(filters={"id": live[1]}), "a live owner's container was reaped"
        assert container.status == "running", "the engine reaped its own"
    finally:
        container.remove()
        net, box, volume = made[1]
        api.remove_container(box, force=True)
        api.remove_network(net)
        api.remove_volume(volume)


def test_close_removes_what_the_engine_made(dockerd, busybox) -> None:
    engine = DockerEngine(Settings(), base_url=dockerd.host)
    net = engine.network()
    engine.run(RunSpec(busybox, network=net, command="sleep 1000"))
    engine.run(RunSpec(busybox, ports=[80], command="sleep 1000"))
    assert len(_ours(engine)) == 4  # two containers, a network, the second one's own network
    engine.close()
    other = DockerEngine(Settings(), base_url=dockerd.host, reap=False)
    try:
        other.session_id = engine.session_id
        assert _ours(other) == set()
    finally:
        other.close()


def test_kept_containers_outlive_close_and_reaping(dockerd, busybox) -> None:
    engine = DockerEngine(Settings(), base_url=dockerd.host)
    kept = engine.run(RunSpec(busybox, name="keepme", command="sleep 1000"))
    gone = engine.run(RunSpec(busybox, command="sleep 1000"))
    try:
        assert kept.keep() == kept.id and kept.engine_name.endswith(".kept")
        engine.close()
        other = DockerEngine(Settings(), base_url=dockerd.host)
        assert other.api.containers(filters={"id": kept.id}), "close() removed a kept container"
        assert not other.api.containers(all=True, filters={"id": gone.id})
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        orphan = other.api.create_container(
            busybox.id, command=["true"], name=f"orphan-{dead.pid}.kept",
            labels={LABEL_SESSION: "x", LABEL_PID: str(dead.pid), LABEL_HOST: socket.gethostname()})
        other.reap()
        assert other.api.containers(all=True, filters={"id": orphan["Id"]}), "reaped a kept one"
        other.api.remove_container(orphan["Id"], force=True)
        other.close()
    finally:
        engine.api.remove_container(kept.id, force=True)


def test_a_kept_containers_network_stays_for_it(engine, busybox) -> None:
    net = engine.network()
    kept = engine.run(RunSpec(busybox, network=net, command="sleep 1000"))
    try:
        assert engine.keep(kept) == kept.id
        net.remove()  # no error: the network stays while its kept member lives
        assert engine.api.networks(ids=[net.id])
    finally:
        engine.api.remove_container(kept.id, force=True)
        engine.api.remove_network(net.id)
    with pytest.raises(errors.ContainerError, match="is not a container of this engine"):
        engine.keep(object())


def test_no_socket(tmp_path: Path) -> None:
    where = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(errors.EngineUnavailable,
                       match=re.escape(f"cannot reach a Docker engine at {where}: ")):
        DockerEngine(Settings(), base_url=where)


def test_no_socket_anywhere(monkeypatch, tmp_path: Path) -> None:
    if Path("/var/run/docker.sock").exists():
        pytest.skip("this host has a Docker socket at /var/run/docker.sock")
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = "cannot reach a Docker engine at unix:///var/run/docker.sock: "
    with pytest.raises(errors.EngineUnavailable, match=re.escape(expected)):
        DockerEngine(Settings())


def test_importing_the_module_stays_cheap() -> None:
    code = ("import sys, pytest_pycontain.docker; "
            "print(sorted(m for m in ('docker', 'pyroute2', 'requests') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


# -- helpers --------------------------------------------------------------------------------------
def _ours(engine) -> set[str]:
    label = f"{LABEL_SESSION}={engine.session_id}"
    api = engine.api
    return ({c["Id"] for c in api.containers(all=True, filters={"label": label})}
            | {n["Id"] for n in api.networks(filters={"label": label})})


def _ping_ms(output: str) -> float:
    for line in output.splitlines():
        if "time=" in line:
            return float(line.split("time=")[1].split()[0])
    raise AssertionError(f"no round trip in {output!r}")


class _TcpToUnix:
    """A TCP listener relaying bytes (and half-closes) to a unix socket."""

    def __init__(self, path: str, host: str):
        self.path = path
        self.server = socket.create_server((host, 0))
        self.host, self.port = self.server.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="drops root's capabilities with setpriv")
def test_faults_without_the_capabilities_are_not_supported() -> None:
    script = ("from pytest_pycontain.docker import in_netns\n"
              "from pytest_pycontain.errors import NotSupported\n"
              "try:\n    in_netns(1, lambda ipr: None)\n"
              "except NotSupported as exc:\n    print(exc)\n")
    done = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable,
                           "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert "enter the container's network namespace (/proc/1/ns/net), which needs root" \
        in done.stdout, done.stderr


@pytest.mark.dockerd
def test_a_volume_whose_maker_died_before_its_container_was_kept_is_reaped(
        dockerd: Any) -> None:
    """A reused container's volume has a kept name from the start (Docker cannot rename a
    volume), so the reaper's rule for kept names spares it; one whose maker died and whose
    key no container has is taken by the next engine's reaper, one whose container is there
    stays."""
    from pytest_pycontain.config import Settings
    from pytest_pycontain.docker import DockerEngine
    from pytest_pycontain.docker.labels import (
        KEPT_SUFFIX,
        LABEL_REUSE_KEY,
        LABEL_START,
        owner_labels,
    )

    engine = DockerEngine(Settings(), base_url=dockerd.host)
    api = engine.api
    dead = {**owner_labels("dead-session"), LABEL_START: "1"}  # our pid, another's start
    made: list[str] = []
    holder = None
    try:
        image = engine.pull("busybox")
        holder = api.create_container(  # a live run's (the reaper leaves it alone)
            image.id, command=["true"],
            labels={**owner_labels("live-session"), LABEL_REUSE_KEY: "held"})["Id"]
        for key in ("orphan", "held"):
            name = f"data-{key}-{os.getpid()}{KEPT_SUFFIX}"
            api.create_volume(name, labels={**dead, LABEL_REUSE_KEY: key})
            made.append(name)
        reaped = DockerEngine(Settings(), base_url=dockerd.host).reaped
        names = {v["Name"] for v in (api.volumes() or {}).get("Volumes") or []}
        assert made[0] not in names and f"volume {made[0]}" in reaped
        assert made[1] in names  # its container is there
    finally:
        for name in made:
            with contextlib.suppress(Exception):
                api.remove_volume(name, force=True)
        if holder is not None:
            api.remove_container(holder, force=True)
        engine.close()
