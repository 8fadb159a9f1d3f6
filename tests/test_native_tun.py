"""pasta's /dev/net/tun, when a run cannot use it: networks and RUN steps work without a way
out, after one warning each naming the device and the fix (as on a host without pasta, or
offline), and ``pycontain info`` says it; nothing is left behind.

The runs happen in a mount namespace of their own where /dev/null is bound over /dev/net/tun
(as root, or as root of the user's namespace in rootless mode), so the host is never changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from backends import NEEDS_ROOT

from pytest_pycontain.idmap import host_uid
from pytest_pycontain.native import egress

pytestmark = [NEEDS_ROOT,
              pytest.mark.skipif(egress.pasta_path() is None, reason="pasta is not installed "
                                 "(.ci/setup installs passt)")]

# Run argv[1:] with /dev/null bound over /dev/net/tun, in a mount namespace of its own
# (rootless: first joining the user's namespace, whose root may mount in it).
WITHOUT_TUN = """
import os, sys
from pytest_pycontain.idmap import host_uid
from pytest_pycontain.native import syscalls as sc
if host_uid() != 0:
    from pytest_pycontain.native.userns import enter
    enter()
sc.unshare(sc.CLONE_NEWNS)
sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
sc.mount("/dev/null", "/dev/net/tun", None, sc.MS_BIND)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

RUNS = """
import warnings



def test_a_network_with_a_way_out(pycontain):
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        net = pycontain.network()
    print("SAID:", " | ".join(str(w.message) for w in said))
    box = pycontain.run("busybox", command=["sleep", "60"], network=net)
    assert box.exec("true").exit_code == 0  # the network works, without a way out


def test_an_internal_network_needs_none(pycontain):
    net = pycontain.network(internal=True)
    box = pycontain.run("busybox", command=["sleep", "60"], network=net)
    assert box.exec("true").exit_code == 0


def test_a_run_step(pycontain, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\\nRUN echo built > /built\\n")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        pycontain.build(tmp_path)
    print("WARNED:", " | ".join(str(w.message) for w in said))
"""


def without_tun(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TUN, *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


NAMED = ("/dev/net/tun is not the tun device (character device 1,3, where pasta needs 10,200 "
         "for a way out); as root, make it as distributions ship it: mknod -m 0666 "
         "/dev/net/tun c 10 200 (after modprobe tun)")


def test_without_the_tun_device_networks_and_steps_say_so_and_work_offline(tmp_path: Path
                                                                         ) -> None:
    (tmp_path / "test_runs.py").write_text(RUNS)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    run = ("-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "--pycontain-backend=native",
           "test_runs.py")
    done = subprocess.run([sys.executable, "-c", WITHOUT_TUN, *run], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYCONTAIN_STATE_DIR": str(state)})
    assert done.returncode == 0, done.stdout + done.stderr
    said = next(line for line in done.stdout.splitlines() if line.startswith("SAID:"))
    assert NAMED + ": networks have no way out" in said
    warned = next(line for line in done.stdout.splitlines() if "WARNED:" in line)
    assert NAMED + ": RUN steps get loopback only" in warned
    from pytest_pycontain.native import state as records

    assert records.containers(state) == []  # nothing of the runs left
    assert not [p for p in (state / "netrecords").rglob("*") if p.is_file()]


def test_pycontain_info_says_what_is_wrong_with_it(tmp_path: Path) -> None:
    done = without_tun("-m", "pytest_pycontain", "info", "--backend", "native", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"egress: none ({egress.pasta_path()}, but /dev/net/tun cannot serve it)" in lines
    assert f"fix: a way out for networks and RUN steps: {NAMED}" in lines


def tun_closed() -> bool:
    blocked = egress.tun_blocked()
    return blocked is not None and " is closed to uid " in blocked


@pytest.mark.skipif(not tun_closed(), reason="/dev/net/tun is open to this user here "
                    "(.ci/rootless runs this as a user before it opens the device)")
def test_a_device_closed_to_the_user_is_named_with_its_mode_and_the_fix(tmp_path: Path
                                                                        ) -> None:
    """Where the host ships /dev/net/tun mode 0600 (this one does), as the user sees it."""
    mode = os.stat("/dev/net/tun").st_mode & 0o777
    done = subprocess.run([sys.executable, "-m", "pytest_pycontain", "info", "--backend",
                           "native"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"egress: none ({egress.pasta_path()}, but /dev/net/tun cannot serve it)" in lines
    assert (f"fix: a way out for networks and RUN steps: /dev/net/tun is closed to uid "
            f"{host_uid()} (mode {mode:04o}; pasta needs it for a way out); as root, open it "
            "as distributions ship it: chmod 0666 /dev/net/tun") in lines


def test_the_check_names_the_path_and_the_fix(tmp_path: Path) -> None:
    """The check itself, on paths of the test's: a file that is not the device, and none."""
    plain = tmp_path / "tun"
    plain.write_text("")
    assert egress.tun_blocked(str(plain)) == (
        f"{plain} is not the tun device (not a character device, where pasta needs 10,200 for "
        f"a way out); as root, make it as distributions ship it: mknod -m 0666 {plain} c 10 "
        "200 (after modprobe tun)")
    assert egress.tun_blocked(str(tmp_path / "none")).startswith(
        f"{tmp_path / 'none'} does not exist (pasta needs it for a way out); as root, make it")
