"""Images in a Docker engine: what the engine holds (``DockerImage``), and pulls through it.

Pulls go through the engine, so its own registry mirrors and credentials apply, as they do for
``docker pull``.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from .. import errors
from .client import EngineApi, load_docker


def familiar(tag: str) -> str:
    """A tag as Docker names it: Podman's ``docker.io/library/busybox:latest`` is
    ``busybox:latest`` there."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return tag


class DockerImage:
    """An image in the engine: ``id``, ``tags`` and ``config`` (the engine's image Config)."""

    def __init__(self, attrs: Mapping[str, Any], *, podman: bool = False):
        """``podman``: the engine is Podman, whose answers are put in Docker's terms (tags
        without ``docker.io/``, no entrypoint as null rather than ``[]``)."""
        self.attrs = dict(attrs)
        self.id: str = attrs["Id"]
        tags = list(attrs.get("RepoTags") or [])
        self.tags: list[str] = [familiar(tag) for tag in tags] if podman else tags
        inner = dict(attrs.get("Config") or {})
        if podman and inner.get("Entrypoint") == []:
            inner["Entrypoint"] = None
        keys = ("Hostname", "Domainname", "User", "Env", "Cmd", "Entrypoint", "WorkingDir",
                "ExposedPorts", "Volumes", "Labels", "StopSignal", "Healthcheck", "OnBuild",
                "Shell")
        self.config: Mapping[str, Any] = types.MappingProxyType(
            {**{key: inner.get(key) for key in keys}, **inner})

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def __repr__(self) -> str:
        return f"<DockerImage {self.short_id} {' '.join(self.tags)}>".replace(" >", ">")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DockerImage) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def inspect_image(api: EngineApi, key: str) -> DockerImage:
    """The engine's image ``key`` (a reference or an id); ImageNotFound when it lacks it."""
    with api.mapped(f"image {key} is not in the engine", error=errors.ImageNotFound):
        return DockerImage(api.inspect_image(key), podman=api.podman)


def pull_image(api: EngineApi, ref: str) -> DockerImage:
    """Pull ``ref`` through the engine; PullError with the engine's words when it cannot."""
    docker = load_docker()
    repository, tag = docker.utils.parse_repository_tag(ref)
    if not tag and "@" not in ref:
        tag = "latest"
    with api.mapped(f"pull {ref}", error=errors.PullError, reference=ref):
        for event in api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise errors.PullError(f"pull {ref}: {event['error']}", reference=ref)
    target = ref if "@" in ref else f"{repository}:{tag}"
    return inspect_image(api, target)
