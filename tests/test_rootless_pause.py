"""Rootless mode's one user namespace per user, held by a pause process: what one run keeps or
leaves for reuse, ``pycontain exec`` and a later run reach; killing the pause process loses
nothing and leaves nothing behind.

Every run here is a subprocess started from outside the user's namespace (a process that
joined it cannot leave it), with a runtime directory of its own (``XDG_RUNTIME_DIR``), so its
pause process is the test's alone. ``.ci/rootless`` runs this module in a pytest process of
its own, as a user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_pycontain.backends import native_blocker
from pytest_pycontain.idmap import host_uid, in_user_namespace

pytestmark = [
    pytest.mark.skipif(host_uid() == 0, reason="rootless mode is for users other than root "
                                              "(.ci/rootless runs this module as a user)"),
    pytest.mark.skipif(native_blocker() is not None, reason=native_blocker() or ""),
    pytest.mark.skipif(in_user_namespace(), reason="this pytest process joined the user's "
                       "namespace already (an engine ran in it), so every run it starts is "
                       "inside too; run this module in a pytest process of its own"),
]

RUNS = """
import pytest


def test_held(pycontain):
    box = pycontain.run("busybox", name="held", command=["sleep", "600"], reuse=True)
    mark = box.exec("cat /tmp/mark 2>/dev/null || echo none").output.strip()
    box.exec("echo made-by-a-run >> /tmp/mark")
    with open("held.txt", "a") as out:
        out.write(f"{box.id} {mark}\\n")


def test_kept(pycontain):
    box = pycontain.run("busybox", command=["sleep", "600"])
    box.exec("echo kept-by-run-1 > /tmp/mark")
    with open("kept.txt", "w") as out:
        out.write(box.id)
    assert False, "fails, so that its container is kept"
"""


class World:
    """A runtime directory of the test's own, and runs of pytest and pycontain in it."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = path = tmp_path / "project"  # the runs' directory; the runtime's beside
        path.mkdir()
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        self.pid_file = runtime / "pycontain" / "pause.pid"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYCONTAIN_STATE_DIR", "PYCONTAIN_USERNS", "PYCONTAIN_REUSE")}
        self.env["XDG_RUNTIME_DIR"] = str(runtime)
        (path / "test_runs.py").write_text(RUNS)

    def pytest(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                               "--pycontain-backend=native", *args], cwd=self.path,
                              env=self.env, capture_output=True, text=True, timeout=300)

    def pycontain(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest_pycontain", *args],
                              cwd=self.path, env=self.env, capture_output=True, text=True,
                              timeout=120)

    def pause(self) -> tuple[int, str]:
        """The pause process's pid and its user namespace, from its pid file."""
        pid, _start, namespace = self.pid_file.read_text().split()
        return int(pid), namespace

    def held(self) -> list[list[str]]:
        return [line.split(" ", 1) for line in
                (self.path / "held.txt").read_text().splitlines()]


def members(namespace: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/user") == namespace:
                found.append(int(entry))
        except OSError:
            continue
    return found


def gone(world: World, namespace: str, *, pid_file: bool = False) -> None:
    """Nothing of the user's namespace is left: no process is in it (the pause process ended
    by itself once it was alone and, with ``pid_file``, took its pid file with it; a killed
    one's is stale, and the next run makes a fresh namespace)."""
    deadline = time.monotonic() + 60
    while members(namespace) or (pid_file and world.pid_file.exists()):
        assert time.monotonic() < deadline, (members(namespace), world.pid_file.exists())
        time.sleep(0.2)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():  # until its parent (init) has reaped it
        assert time.monotonic() < deadline, f"pid {pid} was not reaped"
        time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path):
    made = World(tmp_path)
    yield made
    if made.pid_file.exists():  # a failed test: its containers go, so the pause process goes
        made.pycontain("prune", "--kept", "--reused")


def test_exec_and_a_later_run_reach_what_a_run_kept(world: World) -> None:
    first = world.pytest("--pycontain-reuse", "--pycontain-keep=failed")
    assert first.returncode == 1, first.stdout + first.stderr  # test_kept fails, as meant
    pause, namespace = world.pause()
    info = world.pycontain("info", "--backend", "native")
    assert (f"user namespace: held by pause process {pause} ({world.pid_file}); every run "
            "joins it") in info.stdout.splitlines(), info.stdout + info.stderr
    kept = (world.path / "kept.txt").read_text()
    said = world.pycontain("exec", kept[:12], "cat", "/tmp/mark")
    assert (said.returncode, said.stdout) == (0, "kept-by-run-1\n"), said.stderr
    [(held, mark)] = world.held()
    assert mark == "none"
    said = world.pycontain("exec", "held", "cat", "/tmp/mark")
    assert (said.returncode, said.stdout) == (0, "made-by-a-run\n"), said.stderr

    second = world.pytest("--pycontain-reuse", "-k", "held")
    assert second.returncode == 0, second.stdout + second.stderr
    assert world.held()[-1] == [held, "made-by-a-run"]  # the same container, reached
    assert world.pause() == (pause, namespace)  # one namespace for every run of the user

    pruned = world.pycontain("prune", "--kept", "--reused")
    assert pruned.returncode == 0, pruned.stderr
    gone(world, namespace, pid_file=True)
    info = world.pycontain("info", "--backend", "native")
    assert (f"user namespace: none now; the next run makes it, held by a pause process "
            f"({world.pid_file})") in info.stdout.splitlines(), info.stdout


def test_killing_the_pause_process_loses_nothing_and_leaves_nothing(world: World) -> None:
    first = world.pytest("--pycontain-reuse", "-k", "held")
    assert first.returncode == 0, first.stdout + first.stderr
    pause, namespace = world.pause()
    kill(pause)
    # the reused container still lives in the namespace: the next run joins it through the
    # container's own processes, and a new pause process holds it from then on
    second = world.pytest("--pycontain-reuse", "-k", "held")
    assert second.returncode == 0, second.stdout + second.stderr
    [(held, _none), again] = world.held()
    assert again == [held, "made-by-a-run"]
    pause_again, namespace_again = world.pause()
    assert pause_again != pause and namespace_again == namespace

    said = world.pycontain("rm", "held")
    assert said.returncode == 0, said.stderr
    gone(world, namespace, pid_file=True)
    # nothing holds it: the next run makes a fresh namespace (and a fresh container)
    third = world.pytest("--pycontain-reuse", "-k", "held")
    assert third.returncode == 0, third.stdout + third.stderr
    assert world.held()[-1][1] == "none"
    third_pause, fresh = world.pause()  # (the kernel may give it the old one's number)
    assert third_pause not in (pause, pause_again)
    kill(third_pause)  # killed with a container in it, and pruned
    pruned = world.pycontain("prune", "--reused")
    assert pruned.returncode == 0, pruned.stderr
    gone(world, fresh)
