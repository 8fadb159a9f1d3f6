"""Connecting to a Docker engine, and the one map from foreign errors to ours.

The ``docker`` package (and ``requests``/``urllib3`` under it) raise their own exceptions; a user
of this plugin should only ever see ``pytest_pycontain.errors``. ``map_error`` is the single
place that decides which of ours a foreign error becomes, and every caller raises the result
``from`` the original, as httpx does, so the engine's own words stay in the traceback.
``EngineApi`` applies it to every call: a lost connection is ``EngineUnavailable`` wherever it
happens, and ``mapped()`` turns the engine's answers (404, 409, 500) into the caller's error.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from .. import errors
from ..dockerhost import podman_version

DEFAULT_HOST = "unix:///var/run/docker.sock"


def load_docker() -> Any:
    """The ``docker`` package, imported on first use (the plugin imports nothing heavy)."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - the extra is not installed
        raise errors.EngineUnavailable(
            "the Docker backend needs the docker package: pip install 'pytest-pycontain[docker]'"
        ) from exc
    return docker


def unique_suffix() -> str:
    """Eight hex digits that keep engine-level names of parallel runs apart."""
    return secrets.token_hex(4)


def message(exc: BaseException) -> str:
    """The engine's own words for an API error."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation).strip()
    return str(exc).strip()


def _timed_out(exc: BaseException) -> bool:
    """Whether a transport error is a read that ran out of time (urllib3 reports one inside a
    streamed response as a ConnectionError whose text says so)."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return isinstance(exc, requests.exceptions.ConnectionError) and "timed out" in str(exc).lower()


def map_error(exc: BaseException, what: str, *, engine: str,
              error: type[errors.PycontainError] = errors.ContainerError,
              **fields: Any) -> BaseException:
    """Our most specific error for ``exc``, raised while doing ``what`` on the engine at
    ``engine``; the caller raises it ``from exc``. ``error`` (built with ``fields``) is what an
    engine's refusal becomes. Ours and anything unknown come back as they are.

    - a missing image (docker's ImageNotFound): ``errors.ImageNotFound``, unless ``error`` is
      itself an image error (a failed pull stays a PullError)
    - any other answer of the engine (APIError, DockerException): ``error``
    - a read that ran out of time: ``errors.WaitTimeout``
    - any other transport failure (requests, urllib3): ``errors.EngineUnavailable``
    """
    if isinstance(exc, errors.PycontainError):
        return exc
    docker = load_docker()
    import requests
    import urllib3

    if isinstance(exc, docker.errors.ImageNotFound) and not issubclass(error, errors.ImageError):
        return errors.ImageNotFound(f"{what}: {message(exc)}")
    if isinstance(exc, docker.errors.DockerException):  # APIError is one (and an HTTPError)
        return error(f"{what}: {message(exc)}", **fields)
    if _timed_out(exc):
        return errors.WaitTimeout(f"{what}: the Docker engine at {engine} did not answer in "
                                  f"time: {exc}", container=fields.get("container"))
    if isinstance(exc, (requests.exceptions.RequestException, urllib3.exceptions.HTTPError)):
        return errors.EngineUnavailable(f"lost the Docker engine at {engine}: {exc}")
    return exc


class EngineApi:
    """The ``docker`` package's APIClient with ``map_error`` applied to every call: a failure
    to talk to the engine is ours at once; the engine's own refusals stay docker's until the
    caller says what they mean (``mapped``), since some are answers (404 on a removed
    container, 409 on one that is not running)."""

    def __init__(self, client: Any, url: str, *, podman: bool = False):
        self.client = client
        self.url = url
        self.podman = podman  # Podman serves this socket: its answers differ in small ways

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.client, name)
        if not callable(value) or name.startswith("_"):
            return value
        docker = load_docker()

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except docker.errors.DockerException:
                raise
            except Exception as exc:
                mapped = map_error(exc, name, engine=self.url)
                if mapped is exc:
                    raise
                raise mapped from exc

        return call

    @contextlib.contextmanager
    def mapped(self, what: str, *, error: type[errors.PycontainError] = errors.ContainerError,
               **fields: Any) -> Iterator[None]:
        """Raise what ``map_error`` makes of any foreign error in the block."""
        try:
            yield
        except Exception as exc:
            mapped = map_error(exc, what, engine=self.url, error=error, **fields)
            if mapped is exc:
                raise
            raise mapped from exc

    def archive_stat(self, container: str, path: str) -> str | None:
        """The engine's stat of ``path`` in ``container`` (its base64 header, from a HEAD on
        the archive endpoint, which docker-py has no method for); None when there is none."""
        import requests

        client = self.client
        url = (f"{client.base_url}/v{client.api_version}/containers/"
               f"{quote(container, safe='/:')}/archive")
        try:
            res = client.head(url, params={"path": path}, timeout=client.timeout)
        except requests.exceptions.RequestException as exc:
            raise map_error(exc, f"stat {path}", engine=self.url) from exc
        if res.status_code == 404:
            return None
        try:
            res.raise_for_status()
        except requests.exceptions.HTTPError as exc:
            raise load_docker().errors.create_api_error_from_http_exception(exc) from exc
        return res.headers.get("X-Docker-Container-Path-Stat", "")

    def close(self) -> None:
        self.client.close()


def connect(url: str, timeout: int) -> tuple[EngineApi, dict[str, Any]]:
    """An API client for the engine at ``url`` and the engine's version; EngineUnavailable,
    saying what to do, when nothing answers there."""
    docker = load_docker()
    import requests

    kwargs = docker.utils.kwargs_from_env(environment={**os.environ, "DOCKER_HOST": url})
    try:
        client = docker.APIClient(**kwargs, version="auto", timeout=timeout)
        version = client.version()
    except (docker.errors.DockerException, requests.exceptions.RequestException,
            OSError) as exc:
        raise errors.EngineUnavailable(
            f"cannot reach a Docker engine at {url}: {exc}. Start Docker, or set "
            "DOCKER_HOST to a running engine") from exc
    return EngineApi(client, url, podman=podman_version(version) is not None), version
