"""An image as the rest of the package sees it: its id, tags, config and layers.

``Image.config`` is shaped like Docker's ``docker inspect`` ``Config`` (every key present, ``None``
when the image does not set it) so code written against Docker reads it unchanged;
``Image.image_config`` is the same data typed, for our own engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .imageconfig import split_env
from .reference import parse

CONFIG_KEYS = ("Hostname", "Domainname", "User", "Env", "Cmd", "Entrypoint", "WorkingDir",
               "ExposedPorts", "Volumes", "Labels", "StopSignal", "Healthcheck", "OnBuild",
               "Shell", "ArgsEscaped")


class Layer(NamedTuple):
    """A layer blob (``digest``, compressed or not) and its uncompressed ``diff_id``."""

    digest: str
    diff_id: str


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI/Docker image config that running and building need."""

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    stop_signal: str | None = None
    healthcheck: Mapping[str, Any] | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] | None = None
    architecture: str = ""
    os: str = ""
    variant: str | None = None
    created: str | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    diff_ids: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageConfig:
        """Read a parsed image config blob (``{"config": {...}, "rootfs": {...}, ...}``)."""
        inner = data.get("config") or {}

        def words(value: Any) -> tuple[str, ...] | None:
            if value is None:
                return None
            if isinstance(value, str):
                return (value,)
            return tuple(str(v) for v in value)

        return cls(
            env=tuple(inner.get("Env") or ()),
            cmd=words(inner.get("Cmd")),
            entrypoint=words(inner.get("Entrypoint")),
            working_dir=inner.get("WorkingDir") or "",
            user=inner.get("User") or "",
            exposed_ports=tuple(sorted(inner.get("ExposedPorts") or {})),
            volumes=tuple(sorted(inner.get("Volumes") or {})),
            labels=dict(inner.get("Labels") or {}),
            stop_signal=inner.get("StopSignal") or None,
            healthcheck=inner.get("Healthcheck") or None,
            on_build=tuple(inner.get("OnBuild") or ()),
            shell=words(inner.get("Shell")),
            architecture=data.get("architecture") or "",
            os=data.get("os") or "",
            variant=data.get("variant"),
            created=data.get("created"),
            history=tuple(data.get("history") or ()),
            diff_ids=tuple((data.get("rootfs") or {}).get("diff_ids") or ()),
        )

    @property
    def env_dict(self) -> dict[str, str]:
        """``Env`` as a mapping (a later duplicate wins, as in Docker)."""
        return split_env(self.env)


class Image:
    """An image in the store.

    ``id`` is ``sha256:`` of the config bytes (Docker's image id), ``digest`` the manifest's
    digest (the registry's, for a pulled image), ``tags`` the tags naming it as Docker prints
    them (``busybox:latest``), ``names`` the store's canonical names (``docker.io/library/...``,
    including by-digest names).
    """

    def __init__(self, *, config_bytes: bytes, manifest_bytes: bytes,
                 tags: Sequence[str] = (), manifest_media_type: str | None = None):
        self.config_bytes = config_bytes
        self.manifest_bytes = manifest_bytes
        self.id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        self.digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        self.names: list[str] = list(tags)
        self.tags: list[str] = [ref.familiar for ref in map(parse, self.names)
                                if ref.tag and not ref.digest]
        self.raw_config: dict[str, Any] = json.loads(config_bytes)
        self.manifest: dict[str, Any] = json.loads(manifest_bytes)
        self.manifest_media_type = (manifest_media_type or self.manifest.get("mediaType")
                                    or "application/vnd.oci.image.manifest.v1+json")
        self.image_config = ImageConfig.from_json(self.raw_config)
        inner = self.raw_config.get("config") or {}
        self.config: Mapping[str, Any] = types.MappingProxyType(
            {**{key: inner.get(key) for key in CONFIG_KEYS}, **inner})

    @property
    def diff_ids(self) -> list[str]:
        return list(self.image_config.diff_ids)

    @property
    def layers(self) -> list[Layer]:
        """Each layer's blob digest and diff_id, bottom layer first."""
        blobs = [d["digest"] for d in self.manifest.get("layers", [])]
        return [Layer(b, d) for b, d in zip(blobs, self.diff_ids, strict=False)]

    @property
    def layer_descriptors(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def config_descriptor(self) -> dict[str, Any]:
        return dict(self.manifest["config"])

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def __repr__(self) -> str:
        return f"<Image {self.short_id} {' '.join(self.tags)}>".replace(" >", ">")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and (self.id, self.digest) == (other.id, other.digest)

    def __hash__(self) -> int:
        return hash((self.id, self.digest))
