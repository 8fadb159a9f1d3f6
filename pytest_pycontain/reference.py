"""Image references, read the way Docker reads them.

``redis`` is ``docker.io/library/redis:latest``; the first path component names a registry only
when it looks like a host (has a ``.`` or ``:``, is ``localhost``, or has upper-case letters),
so ``a/b`` is ``docker.io/a/b`` while ``ghcr.io/a/b`` and ``127.0.0.1:5000/x`` are not Docker Hub.
"""

from __future__ import annotations

import dataclasses
import re

from .errors import ReferenceError_

DOCKER_HUB = "docker.io"
_LEGACY_HUB = ("index.docker.io", "registry-1.docker.io")

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HOST = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class Reference:
    """A parsed reference: ``registry/repository[:tag][@digest]``.

    ``tag`` is ``latest`` when neither a tag nor a digest was given.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the registry's manifest endpoint takes: the digest if any, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def familiar(self) -> str:
        """The short form Docker prints: ``redis:latest``, ``ghcr.io/a/b:t``."""
        name = self.name
        if self.registry == DOCKER_HUB:
            name = self.repository.removeprefix("library/")
        return name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return dataclasses.replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return dataclasses.replace(self, digest=digest)

    def _suffix(self) -> str:
        text = f":{self.tag}" if self.tag else ""
        return text + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse(text: str) -> Reference:
    """Parse ``text`` into a fully qualified :class:`Reference`; raise ``ReferenceError_``."""
    if not isinstance(text, str) or not text:
        raise ReferenceError_(f"invalid image reference {text!r}: empty")
    if text != text.strip():
        raise ReferenceError_(f"invalid image reference {text!r}: surrounding whitespace")
    rest, digest = text, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise ReferenceError_(f"invalid image reference {text!r}: bad digest {digest!r}")
        if digest.startswith("sha256:") and not _SHA256.fullmatch(digest):
            raise ReferenceError_(
                f"invalid image reference {text!r}: a sha256 digest is 64 lower-case hex digits")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ReferenceError_(f"invalid image reference {text!r}: bad tag {tag!r}")
    registry, _, path = rest.partition("/")
    if not path or not (
        "." in registry or ":" in registry or registry == "localhost"
        or registry != registry.lower()
    ):
        registry, path = DOCKER_HUB, rest
    elif not _HOST.fullmatch(registry):
        raise ReferenceError_(f"invalid image reference {text!r}: bad registry {registry!r}")
    if registry in _LEGACY_HUB:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise ReferenceError_(
                f"invalid image reference {text!r}: repository name component {component!r} "
                "must be lower-case letters, digits and separators (. _ __ -)")
    if len(registry) + 1 + len(path) > 255:
        raise ReferenceError_(f"invalid image reference {text!r}: name longer than 255 characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, path, tag, digest)


def is_image_id(text: str) -> bool:
    """True for ``sha256:<64 hex>`` and for a bare hex id prefix of 12 to 64 characters."""
    if _SHA256.fullmatch(text):
        return True
    return bool(re.fullmatch(r"[0-9a-f]{12,64}", text))
