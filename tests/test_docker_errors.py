"""The Docker backend's one error map: what docker-py, requests and urllib3 raise, as a real
engine (the session's private dockerd, or a socket where none listens) makes them raise it,
becomes ours, with the foreign error kept as the cause."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from pytest_pycontain import errors
from pytest_pycontain.config import Settings
from pytest_pycontain.docker import (
    KEPT_SUFFIX,
    LABEL_HOST,
    LABEL_PID,
    LABEL_START,
    DockerEngine,
    map_error,
)
from pytest_pycontain.docker.client import EngineApi
from pytest_pycontain.docker.labels import left_by_dead_owner, owner_labels
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.procinfo import process_start_time

docker = pytest.importorskip("docker")
requests = pytest.importorskip("requests")


@pytest.fixture(scope="module")
def engine(dockerd):
    engine = DockerEngine(Settings(), base_url=dockerd.host)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def busybox(engine):
    return engine.pull("busybox")


@pytest.fixture
def sleeper(engine, busybox):
    container = engine.run(RunSpec(busybox, command="sleep 1000"))
    yield container
    container.remove()


@pytest.mark.dockerd
def test_a_missing_image_is_image_not_found(engine) -> None:
    with pytest.raises(errors.ImageNotFound, match="pycontain-missing:never") as info:
        engine.image("pycontain-missing:never")
    assert isinstance(info.value.__cause__, docker.errors.ImageNotFound)
    with pytest.raises(errors.ImageNotFound) as info, \
            engine.api.mapped("run x", error=errors.ContainerError):  # not the caller's error
        engine.api.create_container("pycontain-missing:never")
    assert "run x: " in str(info.value)
    assert isinstance(info.value.__cause__, docker.errors.ImageNotFound)


@pytest.mark.dockerd
def test_a_missing_image_in_a_pull_stays_a_pull_error(engine) -> None:
    with pytest.raises(errors.PullError) as info, \
            engine.api.mapped("pull x", error=errors.PullError, reference="x"):
        raise docker.errors.ImageNotFound("no such image")  # docker-py's own class
    assert info.value.reference == "x"


@pytest.mark.dockerd
def test_a_bad_request_is_the_callers_error_in_the_engines_words(engine, busybox) -> None:
    before = engine.api.containers(all=True)
    with pytest.raises(errors.ContainerError, match=r"create bad/name: .*[Ii]nvalid") as info, \
            engine.api.mapped("create bad/name", container="bad/name"):
        engine.api.create_container(busybox.id, name="bad/name")
    cause = info.value.__cause__
    assert isinstance(cause, docker.errors.APIError) and cause.status_code == 400
    assert info.value.container == "bad/name"
    with pytest.raises(errors.NetworkError, match=r"create net: .*no-such-driver") as info, \
            engine.api.mapped("create net", error=errors.NetworkError):
        engine.api.create_network("pycontain-bad-driver", driver="no-such-driver")
    assert isinstance(info.value.__cause__, docker.errors.APIError)
    assert engine.api.containers(all=True) == before


@pytest.mark.dockerd
def test_a_container_removed_behind_our_back(engine, busybox) -> None:
    container = engine.run(RunSpec(busybox, command="sleep 1000"))
    engine.api.remove_container(container.id, force=True)
    with pytest.raises(errors.ContainerError, match="is gone") as info:
        container.inspect()
    assert isinstance(info.value.__cause__, docker.errors.NotFound)
    with pytest.raises(errors.ContainerError, match=f"logs of {container.name}: ") as info:
        container.logs()
    assert info.value.container == container.id
    assert isinstance(info.value.__cause__, docker.errors.NotFound)
    with pytest.raises(errors.ContainerError, match=f"exec .* in {container.name}: "):
        container.exec("true")
    container.kill()  # a gone container: nothing to do, as before
    container.stop(timeout=0)
    container.remove()
    assert container.status == "removed"


@pytest.mark.dockerd
def test_an_answer_that_does_not_come_in_time(engine, sleeper) -> None:
    with pytest.raises(errors.WaitTimeout, match="did not answer in time") as info:
        engine.api.wait(sleeper.id, timeout=0.5)
    assert isinstance(info.value.__cause__, (requests.exceptions.Timeout,
                                             requests.exceptions.ConnectionError))
    with pytest.raises(errors.WaitTimeout, match=r"still runs after 0\.5s"):
        sleeper.wait(timeout=0.5)
    assert sleeper.status == "running"


def test_no_engine_behind_the_socket_is_engine_unavailable(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/docker.sock"
    api = EngineApi(docker.APIClient(base_url=url, version="1.41", timeout=5), url)
    try:
        with pytest.raises(errors.EngineUnavailable, match=f"lost the Docker engine at {url}"
                           ) as info:
            api.containers()
        assert isinstance(info.value.__cause__, requests.exceptions.ConnectionError)
        listener = socket.socket(socket.AF_UNIX)  # one that takes the call and hangs up
        listener.bind(f"{tmp_path}/docker.sock")
        listener.listen()
        try:
            threading.Thread(target=_hang_up, args=(listener,), daemon=True).start()
            with pytest.raises(errors.EngineUnavailable, match="lost the Docker engine") as info:
                api.ping()
            assert isinstance(info.value.__cause__, requests.exceptions.ConnectionError)
        finally:
            listener.close()
    finally:
        api.close()


def _hang_up(listener: socket.socket) -> None:
    """Take one call and close it unanswered."""
    with contextlib.suppress(OSError):
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()


def test_the_map_leaves_ours_and_unknown_errors_alone() -> None:
    ours = errors.NetworkError("ours")
    assert map_error(ours, "x", engine="unix:///x") is ours
    unknown = ValueError("not a foreign engine error")
    assert map_error(unknown, "x", engine="unix:///x") is unknown
    refused = map_error(docker.errors.APIError("refused"), "stop c", engine="unix:///x",
                        container="c")
    assert isinstance(refused, errors.ContainerError) and refused.container == "c"
    assert str(refused).startswith("stop c: ")


@pytest.mark.dockerd
def test_the_archive_stat_is_a_plain_head(engine, sleeper) -> None:
    header = engine.api.archive_stat(sleeper.id, "/etc")
    stat = json.loads(base64.b64decode(header))
    assert stat["name"] == "etc" and stat["mode"] & (1 << 31)  # Go's os.ModeDir
    assert engine.api.archive_stat(sleeper.id, "/no/such/path") is None


def test_owner_labels_and_the_reapers_rule() -> None:
    labels = owner_labels("s1", extra="yes")
    assert labels[LABEL_PID] == str(os.getpid()) and labels["extra"] == "yes"
    assert labels[LABEL_START] == str(process_start_time(os.getpid()))
    assert not left_by_dead_owner(labels, "name")  # we live
    recycled = {**labels, LABEL_START: "1"}  # our pid, another process's start time
    assert left_by_dead_owner(recycled, "name")
    assert not left_by_dead_owner(recycled, "name" + KEPT_SUFFIX)  # kept: never reaped
    assert not left_by_dead_owner({**recycled, LABEL_HOST: "elsewhere"}, "name")
    assert not left_by_dead_owner({**recycled, LABEL_PID: "not-a-pid"}, "name")
    without_start = {k: v for k, v in labels.items() if k != LABEL_START}
    assert not left_by_dead_owner(without_start, "name")  # older labels: the pid alone
