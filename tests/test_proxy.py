"""Published ports: the userspace proxy from 127.0.0.1 into a network namespace, and probes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pycontain.errors import NetworkError
from pytest_pycontain.native.netns import netns_of
from pytest_pycontain.native.proxy import PortProxy, probe_port, publish

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                       reason="needs root, unshare and ip: it enters network namespaces"),
]

SERVER = textwrap.dedent("""
    import socket, sys, threading
    def echo(conn):
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)  # the half-close came through: answer it with ours
        conn.close()
    def hello(conn):
        conn.sendall(b"hello")
        conn.close()
    def serve(port, handler):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(16)
        return s, handler
    listeners = [serve(9000, echo), serve(9001, hello)]
    for s, handler in listeners:
        threading.Thread(target=lambda s=s, h=handler: [
            threading.Thread(target=h, args=(s.accept()[0],), daemon=True).start()
            for _ in iter(int, 1)], daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def standin() -> Iterator[int]:
    """A stand-in container: its own network namespace with an echo server on 9000 and a
    server that says hello and closes on 9001."""
    proc = subprocess.Popen(["unshare", "--net", "--", "sh", "-c",
                             f'ip link set lo up && exec "{sys.executable}" -c \'{SERVER}\''],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc.pid
    proc.kill()
    proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nsfds() -> int:
    """How many network namespaces this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # listdir's own fd is gone already
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("net:")
    return count


def test_a_large_stream_passes_intact_both_ways(standin: int, tmp_path: Path) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    with PortProxy(netns_of(standin), 9000, records_dir=tmp_path) as proxy:
        assert proxy.address[0] == "127.0.0.1" and proxy.port > 0
        assert next(p.name for p in tmp_path.iterdir()).startswith("net-proxy-")
        with socket.create_connection(proxy.address, timeout=30) as conn:
            sender = threading.Thread(target=lambda: (conn.sendall(payload),
                                                      conn.shutdown(socket.SHUT_WR)))
            sender.start()
            received = bytearray()
            while chunk := conn.recv(1 << 20):
                received += chunk
            sender.join()
        assert len(received) == len(payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert list(tmp_path.iterdir()) == []


def test_fixed_host_port_and_the_server_closing_first(standin: int) -> None:
    port = free_port()
    with PortProxy(netns_of(standin), 9001, port) as proxy:
        assert proxy.port == port
        for _ in range(3):  # the proxy keeps serving after a connection ends
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                got = b""
                while chunk := conn.recv(100):
                    got += chunk
                assert got == b"hello"


def test_nothing_listening_in_the_container_closes_the_client(standin: int) -> None:
    with PortProxy(netns_of(standin), 9999) as proxy, \
            socket.create_connection(proxy.address, timeout=10) as conn, \
            contextlib.suppress(ConnectionResetError):
        assert conn.recv(10) == b""


def test_port_in_use_is_a_clear_error_leaving_nothing(standin: int, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        before = nsfds()
        with pytest.raises(NetworkError, match=f"127.0.0.1:{port}: already in use"):
            PortProxy(netns_of(standin), 9000, port, records_dir=tmp_path)
        assert nsfds() == before
        assert list(tmp_path.iterdir()) == []


def test_publish_is_all_or_nothing(standin: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        first = free_port()
        with pytest.raises(NetworkError, match="already in use"):
            publish(netns_of(standin), {9000: first, 9001: taken.getsockname()[1]})
    with socket.socket() as again:  # the first proxy was closed: its port is free
        again.bind(("127.0.0.1", first))
    proxies = publish(netns_of(standin), {9000: None, 9001: None})
    try:
        assert sorted(proxies) == [9000, 9001]
        assert proxies[9000].port != proxies[9001].port
    finally:
        for proxy in proxies.values():
            proxy.close()


@pytest.mark.parametrize(("args", "message"), [
    ((0,), "container port 0 is not a port"),
    ((70000,), "container port must be a number 0-65535"),
    ((9000, -1), "host port must be a number"),
])
def test_bad_ports(standin: int, args: tuple, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        PortProxy(netns_of(standin), *args)


def test_closing_cuts_open_connections(standin: int) -> None:
    proxy = PortProxy(netns_of(standin), 9000)
    conn = socket.create_connection(proxy.address, timeout=10)
    conn.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    proxy.close()
    with contextlib.suppress(ConnectionResetError):
        assert conn.recv(10) == b""
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=5)


def test_probe_port(standin: int) -> None:
    assert probe_port(netns_of(standin), 9000)
    assert not probe_port(netns_of(standin), 9002)
    fd = os.open(netns_of(standin), os.O_RDONLY)
    try:
        assert probe_port(fd, 9001)
    finally:
        os.close(fd)
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not probe_port(netns_of(gone.pid), 9000)  # the namespace is gone: not listening
    with pytest.raises(NetworkError, match="cannot open network namespace"):
        probe_port(object(), 9000)  # type: ignore[arg-type]


def test_a_paused_relay_refuses_and_resumes(standin: int) -> None:
    """pause(): the port stays bound but the kernel refuses connections to it; resume():
    relayed again; a pausable relay whose target has nothing listening resets the client
    and pauses itself."""
    port = free_port()
    with PortProxy(netns_of(standin), 9001, port, pausable=True) as proxy:
        proxy.pause()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10)
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))  # still ours
        proxy.resume()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert conn.recv(100) == b"hello"
    with PortProxy(netns_of(standin), 9999, port, pausable=True) as proxy:
        with pytest.raises(ConnectionResetError), \
                socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.recv(10)  # (the reset may come before connect() returns)
        _until(lambda: _refused(port))
        proxy.resume()
        assert not _refused(port)  # accepted (and reset: still nothing there)
    assert _refused(port)  # closed


def _refused(port: int) -> bool:
    """Whether a connection to ``port`` is refused (not: accepted, and perhaps reset)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        pass
    return False


def _until(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_the_listen_watch_follows_the_loopback(standin: int) -> None:
    """ListenerReader sees what takes a connection to 127.0.0.1 (v4 loopback or any, a dual
    stack ::) and not what does not (127.0.0.2, a v6-only ::); the watch pauses a relay of a
    port nothing listens on and resumes it when a server comes."""
    from pytest_pycontain.native.listening import ListenerReader, ListenWatch

    def listener(family: int, address: str, v6only: bool = False) -> socket.socket:
        sock = socket.socket(family)
        if v6only:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, 0))
        sock.listen()
        return sock

    reader = ListenerReader()
    made = [listener(socket.AF_INET, "127.0.0.1"), listener(socket.AF_INET, "0.0.0.0"),
            listener(socket.AF_INET6, "::"), listener(socket.AF_INET, "127.0.0.2"),
            listener(socket.AF_INET6, "::", v6only=True)]
    try:
        seen = reader.loopback_ports()
        assert [s.getsockname()[1] in seen for s in made] == [True, True, True, False, False]
    finally:
        for sock in made:
            sock.close()
        reader.close()

    upstream = free_port()
    relayed = free_port()
    watch = ListenWatch()
    with PortProxy(f"/proc/{os.getpid()}/ns/net", upstream, relayed, host="127.0.0.1",
                   pausable=True) as proxy:
        watch.follow(proxy, upstream)
        assert _refused(relayed)  # paused at once: nothing on upstream
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", upstream))
            server.listen()
            _until(lambda: not _refused(relayed))
        _until(lambda: _refused(relayed))
