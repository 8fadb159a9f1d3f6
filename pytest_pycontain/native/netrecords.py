"""Crash-safety records of the native engine's networks: one JSON file per resource.

A network, its way out (pasta) or a published port is written down (``write_record``) in its owner's
records directory, ``<state>/netrecords/<owner>/``, before it is made, and dropped once it is
gone. The owner's state journal names that directory (``undo_record`` is its handler), and
``state.reap`` also sweeps the directories of owners that died before journalling it, so what
a killed owner left is undone at the next start (``reap_network_records``).

Most of a network dies with its owner (its namespace is held by a thread of the owner), its
members' veth pairs with it (a pair goes when either end does): they have no records. What
outlives the owner is its subnet lease, and a pasta whose parent-death signal did not end it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from ..procinfo import process_alive


def write_record(records_dir: str | os.PathLike | None, kind: str, ident: str,
                 **data: Any) -> Path | None:
    """Record a resource before it is made (atomically: a reaper never reads half a record)."""
    if records_dir is None:
        return None
    directory = Path(records_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"net-{kind}-{ident}.json"
    tmp = directory / f".{path.name}.tmp"
    tmp.write_text(json.dumps({"kind": kind, "id": ident, "pid": os.getpid(), **data}),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def update_record(path: Path | None, **data: Any) -> None:
    if path is None:
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(data)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def drop_record(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_recorded(record: dict[str, Any]) -> str:
    """Undo one recorded resource of a dead owner; returns what was done (for the reaper's log).

    The bridge namespace and everything in it (bridge, veths, DNS socket) died with the owner
    process that held it, and so did proxies; what outlives the owner is its subnet lease.
    """
    kind = record.get("kind")
    if kind == "network" and record.get("ipam") and record.get("id"):
        from .ipam import IPAM

        released = IPAM(record["ipam"]).release_network(record["id"])  # killed before or after
        return f"released subnet {', '.join(released) or '(none)'} of network {record.get('name')}"
    if kind == "pasta":  # its parent-death signal should have ended it already
        pid, start = record.get("pid"), record.get("start")
        if isinstance(pid, int) and start is not None and process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return f"killed pasta {pid}"
        return f"forgot pasta {pid}"
    return f"forgot {kind} {record.get('id')}"


def reap_network_records(records_dir: str | os.PathLike) -> list[str]:
    """Undo every network resource recorded in ``records_dir`` (an owner known to be dead)."""
    done = []
    directory = Path(records_dir)
    if not directory.is_dir():
        return done
    for path in sorted(directory.glob("net-*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        with contextlib.suppress(Exception):
            done.append(remove_recorded(record))
        drop_record(path)
    return done


def undo_record(record: dict[str, Any]) -> None:
    """The state journal's handler for a network records directory (or one record).

    The engine journals ``records_dir=`` before making a network with that records directory,
    so the reaper of its dead owner reaches every network record; a record without it is one
    resource (``remove_recorded``).
    """
    if record.get("records_dir"):
        reap_network_records(record["records_dir"])
        for torn in Path(record["records_dir"]).glob(".net-*.tmp"):  # killed mid-write
            with contextlib.suppress(FileNotFoundError):
                torn.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(record["records_dir"])
    else:
        remove_recorded(record)

