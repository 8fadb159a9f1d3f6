"""``Container.commit`` for the native engine: a container's own changes as a new image.

Only the container's overlay upper dir is read — its diff against the image, never the whole
tree — and it is stored as an uncompressed layer, whose digest is its diff_id (one pass over
the changed bytes, no compression), on top of the image's own layers, which are shared as they
are. Volumes and the files the engine mounts (``/etc/hosts``...) are mounts, not part of the
upper dir, so they stay out, as with ``docker commit``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ContainerError
from ..layers import write_tar

__all__ = ["commit_upper"]


def commit_upper(store: Any, base: Any, upper: Path, run_config: Mapping[str, Any], *,
                 leave_out: Sequence[str] = (), tag: str | None = None,
                 container: str = "") -> Any:
    """A new image in ``store``: ``base``'s layers, then ``upper`` (an overlayfs upper dir, its
    whiteouts made OCI whiteouts; ``leave_out`` the stubs the engine made to mount on), with
    ``base``'s config updated by ``run_config`` (the container's Cmd, Entrypoint, Env...)."""
    raw = getattr(base, "raw_config", None)
    if raw is None or not hasattr(base, "layers"):
        raise ContainerError(f"commit: the container's image {base!r} is not in this "
                             "engine's store", container=container)
    if not upper.is_dir():
        raise ContainerError("commit: the container's files are gone (was it removed?)",
                             container=container)
    fd, name = tempfile.mkstemp(prefix="commit-", suffix=".tar", dir=_tmp_dir(store))
    os.close(fd)
    try:
        write_tar(upper, name, overlay=True, exclude=leave_out)
        layer = store.add_layer(Path(name), compress=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    config = {key: value for key, value in raw.items() if key != "rootfs"}
    config["config"] = {**(raw.get("config") or {}), **run_config}
    config["created"] = now
    config["history"] = [*raw.get("history", ()),
                         {"created": now, "created_by": "pycontain commit",
                          "comment": f"from container {container[:12]}"}]
    return store.commit(config, [*base.layers, layer], tag=tag)


def _tmp_dir(store: Any) -> str | None:
    """The store's own directory, so the tar is on the same filesystem as its blob."""
    root = getattr(store, "root", None)
    return os.fspath(root) if root is not None and os.path.isdir(root) else None
