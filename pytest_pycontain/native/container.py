"""``NativeContainer``: the engine-side handle of one container of the native engine.

It talks to the container's shim over a control socket (signals, exec requests, the exit
code), reads the log files the shim writes, and reaches the container's files through
``/proc/SHIM/root`` (the shim stays, holding the mount namespace, until removal).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import ExecResult
from ..errors import ConfigError, ContainerError, NotSupported, WaitTimeout
from ..imageconfig import shell_argv, split_env
from . import state

if TYPE_CHECKING:
    from .cgroups import Limits
    from .engine import NativeEngine


def signal_number(value: str | int | None, default: int = signal.SIGTERM) -> int:
    """``"SIGQUIT"``, ``"QUIT"``, ``"3"`` or 3 -> 3 (Docker's StopSignal forms)."""
    if value is None or value == "":
        return default
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    name = str(value).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise ConfigError(f"StopSignal {value!r}: not a signal name") from None


def image_name(image: Any) -> str:
    tags = getattr(image, "tags", None)
    if tags:
        return str(tags[0])
    return str(getattr(image, "id", None) or image)


class AttachedLimits:
    """The cgroups of a container we did not make: only their paths are known."""

    def __init__(self, paths: list[Path]):
        self._paths = paths

    def paths(self) -> list[Path]:
        return list(self._paths)

    def oom_killed(self) -> bool:
        return False


class NativeContainer:
    """The engine-side handle of one container (implements ``engine.Container``)."""

    def __init__(self, engine: NativeEngine, container_id: str, name: str, hostname: str,
                 image: Any, config: Mapping[str, Any], directory: Path, env: dict[str, str],
                 user: str, workdir: str, limits: Limits):
        self.engine = engine
        self.id = container_id
        self.name = name
        self.hostname = hostname
        self._image = image
        self.config = config
        self.dir = directory
        self.env = env
        self.user = user
        self.workdir = workdir
        self.limits = limits
        self.stop_signal = signal_number(config.get("StopSignal"))
        self.pid: int | None = None
        self.shim: int | None = None
        self.kept = False
        self._ctl: socket.socket | None = None
        self._ctl_lock = threading.Lock()
        self._exit_code: int | None = None
        self._removed = False
        self._health: str | None = None
        self._health_thread: threading.Thread | None = None
        self._attached = False  # a handle from attach(): no control socket of ours
        self._shim_fd: int | None = None
        self._started_at: int | None = None
        self._ip: str | None = None
        self._networks: list[Any] = []  # the networks it joined (detached at removal)
        self._proxies: dict[int, Any] = {}  # published ports: container port -> PortProxy

    def __repr__(self) -> str:
        return f"<NativeContainer {self.id[:12]} {self.name} {self.status}>"

    # --- start ---

    def _start(self, plan: dict[str, Any],
               before_start: Callable[[NativeContainer], None] | None = None) -> None:
        warm = self.engine._take_warm() if plan["network"] != "host" else None
        if warm is not None:  # a shim with its namespaces and PID 1 made ahead
            try:
                warm.send(json.dumps(plan).encode())
                self._ctl = warm
            except OSError:
                warm.close()
        if self._ctl is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._ctl = ours
            try:
                self.engine._send(plan, [theirs.fileno()])
            finally:
                theirs.close()
        try:
            reply = self._receive(timeout=self.engine.settings.timeout)
            if reply is not None and "created" in reply and before_start is not None:
                self.pid, self.shim = reply["created"], reply["shim"]
                before_start(self)
                self._tell({"op": "go"})
                reply = self._receive(timeout=self.engine.settings.timeout)
        except TimeoutError:
            raise ContainerError(f"container {self.name} did not start within "
                                 f"{self.engine.settings.timeout}s", container=self.id) from None
        if reply is None or "started" not in reply:
            error = (reply or {}).get("error") or "the container's helper exited without a word"
            code = (reply or {}).get("exit_code")
            raise ContainerError(f"container {self.name} ({image_name(self._image)}): {error}",
                                 exit_code=code, container=self.id)
        self.pid, self.shim = reply["started"], reply["shim"]
        with contextlib.suppress(OSError):  # to wait for the shim's very end at removal
            self._shim_fd = os.pidfd_open(self.shim)
        for role, pid in (("shim", self.shim), ("pid1", self.pid)):
            self.engine.journal.record("process", container=self.id, pid=pid, role=role,
                                       start=state.process_start_time(pid))
        if self.config.get("Healthcheck"):
            self._start_healthcheck(self.config["Healthcheck"])

    def _receive(self, timeout: float | None) -> dict[str, Any] | None:
        """One message from the shim (None on EOF); raises TimeoutError."""
        assert self._ctl is not None
        self._ctl.settimeout(timeout)
        try:
            data = self._ctl.recv(65536)
        except TimeoutError:
            raise TimeoutError from None
        except OSError:
            data = b""
        if not data:
            return None
        message = json.loads(data)
        if "exited" in message:
            self._exit_code = message["exited"]
        return message

    def _pump(self, timeout: float | None = 0) -> bool:
        """Read what the shim said; True once the container has exited."""
        if self._attached:
            return self._attached_exited()
        with self._ctl_lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._exit_code is None and self._ctl is not None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    if self._receive(left) is None:
                        break
                except TimeoutError:
                    break
                except BlockingIOError:
                    break
            return self._exit_code is not None

    def _attached_exited(self) -> bool:
        if self._exit_code is not None:
            return True
        if self.pid is not None and state.process_start_time(self.pid) == self._started_at:
            return False
        try:
            self._exit_code = int((self.dir / "exit").read_text())
        except (OSError, ValueError):
            self._exit_code = 128 + signal.SIGKILL
        return True

    def _tell(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        if self._ctl is None:
            return
        with contextlib.suppress(OSError):
            data = json.dumps(message).encode()
            if fds:
                socket.send_fds(self._ctl, [data], fds)
            else:
                self._ctl.send(data)

    # --- the Container protocol ---

    @property
    def image(self) -> Any:
        return self._image

    @property
    def ip(self) -> str | None:
        """Its address on its (first) network; None with loopback only or the host's network."""
        return self._ip

    @property
    def status(self) -> str:
        if self._removed:
            return "removed"
        if self.pid is None:
            return "created"
        return "exited" if self._pump(0) else "running"

    @property
    def exit_code(self) -> int | None:
        self._pump(0)
        return self._exit_code

    @property
    def oom_killed(self) -> bool:
        return self.limits.oom_killed()

    @property
    def health(self) -> str | None:
        return self._health

    def ensure_running(self) -> None:
        """Raise ``ContainerError`` (exit code, log tail; OOM said so) unless it runs."""
        if self._removed:
            raise ContainerError(f"container {self.name} was removed", container=self.id)
        if not self._pump(0):
            return
        why = "was killed by the OOM killer (memory limit reached)" if self.oom_killed else (
            f"exited with code {self._exit_code}")
        raise ContainerError(f"container {self.name} is not running: it {why}",
                             exit_code=self._exit_code, logs=self.logs(), container=self.id)

    def exec(self, cmd: str | Sequence[str], *, user: str | None = None,
             env: Mapping[str, str] | None = None, workdir: str | None = None,
             stdin: bytes | str | None = None, timeout: float | None = None) -> ExecResult:
        self.ensure_running()
        argv = shell_argv(cmd)
        if not argv:
            raise ContainerError("exec: no command given", container=self.id)
        plan = {"op": "exec", "pid": self.pid, "argv": argv,
                "env": {**self.env, **split_env(env)},
                "user": self.user if user is None else user,
                "workdir": workdir or self.workdir,
                "cgroups": [str(p) for p in self.limits.paths()]}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            if self._attached:  # not our shim: a zygote child joins the namespaces
                self.engine._send(plan, [theirs.fileno(), in_r, out_w, err_w])
            else:
                self._tell(plan, [theirs.fileno(), in_r, out_w, err_w])
        finally:
            theirs.close()
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        return _collect(ours, in_w, out_r, err_r, data, timeout, argv, self)

    def exec_stdio(self, cmd: Sequence[str], *, user: str | None = None,
                   env: Mapping[str, str] | None = None, workdir: str | None = None) -> int:
        """Run ``cmd`` in the container on this process's own stdin/stdout/stderr (a terminal
        for ``pycontain exec ID sh``); returns its exit code."""
        self.ensure_running()
        plan = {"op": "exec", "pid": self.pid, "argv": [str(a) for a in cmd],
                "env": {**self.env, **split_env(env)},
                "user": self.user if user is None else user,
                "workdir": workdir or self.workdir,
                "cgroups": [str(p) for p in self.limits.paths()]}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            fds = [theirs.fileno(), 0, 1, 2]
            if self._attached:
                self.engine._send(plan, fds)
            else:
                self._tell(plan, fds)
        finally:
            theirs.close()
        try:
            while message := ours.recv(65536):
                reply = json.loads(message)
                if "exit" in reply:
                    return int(reply["exit"])
            return 126
        finally:
            ours.close()

    def logs(self) -> str:
        try:
            return (self.dir / "combined.log").read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stream_logs(self, *, follow: bool = True, poll: float = 0.02) -> Iterator[str]:
        """The combined log line by line as it grows, until the container exits (``follow``)
        or up to now."""
        path = self.dir / "combined.log"
        pending = b""
        with open(path, "rb") as file:
            while True:
                chunk = file.read(65536)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace") + "\n"
                    continue
                if not follow or self._removed or self._pump(0):
                    rest = file.read()
                    if rest or pending:
                        pending += rest
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            yield line.decode("utf-8", "replace") + "\n"
                        if pending:
                            yield pending.decode("utf-8", "replace")
                    return
                time.sleep(poll)

    @property
    def mountpoints(self) -> list[str]:
        """Container paths the engine created only to mount on (/etc/hosts, a tmpfs target...):
        what a build committing ``dir/upper`` leaves out of the layer."""
        try:
            return json.loads((self.dir / "mountpoints.json").read_text())
        except FileNotFoundError:
            return []

    def stdout_log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "stdout.log").read_bytes().decode("utf-8", "replace")
        return ""

    def stderr_log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "stderr.log").read_bytes().decode("utf-8", "replace")
        return ""

    def address(self, port: int) -> tuple[str, int]:
        """Where the test process reaches container port ``port``: its published proxy, or the
        port itself when the container shares the host's network."""
        proxy = self._proxies.get(int(port))
        if proxy is not None:
            return proxy.address
        if self.engine and self._network_host():
            return "127.0.0.1", int(port)
        published = ", ".join(map(str, sorted(self._proxies))) or "none"
        raise NotSupported(f"container {self.name}: port {port} is not published (published: "
                           f"{published}); pass ports=[{port}] to run()")

    def _leave_networks(self) -> None:
        """Close published ports and leave networks (best effort: removal must go on)."""
        for proxy in self._proxies.values():
            with contextlib.suppress(Exception):
                proxy.close()
        self._proxies.clear()
        gone = self._removed and (self.shim is None or not os.path.exists(f"/proc/{self.shim}"))
        for network in self._networks:
            with contextlib.suppress(Exception):
                network.detach(self.id, link_gone=gone)
        self._networks.clear()

    def probe_port(self, port: int) -> bool:
        """Whether something accepts TCP connections on ``port`` in the container's own network
        namespace (for ``wait.port``: no published port needed)."""
        if self.pid is None or self._removed or self._pump(0):
            return False
        from .proxy import probe_port

        return probe_port(f"/proc/{self.pid}/ns/net", port)

    def _network_host(self) -> bool:
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{self.pid}/ns/net") == os.readlink("/proc/self/ns/net")
        return False

    def _root(self) -> str:
        if self._removed or self.shim is None:
            raise ContainerError(f"container {self.name} was removed", container=self.id)
        return f"/proc/{self.shim}/root"

    def copy_to(self, src: str | os.PathLike, dest: str) -> None:
        """Copy a host file or directory into the container, like ``docker cp``: into ``dest``
        if it is a directory there, else as ``dest``."""
        from .rootfs import inside

        src = os.fspath(src)
        if not os.path.exists(src):
            raise FileNotFoundError(f"copy_to: {src} does not exist on the host")
        root = self._root()
        target = inside(root, dest)
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(src.rstrip("/")))
        _copy(src, target)

    def copy_from(self, src: str, dest: str | os.PathLike) -> None:
        """Copy a file or directory out of the container (running or exited)."""
        from .rootfs import inside

        source = inside(self._root(), src)
        if not os.path.lexists(source):
            raise FileNotFoundError(f"copy_from: {src} does not exist in container {self.name}")
        target = os.fspath(dest)
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(src.rstrip("/")) or "root")
        _copy(source, target)

    def kill(self, signal: int = 9) -> None:
        if self.pid is None or self._pump(0):
            return
        if self._attached:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, int(signal))
        else:
            self._tell({"op": "signal", "signal": int(signal)})

    def stop(self, timeout: float = 10) -> None:
        """The image's StopSignal, then SIGKILL after ``timeout`` seconds."""
        if self.pid is None or self._pump(0):
            return
        self.kill(self.stop_signal)
        if not self._wait_exit(timeout):
            self.kill(9)
            self._wait_exit(None)

    def _wait_exit(self, timeout: float | None) -> bool:
        if not self._attached:
            return self._pump(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pump(0):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def wait(self, timeout: float | None = None) -> int:
        if self.pid is None:
            raise ContainerError(f"container {self.name} never started", container=self.id)
        if not self._wait_exit(timeout):
            if self._exit_code is None and not self._attached and (
                    self._ctl is None or timeout is None):
                raise ContainerError(f"container {self.name}: lost its shim", container=self.id)
            raise WaitTimeout(f"container {self.name} still runs after {timeout}s",
                              logs=self.logs(), container=self.id)
        return self._exit_code  # type: ignore[return-value]

    def keep(self) -> str:
        """Hand this container to a keeper that outlives the engine (see NativeEngine.keep)."""
        if self._attached or self.kept:
            raise ContainerError(f"container {self.name} is not ours to keep", container=self.id)
        owner = f"keep-{self.id}"
        keeper = state.Journal(self.engine.state_root, owner=owner)
        for record in self.engine.journal.records(self.id):
            keeper.record(**record)
        # Its network's bridge stays for as long as the keeper holds it, and the keeper
        # answers the names of the moment on the network's DNS socket when we are gone.
        held: list[int] = []
        request: dict[str, Any] = {"op": "keep"}
        for network in self._networks[:1]:
            with contextlib.suppress(Exception):
                (self.dir / "hosts").write_text(network.hosts(self.id, self.hostname))
                held.append(network.netns_fd())
                dns_fd, names = network.dns_handover()
                held.append(dns_fd)
                request["dns"] = names  # its socket is the last fd
        try:
            self._tell(request, [keeper.lock_fd, *held])
        finally:
            for fd in held:
                os.close(fd)
        with self._ctl_lock:
            self._ctl.settimeout(5)
            while True:
                reply = self._receive(5)
                if reply is None or "kept" in reply:
                    break
        keeper.release()
        self.engine.journal.record("handed", container=self.id)
        self.kept = True
        if self._health_thread is not None:
            self._health = None
        return owner

    def remove(self) -> None:
        """Kill (SIGKILL), then remove every trace: processes, cgroups, files."""
        if self._removed:
            return
        self._removed = True
        if self.kept:
            state.remove_kept(self.engine.state_root, self.id)
            self.engine.containers.pop(self.id, None)
            return
        if self._attached:  # its owner is alive and cleans up once PID 1 is gone
            self._removed = False
            self.kill(signal.SIGKILL)
            self._wait_exit(10)
            self._removed = True
            return
        self._tell({"op": "exit"})
        with self._ctl_lock:  # the shim closes its end when PID 1 and it are gone
            while self._ctl is not None:
                try:
                    if self._receive(10) is None:
                        break
                except TimeoutError:
                    break
        if self._shim_fd is not None:  # EOF comes a moment before the process is gone
            select.select([self._shim_fd], [], [], 10)
        self._cleanup()

    def _cleanup(self) -> None:
        self._removed = True
        self._leave_networks()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._shim_fd is not None:
            os.close(self._shim_fd)
            self._shim_fd = None
        records = list(reversed(self.engine.journal.records(self.id)))
        for record in records:
            if record["kind"] == "cgroup":
                state.undo_one(record)
        self.engine.containers.pop(self.id, None)
        self.engine._discard(self.id, [r for r in records if r["kind"] == "dir"])

    # --- health ---

    def _start_healthcheck(self, check: Mapping[str, Any]) -> None:
        test = list(check.get("Test") or [])
        if not test or test[0] == "NONE":
            return
        if test[0] == "CMD-SHELL":
            argv: list[str] | str = " ".join(test[1:])
        elif test[0] == "CMD":
            argv = test[1:]
        else:
            argv = test
        self._health = "starting"
        self._health_thread = threading.Thread(target=self._healthcheck, args=(argv, check),
                                               name=f"health-{self.name}", daemon=True)
        self._health_thread.start()

    def _healthcheck(self, argv: list[str] | str, check: Mapping[str, Any]) -> None:
        """Docker's rules: first probe after one interval; failures in the start period do not
        count; ``retries`` failures in a row make it unhealthy, one success healthy."""
        second = 1e9
        interval = (check.get("Interval") or 30 * second) / second
        timeout = (check.get("Timeout") or 30 * second) / second
        start_period = (check.get("StartPeriod") or 0) / second
        start_interval = (check.get("StartInterval") or 5 * second) / second
        retries = check.get("Retries") or 3
        started = time.monotonic()
        failures = 0
        while not self._removed and not self.kept:
            in_start = time.monotonic() - started < start_period
            time.sleep(start_interval if in_start and self._health == "starting" else interval)
            if self._removed or self.kept or self._pump(0):
                return
            try:
                ok = self.exec(argv, timeout=timeout).exit_code == 0
            except Exception:
                ok = False
            if ok:
                failures = 0
                self._health = "healthy"
            elif not (time.monotonic() - started < start_period):
                failures += 1
                if failures >= retries:
                    self._health = "unhealthy"


def _copy(source: str, target: str) -> None:
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def _collect(ctl: socket.socket, in_w: int, out_r: int, err_r: int, data: bytes,
             timeout: float | None, argv: list[str], container: NativeContainer) -> ExecResult:
    """Feed stdin, gather stdout/stderr in the order they came, and the exit code."""
    selector = selectors.DefaultSelector()
    chunks: list[tuple[str, bytes]] = []
    pid = None
    exit_code = None
    opened = {in_w, out_r, err_r}

    def close(fd: int) -> None:
        if fd in opened:
            opened.discard(fd)
            os.close(fd)

    os.set_blocking(in_w, False)
    if data:
        selector.register(in_w, selectors.EVENT_WRITE, "stdin")
    else:
        close(in_w)
    selector.register(out_r, selectors.EVENT_READ, "stdout")
    selector.register(err_r, selectors.EVENT_READ, "stderr")
    selector.register(ctl, selectors.EVENT_READ, "ctl")
    deadline = None if timeout is None else time.monotonic() + timeout
    sent = 0
    try:
        while exit_code is None or len(selector.get_map()) > 1:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                output = b"".join(c for _, c in chunks).decode("utf-8", "replace")
                raise WaitTimeout(f"exec {argv!r} in {container.name} did not finish within "
                                  f"{timeout}s", logs=output, container=container.id)
            events = selector.select(left)
            if exit_code is not None and not events:
                break
            for key, _ in events:
                if key.fileobj not in selector.get_map():
                    continue  # unregistered by an earlier event of this batch
                if key.data == "stdin":
                    try:
                        sent += os.write(in_w, data[sent:sent + 65536])
                    except BrokenPipeError:
                        sent = len(data)
                    if sent >= len(data):
                        selector.unregister(in_w)
                        close(in_w)
                elif key.data == "ctl":
                    message = ctl.recv(65536)
                    if not message:
                        selector.unregister(ctl)
                        if exit_code is None:
                            exit_code = 126
                        continue
                    reply = json.loads(message)
                    pid = reply.get("pid", pid)
                    if "exit" in reply:
                        exit_code = reply["exit"]
                        selector.unregister(ctl)
                        for fd in (out_r, err_r):  # drain: the process is gone
                            if fd in selector.get_map():
                                _drain(fd, _stream_name(fd, out_r), chunks)
                                selector.unregister(fd)
                else:
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        chunks.append((key.data, chunk))
                    else:
                        selector.unregister(key.fd)
    finally:
        selector.close()
        ctl.close()
        for fd in (in_w, out_r, err_r):
            close(fd)

    def text(stream: str | None) -> str:
        return b"".join(c for s, c in chunks if stream in (None, s)).decode("utf-8", "replace")

    return ExecResult(exit_code=exit_code if exit_code is not None else 126,
                      stdout=text("stdout"), stderr=text("stderr"), output=text(None))


def _stream_name(fd: int, out_r: int) -> str:
    return "stdout" if fd == out_r else "stderr"


def _drain(fd: int, name: str, chunks: list[tuple[str, bytes]]) -> None:
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append((name, chunk))
