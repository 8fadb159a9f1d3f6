"""Limits through cgroups: v1 for real on this machine, v2 against a tree shaped like cgroupfs
(and for real where the machine has v2 controllers), and OOM kills reported as such."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from engine_contract import busybox_rootfs

from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import ConfigError, ContainerError, EngineUnavailable
from pytest_pycontain.native import state
from pytest_pycontain.native.cgroups import GROUP, Limits, detect_version, parse_memory

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the native engine needs root (namespaces, mounts, cgroups)")


def has_v1() -> bool:
    try:
        return detect_version("/sys/fs/cgroup") == 1
    except EngineUnavailable:
        return False


def v2_root() -> str | None:
    """The host's v2 hierarchy when it offers memory and pids (tests/test_native_cgroup_v2.py
    runs on any cgroup2 mount)."""
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        controllers = Path(root) / "cgroup.controllers"
        if controllers.exists() and {"memory", "pids"} <= set(controllers.read_text().split()):
            return root
    return None


def fake_v2(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_memory_sizes() -> None:
    assert parse_memory("256m") == 256 * 1024**2
    assert parse_memory("1g") == parse_memory("1GB") == 1024**3
    assert parse_memory(64 * 1024**2) == 64 * 1024**2
    with pytest.raises(ConfigError, match="memory='lots'"):
        parse_memory("lots")
    with pytest.raises(ConfigError, match="minimum memory limit is 6m"):
        parse_memory("1m")


def test_bad_limits_name_the_option() -> None:
    with pytest.raises(ConfigError, match="cpus=0"):
        Limits("c", cpus=0)
    with pytest.raises(ConfigError, match="pids=0"):
        Limits("c", pids=0)


def test_no_limits_no_cgroups(tmp_path: Path) -> None:
    limits = Limits("c", root=tmp_path)
    assert not limits.wanted and limits.paths() == [] and limits.create() == []


def test_detects_the_hierarchy(tmp_path: Path) -> None:
    assert detect_version(fake_v2(tmp_path)) == 2
    v1 = tmp_path / "v1"
    for name in ("memory", "cpu", "pids"):
        (v1 / name).mkdir(parents=True)
    assert detect_version(v1) == 1
    with pytest.raises(EngineUnavailable, match="no usable cgroup controllers"):
        detect_version(tmp_path / "empty")


def test_v2_layout_and_limits(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    journal = state.Journal(tmp_path / "state")
    limits = Limits("abc", memory="64m", cpus=1.5, pids=20, root=root)
    assert limits.version == 2
    (made,) = limits.create(journal)
    assert made == root / "pycontain" / "abc"
    # the limits' controllers first, then every other one the root offers (as runc and crun
    # give a container all of them); each write is one "+name" or more (a file here, appended)
    written = (root / "cgroup.subtree_control").read_text()
    assert re.findall(r"\+(\w+)", written)[:3] == ["memory", "cpu", "pids"]
    assert set(re.findall(r"\+(\w+)", written)) == {
        "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma"}
    assert (made / "memory.max").read_text() == f"{64 * 1024**2}\n"
    assert (made / "cpu.max").read_text() == "150000 100000\n"
    assert (made / "pids.max").read_text() == "20\n"
    assert [r["path"] for r in journal.records() if r["kind"] == "cgroup"] == [str(made)]
    limits.join(4242)
    assert (made / "cgroup.procs").read_text() == "4242\n"
    (made / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not limits.oom_killed()
    (made / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert limits.oom_killed()
    journal.close(undo=False)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(state_dir=tmp_path_factory.mktemp("state"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    return SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[root])


@needs_root
@pytest.mark.skipif(not has_v1(), reason="this machine has no cgroup v1 controllers")
def test_v1_limits_for_real(engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, memory="32m", cpus=0.5, pids=12))
    try:
        memory, cpu, pids = container.limits.paths()
        assert int((memory / "memory.limit_in_bytes").read_text()) == 32 * 1024**2
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50_000
        assert int((pids / "pids.max").read_text()) == 12
        assert str(container.pid) in (pids / "cgroup.procs").read_text()
        result = container.exec("for i in $(seq 20); do sleep 100 & done; wait")
        assert "can't fork" in result.output or "Resource temporarily unavailable" in (
            result.output)
        assert container.exec("cat /proc/self/cgroup").output.strip().endswith(":/")
    finally:
        container.remove()
    engine.drain()  # the janitor removes them in the background
    assert not any(path.exists() for path in (memory, cpu, pids))


@needs_root
@pytest.mark.skipif(not has_v1(), reason="this machine has no cgroup v1 controllers")
def test_an_oom_kill_is_reported_as_such(engine, busybox) -> None:
    container = engine.run(RunSpec(
        image=busybox, memory="16m",
        command="echo eating; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"))
    try:
        assert container.wait(timeout=30) == 137
        assert container.oom_killed
        with pytest.raises(ContainerError, match="OOM killer") as info:
            container.ensure_running()
        assert info.value.exit_code == 137 and "eating" in info.value.logs
    finally:
        container.remove()


@needs_root
@pytest.mark.skipif(v2_root() is None, reason="this machine has no v2 controllers")
def test_v2_limits_for_real(engine, busybox) -> None:  # pragma: no cover - needs a v2 machine
    container = engine.run(RunSpec(image=busybox, memory="32m", pids=12))
    try:
        (path,) = container.limits.paths()
        assert int((path / "memory.max").read_text()) == 32 * 1024**2
        assert int((path / "pids.max").read_text()) == 12
    finally:
        container.remove()


@needs_root
def test_every_container_has_cgroups_of_its_own(engine, busybox) -> None:
    """Without limits too: what it uses is counted apart from the test process (the engine's
    own cgroups hold neither PID 1 nor an exec), and they go with the container."""
    container = engine.run(RunSpec(image=busybox))
    try:
        paths = container.limits.paths()
        assert paths and all(path.is_dir() for path in paths)
        for path in paths:
            assert str(container.pid) in (path / "cgroup.procs").read_text().split()
        mine = Path("/proc/self/cgroup").read_text()
        assert container.limits.container_id not in mine
        exec_cgroups = container.exec("cat /proc/self/cgroup").output.splitlines()
        assert exec_cgroups and all(line.endswith(":/") for line in exec_cgroups)
    finally:
        container.remove()
    engine.drain()
    assert not any(path.exists() for path in paths)

@needs_root
def test_a_removed_containers_cgroups_go_in_the_background_on_every_hierarchy(
        engine, busybox) -> None:
    """``remove()`` hands a container's cgroups to the engine's janitor, with its files: once
    drained, none is left on any hierarchy, neither its own nor the spare set a limited
    container's shim stayed in, and the journal says it is removed."""
    unlimited = engine.run(RunSpec(image=busybox))
    limited = engine.run(RunSpec(image=busybox, memory="64m", pids=20))
    made = {c.id: [Path(r["path"]) for r in engine.journal.records(c.id)
                   if r["kind"] == "cgroup"] for c in (unlimited, limited)}
    try:
        for container in (unlimited, limited):
            assert set(container.limits.paths()) <= set(made[container.id])
            assert all(path.is_dir() for path in made[container.id])
        if engine.cgroup_root.joinpath("memory").is_dir():  # v1: one per hierarchy it uses
            assert len(unlimited.limits.paths()) == 3
    finally:
        unlimited.remove()
        limited.remove()
    engine.drain()
    assert not [path for paths in made.values() for path in paths if path.exists()]
    groups = [engine.cgroup_root / GROUP,
              *engine.cgroup_root.glob(f"*/{GROUP}")]  # v2, then each v1 hierarchy
    assert not [child for group in groups for child in group.glob("*")
                if child.is_dir() and child.name in made]
    removed = {r["container"] for r in engine.journal.records() if r["kind"] == "removed"}
    assert set(made) <= removed


@needs_root
@pytest.mark.skipif(not has_v1(), reason="this machine has no cgroup v1 controllers")
def test_on_v1_an_unlimited_containers_shim_is_in_its_cgroups_unseen(engine, busybox) -> None:
    """Without limits the shim joins the container's cgroups, so that execs are born there
    (no move per exec); the container does not see it. With limits it stays out: the
    container's pids and memory are its own alone."""
    unlimited = engine.run(RunSpec(image=busybox))
    limited = engine.run(RunSpec(image=busybox, pids=12))
    try:
        for path in unlimited.limits.paths():
            assert {str(unlimited.shim), str(unlimited.pid)} <= set(
                (path / "cgroup.procs").read_text().split())
        listed = unlimited.exec("cat /sys/fs/cgroup/pids/cgroup.procs").output.split()
        assert listed[0] == "1" and "0" not in listed and len(listed) <= 3, listed  # 1, sh, cat
        exec_cgroups = unlimited.exec("cat /proc/self/cgroup").output.splitlines()
        assert exec_cgroups and all(line.endswith(":/") for line in exec_cgroups)
        for path in limited.limits.paths():
            assert str(limited.shim) not in (path / "cgroup.procs").read_text().split()
            assert str(limited.pid) in (path / "cgroup.procs").read_text().split()
    finally:
        unlimited.remove()
        limited.remove()
    engine.drain()
    assert not any(path.exists() for path in unlimited.limits.paths() + limited.limits.paths())


@needs_root
@pytest.mark.skipif(not has_v1(), reason="this machine has no cgroup v1 controllers")
def test_on_v1_warm_shims_are_born_in_spare_cgroups_that_become_the_containers(
        busybox, tmp_path: Path) -> None:
    """A warm shim and its PID 1 are born in a spare cgroup set, renamed to the container's
    at its start (nothing is moved then); with limits the shim stays in its spare set, which
    goes with the container; an engine's spares are gone once it is closed."""
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(state_dir=tmp_path / "state")
    try:
        first = engine.run(RunSpec(image=busybox))  # no warm shim yet: joins as a cold one
        unlimited = engine.run(RunSpec(image=busybox))
        limited = engine.run(RunSpec(image=busybox, memory="64m"))
        spares = [Path(r["path"]) for r in engine.journal.records()
                  if r["kind"] == "cgroup" and r["container"].startswith("spare-")]
        assert spares
        for container in (first, unlimited):
            for path in container.limits.paths():
                procs = (path / "cgroup.procs").read_text().split()
                assert {str(container.shim), str(container.pid)} <= set(procs)
        held = [Path(r["path"]) for r in engine.journal.records(limited.id)
                if r["kind"] == "cgroup" and "spare-" in r["path"]]
        assert held and all(str(limited.shim) in (p / "cgroup.procs").read_text().split()
                            for p in held)
        for path in limited.limits.paths():
            assert (path / "cgroup.procs").read_text().split() == [str(limited.pid)]
        limited.remove()
        engine.drain()
        assert not any(path.exists() for path in held)
        for container in (first, unlimited):
            container.remove()
    finally:
        engine.close()
    assert not any(path.exists() for path in spares)


@needs_root
def test_limits_that_cannot_be_set(busybox, tmp_path: Path) -> None:
    from pytest_pycontain.native.engine import NativeEngine

    root = fake_v2(tmp_path)
    (root / "pycontain").mkdir()
    (root / "pycontain" / "cgroup.subtree_control").mkdir()  # writing to it fails
    with NativeEngine(state_dir=tmp_path / "state", cgroup_root=root) as engine, \
            pytest.raises(ContainerError, match=r"cannot set its limits .* in .*subtree_control"):
        engine.run(RunSpec(image=busybox, memory="64m"))
    assert list((tmp_path / "state" / "containers").iterdir()) == []


@needs_root
@pytest.mark.skipif(not has_v1(), reason="this machine has no cgroup v1 controllers")
def test_cgroups_a_privileged_container_made_go_with_it(engine, busybox) -> None:
    """Its cgroup mounts are writable (as Docker's for --privileged): what it makes under
    them is removed with it, not left to make the removal fail."""
    container = engine.run(RunSpec(image=busybox, privileged=True))
    try:
        result = container.exec(
            "mkdir /sys/fs/cgroup/pids/child && (sh -c 'echo $$ > "
            "/sys/fs/cgroup/pids/child/cgroup.procs; exec sleep 60' >/dev/null 2>&1 &) && "
            "until grep -q . /sys/fs/cgroup/pids/child/cgroup.procs; do sleep 0.05; done")
        assert result.exit_code == 0, result.output
        paths = container.limits.paths()
        (child,) = [path / "child" for path in paths if (path / "child").is_dir()]
        assert (child / "cgroup.procs").read_text().split()  # a process of its in there
    finally:
        container.remove()
    engine.drain()
    assert not any(path.exists() for path in paths)
