"""Named volumes on a Docker Engine: Docker's own volumes, labelled as ours.

The engine-level name carries a unique suffix (as containers' and networks' do), so parallel
runs that both ask for "data" never share one; the labels let ``reap`` find what a dead run
left. Anonymous volumes (an image's VOLUME) are Docker's to make, and go with their container.
A reused container's named volumes are its own (``reused_volume``): kept as it is (their name
ends as a kept container's does, so neither the reaper nor the run's teardown takes them),
labelled with its key, and removed with it (``remove_reused_volumes``).
A named volume that a kept container uses stays for it, as its network does: the teardown
leaves it (``used_by_kept``), and the reaper removes it once that container is gone (the
engine refuses to remove a volume in use until then).
"""

from __future__ import annotations

from typing import Any

from .. import errors
from .labels import KEPT_SUFFIX, LABEL_NAME, LABEL_REUSE_KEY


class DockerVolume:
    """A named volume: ``name`` is the user's, ``engine_name`` Docker's."""

    def __init__(self, api: Any, name: str, engine_name: str):
        self._api = api
        self.name = name
        self.engine_name = engine_name
        self.removed = False

    def remove(self) -> None:
        """Delete it and its content (after the containers that used it are gone); one that
        a kept container uses is left for it (the reaper takes it once that one is gone)."""
        if self.removed:
            return
        self.removed = True
        with self._api.mapped(f"remove volume {self.name}", error=errors.ContainerError):
            if used_by_kept(self._api, self.engine_name):
                return  # (the engine would refuse it as in use: no warning to make of that)
            try:
                self._api.remove_volume(self.engine_name, force=True)
            except Exception as exc:  # already gone is what we wanted
                if getattr(exc, "status_code", None) != 404:
                    raise

    def __repr__(self) -> str:
        return f"<DockerVolume {self.name}>"


def used_by_kept(api: Any, engine_name: str) -> bool:
    """Whether a kept container (any owner's) has volume ``engine_name`` mounted."""
    users = api.containers(all=True, filters={"volume": engine_name})
    return any((c.get("Names") or [""])[0].endswith(KEPT_SUFFIX) for c in users)


def reused_volume(api: Any, name: str, engine_name: str, labels: dict[str, str]) -> DockerVolume:
    """A new named volume of a reused container (``labels`` carry its key), kept with it."""
    engine_name += KEPT_SUFFIX
    with api.mapped(f"create volume {name}"):
        api.create_volume(engine_name, labels={**labels, LABEL_NAME: name})
    return DockerVolume(api, name, engine_name)


def remove_reused_volumes(api: Any, key: str) -> list[str]:
    """Remove the volumes of the reused container of ``key`` (it is gone); their names."""
    with api.mapped(f"list the volumes of reused container {key[:12]}",
                    error=errors.ContainerError):
        listed = (api.volumes(filters={"label": f"{LABEL_REUSE_KEY}={key}"}) or {})
    removed = []
    for info in listed.get("Volumes") or []:
        volume = DockerVolume(api, (info.get("Labels") or {}).get(LABEL_NAME, info["Name"]),
                              info["Name"])
        volume.remove()
        removed.append(info["Name"])
    return removed
