"""The shared test environment (README: "Quick start"; docs/architecture.md: "Tests").

A registry seeded with busybox and debian by skopeo runs for the whole session and is exported
as the docker.io mirror; a private dockerd and a private podman service start on first use. A
missing tool or a failing set-up command stops the session at once with one line, never a
cascade of errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testenv.dockerd import RunningDockerd, start_dockerd
from testenv.errors import EnvironmentProblem
from testenv.images import seed, seed_services
from testenv.podman import RunningPodman, start_podman
from testenv.registry import RunningRegistry, SeededRegistry, start_registry

# The shared checks' failures show the values compared, as the test modules' own do.
pytest.register_assert_rewrite("engine_contract", "backends")

from backends import NEEDS_ROOT, Backend, DockerBackend, docker  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """``shared/`` beside the checkout (CI clones elsewhere with a copy beside it)."""
    for candidate in (os.environ.get("PYCONTAIN_SHARED_DIR"), REPO.parent / "shared"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session", autouse=True)
def test_registry(tmp_path_factory: pytest.TempPathFactory) -> RunningRegistry | SeededRegistry:
    """The seeded local registry, exported as ``PYCONTAIN_REGISTRY_MIRROR``: started here, or
    the one ``PYCONTAIN_TEST_REGISTRY`` names (seeded already: how .ci/rootless runs the
    suites as a user without root)."""
    if os.environ.get("PYCONTAIN_TEST_REGISTRY"):
        registry: RunningRegistry | SeededRegistry = SeededRegistry(
            os.environ["PYCONTAIN_TEST_REGISTRY"])
    else:
        try:
            registry = start_registry(tmp_path_factory.mktemp("registry"))
        except EnvironmentProblem as exc:
            pytest.exit(f"test environment: {exc}", returncode=3)
        try:
            seed(registry.host)
        except EnvironmentProblem as exc:
            registry.stop()
            pytest.exit(f"test environment: {exc}", returncode=3)
    saved = {
        k: os.environ.get(k)
        for k in ("PYCONTAIN_REGISTRY_MIRROR", "PYCONTAIN_CACHE_DIR", "PYCONTAIN_STATE_DIR")
    }
    os.environ["PYCONTAIN_REGISTRY_MIRROR"] = registry.url
    os.environ["PYCONTAIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("PYCONTAIN_STATE_DIR", "/run/pycontain-tests" if os.geteuid() == 0
                          else str(tmp_path_factory.mktemp("state")))
    yield registry
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    registry.stop()


@pytest.fixture(scope="session")
def service_images(
    test_registry: RunningRegistry | SeededRegistry,
) -> RunningRegistry | SeededRegistry:
    """The registry also carries ``postgres:15`` and ``redis:7`` (only for tests that ask)."""
    try:
        seed_services(test_registry.host)
    except EnvironmentProblem as exc:
        if isinstance(test_registry, SeededRegistry):  # made elsewhere, maybe without root
            pytest.skip(f"no service images in {test_registry.url}: {exc}")
        pytest.exit(f"test environment: {exc}", returncode=3)
    return test_registry


@pytest.fixture(scope="session")
def dockerd(
    tmp_path_factory: pytest.TempPathFactory, test_registry: RunningRegistry
) -> RunningDockerd:
    """A private dockerd with the test registry as its mirror; skipped only where it can't start."""
    try:
        daemon = start_dockerd(
            tmp_path_factory.mktemp("dockerd"),
            mirror=test_registry.url,
            insecure=[test_registry.host],
        )
    except EnvironmentProblem as exc:
        pytest.skip(f"no private dockerd here: {exc}")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def podman_service(
    tmp_path_factory: pytest.TempPathFactory, test_registry: RunningRegistry
) -> RunningPodman:
    """A private ``podman system service`` (its own socket, storage and containers.conf) with
    the test registry as its docker.io mirror; skipped only where it can't start."""
    try:
        service = start_podman(tmp_path_factory.mktemp("podman"), registry_host=test_registry.host)
    except EnvironmentProblem as exc:
        pytest.skip(f"no private podman service here: {exc}")
    yield service
    service.stop()


@pytest.fixture(params=[pytest.param("native", marks=NEEDS_ROOT),
                        pytest.param("docker", marks=pytest.mark.dockerd),
                        pytest.param("podman", marks=pytest.mark.podman)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each test that takes it runs once per backend (the Docker backend twice: over the
    private dockerd and over Podman's Docker-compatible socket)."""
    if request.param == "native":
        yield Backend()
        return
    yield request.getfixturevalue(f"{request.param}_backend")


def _over_docker_api(host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DockerBackend]:
    """Inner sessions (in-process or not) talk to the Docker-compatible API at ``host``."""
    if docker is None:
        pytest.skip("the Docker backend needs the docker package (pytest-pycontain[docker])")
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    backend = DockerBackend(host)
    yield backend
    backend.api.close()


@pytest.fixture
def docker_backend(dockerd: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[DockerBackend]:
    """Inner sessions talk to the private dockerd."""
    yield from _over_docker_api(dockerd.host, monkeypatch)


@pytest.fixture
def podman_backend(podman_service: Any, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[DockerBackend]:
    """Inner sessions talk to the private podman service through the Docker backend."""
    yield from _over_docker_api(podman_service.host, monkeypatch)
