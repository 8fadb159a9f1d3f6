"""Loading a project as docker compose does: which files, which variables, interpolation, the
override rules, profiles and the project name, then every service checked into the typed model
(model.py). Anything compose accepts that we do not do is ``NotSupported`` with file:line."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotSupported
from ..runspec import (
    HOST_GATEWAY,
    byte_size,
    check_subpath,
    check_volume_name,
    stop_signal_name,
)
from ..security import capability_name, check_security_opt, check_sysctl
from . import keys
from .merge import key_value_map, merge_files, names_map
from .model import (
    CONDITIONS,
    Build,
    DependsOn,
    Healthcheck,
    Limits,
    NetworkDef,
    Port,
    Project,
    Service,
    ServiceNetwork,
    ServiceVolume,
    VolumeDef,
)
from .source import ComposeFileError, Mark, PathKey, nearest, read
from .variables import Variables, interpolate, read_env_file

FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_NAMES = ("compose.override.yaml", "compose.override.yml",
                  "docker-compose.override.yaml", "docker-compose.override.yml")
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def default_files(directory: Path) -> list[Path]:
    """The file docker compose picks in ``directory``, plus its override file if present."""
    for name in FILE_NAMES:
        if (directory / name).is_file():
            chosen = [directory / name]
            for override in OVERRIDE_NAMES:
                if (directory / override).is_file():
                    chosen.append(directory / override)
                    break
            return chosen
    raise ComposeFileError(f"no compose file in {directory} (looked for "
                           f"{', '.join(FILE_NAMES)})")


def load(files: Sequence[str | os.PathLike[str]] = (), *, directory: Path | None = None,
         project: str | None = None, profiles: Iterable[str] = (),
         env: Mapping[str, str] | None = None,
         environ: Mapping[str, str] | None = None, unique: bool = False) -> Project:
    """Load and resolve a project.

    ``files`` resolve against ``directory`` (default: the current one); none given means the
    files of ``COMPOSE_FILE``, else the default file there. ``env`` wins over ``environ``
    (default: the process's), which wins over the ``.env`` beside the first file.
    ``unique``: without ``project``, the name compose would derive gets a random suffix, so
    two stacks from one directory never merge.
    """
    base = Path(directory or Path.cwd())
    if not files:  # COMPOSE_FILE, as compose reads it: env=, the environment, ./.env
        here = base / ".env"
        chosen = Variables(read_env_file(here) if here.is_file() else {},
                           os.environ if environ is None else environ, env or {})
        listed = chosen.get("COMPOSE_FILE")
        if listed:
            separator = chosen.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
            files = [f for f in listed.split(separator) if f]
    paths = [(base / f).resolve() for f in files] if files else default_files(base)
    working_dir = paths[0].parent
    dotenv_path = working_dir / ".env"
    dotenv = read_env_file(dotenv_path) if dotenv_path.is_file() else {}
    variables = Variables(dotenv, os.environ if environ is None else environ, env or {})
    data: dict[str, Any] = {}
    marks: dict[PathKey, Mark] = {}
    for path in paths:
        source = read(path)
        resolved = interpolate(source.data, variables.get, source.mark)
        data, marks = merge_files(data, resolved, marks, source.marks)
    chosen = tuple(profiles)
    if not chosen and variables.get("COMPOSE_PROFILES"):
        chosen = tuple(p for p in (variables.get("COMPOSE_PROFILES") or "").split(",") if p)
    return _Loader(data, marks, paths, working_dir, variables).project(project, chosen, unique)


class _Loader:
    def __init__(self, data: dict[str, Any], marks: dict[PathKey, Mark], paths: list[Path],
                 working_dir: Path, variables: Variables):
        self.data = data
        self.marks = marks
        self.paths = paths
        self.working_dir = working_dir
        self.variables = variables

    # -- errors -----------------------------------------------------------------------------
    def mark(self, key: PathKey) -> Mark:
        return nearest(self.marks, key, Mark(str(self.paths[0]), 1))

    def error(self, key: PathKey, message: str) -> ComposeFileError:
        return ComposeFileError(f"{_dotted(key)}: {message}", self.mark(key))

    def unsupported(self, key: PathKey, why: str = "") -> NotSupported:
        service = f"service {key[1]!r}: " if len(key) > 2 and key[0] == "services" else ""
        name = _dotted(key[2:] if service else key)
        return NotSupported(f"{self.mark(key)}: {service}compose key {name!r} is not "
                            f"supported yet{': ' + why if why else ''}")

    def check_keys(self, value: dict[str, Any], key: PathKey, known: set[str],
                   supported: set[str] | None = None) -> None:
        for k in value:
            if k.startswith("x-"):
                continue
            if k not in known:
                raise self.error((*key, k), f"additional property {k!r} is not allowed")
            if supported is not None and k not in supported:
                raise self.unsupported((*key, k))

    def mapping(self, value: Any, key: PathKey) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, not {_kind(value)}")
        return value

    # -- the project ------------------------------------------------------------------------
    def project(self, name: str | None, profiles: tuple[str, ...],
                unique: bool = False) -> Project:
        self.check_keys(self.data, (), keys.TOP_LEVEL, None)
        for k in self.data:
            if k in keys.TOP_LEVEL - keys.TOP_LEVEL_SUPPORTED and self.data[k]:
                raise self.unsupported((k,))
        project = self.project_name(name)
        if unique and name is None:
            project = f"{project}-{secrets.token_hex(3)}"
        raw = self.mapping(self.data.get("services"), ("services",))
        if not raw:
            raise ComposeFileError("no service is defined", self.mark(("services",)))
        services: dict[str, Service] = {}
        disabled: dict[str, tuple[str, ...]] = {}
        for service_name, body in raw.items():
            service = self.service(service_name, body)
            if service.profiles and not ("*" in profiles or set(service.profiles) & set(profiles)):
                disabled[service_name] = service.profiles
            else:
                services[service_name] = service
        for service in services.values():
            for dep in service.depends_on:
                where = ("services", service.name, "depends_on", dep.service)
                if dep.service in disabled:
                    if dep.required:
                        raise self.error(where, f"service {service.name!r} depends on "
                                         f"{dep.service!r}, which profile(s) "
                                         f"{', '.join(disabled[dep.service])} leave out")
                elif dep.service not in services:
                    raise self.error(where, f"depends on undefined service {dep.service!r}")
        self.check_cycles(services)
        networks = self.networks(project, services)
        volumes = self.top_volumes(project, services)
        return Project(name=project, working_dir=self.working_dir, files=tuple(self.paths),
                       services=services, networks=networks, disabled=disabled,
                       volumes=volumes)

    def project_name(self, given: str | None) -> str:
        if given is not None:
            if not _PROJECT_NAME.fullmatch(given):
                raise ComposeFileError(
                    f"project name {given!r} must contain only lowercase letters, digits, "
                    "dashes and underscores, and begin with a lowercase letter or digit")
            return given
        for candidate in (self.variables.get("COMPOSE_PROJECT_NAME"), self.data.get("name"),
                          self.working_dir.name):
            if candidate:
                normalised = re.sub(r"[^a-z0-9_-]", "", str(candidate).lower()).lstrip("_-")
                if normalised:
                    return normalised
        raise ComposeFileError(f"cannot derive a project name from {self.working_dir}: pass one")

    def check_cycles(self, services: Mapping[str, Service]) -> None:
        state: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = [*trail[trail.index(name):], name]
                raise self.error(("services", name, "depends_on"),
                                 "dependency cycle: " + " -> ".join(cycle))
            state[name] = 1
            for dep in services[name].depends_on:
                if dep.service in services:
                    visit(dep.service, [*trail, name])
            state[name] = 2

        for name in services:
            visit(name, [])

    def networks(self, project: str, services: Mapping[str, Service]) -> dict[str, NetworkDef]:
        raw = self.mapping(self.data.get("networks"), ("networks",))
        result: dict[str, NetworkDef] = {}
        for key, body in raw.items():
            where = ("networks", key)
            body = self.mapping(body, where)
            self.check_keys(body, where, keys.NETWORK, keys.NETWORK_SUPPORTED)
            if body.get("driver", "bridge") != "bridge":
                raise self.unsupported((*where, "driver"), "only bridge networks")
            internal = self.boolean(body.get("internal", False), (*where, "internal"))
            result[key] = NetworkDef(key, str(body.get("name") or f"{project}_{key}"),
                                     self.mark(where), internal)
        used = {n.network for s in services.values() for n in s.networks}
        if "default" in used and "default" not in result:
            result["default"] = NetworkDef("default", f"{project}_default", None)
        for service in services.values():
            for membership in service.networks:
                if membership.network not in result:
                    raise self.error(("services", service.name, "networks", membership.network),
                                     f"service {service.name!r} refers to undefined network "
                                     f"{membership.network!r}")
        return result

    def top_volumes(self, project: str, services: Mapping[str, Service]) -> dict[str, VolumeDef]:
        raw = self.mapping(self.data.get("volumes"), ("volumes",))
        result: dict[str, VolumeDef] = {}
        for key, body in raw.items():
            where = ("volumes", key)
            body = self.mapping(body, where)
            self.check_keys(body, where, keys.TOP_VOLUME, keys.TOP_VOLUME_SUPPORTED)
            if body.get("driver", "local") != "local":
                raise self.unsupported((*where, "driver"), "only local volumes")
            external = self.boolean(body.get("external", False), (*where, "external"))
            if external and set(body) - {"external", "name"}:
                other = sorted(set(body) - {"external", "name"})[0]
                raise self.error((*where, other), f"volume {key!r} is external: {other!r} "
                                 "cannot be set (the volume exists already)")
            name = str(body.get("name") or (key if external else f"{project}_{key}"))
            try:
                check_volume_name(name, f"volume {key!r}")
            except ConfigError as exc:
                raise self.error(where, str(exc)) from None
            result[key] = VolumeDef(key, name, self.mark(where), external)
        for service in services.values():
            for i, volume in enumerate(service.volumes):
                if volume.type == "volume" and volume.source is not None and \
                        volume.source not in result:
                    raise self.error(("services", service.name, "volumes", i),
                                     f"service {service.name!r} refers to undefined volume "
                                     f"{volume.source!r}")
        return result

    # -- a service --------------------------------------------------------------------------
    def service(self, name: str, body: Any) -> Service:
        key: PathKey = ("services", name)
        body = self.mapping(body, key)
        self.check_keys(body, key, keys.SERVICE, keys.SERVICE_SUPPORTED)
        if not body.get("image") and not body.get("build"):
            raise self.error(key, f"service {name!r} has neither an image nor a build context")
        replicas = self.replicas(body, key)
        limits, replicas = self.deploy(body, key, replicas)
        networks = self.service_networks(body.get("networks"), (*key, "networks"))
        return Service(
            name=name, mark=self.mark(key),
            image=self.optional_str(body, key, "image"),
            build=self.build(body.get("build"), (*key, "build")) if "build" in body else None,
            command=self.argv(body, key, "command"),
            entrypoint=self.argv(body, key, "entrypoint"),
            environment=self.environment(body, key),
            ports=tuple(self.ports(body.get("ports"), (*key, "ports"))),
            expose=tuple(str(p) for p in self.sequence(body.get("expose"), (*key, "expose"))),
            depends_on=self.depends_on(body.get("depends_on"), (*key, "depends_on")),
            healthcheck=self.healthcheck(body.get("healthcheck"), (*key, "healthcheck")),
            networks=networks,
            volumes=self.volumes(body.get("volumes"), (*key, "volumes")),
            tmpfs=self.tmpfs(body.get("tmpfs"), (*key, "tmpfs")),
            working_dir=self.optional_str(body, key, "working_dir"),
            user=self.optional_str(body, key, "user"),
            hostname=self.optional_str(body, key, "hostname"),
            init=self.optional_bool(body, key, "init"),
            read_only=self.optional_bool(body, key, "read_only"),
            limits=limits, replicas=replicas,
            profiles=tuple(str(p) for p in self.sequence(body.get("profiles"),
                                                          (*key, "profiles"))),
            stop_grace_period=(self.duration(body["stop_grace_period"],
                                             (*key, "stop_grace_period"))
                               if body.get("stop_grace_period") is not None else None),
            privileged=self.optional_bool(body, key, "privileged"),
            cap_add=self.capabilities(body, key, "cap_add"),
            cap_drop=self.capabilities(body, key, "cap_drop"),
            security_opt=self.security_opt(body, key),
            sysctls=self.sysctls(body, key),
            shm_size=(self.byte_size(body["shm_size"], (*key, "shm_size"))
                      if body.get("shm_size") is not None else None),
            extra_hosts=self.extra_hosts(body, key),
            stop_signal=self.stop_signal(body, key),
            labels=self.labels(body, key),
        )

    # -- the privilege boundary and /etc/hosts: checked here as run() checks them, so a bad
    # -- value points at its line rather than at the stack's start
    def capabilities(self, body: dict[str, Any], key: PathKey, name: str) -> tuple[str, ...]:
        result: list[str] = []
        for i, item in enumerate(self.sequence(body.get(name), (*key, name))):
            try:
                capability = capability_name(_scalar_str(item), name)
            except ConfigError as exc:
                raise self.error((*key, name, i), str(exc)) from None
            if capability not in result:
                result.append(capability)
        return tuple(result)

    def security_opt(self, body: dict[str, Any], key: PathKey) -> tuple[str, ...]:
        result = []
        for i, item in enumerate(self.sequence(body.get("security_opt"),
                                               (*key, "security_opt"))):
            where = (*key, "security_opt", i)
            if not isinstance(item, str):
                raise self.error(where, f"must be a string, not {_kind(item)}")
            try:
                option, value = check_security_opt(item)
            except ConfigError as exc:
                raise self.error(where, str(exc)) from None
            if option == "seccomp" and value != "unconfined":
                path = self.working_dir / os.path.expanduser(value)
                if not path.is_file():
                    raise self.error(where, f"seccomp profile {path} not found")
                item = f"seccomp={path.resolve()}"  # against the project's directory
            result.append(item)
        return tuple(result)

    def sysctls(self, body: dict[str, Any], key: PathKey) -> dict[str, str]:
        where = (*key, "sysctls")
        result: dict[str, str] = {}
        for name, value in self.mapping(key_value_map(body.get("sysctls")), where).items():
            if value is None or isinstance(value, (dict, list)):
                raise self.error((*where, name), f"must be a value, not {_kind(value)}")
            try:
                checked = check_sysctl(name, _scalar_str(value), host_network=False)
            except ConfigError as exc:
                raise self.error((*where, name), str(exc)) from None
            result[checked[0]] = checked[1]
        return result

    def labels(self, body: dict[str, Any], key: PathKey) -> dict[str, str]:
        where = (*key, "labels")
        result: dict[str, str] = {}
        for name, value in self.mapping(key_value_map(body.get("labels")), where).items():
            if isinstance(value, (dict, list)):
                raise self.error((*where, name), f"must be a string, not {_kind(value)}")
            if str(name).startswith("pycontain."):
                raise self.error((*where, name), "labels under 'pycontain.' are the engine's "
                                 "own")
            result[str(name)] = _scalar_str(value)
        return result

    def stop_signal(self, body: dict[str, Any], key: PathKey) -> str | None:
        value = self.optional_str(body, key, "stop_signal")
        try:
            return stop_signal_name("stop_signal", value)
        except ConfigError as exc:
            raise self.error((*key, "stop_signal"), str(exc)) from None

    def extra_hosts(self, body: dict[str, Any], key: PathKey) -> dict[str, str]:
        where = (*key, "extra_hosts")
        result: dict[str, str] = {}
        for name, value in self.mapping(key_value_map(body.get("extra_hosts")), where).items():
            if isinstance(value, list) and len(value) == 1:
                value = value[0]  # compose's map form may list addresses
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
                raise self.error((*where, name), f"expected 'NAME:ADDRESS' or 'NAME=ADDRESS', "
                                 f"not {name!r}: {value!r}")
            if value.strip() == HOST_GATEWAY:  # the engine puts the host's address there
                result[str(name)] = HOST_GATEWAY
                continue
            try:
                result[str(name)] = str(ipaddress.ip_address(value.strip().strip("[]")))
            except ValueError:
                raise self.error((*where, name), f"{value!r} is not an IPv4 or IPv6 "
                                 f"address (nor {HOST_GATEWAY})") from None
        return result

    def sequence(self, value: Any, key: PathKey) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {_kind(value)}")
        return value

    def optional_str(self, body: dict[str, Any], key: PathKey, name: str) -> str | None:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, (dict, list, bool)):
            raise self.error((*key, name), f"must be a string, not {_kind(value)}")
        return str(value)

    def optional_bool(self, body: dict[str, Any], key: PathKey, name: str) -> bool | None:
        value = body.get(name)
        if value is None:
            return None
        return self.boolean(value, (*key, name))

    def boolean(self, value: Any, key: PathKey) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "y", "n",
                                                        "on", "off"):
            return value.lower() in ("true", "yes", "y", "on")
        raise self.error(key, f"must be a boolean, not {value!r}")

    def integer(self, value: Any, key: PathKey) -> int:
        if isinstance(value, bool):
            raise self.error(key, f"must be an integer, not {value!r}")
        try:
            return int(str(value))
        except ValueError:
            raise self.error(key, f"must be an integer, not {value!r}") from None

    def argv(self, body: dict[str, Any], key: PathKey, name: str) -> tuple[str, ...] | None:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))  # compose splits words; no /bin/sh -c
            except ValueError as exc:
                raise self.error((*key, name), f"cannot split {value!r} into words: "
                                 f"{exc}") from None
        if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            return tuple(_scalar_str(v) for v in value)
        raise self.error((*key, name), f"must be a string or a list of strings, not "
                         f"{_kind(value)}")

    def environment(self, body: dict[str, Any], key: PathKey) -> dict[str, str]:
        result: dict[str, str] = {}
        files = body.get("env_file")
        entries = [files] if isinstance(files, (str, dict)) else self.sequence(
            files, (*key, "env_file"))
        for i, entry in enumerate(entries):
            where = (*key, "env_file", i) if isinstance(files, list) else (*key, "env_file")
            required = True
            if isinstance(entry, dict):
                self.check_keys(entry, where, {"path", "required", "format"},
                                {"path", "required"})
                required = self.boolean(entry.get("required", True), (*where, "required"))
                entry = entry.get("path")
            if not isinstance(entry, str):
                raise self.error(where, "must be a path")
            path = self.working_dir / entry
            if not path.is_file():
                if required:
                    raise self.error(where, f"env file {path} not found")
                continue
            result.update(read_env_file(path))
        raw = key_value_map(body.get("environment"))
        for k, v in self.mapping(raw, (*key, "environment")).items():
            if v is None:
                found = self.variables.get(k)  # a bare name takes the variable's value
                if found is not None:
                    result[k] = found
                else:
                    result.pop(k, None)
            elif isinstance(v, (dict, list)):
                raise self.error((*key, "environment", k), f"must be a string, not {_kind(v)}")
            else:
                result[k] = _scalar_str(v)
        return result

    def build(self, value: Any, key: PathKey) -> Build:
        if isinstance(value, str):
            value = {"context": value}
        value = self.mapping(value, key)
        self.check_keys(value, key, keys.BUILD, keys.BUILD_SUPPORTED)
        args = key_value_map(value.get("args"))
        resolved_args: dict[str, str] = {}
        for k, v in self.mapping(args, (*key, "args")).items():
            if v is None:
                v = self.variables.get(k)
                if v is None:
                    continue
            resolved_args[k] = _scalar_str(v)
        context = self.working_dir / str(value.get("context") or ".")
        if not context.is_dir():
            raise self.error((*key, "context"), f"build context {context} is not a directory")
        return Build(context=context.resolve(), dockerfile=self.optional_str(value, key,
                                                                            "dockerfile"),
                     args=resolved_args, target=self.optional_str(value, key, "target"))

    def ports(self, value: Any, key: PathKey) -> list[Port]:
        result: list[Port] = []
        for i, item in enumerate(self.sequence(value, key)):
            where = (*key, i)
            if isinstance(item, dict):
                self.check_keys(item, where, keys.PORT, {"target", "published", "host_ip",
                                                         "protocol", "mode"})
                if "target" not in item:
                    raise self.error(where, "a port needs a target")
                published = item.get("published")
                ports = [Port(self.integer(item["target"], (*where, "target")),
                              self.integer(published, (*where, "published"))
                              if published not in (None, "") else None,
                              item.get("host_ip"), str(item.get("protocol") or "tcp"))]
            elif isinstance(item, (int, str)) and not isinstance(item, bool):
                ports = self.short_port(str(item), where)
            else:
                raise self.error(where, f"a port must be a string, a number or a mapping, not "
                                 f"{_kind(item)}")
            for port in ports:
                if port.protocol != "tcp":
                    raise self.unsupported(where, f"{port.protocol} ports (only tcp is "
                                           "published)")
            result.extend(ports)
        return result

    def short_port(self, text: str, where: PathKey) -> list[Port]:
        spec, _, protocol = text.partition("/")
        host_ip = None
        if spec.startswith("["):
            end = spec.find("]")
            host_ip, spec = spec[1:end], spec[end + 2:]
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip, published, target = parts
        elif len(parts) == 2:
            published, target = parts
        elif len(parts) == 1:
            published, target = "", parts[0]
        else:
            raise self.error(where, f"invalid port {text!r}")
        try:
            targets = _port_range(target)
            publisheds = _port_range(published) if published else [None] * len(targets)
        except ValueError:
            raise self.error(where, f"invalid port {text!r}") from None
        if len(publisheds) != len(targets):
            raise self.error(where, f"invalid port {text!r}: the ranges differ in length")
        return [Port(t, p, host_ip or None, protocol or "tcp")
                for t, p in zip(targets, publisheds, strict=True)]

    def depends_on(self, value: Any, key: PathKey) -> tuple[DependsOn, ...]:
        result = []
        for dep, body in self.mapping(names_map(value), key).items():
            where = (*key, dep)
            body = self.mapping(body, where)
            self.check_keys(body, where, keys.DEPENDS_ON)
            condition = str(body.get("condition", "service_started"))
            if condition not in CONDITIONS:
                raise self.error((*where, "condition"), f"unknown condition {condition!r} "
                                 f"(one of {', '.join(CONDITIONS)})")
            result.append(DependsOn(dep, condition,
                                    self.boolean(body.get("required", True),
                                                 (*where, "required")),
                                    self.boolean(body.get("restart", False),
                                                 (*where, "restart"))))
        return tuple(result)

    def healthcheck(self, value: Any, key: PathKey) -> Healthcheck | None:
        if value is None:
            return None
        value = self.mapping(value, key)
        self.check_keys(value, key, keys.HEALTHCHECK)
        disable = self.boolean(value.get("disable", False), (*key, "disable"))
        test = value.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if disable:
            test = ["NONE"]
        if not isinstance(test, list) or not test or any(isinstance(t, (dict, list))
                                                         for t in test):
            raise self.error((*key, "test"), "must be a string or a list starting with CMD, "
                             "CMD-SHELL or NONE")
        kind = str(test[0])
        if kind == "CMD":
            argv = tuple(_scalar_str(t) for t in test[1:])
        elif kind == "CMD-SHELL":
            argv = ("/bin/sh", "-c", " ".join(_scalar_str(t) for t in test[1:]))
        elif kind == "NONE":
            argv = ()
        else:
            raise self.error((*key, "test"), f"must start with CMD, CMD-SHELL or NONE, not "
                             f"{kind!r}")

        def seconds(name: str) -> float | None:
            return (self.duration(value[name], (*key, name)) if value.get(name) is not None
                    else None)

        retries = value.get("retries")
        return Healthcheck(
            test=argv, kind=kind, interval=seconds("interval"), timeout=seconds("timeout"),
            retries=None if retries is None else self.integer(retries, (*key, "retries")),
            start_period=seconds("start_period"), start_interval=seconds("start_interval"),
            disable=disable or kind == "NONE", mark=self.mark(key))

    def service_networks(self, value: Any, key: PathKey) -> tuple[ServiceNetwork, ...]:
        if value is None:
            return (ServiceNetwork("default"),)
        result = []
        for net, body in self.mapping(names_map(value), key).items():
            where = (*key, net)
            body = self.mapping(body, where)
            self.check_keys(body, where, keys.SERVICE_NETWORK, keys.SERVICE_NETWORK_SUPPORTED)
            aliases = tuple(str(a) for a in self.sequence(body.get("aliases"),
                                                           (*where, "aliases")))
            result.append(ServiceNetwork(net, aliases))
        return tuple(result)

    def volumes(self, value: Any, key: PathKey) -> tuple[ServiceVolume, ...]:
        result = []
        for i, item in enumerate(self.sequence(value, key)):
            where = (*key, i)
            if isinstance(item, str):
                parts = item.split(":")
                if len(parts) == 1:  # an anonymous volume
                    result.append(ServiceVolume("volume", self.target(item, where)))
                    continue
                source, target = parts[0], self.target(parts[1], where)
                mode = parts[2] if len(parts) > 2 else "rw"
                modes = set(mode.split(","))
                bind = source.startswith((".", "/", "~"))
                if modes - {"ro", "rw"} - (set() if bind else {"nocopy"}):
                    raise self.unsupported(where, f"mount mode {mode!r}")
                read_only = "ro" in modes
                if bind:
                    result.append(ServiceVolume("bind", target, self.host_path(source),
                                                read_only))
                else:
                    result.append(ServiceVolume("volume", target, source, read_only,
                                                nocopy="nocopy" in modes))
                continue
            item = self.mapping(item, where)
            self.check_keys(item, where, keys.VOLUME, {"type", "source", "target", "read_only",
                                                       "tmpfs", "volume", "bind"})
            if "volume" in item and item.get("type") != "volume":
                raise self.error((*where, "volume"), "volume options need type: volume")
            if "bind" in item and item.get("type") != "bind":
                raise self.error((*where, "bind"), "bind options need type: bind")
            kind = item.get("type")
            if kind not in ("bind", "tmpfs", "volume"):
                raise self.unsupported((*where, "type"), f"volumes of type {kind!r}")
            if not item.get("target"):
                raise self.error(where, "a volume needs a target")
            read_only = self.boolean(item.get("read_only", False), (*where, "read_only"))
            if kind == "volume":
                source = item.get("source")
                options = self.mapping(item.get("volume"), (*where, "volume"))
                self.check_keys(options, (*where, "volume"), keys.VOLUME_VOLUME,
                                keys.VOLUME_VOLUME_SUPPORTED)
                subpath = options.get("subpath")
                if subpath is not None:
                    subpath = _scalar_str(subpath)
                    try:
                        check_subpath(subpath, "volume")
                    except ConfigError as exc:
                        raise self.error((*where, "volume", "subpath"),
                                         str(exc).removeprefix("volume: ")) from None
                    if not source:
                        raise self.error((*where, "volume", "subpath"), "an anonymous volume "
                                         "is empty: it has no subpath to mount")
                result.append(ServiceVolume(
                    "volume", self.target(str(item["target"]), where),
                    str(source) if source else None, read_only,
                    nocopy=self.boolean(options.get("nocopy", False),
                                        (*where, "volume", "nocopy")),
                    subpath=subpath))
            elif kind == "bind":
                if not item.get("source"):
                    raise self.error(where, "a bind mount needs a source")
                options = self.mapping(item.get("bind"), (*where, "bind"))
                self.check_keys(options, (*where, "bind"), keys.VOLUME_BIND,
                                keys.VOLUME_BIND_SUPPORTED)
                result.append(ServiceVolume(
                    "bind", str(item["target"]), self.host_path(str(item["source"])),
                    read_only, create_host_path=self.boolean(
                        options.get("create_host_path", True),
                        (*where, "bind", "create_host_path"))))
            else:
                tmpfs = self.mapping(item.get("tmpfs"), (*where, "tmpfs"))
                self.check_keys(tmpfs, (*where, "tmpfs"), {"size", "mode"}, {"size"})
                size = (self.byte_size(tmpfs["size"], (*where, "tmpfs", "size"))
                        if "size" in tmpfs else None)
                result.append(ServiceVolume("tmpfs", str(item["target"]), None, read_only,
                                            size))
        return tuple(result)

    def target(self, path: str, where: PathKey) -> str:
        if not path.startswith("/"):
            raise self.error(where, f"the container path {path!r} must be absolute")
        return path

    def host_path(self, source: str) -> str:
        return str((self.working_dir / os.path.expanduser(source)).resolve())

    def tmpfs(self, value: Any, key: PathKey) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        return tuple(str(v) for v in self.sequence(value, key))

    def replicas(self, body: dict[str, Any], key: PathKey) -> int:
        if body.get("scale") is None:
            return 1
        return self.integer(body["scale"], (*key, "scale"))

    def deploy(self, body: dict[str, Any], key: PathKey, replicas: int) -> tuple[Limits, int]:
        memory = (self.byte_size(body["mem_limit"], (*key, "mem_limit"))
                  if body.get("mem_limit") is not None else None)
        cpus = (self.cpus(body["cpus"], (*key, "cpus")) if body.get("cpus") is not None
                else None)
        pids = (self.integer(body["pids_limit"], (*key, "pids_limit"))
                if body.get("pids_limit") is not None else None)
        deploy = self.mapping(body.get("deploy"), (*key, "deploy"))
        where = (*key, "deploy")
        self.check_keys(deploy, where, keys.DEPLOY, keys.DEPLOY_SUPPORTED)
        if deploy.get("replicas") is not None:
            count = self.integer(deploy["replicas"], (*where, "replicas"))
            if body.get("scale") is not None and count != replicas:
                raise self.error((*where, "replicas"), f"deploy.replicas ({count}) and scale "
                                 f"({replicas}) disagree")
            replicas = count
        resources = self.mapping(deploy.get("resources"), (*where, "resources"))
        self.check_keys(resources, (*where, "resources"), keys.RESOURCES, {"limits"})
        limits = self.mapping(resources.get("limits"), (*where, "resources", "limits"))
        lw = (*where, "resources", "limits")
        self.check_keys(limits, lw, keys.LIMITS)
        if limits.get("memory") is not None:
            memory = self.byte_size(limits["memory"], (*lw, "memory"))
        if limits.get("cpus") is not None:
            cpus = self.cpus(limits["cpus"], (*lw, "cpus"))
        if limits.get("pids") is not None:
            pids = self.integer(limits["pids"], (*lw, "pids"))
        if replicas < 0:
            raise self.error((*key, "scale"), f"cannot run {replicas} replicas")
        return Limits(memory, cpus, pids), replicas

    def cpus(self, value: Any, key: PathKey) -> float:
        try:
            return float(str(value))
        except ValueError:
            raise self.error(key, f"must be a number of CPUs, not {value!r}") from None

    def byte_size(self, value: Any, key: PathKey) -> int:
        try:  # the run request's reader: the same units as run(memory=...)
            return byte_size(value)
        except ValueError:
            raise self.error(key, f"must be a size such as 256m, not {value!r}") from None

    def duration(self, value: Any, key: PathKey) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)  # compose reads a bare number as seconds
        text = str(value).strip()
        units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise self.error(key, f"must be a duration such as 10s or 1m30s, not {value!r}")
        return sum(float(n) * units[u] for n, u in parts)


def _port_range(text: str) -> list[int]:
    first, sep, last = text.partition("-")
    low = int(first)
    high = int(last) if sep else low
    if not 0 < low <= high <= 65535:
        raise ValueError(text)
    return list(range(low, high + 1))


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                       type(value).__name__)


def _dotted(key: PathKey) -> str:
    return ".".join(str(k) for k in key)
