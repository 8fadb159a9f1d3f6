"""``Container.commit`` on both backends: a seeded container's filesystem as an image, and
independent copies from it (Docker's ``docker commit`` is the reference)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import ContainerError


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory, test_registry):
    if os.geteuid() != 0:
        pytest.skip("the native engine needs root")
    from pytest_pycontain.native.engine import NativeEngine
    from pytest_pycontain.store import Store

    state = tmp_path_factory.mktemp("state")
    store = Store(tmp_path_factory.mktemp("store"), registry_mirror=test_registry.url,
                  attempts=2, backoff=0.01)
    engine = NativeEngine(state_dir=state, store=store)
    yield engine, engine.pull("busybox")
    engine.close()
    engine.drain()
    assert not list((state / "containers").iterdir()), "the engine left container dirs"


@pytest.fixture(scope="module")
def docker(request: pytest.FixtureRequest):
    dockerd = request.getfixturevalue("dockerd")
    from pytest_pycontain.config import Settings
    from pytest_pycontain.docker import DockerEngine

    engine = DockerEngine(Settings(), base_url=dockerd.host)
    yield engine, engine.pull("busybox")
    engine.close()


@pytest.fixture(params=["native", pytest.param("docker", marks=pytest.mark.dockerd)])
def backend(request: pytest.FixtureRequest):
    engine, busybox = request.getfixturevalue(request.param)
    made = []

    def run(image=None, **options):
        container = engine.run(RunSpec(image=image or busybox, **options))
        made.append(container)
        return container

    yield engine, run
    for container in made:
        container.remove()


def test_copies_from_a_commit_see_the_seed_and_write_independently(backend) -> None:
    _engine, run = backend
    seeded = run(command="sleep 1000", env={"SEEDED": "yes"})
    assert seeded.exec("mkdir -p /data && echo seed > /data/db && rm /etc/group").exit_code == 0
    image = seeded.commit()
    assert image.id.startswith("sha256:")
    assert image.config["Cmd"] == ["/bin/sh", "-c", "sleep 1000"]
    assert "SEEDED=yes" in image.config["Env"]
    copies = [run(image=image) for _ in range(3)]
    for number, copy in enumerate(copies):
        assert copy.status == "running"
        assert copy.exec("cat /data/db").output == "seed\n"
        assert copy.exec("test -e /etc/group").exit_code == 1  # the deletion is in the image
        assert copy.exec(f"echo {number} >> /data/db").exit_code == 0
    for number, copy in enumerate(copies):
        assert copy.exec("cat /data/db").output == f"seed\n{number}\n"
    assert seeded.exec("cat /data/db").output == "seed\n"


def test_a_tagged_commit_runs_by_its_tag_and_leaves_mounts_out(backend, tmp_path: Path) -> None:
    _engine, run = backend
    host = tmp_path / "bound"
    host.mkdir()
    (host / "outside").write_text("host file\n")
    seeded = run(command="sleep 1000", mounts=[f"{host}:/mnt/bound"])
    seeded.exec("echo inside > /root/note; echo more > /mnt/bound/written")
    image = seeded.commit(tag="pycontain-commit-test:seeded")
    assert "pycontain-commit-test:seeded" in image.tags
    copy = run(image="pycontain-commit-test:seeded", command="sleep 1000")
    assert copy.exec("cat /root/note").output == "inside\n"
    assert copy.exec("ls -A /mnt/bound").output == ""  # the mount's target stays, empty
    assert copy.exec("cat /etc/hostname").output == copy.hostname + "\n"


def test_commit_of_a_removed_container_is_a_container_error(backend) -> None:
    _engine, run = backend
    container = run(command="sleep 1000")
    container.remove()
    with pytest.raises(ContainerError, match="removed"):
        container.commit()


def test_native_commit_stores_only_the_changes(native, tmp_path: Path) -> None:
    """The new layer is the container's diff, not its whole tree: the image's own layers are
    shared as they are, and the new one holds the changed file and the deletion."""
    engine, busybox = native
    container = engine.run(RunSpec(image=busybox, command="sleep 1000"))
    try:
        container.exec("echo changed > /tmp/changed; rm /etc/group")
        image = container.commit()
    finally:
        container.remove()
    assert image.layers[:-1] == busybox.layers
    blob = engine.store.blob_path(image.layers[-1].digest)
    with tarfile.open(blob) as tar:
        names = set(tar.getnames())
    assert {"tmp/changed", "etc/.wh.group"} <= names
    assert not {"bin/sh", "etc/hosts", "etc/hostname", "etc/resolv.conf"} & names
