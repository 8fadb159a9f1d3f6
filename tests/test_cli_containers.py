"""``pycontain run/exec/ps/rm/prune`` as a user types them (native engine, real containers)."""

from __future__ import annotations

import os
import subprocess
import sys

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
