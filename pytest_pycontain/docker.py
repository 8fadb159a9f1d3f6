"""The Docker Engine backend: the engine protocol over the Docker Engine API.

For users without Linux root (macOS, Windows, CI with a remote ``DOCKER_HOST``). The ``docker``
package and ``pyroute2`` are imported only inside the functions that need them, so importing
this module costs nothing. Everything made carries ``pycontain.session`` and
``pycontain.owner.*`` labels: ``close()`` removes this engine's objects, and ``reap()`` those of
owners that died on this host. Builds go through the ``docker`` command line with BuildKit when a
capable one is installed (the ``docker`` package only speaks the classic builder).

Network faults on a local engine are made from this process inside the container's network
namespace (``/proc/<State.Pid>/ns/net``), so the image needs no ``tc``: a partition is a
blackhole route to the peer in each side, delay and loss a netem queue on the interface. A
remote engine raises NotSupported. Known difference: Docker copies stdout and stderr through two
pipes, so their interleaving in ``output`` and ``logs()`` is exact only when they are not
written at the same instant.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal as signals
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import errors
from .engine import ExecResult, RunSpec

LABEL_SESSION = "pycontain.session"
LABEL_PID = "pycontain.owner.pid"
LABEL_HOST = "pycontain.owner.host"
LABEL_START = "pycontain.owner.start"
LABEL_NAME = "pycontain.name"
KEPT_SUFFIX = ".kept"  # a kept container's engine-level name ends so; the reaper skips it
DEFAULT_HOST = "unix:///var/run/docker.sock"


# -- small helpers ------------------------------------------------------------------------------
def _suffix() -> str:
    return secrets.token_hex(4)


def _argv(cmd: str | Sequence[str]) -> list[str]:
    """A string runs with ``/bin/sh -c``; a list as is."""
    if isinstance(cmd, str):
        return ["/bin/sh", "-c", cmd]
    return [str(word) for word in cmd]


def _message(exc: BaseException) -> str:
    """The engine's own words for an API error."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation).strip()
    return str(exc).strip()


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks (field 22 of /proc/PID/stat), to tell a reused
    pid from the original owner; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_alive(pid: int, start: str | None = None) -> bool:
    """Whether the process ``pid`` (started at ``start``, when known) still runs here."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start:
        now = process_start(pid)
        return now is None or now == start
    return True


def _docker():
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - the extra is not installed
        raise errors.EngineUnavailable(
            "the Docker backend needs the docker package: pip install 'pytest-pycontain[docker]'"
        ) from exc
    return docker


class _Api:
    """The ``docker`` package's APIClient, with a lost connection to the engine raised as
    EngineUnavailable (a read timeout stays what it is: waits time out on purpose)."""

    def __init__(self, client: Any, url: str):
        self._client = client
        self._url_text = url

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value) or name.startswith("_"):
            return value
        import requests

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except requests.exceptions.ConnectionError as exc:
                if "timed out" in str(exc).lower():
                    raise
                raise errors.EngineUnavailable(
                    f"lost the Docker engine at {self._url_text}: {exc}") from exc

        return call


class DockerImage:
    """An image in the engine: ``id``, ``tags`` and ``config`` (the engine's image Config)."""

    def __init__(self, attrs: Mapping[str, Any]):
        self.attrs = dict(attrs)
        self.id: str = attrs["Id"]
        self.tags: list[str] = list(attrs.get("RepoTags") or [])
        inner = dict(attrs.get("Config") or {})
        keys = ("Hostname", "Domainname", "User", "Env", "Cmd", "Entrypoint", "WorkingDir",
                "ExposedPorts", "Volumes", "Labels", "StopSignal", "Healthcheck", "OnBuild",
                "Shell")
        self.config: Mapping[str, Any] = types.MappingProxyType(
            {**{key: inner.get(key) for key in keys}, **inner})

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def __repr__(self) -> str:
        return f"<DockerImage {self.short_id} {' '.join(self.tags)}>".replace(" >", ">")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DockerImage) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


# -- exec streams -------------------------------------------------------------------------------
def _raw_socket(sock: Any) -> socket.socket:
    return getattr(sock, "_sock", sock)


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


# -- network faults, inside a container's network namespace ---------------------------------------
def in_netns(pid: int, fn: Callable[[Any], Any]) -> Any:
    """``fn(ipr)`` with a pyroute2 IPRoute inside the network namespace of ``pid`` (in a
    thread of its own, as the native engine does it)."""
    from .native.netns import in_netns as native_in_netns

    path = f"/proc/{pid}/ns/net"
    try:
        return native_in_netns(path, fn)
    except errors.NetworkError as exc:
        if isinstance(exc.__cause__, PermissionError):
            raise errors.NotSupported(
                f"network faults on a Docker engine enter the container's network namespace "
                f"({path}), which needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): "
                f"{exc.__cause__}") from exc
        raise


def _eth_index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise errors.NetworkError(f"no interface {ifname!r} in the container's namespace")
    return found[0]


def _set_netem(ifname: str, delay_us: int, jitter_us: int, loss: float) -> Callable[[Any], None]:
    def apply(ipr: Any) -> None:
        index = _eth_index(ipr, ifname)
        with contextlib.suppress(Exception):
            ipr.tc("del", index=index, root=True)
        if not delay_us and not loss:
            return
        if loss >= 100 and not delay_us:  # no netem needed: a class whose queue holds nothing
            ipr.tc("add", "htb", index, 0x10000, default=0x20)
            ipr.tc("add-class", "htb", index, 0x10020, parent=0x10000, rate="10gbit",
                   ceil="10gbit")
            ipr.tc("add", "pfifo", index, 0x200000, parent=0x10020, limit=0)
            return
        try:
            ipr.tc("add", "netem", index, 0x10000, delay=delay_us, jitter=jitter_us, loss=loss,
                   limit=100000)
        except Exception as exc:
            raise errors.NotSupported(
                f"network delay and loss need the kernel's netem queue "
                f"(CONFIG_NET_SCH_NETEM): {exc}") from exc

    return apply


def _blackhole(ip: str, add: bool) -> Callable[[Any], None]:
    def apply(ipr: Any) -> None:
        if add:
            ipr.route("replace", dst=ip, dst_len=32, type="blackhole")
        else:
            with contextlib.suppress(Exception):
                ipr.route("del", dst=ip, dst_len=32, type="blackhole")

    return apply


# -- containers ---------------------------------------------------------------------------------
class DockerContainer:
    """A container in the engine. ``name`` is the name other containers resolve; the
    engine-level name (``engine_name``) carries a unique suffix."""

    def __init__(self, engine: DockerEngine, cid: str, *, name: str, engine_name: str,
                 hostname: str, image: Any, network: DockerNetwork | None,
                 own_network: DockerNetwork | None, network_mode: str | None):
        self.engine = engine
        self.id = cid
        self.name = name
        self.engine_name = engine_name
        self.hostname = hostname
        self._image = image
        self.network = network
        self._own_network = own_network
        self.network_mode = network_mode
        self._removed = False

    def __repr__(self) -> str:
        return f"<DockerContainer {self.name} {self.id[:12]}>"

    @property
    def _api(self) -> Any:
        return self.engine.api

    def inspect(self) -> dict[str, Any]:
        """The engine's ``docker inspect`` of this container."""
        docker = _docker()
        try:
            return self._api.inspect_container(self.id)
        except docker.errors.NotFound as exc:
            raise errors.ContainerError(f"container {self.name} is gone: {_message(exc)}",
                                        container=self.id) from exc
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"container {self.name}: {_message(exc)}",
                                        container=self.id) from exc

    def _state(self) -> dict[str, Any] | None:
        if self._removed:
            return None
        docker = _docker()
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
        return "exited" if status == "dead" else status

    @property
    def exit_code(self) -> int | None:
        state = self._state()
        if state is None or state.get("Status") not in ("exited", "dead"):
            return None
        return int(state.get("ExitCode", 0))

    @property
    def health(self) -> str | None:
        state = self._state()
        health = (state or {}).get("Health")
        return health.get("Status") if health else None

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
        docker = _docker()
        argv = _argv(cmd)
        if not argv:
            raise errors.ContainerError("exec: no command given", container=self.id)
        try:
            exec_id = self._api.exec_create(
                self.id, argv, stdin=stdin is not None, user=user or "",
                environment=[f"{k}={v}" for k, v in (env or {}).items()] or None,
                workdir=workdir)["Id"]
            raw = self._api.exec_start(exec_id, socket=True)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # not running: say how it ended
                self.check_running()
            raise errors.ContainerError(f"exec {argv!r} in {self.name}: {_message(exc)}",
                                        container=self.id) from exc
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
        docker = _docker()
        try:
            data = self._api.logs(self.id, stdout=True, stderr=True)
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"logs of {self.name}: {_message(exc)}",
                                        container=self.id) from exc
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
        api = self._api
        res = api.head(api._url("/containers/{0}/archive", self.id), params={"path": path},
                       timeout=api.timeout)
        if res.status_code == 404:
            return None
        api._raise_for_status(res)
        header = res.headers.get("X-Docker-Container-Path-Stat")
        return json.loads(base64.b64decode(header)) if header else {}

    def copy_to(self, src: str | Path, dest: str) -> None:
        """Copy a host file or directory in, like ``docker cp``: into ``dest`` if it is a
        directory there, else as ``dest``."""
        docker = _docker()
        src = os.fspath(src)
        if not os.path.lexists(src):
            raise FileNotFoundError(f"copy_to: {src} does not exist on the host")
        try:
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
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"copy_to {self.name}:{dest}: {_message(exc)}",
                                        container=self.id) from exc

    def copy_from(self, src: str, dest: str | Path) -> None:
        """Copy a file or directory out (running or exited): into ``dest`` if it is a
        directory, else as ``dest``."""
        docker = _docker()
        try:
            stream, _ = self._api.get_archive(self.id, src)
            data = b"".join(stream)
        except docker.errors.NotFound as exc:
            raise FileNotFoundError(
                f"copy_from: {src} does not exist in container {self.name}") from exc
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"copy_from {self.name}:{src}: {_message(exc)}",
                                        container=self.id) from exc
        target = Path(dest)
        if target.is_dir():
            root, rename = target, None
        else:
            root, rename = target.parent, target.name
        _extract(data, root, rename)

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self, timeout: float = 10) -> None:
        docker = _docker()
        try:
            self._api.stop(self.id, timeout=max(0, round(timeout)))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"stop {self.name}: {_message(exc)}",
                                        container=self.id) from exc

    def kill(self, signal: int = 9) -> None:
        """Send ``signal``; a container that is not running is left as it is."""
        docker = _docker()
        try:
            self._api.kill(self.id, signal=int(signal))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # not running
                return
            raise errors.ContainerError(f"kill {self.name}: {_message(exc)}",
                                        container=self.id) from exc

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, once the container has exited."""
        docker = _docker()
        import requests

        if self.status == "created":
            raise errors.ContainerError(f"container {self.name} never started",
                                        container=self.id)
        try:
            result = self._api.wait(self.id, timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if timeout is None:
                raise errors.EngineUnavailable(
                    f"lost the Docker engine at {self.engine.base_url} while waiting for "
                    f"{self.name}: {exc}") from exc
            raise errors.WaitTimeout(f"container {self.name} still runs after {timeout}s",
                                     logs=self.logs(), container=self.id) from exc
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"wait {self.name}: {_message(exc)}",
                                        container=self.id) from exc
        return int(result.get("StatusCode", -1))

    def check_running(self) -> None:
        """ContainerError (exit code, log tail) when the container is no longer running."""
        state = self._state()
        if state is None:
            raise errors.ContainerError(f"container {self.name} was removed", container=self.id)
        if state.get("Status") in ("exited", "dead"):
            code = int(state.get("ExitCode", 0))
            detail = f": {state['Error']}" if state.get("Error") else ""
            raise errors.ContainerError(
                f"container {self.name} exited with code {code}{detail}",
                exit_code=code, logs=self.logs(), container=self.id)

    def keep(self) -> str:
        """Leave this container running after the engine closes, out of the reaper's reach
        (its engine-level name gets the ``.kept`` suffix); returns its id."""
        docker = _docker()
        if not self.engine_name.endswith(KEPT_SUFFIX):
            try:
                self._api.rename(self.id, self.engine_name + KEPT_SUFFIX)
            except docker.errors.APIError as exc:
                raise errors.ContainerError(f"keep {self.name}: {_message(exc)}",
                                            container=self.id) from exc
            self.engine_name += KEPT_SUFFIX
        self.engine._forget(self)
        if self._own_network is not None:
            self.engine._forget(self._own_network)
        return self.id

    def remove(self) -> None:
        """Kill and remove, with its anonymous volumes (and its own network, if it had one)."""
        docker = _docker()
        if self._removed:
            return
        self._removed = True
        try:
            self._api.remove_container(self.id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in _message(exc):
                raise errors.ContainerError(f"remove {self.name}: {_message(exc)}",
                                            container=self.id) from exc
        finally:
            self.engine._forget(self)
        if self._own_network is not None:
            self._own_network.remove()


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
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(root, members=members, filter="tar")
        else:  # pragma: no cover - older patch releases of 3.10/3.11
            tar.extractall(root, members=members)


# -- networks -----------------------------------------------------------------------------------
class DockerNetwork:
    """A user-defined bridge network; faults are made inside the members' namespaces."""

    def __init__(self, engine: DockerEngine, nid: str, *, name: str, engine_name: str,
                 internal_use: bool = False):
        self.engine = engine
        self.id = nid
        self.name = name
        self.engine_name = engine_name
        self.internal_use = internal_use
        self._removed = False
        self._partitions: set[tuple[str, str]] = set()  # (container id, peer ip)
        self._faults: dict[str, dict[str, float]] = {}
        self._lines: dict[str, Any] = {}  # container id -> DelayLine, on kernels without netem
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DockerNetwork {self.name} {self.id[:12]}>"

    @property
    def subnet(self) -> str:
        docker = _docker()
        try:
            info = self.engine.api.inspect_network(self.id)
        except docker.errors.APIError as exc:
            raise errors.NetworkError(f"network {self.name}: {_message(exc)}") from exc
        configs = (info.get("IPAM") or {}).get("Config") or []
        return configs[0]["Subnet"] if configs else ""

    def _member(self, container: Any) -> tuple[int, str, str]:
        """(pid, interface, ip) of ``container`` on this network, for a local engine."""
        if not isinstance(container, DockerContainer) or container.engine is not self.engine:
            raise errors.NetworkError(f"{container!r} is not a container of this engine")
        self.engine.require_local("network faults")
        info = container.inspect()
        member = (info["NetworkSettings"].get("Networks") or {}).get(self.engine_name)
        if not member:
            raise errors.NetworkError(f"{container.name!r} is not on network {self.name!r}")
        pid = self.engine.local_pid(container, info)
        if not pid:
            raise errors.NetworkError(
                f"{container.name!r} is not running; faults need a running container")
        return pid, self._ifname(pid, member.get("MacAddress", "")), member["IPAddress"]

    @staticmethod
    def _ifname(pid: int, mac: str) -> str:
        def find(ipr: Any) -> str:
            for link in ipr.get_links():
                if link.get_attr("IFLA_ADDRESS") == mac.lower():
                    return link.get_attr("IFLA_IFNAME")
            return "eth0"

        return in_netns(pid, find)

    def partition(self, a: Any, b: Any) -> None:
        """Drop all traffic between ``a`` and ``b`` (a blackhole route in each) until heal()."""
        pid_a, _, ip_a = self._member(a)
        pid_b, _, ip_b = self._member(b)
        if a.id == b.id:
            raise errors.NetworkError(f"cannot partition {a.name!r} from itself")
        with self._lock:
            in_netns(pid_a, _blackhole(ip_b, True))
            self._partitions.add((a.id, ip_b))
            in_netns(pid_b, _blackhole(ip_a, True))
            self._partitions.add((b.id, ip_a))

    def heal(self) -> None:
        """Undo every partition of this network."""
        with self._lock:
            for cid, ip in sorted(self._partitions):
                pid = self.engine.local_pid(self.engine.containers.get(cid))
                if pid:
                    in_netns(pid, _blackhole(ip, False))
            self._partitions.clear()

    def _apply(self, container: Any, **change: float) -> None:
        pid, ifname, _ = self._member(container)
        with self._lock:
            faults = {**self._faults.get(container.id, {}), **change}
            delay, jitter = float(faults.get("delay", 0)), float(faults.get("jitter", 0))
            loss = float(faults.get("loss", 0))
            line = self._lines.get(container.id)
            if line is not None and (delay or 0 < loss < 100):
                line.set(delay, jitter, loss)  # already in userspace: just new numbers
            else:
                self._stop_line(container.id, pid, ifname)
                try:
                    in_netns(pid, _set_netem(ifname, int(delay * 1000), int(jitter * 1000),
                                             loss))
                except errors.NotSupported:  # no netem here: the userspace delay line
                    self._start_line(container.id, pid, ifname).set(delay, jitter, loss)
            self._faults[container.id] = faults

    def _start_line(self, container_id: str, pid: int, ifname: str) -> Any:
        from .native.faults import start_delay_line

        tag = secrets.token_hex(5)
        line = in_netns(pid, lambda ipr: start_delay_line(ipr, ifname, tag))
        self._lines[container_id] = line
        return line

    def _stop_line(self, container_id: str, pid: int | None, ifname: str) -> None:
        from .native.faults import stop_delay_line

        line = self._lines.pop(container_id, None)
        if line is None:
            return
        if pid:
            with contextlib.suppress(errors.PycontainError):
                in_netns(pid, lambda ipr: stop_delay_line(ipr, ifname, line))
                return
        line.close()  # its namespace is gone with the container: only our sockets remain

    def delay(self, container: Any, ms: int, jitter_ms: int = 0) -> None:
        """Delay every packet ``container`` sends by ``ms`` (± ``jitter_ms``); 0 undoes it."""
        if ms < 0 or jitter_ms < 0:
            raise errors.NetworkError(f"delay: ms and jitter_ms must be >= 0, got {ms}, "
                                      f"{jitter_ms}")
        self._apply(container, delay=ms, jitter=jitter_ms)

    def loss(self, container: Any, percent: float) -> None:
        """Drop ``percent`` % of the packets ``container`` sends; 0 undoes it."""
        if not 0 <= percent <= 100:
            raise errors.NetworkError(f"loss: percent must be between 0 and 100, got {percent}")
        self._apply(container, loss=percent)

    def remove(self, wait: bool = True) -> None:
        """Remove the network (members still on it are disconnected first). A network that a
        kept container is on stays for it; the reaper removes it once that container is gone."""
        docker = _docker()
        if self._removed:
            return
        self._removed = True
        for line in self._lines.values():  # the namespaces go with their containers
            line.close()
        self._lines.clear()
        api = self.engine.api
        try:
            info = api.inspect_network(self.id)
            kept = False
            for cid, member in (info.get("Containers") or {}).items():
                if str(member.get("Name", "")).endswith(KEPT_SUFFIX):
                    kept = True
                    continue
                with contextlib.suppress(docker.errors.APIError):
                    api.disconnect_container_from_network(cid, self.id, force=True)
            if not kept:
                api.remove_network(self.id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise errors.NetworkError(f"remove network {self.name}: {_message(exc)}") from exc
        finally:
            self.engine._forget(self)


# -- the engine ---------------------------------------------------------------------------------
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
        if steps:
            with contextlib.suppress(OSError):
                line_no = dockerfile_line(dockerfile.read_text(errors="replace"), steps[-1])
    code = None
    match = re.search(r"(?:exit code|returned a non-zero code): (\d+)", output)
    if match:
        code = int(match.group(1))
    reason = next((ln.strip() for ln in reversed(lines)
                   if re.search(r"error|failed|not found|unknown", ln, re.I)),
                  lines[-1].strip() if lines else "the build failed")
    return reason.removeprefix("ERROR: ").strip(), line_no, code


class DockerEngine:
    """The engine protocol over a Docker Engine (local or remote)."""

    name = "docker"

    def __init__(self, settings: Any, *, base_url: str | None = None,
                 session_id: str | None = None, reap: bool = True):
        from .backends import docker_sockets
        from .config import Settings

        self.settings = settings if settings is not None else Settings()
        self.session_id = session_id or secrets.token_hex(6)
        self.base_url = base_url or (docker_sockets() or [DEFAULT_HOST])[0]
        self.containers: dict[str, DockerContainer] = {}
        self.networks: dict[str, DockerNetwork] = {}
        self._lock = threading.Lock()
        self._version: dict[str, Any] = {}
        self.api = self._connect()
        self.reaped: list[str] = self.reap() if reap else []

    def _connect(self) -> Any:
        docker = _docker()
        import requests

        kwargs = docker.utils.kwargs_from_env(environment={**os.environ,
                                                           "DOCKER_HOST": self.base_url})
        try:
            api = docker.APIClient(**kwargs, version="auto",
                                   timeout=max(60, int(self.settings.timeout)))
            self._version = api.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException,
                OSError) as exc:
            raise errors.EngineUnavailable(
                f"cannot reach a Docker engine at {self.base_url}: {exc}. Start Docker, or set "
                "DOCKER_HOST to a running engine") from exc
        return _Api(api, self.base_url)

    # -- where things are -----------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """Whether the engine runs on this host (a unix socket here, not a Desktop VM)."""
        if not sys.platform.startswith("linux"):
            return False
        if not self.base_url.startswith("unix://"):
            return False
        return "desktop" not in str(self._version.get("Platform", {}).get("Name", "")).lower()

    @property
    def address_host(self) -> str:
        """The host where published ports are reached from this process."""
        url = urlsplit(self.base_url)
        if url.scheme in ("tcp", "http", "https", "ssh") and url.hostname:
            return url.hostname
        return "127.0.0.1"

    @property
    def loopback(self) -> bool:
        """Whether published ports are reached over this host's loopback."""
        host = self.address_host
        return host == "localhost" or host == "::1" or host.startswith("127.")

    def local_pid(self, container: DockerContainer | None,
                  info: Mapping[str, Any] | None = None) -> int | None:
        """The host pid of the container's first process, when the engine is local and the
        process is visible here (its cgroup names the container)."""
        if container is None or not self.is_local:
            return None
        try:
            info = info or container.inspect()
        except errors.ContainerError:
            return None
        pid = int(info["State"].get("Pid") or 0)
        if not pid:
            return None
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        return pid if container.id in cgroup or info["Id"] in cgroup else None

    def require_local(self, what: str) -> None:
        if not self.is_local:
            raise errors.NotSupported(
                f"{what} need the container's network namespace, which only a Docker engine on "
                f"this host gives (this one is at {self.base_url}); use the native engine or a "
                "local Docker")

    # -- labels, bookkeeping --------------------------------------------------------------------
    def labels(self, **extra: str) -> dict[str, str]:
        pid = os.getpid()
        labels = {LABEL_SESSION: self.session_id, LABEL_PID: str(pid),
                  LABEL_HOST: socket.gethostname()}
        start = process_start(pid)
        if start:
            labels[LABEL_START] = start
        return {**labels, **extra}

    def _forget(self, thing: DockerContainer | DockerNetwork) -> None:
        with self._lock:
            if isinstance(thing, DockerContainer):
                self.containers.pop(thing.id, None)
            else:
                self.networks.pop(thing.id, None)

    # -- protocol -------------------------------------------------------------------------------
    def describe(self) -> str:
        version = self._version.get("Version", "?")
        api = self._version.get("ApiVersion", "?")
        found = builder()
        builds = (f"BuildKit via {found[0]}" + (" buildx" if found[1] == "buildx" else "")
                  if found else "the classic builder (no docker CLI with BuildKit found)")
        return f"Docker Engine {version} (API {api}) at {self.base_url}; builds with {builds}"

    def image(self, ref: Any) -> DockerImage:
        """The engine's image ``ref`` (a reference or an image object)."""
        docker = _docker()
        key = ref if isinstance(ref, str) else (getattr(ref, "id", None)
                                                or (getattr(ref, "tags", None) or [None])[0])
        if not key:
            raise errors.ImageNotFound(f"{ref!r} is neither an image reference nor an image")
        try:
            return DockerImage(self.api.inspect_image(key))
        except docker.errors.NotFound as exc:
            raise errors.ImageNotFound(f"image {key} is not in the engine: {_message(exc)}") \
                from exc

    def pull(self, ref: str) -> DockerImage:
        """Pull ``ref`` through the engine (with its own mirrors and credentials)."""
        docker = _docker()
        repository, tag = docker.utils.parse_repository_tag(ref)
        if not tag and "@" not in ref:
            tag = "latest"
        try:
            events = self.api.pull(repository, tag=tag, stream=True, decode=True)
            for event in events:
                if "error" in event:
                    raise errors.PullError(f"pull {ref}: {event['error']}", reference=ref)
        except docker.errors.APIError as exc:
            raise errors.PullError(f"pull {ref}: {_message(exc)}", reference=ref) from exc
        target = ref if "@" in ref else f"{repository}:{tag}"
        return self.image(target)

    def _ensure_image(self, image: Any) -> str:
        """The engine's id for ``image``, pulled as the ``pull`` setting says; an image object
        (``.id``, ``.tags``) that the engine lacks is pulled by its first tag."""
        if not isinstance(image, str):
            tags = list(getattr(image, "tags", None) or [])
            key = getattr(image, "id", None) or (tags[0] if tags else None)
            if not key:
                raise errors.ImageNotFound(f"{image!r} is neither an image reference nor an "
                                           "image")
            try:
                return self.image(key).id
            except errors.ImageNotFound:
                if not tags:
                    raise errors.ImageNotFound(f"image {key} is not in the Docker engine at "
                                               f"{self.base_url}, and has no tag to pull it by"
                                               ) from None
                return self._ensure_image(tags[0])
        policy = getattr(self.settings, "pull", "missing")
        if policy == "always":
            return self.pull(image).id
        try:
            return self.image(image).id
        except errors.ImageNotFound:
            if policy == "never":
                raise errors.ImageNotFound(
                    f"image {image} is not in the Docker engine and pull=never") from None
            return self.pull(image).id

    def build(
        self,
        context: str | Path,
        *,
        dockerfile: str | Path | None = None,
        target: str | None = None,
        build_args: Mapping[str, str] | None = None,
        tag: str | None = None,
        no_cache: bool = False,
        secrets: Mapping[str, str | Path] | None = None,
    ) -> DockerImage:
        """Build with BuildKit through the ``docker`` command line, or the engine's classic
        builder where no such command line is installed (it has no ``secrets``)."""
        context = Path(context).resolve()
        if not context.is_dir():
            raise errors.BuildError(f"the build context {context} is not a directory")
        path = Path(dockerfile) if dockerfile else Path("Dockerfile")
        if not path.is_absolute():
            path = context / path if (context / path).exists() or not path.exists() else \
                path.resolve()
        if not path.is_file():
            raise errors.DockerfileError("no such Dockerfile", path=str(path))
        found = builder()
        if found:
            image_id = self._build_cli(found, context, path, target, build_args, tag, no_cache,
                                       secrets or {})
        elif secrets:
            raise errors.NotSupported("build secrets need BuildKit: install the docker command "
                                      "line (Debian: docker.io) beside the engine")
        else:
            image_id = self._build_classic(context, path, target, build_args, tag, no_cache)
        return self.image(image_id)

    def _build_cli(self, found: tuple[str, str], context: Path, path: Path, target: str | None,
                   build_args: Mapping[str, str] | None, tag: str | None,
                   no_cache: bool, secrets: Mapping[str, str | Path]) -> str:
        binary, mode = found
        with tempfile.TemporaryDirectory(prefix="pycontain-build-") as tmp:
            iidfile = os.path.join(tmp, "iid")
            argv = [binary, *(["buildx", "build", "--load"] if mode == "buildx" else ["build"]),
                    "--progress=plain", "--iidfile", iidfile, "-f", str(path)]
            if target:
                argv += ["--target", target]
            for key, value in (build_args or {}).items():
                argv += ["--build-arg", f"{key}={value}"]
            if tag:
                argv += ["-t", tag]
            if no_cache:
                argv.append("--no-cache")
            for ident, source in secrets.items():
                argv += ["--secret", f"id={ident},src={os.fspath(source)}"]
            argv.append(str(context))
            env = {**os.environ, "DOCKER_HOST": self.base_url, "DOCKER_BUILDKIT": "1"}
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

    def _build_classic(self, context: Path, path: Path, target: str | None,
                       build_args: Mapping[str, str] | None, tag: str | None,
                       no_cache: bool) -> str:
        docker = _docker()
        lines: list[str] = []
        image_id = None
        failure = None
        try:
            for event in self.api.build(path=str(context), dockerfile=str(path), tag=tag,
                                        target=target, buildargs=dict(build_args or {}),
                                        nocache=no_cache, rm=True, forcerm=True, decode=True):
                if "stream" in event:
                    lines.append(event["stream"])
                if "error" in event:
                    failure = event["error"]
                    lines.append(event["error"] + "\n")
                if "aux" in event and "ID" in event["aux"]:
                    image_id = event["aux"]["ID"]
        except docker.errors.APIError as exc:
            failure = _message(exc)
            lines.append(failure + "\n")
        output = "".join(lines)
        if failure or not image_id:
            _, line, code = build_failure(output, path)
            raise errors.BuildError(f"build of {context} failed: {failure or 'no image'}",
                                    path=str(path), line=line, exit_code=code, logs=output)
        return image_id

    def network(self, name: str | None = None) -> DockerNetwork:
        """A user-defined bridge network, labelled as ours."""
        return self._network(name)

    def _network(self, name: str | None, internal_use: bool = False) -> DockerNetwork:
        docker = _docker()
        given = name or f"pycontain-{_suffix()}"
        engine_name = f"{given}-{_suffix()}" if name else given
        try:
            nid = self.api.create_network(engine_name, driver="bridge",
                                          labels=self.labels(**{LABEL_NAME: given}))["Id"]
        except docker.errors.APIError as exc:
            raise errors.NetworkError(f"create network {given}: {_message(exc)}") from exc
        network = DockerNetwork(self, nid, name=given, engine_name=engine_name,
                                internal_use=internal_use)
        with self._lock:
            self.networks[nid] = network
        return network

    def run(self, spec: RunSpec) -> DockerContainer:
        """Create and start a container; a command that cannot start raises ContainerError
        (Docker's message, exit code 127 or 126) and leaves nothing behind."""
        docker = _docker()
        image_key = self._ensure_image(spec.image)
        given = spec.name or f"pycontain-{_suffix()}"
        engine_name = f"{given}-{_suffix()}" if spec.name else given
        host_ip = "127.0.0.1" if self.loopback else ""  # a remote host: every interface
        ports = _port_bindings(spec.ports, host_ip)
        binds, memory = _binds(spec.mounts), _memory(spec.memory)  # bad input: before anything
        try:
            nano_cpus = int(float(spec.cpus) * 1e9) if spec.cpus else None
            pids = int(spec.pids) if spec.pids else None
        except (TypeError, ValueError):
            raise errors.ConfigError(f"cpus={spec.cpus!r}, pids={spec.pids!r}: expected numbers"
                                     ) from None
        network = spec.network
        own_network = None
        network_mode = None
        endpoint_aliases = [given, *(spec.aliases or ())]
        if isinstance(network, DockerNetwork):
            network_mode = network.engine_name
        elif isinstance(network, str):  # "host", "none" or an engine's network name
            network_mode = network
        elif network is None:
            if ports:
                own_network = self._network(None, internal_use=True)
                network_mode = own_network.engine_name
            else:
                network_mode = "none"
        else:
            raise errors.NetworkError(f"network={network!r}: expected a network of this engine, "
                                      "'host', 'none' or None")
        if network_mode in ("host", "none") and ports:
            if network_mode == "none":
                raise errors.NetworkError("ports cannot be published with network='none'")
            ports = {}
        hostname = spec.hostname or (given if network_mode != "host" and _hostname_ok(given)
                                     else None)
        try:
            host_config = self.api.create_host_config(
                network_mode=network_mode,
                port_bindings=ports or None,
                binds=binds,
                tmpfs=dict(spec.tmpfs) if spec.tmpfs else None,
                read_only=bool(spec.read_only),
                init=bool(spec.init) or None,
                mem_limit=memory,
                nano_cpus=nano_cpus,
                pids_limit=pids,
            )
            networking = None
            if network_mode not in ("host", "none", None) and not network_mode.startswith(
                    "container:"):
                networking = self.api.create_networking_config({
                    network_mode: self.api.create_endpoint_config(aliases=endpoint_aliases)})
            created = self.api.create_container(
                image_key,
                command=_argv(spec.command) if spec.command is not None else None,
                entrypoint=(shlex.split(spec.entrypoint) if isinstance(spec.entrypoint, str)
                            else list(spec.entrypoint) if spec.entrypoint is not None else None),
                environment={str(k): str(v) for k, v in (spec.env or {}).items()} or None,
                hostname=hostname,
                user=spec.user or None,
                working_dir=spec.workdir or None,
                ports=[int(p) for p in ports] or None,
                labels=self.labels(**{LABEL_NAME: given}),
                name=engine_name,
                host_config=host_config,
                networking_config=networking,
            )
        except (docker.errors.APIError, docker.errors.DockerException) as exc:
            if own_network is not None:
                own_network.remove()
            if isinstance(exc, docker.errors.ImageNotFound):
                raise errors.ImageNotFound(f"run {given}: {_message(exc)}") from exc
            raise errors.ContainerError(f"run {given}: {_message(exc)}") from exc
        container = DockerContainer(
            self, created["Id"], name=given, engine_name=engine_name,
            hostname=hostname or created["Id"][:12], image=spec.image,
            network=spec.network if isinstance(spec.network, DockerNetwork) else None,
            own_network=own_network, network_mode=network_mode)
        with self._lock:
            self.containers[container.id] = container
        try:
            self.api.start(container.id)
        except docker.errors.APIError as exc:
            message = _message(exc)
            code = 127 if ("not found" in message or "no such file" in message) else 126
            with contextlib.suppress(Exception):
                code = int(self.api.inspect_container(container.id)["State"]["ExitCode"]) or code
            logs = ""
            with contextlib.suppress(Exception):
                logs = container.logs()
            container.remove()
            raise errors.ContainerError(f"run {given}: {message}", exit_code=code, logs=logs,
                                        container=container.id) from exc
        return container

    def keep(self, container: DockerContainer) -> str:
        """Leave ``container`` running after close(), out of the reaper's reach (keep-on-failure);
        returns its id, for ``docker exec -it ID sh`` and ``docker rm -f ID``."""
        if not isinstance(container, DockerContainer) or container.engine is not self:
            raise errors.ContainerError(f"{container!r} is not a container of this engine")
        return container.keep()

    # -- cleanup --------------------------------------------------------------------------------
    def _remove_labelled(self, match: Callable[[Mapping[str, str], str], bool]) -> list[str]:
        """Remove the containers, networks and volumes with our labels that ``match``
        (labels, engine-level name) selects."""
        docker = _docker()
        removed = []
        api = self.api
        for info in api.containers(all=True, filters={"label": LABEL_PID}):
            name = (info.get("Names") or ["?"])[0].lstrip("/")
            if match(info.get("Labels") or {}, name):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_container(info["Id"], force=True, v=True)
                    removed.append(f"container {name}")
        for info in api.networks(filters={"label": LABEL_PID}):
            if match(info.get("Labels") or {}, info["Name"]):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_network(info["Id"])
                    removed.append(f"network {info['Name']}")
        for info in (api.volumes(filters={"label": LABEL_PID}) or {}).get("Volumes") or []:
            if match(info.get("Labels") or {}, info["Name"]):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_volume(info["Name"], force=True)
                    removed.append(f"volume {info['Name']}")
        return removed

    def reap(self) -> list[str]:
        """Remove what owners that died on this host left (never a live owner's, never a kept
        container); returns what was removed."""
        here = socket.gethostname()

        def dead(labels: Mapping[str, str], name: str) -> bool:
            if labels.get(LABEL_HOST) != here or name.endswith(KEPT_SUFFIX):
                return False
            try:
                pid = int(labels.get(LABEL_PID, ""))
            except ValueError:
                return False
            return not owner_alive(pid, labels.get(LABEL_START))

        return self._remove_labelled(dead)

    def close(self) -> None:
        """Remove everything this engine made (kept containers excepted)."""
        for container in list(self.containers.values()):
            with contextlib.suppress(errors.PycontainError):
                container.remove()
        for network in list(self.networks.values()):
            with contextlib.suppress(errors.PycontainError):
                network.remove()
        with contextlib.suppress(Exception):
            self._remove_labelled(lambda labels, name: labels.get(LABEL_SESSION)
                                  == self.session_id and not name.endswith(KEPT_SUFFIX))
        with contextlib.suppress(Exception):
            self.api.close()

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- run() arguments ----------------------------------------------------------------------------
def _hostname_ok(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", name))


def _port_bindings(ports: Sequence[int] | Mapping[int, int] | None,
                   host_ip: str) -> dict[int, tuple[str, int | None]]:
    if not ports:
        return {}
    pairs = ports.items() if isinstance(ports, Mapping) else ((p, None) for p in ports)
    bindings: dict[int, tuple[str, int | None]] = {}
    for container_port, host_port in pairs:
        try:
            number = int(container_port)
            host = int(host_port) if host_port else None
        except (TypeError, ValueError):
            raise errors.ConfigError(
                f"ports: {container_port!r}: {host_port!r}: expected port numbers") from None
        if not 0 < number < 65536 or (host is not None and not 0 < host < 65536):
            raise errors.ConfigError(f"ports: {container_port!r}: out of range 1-65535")
        bindings[number] = (host_ip, host)
    return bindings


def _binds(mounts: Sequence[str] | None) -> list[str] | None:
    """``HOST:CONTAINER[:ro]`` with an absolute host path, as the engine wants it."""
    if not mounts:
        return None
    binds = []
    for mount in mounts:
        parts = str(mount).split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") or (
                len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise errors.ConfigError(
                f"mounts: {mount!r}: expected HOST:CONTAINER or HOST:CONTAINER:ro, with an "
                "absolute container path")
        host = Path(parts[0]).expanduser().resolve()
        if not host.exists():
            raise errors.ConfigError(f"mounts: {mount!r}: {host} does not exist on the host")
        binds.append(":".join([str(host), *parts[1:]]))
    return binds


def _memory(value: int | str | None) -> int | None:
    if value is None:
        return None
    docker = _docker()
    try:
        number = docker.utils.parse_bytes(value) if isinstance(value, str) else int(value)
    except (docker.errors.DockerException, ValueError, TypeError):
        raise errors.ConfigError(f"memory: {value!r}: expected bytes or a size like '256m'") \
            from None
    if number <= 0:
        raise errors.ConfigError(f"memory: {value!r}: must be positive")
    return number
