"""Reuse across runs: a container asked for with ``reuse=True`` outlives the run and is found
again by the next one that asks for the same thing.

The key is a digest of the fully resolved request — the image's id, never its tag; every
``RunSpec`` field, networks and volumes by the names they were given — and the project's
rootdir, so it is stable across runs and processes and changes with anything that matters.
The slot is a digest of the rootdir and the name asked for: it holds one reused container,
so a changed request replaces the old one instead of piling up. Finding or making one happens
under a file lock per slot, shared by every process on the host (xdist workers, later runs),
so there is one container per key. The engines keep what ``ReuseKey`` marks out of the
reaper's reach, as they keep ``--pycontain-keep`` containers; see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .engine import ReuseKey, RunSpec
from .errors import ConfigError, NotSupported
from .imageconfig import shell_argv

__all__ = ["ReuseClaims", "call_site", "find_or_make", "kept_network", "request_key",
           "slot_lock"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _canonical(value: Any) -> Any:
    """A JSON form of a request value that is the same in every process (no ``hash()``, no
    object addresses): images by id, networks and volumes by the names they were given."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return [[_canonical(k), _canonical(v)] for k, v in
                sorted(value.items(), key=lambda item: json.dumps(_canonical(item[0])))]
    if isinstance(value, list | tuple | frozenset | set):
        items = [_canonical(v) for v in value]
        return sorted(items, key=json.dumps) if isinstance(value, frozenset | set) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    # an Image by its id (it has a config), a Network or Volume by the name it was given
    order = ("id", "name") if getattr(value, "config", None) is not None else ("name", "id")
    for attribute in order:
        found = getattr(value, attribute, None)
        if isinstance(found, str):
            return {type(value).__name__.lower(): found}
    return {type(value).__name__: str(value)}


def request_key(spec: RunSpec, rootdir: str | os.PathLike, label: str) -> ReuseKey:
    """The ``ReuseKey`` of ``spec`` (its image resolved already) in the project at
    ``rootdir``, asked for under ``label`` (the name, else the image as written)."""
    root = os.path.realpath(os.fspath(rootdir))
    form = {"rootdir": root, "spec": _canonical(spec)}
    key = hashlib.sha256(json.dumps(form, sort_keys=True).encode()).hexdigest()
    slot = hashlib.sha256(json.dumps([root, label]).encode()).hexdigest()
    return ReuseKey(key=key, slot=slot[:32], label=label)


def kept_network(engine: Any, network: Any, rootdir: str | os.PathLike,
                 state_dir: Path) -> Any:
    """The network kept across runs for reused containers asked for on the run's
    ``network``, by its given name in this project (found again, else made; under its slot's
    lock), on which names resolve between reused containers from run to run."""
    make = getattr(engine, "reused_network", None)
    if make is None:
        raise NotSupported(
            f"reuse=True with network {network.name!r}: the {engine.name} engine cannot keep a "
            "network across runs; reuse it with ports=[...] and no network")
    root = os.path.realpath(os.fspath(rootdir))
    slot = hashlib.sha256(json.dumps(["network", root, network.name]).encode()).hexdigest()
    with slot_lock(state_dir, slot[:32]):
        return make(network.name, slot[:32], internal=bool(network.internal))


@contextlib.contextmanager
def slot_lock(state_dir: Path, slot: str) -> Iterator[None]:
    """Hold the machine-wide lock of ``slot`` (a ``flock``: freed when its process dies)."""
    directory = state_dir / "reuse"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def call_site() -> str:
    """``file:line`` of the user's code that asked (the first frame outside this package and
    pytest's machinery)."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_PACKAGE) and not any(
                part in path for part in ("/_pytest/", "/pluggy/", "/contextlib.py")):
            return f"{path}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class ReuseClaims:
    """The slots this run asked for, and where: two different requests under one name in
    one run are a ``ConfigError`` naming both call sites. ``run_id`` is the run's (xdist's
    workers share their controller's), so the claims are kept on disk, beside the slot's lock,
    where every worker of the run sees them; a later run's id replaces them."""

    def __init__(self, run_id: str, state_dir: Path) -> None:
        self.run_id = run_id
        self.state_dir = state_dir
        self._claims: dict[str, tuple[str, str]] = {}

    def claim(self, reuse: ReuseKey, where: str) -> None:
        held = self._claims.get(reuse.slot)
        if held is None:
            with slot_lock(self.state_dir, reuse.slot):
                held = self._record(reuse, where)
            self._claims[reuse.slot] = held
        if held[0] != reuse.key:
            raise ConfigError(
                f"reuse=True: two different requests under the name {reuse.label!r} in one "
                f"run: {held[1]} and {where}; give one of them another name")

    def _record(self, reuse: ReuseKey, where: str) -> tuple[str, str]:
        """The slot's claim of this run (another worker's, made first), else ours, written
        (under the slot's lock). An unreadable claim is an old run's: replaced."""
        path = self.state_dir / "reuse" / f"{reuse.slot}.claim"
        try:
            found = json.loads(path.read_text())
            if found.get("run") == self.run_id:
                return str(found["key"]), str(found["where"])
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(json.dumps({"run": self.run_id, "key": reuse.key, "where": where}))
        os.replace(partial, path)
        return reuse.key, where


def _unhealthy(container: Any, config: Mapping[str, Any]) -> str | None:
    """Why a found container cannot be reused, or None: it must run, and pass its
    healthcheck where its image has one."""
    status = container.status
    if status != "running":
        code = container.exit_code
        return f"it is {status}" + (f" (exit code {code})" if code is not None else "")
    health = container.health
    if health == "unhealthy":
        return "its healthcheck fails"
    if health is None:
        test = list((config.get("Healthcheck") or {}).get("Test") or [])
        if test and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else shell_argv(" ".join(test[1:]))
            if container.exec(argv, timeout=30).exit_code != 0:
                return "its healthcheck fails"
    return None


def find_or_make(engine: Any, spec: RunSpec, reuse: ReuseKey, state_dir: Path,
                 config: Mapping[str, Any], ready: Callable[[Any], None]) -> Any:
    """The live, healthy container of ``reuse.key``, else a new one made with ``spec`` and
    made ready (``ready(container)``, the run's wait): older ones in its slot are removed
    (with one warning line when one died or was unhealthy). Under the slot's lock."""
    with slot_lock(state_dir, reuse.slot):
        for found in engine.reused(reuse.slot):
            container = found.container
            if found.key == reuse.key:
                try:
                    why = _unhealthy(container, config)
                except Exception as exc:  # an unreadable one is recreated too
                    why = f"it cannot be reached ({exc})"
                if why is None:
                    return container
                warnings.warn(f"pycontain: the reused container {reuse.label!r} "
                              f"({container.id[:12]}) was recreated: {why}", stacklevel=1)
            with contextlib.suppress(Exception):
                container.remove()
        made = engine.run(spec, reuse=reuse)
        try:
            ready(made)
        except BaseException:
            with contextlib.suppress(Exception):
                made.remove()
            raise
        return made
