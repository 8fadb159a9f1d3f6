"""``pycontain compose [-f FILE]... [-p NAME] [--profile P] config | up [-d] | ps | logs |
down``.

``config`` prints the resolved project as JSON, in the form ``docker compose config --format
json`` prints, so the two can be compared on the same files. ``up`` runs the stack on the
native engine in the foreground, its logs prefixed by service as compose prints them, until
every container has exited or Ctrl-C; there is no daemon, so the stack goes when ``up`` ends.
``up -d`` waits as ``wait=True`` does, then hands every container to a keeper, as
``pycontain run -d`` does; its containers are named ``<project>-<service>-<n>``, which is how
``ps``, ``logs`` and ``down`` find them again by the project's name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compose", help="Compose files: config, up [-d], ps, logs, down",
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
    up.add_argument("-d", "--detach", action="store_true",
                    help="wait until the stack is up, then leave it running in the background")
    up.set_defaults(handler=cmd_up)
    ps = actions.add_parser("ps", help="list the containers of a detached stack")
    ps.set_defaults(handler=cmd_ps)
    logs = actions.add_parser("logs", help="print a detached stack's logs, by service")
    logs.set_defaults(handler=cmd_logs)
    down = actions.add_parser("down", help="remove a detached stack")
    down.set_defaults(handler=cmd_down)


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
    if args.detach:
        _check_detachable(project)
    engine = engine_for_cli()
    maker = EngineMaker(engine)
    try:
        if args.detach:
            stack = Compose(maker, project, prefixed=True)
            stack.up(build=args.build, wait=True)
            for name in project.order():
                for container in stack.replicas(name):
                    engine.keep(container)
                    engine.leave_networks(container)  # its keeper holds them now
                    print(container.name)
            maker.containers.clear()  # kept: no longer the maker's to remove
            maker.networks.clear()
            return 0
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


def _check_detachable(project: Any) -> None:
    """What a keeper cannot hold yet: a second network (it holds the first one's bridge and
    names) and volumes (journalled by this process, so reaped after it)."""
    from ..errors import NotSupported

    for service in project.services.values():
        if len(service.networks) > 1:
            raise NotSupported(f"{service.mark}: service {service.name!r}: up -d with a "
                               "service on more than one network is not supported yet")
        if any(v.type == "volume" for v in service.volumes):
            raise NotSupported(f"{service.mark}: service {service.name!r}: up -d with volumes "
                               "is not supported yet (use up, or the pytest fixtures)")


def _detached(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    """The project's name and the containers its ``up -d`` left, in name order."""
    from ..cli_common import settings_of
    from ..native import state
    from .loader import load

    name = args.project_name or load(args.file, profiles=args.profile).name
    prefix = f"{name}-"
    rows = [row for row in state.containers(settings_of().state_path)
            if row["kept"] and _given(row).startswith(prefix)]
    return name, sorted(rows, key=_given)


def _given(row: dict[str, Any]) -> str:
    """The name the stack gave a container (the record's ``name`` has the unique suffix)."""
    return str(row.get("dns_name") or row.get("name") or "")


def cmd_ps(args: argparse.Namespace) -> int:
    from ..cli_common import PS_HEADER, ports_column, ps_row

    _, rows = _detached(args)
    print(PS_HEADER)
    for row in rows:
        print(ps_row(row["container"], _given(row), str(row.get("image", "")), "kept",
                     ports_column(row.get("published", {})), row["owner"]))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from ..cli_containers import engine_for_cli

    name, rows = _detached(args)
    if not rows:
        return 0
    engine = engine_for_cli()
    try:
        for row in rows:
            label = _given(row)[len(name) + 1:]
            for line in engine.attach(row["container"]).logs().splitlines():
                print(f"{label}  | {line}")
    finally:
        engine.close()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ..cli_common import settings_of
    from ..native import state

    _, rows = _detached(args)
    root = settings_of().state_path
    for row in reversed(rows):
        state.remove_kept(root, row["container"])
        print(_given(row))
    return 0


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
