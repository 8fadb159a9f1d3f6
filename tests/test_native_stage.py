"""A warm PID 1 mounts its /proc (confined as by default) and its cgroup filesystem while it
waits, and the start moves them into the root: a container started so must look exactly like
one whose PID 1 mounted everything at its start, and one whose boundary or cgroups differ from
what was mounted ahead must get its own."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from engine_contract import busybox_rootfs

from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native.cgroups import detect_version

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native engine needs root")


def layout(container) -> list[tuple[str, str, str]]:
    """The container's /proc and /sys mounts: (mount point, type, mount options), sorted."""
    found = []
    for line in container.exec(["cat", "/proc/self/mountinfo"]).output.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        point, options, kind = parts[4], parts[5], rest.split()[0]
        if point.startswith(("/proc", "/sys")):
            found.append((point, kind, options))
    return sorted(found)


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    return SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[root])


@pytest.fixture
def engine(tmp_path: Path):
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(state_dir=tmp_path / "state")
    yield engine
    engine.close()


def started(engine, **options):
    """A cold start (the engine's first: no warm shim yet) and a warm one, of ``options``."""
    image = options.pop("image")
    cold = engine.run(RunSpec(image=image, **options))
    return cold, engine.run(RunSpec(image=image, **options))


def test_a_warm_start_looks_like_a_cold_one(engine, busybox) -> None:
    cold, warm = started(engine, image=busybox)
    try:
        assert layout(warm) == layout(cold)
        points = [point for point, _, _ in layout(warm)]
        assert {"/proc", "/proc/timer_list", "/proc/sys", "/sys/firmware"} <= set(points)
        assert warm.exec(["cat", "/proc/timer_list"]).output == ""  # masked
        assert warm.exec(["sh", "-c", "echo 1 > /proc/sys/kernel/core_pattern"]).exit_code != 0
        cgroups = warm.exec(["cat", "/proc/self/cgroup"]).output.splitlines()
        assert cgroups and all(line.endswith(":/") for line in cgroups)
        assert warm.exec(["touch", "/sys/fs/cgroup/x"]).exit_code != 0 or detect_version(
            "/sys/fs/cgroup") == 1  # v1: the tmpfs above the hierarchies is writable
    finally:
        cold.remove()
        warm.remove()


def test_a_privileged_warm_start_gets_its_own_proc_and_cgroups(engine, busybox) -> None:
    """What was mounted ahead is confined and read-only: a privileged container has neither."""
    cold, warm = started(engine, image=busybox, privileged=True)
    try:
        assert layout(warm) == layout(cold)
        points = [point for point, _, _ in layout(warm)]
        assert "/proc/timer_list" not in points and "/proc/sys" not in points
        mounts = [options for point, kind, options in layout(warm)
                  if point.startswith("/sys/fs/cgroup") and kind.startswith("cgroup")]
        assert mounts and all(options.startswith("rw") for options in mounts)
    finally:
        cold.remove()
        warm.remove()


def test_a_warm_start_with_sysctls_writes_them_on_a_proc_of_its_own(engine, busybox) -> None:
    cold, warm = started(engine, image=busybox, sysctls={"net.ipv4.ip_forward": "1"})
    try:
        assert layout(warm) == layout(cold)
        assert warm.exec(["cat", "/proc/sys/net/ipv4/ip_forward"]).output.strip() == "1"
        assert warm.exec(["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]).exit_code != 0
    finally:
        cold.remove()
        warm.remove()


def test_a_warm_start_with_limits_sees_its_own_cgroups(engine, busybox) -> None:
    """With limits PID 1 is moved out of the spare set it mounted ahead in: the cgroup
    filesystem it sees is mounted at the start, rooted in the container's cgroups."""
    cold, warm = started(engine, image=busybox, pids=50)
    try:
        assert layout(warm) == layout(cold)
        cgroups = warm.exec(["cat", "/proc/self/cgroup"]).output.splitlines()
        assert cgroups and all(line.endswith(":/") for line in cgroups)
        where = ("/sys/fs/cgroup/pids/pids.max" if detect_version("/sys/fs/cgroup") == 1
                 else "/sys/fs/cgroup/pids.max")
        assert warm.exec(["cat", where]).output.strip() == "50"
    finally:
        cold.remove()
        warm.remove()


def test_without_a_stage_a_warm_start_mounts_at_the_start(engine, busybox, tmp_path) -> None:
    """A stage that cannot be mounted on (here: gone) costs nothing but the time."""
    (tmp_path / "state" / "stage").rmdir()
    cold, warm = started(engine, image=busybox)
    try:
        assert layout(warm) == layout(cold)
        assert warm.exec(["cat", "/proc/timer_list"]).output == ""
    finally:
        cold.remove()
        warm.remove()
