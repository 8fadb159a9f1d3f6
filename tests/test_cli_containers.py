"""``pycontain run/exec/ps/rm/prune`` as a user types them (native engine, real containers)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the native engine needs root (namespaces, mounts)")

CLI = [sys.executable, "-m", "pytest_pycontain.cli"]


def pycontain(*argv: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120,
                          check=check)


def test_run_passes_output_and_exit_code_through() -> None:
    done = pycontain("run", "--rm", "-e", "WHO=world", "-w", "/srv", "--hostname", "box",
                     "busybox", "sh", "-c", "echo hello $WHO from $(hostname) in $(pwd); exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "hello world from box in /srv\n"


def test_run_a_missing_command_is_127_with_dockers_message() -> None:
    done = pycontain("run", "--rm", "busybox", "no-such-command")
    assert done.returncode == 127
    assert "no-such-command" in done.stdout + done.stderr
    assert "executable file not found" in done.stdout + done.stderr


def test_run_privilege_options() -> None:
    done = pycontain("run", "--rm", "--cap-drop", "ALL", "--cap-add", "cap_chown",
                     "--security-opt", "no-new-privileges", "--sysctl", "kernel.shmmni=77",
                     "busybox", "sh", "-c", "grep -E 'CapEff|NoNewPrivs' /proc/self/status; "
                     "cat /proc/sys/kernel/shmmni")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["CapEff:", "0000000000000001", "NoNewPrivs:", "1", "77"]
    done = pycontain("run", "--rm", "--privileged", "busybox", "grep", "Seccomp:",
                     "/proc/self/status")
    assert done.stdout.split() == ["Seccomp:", "0"], done.stderr
    kept = pycontain("run", "-d", "--cap-add", "NET_ADMIN", "busybox", "sleep", "300",
                     check=True).stdout.strip()
    try:  # an exec from another process (through the kept container's record): same boundary
        done = pycontain("exec", kept, "grep", "-E", "CapEff|Seccomp:", "/proc/self/status")
        assert done.stdout.split() == ["CapEff:", "00000000a80435fb", "Seccomp:", "2"]
    finally:
        pycontain("rm", kept)
    for flag, value, words in (("--sysctl", "kernel.core_pattern=x", "not in a separate"),
                               ("--sysctl", "novalue", "expected NAME=VALUE"),
                               ("--cap-add", "FLY", "unknown capability 'FLY'"),
                               ("--security-opt", "seccomp=/no/such.json", "cannot read")):
        done = pycontain("run", "--rm", flag, value, "busybox", "true")
        assert done.returncode != 0 and words in done.stderr, (flag, value, done.stderr)


def test_detached_exec_ps_rm() -> None:
    started = pycontain("run", "-d", "--name", "cli-kept", "busybox", "sleep", "300", check=True)
    container_id = started.stdout.strip()
    assert len(container_id) == 64
    try:
        assert pycontain("exec", container_id[:12], "cat", "/etc/hostname").stdout == (
            container_id[:12] + "\n")
        entered = pycontain("exec", "cli-kept", "sh", "-c", "exit 4")
        assert entered.returncode == 4
        listing = pycontain("ps", check=True).stdout
        assert container_id[:12] in listing and "cli-kept" in listing and "kept" in listing
    finally:
        removed = pycontain("rm", container_id[:12])
    assert removed.returncode == 0, removed.stderr
    assert container_id[:12] not in pycontain("ps", check=True).stdout
    missing = pycontain("rm", container_id[:12])
    assert missing.returncode == 1 and "no container matches" in missing.stderr


def test_prune_kept_removes_kept_containers() -> None:
    container_id = pycontain("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    assert container_id[:12] in pycontain("ps", check=True).stdout
    pruned = pycontain("prune", "--kept", check=True)
    assert "removed" in pruned.stdout
    assert container_id[:12] not in pycontain("ps", check=True).stdout


def test_exec_unknown_container_is_a_clear_error() -> None:
    done = pycontain("exec", "nothing-like-this", "sh")
    assert done.returncode == 1
    assert "no container matches 'nothing-like-this'" in done.stderr


@pytest.mark.parametrize(("publish", "message"), [
    ("70000", "ports: '70000': out of range 1-65535"),
    ("8080:http", "ports: 'http': expected a TCP port number"),
    ("x:8080", "ports: '8080': host port 'x': expected a TCP port number"),
])
def test_run_checks_published_ports_before_starting_anything(publish: str, message: str) -> None:
    done = pycontain("run", "--rm", "-p", publish, "busybox", "true")
    assert done.returncode == 1
    assert f"pycontain run: {message}" in done.stderr
    assert done.stdout == ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str = "/i") -> str:
    for _ in range(50):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers on 127.0.0.1:{port}")


def test_detached_ports_are_said_listed_and_held_by_the_keeper() -> None:
    """``-p HOST:CONTAINER`` and ``-p PORT`` are published, said on stderr, shown by ``ps``, and
    still answer after the command that started them has ended."""
    host_port = _free_port()
    started = pycontain("run", "-d", "--name", "cli-ports", "-p", f"{host_port}:8080",
                        "-p", "8081/tcp", "-p", "8082", "busybox", "sh", "-c",
                        "echo one > /tmp/i; httpd -p 8080 -h /tmp; mkdir /tmp/b; "
                        "echo two > /tmp/b/i; httpd -p 127.0.0.1:8082 -h /tmp; "
                        "exec httpd -f -p 8081 -h /tmp/b")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        said = dict(re.findall(r"port (\d+) published on 127\.0\.0\.1:(\d+)", started.stderr))
        assert said["8080"] == str(host_port), started.stderr
        other = int(said["8081"])
        assert _get(host_port) == "one\n" and _get(other) == "two\n"
        for _ in range(3):  # one connection after another, on the keeper
            assert _get(other) == "two\n"
        # as before the keeper took over: the container's address, not its loopback
        with socket.create_connection(("127.0.0.1", int(said["8082"])), 5) as conn:
            conn.sendall(b"GET /i HTTP/1.0\r\n\r\n")
            try:
                answer = conn.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed: nothing answers on its address
        listing = pycontain("ps", check=True).stdout
        row = next(line for line in listing.splitlines() if container_id[:12] in line)
        assert f"127.0.0.1:{host_port}->8080" in row and f"127.0.0.1:{other}->8081" in row
        assert "PORTS" in listing.splitlines()[0]
    finally:
        assert pycontain("rm", container_id[:12]).returncode == 0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", host_port), 2) as s:
        s.sendall(b"GET /i HTTP/1.0\r\n\r\n")
        if not s.recv(10):
            raise OSError("closed")


def test_run_on_a_named_network() -> None:
    started = pycontain("run", "-d", "--network", "cli-net", "--name", "cli-srv", "busybox",
                        "sh", "-c", "echo named > /tmp/i; exec httpd -f -p 8080 -h /tmp")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        pycontain("run", "--rm", "busybox", "true", check=True)  # another engine's start reaps
        done = pycontain("exec", "cli-srv", "sh", "-c",
                         "for i in 1 2 3 4 5; do wget -qO- http://cli-srv:8080/i && exit; "
                         "sleep 0.2; done; exit 1")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "named\n"
        assert " inet 10." in pycontain("exec", "cli-srv", "ip", "-o", "-4", "addr").stdout
    finally:
        assert pycontain("rm", container_id[:12]).returncode == 0
