"""What the container commands share on either engine (``cli_containers`` for the native one,
``cli_docker`` for Docker): the settings and the engine chosen from them, the run request made
of the arguments, and how published ports and container rows are printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, EngineUnavailable, NotSupported


def settings_of(args: argparse.Namespace | None = None) -> Any:
    from . import config

    table, where = config.read_pyproject(Path.cwd())
    backend = getattr(args, "backend", None)
    return config.resolve(cli={"backend": backend} if backend else None, pyproject=table,
                          pyproject_path=where)


def backend_of(args: argparse.Namespace) -> str:
    """``native`` or ``docker``, chosen as the plugin chooses; one line saying what to do when
    neither can run here."""
    from . import backends

    backend, reason = backends.choose(settings_of(args).backend)
    if backend == "native" and backends.native_blocker() is not None:
        raise NotSupported(
            f"the native engine needs root here (uid {os.geteuid()}; rootless mode is not "
            "available yet): run it as root (sudo), or use a Docker engine with "
            "`pycontain --backend docker` (or PYCONTAIN_BACKEND=docker)")
    if backend == "none":
        raise EngineUnavailable(
            f"no engine: {reason.removeprefix('auto: ')}; run as root for the native engine, "
            "or start Docker (or set DOCKER_HOST)")
    return backend


def parse_publish(values: list[str]) -> dict[str, str | None]:
    """``-p`` values as docker takes them: ``PORT``, ``HOST_PORT:PORT`` or
    ``127.0.0.1:HOST_PORT:PORT`` (``/tcp`` allowed): container port -> host port (None: any
    free one); the run request checks the numbers."""
    wanted: dict[str, str | None] = {}
    for value in values:
        parts = value.split(":")
        if len(parts) == 3:
            ip, *parts = parts
            if ip not in ("127.0.0.1", "localhost"):
                raise ConfigError(f"-p {value}: ports are published on 127.0.0.1 only "
                                  f"(not {ip})")
        if len(parts) > 2:
            raise ConfigError(f"-p {value}: expected PORT, HOST_PORT:PORT or "
                              "127.0.0.1:HOST_PORT:PORT")
        port, _, proto = parts[-1].partition("/")
        if proto not in ("", "tcp"):
            raise ConfigError(f"-p {value}: only tcp ports are published (not {proto})")
        wanted[port] = parts[0] if len(parts) == 2 else None
    return wanted


def say_published(container: Any, ports: Any) -> None:
    """Where each published port is reached (stderr: stdout stays the id or the output)."""
    for port in ports or ():
        host, number = container.address(port)
        print(f"pycontain: port {port} published on {host}:{number}", file=sys.stderr,
              flush=True)


def ports_column(published: dict[str, list]) -> str:
    return ", ".join(f"{host}:{number}->{port}" for port, (host, number)
                     in sorted(published.items(), key=lambda item: int(item[0])))


def env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            value = os.environ.get(key, "")
        env[key] = value
    return env


def sysctls(pairs: list[str]) -> dict[str, str]:
    """``--sysctl NAME=VALUE``, repeatable, as ``docker run``."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--sysctl {pair!r}: expected NAME=VALUE")
        result[key] = value
    return result


def run_spec(args: argparse.Namespace, network: Any) -> Any:
    """The run request of ``pycontain run`` (bad input is an error before any engine)."""
    from .engine import RunSpec

    return RunSpec.create(args.image, name=args.name, command=args.argv or None,
                          entrypoint=args.entrypoint, env=env_pairs(args.env),
                          workdir=args.workdir, user=args.user, hostname=args.hostname,
                          network=network, ports=parse_publish(args.publish) or None,
                          privileged=args.privileged, cap_add=args.cap_add,
                          cap_drop=args.cap_drop, security_opt=args.security_opt,
                          sysctls=sysctls(args.sysctl))


PS_HEADER = f"{'CONTAINER ID':<14}{'NAME':<28}{'IMAGE':<32}{'STATE':<9}{'PORTS':<30}OWNER"


def ps_row(cid: str, name: str, image: str, status: str, ports: str, owner: str) -> str:
    return (f"{cid[:12]:<14}{name[:27]:<28}{image[:31]:<32}{status:<9}{ports:<29} "
            f"{owner}")
