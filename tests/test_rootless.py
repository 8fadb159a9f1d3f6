"""Rootless mode as a user runs it (``.ci/rootless`` runs this module as a user with
subordinate ids and as one without): the report header, the id mapping containers see, the
single-id mapping's limits and its error, and crash safety after ``kill -9``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_pycontain.backends import native_blocker
from pytest_pycontain.errors import LayerError
from pytest_pycontain.idmap import host_uid, plan

pytestmark = [
    pytest.mark.skipif(host_uid() == 0, reason="rootless mode is for users other than root "
                                              "(.ci/rootless runs this module as two users)"),
    pytest.mark.skipif(native_blocker() is not None, reason=native_blocker() or ""),
]
FULL = plan().full


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    from pytest_pycontain.config import resolve
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(resolve(), state_dir=tmp_path_factory.mktemp("state"))
    yield engine
    engine.close()


def test_the_report_header_says_rootless_and_the_mapping(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    mapping = plan()
    result.stdout.fnmatch_lines([f"pycontain: engine native (rootless: {mapping.describe()}*"])
    if not mapping.full:
        result.stdout.fnmatch_lines([f"*no entry for {mapping.user} in /etc/sub*id; add one "
                                     "with: usermod --add-subuids*"])


def test_a_busybox_container_runs_as_root_of_the_users_namespace(engine) -> None:
    from pytest_pycontain.engine import RunSpec

    container = engine.run(RunSpec.create("busybox", command=["sleep", "60"]))
    try:
        result = container.exec("id -u; cat /proc/self/uid_map; touch /tmp/x; stat -c %u /tmp/x")
        assert result.exit_code == 0, result.output
        lines = result.stdout.split("\n")
        assert lines[0] == "0"
        assert lines[1].split() == ["0", str(host_uid()), "1"]
        assert lines[-2] == "0"
        assert engine.describe().startswith("native (rootless: ")
    finally:
        container.kill()


@pytest.mark.skipif(not FULL, reason="other users in the container need subordinate ids")
def test_with_subordinate_ids_other_users_and_owners_work(engine) -> None:
    from pytest_pycontain.engine import RunSpec

    container = engine.run(RunSpec.create("busybox", command=["sleep", "60"]))
    try:
        result = container.exec("chown 1000:1000 /tmp && stat -c %u:%g /tmp && "
                                "su -s /bin/sh nobody -c 'id -u' ", user="root")
        assert result.exit_code == 0, result.output
        assert result.stdout.split() == ["1000:1000", "65534"]
        assert container.exec("id -u", user="33").stdout == "33\n"
    finally:
        container.kill()


def test_a_user_the_mapping_lacks_is_a_clear_error(engine) -> None:
    """Not the kernel's bare EINVAL from setuid: the id, the mapping's limit, the fix."""
    from pytest_pycontain.engine import RunSpec
    from pytest_pycontain.errors import ContainerError

    before = set(engine.containers)
    with pytest.raises(ContainerError) as info:
        engine.run(RunSpec.create("busybox", command=["true"], user="70000"))
    if FULL:
        assert "user 70000: uid 70000 gid 0 is not mapped: rootless mode maps ids 0-65536 " \
               "only" in str(info.value)
    else:
        assert "add one (as root) with: usermod --add-subuids" in str(info.value)
    assert set(engine.containers) == before
    container = engine.run(RunSpec.create("busybox", command=["sleep", "60"]))
    try:
        result = container.exec("id", user="70000")
        assert result.exit_code != 0 and "uid 70000 gid 0 is not mapped" in result.output
    finally:
        container.kill()


@pytest.mark.skipif(FULL, reason="the single-id mapping's limit (this user has subordinate ids)")
def test_without_subordinate_ids_an_image_with_other_owners_is_a_clear_error(engine) -> None:
    """debian:bookworm has files of group shadow: with one id mapped they cannot be made, and
    the error names the missing /etc/subuid entry and the command that adds it."""
    image = engine.pull("debian:bookworm")
    with pytest.raises(LayerError) as info:
        engine.store.layer_dirs(image)  # unpacked on first use
    user = plan().user
    message = str(info.value)
    assert "rootless mode without subordinate ids maps only root" in message
    assert f"/etc/subuid and /etc/subgid have no entry for {user}" in message
    assert f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}" in message
    assert not [p for p in Path(engine.store.root).rglob("layer-*")
                if p.is_dir()], "a half-unpacked layer was left"


@pytest.mark.skipif(FULL, reason="the single-id mapping's limit (this user has subordinate ids)")
def test_without_subordinate_ids_another_user_in_the_container_is_refused(engine) -> None:
    from pytest_pycontain.engine import RunSpec

    container = engine.run(RunSpec.create("busybox", command=["sleep", "60"]))
    try:
        result = container.exec("chown 1000 /tmp")
        assert result.exit_code != 0
        assert "Invalid argument" in result.output
    finally:
        container.kill()


KILLED_RUN = """
import time
from pathlib import Path

def test_holds(pycontain):
    net = pycontain.network()
    pycontain.run("busybox", command=["sleep", "{marker}"], network=net, ports=[80])
    Path("ready").write_text("1")
    time.sleep(600)
"""


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline.split(b"\0"):
            found.append(int(pid))
    return found


def test_kill_9_of_pytest_leaves_nothing_after_the_next_run(pytester: pytest.Pytester,
                                                            tmp_path: Path) -> None:
    """The user's container, shim, zygote, network namespace and mounts: gone; the next run
    reaps the dead owner's records."""
    marker = str(7_000_000 + os.getpid() % 1_000_000)
    state = tmp_path / "state"
    pytester.makepyfile(test_killed=KILLED_RUN.replace("{marker}", marker))
    env = {**os.environ, "PYCONTAIN_STATE_DIR": str(state)}
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                                "-s", "test_killed.py"], cwd=pytester.path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (pytester.path / "ready").exists():
            assert process.poll() is None, "the run ended before its container started"
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.05)
        assert _processes_with(marker)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    journals = list((state / "owners").glob("*.journal"))
    assert journals  # the dead run's records are there for the next run
    pytester.makepyfile(test_next="def test_next(pycontain):\n    pycontain.network()\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             "test_next.py"], cwd=pytester.path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _processes_with(marker) == []
    assert not [j for j in journals if j.exists()]
    mounts = Path("/proc/self/mounts").read_text()
    assert str(state) not in mounts


def test_limits_without_a_delegated_cgroup_are_not_supported_naming_the_fix(engine) -> None:
    """Everything else runs; memory/cpus/pids say what the host lacks and nothing is left."""
    from pytest_pycontain.engine import RunSpec
    from pytest_pycontain.errors import NotSupported
    from pytest_pycontain.idmap import cgroup_delegation

    before = set(engine.containers)
    for limit in ({"memory": "64m"}, {"cpus": 0.5}, {"pids": 64}):
        with pytest.raises(NotSupported) as info:
            engine.run(RunSpec.create("busybox", command=["true"], **limit))
        assert "need a cgroup v2 subtree delegated to the user: " in str(info.value)
        assert cgroup_delegation()[1] in str(info.value)
    assert set(engine.containers) == before
