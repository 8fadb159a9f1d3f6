"""``pycontain compose [-f FILE]... [-p NAME] [--profile P] config``: the resolved project as
JSON, in the form ``docker compose config --format json`` prints, so the two can be compared
on the same files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compose", help="Compose files: the resolved project (config)",
        description="Load compose files as docker compose does.")
    parser.add_argument("-f", "--file", action="append", default=[], metavar="FILE",
                        help="a compose file (repeatable, merged in order; default: "
                             "compose.yaml and its override in the current directory)")
    parser.add_argument("-p", "--project-name", metavar="NAME", default=None)
    parser.add_argument("--profile", action="append", default=[], metavar="PROFILE",
                        help="enable the services of this profile (repeatable)")
    actions = parser.add_subparsers(dest="compose_command", metavar="COMMAND")
    config = actions.add_parser("config", help="print the resolved project as JSON")
    config.add_argument("--format", choices=("json",), default="json")
    config.set_defaults(handler=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from .jsonform import config_json
    from .loader import load

    project = load(args.file, project=args.project_name, profiles=args.profile)
    json.dump(config_json(project), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
