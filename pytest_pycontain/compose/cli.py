"""``pycontain compose [-f FILE]... [-p NAME] [--profile P] config | up``.

``config`` prints the resolved project as JSON, in the form ``docker compose config --format
json`` prints, so the two can be compared on the same files. ``up`` runs the stack on the
native engine in the foreground, its logs prefixed by service as compose prints them, until
every container has exited or Ctrl-C; there is no daemon, so the stack goes when ``up`` ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compose", help="Compose files: the resolved project (config)",
        description="Load compose files as docker compose does.")
    parser.add_argument("-f", "--file", action="append", default=[], metavar="FILE",
                        help="a compose file (repeatable, merged in order; default: "
                             "compose.yaml and its override in the current directory)")
    parser.add_argument("-p", "--project-name", metavar="NAME", default=None,
                        help="the project name (default: the name: key, else the directory's)")
    parser.add_argument("--profile", action="append", default=[], metavar="PROFILE",
                        help="enable the services of this profile (repeatable)")
    actions = parser.add_subparsers(dest="compose_command", metavar="COMMAND",
                                    help="one of these (pycontain compose COMMAND --help)")
    config = actions.add_parser("config", help="print the resolved project as JSON")
    config.add_argument("--format", choices=("json",), default="json",
                        help="the output format (json, as docker compose config --format json)")
    config.set_defaults(handler=cmd_config)
    up = actions.add_parser("up", help="run the stack in the foreground (native engine)")
    up.add_argument("--no-build", dest="build", action="store_false",
                    help="use the images as they are")
    up.set_defaults(handler=cmd_up)


def cmd_config(args: argparse.Namespace) -> int:
    from .jsonform import config_json
    from .loader import load

    project = load(args.file, project=args.project_name, profiles=args.profile)
    json.dump(config_json(project), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from ..cli_containers import engine_for_cli
    from .loader import load
    from .stack import Compose, EngineMaker

    project = load(args.file, project=args.project_name, profiles=args.profile)
    engine = engine_for_cli()
    maker = EngineMaker(engine)
    try:
        stack = Compose(maker, project)
        stack.up(build=args.build, wait=False)
        _follow(stack)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        try:
            maker.close()
        finally:
            engine.close()


def _follow(stack: Any, poll: float = 0.1) -> None:
    """Print every container's new log lines, prefixed, until all of them have exited."""
    seen: dict[str, int] = {}
    while True:
        running = False
        for name in stack.project.order():
            for index, container in enumerate(stack.replicas(name), 1):
                text = container.logs()
                done = text.rfind("\n") + 1
                start = seen.get(container.id, 0)
                for line in text[start:done].splitlines():
                    print(f"{name}-{index}  | {line}", flush=True)
                seen[container.id] = done
                running = running or container.status == "running"
        if not running:
            return
        time.sleep(poll)
