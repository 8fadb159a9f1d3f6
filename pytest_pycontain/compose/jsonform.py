"""The resolved project in the form ``docker compose config --format json`` prints, so the two
can be put side by side: durations as Go writes them, published ports as strings, sizes in
bytes, ``command``/``entrypoint`` always present (null when the image decides)."""

from __future__ import annotations

from typing import Any

from .model import Healthcheck, Port, Project, Service, ServiceVolume


def config_json(project: Project) -> dict[str, Any]:
    """The project as a JSON-ready dict."""
    result: dict[str, Any] = {"name": project.name,
                              "services": {name: _service(project.services[name])
                                           for name in sorted(project.services)}}
    if project.networks:
        result["networks"] = {key: {"name": net.name, "ipam": {}}
                              | ({"internal": True} if net.internal else {})
                              for key, net in sorted(project.networks.items())}
    if project.volumes:
        result["volumes"] = {key: {"name": vol.name} | ({"external": True} if vol.external
                                                         else {})
                             for key, vol in sorted(project.volumes.items())}
    return result


def _service(service: Service) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if service.build is not None:
        build: dict[str, Any] = {"context": str(service.build.context),
                                 "dockerfile": service.build.dockerfile or "Dockerfile"}
        if service.build.args:
            build["args"] = dict(service.build.args)
        if service.build.target:
            build["target"] = service.build.target
        out["build"] = build
    if service.cap_add:
        out["cap_add"] = list(service.cap_add)
    if service.cap_drop:
        out["cap_drop"] = list(service.cap_drop)
    out["command"] = list(service.command) if service.command is not None else None
    if service.depends_on:
        out["depends_on"] = {d.service: {"condition": d.condition, "required": d.required}
                             | ({"restart": True} if d.restart else {})
                             for d in service.depends_on}
    limits = {k: v for k, v in (("cpus", service.limits.cpus),
                                ("memory", None if service.limits.memory is None
                                 else str(service.limits.memory)),
                                ("pids", service.limits.pids)) if v is not None}
    if limits or service.replicas != 1:
        deploy: dict[str, Any] = {}
        if service.replicas != 1:
            deploy["replicas"] = service.replicas
        if limits:
            deploy["resources"] = {"limits": limits}
        out["deploy"] = deploy
    out["entrypoint"] = list(service.entrypoint) if service.entrypoint is not None else None
    if service.environment:
        out["environment"] = dict(sorted(service.environment.items()))
    if service.expose:
        out["expose"] = list(service.expose)
    if service.extra_hosts:
        out["extra_hosts"] = sorted(f"{k}={v}" for k, v in service.extra_hosts.items())
    if service.healthcheck is not None:
        out["healthcheck"] = _healthcheck(service.healthcheck)
    if service.hostname:
        out["hostname"] = service.hostname
    if service.image:
        out["image"] = service.image
    if service.init is not None:
        out["init"] = service.init
    if service.labels:
        out["labels"] = dict(sorted(service.labels.items()))
    out["networks"] = {n.network: ({"aliases": list(n.aliases)} if n.aliases else None)
                       for n in service.networks}
    if service.ports:
        out["ports"] = [_port(p) for p in service.ports]
    if service.profiles:
        out["profiles"] = list(service.profiles)
    if service.privileged is not None:
        out["privileged"] = service.privileged
    if service.read_only is not None:
        out["read_only"] = service.read_only
    if service.security_opt:
        out["security_opt"] = list(service.security_opt)
    if service.shm_size is not None:
        out["shm_size"] = str(service.shm_size)
    if service.stop_grace_period is not None:
        out["stop_grace_period"] = go_duration(service.stop_grace_period)
    if service.stop_signal is not None:
        out["stop_signal"] = service.stop_signal
    if service.sysctls:
        out["sysctls"] = dict(sorted(service.sysctls.items()))
    if service.tmpfs:
        out["tmpfs"] = list(service.tmpfs)
    if service.user:
        out["user"] = service.user
    if service.volumes:
        out["volumes"] = [_volume(v) for v in service.volumes]
    if service.working_dir:
        out["working_dir"] = service.working_dir
    return out


def _healthcheck(check: Healthcheck) -> dict[str, Any]:
    if check.disable:
        return {"disable": True}
    test = ["CMD", *check.test] if check.kind == "CMD" else ["CMD-SHELL", check.test[2]]
    out: dict[str, Any] = {"test": test}
    for name in ("timeout", "interval", "retries", "start_period", "start_interval"):
        value = getattr(check, name)
        if value is not None:
            out[name] = value if name == "retries" else go_duration(value)
    return out


def _port(port: Port) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": "ingress"}
    if port.host_ip:
        out["host_ip"] = port.host_ip
    out["target"] = port.target
    if port.published is not None:
        out["published"] = str(port.published)
    out["protocol"] = port.protocol
    return out


def _volume(volume: ServiceVolume) -> dict[str, Any]:
    out: dict[str, Any] = {"type": volume.type}
    if volume.source:
        out["source"] = volume.source
    out["target"] = volume.target
    if volume.read_only:
        out["read_only"] = True
    if volume.type == "bind":
        out["bind"] = {"create_host_path": volume.create_host_path}
    if volume.type == "volume":
        out["volume"] = ({"nocopy": True} if volume.nocopy else {}) | (
            {"subpath": volume.subpath} if volume.subpath is not None else {})
    if volume.tmpfs_size is not None:
        out["tmpfs"] = {"size": volume.tmpfs_size}
    return out


def go_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` writes it: 1m30s, 500ms, 1.5s, 0s."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return _trim(ns / size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return text + _trim(rest / 1e9) + "s"


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")
