"""The ``pycontain`` command as a newcomer first meets it: help, version, bad input, no root,
and the same container commands over a Docker engine (``--backend docker``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

from pytest_pycontain.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "pytest_pycontain.cli"]


def pycontain(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120,
                          env=env)


def test_bare_command_prints_help_and_exits_2() -> None:
    done = pycontain()
    assert done.returncode == 2
    assert done.stderr.startswith("usage: pycontain")
    for command in COMMANDS:
        assert command in done.stderr


def test_version() -> None:
    done = pycontain("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"pycontain {version('pytest-pycontain')}"


def _items_without_help(text: str) -> list[str]:
    """The entries of ``--help``'s argument sections that have no description."""
    missing = []
    lines = text.splitlines()
    in_section = False
    for index, line in enumerate(lines):
        if line.endswith(":") and not line.startswith(" "):
            in_section = line in ("positional arguments:", "options:", "optional arguments:")
            continue
        if not in_section or not line.startswith("  ") or line.startswith("   "):
            continue
        entry = line.strip()
        if re.search(r"\S\s{2,}\S", entry):
            continue  # the description follows on the same line
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if not following.startswith(" " * 6):
            missing.append(entry)
    return missing


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS], ["compose", "config"],
                                     ["compose", "up"]],
                         ids=lambda c: " ".join(c) or "pycontain")
def test_every_argument_has_a_help_line(command: list[str]) -> None:
    done = pycontain(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert _items_without_help(done.stdout) == []


@pytest.mark.parametrize(("value", "said"), [
    ("10.0.0.1:80:80", "-p 10.0.0.1:80:80: ports are published on 127.0.0.1 only (not 10.0.0.1)"),
    ("80/udp", "-p 80/udp: only tcp ports are published (not udp)"),
    ("1:2:3:4", "-p 1:2:3:4: expected PORT, HOST_PORT:PORT or 127.0.0.1:HOST_PORT:PORT"),
    ("127.0.0.1:x:80", "ports: '80': host port 'x': expected a TCP port number 1-65535"),
])
def test_bad_publish_values_are_named(value: str, said: str) -> None:
    done = pycontain("run", "-p", value, "busybox")
    assert done.returncode == 1
    assert done.stderr.strip() == f"pycontain run: {said}"


def _system_python() -> str | None:
    """A Python another user may run (the venv's may live under root's home)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= "
                                   "(3, 10))"], capture_output=True, text=True)
            if done.stdout.strip() == "True":
                return candidate
    return None


def _as_nobody(argv: list[str], runtime_dir: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": str(REPO),
           "XDG_RUNTIME_DIR": runtime_dir}  # no Docker socket to fall back on
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           _system_python(), "-m", "pytest_pycontain.cli", *argv],
                          capture_output=True, text=True, timeout=120, env=env, cwd="/")


NOBODY = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv")
                            or not _system_python(),
                            reason="runs the command as nobody (root, setpriv, a system Python)")


@NOBODY
@pytest.mark.parametrize("argv", [["run", "busybox"], ["run", "--backend", "native", "busybox"]])
def test_without_a_state_directory_one_line_says_what_to_do(argv: list[str]) -> None:
    done = _as_nobody(argv, "/nonexistent")  # a runtime directory nobody may make
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "/nonexistent" in done.stderr and "XDG_RUNTIME_DIR" in done.stderr, done.stderr


@NOBODY
def test_without_root_the_commands_run_rootless() -> None:
    import tempfile

    runtime = tempfile.mkdtemp(prefix="pycontain-nobody-")  # pytest's tmp_path is root's only
    os.chown(runtime, 65534, 65534)
    try:
        done = _as_nobody(["ps"], runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    if "user namespaces" in done.stderr:  # a host that refuses them: one line says so
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
        return
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.dockerd
def test_the_container_commands_over_docker(dockerd) -> None:
    env = {**os.environ, "DOCKER_HOST": dockerd.host, "PYCONTAIN_BACKEND": "docker"}
    started = pycontain("run", "-d", "--name", "cli-docker", "-p", "8080", "busybox", "sh",
                        "-c", "echo docker > /tmp/i; exec httpd -f -p 8080 -h /tmp", env=env)
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        port = int(re.search(r"port 8080 published on 127\.0\.0\.1:(\d+)",
                             started.stderr).group(1))
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/i", timeout=5) as answer:
                    assert answer.read() == b"docker\n"
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the published port never answered")
        listing = pycontain("ps", env=env)
        row = next(line for line in listing.stdout.splitlines() if container_id[:12] in line)
        assert "cli-docker" in row and "kept" in row and f"127.0.0.1:{port}->8080" in row
        done = pycontain("exec", "cli-docker", "sh", "-c", "cat /tmp/i; exit 3", env=env)
        assert (done.returncode, done.stdout) == (3, "docker\n")
        other = pycontain("--backend", "native", "ps", env=env)  # the flag wins over the env
        assert container_id[:12] not in other.stdout
    finally:
        removed = pycontain("rm", "cli-docker", env=env)
    assert removed.returncode == 0, removed.stderr
    assert container_id[:12] not in pycontain("ps", env=env).stdout
    missing = pycontain("rm", "cli-docker", env=env)
    assert missing.returncode == 1 and "no container matches 'cli-docker'" in missing.stderr
