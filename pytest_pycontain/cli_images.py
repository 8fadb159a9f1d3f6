"""The image commands of ``pycontain``: pull, push, images, rmi, save, load, prune.

``add_parsers(subparsers)`` registers them; each sets ``func`` to a function taking the parsed
arguments and returning an exit code. Settings (cache dir, mirror, insecure registries) are
resolved like the plugin's, from the environment and ``[tool.pycontain]`` of the current
directory's pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import PycontainError

if TYPE_CHECKING:
    from .store import Store


def _store(args: argparse.Namespace) -> Store:
    from . import config
    from .store import Store

    table, where = config.read_pyproject(Path.cwd())
    settings = config.resolve(pyproject=table, pyproject_path=where)
    overrides: dict[str, Any] = {}
    if getattr(args, "platform", None):
        overrides["platform"] = args.platform
    return Store.from_settings(settings, **overrides)


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class ProgressPrinter:
    """Prints a line per finished blob, and running totals at most once a second."""

    def __init__(self, out: TextIO | None = None, interval: float = 1.0):
        self._out = out
        self.interval = interval
        self.done: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.last = time.monotonic()

    @property
    def out(self) -> TextIO:
        return self._out or sys.stderr

    def __call__(self, event: str, digest: str, done: int, total: int | None) -> None:
        short = digest.removeprefix("sha256:")[:12]
        if event == "download":
            self.done[digest] = done
            self.total[digest] = total or 0
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                print(f"  {_size(sum(self.done.values()))} of "
                      f"{_size(sum(self.total.values()))}", file=self.out, flush=True)
        elif event == "downloaded":
            print(f"{short}: downloaded {_size(done)}", file=self.out, flush=True)
        elif event == "exists":
            print(f"{short}: already present", file=self.out, flush=True)
        elif event == "uploaded":
            print(f"{short}: pushed", file=self.out, flush=True)
        elif event == "unpacked":
            print(f"{short}: unpacked", file=self.out, flush=True)


def cmd_pull(args: argparse.Namespace) -> int:
    store = _store(args)
    image = store.pull(args.ref, policy="always", progress=ProgressPrinter())
    print(f"{args.ref}: digest {image.digest}, id {image.id}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    store = _store(args)
    digest = store.push(args.ref, args.dest, progress=ProgressPrinter())
    print(f"{args.dest or args.ref}: digest {digest}")
    return 0


def cmd_verify(store: Any) -> int:
    """``images --verify``: check every blob, repair what can be, say what could not."""
    report = store.verify()
    for digest, how in report.repaired:
        print(f"repaired {digest}: {how}")
    for digest, why in report.unrepaired:
        print(f"could not repair {digest}: {why}", file=sys.stderr)
    print(f"checked {report.checked} blobs in {store.root}: {len(report.damaged)} damaged, "
          f"{len(report.repaired)} repaired, {len(report.unrepaired)} not")
    return 1 if report.unrepaired else 0


def cmd_images(args: argparse.Namespace) -> int:
    from .reference import parse

    store = _store(args)
    if args.verify:
        return cmd_verify(store)
    rows = []
    for image in store.images():
        size = sum(d.get("size", 0) for d in image.layer_descriptors)
        for tag in image.tags or ["<none>"]:
            if tag == "<none>":
                repo, label = "<none>", "<none>"
            else:
                ref = parse(tag)
                familiar = ref.familiar
                repo = familiar.split("@")[0].rsplit(":", 1)[0] if ref.tag else \
                    familiar.split("@")[0]
                label = ref.tag or "<none>"
            rows.append((repo, label, image.short_id, image.digest[:19] + "…", _size(size)))
    if args.quiet:
        for image_id in dict.fromkeys(r[2] for r in rows):
            print(image_id)
        return 0
    header = ("REPOSITORY", "TAG", "IMAGE ID", "DIGEST", "SIZE")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, *sorted(rows)]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    store = _store(args)
    status = 0
    for ref in args.refs:
        try:
            store.untag(ref)
            print(f"untagged {ref}")
        except PycontainError as exc:
            print(f"pycontain rmi: {exc}", file=sys.stderr)
            status = 1
    if args.prune:
        cmd_prune(args)
    return status


def cmd_save(args: argparse.Namespace) -> int:
    store = _store(args)
    path = store.save(args.ref, args.output)
    print(f"saved {args.ref} to {path}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    store = _store(args)
    for image in store.load(args.input):
        print(f"loaded {' '.join(image.tags) or image.id} ({image.digest})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Remove blobs and unpacked layers no image uses (the lead may fold this into a wider
    ``prune`` that also removes kept containers)."""
    store = _store(args)
    removed = store.prune()
    print(f"removed {removed['blobs']} blobs and {removed['layers']} unpacked layers, "
          f"{_size(removed['bytes'])}")
    if getattr(args, "build_cache", False):
        from .runmounts import Caches

        count, size = Caches(Path(store.root) / "run-cache").clear()
        print(f"removed {count} RUN --mount=type=cache directories, {_size(size)}")
    return 0


def add_parsers(subparsers: Any, *, prune: bool = True) -> None:
    """Register the image commands on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("pull", help="pull an image from its registry")
    p.add_argument("ref", help="the image reference (busybox, registry/name:tag, name@digest)")
    p.add_argument("--platform", help="os/arch[/variant] (default: this machine's)")
    p.set_defaults(handler=cmd_pull)

    p = subparsers.add_parser("push", help="push an image to its registry, or to DEST")
    p.add_argument("ref", help="the image reference to push")
    p.add_argument("dest", nargs="?", help="where to push it (default: the reference itself)")
    p.set_defaults(handler=cmd_push)

    p = subparsers.add_parser("images", help="list the images in the store")
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.add_argument("--verify", action="store_true",
                   help="check every blob against its digest; pull damaged images again")
    p.set_defaults(handler=cmd_images)

    p = subparsers.add_parser("rmi", help="remove image names (data goes with prune)")
    p.add_argument("refs", nargs="+", metavar="REF", help="an image reference or id")
    p.add_argument("--prune", action="store_true", help="prune unused data afterwards")
    p.set_defaults(handler=cmd_rmi)

    p = subparsers.add_parser("save", help="write an image as an OCI archive")
    p.add_argument("ref", help="the image reference or id")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="the tar file to write (docker save's format)")
    p.set_defaults(handler=cmd_save)

    p = subparsers.add_parser("load", help="import an OCI or docker-save archive")
    p.add_argument("-i", "--input", required=True, type=Path,
                   help="the tar file to read (docker save's or an OCI layout's)")
    p.set_defaults(handler=cmd_load)

    if prune:
        p = subparsers.add_parser("prune", help="remove unused image data")
        p.add_argument("--build-cache", action="store_true",
                       help="remove the builds' cache mounts too (those no build holds)")
        p.set_defaults(handler=cmd_prune)
