"""Named volumes on a Docker Engine: Docker's own volumes, labelled as ours.

The engine-level name carries a unique suffix (as containers' and networks' do), so parallel
runs that both ask for "data" never share one; the labels let ``reap`` find what a dead run
left. Anonymous volumes (an image's VOLUME) are Docker's to make, and go with their container.
"""

from __future__ import annotations

from typing import Any

from .. import errors


class DockerVolume:
    """A named volume: ``name`` is the user's, ``engine_name`` Docker's."""

    def __init__(self, api: Any, name: str, engine_name: str):
        self._api = api
        self.name = name
        self.engine_name = engine_name
        self.removed = False

    def remove(self) -> None:
        """Delete it and its content (after the containers that used it are gone)."""
        if self.removed:
            return
        self.removed = True
        with self._api.mapped(f"remove volume {self.name}", error=errors.ContainerError):
            try:
                self._api.remove_volume(self.engine_name, force=True)
            except Exception as exc:  # already gone is what we wanted
                if getattr(exc, "status_code", None) != 404:
                    raise

    def __repr__(self) -> str:
        return f"<DockerVolume {self.name}>"
