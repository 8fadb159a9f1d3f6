"""``pycontain build``: build a Dockerfile into the store, printing the steps as they run.

Cached steps are marked ``CACHED``; the image id is printed last, on stdout, so that
``id=$(pycontain build -q .)`` works. RUN steps use the native engine (root).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _build_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"--build-arg {text!r}: expected KEY=VALUE")
    if not sep:  # like docker: KEY alone takes the value from the environment
        return key, os.environ.get(key, "")
    return key, value


def _secret(text: str) -> tuple[str, str]:
    """``id=ID,src=PATH`` (docker build's form; ``source=`` too) -> (id, path)."""
    fields = dict(part.partition("=")[::2] for part in text.split(",") if part)
    ident, source = fields.get("id", ""), fields.get("src") or fields.get("source", "")
    if not ident or not source or set(fields) - {"id", "src", "source", "type"} or \
            fields.get("type", "file") != "file":
        raise argparse.ArgumentTypeError(f"--secret {text!r}: expected id=ID,src=PATH")
    return ident, source


def cmd_build(args: argparse.Namespace) -> int:
    from . import config
    from .build import build
    from .native.engine import native_runner
    from .store import Store

    table, where = config.read_pyproject(Path.cwd())
    settings = config.resolve(pyproject=table, pyproject_path=where)
    store = Store.from_settings(settings)
    context = Path(args.context)
    if not context.is_dir():
        raise ConfigError(f"build context {args.context!r} is not a directory")
    dockerfile = Path(args.file) if args.file else None
    quiet = args.quiet

    def progress(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    runner = native_runner(settings=settings)  # the engine starts at the first RUN
    try:
        image = build(store, context, dockerfile=dockerfile, target=args.target,
                      build_args=dict(args.build_arg), tag=args.tag, no_cache=args.no_cache,
                      run_step=runner, progress=progress, secrets=dict(args.secret))
    finally:
        runner.close()
    print(image.id)
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``build`` on the ``pycontain`` command."""
    p = subparsers.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("-t", "--tag", help="name the image TAG")
    p.add_argument("-f", "--file", metavar="DOCKERFILE",
                   help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("--build-arg", action="append", type=_build_arg, default=[],
                   metavar="KEY=VALUE", help="a build argument (repeatable)")
    p.add_argument("--target", help="build only up to this stage")
    p.add_argument("--secret", action="append", type=_secret, default=[],
                   metavar="id=ID,src=PATH",
                   help="a file for RUN --mount=type=secret,id=ID (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("context", metavar="CONTEXT", help="the build context directory")
    p.set_defaults(handler=cmd_build)
