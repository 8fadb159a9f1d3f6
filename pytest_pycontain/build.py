"""Build an image from a Dockerfile, giving what ``docker build`` (BuildKit) gives.

The parser (:mod:`.dockerfile`) hands over typed instructions; this module scopes ARG and ENV,
expands words (:mod:`.shell`), prunes the stages the target does not need, executes each
instruction, commits a layer for each RUN/COPY/ADD (and a WORKDIR that had to be made), and
writes the image config Docker would write. Every step has a BuildKit-like cache key
(:mod:`.buildcache`); a step already in the cache costs a file read.

RUN needs a container: ``run_step`` runs one (:class:`RunRequest` in, :class:`RunResult` out;
an engine passes its own, as the native one does with ``native.runner``), so this module stays
engine-agnostic. Builds are reproducible: times in the config and history are
SOURCE_DATE_EPOCH (a build arg or the environment) or the epoch. The stages a target needs
build at the same time where they do not need each other, as BuildKit builds them
(``Builder.build_target``); the image and the error reported are those of a build in order.
"""

from __future__ import annotations

import bz2
import contextlib
import datetime as _dt
import email.utils
import fnmatch
import gzip
import hashlib
import json
import lzma
import os
import posixpath
import re
import shlex
import shutil
import stat
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import dockerfile as dfp
from . import runmounts, shell
from .buildcache import BuildCache, file_checksum, step_key
from .dockerignore import DockerIgnore
from .dockerignore import load as load_ignore
from .errors import (
    BuildError,
    DockerfileError,
    ImageNotFound,
    NotSupported,
    PullError,
    PycontainError,
)
from .image import Image, Layer
from .imageconfig import DEFAULT_PATH, DEFAULT_SHELL, split_env
from .layers import LayeredFS, add_dir_layer

__all__ = ["RunRequest", "RunResult", "RunStep", "build"]

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM",
                 "BUILDOS", "BUILDARCH", "BUILDVARIANT")
# The files BuildKit bind-mounts into a RUN: not part of its layer unless the image had them
# (BuildKit removes these stubs; runc's /dev, /proc and /sys mount points stay, as here).
MOUNT_STUBS = ("etc/hosts", "etc/hostname", "etc/resolv.conf")
RUNTIME_MOUNT_POINTS = ("dev", "proc", "sys")
CACHE_VERSION = "pycontain-build-1"
MAX_PARALLEL_STAGES = 4  # stages built at once: they mostly wait (on RUN steps, pulls, disks)

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# The runner interface (RUN steps)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """One RUN to execute: ``argv`` in a container over ``lower_dirs`` (bottom first)."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    user: str
    workdir: str
    lower_dirs: tuple[str, ...]
    network: str = "default"  # its own namespace with a way out; "host"; "none" (loopback)
    where: str = ""
    mounts: tuple[tuple[str, str, bool], ...] = ()  # RUN --mount binds: (host, target, ro)
    tmpfs: tuple[tuple[str, str], ...] = ()  # (target, options)


@dataclass
class RunResult:
    """What a RUN left: exit code, output and the container's upper dir (the layer's diff).

    ``cleanup`` removes the container; the build calls it after tarring ``upper``.
    """

    exit_code: int
    output: str
    upper: Path
    cleanup: Callable[[], None] = lambda: None
    mountpoints: Sequence[str] = ()  # paths the engine made only to mount on


RunStep = Callable[[RunRequest], RunResult]


# ---------------------------------------------------------------------------------------------
# Build state
# ---------------------------------------------------------------------------------------------


@dataclass
class _StageState:
    """A stage as it is being built: the image so far and the scope of ARG/ENV."""

    stage: dfp.Stage
    config: dict[str, Any]
    layers: list[Layer]
    history: list[dict[str, Any]]
    key: str
    args: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # architecture, os, author...
    cmd_set: bool = False
    dirs: list[Path] | None = None

    def env(self) -> dict[str, str]:
        return split_env(self.config.get("Env") or [])

    def scope(self) -> dict[str, str]:
        """What ``$VAR`` sees: the stage's ARGs, overridden by its ENV (Docker's rule)."""
        return {**self.args, **self.env()}


def _epoch(build_args: Mapping[str, str]) -> int | None:
    text = build_args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH={text!r} is not a number of seconds") from None


def _timestamp(epoch: int) -> str:
    moment = _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _platform_args(store: Any) -> dict[str, str]:
    platform = getattr(store, "platform", None)
    os_name = getattr(platform, "os", None) or "linux"
    arch = getattr(platform, "architecture", None) or "amd64"
    variant = getattr(platform, "variant", None) or ""
    text = f"{os_name}/{arch}" + (f"/{variant}" if variant else "")
    values = {}
    for prefix in ("TARGET", "BUILD"):
        values.update({prefix + "PLATFORM": text, prefix + "OS": os_name,
                       prefix + "ARCH": arch, prefix + "VARIANT": variant})
    return values


def _json_words(words: Any) -> str:
    return json.dumps(list(words), separators=(",", ":"))


def _go_list(words: Any) -> str:
    return "[" + " ".join(words) + "]"


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------


class Builder:
    """One build: a parsed Dockerfile, its context, its options."""

    def __init__(self, store: Any, context: Path, dockerfile: Path, *,
                 build_args: Mapping[str, str] | None = None, no_cache: bool = False,
                 run_step: RunStep | None = None, progress: Progress | None = None,
                 secrets: Mapping[str, str | os.PathLike] | None = None):
        self.store = store
        self.secrets = dict(secrets or {})
        self.caches = runmounts.Caches(Path(store.root) / "run-cache")
        self.context = context
        self.dockerfile_path = dockerfile
        self.df = dfp.parse_file(dockerfile)
        self.name = str(dockerfile)
        self.progress = progress or (lambda _text: None)
        if self.df.syntax:
            self._check_syntax(self.df.syntax)
        self.build_args = dict(build_args or {})
        self.no_cache = no_cache
        self.run_step = run_step
        self.sde = _epoch(self.build_args)
        self.created = _timestamp(self.sde or 0)
        self.ignore: DockerIgnore = load_ignore(context, dockerfile)
        self.cache = BuildCache(Path(store.root) / "buildcache")
        self.platform_args = _platform_args(store)
        self.meta = self._meta_args()
        self.stages = self.df.stages
        # stages by index: a future per stage, claimed by the thread that builds it; the others
        # wait on it (``build_stage``), and a wait that would close a cycle is an error
        self._stages: dict[int, Future[_StageState]] = {}
        self._owners: dict[int, int] = {}  # stage -> the thread building it
        self._waits: dict[int, int] = {}  # thread -> the stage it waits for
        self._lock = threading.Lock()
        self._chain = threading.local()  # the stages this thread is inside of, innermost last
        self.step = 0
        self.declared: set[str] = {name for arg in self.df.meta_args for name, _ in arg.pairs}

    # --- setup ---

    def _check_syntax(self, syntax: str) -> None:
        name = syntax.split("@", 1)[0].split(":", 1)[0]
        name = name.removeprefix("docker.io/")
        if name not in ("docker/dockerfile", "docker/dockerfile-upstream"):
            raise DockerfileError(f"# syntax={syntax}: custom front ends are not supported "
                                  "(only Docker's own docker/dockerfile syntax)",
                                  path=self.name, line=1)
        self.progress(f"# syntax={syntax}: Docker's own front end; built by pycontain")

    def _meta_args(self) -> dict[str, str]:
        values = dict(self.platform_args)
        for arg in self.df.meta_args:
            for name, default in arg.pairs:
                if name in self.build_args:
                    values[name] = self.build_args[name]
                elif default is not None:
                    values[name] = self._expand(default, values, arg)
                elif name not in self.platform_args:
                    values.pop(name, None)
        return values

    def _expand(self, word: str, env: Mapping[str, str], where: dfp.Instruction) -> str:
        escape = getattr(where, "escape", self.df.escape)
        try:
            return shell.expand(word, env, escape)
        except shell.ExpansionError as exc:
            raise exc.at(where.path, where.line) from None
        except DockerfileError as exc:
            raise DockerfileError(exc.reason, path=where.path, line=where.line) from None

    def _fail(self, where: dfp.Instruction, message: str, **extra: Any) -> BuildError:
        return BuildError(message, path=where.path, line=where.line, **extra)

    # --- stages ---

    def find_stage(self, name: str, where: dfp.Instruction,
                   by_index: bool = False) -> dfp.Stage | None:
        lowered = name.lower()
        for stage in self.stages:
            if stage.name == lowered:
                return stage
        if by_index and name.isdigit():
            index = int(name)
            if index >= len(self.stages):
                raise DockerfileError(f"--from={name}: there is no stage {index} (the "
                                      f"Dockerfile has {len(self.stages)})",
                                      path=where.path, line=where.line)
            return self.stages[index]
        return None

    def target_stage(self, target: str | None) -> dfp.Stage:
        if target is None:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == target.lower():
                return stage
        names = ", ".join(s.name for s in self.stages if s.name) or "none"
        raise DockerfileError(f"target stage {target!r} could not be found (stages: {names})",
                              path=self.name)

    def build_stage(self, stage: dfp.Stage) -> _StageState:
        """The built stage: built here, or (being) built by another thread, then waited for."""
        me = threading.get_ident()
        chain: list[int] = self._chain.__dict__.setdefault("stages", [])
        with self._lock:
            future = self._stages.get(stage.index)
            if future is None:
                future = self._stages[stage.index] = Future()
                self._owners[stage.index] = me
                mine = True
            else:
                mine = False
                if stage.index in chain or self._waits_for_me(stage.index, me):
                    raise self._circular(stage)
                self._waits[me] = stage.index
        if not mine:
            try:
                return future.result()
            finally:
                with self._lock:
                    self._waits.pop(me, None)
        chain.append(stage.index)
        try:
            state = self._from(stage)
            for instruction in stage.instructions:
                self.execute(state, instruction)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            chain.pop()
        future.set_result(state)
        return state

    def _waits_for_me(self, index: int, me: int) -> bool:
        """Whether the thread building stage ``index`` waits, through others, for ``me``."""
        seen: set[int] = set()
        while index not in seen:
            seen.add(index)
            owner = self._owners.get(index)
            if owner == me:
                return True
            if owner is None or owner not in self._waits:
                return False
            index = self._waits[owner]
        return False

    def _circular(self, stage: dfp.Stage) -> DockerfileError:
        return DockerfileError(f"circular dependency detected on stage: "
                               f"{stage.name or stage.index}", path=stage.from_.path,
                               line=stage.from_.line)

    def dependencies(self, stage: dfp.Stage) -> list[dfp.Stage]:
        """The stages ``stage`` names in FROM, COPY --from and RUN --mount from= (those that
        need no variable of the stage's own scope), in the order it names them."""
        names = []
        with contextlib.suppress(DockerfileError):
            names.append(self._expand(stage.from_.image, self.meta, stage.from_))
        for ins in stage.instructions:
            if isinstance(ins, dfp.Copy) and ins.from_:
                names.append(ins.from_)
            elif isinstance(ins, dfp.Run):
                names += [m.group(1) for text in ins.mounts
                          for m in re.finditer(r"(?:^|,)from=([^,]+)", text)]
        found: list[dfp.Stage] = []
        for name in names:
            if "$" in name:
                continue
            with contextlib.suppress(DockerfileError):
                other = self.find_stage(name, stage.from_, by_index=name.isdigit())
                if other is not None and other.index != stage.index and other not in found:
                    found.append(other)
        return found

    def build_target(self, stage: dfp.Stage) -> _StageState:
        """Build ``stage``, and the stages it needs beside it, as BuildKit does: each stage it
        depends on (directly or not) starts at once on a bounded pool of threads, so stages
        that do not need each other build at the same time; a stage needed twice is built
        once, by whichever thread gets to it first. The result and the error reported are
        those of a build in order: the first failure on the target's own path is raised, and
        nothing runs any more once this returns."""
        needed: list[dfp.Stage] = []
        todo = [stage]
        while todo:
            for other in self.dependencies(todo.pop(0)):
                if other not in needed and other.index != stage.index:
                    needed.append(other)
                    todo.append(other)
        if not needed:
            return self.build_stage(stage)
        needed.sort(key=lambda s: s.index)
        workers = min(len(needed), MAX_PARALLEL_STAGES)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pycontain-stage")
        try:
            for other in needed:
                pool.submit(self._prefetch, other)
            return self.build_stage(stage)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _prefetch(self, stage: dfp.Stage) -> None:
        """A stage built ahead of need; its error waits in its future for whoever needs it."""
        with contextlib.suppress(BaseException):
            self.build_stage(stage)

    def _from(self, stage: dfp.Stage) -> _StageState:
        ins = stage.from_
        ref = self._expand(ins.image, self.meta, ins)
        if not ref:
            raise DockerfileError("FROM: the base name is empty after expansion",
                                  path=ins.path, line=ins.line)
        if ins.platform:
            platform = self._expand(ins.platform, self.meta, ins)
            if platform not in (self.platform_args["TARGETPLATFORM"],
                                self.platform_args["TARGETPLATFORM"].rsplit("/", 1)[0]):
                raise NotSupported(f"{ins.path}:{ins.line}: FROM --platform={platform}: only "
                                   "the host platform "
                                   f"({self.platform_args['TARGETPLATFORM']}) can be built")
        self.progress(f"[stage {stage.name or stage.index}] FROM {ref}")
        base_stage = self.find_stage(ref, ins)
        if base_stage is not None and base_stage.index == stage.index:
            raise DockerfileError(f"circular dependency detected on stage: {ref}",
                                  path=ins.path, line=ins.line)
        if base_stage is not None and base_stage.index != stage.index:
            parent = self.build_stage(base_stage)
            state = _StageState(stage, json.loads(json.dumps(parent.config)),
                                list(parent.layers), list(parent.history), parent.key,
                                extra=dict(parent.extra))
        elif ref.lower() == "scratch":
            state = _StageState(stage, {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"},
                                [], [], step_key(CACHE_VERSION, "scratch"),
                                extra=self._platform_extra())
        else:
            image = self._pull(ref, ins)
            raw = image.raw_config
            state = _StageState(stage, dict(raw.get("config") or {}), list(image.layers),
                                list(raw.get("history") or []),
                                step_key(CACHE_VERSION, "image", image.id),
                                extra={k: raw[k] for k in ("architecture", "os", "variant")
                                       if raw.get(k)})
            if not any(e.startswith("PATH=") for e in state.config.get("Env") or []):
                state.config["Env"] = [f"PATH={DEFAULT_PATH}", *(state.config.get("Env") or [])]
        state.cmd_set = False
        triggers = state.config.pop("OnBuild", None) or []
        for expression in triggers:
            self._onbuild(state, expression, ins)
        return state

    def _platform_extra(self) -> dict[str, Any]:
        extra = {"architecture": self.platform_args["TARGETARCH"],
                 "os": self.platform_args["TARGETOS"]}
        if self.platform_args["TARGETVARIANT"]:
            extra["variant"] = self.platform_args["TARGETVARIANT"]
        return extra

    def _pull(self, ref: str, where: dfp.Instruction) -> Image:
        try:
            return self.store.pull(ref)
        except (PullError, ImageNotFound) as exc:
            raise BuildError(f"cannot get base image {ref}: {exc}", path=where.path,
                             line=where.line) from exc

    def _onbuild(self, state: _StageState, expression: str, where: dfp.From) -> None:
        try:
            parsed = dfp.parse(f"FROM scratch\n{expression}\n", where.path)
        except DockerfileError as exc:
            raise DockerfileError(f"ONBUILD trigger {expression!r} of the base image: "
                                  f"{exc.reason}", path=where.path, line=where.line) from None
        for trigger in parsed.instructions[1:]:
            moved = _relocate(trigger, where)
            self.progress(f"  ONBUILD {expression}")
            self.execute(state, moved)

    # --- instructions ---

    def execute(self, state: _StageState, ins: dfp.Instruction) -> None:
        handler = getattr(self, "_do_" + ins.keyword.lower(), None)
        if handler is None:
            raise DockerfileError(f"unknown instruction: {ins.keyword}", path=ins.path,
                                  line=ins.line)
        with self._lock:
            self.step += 1
        handler(state, ins)

    def _record(self, state: _StageState, created_by: str, *, empty: bool = True,
                key_parts: tuple[Any, ...] = ()) -> None:
        entry: dict[str, Any] = {"created": self.created, "created_by": created_by,
                                 "comment": "buildkit.dockerfile.v0"}
        if empty:
            entry["empty_layer"] = True
        state.history.append(entry)
        state.key = step_key(state.key, created_by, sorted(state.args.items()), *key_parts)

    def _config_step(self, state: _StageState, ins: dfp.Instruction, text: str) -> None:
        self.progress(f"#{self.step} {text}")
        self._record(state, text)

    def _do_arg(self, state: _StageState, ins: dfp.Arg) -> None:
        parts = []
        for name, default in ins.pairs:
            self.declared.add(name)
            if name in self.build_args:
                value: str | None = self.build_args[name]
            elif default is not None:
                value = self._expand(default, state.scope(), ins)
            elif name in self.meta:
                value = self.meta[name]
            elif name in self.platform_args:
                value = self.platform_args[name]
            else:
                value = None
            if value is None:
                state.args.pop(name, None)
                parts.append(name)
            else:
                state.args[name] = value
                parts.append(f"{name}={value}")
        self._config_step(state, ins, "ARG " + " ".join(parts))

    def _do_env(self, state: _StageState, ins: dfp.Env) -> None:
        scope = state.scope()
        pairs = [(self._expand(k, scope, ins), self._expand(v, scope, ins)) for k, v in ins.pairs]
        env = state.env()
        for key, value in pairs:
            env[key] = value
        state.config["Env"] = [f"{k}={v}" for k, v in env.items()]
        self._config_step(state, ins, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))

    def _do_label(self, state: _StageState, ins: dfp.Label) -> None:
        scope = state.scope()
        pairs = [(self._expand(k, scope, ins), self._expand(v, scope, ins)) for k, v in ins.pairs]
        labels = dict(state.config.get("Labels") or {})
        labels.update(pairs)
        state.config["Labels"] = labels
        self._config_step(state, ins, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))

    def _do_maintainer(self, state: _StageState, ins: dfp.Maintainer) -> None:
        state.extra["author"] = self._expand(ins.maintainer, state.scope(), ins)
        self._config_step(state, ins, "MAINTAINER " + state.extra["author"])

    def _do_expose(self, state: _StageState, ins: dfp.Expose) -> None:
        scope = state.scope()
        ports = dict(state.config.get("ExposedPorts") or {})
        added = []
        for raw in ins.ports:
            for word in shell.expand_words(raw, scope, getattr(ins, "escape", "\\")):
                number, _, proto = word.partition("/")
                proto = (proto or "tcp").lower()
                if proto not in ("tcp", "udp", "sctp"):
                    raise DockerfileError(f"EXPOSE {word}: invalid protocol {proto!r}",
                                          path=ins.path, line=ins.line)
                low, _, high = number.partition("-")
                try:
                    first, last = int(low), int(high or low)
                except ValueError:
                    raise DockerfileError(f"EXPOSE {word}: invalid port", path=ins.path,
                                          line=ins.line) from None
                for port in range(first, last + 1):
                    ports[f"{port}/{proto}"] = {}
                    added.append(f"{port}/{proto}")
        state.config["ExposedPorts"] = ports
        self._config_step(state, ins, "EXPOSE " + _go_map(added))

    def _do_volume(self, state: _StageState, ins: dfp.Volume) -> None:
        scope = state.scope()
        volumes = dict(state.config.get("Volumes") or {})
        paths = []
        for raw in ins.paths:
            words = ([self._expand(raw, scope, ins)] if ins.json
                     else shell.expand_words(raw, scope, getattr(ins, "escape", "\\")))
            for path in words:
                if not path.strip():
                    raise DockerfileError("VOLUME specified can not be an empty string",
                                          path=ins.path, line=ins.line)
                volumes[path] = {}
                paths.append(path)
        state.config["Volumes"] = volumes
        self._config_step(state, ins, "VOLUME " + _go_list(paths))

    def _do_user(self, state: _StageState, ins: dfp.User) -> None:
        state.config["User"] = self._expand(ins.user, state.scope(), ins)
        self._config_step(state, ins, "USER " + state.config["User"])

    def _do_stopsignal(self, state: _StageState, ins: dfp.Stopsignal) -> None:
        value = self._expand(ins.signal, state.scope(), ins)
        if not re.fullmatch(r"[0-9]+|(SIG)?[A-Z][A-Z0-9+\-]*", value):
            raise DockerfileError(f"STOPSIGNAL {value!r}: not a signal name or number",
                                  path=ins.path, line=ins.line)
        state.config["StopSignal"] = value
        self._config_step(state, ins, "STOPSIGNAL " + value)

    def _do_shell(self, state: _StageState, ins: dfp.Shell) -> None:
        state.config["Shell"] = list(ins.shell)
        self._config_step(state, ins, "SHELL " + _go_list(ins.shell))

    def _shell(self, state: _StageState) -> list[str]:
        return list(state.config.get("Shell") or DEFAULT_SHELL)

    def _command(self, state: _StageState, ins: dfp.Instruction) -> list[str]:
        command = ins.command  # type: ignore[attr-defined]
        if ins.json:
            return list(command)
        return [*self._shell(state), command]

    def _do_cmd(self, state: _StageState, ins: dfp.Cmd) -> None:
        state.config["Cmd"] = self._command(state, ins)
        state.cmd_set = True
        self._config_step(state, ins, "CMD " + _json_words(state.config["Cmd"]))

    def _do_entrypoint(self, state: _StageState, ins: dfp.Entrypoint) -> None:
        state.config["Entrypoint"] = self._command(state, ins)
        if not state.cmd_set:
            state.config["Cmd"] = None
        self._config_step(state, ins, "ENTRYPOINT " + _json_words(state.config["Entrypoint"]))

    def _do_healthcheck(self, state: _StageState, ins: dfp.Healthcheck) -> None:
        check: dict[str, Any] = {"Test": list(ins.test)}
        for key, value in (("Interval", ins.interval_ns), ("Timeout", ins.timeout_ns),
                           ("StartPeriod", ins.start_period_ns),
                           ("StartInterval", ins.start_interval_ns), ("Retries", ins.retries)):
            if value:
                check[key] = value
        state.config["Healthcheck"] = check
        text = "HEALTHCHECK " + " ".join(ins.test)
        self._config_step(state, ins, text)

    def _do_onbuild(self, state: _StageState, ins: dfp.Onbuild) -> None:
        triggers = list(state.config.get("OnBuild") or [])
        triggers.append(ins.expression)
        state.config["OnBuild"] = triggers
        self._config_step(state, ins, "ONBUILD " + ins.expression)

    # --- steps with layers ---

    def _dirs(self, state: _StageState) -> list[Path]:
        if state.dirs is None:
            state.dirs = [self._unpacked(layer) for layer in state.layers]
        return state.dirs

    def _unpacked(self, layer: Layer) -> Path:
        """The unpacked directory of one layer (the store unpacks each once per machine)."""
        return Path(self.store.unpacked(Layer(*layer)))

    def _cached_layer(self, state: _StageState, ins: dfp.Instruction, created_by: str,
                      key_parts: tuple[Any, ...], make: Callable[[], Layer | None]) -> None:
        """Run ``make`` for this step unless the cache has its result; add its layer."""
        key = step_key(state.key, created_by, sorted(state.args.items()), self.sde, *key_parts)
        label = f"#{self.step} {created_by}"
        layer: Layer | None = None
        hit = False
        if not self.no_cache:
            with self.cache.lock(key):
                entry = self.cache.get(key)
                if entry is not None and self._entry_ok(entry):
                    hit = True
                else:
                    self.progress(label)
                    layer = make()
                    self.cache.put(key, {"layer": list(layer) if layer else None})
            if hit:
                self.progress(label + " CACHED")
                layer = Layer(*entry["layer"]) if entry["layer"] else None
        else:
            self.progress(label)
            layer = make()
        entry_h: dict[str, Any] = {"created": self.created, "created_by": created_by,
                                   "comment": "buildkit.dockerfile.v0"}
        if layer is None:
            entry_h["empty_layer"] = True
        else:
            state.layers.append(layer)
            state.dirs = None
        state.history.append(entry_h)
        state.key = key

    def _entry_ok(self, entry: dict[str, Any]) -> bool:
        layer = entry.get("layer")
        return layer is None or self.store.has_blob(layer[0])

    def _do_workdir(self, state: _StageState, ins: dfp.Workdir) -> None:
        value = self._expand(ins.workdir, state.scope(), ins)
        current = state.config.get("WorkingDir") or "/"
        path = posixpath.normpath(posixpath.join(current, value))
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        state.config["WorkingDir"] = path
        created_by = "WORKDIR " + path
        fs = LayeredFS(self._dirs(state))
        found = fs.find(fs.resolve(path))
        if found is not None and stat.S_ISDIR(found[1].st_mode):
            self.progress(f"#{self.step} {created_by}")
            self._record(state, created_by)
            return

        def make() -> Layer:
            with self._staging() as staging:
                _Stager(self, state, staging).ensure_dir(fs.resolve(path), owner=(0, 0))
                return self._commit_dir(staging.root, staging.owners)

        self._cached_layer(state, ins, created_by, (), make)

    def _do_run(self, state: _StageState, ins: dfp.Run) -> None:
        if (ins.network not in (None, "default", "host", "none")) or \
                ins.security not in (None, "sandbox"):
            raise NotSupported(f"{ins.path}:{ins.line}: RUN --network={ins.network} "
                               f"and --security={ins.security} are not supported yet")
        mounts = self._run_mounts(state, ins)
        # its own namespace with a way out (as Docker's bridge), or as asked: loopback only,
        # or the host's namespace
        network = ins.network if ins.network in ("host", "none") else "default"
        if ins.json:
            argv = list(ins.command)
        else:
            script = ins.command
            docs = ins.heredocs
            if docs and len(docs) == 1 and re.fullmatch(r"[0-9]*<<-?\S+", script.strip()):
                body = docs[0].body()
                script = _shebang_script(body) if body.startswith("#!") else body
            elif docs:
                script = script + "\n" + "".join(d.content + d.name + "\n" for d in docs)
            argv = [*self._shell(state), script]
        env = {**state.args, **state.env()}
        env_list = tuple(f"{k}={v}" for k, v in env.items())
        # Proxy build args reach RUN undeclared, and (as in BuildKit) stay out of the cache
        # key and the history, since they say how to reach the network, not what to build.
        proxies = tuple(f"{k}={v}" for k, v in self.build_args.items()
                        if k in PROXY_ARGS and k not in env)
        user = state.config.get("User") or ""
        workdir = state.config.get("WorkingDir") or "/"
        shown = " ".join(argv) if not ins.json else _json_words(argv)
        used_args = sorted((k, v) for k, v in state.args.items()
                           if k not in self.platform_args or k in self.build_args)
        prefix = (f"|{len(used_args)} " + " ".join(f"{k}={v}" for k, v in used_args) + " "
                  if used_args else "")
        created_by = f"RUN {prefix}{shown} # buildkit"

        def make() -> Layer:
            if self.run_step is None:
                raise NotSupported(f"{ins.path}:{ins.line}: RUN needs a container engine and "
                                   "this build has none (run_step=None)")
            lower = tuple(str(d) for d in self._dirs(state))
            if not lower:
                raise self._fail(ins, f"RUN {shown}: the image is empty (FROM scratch): there "
                                 "is no shell or program to run")
            with contextlib.ExitStack() as held:
                host = self._mount_host_side(state, ins, mounts, held)
                request = RunRequest(tuple(argv), env_list + proxies + tuple(host.env), user,
                                     workdir, lower, network=network,
                                     where=f"{ins.path}:{ins.line}", mounts=tuple(host.binds),
                                     tmpfs=tuple(host.tmpfs.items()))
                try:
                    result = self.run_step(request)
                except (BuildError, NotSupported):
                    raise
                except PycontainError as exc:
                    raise self._fail(ins, f"RUN {shown}: could not run: {exc}",
                                     exit_code=getattr(exc, "exit_code", None)) from exc
            try:
                if result.exit_code != 0:
                    raise self._fail(
                        ins, f"RUN {shown}: exited with code {result.exit_code}",
                        exit_code=result.exit_code, logs=result.output)
                stubs = _stubs_to_leave_out(LayeredFS(lower), result.upper, self.sde or 0,
                                            made=result.mountpoints)
                return add_dir_layer(self.store, result.upper, epoch=self.sde, overlay=True,
                                     exclude=stubs, tmp_dir=self._tmp())
            finally:
                result.cleanup()

        parts: tuple[Any, ...] = (env_list, user, workdir, network)
        if mounts:  # (a RUN without mounts keeps the key it always had)
            parts += (tuple((m.key(), checksum) for m, _plan, checksum in mounts),)
        self._cached_layer(state, ins, created_by, parts, make)

    def _run_mounts(self, state: _StageState, ins: dfp.Run
                    ) -> list[tuple[runmounts.RunMount, _CopyPlan | None, str]]:
        """The RUN's ``--mount``s, each with what a bind mount selects (and its checksum for
        the cache key: the context's files by content, a stage's or image's by its key)."""
        scope = state.scope()
        workdir = state.config.get("WorkingDir") or "/"
        found = []
        for text in ins.mounts:
            mount = runmounts.parse(self._expand(text, scope, ins), workdir, ins.path, ins.line)
            if ":" in mount.target:
                raise NotSupported(f"{ins.path}:{ins.line}: RUN --mount target "
                                   f"{mount.target!r}: a ':' in the path is not supported")
            plan, checksum = None, ""
            if mount.type == "bind":
                source_fs, source_name, ignore = self._source_fs(state, ins, mount.from_)
                plan = _CopyPlan(self, ins, source_fs, ignore, add=False,
                                 from_stage=mount.from_ is not None)
                plan.select(mount.source or "/", None)
                checksum = source_name + " " + plan.checksum(contents=source_name == "context")
            found.append((mount, plan, checksum))
        return found

    def _mount_host_side(self, state: _StageState, ins: dfp.Run,
                         mounts: list[tuple[runmounts.RunMount, _CopyPlan | None, str]],
                         held: contextlib.ExitStack) -> runmounts.HostSide:
        """Binds, caches (held, locked as their sharing says), tmpfs and secrets for one RUN;
        what ``held`` closes removes the copies and releases the caches."""
        host = runmounts.HostSide([], {}, [])
        secret_dir: Path | None = None
        for mount, plan, _checksum in mounts:
            if mount.type == "bind":
                assert plan is not None
                staging = held.enter_context(self._staging())
                plan.write(_Stager(self, state, staging, fs=LayeredFS([])), "/m", False,
                           owner=None, chmod=None)
                for rel, (uid, gid) in staging.owners.items():
                    os.lchown(staging.root / rel, uid, gid)
                host.binds.append((str(staging.root / "m"), mount.target, mount.readonly))
            elif mount.type == "cache":
                path = held.enter_context(self.caches.hold(mount))
                host.binds.append((str(path), mount.target, mount.readonly))
            elif mount.type == "tmpfs":
                host.tmpfs[mount.target] = "exec" + (f",size={mount.size}" if mount.size else "")
            elif mount.type == "secret":
                if secret_dir is None:
                    secret_dir = held.enter_context(self._staging()).root
                    secret_dir.mkdir(parents=True)
                path = runmounts.secret_file(mount, self.secrets, secret_dir, ins.path, ins.line)
                if path is not None:
                    if mount.target:
                        host.binds.append((str(path), mount.target, True))
                    host.env.extend(runmounts.secret_env(mount, path))
        return host

    def _do_copy(self, state: _StageState, ins: dfp.Copy) -> None:
        self._files(state, ins, add=False)

    def _do_add(self, state: _StageState, ins: dfp.Add) -> None:
        self._files(state, ins, add=True)

    def _files(self, state: _StageState, ins: dfp.Copy | dfp.Add, *, add: bool) -> None:
        scope = state.scope()
        dest = self._expand(ins.dest, scope, ins)
        if not dest:
            raise DockerfileError(f"{ins.keyword}: the destination is empty", path=ins.path,
                                  line=ins.line)
        if getattr(ins, "parents", False):
            raise NotSupported(f"{ins.path}:{ins.line}: {ins.keyword} --parents is not "
                               "supported yet")
        exclude = tuple(self._expand(p, scope, ins) for p in ins.exclude)
        from_ = self._expand(ins.from_, scope, ins) if getattr(ins, "from_", None) else None
        chown = self._expand(ins.chown, scope, ins) if ins.chown else None
        chmod = None
        if ins.chmod:
            text = self._expand(ins.chmod, scope, ins)
            if not re.fullmatch(r"[0-7]{1,4}", text):
                raise DockerfileError(f"--chmod={text}: only octal modes are supported",
                                      path=ins.path, line=ins.line)
            chmod = int(text, 8)
        sources: list[tuple[str, str | None]] = []  # (expanded source, heredoc body)
        for raw in ins.sources:
            doc = ins.heredoc_for(raw) if ins.heredocs else None
            if doc is not None:
                body = doc.body()
                if doc.expand:
                    body = self._expand_heredoc(body, scope, ins)
                sources.append((doc.name, body))
            else:
                sources.append((self._expand(raw, scope, ins), None))
        if len(sources) > 1 and not dest.endswith("/"):
            raise DockerfileError(f"When using {ins.keyword} with more than one source file, "
                                  "the destination must be a directory and end with a /",
                                  path=ins.path, line=ins.line)
        source_fs, source_name, ignore = self._source_fs(state, ins, from_)
        plan = _CopyPlan(self, ins, source_fs, ignore, add=add, from_stage=from_ is not None,
                         unpack=getattr(ins, "unpack", None),
                         checksum=self._expand(ins.checksum, scope, ins)
                         if getattr(ins, "checksum", None) else None, exclude=exclude)
        for source, body in sources:
            plan.select(source, body)
        workdir = state.config.get("WorkingDir") or "/"
        dest_abs = dest if dest.startswith("/") else posixpath.join(workdir, dest)
        flags = []
        if from_:
            flags.append(f"--from={from_}")
        if chown:
            flags.append(f"--chown={chown}")
        if chmod is not None:
            flags.append(f"--chmod={ins.chmod}")
        if ins.link:
            flags.append("--link")
        flags.extend(f"--exclude={p}" for p in exclude)
        shown_sources = " ".join(s for s, _ in sources)
        created_by = f"{ins.keyword} {' '.join([*flags, shown_sources, dest])} # buildkit"
        # A stage's or image's key already pins its files; only the context needs hashing.
        checksum = plan.checksum(contents=source_name == "context")

        def make() -> Layer:
            fs = LayeredFS(self._dirs(state))
            owner = self._owner(chown, fs, ins) if chown else None
            with self._staging() as staging:
                stager = _Stager(self, state, staging, fs=fs)
                plan.write(stager, dest_abs, dest.endswith("/") or dest.endswith("/."),
                           owner=owner, chmod=chmod)
                return self._commit_dir(staging.root, staging.owners)

        parts: tuple[Any, ...] = (source_name, checksum, chown, chmod)
        if exclude:  # (a COPY without it keeps the key it always had)
            parts += (exclude,)
        self._cached_layer(state, ins, created_by, parts, make)

    def _expand_heredoc(self, body: str, scope: Mapping[str, str], ins: dfp.Instruction) -> str:
        # Heredoc bodies expand like a shell here-document: $VAR and ${...}, quotes kept.
        def replace(match: re.Match[str]) -> str:
            return self._expand(match.group(0), scope, ins)

        return re.sub(r"\$(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)", replace, body)

    def _source_fs(self, state: _StageState, ins: dfp.Instruction,
                   from_: str | None) -> tuple[LayeredFS, str, DockerIgnore | None]:
        if from_ is None:
            return LayeredFS([self.context]), "context", self.ignore
        stage = self.find_stage(from_, ins, by_index=True)
        if stage is not None:
            if stage.index == state.stage.index:
                raise DockerfileError(f"circular dependency detected on stage: {from_}",
                                      path=ins.path, line=ins.line)
            other = self.build_stage(stage)
            return LayeredFS(self._dirs(other)), "stage:" + other.key, None
        try:
            image = self.store.pull(from_)
        except (PullError, ImageNotFound, ValueError) as exc:
            names = ", ".join(s.name for s in self.stages if s.name) or "none"
            raise DockerfileError(f"--from={from_} names no build stage (stages: {names}) "
                                  f"and no image: {exc}", path=ins.path, line=ins.line) from None
        dirs = [self._unpacked(layer) for layer in image.layers]
        return LayeredFS(dirs), "image:" + image.id, None

    def _owner(self, chown: str, fs: LayeredFS, ins: dfp.Instruction) -> tuple[int, int]:
        user, _, group = chown.partition(":")
        passwd = _table(fs.read_text("/etc/passwd"))
        groups = _table(fs.read_text("/etc/group"))
        if user.isdigit():
            uid = int(user)
            primary = next((int(r[3]) for r in passwd if len(r) > 3 and r[2] == user), uid)
        else:
            row = next((r for r in passwd if r and r[0] == user and len(r) > 3), None)
            if row is None:
                raise self._fail(ins, f"--chown={chown}: unable to find user {user}: no "
                                 "matching entries in passwd file")
            uid, primary = int(row[2]), int(row[3])
        if not group:
            gid = primary if not user.isdigit() else uid
        elif group.isdigit():
            gid = int(group)
        else:
            grow = next((r for r in groups if r and r[0] == group and len(r) > 2), None)
            if grow is None:
                raise self._fail(ins, f"--chown={chown}: unable to find group {group}: no "
                                 "matching entries in group file")
            gid = int(grow[2])
        return uid, gid

    def _tmp(self) -> Path:
        path = Path(self.store.root) / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def _staging(self) -> Iterator[_Staging]:
        root = Path(tempfile.mkdtemp(prefix="stage-", dir=self._tmp()))
        try:
            yield _Staging(root / "rootfs", {})
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _commit_dir(self, root: Path, owners: dict[str, tuple[int, int]]) -> Layer:
        return add_dir_layer(self.store, root, epoch=self.sde, owners=owners, tmp_dir=self._tmp())

    # --- the result ---

    def image_config(self, state: _StageState) -> dict[str, Any]:
        config = {k: v for k, v in state.config.items() if v is not None or k == "Cmd"}
        if config.get("Cmd") is None:
            config.pop("Cmd", None)
        full: dict[str, Any] = {**state.extra, "config": config, "created": self.created,
                                "history": state.history}
        full.setdefault("architecture", self.platform_args["TARGETARCH"])
        full.setdefault("os", self.platform_args["TARGETOS"])
        return full


@dataclass
class _Staging:
    root: Path
    owners: dict[str, tuple[int, int]]


def _relocate(ins: dfp.Instruction, where: dfp.Instruction) -> dfp.Instruction:
    import dataclasses

    return dataclasses.replace(ins, path=where.path, line=where.line, end_line=where.line)


def _stubs_to_leave_out(fs: LayeredFS, upper: Path, epoch: int,
                        made: Sequence[str] = ()) -> list[str]:
    """The mount stubs a RUN left in its upper dir that are not the image's own (BuildKit's
    files, ``made``: what the engine made to mount on), and the directories copied up only to
    hold them (``etc`` for ``/etc/hosts``): without them a RUN that changes nothing gives an
    empty, reproducible layer, and a RUN --mount target leaves nothing behind."""
    for point in RUNTIME_MOUNT_POINTS:  # kept, as runc's are, but with a fixed mtime
        real = upper / point
        if fs.find("/" + point) is None and real.is_dir() and not real.is_symlink():
            with contextlib.suppress(OSError):
                if not os.listdir(real):
                    os.utime(real, (epoch, epoch))
    candidates = {s for s in (*MOUNT_STUBS, *(p.strip("/") for p in made))
                  if s and s.split("/")[0] not in RUNTIME_MOUNT_POINTS}
    ancestors = {posixpath.dirname(c) for c in candidates}
    for path in list(ancestors):
        while path:
            ancestors.add(path)
            path = posixpath.dirname(path)
    ancestors.discard("")
    stubs: set[str] = set()
    for rel in sorted(candidates | ancestors, key=lambda p: p.count("/"), reverse=True):
        real = upper / rel
        try:
            st = os.lstat(real)
        except OSError:
            continue
        below = fs.find("/" + rel)
        if stat.S_ISDIR(st.st_mode):
            left = {posixpath.basename(s) for s in stubs if posixpath.dirname(s) == rel}
            if set(os.listdir(real)) - left or \
                    any(k.endswith("overlay.opaque") for k in _listxattr(real)):
                continue
        elif not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
            continue  # a stub is an empty file or directory
        if below is None:
            if rel in candidates:
                stubs.add(rel)
        elif stat.S_ISDIR(st.st_mode) and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
                stat.S_IMODE(below[1].st_mode), below[1].st_uid, below[1].st_gid):
            stubs.add(rel)  # copied up only to hold stubs
    return sorted(stubs)


def _listxattr(path: Path) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def _shebang_script(body: str) -> str:
    """A shell script running a ``#!`` heredoc with its interpreter, as the kernel would.

    BuildKit mounts the heredoc as a file; here it goes to /dev/shm (a tmpfs of the RUN
    container, writable by any user and never part of the layer) and is removed after.
    """
    first = body.split("\n", 1)[0][2:].strip()
    interpreter = [shlex.quote(part) for part in first.split(None, 1)]
    marker = "PYCONTAIN_HEREDOC_" + hashlib.sha256(body.encode()).hexdigest()[:16]
    text = body if body.endswith("\n") else body + "\n"
    return (f'f=/dev/shm/.heredoc-$$\ncat > "$f" <<\'{marker}\'\n{text}{marker}\n'
            f'{" ".join(interpreter)} "$f"\nr=$?\nrm -f "$f"\nexit $r\n')


def _go_map(ports: list[str]) -> str:
    return "map[" + " ".join(f"{p}:{{}}" for p in sorted(set(ports))) + "]"


def _table(text: str | None) -> list[list[str]]:
    if not text:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


# ---------------------------------------------------------------------------------------------
# COPY and ADD
# ---------------------------------------------------------------------------------------------


class _Stager:
    """Writes a COPY/ADD result into a staging rootfs, its parents mirroring the image's.

    Symlinks an earlier RUN planted on the destination resolve inside the image, by
    ``LayeredFS.resolve`` over committed layers that nothing changes any more, and writes go
    to a fresh staging tree that only we write (a symlink there is replaced, not followed):
    unlike ``copy_to`` into a running container, no one can race a check here."""

    def __init__(self, builder: Builder, state: _StageState, staging: _Staging,
                 fs: LayeredFS | None = None):
        self.builder = builder
        self.staging = staging
        self.fs = fs or LayeredFS(builder._dirs(state))
        self.epoch = builder.sde or 0
        staging.root.mkdir(parents=True, exist_ok=True)

    def real(self, path: str) -> Path:
        return self.staging.root / path.strip("/")

    def ensure_dir(self, path: str, owner: tuple[int, int] | None) -> Path:
        """Make ``path`` (resolved, absolute) in the staging tree; parents copy the image's
        metadata when the image has them, else 0755 with ``owner``."""
        parts = [p for p in path.split("/") if p]
        current = ""
        for part in parts:
            current += "/" + part
            target = self.real(current)
            if target.is_dir() and not target.is_symlink():
                continue
            if target.exists() or target.is_symlink():
                target.unlink()
            found = self.fs.find(current)
            target.mkdir()
            if found is not None and stat.S_ISDIR(found[1].st_mode):
                st = found[1]
                os.chmod(target, stat.S_IMODE(st.st_mode))
                os.utime(target, (st.st_atime, st.st_mtime))
                self.staging.owners[current.lstrip("/")] = (st.st_uid, st.st_gid)
            else:
                if found is not None:
                    raise NotADirectoryError(current)
                os.chmod(target, 0o755)
                os.utime(target, (self.epoch, self.epoch))
                self.staging.owners[current.lstrip("/")] = owner or (0, 0)
        return self.real(path)

    def is_dir_in_image(self, path: str) -> bool:
        if self.real(path).is_dir():
            return True
        found = self.fs.find(self.fs.resolve(path))
        return found is not None and stat.S_ISDIR(found[1].st_mode)


@dataclass
class _Selected:
    name: str  # the path as matched (relative to the source root)
    real: str | None  # where its bytes are (None for heredocs and URLs)
    st: os.stat_result | None
    body: bytes | None = None  # heredoc content or a downloaded URL
    url: str | None = None
    mtime: int | None = None


class _CopyPlan:
    """The sources one COPY/ADD selected, checksummed for the cache, then written."""

    def __init__(self, builder: Builder, ins: dfp.Instruction, fs: LayeredFS,
                 ignore: DockerIgnore | None, *, add: bool, from_stage: bool,
                 unpack: bool | None = None, checksum: str | None = None,
                 exclude: Sequence[str] = ()):
        self.unpack = unpack
        # --exclude: .dockerignore's patterns, relative to each source (a file by its name)
        try:
            self.exclude = DockerIgnore(exclude, source="--exclude") if exclude else None
        except DockerfileError as exc:
            raise DockerfileError(f"{ins.keyword} --exclude: {exc.reason}", path=ins.path,
                                  line=ins.line) from None
        self.expected = checksum
        self.builder = builder
        self.ins = ins
        self.fs = fs
        self.ignore = ignore
        self.add = add
        self.from_stage = from_stage
        self.items: list[_Selected] = []

    def _excluded(self, rel: str, root: str | None = None) -> bool:
        """Ignored by .dockerignore (``rel`` from the source's root), or by --exclude
        (``rel`` below the selected ``root``)."""
        if self.ignore and self.ignore.excluded(rel):
            return True
        if self.exclude and root is not None:
            inner = rel[len(root) + 1:] if root else rel
            return bool(inner) and self.exclude.excluded(inner)
        return False

    def _exceptions(self) -> bool:
        """Whether ``!`` patterns may bring back files below an excluded directory."""
        return any(m is not None and m.has_exceptions for m in (self.ignore, self.exclude))

    def select(self, source: str, body: str | None) -> None:
        ins = self.ins
        if body is not None:
            self.items.append(_Selected(source, None, None, body.encode()))
            return
        if self.add and re.match(r"^(https?)://", source):
            self.items.append(self._download(source))
            return
        if self.expected:
            raise DockerfileError("ADD --checksum is only for URL sources", path=ins.path,
                                  line=ins.line)
        if re.match(r"^[a-z][a-z0-9+.-]*://", source) or source.startswith("git@"):
            raise NotSupported(f"{ins.path}:{ins.line}: {ins.keyword} of {source}: only "
                               "http(s) URLs (ADD) and local files are supported")
        cleaned = posixpath.normpath("/" + source)
        if not self.from_stage:
            raw = posixpath.normpath(source) if not source.startswith("/") else cleaned
            if raw == ".." or raw.startswith("../"):
                raise BuildError(f"{ins.keyword} {source}: the source is outside the build "
                                 "context", path=ins.path, line=ins.line)
        if any(ch in cleaned for ch in "*?["):
            matches = self._glob(cleaned)
            if not matches:
                raise BuildError(f"{ins.keyword} {source}: no source files were specified "
                                 "(the pattern matches nothing)", path=ins.path, line=ins.line)
        else:
            matches = [cleaned]
        for match in matches:
            try:
                resolved = self.fs.resolve(match)
            except OSError as exc:
                raise BuildError(f"{ins.keyword} {source}: {exc}", path=ins.path,
                                 line=ins.line) from None
            found = self.fs.find(resolved)
            rel = resolved.lstrip("/")
            if found is None or (rel and self._excluded(rel)):
                why = ("it is excluded by .dockerignore" if found is not None
                       else "file not found in build context" if not self.from_stage
                       else "not found in the source stage")
                raise BuildError(f"{ins.keyword} failed: {source}: {why}", path=ins.path,
                                 line=ins.line)
            if self.exclude and not stat.S_ISDIR(found[1].st_mode) and \
                    self.exclude.excluded(posixpath.basename(rel)):
                continue
            self.items.append(_Selected(rel, found[0], found[1]))

    def _glob(self, pattern: str) -> list[str]:
        parts = [p for p in pattern.split("/") if p]
        found = ["/"]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            following = []
            for base in found:
                if not any(ch in part for ch in "*?["):
                    candidate = posixpath.join(base, part)
                    if self.fs.find(self.fs.resolve(candidate, follow_last=not last)):
                        following.append(candidate)
                    continue
                try:
                    names = self.fs.listdir(self.fs.resolve(base))
                except OSError:
                    continue
                for name in names:
                    if fnmatch.fnmatchcase(name, part.replace("[^", "[!")):
                        candidate = posixpath.join(base, name)
                        if not self._excluded(candidate.lstrip("/")):
                            following.append(candidate)
            found = following
        return sorted(found)

    def _download(self, url: str) -> _Selected:
        ins = self.ins
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
                modified = response.headers.get("Last-Modified")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise BuildError(f"ADD {url}: download failed: {exc}", path=ins.path,
                             line=ins.line) from None
        mtime = None
        if modified:
            with contextlib.suppress(TypeError, ValueError):
                mtime = int(email.utils.parsedate_to_datetime(modified).timestamp())
        if self.expected:
            algorithm, _, wanted = self.expected.partition(":")
            if algorithm not in ("sha256", "sha384", "sha512") or not wanted:
                raise DockerfileError(f"ADD --checksum={self.expected}: expected "
                                      "sha256:<hex> (or sha384/sha512)", path=ins.path,
                                      line=ins.line)
            got = hashlib.new(algorithm, data).hexdigest()
            if got != wanted.lower():
                raise BuildError(f"ADD {url}: checksum mismatch: expected {self.expected}, got "
                                 f"{algorithm}:{got}", path=ins.path, line=ins.line)
        name = posixpath.basename(urllib.parse.urlparse(url).path) or "download"
        return _Selected(name, None, None, data, url=url, mtime=mtime)

    def _entries(self, source: str, root: str | None = None
                 ) -> Iterator[tuple[str, str, os.stat_result, bool]]:
        """(relative name, real path, stat, copied?) below directory ``source`` (of the
        selected ``root``, default itself), depth first.

        An ignored directory is still walked when exceptions may bring files below it back;
        it is then not copied itself (``copied`` False), only what is re-included.
        """
        root = source if root is None else root
        for name in self.fs.listdir("/" + source):
            child = posixpath.join(source, name) if source else name
            found = self.fs.find("/" + child)
            if found is None:
                continue
            real, st = found
            is_dir = stat.S_ISDIR(st.st_mode)
            excluded = self._excluded(child, root)
            if excluded and not (is_dir and self._exceptions()):
                continue
            yield child, real, st, not excluded
            if is_dir:
                yield from self._entries(child, root)

    def checksum(self, *, contents: bool = True) -> str:
        """What the cache key needs of the selection: names, and with ``contents`` the files'
        metadata and bytes (heredocs and downloads always)."""
        digest = hashlib.sha256()
        pairs: list[tuple[str, str]] = []
        for item in self.items:
            if item.real is None:
                digest.update(f"{item.name}\0{item.url}\0".encode())
                digest.update(item.body or b"")
                continue
            if not contents:
                digest.update(f"{item.name}\0".encode("utf-8", "surrogateescape"))
                continue
            pairs.append((item.name, item.real))
            if item.st is not None and stat.S_ISDIR(item.st.st_mode):
                pairs.extend((name, real) for name, real, _st, copied in
                             self._entries(item.name) if copied)
        digest.update(file_checksum(pairs).encode())
        return "sha256:" + digest.hexdigest()

    # --- writing ---

    def write(self, stager: _Stager, dest: str, dest_is_dir: bool, *,
              owner: tuple[int, int] | None, chmod: int | None) -> None:
        if len(self.items) > 1:
            dest_is_dir = True
        for item in self.items:
            if item.url and self.unpack and _is_archive_bytes(item.body or b""):
                target = stager.fs.resolve(dest)
                stager.ensure_dir(target, owner)
                work = Path(tempfile.mkdtemp(prefix="url-", dir=self.builder._tmp()))
                try:
                    (work / "download").write_bytes(item.body or b"")
                    self._extract(stager, str(work / "download"), target, owner, chmod)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                continue
            if item.real is None:
                target = self._file_target(stager, dest, dest_is_dir, item.name)
                parent = stager.ensure_dir(posixpath.dirname(target), owner)
                path = parent / posixpath.basename(target)
                _remove(path)
                path.write_bytes(item.body or b"")
                mode = chmod if chmod is not None else (0o600 if item.url else 0o644)
                os.chmod(path, mode)
                when = item.mtime if item.mtime is not None else stager.epoch
                os.utime(path, (when, when))
                stager.staging.owners[target.lstrip("/")] = owner or (0, 0)
                continue
            assert item.st is not None
            if stat.S_ISDIR(item.st.st_mode):
                target = stager.fs.resolve(dest)
                stager.ensure_dir(target, owner)
                self._copy_children(stager, item.name, target, owner, chmod)
            elif self.add and self.unpack is not False and not self.from_stage and \
                    _is_archive(item.real):
                target = stager.fs.resolve(dest)
                stager.ensure_dir(target, owner)
                self._extract(stager, item.real, target, owner, chmod)
            else:
                target = self._file_target(stager, dest, dest_is_dir,
                                           posixpath.basename(item.name))
                stager.ensure_dir(posixpath.dirname(target), owner)
                self._copy_entry(stager, item.real, item.st, target, owner, chmod)

    def _file_target(self, stager: _Stager, dest: str, dest_is_dir: bool, name: str) -> str:
        resolved = stager.fs.resolve(dest)
        if dest_is_dir or stager.is_dir_in_image(resolved):
            return posixpath.join(resolved, name)
        return resolved

    def _owner_of(self, st: os.stat_result, owner: tuple[int, int] | None) -> tuple[int, int]:
        if owner is not None:
            return owner
        return (st.st_uid, st.st_gid) if self.from_stage else (0, 0)

    def _copy_entry(self, stager: _Stager, real: str, st: os.stat_result, target: str,
                    owner: tuple[int, int] | None, chmod: int | None) -> None:
        path = stager.real(target)
        rel = target.lstrip("/")
        if stat.S_ISDIR(st.st_mode):
            if not path.is_dir() or path.is_symlink():
                _remove(path)
                path.mkdir()
            os.chmod(path, chmod if chmod is not None else stat.S_IMODE(st.st_mode))
            stager.staging.owners[rel] = self._owner_of(st, owner)
            return
        _remove(path)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(real), path)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(real, path, follow_symlinks=False)
            os.chmod(path, chmod if chmod is not None else stat.S_IMODE(st.st_mode))
        else:
            return  # sockets, fifos and devices are not copied
        os.utime(path, (st.st_atime, st.st_mtime), follow_symlinks=False)
        stager.staging.owners[rel] = self._owner_of(st, owner)

    def _copy_children(self, stager: _Stager, source: str, target: str,
                       owner: tuple[int, int] | None, chmod: int | None) -> None:
        dirs: list[tuple[Path, os.stat_result]] = []
        prefix = len(source) + 1 if source else 0
        for child, real, st, copied in self._entries(source):
            out = posixpath.join(target, child[prefix:])
            if not copied:
                stager.ensure_dir(out, owner)  # an ignored dir holding re-included files
                continue
            stager.ensure_dir(posixpath.dirname(out), owner)
            self._copy_entry(stager, real, st, out, owner, chmod)
            if stat.S_ISDIR(st.st_mode):
                dirs.append((stager.real(out), st))
        for path, st in reversed(dirs):
            os.utime(path, (st.st_atime, st.st_mtime))

    def _extract(self, stager: _Stager, archive: str, target: str,
                 owner: tuple[int, int] | None, chmod: int | None) -> None:
        from .unpack import unpack_layer

        work = Path(tempfile.mkdtemp(prefix="add-", dir=self.builder._tmp()))
        try:
            plain = work / "archive.tar"
            with _open_archive(archive) as src, open(plain, "wb") as out:
                shutil.copyfileobj(src, out)
            tree = work / "tree"
            tree.mkdir()
            unpack_layer(plain, tree)
            fs = LayeredFS([tree])
            saved = self.fs, self.ignore, self.from_stage
            self.fs, self.ignore, self.from_stage = fs, None, True  # keep the archive's owners
            try:
                self._copy_children(stager, "", target, owner, chmod)
            finally:
                self.fs, self.ignore, self.from_stage = saved
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _is_archive(path: str) -> bool:
    try:
        with _open_archive(path) as stream:
            head = stream.read(512)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return False
    if len(head) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _is_archive_bytes(data: bytes) -> bool:
    with tempfile.NamedTemporaryFile() as file:
        file.write(data)
        file.flush()
        return _is_archive(file.name)


def _open_archive(path: str) -> Any:
    with open(path, "rb") as file:
        magic = file.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------


def build(store: Any, context: Path | str, *, dockerfile: Path | str | None = None,
          target: str | None = None, build_args: Mapping[str, str] | None = None,
          tag: str | None = None, no_cache: bool = False, run_step: RunStep | None = None,
          progress: Progress | None = None,
          secrets: Mapping[str, str | os.PathLike] | None = None) -> Image:
    """Build ``dockerfile`` (default ``<context>/Dockerfile``) with ``context``; return the
    image, tagged ``tag`` when given. Only the stages ``target`` (default: the last) needs
    are built. ``secrets`` (id -> file) are what ``RUN --mount=type=secret`` mounts. Errors:
    :class:`DockerfileError` / :class:`BuildError` at file:line; nothing is tagged then, and
    the cache holds only the steps that completed."""
    context = Path(context)
    if not context.is_dir():
        raise BuildError(f"build context {context} is not a directory")
    path = Path(dockerfile) if dockerfile is not None else context / "Dockerfile"
    if not path.is_absolute() and not path.exists():
        path = context / path
    builder = Builder(store, context.resolve(), path, build_args=build_args, no_cache=no_cache,
                      run_step=run_step, progress=progress, secrets=secrets)
    state = builder.build_target(builder.target_stage(target))
    unused = sorted(set(builder.build_args) - builder.declared - set(PROXY_ARGS)
                    - set(PLATFORM_ARGS) - {"SOURCE_DATE_EPOCH"})
    if unused:
        builder.progress(f"[warning] build args not consumed: {', '.join(unused)}")
    image = store.commit(builder.image_config(state), state.layers, tag=tag)
    builder.progress(f"writing image {image.id}" + (f" as {tag}" if tag else ""))
    return image
