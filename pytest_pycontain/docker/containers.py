"""A container in a Docker engine: its state, exec (Docker's multiplexed stream), files, and
its end.

Known difference from the native engine: Docker copies stdout and stderr through two pipes, so
their interleaving in ``output`` and ``logs()`` is exact only when they are not written at the
same instant.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal as signals
import socket
import struct
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..engine import ExecResult
from ..imageconfig import shell_argv
from .client import EngineApi, load_docker, message
from .labels import KEPT_SUFFIX
from .views import EngineView, NetworkView
from .volumes import remove_reused_volumes

if TYPE_CHECKING:
    from ..runspec import RunSpec


def _raw_socket(sock: Any) -> Any:
    """A socket of our own for an exec's stream: docker-py hands back a ``SocketIO`` for unix
    and TCP connections (no timeouts, no half-close), a socket-like object otherwise."""
    if isinstance(sock, socket.SocketIO):
        own = socket.socket(fileno=os.dup(sock.fileno()))
        own.settimeout(None)  # the descriptor may have been left non-blocking
        return own
    return sock


def _read_frames(sock: socket.socket, deadline: float | None) -> Iterator[tuple[int, bytes]]:
    """Docker's multiplexed stream: an 8-byte header (stream, 0, 0, 0, size) and a payload."""
    buffer = b""

    def need(count: int) -> bytes | None:
        nonlocal buffer
        while len(buffer) < count:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
            chunk = sock.recv(65536)  # socket.timeout is TimeoutError
            if not chunk:
                return None
            buffer += chunk
        data, buffer = buffer[:count], buffer[count:]
        return data

    while True:
        header = need(8)
        if header is None:
            return
        stream, size = struct.unpack(">BxxxL", header)
        payload = need(size) if size else b""
        if payload is None:
            return
        yield stream, payload


def _feed(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


# The engine's states of a container that has ended; Podman says "stopped" (its exit code
# known) until its cleanup makes it "exited".
ENDED = ("exited", "dead", "stopped")


def not_running(exc: Any) -> bool:
    """Whether the engine refused because the container is not running: Docker answers 409,
    Podman 500 with "container state improper"."""
    return exc.status_code == 409 or "container state improper" in message(exc)


class DockerContainer:
    """A container in the engine. ``name`` is the name other containers resolve; the
    engine-level name (``engine_name``) carries a unique suffix."""

    def __init__(self, engine: EngineView, cid: str, *, name: str, engine_name: str,
                 hostname: str, image: Any, network: NetworkView | None,
                 own_network: NetworkView | None, network_mode: str | None,
                 spec: RunSpec | None = None):
        self.engine = engine
        self.spec = spec  # the run request (None: found again, another run's)
        self.id = cid
        self.name = name
        self.engine_name = engine_name
        self.hostname = hostname
        self._image = image
        self.network = network
        self._own_network = own_network
        self.network_mode = network_mode
        self.reuse_key: str | None = None  # reused across runs: its volumes go with it
        self._removed = False

    def __repr__(self) -> str:
        return f"<DockerContainer {self.name} {self.id[:12]}>"

    @property
    def _api(self) -> EngineApi:
        return self.engine.api

    def inspect(self) -> dict[str, Any]:
        """The engine's ``docker inspect`` of this container."""
        docker = load_docker()
        with self._api.mapped(f"container {self.name}", container=self.id):
            try:
                return self._api.inspect_container(self.id)
            except docker.errors.NotFound as exc:
                raise errors.ContainerError(f"container {self.name} is gone: {message(exc)}",
                                            container=self.id) from exc

    @property
    def labels(self) -> dict[str, str]:
        """The image's Labels and the run's, as Docker merged them (not the engine's own)."""
        found = (self.inspect().get("Config") or {}).get("Labels") or {}
        return {k: v for k, v in found.items() if not k.startswith("pycontain.")}

    def _state(self) -> dict[str, Any] | None:
        if self._removed:
            return None
        docker = load_docker()
        with self._api.mapped(f"container {self.name}", container=self.id):
            try:
                return self._api.inspect_container(self.id)["State"]
            except docker.errors.NotFound:
                return None

    @property
    def image(self) -> Any:
        return self._image

    @property
    def status(self) -> str:
        state = self._state()
        if state is None:
            return "removed"
        status = state.get("Status") or "created"
        return "exited" if status in ENDED else status

    @property
    def exit_code(self) -> int | None:
        state = self._state()
        if state is None or state.get("Status") not in ENDED:
            return None
        return int(state.get("ExitCode", 0))

    @property
    def health(self) -> str | None:
        state = self._state()
        health = (state or {}).get("Health")
        return (health.get("Status") or None) if health else None  # Podman: "" for none

    @property
    def ip(self) -> str | None:
        if self._removed:
            return None
        networks = self.inspect()["NetworkSettings"].get("Networks") or {}
        wanted = self.network or self._own_network
        if wanted is not None and wanted.engine_name in networks:
            return networks[wanted.engine_name].get("IPAddress") or None
        for info in networks.values():
            if info.get("IPAddress"):
                return info["IPAddress"]
        return None

    # -- exec ------------------------------------------------------------------------------------
    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``cmd`` in the running container; stdout and stderr are kept apart and together."""
        docker = load_docker()
        argv = shell_argv(cmd)
        if not argv:
            raise errors.ContainerError("exec: no command given", container=self.id)
        with self._api.mapped(f"exec {argv!r} in {self.name}", container=self.id):
            try:
                exec_id = self._api.exec_create(
                    self.id, argv, stdin=stdin is not None, user=user or "",
                    environment=[f"{k}={v}" for k, v in (env or {}).items()] or None,
                    workdir=workdir)["Id"]
                raw = self._api.exec_start(exec_id, socket=True)
            except docker.errors.APIError as exc:
                if not_running(exc):  # say how it ended
                    self.check_running()
                raise
        sock = _raw_socket(raw)
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        both: list[bytes] = []
        try:
            if stdin is not None:  # fed from a thread: a command may answer before it reads all
                data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
                threading.Thread(target=_feed, args=(sock, data), daemon=True,
                                 name="pycontain-stdin").start()
            try:
                for stream, payload in _read_frames(sock, deadline):
                    (err if stream == 2 else out).append(payload)
                    both.append(payload)
            except TimeoutError:  # before OSError: it is one
                self._kill_exec(exec_id)
                raise errors.WaitTimeout(
                    f"exec {argv!r} in {self.name} did not finish within {timeout}s",
                    logs=b"".join(both).decode("utf-8", "replace"), container=self.id) from None
            except OSError as exc:
                raise errors.ContainerError(f"exec {argv!r} in {self.name}: the stream broke: "
                                            f"{exc}", container=self.id) from exc
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with contextlib.suppress(Exception):
                raw.close()
        code = self._exec_exit_code(exec_id)

        def text(parts: list[bytes]) -> str:
            return b"".join(parts).decode("utf-8", "replace")

        return ExecResult(code, text(out), text(err), text(both))

    def _exec_exit_code(self, exec_id: str) -> int:
        for _ in range(100):  # the exit code lands just after the streams close
            info = self._api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.01)
        return int(self._api.exec_inspect(exec_id).get("ExitCode") or -1)

    def _kill_exec(self, exec_id: str) -> None:
        """Docker cannot kill an exec; on a local engine its process is ours to signal."""
        with contextlib.suppress(Exception):
            pid = int(self._api.exec_inspect(exec_id).get("Pid") or 0)
            if pid and self.engine.is_local:
                os.kill(pid, signals.SIGKILL)

    # -- output, ports --------------------------------------------------------------------------
    def logs(self) -> str:
        with self._api.mapped(f"logs of {self.name}", container=self.id):
            data = self._api.logs(self.id, stdout=True, stderr=True)
        return data.decode("utf-8", "replace")

    def address(self, port: int) -> tuple[str, int]:
        """``(host, port)`` where the test process reaches ``port`` of this container."""
        ports = self.inspect()["NetworkSettings"].get("Ports") or {}
        if self.network_mode == "host":
            return self.engine.address_host, int(port)
        bindings = ports.get(f"{int(port)}/tcp")
        if not bindings:
            published = sorted(k for k, v in ports.items() if v)
            raise errors.NetworkError(
                f"port {port} of {self.name} is not published (published: "
                f"{', '.join(published) or 'none'}); pass ports=[{port}] to run()")
        for binding in bindings:
            if ":" not in binding.get("HostIp", ""):  # prefer IPv4
                return self.engine.address_host, int(binding["HostPort"])
        return self.engine.address_host, int(bindings[0]["HostPort"])

    def probe_port(self, port: int) -> bool:
        """Whether something listens on TCP ``port`` in this container's network namespace:
        read from /proc on a local engine, else from the container's own /proc by exec."""
        pid = self.engine.local_pid(self)
        text = None
        if pid:
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/net/tcp").read_text()
                with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
                    text += Path(f"/proc/{pid}/net/tcp6").read_text()
        if text is None:
            if self.status != "running":
                return False
            result = self.exec(["cat", "/proc/net/tcp", "/proc/net/tcp6"], timeout=10)
            text = result.stdout
        return listening(text, port)

    # -- files ----------------------------------------------------------------------------------
    def _stat(self, path: str) -> dict[str, Any] | None:
        """The engine's stat of ``path`` in the container (HEAD on the archive endpoint)."""
        header = self._api.archive_stat(self.id, path)
        if header is None:
            return None
        return json.loads(base64.b64decode(header)) if header else {}

    def copy_to(self, src: str | Path, dest: str) -> None:
        """Copy a host file or directory in, like ``docker cp``: into ``dest`` if it is a
        directory there, else as ``dest``."""
        src = os.fspath(src)
        if not os.path.lexists(src):
            raise FileNotFoundError(f"copy_to: {src} does not exist on the host")
        with self._api.mapped(f"copy_to {self.name}:{dest}", container=self.id):
            stat = self._stat(dest)
            if stat is not None and stat.get("mode", 0) & (1 << 27) and stat.get("linkTarget"):
                # a symlink (Go's os.ModeSymlink): the docker CLI copies to what it leads to,
                # which the engine resolved inside the container's root
                dest = stat["linkTarget"]
                stat = self._stat(dest)
            if stat is not None and stat.get("mode", 0) & (1 << 31):  # Go's os.ModeDir
                directory, arcname = dest, os.path.basename(src.rstrip("/")) or "."
            else:
                directory, arcname = os.path.dirname(dest.rstrip("/")) or "/", \
                    os.path.basename(dest.rstrip("/"))
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                tar.add(src, arcname=arcname)
            self._api.put_archive(self.id, directory, buffer.getvalue())

    def copy_from(self, src: str, dest: str | Path) -> None:
        """Copy a file or directory out (running or exited): into ``dest`` if it is a
        directory, else as ``dest``."""
        docker = load_docker()
        with self._api.mapped(f"copy_from {self.name}:{src}", container=self.id):
            try:
                stream, _ = self._api.get_archive(self.id, src)
                data = b"".join(stream)
            except docker.errors.NotFound as exc:
                raise FileNotFoundError(
                    f"copy_from: {src} does not exist in container {self.name}") from exc
        target = Path(dest)
        if target.is_dir():
            root, rename = target, None
        else:
            root, rename = target.parent, target.name
        _extract(data, root, rename)

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self, timeout: float = 10) -> None:
        docker = load_docker()
        with self._api.mapped(f"stop {self.name}", container=self.id), \
                contextlib.suppress(docker.errors.NotFound):
            self._api.stop(self.id, timeout=max(0, round(timeout)))

    def start(self) -> None:
        """``docker start``: the same container again, on its networks under its aliases;
        a running one is left as it is (the engine answers 304)."""
        docker = load_docker()
        if self._removed:
            raise errors.ContainerError(f"container {self.name} was removed; it cannot be "
                                        "started again", container=self.id)
        with self._api.mapped(f"start {self.name}", container=self.id):
            try:
                self._api.start(self.id)
            except docker.errors.NotFound as exc:
                raise errors.ContainerError(f"container {self.name} is gone: {message(exc)}",
                                            container=self.id) from exc

    def kill(self, signal: int = 9) -> None:
        """Send ``signal``; a container that is not running is left as it is."""
        docker = load_docker()
        with self._api.mapped(f"kill {self.name}", container=self.id):
            try:
                self._api.kill(self.id, signal=int(signal))
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if not not_running(exc):
                    raise

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, once the container has exited."""
        if self.status == "created":
            raise errors.ContainerError(f"container {self.name} never started",
                                        container=self.id)
        try:
            with self._api.mapped(f"wait {self.name}", container=self.id):
                result = self._api.wait(self.id, timeout=timeout)
        except errors.WaitTimeout as exc:  # the engine's answer did not come within timeout
            cause = exc.__cause__ or exc
            if timeout is None:
                raise errors.EngineUnavailable(
                    f"lost the Docker engine at {self.engine.base_url} while waiting for "
                    f"{self.name}: {cause}") from cause
            raise errors.WaitTimeout(f"container {self.name} still runs after {timeout}s",
                                     logs=self.logs(), container=self.id) from cause
        return int(result.get("StatusCode", -1))

    def check_running(self) -> None:
        """ContainerError (exit code, log tail) when the container is no longer running."""
        state = self._state()
        if state is None:
            raise errors.ContainerError(f"container {self.name} was removed", container=self.id)
        if state.get("Status") in ENDED:
            code = int(state.get("ExitCode", 0))
            detail = f": {state['Error']}" if state.get("Error") else ""
            logs = self.logs()
            cause = self.spec.read_only_cause(logs) if self.spec is not None else ""
            raise errors.ContainerError(
                f"container {self.name} exited with code {code}{detail}"
                + (f" ({cause})" if cause else ""),
                exit_code=code, logs=logs, container=self.id)

    def commit(self, tag: str | None = None) -> Any:
        """Its filesystem as a new image in the engine (``docker commit``; the engine pauses
        it meanwhile, and leaves volumes out); ``tag`` names it."""
        from .images import inspect_image

        if self._removed or self._state() is None:
            raise errors.ContainerError(f"commit: container {self.name} was removed",
                                        container=self.id)
        repository, version = None, None
        if tag:
            docker = load_docker()
            repository, version = docker.utils.parse_repository_tag(tag)
            version = version or "latest"
        with self._api.mapped(f"commit {self.name}", container=self.id):
            made = self._api.commit(self.id, repository=repository, tag=version)
        return inspect_image(self._api, made["Id"])

    def keep(self) -> str:
        """Leave this container running after the engine closes, out of the reaper's reach
        (its engine-level name gets the ``.kept`` suffix); returns its id."""
        if not self.engine_name.endswith(KEPT_SUFFIX):
            with self._api.mapped(f"keep {self.name}", container=self.id):
                self._api.rename(self.id, self.engine_name + KEPT_SUFFIX)
            self.engine_name += KEPT_SUFFIX
        self.engine.forget(self)
        if self._own_network is not None:
            self.engine.forget(self._own_network)
        return self.id

    def remove(self) -> None:
        """Kill and remove, with its anonymous volumes (and its own network, if it had one)."""
        docker = load_docker()
        if self._removed:
            return
        self._removed = True
        try:
            with self._api.mapped(f"remove {self.name}", container=self.id):
                try:
                    self._api.remove_container(self.id, force=True, v=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    if "already in progress" not in message(exc):
                        raise
        finally:
            self.engine.forget(self)
        if self._own_network is not None:
            self._own_network.remove()
        if self.reuse_key is not None:
            remove_reused_volumes(self._api, self.reuse_key)


def listening(proc_net_tcp: str, port: int) -> bool:
    """Whether /proc/net/tcp{,6} text shows a socket in LISTEN state on ``port``."""
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1] or fields[0] == "sl":
            continue
        with contextlib.suppress(ValueError):
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return True
    return False


def _extract(data: bytes, root: Path, rename: str | None) -> None:
    """Unpack a ``get_archive`` tar under ``root`` (its top entry renamed to ``rename``),
    refusing anything that would land outside."""
    root = root.resolve()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for member in members:
            parts = Path(member.name).parts
            if rename is not None and parts:
                parts = (rename, *parts[1:])
            if not parts or member.name.startswith("/") or ".." in parts:
                raise errors.ContainerError(f"copy_from: unsafe path {member.name!r} in archive")
            member.name = str(Path(*parts))
            if member.issym() or member.islnk():
                link = Path(member.linkname)
                if member.islnk() and rename is not None and link.parts:
                    member.linkname = str(Path(rename, *link.parts[1:]))
                if member.islnk() and (link.is_absolute() or ".." in link.parts):
                    raise errors.ContainerError(f"copy_from: unsafe link {member.name!r}")
            member.mode &= 0o7777
        root.mkdir(parents=True, exist_ok=True)
        # Into a fresh directory first, then across with no symlink followed: what an earlier
        # copy left in ``root`` (a container's symlink) is replaced, never written through.
        with tempfile.TemporaryDirectory(prefix=".pycontain-cp-", dir=root) as fresh:
            if hasattr(tarfile, "tar_filter"):
                tar.extractall(fresh, members=members, filter="tar")
            else:  # pragma: no cover - older patch releases of 3.10/3.11
                tar.extractall(fresh, members=members)
            _move_into(Path(fresh), root, {m.name.split("/")[0] for m in members})


def _move_into(fresh: Path, root: Path, names: set[str]) -> None:
    from .. import fdcopy

    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    source, target = os.open(fresh, flags), os.open(root, flags)
    try:
        for name in sorted(names):
            fdcopy.copy(fdcopy.Location(source, name, name), fdcopy.Location(target, name, name))
    finally:
        os.close(source)
        os.close(target)
