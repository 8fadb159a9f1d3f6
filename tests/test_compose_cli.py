"""``pycontain compose up -d | ps | logs | down [-v]`` on the native engine and on the Docker
backend (the test session's private dockerd): the same files, the same output, the same
expectations, and nothing left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from backends import NEEDS_ROOT, Backend

DETACHED = """\
services:
  web:
    image: busybox
    command: >-
      sh -c 'echo web up; mkdir -p /www && echo hello > /www/index.html &&
      exec httpd -f -p 8080 -h /www'
    networks: [front, back]
    healthcheck:
      test: [CMD-SHELL, "wget -q -O /dev/null http://127.0.0.1:8080/"]
      interval: 100ms
      retries: 100
  client:
    image: busybox
    command: sh -c 'echo client up; exec sleep 1000'
    networks: [front]
    depends_on: {web: {condition: service_healthy}}
  stored:
    image: busybox
    command: sh -c 'echo run >> /data/count; echo stored up; exec sleep 1000'
    networks: [back]
    volumes: ["data:/data", "/scratch"]
    extra_hosts: ["gw:host-gateway"]
  failing:
    image: busybox
    command: sh -c 'echo broken >&2; exit 3'
    networks: [back]
    volumes: ["data:/data"]
    profiles: [broken]
  after:
    image: busybox
    command: "true"
    depends_on: {failing: {condition: service_completed_successfully}}
    profiles: [broken]
networks:
  front: {}
  back: {}
volumes:
  data: {}
"""

EXTERNAL = """\
services:
  reader:
    image: busybox
    command: sh -c 'cat /seen/count; exec sleep 1000'
    volumes: ["seen:/seen:ro"]
volumes:
  seen: {external: true, name: NAME}
"""

Cli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(params=[pytest.param("native", marks=NEEDS_ROOT),
                        pytest.param("docker", marks=pytest.mark.dockerd),
                        pytest.param("podman", marks=pytest.mark.podman)])
def pycontain_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """``pycontain [--backend docker] ARGS...`` in ``tmp_path``, on one backend."""
    backend = ["--backend", "native" if request.param == "native" else "docker"]
    engine = (Backend() if request.param == "native"  # else DOCKER_HOST: the private service
              else request.getfixturevalue(f"{request.param}_backend"))

    def assert_clean(volume: str) -> None:
        """No container, network or mount of ours is left, nor the shared ``volume``."""
        engine.assert_no_leftovers()
        if request.param != "native":
            assert [v["Name"] for v in (engine.api.volumes() or {}).get("Volumes") or []
                    if v["Name"] == volume] == []
        else:
            shared = Path(os.environ["PYCONTAIN_STATE_DIR"]) / "volumes" / "shared"
            assert not (shared / volume).exists()

    def cli(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_pycontain.cli", *backend, *args],
                              cwd=cwd, capture_output=True, text=True, timeout=180,
                              check=False, env=os.environ.copy())

    cli.backend = request.param  # type: ignore[attr-defined]
    cli.assert_clean = assert_clean  # type: ignore[attr-defined]
    return cli


def names(ps: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split()[1] for line in ps.stdout.splitlines()[1:]]


def test_up_detached_ps_logs_exec_down_and_volumes(pycontain_cli: Cli, tmp_path: Path) -> None:
    """``up -d`` leaves the stack running on two networks with a named and an anonymous
    volume; names resolve on both networks from the services; ``down`` keeps the named
    volume for the next ``up -d`` (as docker compose does), ``down -v`` removes it too."""
    project = f"cli-{pycontain_cli.backend}-{os.getpid()}"
    (tmp_path / "compose.yaml").write_text(DETACHED)

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return pycontain_cli("compose", "-p", project, *args)

    def sh(container: str, script: str) -> subprocess.CompletedProcess[str]:
        return pycontain_cli("exec", f"{project}-{container}-1", "sh", "-c", script)

    # a stack that cannot come up: said with the service, its exit code and its log, and
    # nothing of it is left running
    broken = compose("--profile", "broken", "up", "-d")
    assert broken.returncode == 1
    assert "service 'failing' exited with code 3; 'after' needs it" in broken.stderr
    assert "broken" in broken.stderr
    assert names(compose("ps")) == []
    try:
        up = compose("up", "-d")
        assert (up.returncode, up.stderr) == (0, "")
        assert up.stdout.splitlines() == [f"{project}-web-1", f"{project}-client-1",
                                          f"{project}-stored-1"]
        assert names(compose("ps")) == [f"{project}-client-1", f"{project}-stored-1",
                                        f"{project}-web-1"]
        # the service's name on each of its networks, from a member of each
        assert sh("client", "wget -q -O - http://web:8080/").stdout == "hello\n"
        assert sh("stored", "wget -q -O - http://web:8080/").stdout == "hello\n"
        hosts = sh("stored", "grep -w gw /etc/hosts").stdout
        if pycontain_cli.backend == "podman":  # Podman 4.3 writes it as it is (4.7 knows it)
            assert hosts == "host-gateway\tgw\n"
        else:
            assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+\s+gw\n", hosts), hosts
        assert sh("stored", "cat /data/count; touch /scratch/x && echo anonymous").stdout == (
            "run\nanonymous\n")
        logs = compose("logs")
        assert logs.stdout == "client-1  | client up\nstored-1  | stored up\nweb-1  | web up\n"
    finally:
        down = compose("down")
    assert (down.returncode, down.stderr) == (0, "")
    assert down.stdout.splitlines() == [f"{project}-web-1", f"{project}-stored-1",
                                        f"{project}-client-1"]
    assert names(compose("ps")) == []
    assert compose("logs").stdout == ""
    # the named volume outlived down: the next up -d finds it, and another project's
    # external volume is that one
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "compose.yaml").write_text(
        EXTERNAL.replace("NAME", f"{project}_data"))
    try:
        again = compose("up", "-d")
        assert again.returncode == 0, again.stderr
        assert sh("stored", "cat /data/count").stdout == "run\nrun\n"
        reader = pycontain_cli("compose", "-p", f"{project}-x", "up", "-d",
                               cwd=tmp_path / "other")
        assert reader.returncode == 0, reader.stderr
        assert pycontain_cli("compose", "-p", f"{project}-x", "logs",
                             cwd=tmp_path / "other").stdout == "reader-1  | run\nreader-1  | run\n"
    finally:
        pycontain_cli("compose", "-p", f"{project}-x", "down", "-v", cwd=tmp_path / "other")
        gone = compose("down", "-v")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.splitlines()[-1] == f"volume {project}_data"
    # gone for good: an external volume of that name is missing now, said with file:line
    missing = pycontain_cli("compose", "-p", f"{project}-x", "up", "-d", cwd=tmp_path / "other")
    assert missing.returncode == 1
    assert re.search(rf"compose.yaml:7: volume 'seen': volume '{project}_data' does not exist",
                     missing.stderr), missing.stderr
    assert names(pycontain_cli("compose", "-p", f"{project}-x", "ps",
                               cwd=tmp_path / "other")) == []
    pycontain_cli.assert_clean(f"{project}_data")
