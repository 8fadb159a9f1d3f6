"""The example projects run green as users run them, plain and under pytest-xdist, and leave
nothing behind: no mounts, no links, no container processes, nothing for the reaper.

They run through ``examples/run --each`` (the loop of the README's first command, without the
install step) with this session's registry mirror and image cache, and a state directory of
their own so that what they leave can be told from what other tests do meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pycontain.backends import native_blocker
from pytest_pycontain.idmap import host_uid

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PROJECTS = sorted(p.name for p in EXAMPLES.iterdir() if (p / "pyproject.toml").is_file())
NATIVE_LINK_PREFIXES = ("vpc", "vpd", "vpe")  # the native engine's veths and delay lines

pytestmark = [
    pytest.mark.skipif(native_blocker() is not None, reason=native_blocker() or ""),
    pytest.mark.root,
]


@pytest.fixture
def state_dirs() -> Iterator[list[str]]:
    """Fresh state directories (short, under /run, or /tmp for a user: they hold unix
    sockets)."""
    where = "/run" if host_uid() == 0 else "/tmp"  # (a rootless run is "root" inside)
    paths = [tempfile.mkdtemp(prefix="pycontain-examples-", dir=where) for _ in range(2)]
    yield paths
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def start_examples(state_dir: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHON": sys.executable, "PYCONTAIN_STATE_DIR": state_dir,
           "PYCONTAIN_BACKEND": "native"}
    return subprocess.Popen(["bash", str(EXAMPLES / "run"), "--each", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def host_links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith(NATIVE_LINK_PREFIXES)}


def assert_nothing_left(state_dir: str, links_before: set[str]) -> None:
    from pytest_pycontain.native import state

    # Only paths of these runs: other sessions on the machine (benchmarks, podman, the other
    # tests) mount and link things of their own meanwhile. The native engine mounts container
    # roots under the state directory and keeps bridges and veths in namespaces of their own,
    # so a veth of ours on the host (or a mount under our directories) is a leak.
    ours = [state_dir, os.environ.get("PYCONTAIN_CACHE_DIR") or state_dir]
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines()
              if any(path in line for path in ours)]
    assert mounts == []
    assert host_links() - links_before == set()
    assert state.containers(state_dir) == []
    assert state.reap(state_dir) == []  # no dead owner left anything to undo
    rooted = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root").startswith(state_dir):
                rooted.append(pid)
        except OSError:
            continue
    assert rooted == []


def test_the_examples_pass_plain_and_under_xdist_and_leave_nothing(
        state_dirs: list[str]) -> None:
    """Both runs at once, sharing the image cache as parallel CI jobs on one machine would."""
    links_before = host_links()
    runs = {"plain": start_examples(state_dirs[0]),
            "xdist": start_examples(state_dirs[1], "-q", "-n", "4")}
    try:
        outputs = {label: process.communicate(timeout=600)[0] for label, process in runs.items()}
    except BaseException:  # a hang or Ctrl-C: each run is a process group of its own, end it
        for process in runs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        raise
    for label, process in runs.items():
        assert process.returncode == 0, f"{label}:\n{outputs[label][-5000:]}"
    assert len(PROJECTS) >= 3
    for output in outputs.values():
        summaries = [line for line in output.splitlines() if " passed in " in line]
        assert len(summaries) == len(PROJECTS), output
        assert not any(word in line for line in summaries
                       for word in ("failed", "error", "skipped")), output
        assert output.rstrip().endswith("all examples passed")
    for name in PROJECTS:  # each project ran in its own folder, with its own pyproject.toml
        assert f"rootdir: {EXAMPLES / name}\nconfigfile: pyproject.toml" in outputs["plain"]
    for state_dir in state_dirs:
        assert_nothing_left(state_dir, links_before)


def test_pytest_on_the_examples_folder_says_how_to_run_them() -> None:
    """From the repository root the rootdir would be wrong for every example: a usage error."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "examples"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "examples/ holds separate projects" in result.stderr
    assert "bash examples/run" in result.stderr


def test_a_failing_example_fails_the_run_and_is_named(state_dirs: list[str]) -> None:
    """`examples/run` goes on through every project and exits non-zero naming the failures."""
    process = start_examples(state_dirs[0], "-q", "-k", "no_such_test")  # exit 5: nothing ran
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 1, output
    assert output.count("== examples/") == len(PROJECTS)
    assert "examples failed: " + " ".join(f"examples/{p}/" for p in PROJECTS) in output
