"""The native engine: the engine contract on real namespaces, plus what only it has (layers,
limits, bad input, fork safety), and proof that nothing is left behind."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from engine_contract import REACH, EngineContract, busybox_rootfs, path_search_tree

from pytest_pycontain.backends import native_blocker
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import (
    ConfigError,
    ContainerError,
    EngineUnavailable,
    ImageError,
    NetworkError,
    NotSupported,
)
from pytest_pycontain.idmap import host_uid

needs_root = pytest.mark.skipif(  # root, or rootless (user namespaces)
    native_blocker() is not None, reason=native_blocker() or "")
pytestmark = [needs_root, pytest.mark.root]


class FakeImage(SimpleNamespace):
    """What the engine needs of an image: ``config`` and its lower dirs, bottom first."""


@pytest.fixture(scope="session")
def busybox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def busybox(busybox_dir: Path) -> FakeImage:
    return FakeImage(config={"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
                     layer_dirs=[busybox_dir], tags=["busybox:test"])


@pytest.fixture
def make_image(busybox: FakeImage):
    def make(**config) -> FakeImage:
        return FakeImage(config={**busybox.config, **config}, layer_dirs=busybox.layer_dirs,
                         tags=busybox.tags)

    return make


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def engine(state_dir: Path):
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(state_dir=state_dir)
    yield engine
    engine.close()
    assert not list((state_dir / "owners").iterdir()), "the engine left its journal"
    assert not list((state_dir / "containers").iterdir()), "the engine left container dirs"
    assert_no_mounts_of(state_dir)


def assert_no_mounts_of(state_dir: Path) -> None:
    """Our overlays live in the containers' own mount namespaces; none may reach the host's."""
    mounts = Path("/proc/mounts").read_text()
    assert str(state_dir) not in mounts and "lowerdir=l/" not in mounts


class TestNativeContract(EngineContract):
    """The shared contract, on the native engine."""


def test_a_subpath_resolves_inside_its_volume(engine, busybox) -> None:
    """A volume's ``subpath`` is resolved inside the volume, as the container would resolve
    it: symlinks a container planted there (``/etc``, ``../../..``) stay in the volume and
    never reach the host's tree; a missing one is a ConfigError naming it."""
    from pytest_pycontain.engine import VolumeMount
    from pytest_pycontain.errors import ConfigError

    volume = engine.volume("subpath-probe")
    try:
        planter = engine.run(RunSpec.create(busybox, command=(
            "sh -c 'mkdir -p /v/etc /v/real && echo inside > /v/etc/marker && "
            "echo real > /v/real/file && ln -s /etc /v/abs && ln -s ../../../../../etc /v/up'"),
            volumes={volume: "/v"}))
        assert planter.wait(timeout=30) == 0
        for link in ("abs", "up"):
            box = engine.run(RunSpec.create(busybox, command="sleep 1000", volumes=[
                VolumeMount(volume, "/s", subpath=link)]))
            assert box.exec("ls /s").output == "marker\n"  # the volume's etc, not the host's
            box.remove()
        real = engine.run(RunSpec.create(busybox, command="sleep 1000", volumes=[
            VolumeMount(volume, "/s", read_only=True, subpath="real")]))
        assert real.exec("cat /s/file; touch /s/x").output.startswith("real\n")
        assert real.exec("test -e /s/x").exit_code != 0
        real.remove()
        with pytest.raises(ConfigError, match=r"subpath 'nowhere' does not exist in volume "
                                              r"'subpath-probe'"):
            engine.run(RunSpec.create(busybox, command="true", volumes=[
                VolumeMount(volume, "/s", subpath="nowhere")]))
        planter.remove()
    finally:
        volume.remove()


def test_volumes_live_under_the_state_directory(engine, busybox, state_dir: Path) -> None:
    """An anonymous volume goes with its container; a named one outlives it, until removed;
    a container that cannot start leaves no volume behind."""
    volumes = state_dir / "volumes"
    engine.drain()  # earlier tests' containers (and their anonymous volumes) are gone
    before = set(volumes.iterdir()) if volumes.exists() else set()
    named = engine.volume("native-data")
    image = FakeImage(config={**busybox.config, "Volumes": {"/anon": {}}},
                      layer_dirs=busybox.layer_dirs)
    container = engine.run(RunSpec(image=image, command="sleep 1000",
                                   volumes={named: "/named"}))
    assert container.exec("echo a > /anon/x && echo n > /named/x").exit_code == 0
    made = set(volumes.iterdir()) - before
    assert len(made) == 2 and named.directory in made
    assert (named.data / "x").read_text() == "n\n"
    container.remove()
    engine.drain()
    assert set(volumes.iterdir()) - before == {named.directory}
    broken = FakeImage(config={**busybox.config, "Volumes": {"/anon": {}, "/etc/passwd": {}}},
                       layer_dirs=busybox.layer_dirs)
    with pytest.raises(ContainerError, match="cannot mount volume over existing file"):
        engine.run(RunSpec(image=broken, command="true", volumes={named: "/named"}))
    engine.drain()
    assert set(volumes.iterdir()) - before == {named.directory}
    named.remove()
    assert set(volumes.iterdir()) == before and engine.find_volume("native-data") is None

def test_many_layers_fit_one_mount(engine, busybox, tmp_path: Path) -> None:
    layers = [busybox.layer_dirs[0]]
    for number in range(1, 120):
        layer = tmp_path / ("a-rather-long-directory-name-for-layer-" + "x" * 40) / str(number)
        layer.mkdir(parents=True)
        (layer / f"file{number}").write_text(str(number))
        layers.append(layer)
    (layers[-1] / "file1").write_text("top wins")
    container = engine.run(RunSpec(image=FakeImage(config=busybox.config, layer_dirs=layers),
                                   command="sleep 1000"))
    try:
        assert container.exec("cat /file1; echo; ls / | grep -c '^file'").output == (
            "top wins\n119\n")
    finally:
        container.remove()


def test_a_missing_layer_directory(engine, busybox, tmp_path: Path) -> None:
    image = FakeImage(config=busybox.config, layer_dirs=[tmp_path / "gone"], tags=["x:1"])
    with pytest.raises(ImageError, match=f"{tmp_path / 'gone'}"):
        engine.run(RunSpec(image=image))


def test_no_command(engine, make_image) -> None:
    with pytest.raises(ContainerError, match="no command specified"):
        engine.run(RunSpec(image=make_image(Cmd=None)))


def test_the_path_search_is_the_users(engine, busybox, tmp_path: Path) -> None:
    """PATH is searched as the container's user, as execvp does: a file only root may run is
    passed over for nobody, for PID 1 and for exec. (The command is looked up before the
    fork, by the shim as root for an exec; what that finds and the user cannot run falls back
    to execvp's own search. runc finds it as root and refuses it: permission denied.)"""
    env = {"PATH": "/opt/a:/opt/b:/opt/c:/opt/d:/bin"}
    mounts = [f"{path_search_tree(tmp_path)}:/opt:ro"]
    first = engine.run(RunSpec(image=busybox, command=["tool", "pid1"], env=env, user="nobody",
                               mounts=mounts))
    running = engine.run(RunSpec(image=busybox, command=["sleep", "1000"], env=env,
                                 mounts=mounts))
    try:
        assert first.wait(timeout=10) == 0
        assert first.logs() == "any pid1\n"
        assert running.exec(["tool", "exec"], user="nobody").output == "any exec\n"
        assert running.exec(["tool", "exec"]).output == "owner exec\n"
    finally:
        first.remove()
        running.remove()


def test_bad_mount_specs(engine, busybox, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist on the host"):
        engine.run(RunSpec(image=busybox, mounts=[f"{tmp_path}/nope:/x"]))
    with pytest.raises(ConfigError, match="must be absolute"):
        engine.run(RunSpec(image=busybox, mounts=[f"{tmp_path}:relative"]))


def test_host_network(engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, command="sleep 1000", network="host"))
    try:
        names = sorted(container.exec("ls /sys/class/net").output.split())
        assert names == sorted(os.listdir("/sys/class/net"))
        assert container.hostname == socket.gethostname()  # Docker's habit on the host network
        assert container.exec("hostname").output == socket.gethostname() + "\n"
        assert container.address(8080) == ("127.0.0.1", 8080)
    finally:
        container.remove()


def test_networks_take_their_size_and_pool_from_the_settings(tmp_path: Path, busybox) -> None:
    import ipaddress

    from pytest_pycontain.config import resolve
    from pytest_pycontain.native.engine import NativeEngine

    settings = resolve(environ={"PYCONTAIN_NETWORK_POOL": "10.199.0.0/16",
                                "PYCONTAIN_NETWORK_PREFIX": "22"})
    with NativeEngine(settings, state_dir=tmp_path) as engine:
        net = engine.network()
        assert net.subnet == "10.199.0.0/22"
        member = engine.run(RunSpec(image=busybox, command="sleep 1000", network=net))
        assert ipaddress.IPv4Address(member.ip) in ipaddress.IPv4Network("10.199.0.0/22")
        assert member.exec("ip -o -4 addr show eth0").output.split()[3] == f"{member.ip}/22"


def test_a_removed_network_is_the_next_ones_namespace(engine, busybox) -> None:
    from pytest_pycontain.native.ipam import IPAM

    first = engine.network("reused")
    old = engine.run(RunSpec(image=busybox, name="old", command="sleep 1000", network=first))
    old.remove()
    first.remove()
    with pytest.raises(NetworkError, match="'reused' has been removed"):
        first.delay("old", 10)
    second = engine.network("reused")  # the name is free again
    try:
        assert second.subnet == first.subnet and second.id != first.id
        lease = IPAM(engine.state_root).leases()[second.subnet]
        assert (lease["network"], lease["name"]) == (second.id, "reused")
        new = engine.run(RunSpec(image=busybox, name="new", command="sleep 1000",
                                 network=second))
        peer = engine.run(RunSpec(image=busybox, name="peer", command="sleep 1000",
                                  network=second))
        assert peer.exec(REACH.format("new")).exit_code == 0
        assert peer.exec(f"nslookup old {second.dns_server}").exit_code != 0  # nothing old
        second.partition(new, peer)
        assert peer.exec("ping -c1 -W1 new").exit_code != 0
        new.remove()
        peer.remove()
    finally:
        second.remove()


def test_a_network_with_containers_on_it_goes_for_good(engine, busybox) -> None:
    net = engine.network()
    box = engine.run(RunSpec(image=busybox, command="sleep 1000", network=net))
    try:
        assert "eth0" in box.exec("cat /proc/net/dev").output
        net.remove()  # the container is still on it: no reuse, its interface goes
        assert "eth0" not in box.exec("cat /proc/net/dev").output
    finally:
        box.remove()


def test_spare_networks_go_with_the_engine(busybox, tmp_path: Path) -> None:
    from pytest_pycontain.native.engine import NativeEngine
    from pytest_pycontain.native.ipam import IPAM

    engine = NativeEngine(state_dir=tmp_path)
    nets = [engine.network() for _ in range(3)]
    for net in nets:
        net.remove()
    assert len(IPAM(tmp_path).leases()) == engine.SPARE_NETWORKS  # the third went for good
    engine.close()
    deadline = time.monotonic() + 10
    while IPAM(tmp_path).leases() and time.monotonic() < deadline:
        time.sleep(0.02)  # spares are torn down in the background
    assert IPAM(tmp_path).leases() == {}
    assert not list((tmp_path / "owners").iterdir())


def test_containers_started_from_many_threads(engine, busybox) -> None:
    def lifecycle(number: int) -> str:
        container = engine.run(RunSpec(image=busybox, command="sleep 1000",
                                       hostname=f"h{number}"))
        try:
            return container.exec("hostname").output
        finally:
            container.remove()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lifecycle, range(16))) == [f"h{n}\n" for n in range(16)]


def test_pid_namespace_and_processes_die_with_removal(engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, command="sleep 1000"))
    assert container.exec("echo $$").output == "2\n"
    container.exec("sleep 1000 & sleep 1000 & exit 0")
    pid, shim = container.pid, container.shim
    container.remove()
    assert not os.path.exists(f"/proc/{pid}")
    deadline = time.monotonic() + 1  # the shim's last microseconds of exit (no zombie)
    while os.path.exists(f"/proc/{shim}"):
        assert time.monotonic() < deadline, "the shim outlived its container's removal"
        time.sleep(0.001)


def test_a_command_still_execd_goes_with_the_removal(engine, busybox) -> None:
    """Killed with the container and said so as Docker says it (137); PID 1 is gone when
    ``remove()`` returns: the shim reaps the exec'd command while PID 1's namespace ends,
    which waits for it."""
    container = engine.run(RunSpec(image=busybox, command="sleep 1000"))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(container.exec, "touch /started; exec sleep 1000")
        deadline = time.monotonic() + 30
        while container.exec("test -e /started").exit_code != 0:
            assert time.monotonic() < deadline, "the exec never started"
            time.sleep(0.01)
        pid = container.pid
        container.remove()
        assert not os.path.exists(f"/proc/{pid}")
        assert running.result(timeout=30).exit_code == 137


@pytest.mark.skipif(host_uid() != 0, reason="takes root's seteuid to be another user")
def test_not_root_is_a_clear_error(tmp_path: Path) -> None:
    from pytest_pycontain.native.engine import NativeEngine

    os.seteuid(65534)
    try:
        with pytest.raises(EngineUnavailable) as info:
            NativeEngine(state_dir=tmp_path)
    finally:
        os.seteuid(0)
    assert "needs root" in str(info.value) and "Docker backend" in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def store_engine(tmp_path_factory: pytest.TempPathFactory):
    """An engine on the image store, pulling from the session's seeded registry."""
    from pytest_pycontain.config import resolve
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(resolve(), state_dir=tmp_path_factory.mktemp("state"))
    yield engine
    engine.close()


def test_an_image_from_the_registry(store_engine) -> None:
    container = store_engine.run(RunSpec(image="busybox:latest", command="echo pulled; id -un"))
    try:
        assert container.wait(timeout=30) == 0
        assert container.logs() == "pulled\nroot\n"
    finally:
        container.remove()


def test_an_image_that_is_not_there(store_engine) -> None:
    with pytest.raises(ImageError, match="no-such-image"):
        store_engine.run(RunSpec(image="no-such-image:1"))
    never = store_engine.settings.replace(pull="never")
    from pytest_pycontain.native.engine import NativeEngine

    with NativeEngine(never, state_dir=store_engine.state_root / "never") as engine, \
            pytest.raises(ImageError, match="no-such-image"):
        engine.run(RunSpec(image="no-such-image:1"))


def test_an_engine_first_used_from_a_short_lived_thread(busybox, tmp_path: Path) -> None:
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine(state_dir=tmp_path)
    try:
        with ThreadPoolExecutor(1) as pool:
            container = pool.submit(engine.run, RunSpec(image=busybox,
                                                         command="sleep 1000")).result()
        # the thread that started the helper is gone; the helper and the container are not
        assert container.exec("echo alive").output == "alive\n"
        assert container.status == "running"
    finally:
        engine.close()


def test_logs_stream_as_they_grow(engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, command="for i in 1 2 3; do echo line $i; "
                                                          "sleep 0.05; done; printf tail"))
    try:
        assert list(container.stream_logs()) == ["line 1\n", "line 2\n", "line 3\n", "tail"]
        assert container.stdout_log() == "line 1\nline 2\nline 3\ntail"
        assert container.stderr_log() == ""
    finally:
        container.remove()


def test_copy_from_an_exited_container(engine, busybox, tmp_path: Path) -> None:
    container = engine.run(RunSpec(image=busybox, command="echo result > /tmp/out; exit 4"))
    try:
        assert container.wait(timeout=10) == 4
        container.copy_from("/tmp/out", tmp_path)
        assert (tmp_path / "out").read_text() == "result\n"
    finally:
        container.remove()


def test_exec_failures_say_what_and_where(engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, command="sleep 1000"))
    try:
        ghost = container.exec("true", user="ghost")
        assert ghost.exit_code == 126 and "unable to find user ghost" in ghost.output
        nowhere = container.exec("true", workdir="/no/such/dir")
        assert nowhere.exit_code == 126 and '"/no/such/dir"' in nowhere.output
        missing = container.exec(["/bin/nope"])
        assert missing.exit_code == 127
        assert missing.stderr == 'exec: "/bin/nope": stat /bin/nope: no such file or directory\n'
    finally:
        container.remove()


def test_a_file_mount_and_symlinked_targets(engine, busybox, tmp_path: Path) -> None:
    (tmp_path / "app.conf").write_text("setting=1\n")
    image_root = tmp_path / "layer"
    (image_root / "run").mkdir(parents=True)
    (image_root / "var").mkdir()
    os.symlink("/run", image_root / "var" / "run")  # as in Debian images
    image = FakeImage(config=busybox.config, layer_dirs=[*busybox.layer_dirs, image_root])
    container = engine.run(RunSpec(image=image, command="sleep 1000",
                                   mounts=[f"{tmp_path / 'app.conf'}:/etc/app.conf:ro"],
                                   tmpfs={"/var/run/app": "size=1m"}))
    try:
        assert container.exec("cat /etc/app.conf").output == "setting=1\n"
        assert container.exec("echo x > /etc/app.conf").exit_code != 0
        assert "/run/app" in container.exec("grep tmpfs /proc/mounts").output
    finally:
        container.remove()
    assert (tmp_path / "app.conf").read_text() == "setting=1\n"


def test_paths_made_only_to_mount_on_are_listed(engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, command="true", tmpfs={"/scratch/a": ""}))
    try:
        container.wait(timeout=10)
        assert container.mountpoints == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf",
                                         "/scratch", "/scratch/a"]
        upper = container.dir / "upper"
        assert {str(p.relative_to(upper)) for p in upper.rglob("*")} >= {"etc/hosts", "scratch"}
    finally:
        container.remove()


def test_before_start_runs_between_namespaces_and_command(engine, busybox) -> None:
    seen = {}

    def attach(container) -> None:  # what a network does: needs the netns, before the command
        seen["netns"] = os.readlink(f"/proc/{container.pid}/ns/net")
        with open(container.dir / "hosts", "a") as file:
            file.write("10.0.0.2\tdb\n")

    container = engine.run(RunSpec(image=busybox, command="cat /etc/hosts"), before_start=attach)
    try:
        assert container.wait(timeout=10) == 0
        assert "10.0.0.2\tdb" in container.logs()
        assert seen["netns"] != os.readlink("/proc/self/ns/net")
    finally:
        container.remove()

    def fail(container) -> None:
        raise RuntimeError("no address left")

    with pytest.raises(RuntimeError, match="no address left"):
        engine.run(RunSpec(image=busybox, command="sleep 1000"), before_start=fail)


def gone(pid: int, limit: float = 10.0) -> bool:
    """Whether ``pid`` ends within a bounded while (a process's last moments of exit)."""
    deadline = time.monotonic() + limit
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_start_that_fails_before_the_command_leaves_nothing(engine, busybox) -> None:
    made = {}

    def fail(container) -> None:
        made.update(pid=container.pid, shim=container.shim, dir=container.dir)
        raise RuntimeError("no address left")

    with pytest.raises(RuntimeError, match="no address left"):
        engine.run(RunSpec(image=busybox, command="sleep 1000"), before_start=fail)
    assert gone(made["pid"]) and gone(made["shim"])  # PID 1 and its shim end unstarted
    engine.drain()
    assert not made["dir"].exists()
    assert all(c.pid != made["pid"] for c in engine.containers.values())


def test_a_start_again_keeps_its_address_and_listed_mountpoints(engine, busybox) -> None:
    """Its address comes back when nobody took it meanwhile (as Docker's IPAM, handing out
    the lowest free address, gives it back), its own /etc/hosts line with it; the paths made
    only to mount on are in its upper dir after the first start, so a start again lists them
    still (commit leaves them out); the old shim and PID 1 are gone."""
    net = engine.network()
    container = engine.run(RunSpec(image=busybox, name="again", network=net,
                                   command="sleep 1000", tmpfs={"/scratch": ""}))
    peer = engine.run(RunSpec(image=busybox, network=net, command="sleep 1000"))
    try:
        listed, address = container.mountpoints, container.ip
        old = (container.pid, container.shim)
        container.stop(timeout=1)
        other = engine.run(RunSpec(image=busybox, network=net, command="sleep 1000"))
        container.start()
        assert container.status == "running" and container.mountpoints == listed
        assert container.ip == address != other.ip
        own = f"{address}\t{container.hostname}\n"
        assert container.exec("cat /etc/hosts").output.endswith(own)
        assert peer.exec(REACH.format("again")).exit_code == 0
        assert all(gone(pid) for pid in old) and container.pid not in old
        other.remove()
    finally:
        container.remove()
        peer.remove()
        net.remove()


@pytest.mark.parametrize("breaks", ["command", "network"])
def test_a_start_again_that_fails_leaves_nothing(engine, busybox, breaks: str) -> None:
    """Its command gone from its files, or its network removed while it was stopped: the
    start says so, the attempt's PID 1 and shim end, it is on no network (no endpoint, no
    address taken), stays exited, and removal still tidies everything."""
    net = engine.network()
    container = engine.run(RunSpec(image=busybox, name="again", network=net, ports=[8080],
                                   command=["/bin/sh", "-c", "rm -f /bin/sh; exec sleep 1000"]))
    try:
        container.stop(timeout=1)
        attempt = {}

        def note(_container) -> None:
            attempt.update(pid=container.pid, shim=container.shim)

        if breaks == "network":
            net.remove()
            with pytest.raises(NetworkError, match="has been removed"):
                container.start()
        else:
            container.relaunch = dataclasses.replace(container.relaunch, hook=_then(
                container.relaunch.hook, note))
            with pytest.raises(ContainerError, match='exec: "/bin/sh"'):
                container.start()
            assert attempt and gone(attempt["pid"]) and gone(attempt["shim"])
            assert container.id not in net.endpoints() and not net.addresses()
        assert container.status == "exited" and container.exit_code is not None
        assert container.networks == ()
        with pytest.raises(NotSupported, match="not published"):
            container.address(8080)
    finally:
        container.remove()
        net.remove()
    engine.drain()
    assert not container.dir.exists()


def _then(first, second):
    def both(container) -> None:
        first(container)
        second(container)

    return both


def test_a_shim_killed_under_a_container_is_said_and_removal_still_tidies(
        engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, command="sleep 1000"))
    os.kill(container.shim, 9)
    assert gone(container.pid)  # PID 1 dies with its shim
    with pytest.raises(ContainerError, match="lost its shim"):
        container.wait()
    container.remove()
    assert container.status == "removed" and container.id not in engine.containers
    engine.drain()
    assert not container.dir.exists()


def test_a_handle_from_attach_reaches_the_container_from_outside(engine, busybox) -> None:
    container = engine.run(RunSpec(image=busybox, command="sleep 1000", name="outside"))
    try:
        handle = engine.attach("outside")
        assert handle.id == container.id and handle.status == "running"
        result = handle.exec("echo from $(hostname)")  # a zygote helper joins it
        assert (result.exit_code, result.output) == (0, f"from {container.hostname}\n")
        with pytest.raises(ContainerError, match="not ours to keep"):
            handle.keep()
        handle.kill(9)  # (PID 1 of a pid namespace takes only SIGKILL from outside it)
        assert handle.wait(timeout=10) == 128 + 9
        assert container.wait(timeout=10) == 128 + 9  # the owner's handle says the same
        handle.remove()  # not ours: the owner tidies up
        assert container.dir.exists() and container.id in engine.containers
    finally:
        container.remove()
    engine.drain()
    assert not container.dir.exists()


def test_a_root_that_cannot_be_made_on_a_network_says_why(engine, busybox,
                                                          state_dir: Path) -> None:
    """The engine joins the network while the shim makes the root: when the root fails (an
    unknown user) the shim's reason is the error, whatever the join met meanwhile, and
    nothing of the container stays (its directory, its place on the network)."""
    def containers() -> set[Path]:
        found = state_dir / "containers"
        return set(found.iterdir()) if found.exists() else set()

    net = engine.network()
    try:
        before = containers()
        for _ in range(3):  # cold and warm starts
            with pytest.raises(ContainerError, match="unable to find user nobody-here"):
                engine.run(RunSpec(image=busybox, command="sleep 1000", network=net,
                                   user="nobody-here"))
        engine.drain()
        assert containers() == before
        box = engine.run(RunSpec(image=busybox, command="sleep 1000", network=net))
        try:
            assert box.ip and box.ip in box.exec("cat /etc/hosts").output.split()
        finally:
            box.remove()
    finally:
        net.remove()
