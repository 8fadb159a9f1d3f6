"""Build steps and file copies against what an untrusted Dockerfile or container would try.

- A RUN step has its own network namespace: the host's loopback services and abstract unix
  sockets are out of its reach (``--network=host`` keeps them, explicitly), and pasta gives it
  a way out. The way out is proved hermetically: the build runs in a network namespace this
  test makes (``unshare --net``), whose "outside world" is an address on a veth of that
  namespace, and whose own loopback must stay out of reach just like the host's.
- COPY into a path that an earlier RUN made a symlink (absolute, ``../``, on the way) lands
  inside the image, never on the host (``test_build_vs_docker`` checks Docker agrees).
- ``copy_to`` races a container that swaps a directory for a symlink to the host: no write
  ever lands outside its root.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_contract import busybox_rootfs

from pytest_pycontain.backends import native_blocker
from pytest_pycontain.build import build
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import ContainerError
from pytest_pycontain.native import egress
from pytest_pycontain.native.engine import NativeEngine, native_runner
from pytest_pycontain.store import Store

pytestmark = [pytest.mark.skipif(native_blocker() is not None, reason=native_blocker() or ""),
              pytest.mark.root]
needs_pasta = pytest.mark.skipif(egress.pasta_path() is None,
                                 reason="pasta is not installed (.ci/setup installs passt)")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, test_registry) -> Store:
    return Store(tmp_path_factory.mktemp("security-store"), registry_mirror=test_registry.url,
                 attempts=2, backoff=0.01)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeEngine]:
    engine = NativeEngine(state_dir=tmp_path_factory.mktemp("security-state"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def runner(engine: NativeEngine):
    return native_runner(engine)


class FakeImage:
    """What the engine needs of an image: its config and its lower dirs."""

    def __init__(self, layer_dir: Path):
        self.config = {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}
        self.layer_dirs = [layer_dir]
        self.tags = ["busybox:test"]


@pytest.fixture(scope="module")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> FakeImage:
    return FakeImage(busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs"))


def content(store: Store, image, name: str) -> str:
    for layer in reversed(image.layers):
        with tarfile.open(store.blob_path(layer.digest)) as tar:
            try:
                return tar.extractfile(name).read().decode()
            except KeyError:
                continue
    raise KeyError(name)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(host: str) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer((host, 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def probes(port: int, token: str) -> str:
    """Shell that records, in /out/NAME, what a step reaches: the loopback server, the
    abstract socket (by its line in /proc/net/unix, which lists its own namespace's only),
    which network namespace it is in, and its interfaces."""
    return (f"mkdir -p /out && {fetch('127.0.0.1', port)} > /out/loop; "
            f"(grep -c pycontain-probe-{token} /proc/net/unix || true) > /out/unix; "
            "readlink /proc/self/ns/net > /out/ns; ls /sys/class/net | sort > /out/ifaces")


def fetch(host: str, port: int) -> str:
    """Shell printing the body of ``http://host:port/``, or "blocked". (nc, as busybox's
    static wget crashes in these steps; by what came back, not nc's status: pasta of Debian
    12 does not pass the server's close on, so nc ends by the timeout.)"""
    return (f"(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc {host} {port} "
            "> /tmp/r; tail -n1 /tmp/r | grep . || echo blocked)")


def test_run_steps_do_not_reach_the_hosts_loopback_or_abstract_sockets(
        tmp_path: Path, store: Store, runner) -> None:
    token = secrets.token_hex(6)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0pycontain-probe-{token}")
    abstract.listen()
    try:
        with http_server("127.0.0.1") as port:
            (tmp_path / "Dockerfile").write_text(textwrap.dedent(f"""\
                FROM busybox AS own
                RUN {probes(port, token)}
                FROM busybox AS host
                RUN --network=host {probes(port, token)}
                FROM busybox AS none
                RUN --network=none {probes(port, token)}
                """))
            images = {target: build(store, tmp_path, run_step=runner, target=target)
                      for target in ("own", "host", "none")}
    finally:
        abstract.close()
    assert our_pastas() == []  # each ended with its step
    seen = {target: {name: content(store, image, f"out/{name}").strip()
                     for name in ("loop", "unix", "ns", "ifaces")}
            for target, image in images.items()}
    ours = os.readlink("/proc/self/ns/net")
    assert seen["host"] == {"loop": "hello from the host", "unix": "1", "ns": ours,
                            "ifaces": seen["host"]["ifaces"]}
    for target in ("own", "none"):
        assert (seen[target]["loop"], seen[target]["unix"]) == ("blocked", "0"), target
        assert seen[target]["ns"] != ours, target
    assert seen["none"]["ifaces"] == "lo"
    own_ifaces = seen["own"]["ifaces"].split()
    assert "lo" in own_ifaces
    if egress.pasta_path() is not None:
        assert len(own_ifaces) == 2  # loopback and pasta's tap


_IN_OWN_NETNS = r"""
import faulthandler, json, os, subprocess, sys, tarfile, threading, http.server
faulthandler.dump_traceback_later(150, exit=True)  # a hang fails with where it hung
store_root, state_dir, context = sys.argv[1:4]
def ip(*args):
    subprocess.run(["ip", *args], check=True)
ip("link", "set", "lo", "up")
ip("link", "add", "pc-out0", "type", "veth", "peer", "name", "pc-out1")
ip("addr", "add", "198.51.100.1/24", "dev", "pc-out0")   # what pasta gives the step too
ip("addr", "add", "198.51.100.2/24", "dev", "pc-out0")   # "the outside world": our server
ip("link", "set", "pc-out1", "up")
ip("link", "set", "pc-out0", "up")
ip("route", "add", "default", "via", "198.51.100.254", "dev", "pc-out0")

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"reached {self.server.server_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ports = {}
for host in ("198.51.100.2", "127.0.0.1"):
    server = http.server.ThreadingHTTPServer((host, 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ports[host] = server.server_address[1]
with open(os.path.join(context, "Dockerfile"), "w") as f:
    f.write("FROM busybox\nRUN mkdir /out && " + " && ".join(
        f"(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc {host} {port} > /tmp/r; "
        f"tail -n1 /tmp/r | grep . || echo blocked) > /out/{name}"
        for name, host, port in (("outside", "198.51.100.2", ports["198.51.100.2"]),
                                 ("loop", "127.0.0.1", ports["127.0.0.1"]))) + "\n")
from pytest_pycontain.backends import native_blocker
from pytest_pycontain.build import build
from pytest_pycontain.native.engine import NativeEngine, native_runner
from pytest_pycontain.store import Store
store = Store(store_root, pull_policy="never")
engine = NativeEngine(state_dir=state_dir)
try:
    image = build(store, context, run_step=native_runner(engine))
finally:
    engine.close()
found = {}
for layer in image.layers:
    with tarfile.open(store.blob_path(layer.digest)) as tar:
        for name in ("out/outside", "out/loop"):
            try:
                found[name] = tar.extractfile(name).read().decode()
            except KeyError:
                pass
print(json.dumps(found))
"""


_DIE_WITH_US = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


@needs_pasta
def test_run_steps_reach_out_through_pasta(tmp_path: Path, store: Store) -> None:
    """In a network namespace of the test's own (nothing leaves it): the step reaches a server
    on that namespace's non-loopback address, through pasta, but not that namespace's
    loopback, which stands for the host's."""
    store.pull("busybox")  # into the store here: the child's namespace has no registry
    (tmp_path / "ctx").mkdir()
    unshare = shutil.which("unshare") or "unshare"
    done = subprocess.run(
        [unshare, "--net", "--", *_DIE_WITH_US, sys.executable, "-c", _IN_OWN_NETNS,
         str(store.root), str(tmp_path / "state"), str(tmp_path / "ctx")],
        capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"out/outside": "reached 198.51.100.2\n", "out/loop": "blocked\n"}


_OFFLINE = r"""
import faulthandler, json, os, subprocess, sys, tarfile, warnings
faulthandler.dump_traceback_later(150, exit=True)
store_root, state_dir, context = sys.argv[1:4]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # and nothing else: offline
with open(os.path.join(context, "Dockerfile"), "w") as f:
    f.write("FROM busybox\nRUN ls /sys/class/net > /ifaces\n")
from pytest_pycontain.backends import native_blocker
from pytest_pycontain.build import build
from pytest_pycontain.native.engine import NativeEngine, native_runner
from pytest_pycontain.store import Store
store = Store(store_root, pull_policy="never")
engine = NativeEngine(state_dir=state_dir)
try:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        image = build(store, context, run_step=native_runner(engine))
finally:
    engine.close()
for layer in image.layers:
    with tarfile.open(store.blob_path(layer.digest)) as tar:
        try:
            ifaces = tar.extractfile("ifaces").read().decode()
        except KeyError:
            pass
print(json.dumps({"ifaces": ifaces, "warnings": [str(w.message) for w in said]}))
"""


@needs_pasta
def test_an_offline_host_builds_with_loopback_only(tmp_path: Path, store: Store) -> None:
    """No default route (the test's own namespace with loopback only): pasta would have no way
    out to offer, so steps run with loopback only and a warning says why, as before."""
    store.pull("busybox")
    (tmp_path / "ctx").mkdir()
    unshare = shutil.which("unshare") or "unshare"
    done = subprocess.run(
        [unshare, "--net", "--", *_DIE_WITH_US, sys.executable, "-c", _OFFLINE,
         str(store.root), str(tmp_path / "state"), str(tmp_path / "ctx")],
        capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["ifaces"] == "lo\n"
    assert any("no default route" in w for w in found["warnings"]), found["warnings"]


def our_pastas() -> list[int]:
    """pasta processes whose parent is this test process (none may outlive a step)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rsplit(")", 1)
            if fields[0].endswith("(pasta") and int(fields[1].split()[1]) == os.getpid():
                found.append(int(stat_file.parent.name))
    return found


def test_without_pasta_a_step_gets_loopback_only_and_a_warning(
        tmp_path: Path, store: Store, runner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback: no pasta on PATH, one warning naming the package, and the build goes on
    with loopback only (a step that needed the network fails with its own error)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox\nRUN ls /sys/class/net > /ifaces # {secrets.token_hex(4)}\n")
    with pytest.warns(RuntimeWarning, match=r"Debian's passt package"):
        image = build(store, tmp_path, run_step=runner)
    assert content(store, image, "ifaces") == "lo\n"


def test_copy_into_a_symlink_an_earlier_run_planted_stays_in_the_image(
        tmp_path: Path, store: Store, runner) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    context = tmp_path / "ctx"
    (context / "dir").mkdir(parents=True)
    (context / "f").write_text("copied\n")
    (context / "dir" / "inner").write_text("inner\n")
    up = "../" * 10
    (context / "Dockerfile").write_text(textwrap.dedent(f"""\
        FROM busybox
        RUN mkdir -p /real {outside} /a/b && ln -s {outside} /hostabs && \\
            ln -s {up}{str(outside).lstrip("/")} /a/b/hostrel && ln -s {up} /a/up && \\
            ln -s {outside}/file /flink
        COPY f /hostabs/f1
        COPY f /a/b/hostrel/f2
        COPY f /a/up{outside}/f3
        COPY dir /hostabs/
        COPY dir /a/b/hostrel/sub
        COPY f /flink
        """))
    image = build(store, context, run_step=runner)
    assert os.listdir(outside) == []
    inside = str(outside).lstrip("/")
    for name in ("f1", "f2", "f3", "file"):
        assert content(store, image, f"{inside}/{name}") == "copied\n", name
    assert content(store, image, f"{inside}/inner") == "inner\n"
    assert content(store, image, f"{inside}/sub/inner") == "inner\n"


# The races' attempts: at least RACE_LEAST; on a loaded machine, where the container's loop may
# barely run between them, more (up to RACE_MOST) until one of them got through.
RACE_LEAST, RACE_MOST = 300, 5000


def test_copy_to_races_a_container_swapping_a_dir_for_a_symlink(engine: NativeEngine,
                                                                tmp_path: Path,
                                                                busybox_image) -> None:
    """The container flips /race/d between a directory and a symlink to a host directory as
    fast as it can while copy_to writes into /race/d, 300 times at least: check-then-use would
    sooner or later write on the host; resolving in the root with descriptors never does."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "f").write_text("x")
    flip = (f"mkdir -p /race {outside}; i=0; while [ $i -lt 200000 ]; do "
            "rm -rf /race/d; mkdir /race/d; rm -rf /race/d; "
            f"ln -s {outside} /race/d; i=$((i+1)); done")
    container = engine.run(RunSpec(image=busybox_image, command=flip))
    try:
        copied = 0
        for index in range(RACE_MOST):  # 300 copies at least, more until one got through
            if index >= RACE_LEAST and copied:
                break
            with contextlib.suppress(FileNotFoundError, ContainerError):
                container.copy_to(tmp_path / "f", "/race/d/f")
                copied += 1
        assert os.listdir(outside) == []
        assert copied > 0  # the race was run, not only lost
    finally:
        container.remove()


def test_run_steps_are_confined_like_containers(tmp_path: Path, store: Store, runner) -> None:
    """A RUN step has Docker's privilege boundary (its 14 capabilities, its seccomp filter):
    so it cannot route 127.0.0.0/8 into pasta's tap (pasta of Debian 12 would connect that
    to the host's loopback), which a step with every capability could."""
    with http_server("127.0.0.1") as port:
        (tmp_path / "Dockerfile").write_text(textwrap.dedent(f"""\
            FROM busybox
            RUN mkdir /out && grep -E '^(CapEff|Seccomp):' /proc/self/status > /out/status; \\
                (ip link set lo down; ip addr flush dev lo; \\
                 sysctl -w net.ipv4.conf.all.route_localnet=1; \\
                 ip route add 127.0.0.0/8 dev $(ls /sys/class/net | grep -v '^lo$')) \\
                > /out/reroute 2>&1; {fetch('127.0.0.1', port)} > /out/loop
            """))
        image = build(store, tmp_path, run_step=runner)
    assert content(store, image, "out/status").split() == ["CapEff:", "00000000a80425fb",
                                                           "Seccomp:", "2"]
    assert content(store, image, "out/loop") == "blocked\n", content(store, image, "out/reroute")


def test_a_step_on_a_systemd_resolved_host_gets_its_upstream_resolvers() -> None:
    """A namespace of its own cannot ask the host's 127.0.0.53: where that is the only
    nameserver, the upstream ones systemd-resolved forwards to take its place, as on Docker."""
    from pytest_pycontain.native.engine import own_loopback_resolv_conf

    stub = "# managed\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.test\n"
    upstream = "nameserver 192.0.2.53\nnameserver 127.0.0.1\nsearch example.test\n"
    assert own_loopback_resolv_conf(stub, upstream) == (
        "# managed\noptions edns0 trust-ad\nsearch example.test\nnameserver 192.0.2.53\n")
    assert own_loopback_resolv_conf("nameserver 198.51.100.53\nnameserver 127.0.0.1\n",
                                    upstream) == "nameserver 198.51.100.53\n"
    assert own_loopback_resolv_conf("nameserver 127.0.0.53\n", "") == ""
    assert own_loopback_resolv_conf("search x\n", upstream) == "search x\n"


def test_copy_from_races_a_container_swapping_a_dir_for_a_symlink(engine: NativeEngine,
                                                                  tmp_path: Path,
                                                                  busybox_image) -> None:
    """The same race for reading: /race/d flips between a directory holding ``secret`` and a
    symlink to a host directory whose ``secret`` the container must never hand out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret\n")
    flip = (f"mkdir -p /race {outside}; echo container > {outside}/secret; i=0; "
            "while [ $i -lt 200000 ]; do rm -rf /race/d; mkdir /race/d; "
            "echo inside > /race/d/secret; rm -rf /race/d; "
            f"ln -s {outside} /race/d; i=$((i+1)); done")
    container = engine.run(RunSpec(image=busybox_image, command=flip))
    got: set[str] = set()
    try:
        for index in range(RACE_MOST):  # 300 reads at least, more until one got through
            if index >= RACE_LEAST and got & {"inside\n", "container\n"}:
                break
            out = tmp_path / f"out{index}"
            with contextlib.suppress(FileNotFoundError, ContainerError):
                container.copy_from("/race/d/secret", out)
            with contextlib.suppress(FileNotFoundError):
                got.add(out.read_text())
    finally:
        container.remove()
    assert "host secret\n" not in got, got  # (an empty read: a file caught being written)
    assert got & {"inside\n", "container\n"}, got  # the race was run, not only lost
