"""``pycontain compose [-f FILE]... [-p NAME] [--profile P] config | up [-d] | ps | logs |
down [-v]``, on the native engine or a Docker one (``--backend docker``, ``DOCKER_HOST``).

``config`` prints the resolved project as JSON, in the form ``docker compose config --format
json`` prints, so the two can be compared on the same files. ``up`` runs the stack in the
foreground, its logs prefixed by service as compose prints them, until every container has
exited or Ctrl-C; the stack goes when ``up`` ends. ``up -d`` waits as ``wait=True`` does, then
leaves the stack running: its containers are kept (native: each by a keeper that holds its
networks, names and ports; Docker: out of the reaper's reach), its networks with them, and
its named volumes are shared ones (``<project>_<key>``) that outlive every run, as Docker's
volumes do. Its containers are named ``<project>-<service>-<n>``, which is how ``ps``,
``logs`` and ``down`` find them again by the project's name. ``down`` removes the containers
(their anonymous volumes with them) and networks; ``down -v`` the project's named volumes too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..errors import PycontainError
from .stack import EngineMaker


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
    up = actions.add_parser("up", help="run the stack in the foreground (or detached: -d)")
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
    down.add_argument("-v", "--volumes", action="store_true",
                      help="remove the project's named volumes too (never external ones)")
    down.set_defaults(handler=cmd_down)
    for command in (up, ps, logs, down):
        command.add_argument("--backend", choices=("auto", "native", "docker"),
                             default=argparse.SUPPRESS,
                             help="the engine: native (root), docker, or auto (the default; "
                             "also PYCONTAIN_BACKEND)")


def cmd_config(args: argparse.Namespace) -> int:
    from .jsonform import config_json
    from .loader import load

    project = load(args.file, project=args.project_name, profiles=args.profile)
    json.dump(config_json(project), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from .loader import load
    from .stack import Compose

    project = load(args.file, project=args.project_name, profiles=args.profile)
    docker = _backend(args) == "docker"
    engine = _engine(args, docker)
    maker = DetachedMaker(engine, docker) if args.detach else EngineMaker(engine)
    try:
        if args.detach:
            stack = Compose(maker, project, prefixed=True)
            stack.up(build=args.build, wait=True)
            for name in project.order():
                for container in stack.replicas(name):
                    engine.keep(container)
                    if not docker:
                        engine.leave_networks(container)  # its keeper holds them now
                    print(container.name)
            maker.forget()  # kept: no longer the maker's to remove
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


class DetachedMaker(EngineMaker):
    """What ``up -d`` makes: what outlives this command. Named volumes are shared ones
    (``shared_volume``: found again by the next ``up -d``, removed by ``down -v``); a Docker
    engine's networks are kept ones (out of the reaper's reach; the native engine's go with
    their containers' keepers)."""

    def __init__(self, engine: Any, docker: bool):
        super().__init__(engine)
        self.docker = docker

    def network(self, name: str | None = None, *, internal: bool = False) -> Any:
        if not self.docker:
            return super().network(name, internal=internal)
        network = self.engine.network(name, internal=internal, kept=True)
        self.networks.append(network)  # removed again if the stack fails to come up
        return network

    def volume(self, name: str | None = None, *, external: bool = False) -> Any:
        if external or name is None:
            return super().volume(name, external=external)
        return self.engine.shared_volume(name, create=True)

    def forget(self) -> None:
        """The stack is up and kept: nothing of it is this maker's to remove anymore."""
        self.containers.clear()
        self.networks.clear()
        self.volumes.clear()


def _backend(args: argparse.Namespace) -> str:
    from ..cli_common import backend_of

    return backend_of(args)


def _engine(args: argparse.Namespace, docker: bool, reap: bool = True) -> Any:
    """The engine the commands use (settings from ./pyproject.toml), having reaped what
    dead runs left."""
    from ..cli_common import settings_of

    if docker:
        from ..docker import DockerEngine

        return DockerEngine(settings_of(args), reap=reap)
    from ..cli_containers import engine_for_cli

    return engine_for_cli()


def _project(args: argparse.Namespace, needed: bool = False) -> tuple[str, Any]:
    """The project's name and, when its files load, the project (else None): ``-p`` alone
    finds a detached stack without its files."""
    from ..errors import PycontainError
    from .loader import load

    try:
        project = load(args.file, project=args.project_name, profiles=args.profile)
    except PycontainError:
        if needed or args.project_name is None:
            raise
        return args.project_name, None
    return project.name, project


def _native_rows(name: str) -> list[dict[str, Any]]:
    """The containers a native ``up -d`` of project ``name`` left, in name order."""
    from ..cli_common import settings_of
    from ..native import state

    prefix = f"{name}-"
    rows = [row for row in state.containers(settings_of().state_path)
            if row["kept"] and _given(row).startswith(prefix)]
    return sorted(rows, key=_given)


def _docker_rows(engine: Any, name: str) -> list[dict[str, Any]]:
    """The kept containers a Docker ``up -d`` of project ``name`` left, in name order."""
    from ..cli_docker import given_name, listed
    from ..docker.labels import KEPT_SUFFIX

    prefix = f"{name}-"
    rows = [info for info in listed(engine) if given_name(info).startswith(prefix)
            and (info.get("Names") or ["?"])[0].endswith(KEPT_SUFFIX)]
    return sorted(rows, key=given_name)


def _given(row: dict[str, Any]) -> str:
    """The name the stack gave a container (the record's ``name`` has the unique suffix)."""
    return str(row.get("dns_name") or row.get("name") or "")


def cmd_ps(args: argparse.Namespace) -> int:
    from ..cli_common import PS_HEADER, ports_column, ps_row

    name, _ = _project(args)
    if _backend(args) == "docker":
        from ..cli_docker import ps_line

        engine = _engine(args, True, reap=False)
        try:
            print(PS_HEADER)
            for info in _docker_rows(engine, name):
                print(ps_line(info))
        finally:
            engine.close()
        return 0
    print(PS_HEADER)
    for row in _native_rows(name):
        print(ps_row(row["container"], _given(row), str(row.get("image", "")), "kept",
                     ports_column(row.get("published", {})), row["owner"]))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    name, _ = _project(args)
    docker = _backend(args) == "docker"
    if docker:
        engine = _engine(args, True, reap=False)
        from ..cli_docker import given_name

        try:
            for info in _docker_rows(engine, name):
                with engine.api.mapped(f"logs of {given_name(info)}"):
                    text = engine.api.logs(info["Id"], stdout=True, stderr=True)
                _print_logs(given_name(info)[len(name) + 1:],
                            text.decode(errors="replace"))
        finally:
            engine.close()
        return 0
    rows = _native_rows(name)
    if not rows:
        return 0
    engine = _engine(args, False)
    try:
        for row in rows:
            _print_logs(_given(row)[len(name) + 1:], engine.attach(row["container"]).logs())
    finally:
        engine.close()
    return 0


def _print_logs(label: str, text: str) -> None:
    for line in text.splitlines():
        print(f"{label}  | {line}")


def cmd_down(args: argparse.Namespace) -> int:
    name, project = _project(args, needed=args.volumes)
    docker = _backend(args) == "docker"
    engine = _engine(args, docker, reap=False) if docker or args.volumes else None
    try:
        if docker:
            _docker_down(engine, name, project)
        else:
            from ..cli_common import settings_of
            from ..native import state

            root = settings_of().state_path
            for row in reversed(_native_rows(name)):
                state.remove_kept(root, row["container"])
                print(_given(row))
        if args.volumes:  # the project's own named volumes; never an external one
            for volume in sorted(project.volumes.values(), key=lambda v: v.name):
                if volume.external:
                    continue
                try:
                    found = engine.shared_volume(volume.name, create=False)
                except PycontainError:
                    continue  # never made (its service did not run), or removed already
                found.remove()
                print(f"volume {volume.name}")
    finally:
        if engine is not None:
            engine.close()
    return 0


def _docker_down(engine: Any, name: str, project: Any) -> None:
    """Remove a Docker ``up -d``'s containers (with their anonymous volumes), then its kept
    networks (the file's, else every kept one named ``<project>_...``)."""
    from ..cli_docker import given_name
    from ..docker.labels import KEPT_SUFFIX, LABEL_NAME, LABEL_PID

    api = engine.api
    for info in reversed(_docker_rows(engine, name)):
        with api.mapped(f"remove {given_name(info)}"):
            api.remove_container(info["Id"], force=True, v=True)
        print(given_name(info))
    names = ({n.name for n in project.networks.values()} if project is not None else None)
    with api.mapped(f"list the networks of {name}"):
        networks = api.networks(filters={"label": LABEL_PID})
    for info in networks:
        given = (info.get("Labels") or {}).get(LABEL_NAME, "")
        if not info["Name"].endswith(KEPT_SUFFIX):
            continue
        if given in names if names is not None else given.startswith(f"{name}_"):
            with api.mapped(f"remove network {given}"):
                api.remove_network(info["Id"])


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
