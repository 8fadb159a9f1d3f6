"""``pycontain info``: which engine runs here and in which mode (root, rootless, docker), and
for rootless mode each piece it needs -- the id mapping, overlayfs, cgroup delegation, the way
out -- with the fix for what is missing. Cheap facts only: nothing is started."""

from __future__ import annotations

import os
from typing import Any

from . import idmap
from .backends import choose


def report(backend: str = "auto") -> list[str]:
    """The lines ``pycontain info`` prints."""
    from .config import default_cache_dir, default_state_dir

    chosen, reason = choose(backend)
    rootless = chosen == "native" and idmap.host_uid() != 0
    mode = "rootless" if rootless else ("root" if chosen == "native" else chosen)
    lines = [f"engine: {chosen} ({reason})", f"mode: {mode}"]
    fixes: list[str] = []
    if chosen != "native":
        fixes.extend(idmap.blockers() if idmap.host_uid() != 0 else [])
    if chosen == "native":
        lines.append(f"state: {default_state_dir()}")
        lines.append(f"cache: {default_cache_dir()}")
    if rootless:
        from .native.userns import pause_state

        mapping = idmap.plan()
        lines.append(f"id mapping: {mapping.describe()}")
        lines.append(f"user namespace: {pause_state()}")
        if mapping.why_single:
            fixes.append(f"images with files of users other than root: {mapping.why_single}")
        lines.append(f"overlay: overlayfs in the user namespace with userxattr (kernel "
                     f"{'.'.join(map(str, idmap.kernel_version()))})")
        from .native.cgroups import default_root

        delegated, why = idmap.cgroup_delegation(default_root())
        placed = idmap.delegated_cgroup(default_root())
        lines.append(f"cgroups: {why}" if delegated else
                     f"cgroups: each container's own under {placed} (delegated, without "
                     "every limit's controller)" if placed else "cgroups: not delegated")
        if delegated is None:
            fixes.append(f"memory, cpus and pids limits: {why}")
    elif chosen == "native":
        lines.append("overlay: overlayfs with trusted.* xattrs (root)")
        lines.append("cgroups: the host's (root)")
    if chosen == "native":
        from .native import egress

        pasta = egress.pasta_path()
        blocked = egress.tun_blocked()
        if pasta is None:
            lines.append("egress: none (pasta is not installed)")
            fixes.append(f"a way out for networks and RUN steps: install pasta "
                         f"(apt-get install {egress.PACKAGE})")
        elif blocked is not None:
            lines.append(f"egress: none ({pasta}, but {egress.TUN} cannot serve it)")
            fixes.append(f"a way out for networks and RUN steps: {blocked}")
        else:
            lines.append(f"egress: pasta ({pasta})")
    lines.extend(f"fix: {fix}" for fix in fixes)
    return lines


def cmd_info(args: Any) -> int:
    for line in report(args.backend or os.environ.get("PYCONTAIN_BACKEND") or "auto"):
        print(line)
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``info`` on the ``pycontain`` command."""
    p = subparsers.add_parser("info", help="the engine, its mode, and what this host lacks")
    p.add_argument("--backend", choices=("auto", "native", "docker"), default=None,
                   help="the backend to report on (default: as pytest would choose)")
    p.set_defaults(handler=cmd_info)
