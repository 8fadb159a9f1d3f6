"""``pycontain run/exec/ps/rm/prune`` over a Docker engine (``--backend docker``).

The same commands as on the native engine, through the Docker backend the plugin uses: what
``run -d`` starts is a kept container (the reaper leaves it), listed by ``ps`` from our labels.
Docker has a daemon, so a command here ends as soon as its answer is printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import ContainerError


def _engine(args: argparse.Namespace, reap: bool = True) -> Any:
    from .cli_common import settings_of
    from .docker import DockerEngine

    return DockerEngine(settings_of(args), reap=reap)


def run(args: argparse.Namespace) -> int:
    from .cli_common import run_spec, say_published

    engine = _engine(args)
    try:
        spec = run_spec(args, args.network)  # None: a network of its own, as the plugin's
        try:
            container = engine.run(spec)
        except ContainerError as exc:
            if exc.exit_code is None:
                raise
            print(f"pycontain run: {exc}", file=sys.stderr)
            return exc.exit_code
        say_published(container, spec.ports)
        if args.detach:
            print(engine.keep(container))
            return 0
        code = container.wait()
        sys.stdout.write(container.logs())
        if not args.rm:
            kept = engine.keep(container)
            print(f"pycontain: kept {kept[:12]}; remove with `pycontain --backend docker rm "
                  f"{kept[:12]}`", file=sys.stderr)
        return code
    finally:
        engine.close()


def _ours(engine: Any) -> list[dict[str, Any]]:
    from .docker.labels import LABEL_PID

    return engine.api.containers(all=True, filters={"label": LABEL_PID})


def _find(engine: Any, ref: str) -> dict[str, Any]:
    from .docker.labels import LABEL_NAME

    found = [info for info in _ours(engine)
             if info["Id"].startswith(ref) or (info.get("Labels") or {}).get(LABEL_NAME) == ref
             or any(name.lstrip("/") == ref for name in info.get("Names") or ())]
    if len(found) != 1:
        raise ContainerError(f"{'no' if not found else 'more than one'} container matches "
                             f"{ref!r}")
    return found[0]


def exec_(args: argparse.Namespace) -> int:
    from .cli_common import env_pairs

    if not args.cmd:
        raise ContainerError("exec: no command given (try `sh`)")
    engine = _engine(args, reap=False)
    try:
        info = _find(engine, args.container)
        api = engine.api
        with api.mapped(f"exec in {args.container}", error=ContainerError):
            made = api.exec_create(info["Id"], args.cmd, user=args.user or "",
                                   environment=env_pairs(args.env) or None, workdir=args.workdir)
            for chunk in api.exec_start(made["Id"], stream=True):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            return int(api.exec_inspect(made["Id"])["ExitCode"] or 0)
    finally:
        engine.close()


def listed(engine: Any) -> list[dict[str, Any]]:
    """Every container with our labels on ``engine``, as the engine lists them."""
    return _ours(engine)


def given_name(info: dict[str, Any]) -> str:
    """The name a listed container was given (its engine-level one has a unique suffix)."""
    from .docker.labels import LABEL_NAME

    engine_name = (info.get("Names") or ["?"])[0].lstrip("/")
    return (info.get("Labels") or {}).get(LABEL_NAME, engine_name)


def ps_line(info: dict[str, Any]) -> str:
    """A listed container as ``pycontain ps`` prints it."""
    from .cli_common import ps_row
    from .docker.labels import KEPT_SUFFIX, LABEL_PID, LABEL_REUSE_KEY

    labels = info.get("Labels") or {}
    engine_name = (info.get("Names") or ["?"])[0].lstrip("/")
    status = info.get("State", "")
    owner = f"pid {labels.get(LABEL_PID, '?')}"
    if engine_name.endswith(KEPT_SUFFIX) and status == "running":
        status = "kept"
        if labels.get(LABEL_REUSE_KEY):  # reused across runs: its key
            status, owner = "reused", f"{owner} key={labels[LABEL_REUSE_KEY][:12]}"
    ports = ", ".join(f"{p['IP']}:{p['PublicPort']}->{p['PrivatePort']}"
                      for p in sorted(info.get("Ports") or (),
                                      key=lambda p: int(p.get("PrivatePort") or 0))
                      if p.get("PublicPort") and ":" not in p.get("IP", ""))
    return ps_row(info["Id"], given_name(info), str(info.get("Image", "")), status, ports,
                  owner)


def ps(args: argparse.Namespace) -> int:
    from .cli_common import PS_HEADER

    engine = _engine(args, reap=False)
    try:
        print(PS_HEADER)
        for info in _ours(engine):
            print(ps_line(info))
        return 0
    finally:
        engine.close()


def rm(args: argparse.Namespace) -> int:
    engine = _engine(args, reap=False)
    failed = 0
    try:
        for ref in args.containers:
            try:
                info = _find(engine, ref)
            except ContainerError as exc:
                print(f"pycontain rm: {exc}", file=sys.stderr)
                failed += 1
                continue
            _remove(engine, info, ref)
            print(info["Id"][:12])
        return 1 if failed else 0
    finally:
        engine.close()


def _remove(engine: Any, info: dict[str, Any], what: str) -> None:
    """Remove a container (its anonymous volumes, and a reused one's named ones too), then
    the named volumes and networks a dead run left for it that nothing else uses."""
    from .docker.labels import LABEL_REUSE_KEY
    from .docker.volumes import remove_reused_volumes

    with engine.api.mapped(f"remove {what}", error=ContainerError):
        engine.api.remove_container(info["Id"], force=True, v=True)
    key = (info.get("Labels") or {}).get(LABEL_REUSE_KEY)
    if key:
        remove_reused_volumes(engine.api, key)
    engine.remove_left_by(info)


def prune(args: argparse.Namespace) -> int:
    from .docker.labels import KEPT_SUFFIX, LABEL_REUSE_KEY, LABEL_REUSE_NETSLOT

    engine = _engine(args)  # reaps what dead owners left
    try:
        for what in engine.reaped:
            print(f"reaped {what}")
        for info in _ours(engine):  # kept ones with --kept, reused ones with --reused
            name = (info.get("Names") or ["?"])[0].lstrip("/")
            key = (info.get("Labels") or {}).get(LABEL_REUSE_KEY)
            if name.endswith(KEPT_SUFFIX) and (args.reused if key else args.kept):
                _remove(engine, info, name)
                print(f"removed {name}")
        if args.reused:  # the networks kept for them
            for info in engine.api.networks(filters={"label": LABEL_REUSE_NETSLOT}):
                try:
                    engine.api.remove_network(info["Id"])
                except Exception as exc:  # still used (by a kept container, say): say so
                    print(f"pycontain prune: network {info['Name']}: {exc}", file=sys.stderr)
                else:
                    print(f"removed network {info['Name']}")
        return 0
    finally:
        engine.close()
