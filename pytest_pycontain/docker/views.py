"""What a Docker container and network see of their engine, and a container of its network.

``DockerEngine`` makes containers and networks, and they in turn need a few things of it (the
API, where published ports are reached, its books). Naming those few things here, as protocols,
keeps the dependency one way: ``engine`` imports ``containers`` and ``networks``, never the
reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .client import EngineApi


class EngineView(Protocol):
    """The engine, as its containers and networks use it."""

    api: EngineApi
    base_url: str

    @property
    def is_local(self) -> bool: ...

    @property
    def address_host(self) -> str: ...

    @property
    def containers(self) -> Mapping[str, Any]: ...

    def local_pid(self, container: Any, info: Mapping[str, Any] | None = None) -> int | None: ...

    def require_local(self, what: str) -> None: ...

    def forget(self, thing: Any) -> None: ...


class NetworkView(Protocol):
    """A network, as a container on it uses it."""

    engine_name: str

    def remove(self, wait: bool = True) -> None: ...
