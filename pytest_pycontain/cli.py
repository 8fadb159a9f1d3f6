"""The ``pycontain`` command: the same engine as the plugin, for debugging.

Each group of commands lives beside the code it drives and registers itself here.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = (
    "build",
    "run",
    "exec",
    "pull",
    "push",
    "save",
    "load",
    "images",
    "rmi",
    "ps",
    "rm",
    "prune",
    "compose",
    "info",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycontain",
        description="Build, pull and run containers with the pytest-pycontain "
        "engine. Commands: " + ", ".join(COMMANDS) + ".",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the version and exit")
    parser.add_argument("--backend", choices=("auto", "native", "docker"), default=None,
                        help="the engine for run, exec, ps, rm and prune: native (root), "
                        "docker, or auto (the default; also PYCONTAIN_BACKEND)")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND",
                                       help="one of these (pycontain COMMAND --help says more)")
    from . import cli_build, cli_containers, cli_images

    cli_images.add_parsers(subparsers, prune=False)  # prune is cli_containers' (also images)
    cli_containers.add_parsers(subparsers)
    cli_build.add_parsers(subparsers)
    from .compose import cli as cli_compose

    cli_compose.add_parsers(subparsers)
    from . import cli_info

    cli_info.add_parsers(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-pycontain")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)  # as git does: no command is a usage error
        return 2
    from .errors import PycontainError

    try:
        return int(args.handler(args) or 0)
    except PycontainError as exc:
        print(f"pycontain {args.subcommand}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
