"""Crash safety: what a SIGKILLed owner left is reaped; a live owner's and a kept container's
resources are never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from engine_contract import busybox_rootfs

from pytest_pycontain.errors import ContainerError
from pytest_pycontain.native import state
from pytest_pycontain.native.engine import NativeEngine

REPO = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the native engine needs root (namespaces, mounts, cgroups)")

OWNER_SCRIPT = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native.engine import NativeEngine

state_dir, rootfs, mode = sys.argv[1:4]
image = SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[rootfs])
engine = NativeEngine(state_dir=state_dir)
made = [engine.run(RunSpec(image=image)),
        engine.run(RunSpec(image=image, memory="64m", pids=50, init=True))]
made[1].exec("sleep 1000 & exit 0")
named = engine.volume("named-data")  # a named volume, and a container's anonymous one
with_volume = SimpleNamespace(config={"Cmd": ["sleep", "1000"], "Volumes": {"/anon": {}}},
                              layer_dirs=[rootfs])
made.append(engine.run(RunSpec(image=with_volume, volumes={named: "/named"})))
volumes = sorted(str(p) for p in (Path(state_dir) / "volumes").iterdir())
assert len(volumes) == 2, volumes
if mode == "keep":
    engine.keep(made[0])
print(json.dumps({
    "ids": [c.id for c in made],
    "pids": [p for c in made for p in (c.pid, c.shim)] + [engine.zygote.pid],
    "dirs": [str(c.dir) for c in made] + volumes,
    "cgroups": [str(p) for c in made for p in c.limits.paths()],
    "unlimited_cgroups": [str(p) for p in made[0].limits.paths()],
}), flush=True)
sys.stdin.readline()
engine.close()
"""


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


def start_owner(state_dir: Path, rootfs: Path, mode: str = "plain"):
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OWNER_SCRIPT), str(state_dir), str(rootfs), mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    line = owner.stdout.readline()
    assert line, f"the owner script failed (exit {owner.wait()})"
    return owner, json.loads(line)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def assert_nothing_left(state_dir: Path, made: dict) -> None:
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in made["pids"]):
        assert time.monotonic() < deadline, "processes survived their owner"
        time.sleep(0.01)
    for path in made["dirs"] + made["cgroups"]:
        assert not os.path.exists(path), f"{path} was left behind"
    assert list((state_dir / "owners").iterdir()) == []
    assert list((state_dir / "containers").iterdir()) == []
    mounts = Path("/proc/mounts").read_text()
    assert str(state_dir) not in mounts and "lowerdir=l/" not in mounts


@needs_root
def test_a_killed_owner_is_reaped(tmp_path: Path, rootfs: Path) -> None:
    owner, made = start_owner(tmp_path, rootfs)
    assert all(alive(pid) for pid in made["pids"])
    assert made["unlimited_cgroups"], "a container without limits has cgroups of its own too"
    assert all(os.path.isdir(path) for path in made["dirs"] + made["cgroups"])
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert any(os.path.exists(path) for path in made["dirs"]), "nothing to reap?"
    reaped = state.reap(tmp_path)
    assert len(reaped) == 1
    assert_nothing_left(tmp_path, made)


HELD_JANITOR_SCRIPT = """
import json, sys, threading
from types import SimpleNamespace
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native import state
from pytest_pycontain.native.engine import NativeEngine

state_dir, rootfs = sys.argv[1:3]
image = SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[rootfs])
engine = NativeEngine(state_dir=state_dir)
made = [engine.run(RunSpec(image=image)), engine.run(RunSpec(image=image, memory="64m"))]
cgroups = [r["path"] for c in made for r in engine.journal.records(c.id) if r["kind"] == "cgroup"]
# the janitor is kept busy, so that what remove() handed it waits: the crash comes now
state.register_undo("held", lambda record: threading.Event().wait())
engine.janitor.discard("held", [{"kind": "held", "container": "held"}])
for container in made:
    container.remove()
print(json.dumps({"pid1s": [c.pid for c in made], "pids": [c.shim for c in made],
                  "dirs": [str(c.dir) for c in made], "cgroups": cgroups}), flush=True)
sys.stdin.readline()
"""


@needs_root
def test_what_the_janitor_had_not_removed_yet_is_reaped_after_a_kill(
        tmp_path: Path, rootfs: Path) -> None:
    """A run killed after ``remove()`` handed a container's cgroups and files to its janitor,
    before the janitor got to them: their records are still in the journal, and the next
    engine reaps them."""
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HELD_JANITOR_SCRIPT), str(tmp_path),
         str(rootfs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = owner.stdout.readline()
        assert line, f"the owner script failed (exit {owner.wait()})"
        made = json.loads(line)
        assert not any(alive(pid) for pid in made["pid1s"]), "remove() ended its processes"
        assert made["cgroups"] and all(os.path.isdir(p) for p in made["cgroups"])
        assert all(os.path.isdir(p) for p in made["dirs"])
    finally:
        owner.kill()
        owner.wait()
    assert all(os.path.isdir(p) for p in made["cgroups"] + made["dirs"]), "left for the reaper"
    NativeEngine(state_dir=tmp_path).close()  # the next run: reaps at its start
    assert_nothing_left(tmp_path, made)


@needs_root
def test_a_live_owner_is_left_alone(tmp_path: Path, rootfs: Path) -> None:
    owner, made = start_owner(tmp_path, rootfs)
    try:
        assert state.reap(tmp_path) == []
        assert all(alive(pid) for pid in made["pids"])
        assert all(os.path.isdir(path) for path in made["dirs"] + made["cgroups"])
        listed = state.containers(tmp_path)
        assert sorted(c["container"] for c in listed) == sorted(made["ids"])
        assert not any(c["kept"] for c in listed)
        with NativeEngine(state_dir=tmp_path) as engine:
            other = engine.attach(made["ids"][0])
            assert other.exec("echo $HOSTNAME").output == f"{other.hostname}\n"
            other.remove()  # kills it; its owner removes the rest
            assert other.status == "removed" and not alive(made["pids"][0])
            with pytest.raises(ContainerError, match="no container matches 'nope'"):
                engine.attach("nope")
    finally:
        owner.communicate("done\n", timeout=30)
    assert owner.returncode == 0
    assert_nothing_left(tmp_path, made)


@needs_root
def test_a_kept_container_outlives_its_owner(tmp_path: Path, rootfs: Path) -> None:
    owner, made = start_owner(tmp_path, rootfs, mode="keep")
    try:
        check_kept(tmp_path, owner, made)
    finally:  # a kept container outlives everything by design: never leak one from a test
        owner.kill()
        state.remove_kept(tmp_path, made["ids"][0])


def check_kept(tmp_path: Path, owner: subprocess.Popen, made: dict) -> None:
    owner.communicate("done\n", timeout=30)
    assert owner.returncode == 0
    kept_id = made["ids"][0]
    pid, shim = made["pids"][0], made["pids"][1]
    assert alive(pid) and alive(shim)
    assert not alive(made["pids"][2]), "the other container went with its owner"
    assert state.reap(tmp_path) == []
    assert alive(pid) and os.path.isdir(made["dirs"][0])
    assert [(c["container"], c["kept"]) for c in state.containers(tmp_path)] == [(kept_id, True)]
    with NativeEngine(state_dir=tmp_path) as engine:  # what `pycontain exec/rm ID` do
        kept = engine.attach(kept_id[:12])
        assert kept.kept and kept.status == "running" and kept.pid == pid
        assert kept.exec("echo entered; hostname").output == f"entered\n{kept.hostname}\n"
        kept.remove()
    assert_nothing_left(tmp_path, made)
    assert not state.remove_kept(tmp_path, kept_id)


@needs_root
def test_remove_kept_without_an_engine(tmp_path: Path, rootfs: Path) -> None:
    owner, made = start_owner(tmp_path, rootfs, mode="keep")
    try:
        owner.communicate("done\n", timeout=30)
    finally:
        owner.kill()
        assert state.remove_kept(tmp_path, made["ids"][0])
    assert_nothing_left(tmp_path, made)


@needs_root
def test_prune_kept(tmp_path: Path, rootfs: Path) -> None:
    owner, made = start_owner(tmp_path, rootfs, mode="keep")
    try:
        owner.communicate("done\n", timeout=30)
        assert state.prune(tmp_path) == []
        assert alive(made["pids"][0])
        assert state.prune(tmp_path, kept=True) == [f"keep-{made['ids'][0]}"]
    finally:
        owner.kill()
        state.remove_kept(tmp_path, made["ids"][0])
    assert_nothing_left(tmp_path, made)


def test_journal_undoes_newest_first_and_skips_handed(tmp_path: Path) -> None:
    order: list[str] = []
    state.register_undo("test-thing", lambda record: order.append(record["name"]))
    journal = state.Journal(tmp_path)
    journal.record("test-thing", container="a", name="first")
    journal.record("test-thing", container="b", name="handed-over")
    journal.record("test-thing", container=None, name="last")
    journal.record("handed", container="b")
    assert state.reap(tmp_path) == []  # our own lock: alive
    journal.close()
    assert order == ["last", "first"]
    assert list((tmp_path / "owners").iterdir()) == []


def test_records_written_together_read_and_undo_as_single_ones(tmp_path: Path) -> None:
    """``record_all`` is one append of several lines: the journal reads back the same records
    in order, and a dead owner's batch torn by its kill is undone up to the torn line."""
    order: list[str] = []
    state.register_undo("test-batch", lambda record: order.append(record["name"]))
    journal = state.Journal(tmp_path)
    journal.record("test-batch", container="a", name="single")
    batch = [state.entry("test-batch", "a", name=f"batch-{n}") for n in range(3)]
    assert journal.record_all(batch) == batch and journal.record_all([]) == []
    assert journal.records("a") == state.read_journal(journal.path) == [
        {"kind": "test-batch", "container": "a", "name": n}
        for n in ("single", "batch-0", "batch-1", "batch-2")]
    journal.close()
    assert order == ["batch-2", "batch-1", "batch-0", "single"]

    order.clear()
    owners = tmp_path / "owners"
    (owners / "dead-2.lock").touch()
    lines = "".join(json.dumps(state.entry("test-batch", "b", name=n)) + "\n"
                    for n in ("first", "second"))
    (owners / "dead-2.journal").write_text(lines[:-9])  # killed in the second line
    assert state.reap(tmp_path) == ["dead-2"]
    assert order == ["first"] and list(owners.iterdir()) == []


def test_a_named_volume_goes_with_the_last_owner_that_uses_it(tmp_path: Path) -> None:
    """A named volume that a kept container uses outlives its engine's removal of it (and
    the reaper's, once that engine is dead); the keeper's end removes it. The other way round
    too: a keeper that ends while the engine's own container still uses the volume leaves it
    for the engine."""
    from pytest_pycontain.native.volumes import NativeVolume, hand_over

    def kept_volume(container: str) -> tuple[state.Journal, state.Journal, NativeVolume]:
        engine = state.Journal(tmp_path)
        volume = NativeVolume.create(tmp_path / "volumes", engine, name="data")
        volume.used_by(container)
        keeper = state.Journal(tmp_path, owner=f"keep-{container}")
        for record in engine.records(container):
            keeper.record(**record)
        hand_over(engine, keeper, container)
        engine.record("handed", container=container)
        return engine, keeper, volume

    engine, keeper, volume = kept_volume("c1")
    (volume.data / "file").write_text("precious")
    volume.remove()  # the factory's teardown
    engine.close()  # the engine's end
    assert (volume.data / "file").read_text() == "precious"
    assert state.reap(tmp_path) == []  # the keeper lives
    assert volume.data.is_dir()
    keeper.close()  # pycontain rm
    assert not volume.directory.exists()

    engine, keeper, volume = kept_volume("c2")
    volume.used_by("c3")  # a container of the engine that still runs
    keeper.close()
    assert volume.data.is_dir()
    volume.remove()
    assert not volume.directory.exists()
    engine.close()
    assert list((tmp_path / "owners").iterdir()) == []


def test_a_torn_journal_and_a_named_handler(tmp_path: Path) -> None:
    owners = tmp_path / "owners"
    owners.mkdir()
    (owners / "dead-1.lock").touch()
    target = tmp_path / "made"
    target.mkdir()
    record = {"kind": "dir", "container": "x", "path": str(target)}
    named = {"kind": "custom", "container": "x", "path": str(target / "f"),
             "handler": "os:unlink"}
    (target / "f").touch()
    (owners / "dead-1.journal").write_text(
        json.dumps(record) + "\n" + json.dumps(named) + "\n" + '{"kind": "dir", "pa')
    assert state.reap(tmp_path) == ["dead-1"]
    assert not target.exists() and list(owners.iterdir()) == []


def test_records_directories_of_dead_owners_are_swept(tmp_path: Path) -> None:
    """An owner that wrote network records without journalling their directory (published
    ports only), or died mid-write, leaves nothing once reaped; a live owner's stay."""
    from pytest_pycontain.native.netrecords import write_record

    live = state.Journal(tmp_path)
    mine = write_record(tmp_path / "netrecords" / live.owner, "proxy", "1", host_port=8080)
    dead = tmp_path / "netrecords" / "4242-dead"
    write_record(dead, "proxy", "2", host_port=8081)
    (dead / ".net-proxy-3.json.tmp").write_text('{"kind": "pro')  # torn by the kill
    assert state.reap(tmp_path) == ["4242-dead"]
    assert not dead.exists() and mine.exists()
    assert state.prune(tmp_path) == []  # nothing more; the live owner's record stays
    live.close()  # and goes with its owner's clean close
    assert list((tmp_path / "netrecords").iterdir()) == []


def test_process_records_guard_against_pid_reuse(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        journal = state.Journal(tmp_path)
        journal.record("process", pid=sleeper.pid, start=12345)  # not its start time
        journal.close()
        assert sleeper.poll() is None
        journal = state.Journal(tmp_path)
        journal.record("process", pid=sleeper.pid, start=state.process_start_time(sleeper.pid))
        journal.close()
        assert sleeper.wait(10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


KILLED_TEST = """
import os, time
from types import SimpleNamespace
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native.engine import NativeEngine

def test_killed_mid_test():
    engine = NativeEngine(state_dir=os.environ["T_STATE"])
    image = SimpleNamespace(config={"Cmd": ["sleep", "1000"]}, layer_dirs=[os.environ["T_ROOT"]])
    made = [engine.run(RunSpec(image=image, memory="64m", init=True)) for _ in range(2)]
    with open(os.environ["T_READY"] + ".tmp", "w") as file:
        file.write(" ".join(str(p) for c in made for p in (c.pid, c.shim, engine.zygote.pid)))
    os.rename(os.environ["T_READY"] + ".tmp", os.environ["T_READY"])
    time.sleep(1000)
"""


@needs_root
def test_a_pytest_killed_mid_test_leaves_nothing_after_the_next_start(
        tmp_path: Path, rootfs: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_killed.py").write_text(KILLED_TEST)
    ready = tmp_path / "ready"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_killed.py"],
        cwd=tmp_path / "run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO), "T_STATE": str(tmp_path / "state"),
             "T_ROOT": str(rootfs), "T_READY": str(ready)})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert run.poll() is None, "the inner pytest ended before it was killed"
            assert time.monotonic() < deadline, "the inner pytest never got ready"
            time.sleep(0.02)
    finally:
        run.kill()
        run.wait()
    pids = [int(p) for p in ready.read_text().split()]
    left = list((tmp_path / "state" / "containers").iterdir())
    assert len(left) == 2, "a killed run leaves its records for the next one"
    cgroups = [g for c in left for parent in ("memory/pycontain", "pycontain")  # v1, v2
               for g in (Path("/sys/fs/cgroup") / parent).glob(f"{c.name}*")]
    assert len(cgroups) == 2
    NativeEngine(state_dir=tmp_path / "state").close()  # the next run: reaps at start
    assert_nothing_left(tmp_path / "state", {"pids": pids, "dirs": [], "cgroups": []})
    assert not any(path.exists() for path in left)
    assert not any(path.exists() for path in cgroups)
