"""The container commands of ``pycontain``: run, exec, ps, rm, prune.

On the native engine there is no daemon: ``run`` is the engine for as long as it runs. ``run -d``
hands the container (and its published ports) to a keeper so that it outlives the command;
``exec`` enters any live container (kept, or owned by a running pytest) on this terminal. With
``--backend docker`` (or ``PYCONTAIN_BACKEND=docker``, or no root but a Docker socket) the same
commands go to a Docker engine (``cli_docker``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_common import (
    PS_HEADER,
    backend_of,
    env_pairs,
    ports_column,
    ps_row,
    run_spec,
    say_published,
    settings_of,
)
from .errors import ContainerError


def _engine(reap: bool = True, args: argparse.Namespace | None = None) -> Any:
    from .native.engine import NativeEngine

    return NativeEngine(settings_of(args), reap=reap)


def engine_for_cli() -> Any:
    """The native engine as the commands use it (settings from ./pyproject.toml), reaping
    what dead runs left first."""
    return _engine()


def cmd_run(args: argparse.Namespace) -> int:
    named = args.network not in (None, "none", "host")
    run_spec(args, args.network)  # bad input: before any engine starts
    if backend_of(args) == "docker":
        from . import cli_docker

        return cli_docker.run(args)
    engine = _engine(args=args)
    try:
        network: Any = None if args.network is None else args.network
        if named:
            network = engine.network(args.network)  # the keeper holds it with the container
        spec = run_spec(args, network)
        try:
            container = engine.run(spec)
        except ContainerError as exc:
            if exc.exit_code is None:
                raise
            print(f"pycontain run: {exc}", file=sys.stderr)
            return exc.exit_code  # as docker does: 127 not found, 126 not executable
        say_published(container, spec.ports)
        if args.detach:
            engine.keep(container)
            engine.leave_networks(container)  # its keeper holds them now
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
    if backend_of(args) == "docker":
        from . import cli_docker

        return cli_docker.exec_(args)
    engine = _engine(reap=False, args=args)
    try:
        container = engine.attach(args.container)
        if not args.cmd:
            raise ContainerError("exec: no command given (try `sh`)")
        return container.exec_stdio(args.cmd, user=args.user, env=env_pairs(args.env),
                                    workdir=args.workdir)
    finally:
        engine.close()


def cmd_ps(args: argparse.Namespace) -> int:
    if backend_of(args) == "docker":
        from . import cli_docker

        return cli_docker.ps(args)
    from .native import state

    rows = state.containers(settings_of(args).state_path)
    print(PS_HEADER)
    for row in rows:
        status = "kept" if row["kept"] else "running"
        owner = row["owner"]
        if row.get("reuse"):  # reused across runs (run(..., reuse=True)): its key
            status, owner = "reused", f"{owner} key={row['reuse']['key'][:12]}"
        print(ps_row(row["container"], row.get("name", ""), str(row.get("image", "")), status,
                     ports_column(row.get("published", {})), owner))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    if backend_of(args) == "docker":
        from . import cli_docker

        return cli_docker.rm(args)
    from .native import state
    from .native.engine import matches as answers_to

    root = settings_of(args).state_path
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
            engine = _engine(reap=False, args=args)
            try:
                engine.attach(record["container"]).remove()
            finally:
                engine.close()
        print(record["container"][:12])
    return 1 if failed else 0


def cmd_prune(args: argparse.Namespace) -> int:
    from . import cli_images
    from .native import state

    if backend_of(args) == "docker":
        from . import cli_docker

        return cli_docker.prune(args)
    root = settings_of(args).state_path
    if root.exists():
        for owner in state.prune(root, kept=args.kept, reused=args.reused):
            print(f"reaped {owner}")
    return cli_images.cmd_prune(args)


def add_backend(parser: argparse.ArgumentParser) -> None:
    """``--backend`` after the command too (``pycontain ps --backend docker``)."""
    parser.add_argument("--backend", choices=("auto", "native", "docker"),
                        default=argparse.SUPPRESS,
                        help="the engine: native (root), docker, or auto (the default; also "
                        "PYCONTAIN_BACKEND)")


def add_parsers(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run a container in the foreground")
    p.add_argument("--rm", action="store_true", help="remove it when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="keep it running in the "
                   "background (a keeper holds it and its ports) and print its id")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable (K alone: take it from here)")
    p.add_argument("-w", "--workdir", help="the working directory inside the container")
    p.add_argument("-u", "--user", help="run as USER[:GROUP] (a name or a number)")
    p.add_argument("--name", help="its name (what others on its network resolve)")
    p.add_argument("--hostname", help="its host name (default: the id's first 12)")
    p.add_argument("--entrypoint", help="replace the image's entrypoint")
    p.add_argument("--network", default=None, metavar="NAME",
                   help="none (its own loopback), host, or a network name (native: a network "
                   "of that name made for it; docker: an existing one); with -p and no network "
                   "it joins the engine's default one")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[127.0.0.1:][HOST_PORT:]PORT",
                   help="publish container PORT on the host's loopback (on HOST_PORT, else on "
                   "a free port; either way the command says where)")
    p.add_argument("--privileged", action="store_true",
                   help="every capability, no seccomp, no masked paths, devices usable")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="a capability to add to Docker's default set (or ALL)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="a capability to drop from Docker's default set (or ALL)")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="no-new-privileges, seccomp=unconfined, seccomp=PROFILE.json")
    p.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE",
                   help="a namespaced kernel setting for the container")
    add_backend(p)
    p.add_argument("image", help="the image reference (or id)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="command",
                   help="the command and its arguments (default: the image's)")
    p.set_defaults(handler=cmd_run)

    p = subparsers.add_parser("exec", help="run a command in a live container on this terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable (K alone: take it from here)")
    p.add_argument("-w", "--workdir", help="the working directory for the command")
    p.add_argument("-u", "--user", help="run as USER[:GROUP] (a name or a number)")
    add_backend(p)
    p.add_argument("container", help="its id (a prefix will do) or name")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command and its arguments")
    p.set_defaults(handler=cmd_exec)

    p = subparsers.add_parser("ps", help="list live and kept containers")
    add_backend(p)
    p.set_defaults(handler=cmd_ps)

    p = subparsers.add_parser("rm", help="remove containers (kept or live)")
    add_backend(p)
    p.add_argument("containers", nargs="+", metavar="CONTAINER",
                   help="an id (a prefix will do) or name")
    p.set_defaults(handler=cmd_rm)

    p = subparsers.add_parser("prune", help="reap what dead runs left, and unused image data")
    p.add_argument("--kept", action="store_true", help="remove kept containers too")
    p.add_argument("--reused", action="store_true",
                   help="remove the containers reused across runs too")
    p.add_argument("--build-cache", action="store_true",
                   help="remove the builds' cache mounts too (those no build holds)")
    add_backend(p)
    p.set_defaults(handler=cmd_prune)
