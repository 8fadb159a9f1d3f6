"""A run killed with SIGKILL while containers sit on networks with published ports leaves
nothing once the next engine starts: no lease, no veth, no bridge, no netns, no proxy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the native engine needs root (namespaces, mounts)")

OWNER = textwrap.dedent("""
    import sys, time
    from pytest_pycontain.config import resolve
    from pytest_pycontain.engine import RunSpec
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(resolve())
    engine.network("spare").remove()  # a spare namespace, left for the next network
    net = engine.network("doomed")
    engine.network("another spare").remove()
    web = engine.run(RunSpec(image="busybox", name="web", network=net, ports=[8080],
                             command=["sleep", "300"]))
    print(net.subnet, web.address(8080)[1], web.pid, flush=True)
    time.sleep(300)
""")


OUR_LINK_PREFIXES = ("vpc", "vpd", "vpe")  # the veths and delay lines the engine names


def links() -> set[str]:
    """The host's links that the engine could have made: other software on the machine (a
    system Docker, Podman) adds and removes its own at any time, so theirs are not counted."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {name for name in names if name.startswith(OUR_LINK_PREFIXES)}


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether ``pid`` has died (or is a zombie) within ``within`` seconds: the chain of
    parent-death signals ends it, but a dying process takes a moment to leave on a busy machine
    (its state is still R while it exits)."""
    import time

    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + within
    while True:
        try:
            if "State:\tZ" in status.read_text():
                return True
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_killed_owner_leaves_no_network_behind(tmp_path: Path) -> None:
    from pytest_pycontain.config import resolve
    from pytest_pycontain.native.engine import NativeEngine
    from pytest_pycontain.native.ipam import IPAM

    state_dir = tmp_path / "state"
    env = {**os.environ, "PYCONTAIN_STATE_DIR": str(state_dir)}
    before = links()
    owner = subprocess.Popen([sys.executable, "-c", OWNER], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        subnet, port, pid1 = owner.stdout.readline().split()
    except ValueError:
        owner.kill()
        pytest.fail(f"the owner did not start: {owner.stderr.read()}")
    assert subnet in IPAM(state_dir).leases() and len(IPAM(state_dir).leases()) == 2
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    NativeEngine(resolve(environ=env)).close()  # starting an engine reaps the dead owner
    assert IPAM(state_dir).leases() == {}
    assert gone(int(pid1)), Path(f"/proc/{pid1}/status").read_text()
    assert links() <= before
    import socket

    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", int(port)))
    assert str(state_dir) not in Path("/proc/self/mounts").read_text()
    owners = state_dir / "owners"
    assert not owners.exists() or not any(owners.iterdir())


PORTS_ONLY = textwrap.dedent("""
    import time
    from pytest_pycontain.config import resolve
    from pytest_pycontain.engine import RunSpec
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(resolve())
    web = engine.run(RunSpec(image="busybox", name="web", ports=[8080, 8081],
                             command=["sleep", "300"]))
    print(engine.journal.owner, flush=True)
    time.sleep(300)
""")
OWNER_NAME = OWNER.replace("print(net.subnet,", "print(engine.journal.owner, net.subnet,")


def test_a_killed_owners_records_all_go_at_the_next_start(tmp_path: Path) -> None:
    """Owners with published ports (one with networks too, one without: it never journals
    its records directory) are killed; after the next start the state directory holds nothing
    that names them, and a normal run leaves no records directory either."""
    from pytest_pycontain.config import resolve
    from pytest_pycontain.native.engine import NativeEngine

    state_dir = tmp_path / "state"
    env = {**os.environ, "PYCONTAIN_STATE_DIR": str(state_dir)}
    owners = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
              for script in (OWNER_NAME, PORTS_ONLY)]
    names = []
    for owner in owners:
        line = owner.stdout.readline().split()
        if not line:
            for other in owners:
                other.kill()
            pytest.fail(f"an owner did not start: {owner.stderr.read()}")
        names.append(line[0])
    records = state_dir / "netrecords"
    for name in names:  # what the reaper must find: each owner's published ports
        assert list((records / name).glob("net-proxy-*.json")), name
    for owner in owners:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    NativeEngine(resolve(environ=env)).close()  # starting an engine reaps the dead owners
    mentions = []
    for path in state_dir.rglob("*"):
        text = path.read_text(errors="replace") if path.is_file() else ""
        for name in names:
            pid = name.split("-")[0]
            if name in str(path.relative_to(state_dir)) or name in text or \
                    f'"pid": {pid}' in text:
                mentions.append(str(path.relative_to(state_dir)))
    assert mentions == []
    assert not records.exists() or list(records.iterdir()) == []
    with NativeEngine(resolve(environ=env)) as engine:  # a published port and a clean close
        from pytest_pycontain.engine import RunSpec

        engine.run(RunSpec(image="busybox", ports=[8080], command=["sleep", "300"]))
        assert list(records.glob(f"{engine.journal.owner}/net-proxy-*.json"))
    assert list(records.iterdir()) == []


def test_pycontain_prune_removes_a_killed_owners_records(tmp_path: Path) -> None:
    """The same through the command a user runs: ``pycontain prune`` says whom it reaped."""
    env = {**os.environ, "PYCONTAIN_STATE_DIR": str(tmp_path / "state")}
    owner = subprocess.Popen([sys.executable, "-c", PORTS_ONLY], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = owner.stdout.readline().strip()
    if not name:
        owner.kill()
        pytest.fail(f"the owner did not start: {owner.stderr.read()}")
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    records = tmp_path / "state" / "netrecords"
    assert list((records / name).glob("net-proxy-*.json"))
    done = subprocess.run([sys.executable, "-m", "pytest_pycontain.cli", "prune"],
                          env={**env, "PYCONTAIN_CACHE_DIR": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=120)  # (an empty store)
    assert done.returncode == 0, done.stderr
    assert f"reaped {name}" in done.stdout.splitlines()
    assert list(records.iterdir()) == []
    assert list((tmp_path / "state" / "owners").iterdir()) == []
