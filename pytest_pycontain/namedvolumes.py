"""Opening a named volume by name, as a factory and a Compose stack both do: the one this run
already has, an existing one (``external``), or a new one that the caller removes later."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .runspec import check_volume_name


def open_volume(engine: Any, name: str | None, external: bool, made: list[Any]) -> Any:
    """The volume ``name`` on ``engine``; a new one is appended to ``made`` (the caller's to
    remove), an existing or external one is not."""
    if external and name is None:
        raise ConfigError("volume(external=True) needs the volume's name")
    if name is not None:
        check_volume_name(name, "volume")
        found = engine.find_volume(name)
        if found is not None:
            return found
    if external:
        return engine.shared_volume(name, create=False)
    volume = engine.volume(name)
    made.append(volume)
    return volume
