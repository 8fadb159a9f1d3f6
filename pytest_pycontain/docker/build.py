"""Builds on a Docker engine: BuildKit through the ``docker`` command line, else the engine's
classic builder.

The ``docker`` package only speaks the classic builder (no ``RUN --mount``, no secrets), so a
build goes through a ``docker`` command line with BuildKit when one is installed. Either way a
failure becomes a BuildError with the Dockerfile line and the step's exit code, read from the
builder's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import errors
from .client import EngineApi, load_docker, message, unique_suffix


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """One build, its paths resolved and checked."""

    context: Path
    dockerfile: Path
    target: str | None = None
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tag: str | None = None
    no_cache: bool = False
    secrets: Mapping[str, str | Path] = dataclasses.field(default_factory=dict)

    @classmethod
    def resolve(cls, context: str | Path, *, dockerfile: str | Path | None = None,
                target: str | None = None, build_args: Mapping[str, str] | None = None,
                tag: str | None = None, no_cache: bool = False,
                secrets: Mapping[str, str | Path] | None = None) -> BuildRequest:
        """The context as an absolute directory, the Dockerfile relative to it (or to the
        working directory, where only that one exists)."""
        root = Path(context).resolve()
        if not root.is_dir():
            raise errors.BuildError(f"the build context {root} is not a directory")
        path = Path(dockerfile) if dockerfile else Path("Dockerfile")
        if not path.is_absolute():
            path = root / path if (root / path).exists() or not path.exists() else \
                path.resolve()
        if not path.is_file():
            raise errors.DockerfileError("no such Dockerfile", path=str(path))
        return cls(root, path, target, dict(build_args or {}), tag, no_cache,
                   dict(secrets or {}))


def build_image(api: EngineApi, request: BuildRequest, *, podman: bool = False) -> str:
    """Build ``request`` on the engine behind ``api``; returns the image id. Podman (``podman``)
    builds through its own API: the docker command line's BuildKit session needs an endpoint
    Podman does not serve ("unable to upgrade to h2c")."""
    if podman:
        return _build_podman(api, request)
    found = builder()
    if found:
        return _build_cli(found, api.url, request)
    if request.secrets:
        raise errors.NotSupported("build secrets need BuildKit: install the docker command "
                                  "line (Debian: docker.io) beside the engine")
    return _build_classic(api, request)


def _build_cli(found: tuple[str, str], engine_url: str, request: BuildRequest) -> str:
    binary, mode = found
    path, context = request.dockerfile, request.context
    with tempfile.TemporaryDirectory(prefix="pycontain-build-") as tmp:
        iidfile = os.path.join(tmp, "iid")
        argv = [binary, *(["buildx", "build", "--load"] if mode == "buildx" else ["build"]),
                "--progress=plain", "--iidfile", iidfile, "-f", str(path)]
        if request.target:
            argv += ["--target", request.target]
        for key, value in request.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        if request.tag:
            argv += ["-t", request.tag]
        if request.no_cache:
            argv.append("--no-cache")
        for ident, source in request.secrets.items():
            argv += ["--secret", f"id={ident},src={os.fspath(source)}"]
        argv.append(str(context))
        env = {**os.environ, "DOCKER_HOST": engine_url, "DOCKER_BUILDKIT": "1"}
        env.pop("DOCKER_CONTEXT", None)
        try:
            done = subprocess.run(argv, capture_output=True, env=env, check=False,
                                  stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise errors.BuildError(f"cannot run {shlex.join(argv)}: {exc}") from exc
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        if done.returncode != 0 or not os.path.exists(iidfile):
            reason, line, code = build_failure(output, path)
            raise errors.BuildError(f"build of {context} failed: {reason}", path=str(path),
                                    line=line, exit_code=code, logs=output)
        return Path(iidfile).read_text().strip()


def _build_classic(api: EngineApi, request: BuildRequest) -> str:
    def events() -> Iterator[dict[str, Any]]:  # the request is made inside the error map
        yield from api.build(path=str(request.context), dockerfile=str(request.dockerfile),
                             tag=request.tag, target=request.target,
                             buildargs=dict(request.build_args), nocache=request.no_cache,
                             rm=True, forcerm=True, decode=True)

    return _image_from_events(api, request, events())


def _build_podman(api: EngineApi, request: BuildRequest) -> str:
    """A build by Podman's compat ``/build``, with what the docker package cannot send:
    ``secrets``, as files inside the context (Podman moves them out of it before the build
    starts, so ``COPY .`` never sees them), and no ``io.buildah.version`` label (Docker's
    builds carry only the Dockerfile's). The context is tarred as the docker package does."""
    docker = load_docker()
    from docker.api.build import process_dockerfile

    context = request.context
    ignore = context / ".dockerignore"
    exclude = None
    if ignore.exists():
        exclude = [line.strip() for line in ignore.read_text().splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    dockerfile = process_dockerfile(str(request.dockerfile), str(context))
    secrets = []
    with docker.utils.tar(str(context), exclude=exclude, dockerfile=dockerfile) as archive:
        with tarfile.open(fileobj=archive, mode="a") as tar:
            for number, (ident, source) in enumerate(request.secrets.items()):
                name = f".pycontain-secret-{unique_suffix()}-{number}"
                try:
                    tar.add(os.fspath(source), arcname=name, recursive=False)
                except OSError as exc:
                    raise errors.BuildError(f"build secret {ident!r}: cannot read {source}: "
                                            f"{exc.strerror or exc}") from exc
                secrets.append(f"id={ident},src={name}")
        archive.seek(0)
        client = api.client
        params = {"dockerfile": dockerfile[0], "t": request.tag, "target": request.target,
                  "buildargs": json.dumps(dict(request.build_args)),
                  "nocache": int(request.no_cache), "rm": 1, "forcerm": 1,
                  "secrets": json.dumps(secrets) if secrets else None, "identitylabel": 0}
        with api.mapped(f"build of {context}", error=errors.BuildError):
            answer = client.post(f"{client.base_url}/v{client.api_version}/build",
                                 params={k: v for k, v in params.items() if v is not None},
                                 data=archive, headers={"Content-Type": "application/tar"},
                                 stream=True, timeout=None)
            return _image_from_events(api, request, _json_stream(answer))


def _json_stream(answer: Any) -> Iterator[dict[str, Any]]:
    """The JSON objects of a streamed engine answer; an error status is the docker package's
    APIError, as its own calls raise."""
    import requests

    try:
        answer.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        raise load_docker().errors.create_api_error_from_http_exception(exc) from exc
    decoder = json.JSONDecoder()
    buffer = ""
    for chunk in answer.iter_content(chunk_size=None, decode_unicode=True):
        buffer += chunk
        while True:
            buffer = buffer.lstrip()
            try:
                event, end = decoder.raw_decode(buffer)
            except ValueError:
                break
            buffer = buffer[end:]
            if isinstance(event, dict):
                yield event


def _image_from_events(api: EngineApi, request: BuildRequest,
                       events: Iterable[dict[str, Any]]) -> str:
    """The image id at the end of a builder's JSON events, or BuildError with the Dockerfile
    line and exit code read from them."""
    docker = load_docker()
    path, context = request.dockerfile, request.context
    lines: list[str] = []
    image_id = None
    failure = None
    with api.mapped(f"build of {context}", error=errors.BuildError):  # a stream that breaks
        try:
            for event in events:
                if "stream" in event:
                    lines.append(event["stream"])
                if "error" in event:  # without the Go value Podman appends to some
                    failure = re.sub(r" &imagebuilder\.Step\{.*", "", event["error"],
                                     flags=re.S)
                    lines.append(event["error"] + "\n")
                if "aux" in event and "ID" in event["aux"]:
                    image_id = event["aux"]["ID"]
        except docker.errors.APIError as exc:
            failure = message(exc)
            lines.append(failure + "\n")
    output = "".join(lines)
    if failure or not image_id:
        _, line, code = build_failure(output, path)
        raise errors.BuildError(f"build of {context} failed: {failure or 'no image'}",
                                path=str(path), line=line, exit_code=code, logs=output)
    return image_id


def _docker_cli_builders() -> list[tuple[str, str]]:
    """``(path, mode)`` of each ``docker`` on PATH that builds with BuildKit: ``buildx`` (the
    plugin is there) or ``buildkit`` (a pre-23 CLI with BuildKit built in)."""
    found = []
    seen: set[str] = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which("docker", path=directory) if directory else None
        if not path or os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        try:
            buildx = subprocess.run([path, "buildx", "version"], capture_output=True,
                                    timeout=20, check=False)
            if buildx.returncode == 0:
                found.append((path, "buildx"))
                continue
            version = subprocess.run([path, "--version"], capture_output=True, timeout=20,
                                     check=False).stdout.decode()
        except (OSError, subprocess.SubprocessError):
            continue
        match = re.search(r"version (\d+)\.", version)
        if match and int(match.group(1)) < 23:
            found.append((path, "buildkit"))
    return found


_BUILDERS: list[tuple[str, str]] | None = None


def builder() -> tuple[str, str] | None:
    """The ``docker`` command line that builds with BuildKit here, found once; None when there
    is none (the classic builder of the engine API is used)."""
    global _BUILDERS
    if _BUILDERS is None:
        _BUILDERS = _docker_cli_builders()
    return _BUILDERS[0] if _BUILDERS else None


def dockerfile_line(text: str, instruction: str) -> int | None:
    """The line where the logical Dockerfile instruction ``instruction`` starts (an exact
    match first, else the first that begins with it, for a shortened step name)."""
    wanted = " ".join(instruction.split()).lower()
    instructions: list[tuple[int, str]] = []
    start, parts = None, []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if start is None:
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        instructions.append((start, " ".join(" ".join(parts).split()).lower()))
        start, parts = None, []
    for accept in (str.__eq__, str.startswith):
        for number, joined in instructions:
            if wanted and accept(joined, wanted):
                return number
    return None


def build_failure(output: str, dockerfile: Path) -> tuple[str, int | None, int | None]:
    """From a failed build's output: (the error, the Dockerfile line, the exit code)."""
    lines = [line for line in output.splitlines() if line.strip()]
    line_no: int | None = None
    for pattern in (r"Dockerfile:(\d+)", r"[Dd]ockerfile parse error (?:on )?line (\d+)"):
        match = re.search(pattern, output)
        if match:
            line_no = int(match.group(1))
            break
    if line_no is None:
        steps = re.findall(r"^\s*> \[(?:[^\]]*\s)?\d+/\d+\] (.+):\s*$", output, re.M)
        steps = steps or re.findall(r"^Step \d+/\d+ : (.+)$", output, re.M)
        steps = steps or re.findall(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (.+)$", output,
                                     re.M)  # Podman's
        if steps:
            with contextlib.suppress(OSError):
                line_no = dockerfile_line(dockerfile.read_text(errors="replace"), steps[-1])
    code = None
    match = re.search(r"(?:exit code|returned a non-zero code): (\d+)", output)
    if match:
        code = int(match.group(1))
    else:  # Podman: 'building at STEP "RUN ...": while running runtime: exit status 3'
        match = re.search(r"building at STEP .*: exit status (\d+)$", output, re.M)
        code = int(match.group(1)) if match else None
    reason = next((ln.strip() for ln in reversed(lines)
                   if re.search(r"error|failed|not found|unknown", ln, re.I)),
                  lines[-1].strip() if lines else "the build failed")
    return reason.removeprefix("ERROR: ").strip(), line_no, code
