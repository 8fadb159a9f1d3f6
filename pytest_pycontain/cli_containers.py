"""The container commands of ``pycontain``: run, exec, ps, rm, prune (native engine).

There is no daemon: ``run`` is the engine for as long as it runs. ``run -d`` hands the
container to a keeper so that it outlives the command; ``exec`` enters any live container
(kept, or owned by a running pytest) on this terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, ContainerError


def _settings() -> Any:
    from . import config

    table, where = config.read_pyproject(Path.cwd())
    return config.resolve(pyproject=table, pyproject_path=where)


def _engine(reap: bool = True) -> Any:
    from .native.engine import NativeEngine

    return NativeEngine(_settings(), reap=reap)


def engine_for_cli() -> Any:
    """The native engine as the commands use it (settings from ./pyproject.toml), reaping
    what dead runs left first."""
    return _engine()


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            value = os.environ.get(key, "")
        env[key] = value
    return env


def _sysctls(pairs: list[str]) -> dict[str, str]:
    """``--sysctl NAME=VALUE``, repeatable, as ``docker run``."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--sysctl {pair!r}: expected NAME=VALUE")
        result[key] = value
    return result


def _published(values: list[str]) -> dict[str, str | None]:
    """``-p PORT`` (any free host port) or ``-p HOST_PORT:PORT``, as ``docker run -p``; the run
    request checks the numbers."""
    ports: dict[str, str | None] = {}
    for value in values:
        host, sep, port = value.rpartition(":")
        ports[port] = host if sep else None
    return ports


def cmd_run(args: argparse.Namespace) -> int:
    from .engine import RunSpec

    spec = RunSpec.create(args.image, name=args.name, command=args.argv or None,
                          entrypoint=args.entrypoint, env=_env(args.env), workdir=args.workdir,
                          user=args.user, hostname=args.hostname,
                          network="host" if args.network == "host" else None,
                          ports=_published(args.publish), privileged=args.privileged,
                          cap_add=args.cap_add, cap_drop=args.cap_drop,
                          security_opt=args.security_opt,
                          sysctls=_sysctls(args.sysctl))  # bad input: before any engine
    engine = _engine()
    try:
        try:
            container = engine.run(spec)
        except ContainerError as exc:
            if exc.exit_code is None:
                raise
            print(f"pycontain run: {exc}", file=sys.stderr)
            return exc.exit_code  # as docker does: 127 not found, 126 not executable
        if args.detach:
            engine.keep(container)
            print(container.id)
            return 0
        for chunk in container.stream_logs(follow=True):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        code = container.wait()
        if not args.rm:
            engine.keep(container)
            print(f"pycontain: kept {container.id[:12]}; remove with `pycontain rm "
                  f"{container.id[:12]}`", file=sys.stderr)
        return code
    finally:
        engine.close()


def cmd_exec(args: argparse.Namespace) -> int:
    engine = _engine(reap=False)
    try:
        container = engine.attach(args.container)
        if not args.cmd:
            raise ContainerError("exec: no command given (try `sh`)")
        return container.exec_stdio(args.cmd, user=args.user, env=_env(args.env),
                                    workdir=args.workdir)
    finally:
        engine.close()


def cmd_ps(args: argparse.Namespace) -> int:
    from .native import state

    rows = state.containers(_settings().state_path)
    print(f"{'CONTAINER ID':<14}{'NAME':<28}{'IMAGE':<32}{'STATE':<9}OWNER")
    for row in rows:
        status = "kept" if row["kept"] else "running"
        print(f"{row['container'][:12]:<14}{row.get('name', '')[:27]:<28}"
              f"{str(row.get('image', ''))[:31]:<32}{status:<9}{row['owner']}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from .native import state
    from .native.engine import matches as answers_to

    root = _settings().state_path
    failed = 0
    for ref in args.containers:
        matches = [r for r in state.containers(root) if answers_to(r, ref)]
        if len(matches) != 1:
            print(f"pycontain rm: {'no' if not matches else 'more than one'} container "
                  f"matches {ref!r}", file=sys.stderr)
            failed += 1
            continue
        record = matches[0]
        if record["kept"]:
            state.remove_kept(root, record["container"])
        else:
            engine = _engine(reap=False)
            try:
                engine.attach(record["container"]).remove()
            finally:
                engine.close()
        print(record["container"][:12])
    return 1 if failed else 0


def cmd_prune(args: argparse.Namespace) -> int:
    from . import cli_images
    from .native import state

    root = _settings().state_path
    if root.exists():
        for owner in state.prune(root, kept=args.kept):
            print(f"reaped {owner}")
    return cli_images.cmd_prune(args)


def add_parsers(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run a container in the foreground")
    p.add_argument("--rm", action="store_true", help="remove it when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="keep it running in the "
                   "background (a keeper holds it) and print its id")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--name")
    p.add_argument("--hostname")
    p.add_argument("--entrypoint")
    p.add_argument("--network", choices=("none", "host"), default="none")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[HOST_PORT:]PORT",
                   help="publish a port on 127.0.0.1 (any free host port without HOST_PORT)")
    p.add_argument("--privileged", action="store_true",
                   help="every capability, no seccomp, no masked paths, devices usable")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="no-new-privileges, seccomp=unconfined, seccomp=PROFILE.json")
    p.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("image")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="command",
                   help="the command and its arguments (default: the image's)")
    p.set_defaults(handler=cmd_run)

    p = subparsers.add_parser("exec", help="run a command in a live container on this terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("container")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(handler=cmd_exec)

    p = subparsers.add_parser("ps", help="list live and kept containers")
    p.set_defaults(handler=cmd_ps)

    p = subparsers.add_parser("rm", help="remove containers (kept or live)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(handler=cmd_rm)

    p = subparsers.add_parser("prune", help="reap what dead runs left, and unused image data")
    p.add_argument("--kept", action="store_true", help="remove kept containers too")
    p.add_argument("--build-cache", action="store_true",
                   help="remove the builds' cache mounts too (those no build holds)")
    p.set_defaults(handler=cmd_prune)
