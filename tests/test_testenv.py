"""The test environment itself: the registry serves the seeded images, dockerd pulls through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testenv.errors import EnvironmentProblem
from testenv.registry import RunningRegistry, start_registry
from testenv.tools import require


def skopeo_inspect(registry: RunningRegistry, repo: str) -> dict:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/{repo}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_registry_serves_busybox_and_debian(test_registry: RunningRegistry) -> None:
    busybox = skopeo_inspect(test_registry, "library/busybox:latest")
    debian = skopeo_inspect(test_registry, "library/debian:bookworm")
    assert busybox["Os"] == "linux" and len(busybox["Layers"]) == 1
    assert debian["Os"] == "linux" and len(debian["Layers"]) == 1
    assert busybox["Digest"].startswith("sha256:")


def test_mirror_is_exported(test_registry: RunningRegistry) -> None:
    assert os.environ["PYCONTAIN_REGISTRY_MIRROR"] == test_registry.url


def test_busybox_has_upstream_users(test_registry: RunningRegistry, tmp_path: Path) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--insecure-policy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{test_registry.host}/library/busybox:latest",
            f"dir:{tmp_path}",
        ],
        check=True,
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    layer = tmp_path / manifest["layers"][0]["digest"].split(":")[1]
    listing = subprocess.run(
        ["tar", "-tvzf", str(layer)], capture_output=True, text=True, check=True
    ).stdout
    assert "drwxrwxrwt" in next(
        line for line in listing.splitlines() if line.rstrip("/").endswith(" tmp")
    )
    passwd = subprocess.run(
        ["tar", "-xzOf", str(layer), "etc/passwd"], capture_output=True, text=True, check=True
    ).stdout
    users = [line.split(":")[0] for line in passwd.splitlines()]
    assert users == [
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "mail",
        "www-data",
        "operator",
        "nobody",
    ]


def test_taken_port_is_one_clear_line(test_registry: RunningRegistry, tmp_path: Path) -> None:
    with pytest.raises(
        EnvironmentProblem,
        match=rf"port 127.0.0.1:{test_registry.port} is "
        "already in use",
    ):
        start_registry(tmp_path, port=test_registry.port)


def test_missing_tool_names_its_package() -> None:
    with pytest.raises(EnvironmentProblem, match="apt-get install no-such-tool"):
        require("no-such-tool")


def test_missing_tool_stops_the_session_at_once(pytester: pytest.Pytester) -> None:
    """With docker-registry off PATH, the whole session stops with one line, not N errors."""
    repo = Path(__file__).resolve().parent.parent
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    empty = pytester.mkdir("emptybin")
    env = {**os.environ, "PATH": str(empty),
           "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "tests")])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "`docker-registry` is not installed: apt-get install docker-registry" in proc.stdout
    assert "passed" not in proc.stdout
    assert proc.stdout.count("not installed") == 1


@pytest.mark.dockerd
def test_dockerd_pulls_busybox_through_the_mirror(dockerd) -> None:
    done = subprocess.run(
        ["docker", "run", "--rm", "busybox", "cat", "/etc/hostname"],
        env=dockerd.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
