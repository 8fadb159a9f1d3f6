"""The native engine on a real cgroup v2 hierarchy, on any host that mounts one: this machine
is cgroup v1 with the unified hierarchy mounted beside it (hybrid), so each test makes a fresh
subtree of that cgroup2 filesystem, points the engine at it (``PYCONTAIN_CGROUP_ROOT``) and
removes it after. Only the controllers that hierarchy offers work (here hugetlb alone), so the
limits themselves are refused by name; placement, the view inside and the clean-up run. The
rootless engine is run too, as .ci/rootless's user, in a subtree delegated to it there."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from engine_contract import busybox_rootfs

from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import ContainerError, NotSupported
from pytest_pycontain.native.cgroups import ROOT_ENV, detect_version

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native engine as root")


def cgroup2_mount() -> Path | None:
    """Where this machine mounts a cgroup2 filesystem (the host's own mount namespace)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


MOUNT = cgroup2_mount()
needs_v2 = pytest.mark.skipif(MOUNT is None, reason="this machine mounts no cgroup2 filesystem")


def remove_tree(path: Path) -> None:
    """A cgroup tree goes leaves first (rmdir only: cgroupfs has no files to unlink)."""
    for child in sorted((p for p in path.rglob("*") if p.is_dir()),
                        key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            child.rmdir()
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


@pytest.fixture
def v2_root() -> Iterator[Path]:
    """A fresh directory of the cgroup2 hierarchy, ours alone, removed after."""
    assert MOUNT is not None
    root = MOUNT / f"pycontain-test-{secrets.token_hex(4)}"
    root.mkdir()
    try:
        yield root
    finally:
        remove_tree(root)
    assert not root.exists()


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    return SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[root])


@pytest.fixture
def engine(v2_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pytest_pycontain.native.engine import NativeEngine

    monkeypatch.setenv(ROOT_ENV, str(v2_root))
    engine = NativeEngine(state_dir=tmp_path / "state")
    yield engine
    engine.close()


def containers_cgroups(v2_root: Path, engine: Any = None) -> list[str]:
    """The cgroups under the engine's group, but for the spare ones ``engine``'s warm shims
    wait in (journalled under the id of a container that does not exist yet), once
    ``engine``'s janitor has removed what removed containers left."""
    waiting = set()
    if engine is not None:
        engine.drain()
        made = {r["container"] for r in engine.journal.records() if r["kind"] == "container"}
        waiting = {Path(r["path"]).name for r in engine.journal.records()
                   if r["kind"] == "cgroup" and r["container"] not in made}
    group = v2_root / "pycontain"
    return sorted(p.name for p in group.iterdir() if p.is_dir() and p.name not in waiting
                  ) if group.is_dir() else []


@needs_v2
def test_the_setting_points_the_engine_at_a_v2_root(engine, v2_root: Path) -> None:
    assert engine.cgroup_root == v2_root
    assert detect_version(v2_root) == 2


@needs_v2
def test_every_container_has_its_own_v2_cgroup_seen_read_only_as_its_root(
        engine, busybox, v2_root: Path) -> None:
    container = engine.run(RunSpec(image=busybox, name="box"))
    try:
        (path,) = container.limits.paths()
        assert path == v2_root / "pycontain" / container.id
        assert (path / "cgroup.procs").read_text().split() == [str(container.pid)]
        relative = "/" + str(path.relative_to(MOUNT))
        assert f"0::{relative}\n" in Path(f"/proc/{container.pid}/cgroup").read_text()
        # an exec is born inside too, and sees it as the root of a cgroup2 mounted read-only
        result = container.exec(
            "echo $$; grep '^0::' /proc/self/cgroup; cat /sys/fs/cgroup/cgroup.procs; "
            "grep ' /sys/fs/cgroup ' /proc/self/mounts; ls /sys/fs/cgroup; "
            "mkdir /sys/fs/cgroup/x 2>&1 || echo refused")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        me = lines[0]
        assert lines[1] == "0::/"
        mount = next(line for line in lines if " /sys/fs/cgroup " in line).split()
        assert mount[2] == "cgroup2" and "ro" in mount[3].split(",")
        procs = lines[2:lines.index(" ".join(mount))]
        assert "1" in procs and me in procs
        assert "cgroup.procs" in lines and "pycontain" not in lines
        assert not any(line.startswith("pycontain-test-") for line in lines)
        assert lines[-1] == "refused" and "Read-only file system" in lines[-2]
        assert not (path / "x").exists()
    finally:
        container.remove()
    engine.drain()  # the janitor removes it in the background
    assert not path.exists()
    assert containers_cgroups(v2_root, engine) == []


@needs_v2
def test_a_privileged_container_may_write_its_cgroup(engine, busybox, v2_root: Path) -> None:
    """As Docker mounts it for --privileged: read-write, still its own subtree only."""
    container = engine.run(RunSpec(image=busybox, privileged=True))
    try:
        result = container.exec("mkdir /sys/fs/cgroup/child && ls -d /sys/fs/cgroup/child")
        assert result.exit_code == 0, result.output
        (path,) = container.limits.paths()
        assert (path / "child").is_dir()
    finally:
        container.remove()
    assert containers_cgroups(v2_root, engine) == []


@needs_v2
def test_a_failed_start_leaves_no_cgroup(engine, busybox, v2_root: Path) -> None:
    with pytest.raises(ContainerError, match="nosuchuser"):
        engine.run(RunSpec(image=busybox, user="nosuchuser"))
    assert containers_cgroups(v2_root, engine) == []


@needs_v2
def test_a_killed_shim_leaves_no_cgroup_after_remove(engine, busybox, v2_root: Path) -> None:
    container = engine.run(RunSpec(image=busybox))
    (path,) = container.limits.paths()
    pid1 = container.pid
    shim = int(Path(f"/proc/{pid1}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(shim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid1}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # PID 1 follows its shim (parent-death signal)
    assert not Path(f"/proc/{pid1}").exists()
    container.remove()
    engine.drain()
    assert not path.exists()
    assert containers_cgroups(v2_root, engine) == []


@needs_v2
@pytest.mark.parametrize(("limit", "controller"), [
    ({"memory": "64m"}, "memory"), ({"cpus": 0.5}, "cpu"), ({"pids": 32}, "pids")])
def test_a_limit_the_hierarchy_lacks_is_refused_by_name(
        engine, busybox, v2_root: Path, tmp_path: Path, limit, controller) -> None:
    """Never a silent no-limit, never a bare OSError: the option, its controller, the
    container and what the hierarchy offers; nothing made."""
    offered = (v2_root / "cgroup.controllers").read_text().split()
    if controller in offered:
        pytest.skip(f"{v2_root} offers {controller}: the limit works here")
    with pytest.raises(NotSupported) as info:
        engine.run(RunSpec(image=busybox, name="limited", **limit))
    message = str(info.value)
    assert f"container limited: {next(iter(limit))} " in message
    assert f"cgroup v2 {controller} controller" in message
    assert f"{v2_root / 'cgroup.controllers'} does not offer" in message
    assert f"(it lists: {' '.join(offered) or 'none'})" in message
    assert containers_cgroups(v2_root, engine) == []
    assert not list((tmp_path / "state" / "containers").glob("*"))


@needs_v2
def test_on_v2_pid1_and_execs_are_born_in_the_containers_cgroup(
        engine, busybox, v2_root: Path) -> None:
    """clone3 with CLONE_INTO_CGROUP: a warm shim's PID 1 is forked into a spare v2 cgroup
    made ahead, which is the container's (named as its id: v2 cannot rename one), and an exec
    is forked into it; nothing is moved at the start, and the shim stays out."""
    first = engine.run(RunSpec(image=busybox))
    second = engine.run(RunSpec(image=busybox))  # on the warm shim made after the first
    try:
        for container in (first, second):
            (path,) = container.limits.paths()
            assert path == v2_root / "pycontain" / container.id
            relative = "/" + str(path.relative_to(MOUNT))
            assert f"0::{relative}\n" in Path(f"/proc/{container.pid}/cgroup").read_text()
            assert (path / "cgroup.procs").read_text().split() == [str(container.pid)]
        # the second's cgroup is a spare its PID 1 was born in before the container was made
        kinds = [r["kind"] for r in engine.journal.records(second.id)]
        assert kinds.index("cgroup") < kinds.index("container")
        assert_an_exec_beside_pid1_in_its_cgroup(second)
    finally:
        first.remove()
        second.remove()
    assert containers_cgroups(v2_root, engine) == []


def assert_an_exec_beside_pid1_in_its_cgroup(container: Any) -> None:
    """An exec'd command is in the container's cgroup, seen as its root, with PID 1 alone."""
    result = container.exec("echo $$; grep '^0::' /proc/self/cgroup; "
                            "cat /sys/fs/cgroup/cgroup.procs")
    assert result.exit_code == 0, result.output
    me, membership, *procs = result.stdout.split()
    assert membership == "0::/" and sorted(procs) == sorted(["1", me])


@needs_v2
def test_an_exec_from_another_handle_is_born_in_the_v2_cgroup(engine, busybox) -> None:
    """Through ``attach`` (as ``pycontain exec`` and kept containers are reached) the helper
    stays out of the container's cgroup and forks the command into it."""
    container = engine.run(RunSpec(image=busybox, name="outside"))
    try:
        assert_an_exec_beside_pid1_in_its_cgroup(engine.attach(container.id))
    finally:
        container.remove()


@needs_v2
def test_a_fork_into_a_v2_cgroup_and_its_fallback(v2_root: Path, tmp_path: Path) -> None:
    """``process.fork_into``: the child is born in the cgroup (not in ours); where clone3
    refuses (here: a directory that is no cgroup) a plain fork, said so, for the caller to
    move the child as before."""
    from pytest_pycontain.native.process import fork_into

    target = v2_root / "born-here"
    target.mkdir()
    relative = "/" + str(target.relative_to(MOUNT))
    for directory, placed_wanted in ((target, True), (tmp_path, False)):
        report_r, report_w = os.pipe()
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            pid, placed = fork_into(fd)
            if pid == 0:
                os.write(report_w, Path("/proc/self/cgroup").read_bytes())
                os._exit(0)
        finally:
            os.close(fd)
            os.close(report_w)
        with os.fdopen(report_r) as report:
            membership = report.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert placed is placed_wanted
        assert (f"0::{relative}\n" in membership) is placed_wanted, membership
    target.rmdir()


KILLED_RUN = r"""
import sys, time
from types import SimpleNamespace
from typing import Any
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native.engine import NativeEngine

rootfs, state = sys.argv[1:3]
engine = NativeEngine(state_dir=state)
image = SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[rootfs])
container = engine.run(RunSpec(image=image))
(path,) = container.limits.paths()
print(path, container.pid, flush=True)
time.sleep(600)
"""


@needs_v2
def test_a_killed_run_leaves_its_v2_cgroups_to_the_next_runs_reaper(
        busybox, v2_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from pytest_pycontain.native.engine import NativeEngine

    repo = str(Path(__file__).resolve().parents[1])
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(busybox.layer_dirs[0]), str(tmp_path / "state")],
        env={**os.environ, ROOT_ENV: str(v2_root), "PYTHONPATH": repo},
        stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        path_text, pid1 = run.stdout.readline().split()
        path = Path(path_text)
        assert path.parent.parent == v2_root and path.is_dir()
    finally:
        run.kill()
        run.wait()
    monkeypatch.setenv(ROOT_ENV, str(v2_root))
    NativeEngine(state_dir=tmp_path / "state").close()  # reaps the dead owner
    assert not path.exists()
    assert containers_cgroups(v2_root) == []
    deadline = time.monotonic() + 10
    while alive(int(pid1)) and time.monotonic() < deadline:
        time.sleep(0.05)  # killed by the reaper: gone once its new parent reaps it
    assert not alive(int(pid1))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent's wait does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


ROOTLESS_USER = "pycontain-ci"  # .ci/rootless's user with subordinate ids
USER_RUN = r"""
import json, os, sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import NotSupported
from pytest_pycontain.native.engine import NativeEngine

rootfs, state = sys.argv[1:3]
image = SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[rootfs])
out = {"pid": os.getpid()}
with NativeEngine(state_dir=state) as engine:
    out["rootless"] = engine.rootless is not None
    out["engine"] = open("/proc/self/cgroup").read()
    container = engine.run(RunSpec(image=image, name="box"))
    out["paths"] = [str(p) for p in container.limits.paths()]
    here = Path(out["paths"][0])
    out["files"] = sorted(p.name for p in here.iterdir())
    out["enabled"] = [(here.parent.parent / "cgroup.subtree_control").read_text().split(),
                      (here.parent / "cgroup.subtree_control").read_text().split()]
    out["pid1"] = open(f"/proc/{container.pid}/cgroup").read()
    out["helpers"] = [open(f"/proc/{pid}/cgroup").read() for pid in (
        int(open(f"/proc/{container.pid}/stat").read().rsplit(")", 1)[1].split()[1]),)]
    result = container.exec("grep '^0::' /proc/self/cgroup; "
                            "grep ' /sys/fs/cgroup ' /proc/self/mounts; "
                            "cat /sys/fs/cgroup/cgroup.procs")
    out["exec"] = [result.exit_code, result.stdout, result.stderr]
    if sys.argv[3:] == ["killed"]:
        print(json.dumps(out), flush=True)
        import time
        time.sleep(600)
    container.remove()
    engine.drain()
    out["left"] = [p for p in out["paths"] if os.path.exists(p)]
    try:
        engine.run(RunSpec(image=image, name="limited", memory="64m"))
    except NotSupported as exc:
        out["error"] = str(exc)
from pytest_pycontain.cli_info import report
out["info"] = report("native")
print(json.dumps(out))
"""


NESTED_RUN = r"""
import json, os, subprocess, sys
from pytest_pycontain.native.engine import NativeEngine

CHILD = '''
import json, sys
from types import SimpleNamespace
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native.engine import NativeEngine
image = SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[sys.argv[1]])
with NativeEngine(state_dir=sys.argv[2]) as engine:
    container = engine.run(RunSpec(image=image))
    print(json.dumps({"engine": open("/proc/self/cgroup").read(),
                      "paths": [str(p) for p in container.limits.paths()]}))
'''
rootfs, state = sys.argv[1:3]
out = {"pid": os.getpid()}
with NativeEngine(state_dir=state) as engine:
    out["engine"] = open("/proc/self/cgroup").read()
    child = subprocess.run([sys.executable, "-c", CHILD, rootfs, state],
                           capture_output=True, text=True, check=True)
    out["child"] = json.loads(child.stdout)
print(json.dumps(out))
"""


@pytest.fixture
def hugetlb_offered(v2_root: Path) -> Iterator[Path]:
    """The hugetlb controller (all this host's cgroup2 offers) enabled down to ``v2_root``'s
    children, so that a delegated cgroup there has a controller to give its containers; the
    hierarchy's root is put back as it was after."""
    assert MOUNT is not None
    control = MOUNT / "cgroup.subtree_control"
    if "hugetlb" not in (MOUNT / "cgroup.controllers").read_text().split():
        pytest.skip(f"{MOUNT} offers no hugetlb controller")
    enabled_here = "hugetlb" not in control.read_text().split()
    if enabled_here:
        control.write_text("+hugetlb")
    try:
        (v2_root / "cgroup.subtree_control").write_text("+hugetlb")
        yield v2_root
    finally:
        with contextlib.suppress(OSError):
            (v2_root / "cgroup.subtree_control").write_text("-hugetlb")
        deadline = time.monotonic() + 10
        while enabled_here:  # refused while another test's subtree enables it below
            try:
                control.write_text("-hugetlb")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def delegated_run(hugetlb_offered: Path) -> Iterator[Any]:
    """Runs ``USER_RUN`` as .ci/rootless's user in a cgroup delegated to it, as systemd's
    user delegation gives it: a v2 cgroup owned by the user, holding the run's own process
    (root only makes the cgroup, puts the run in it and removes it after)."""
    import pwd
    import shutil
    import subprocess
    import sys
    import tempfile

    try:
        user = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        pytest.skip(f"no user {ROOTLESS_USER} (.ci/rootless makes it)")
    home = Path(tempfile.mkdtemp(prefix="pycontain-cgv2-"))  # readable by the user
    os.chmod(home, 0o755)
    rootfs = busybox_rootfs(home / "rootfs")
    for directory in (home / "state", home / "run"):
        directory.mkdir(mode=0o700)
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(rootfs),
                    str(home / "state"), str(home / "run")], check=True)
    delegated = hugetlb_offered / "user"
    delegated.mkdir()
    for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(delegated / name, user.pw_uid, user.pw_gid)
    repo = str(Path(__file__).resolve().parents[1])
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONPATH": repo, "XDG_RUNTIME_DIR": str(home / "run"), ROOT_ENV: str(MOUNT)}
    started: list[subprocess.Popen] = []

    def start(*extra: str, where: Path = delegated, script: str = USER_RUN) -> subprocess.Popen:
        # the run is placed in the delegated cgroup (or ``where`` in it) by root, then
        # becomes the user
        run = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(where),
             "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
             shutil.which("python3", path="/usr/bin") or sys.executable, "-c", script,
             str(rootfs), str(home / "state"), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(run)
        return run

    def finish(run: subprocess.Popen) -> dict[str, Any]:
        import json

        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
        return json.loads(stdout.splitlines()[-1])

    def hold() -> subprocess.Popen:
        """Another process of the user's in the delegated cgroup (its shell, say)."""
        other = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(delegated),
             "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
             "sleep", "600"], env=env)
        started.append(other)
        deadline = time.monotonic() + 10
        while (str(other.pid) not in (delegated / "cgroup.procs").read_text().split()
               and time.monotonic() < deadline):
            time.sleep(0.05)
        return other

    try:
        yield SimpleNamespace(start=start, finish=finish, hold=hold, cgroup=delegated)
    finally:
        for run in started:
            if run.poll() is None:
                run.kill()
            run.communicate()
        wait_for_no_process(delegated)
        remove_tree(delegated)  # before its parent's controllers are put back
        shutil.rmtree(home, ignore_errors=True)


def wait_for_no_process(cgroup: Path) -> None:
    """The user's pause process ends once alone in its namespace: then nothing is left."""
    deadline = time.monotonic() + 30
    while (any((p / "cgroup.procs").read_text().split() for p in [cgroup, *cgroup.rglob("*")]
               if p.is_dir()) and time.monotonic() < deadline):
        time.sleep(0.2)


def assert_given_back(cgroup: Path) -> None:
    """The delegated cgroup as it was given: no process of ours in it or below, no cgroup
    made in it, nothing enabled in its subtree control."""
    wait_for_no_process(cgroup)
    assert (cgroup / "cgroup.procs").read_text().split() == []
    assert [p.name for p in cgroup.iterdir() if p.is_dir()] == []
    assert (cgroup / "cgroup.subtree_control").read_text().split() == []


@needs_v2
def test_rootless_moves_into_a_leaf_and_places_containers_in_its_delegated_cgroup(
        delegated_run) -> None:
    """The delegated cgroup holds the run's process, so the engine moves itself into a leaf
    of it first; then the controllers it offers (hugetlb here) are enabled for containers,
    each of which gets a cgroup of its own beside the leaf. After the run, it is as given."""
    delegated = delegated_run.cgroup
    out = delegated_run.finish(delegated_run.start())
    assert out["rootless"]
    leaf = delegated / f"pycontain-engine-{out['pid']}"
    assert f"0::/{leaf.relative_to(MOUNT)}\n" in out["engine"]
    # the container's shim is the engine's (born in its leaf), PID 1 in its own cgroup
    assert out["helpers"] == [out["engine"]]
    (path,) = out["paths"]
    assert Path(path).parent.parent == delegated
    assert f"0::/{Path(path).relative_to(MOUNT)}\n" in out["pid1"]
    assert out["enabled"] == [["hugetlb"], ["hugetlb"]]
    assert any(name.startswith("hugetlb.") and name.endswith(".max") for name in out["files"])
    code, stdout, stderr = out["exec"]
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "0::/"
    mount = lines[1].split()
    assert mount[2] == "cgroup2" and "ro" in mount[3].split(",")
    assert "1" in lines[2:]
    assert out["left"] == []
    assert (f"cgroups: each container's own under {delegated} (delegated, without every "
            "limit's controller)") in out["info"]
    # a limit hugetlb cannot give: the limit's own path is taken, refused by the missing
    # controller's name (not for want of delegation)
    assert out["error"].startswith("container limited: memory needs the cgroup v2 memory "
                                   "controller,")
    assert f"{delegated / 'cgroup.controllers'} does not offer" in out["error"]
    assert "(it lists: hugetlb)" in out["error"]
    assert_given_back(delegated)


@needs_v2
def test_rootless_kill_9_in_a_delegated_cgroup_leaves_nothing_after_the_next_run(
        delegated_run) -> None:
    delegated = delegated_run.cgroup
    killed = delegated_run.start("killed")
    assert killed.stdout is not None
    import json

    out = json.loads(killed.stdout.readline())
    (path,) = out["paths"]
    assert Path(path).is_dir()
    leaf = delegated / f"pycontain-engine-{out['pid']}"
    assert leaf.is_dir()
    killed.kill()
    killed.wait()
    # left with its controllers enabled, the delegated cgroup takes no process itself: the
    # next run starts below it, in the dead run's leaf (a process of the user's there)
    after = delegated_run.finish(delegated_run.start(where=leaf))
    assert after["left"] == [] and not Path(path).exists()
    assert_given_back(delegated)


@needs_v2
def test_rootless_in_a_delegated_cgroup_another_process_holds(delegated_run) -> None:
    """The engine moves only itself: another process left in the delegated cgroup keeps its
    controllers from the containers (they still get cgroups of their own, and everything
    runs); the cgroup is given back as found, that process still in it."""
    delegated = delegated_run.cgroup
    other = delegated_run.hold()
    out = delegated_run.finish(delegated_run.start())
    assert out["rootless"]
    leaf = delegated / f"pycontain-engine-{out['pid']}"
    assert f"0::/{leaf.relative_to(MOUNT)}\n" in out["engine"]
    (path,) = out["paths"]
    assert Path(path).parent.parent == delegated
    assert out["enabled"] == [[], []]
    assert out["exec"][0] == 0, out["exec"][2]
    assert out["left"] == []
    assert out["error"].startswith("container limited: memory needs the cgroup v2 memory ")
    wait_for_pause_to_end = time.monotonic() + 30
    while ((delegated / "cgroup.procs").read_text().split() != [str(other.pid)]
           and time.monotonic() < wait_for_pause_to_end):
        time.sleep(0.2)
    assert (delegated / "cgroup.procs").read_text().split() == [str(other.pid)]
    assert [p.name for p in delegated.iterdir() if p.is_dir()] == []
    assert (delegated / "cgroup.subtree_control").read_text().split() == []
    other.kill()
    other.wait()
    assert_given_back(delegated)


@needs_v2
def test_rootless_runs_started_by_a_rootless_run_share_its_leaf(delegated_run) -> None:
    """A run the engine's process starts (pytester's, xdist's workers) is born in its leaf
    and already in its user namespace: it stays there, and its containers' cgroups go
    under the delegated cgroup too, not under the leaf (which must hold no children)."""
    delegated = delegated_run.cgroup
    out = delegated_run.finish(delegated_run.start(script=NESTED_RUN))
    leaf = delegated / f"pycontain-engine-{out['pid']}"
    assert f"0::/{leaf.relative_to(MOUNT)}\n" in out["engine"]
    assert out["child"]["engine"] == out["engine"]
    (path,) = out["child"]["paths"]
    assert Path(path).parent.parent == delegated
    assert_given_back(delegated)
