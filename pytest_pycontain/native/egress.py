"""A way out for a build step's own network namespace: pasta (Debian's ``passt``) attached to it.

Docker gives RUN steps a NAT'd bridge; we give them their own namespace (never the host's, whose
loopback services and abstract unix sockets an untrusted Dockerfile must not reach) and pasta,
a userspace stack that turns the step's connections into the host's own sockets. No bridge,
route or firewall rule is made on the host, and pasta ends with the step (or with us: a
parent-death signal, and the journal for the reaper). Its flags keep the host's loopback out
of reach: ``--no-map-gw`` (the gateway address is the real gateway, not the host), and no
port forwarding either way (``-t/-u/-T/-U none``).

One thing pasta of Debian 12 does not refuse: a step holding CAP_NET_ADMIN could route
``127.0.0.0/8`` out of its tap and pasta would connect that to the host's loopback. Build
steps run inside the privilege boundary (``boundary``: Docker's 14 capabilities, a read-only
``/proc/sys``), which takes that capability away; ``tests/test_build_security.py`` proves a
step cannot do it. Never attach pasta to a privileged container's namespace.
A network's pasta (``netegress.py``) sits in the bridge's namespace, not a container's: what a
container routes there to ``127.0.0.0/8`` is a martian the bridge's namespace never forwards.

Without pasta, a step gets loopback only and one warning names the package (``passt``): a
Dockerfile whose steps need no network still builds, and one that does fails with its own
network error, next to the warning that says why.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import NetworkError
from ..idmap import host_uid
from ..procinfo import process_start_time

PACKAGE = "passt"
_READY_TIMEOUT = 5.0
T = TypeVar("T")
_lasting: queue.SimpleQueue | None = None
_lasting_lock = threading.Lock()


def on_lasting_thread(fn: Callable[[], T]) -> T:
    """``fn()`` run on one thread that lives as long as the process: a parent-death signal
    belongs to the thread that forked, so a pasta serving a network (which outlives the
    test's thread that made it) is forked there. The thread is made by the first caller, in
    that caller's network namespace (the engine's, never a network's own)."""
    global _lasting
    with _lasting_lock:
        if _lasting is None:
            jobs: queue.SimpleQueue = queue.SimpleQueue()

            def serve() -> None:
                while True:
                    job, box, done = jobs.get()
                    try:
                        box.append(job())
                    except BaseException as exc:  # handed back to the caller
                        box.extend((exc, None))
                    done.set()

            threading.Thread(target=serve, daemon=True, name="pycontain-spawner").start()
            _lasting = jobs
    box: list[Any] = []
    done = threading.Event()
    _lasting.put((fn, box, done))
    done.wait()
    if len(box) == 2:
        raise box[0]
    return box[0]


def pasta_path() -> str | None:
    """The pasta binary, if installed."""
    return shutil.which("pasta")


TUN = "/dev/net/tun"


TUN_DEVICE = (10, 200)  # the tun/tap clone device, major and minor


def tun_blocked(path: str = TUN) -> str | None:
    """Why pasta could not open its tap through ``path`` here, or None: it must be the tun
    device and, rootless, open to the user (distributions ship it mode 0666; some hosts and
    sandboxes close it to root). The words name the device and the fix."""
    fix = (f"as root, make it as distributions ship it: mknod -m 0666 {path} c "
           f"{TUN_DEVICE[0]} {TUN_DEVICE[1]} (after modprobe tun)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist (pasta needs it for a way out); {fix}"
    except OSError as exc:
        return f"{path} cannot be looked at ({exc.strerror}; pasta needs it for a way out)"
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != TUN_DEVICE:
        what = (f"character device {os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
                if stat.S_ISCHR(st.st_mode) else "not a character device")
        return (f"{path} is not the tun device ({what}, where pasta needs {TUN_DEVICE[0]},"
                f"{TUN_DEVICE[1]} for a way out); {fix}")
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except PermissionError:
        return (f"{path} is closed to uid {host_uid()} (mode {stat.S_IMODE(st.st_mode):04o}; "
                f"pasta needs it for a way out); as root, open it as distributions ship it: "
                f"chmod 0666 {path}")
    except OSError:
        return None  # pasta will say what it is
    return None


@dataclass
class Egress:
    """A running pasta serving one network namespace; :meth:`close` ends it."""

    process: subprocess.Popen[bytes]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait()


def warn_missing() -> None:
    """Say that build steps run without a way out, and how to get one (once per process:
    the warnings module's default filter shows a warning once per place)."""
    warnings.warn(f"pycontain: pasta (Debian's {PACKAGE} package) is not installed: RUN steps "
                  "get loopback only (no outbound network); install it for egress",
                  RuntimeWarning, stacklevel=2)


def attach(pid: int, *, journal: Any = None, container: str | None = None) -> Egress | None:
    """Start pasta for the network namespace of process ``pid`` (a step paused before its
    command) and wait until the namespace has its address and default route. None, after a
    one-line warning, when pasta is not installed or the host has no default route (offline);
    ``NetworkError`` with pasta's words when it cannot start."""
    if pasta_path() is None:
        warn_missing()
        return None
    blocked = tun_blocked()
    if blocked is not None:
        warnings.warn(f"pycontain: {blocked}: RUN steps get loopback only", RuntimeWarning,
                      stacklevel=2)
        return None
    if not host_online():
        warnings.warn("pycontain: this host has no default route: RUN steps get loopback only",
                      RuntimeWarning, stacklevel=2)
        return None  # nothing to reach (an offline machine builds as before, just offline)
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return start(netns, f"/proc/{pid}", "a RUN step's network", journal=journal,
                     container=container)
    finally:
        os.close(netns)


def host_online() -> bool:
    """Whether this process's namespace has a default route: without one, pasta has no way
    out to offer."""
    return _has_default_route("/proc/self")


def start(netns: int, proc: str, what: str, *, journal: Any = None,
          container: str | None = None, spawn: Any = None) -> Egress:
    """pasta for the network namespace open as ``netns``, ready: ``proc`` (``/proc/PID`` or
    ``/proc/PID/task/TID`` of a thread in that namespace) shows its default route. ``what``
    names the namespace in errors; ``spawn`` runs ``subprocess.Popen`` (a thread that outlives
    the caller's, so that the parent-death signal means the engine's death)."""
    binary = pasta_path()
    if binary is None:
        raise NetworkError(f"{what}: pasta (Debian's {PACKAGE} package) is not installed")
    # pasta opens the namespace itself; /proc/PID/ns/net of another process is refused to it
    # (it keeps only a few capabilities), so it gets ours, already open, as /proc/self/fd/N.
    argv = [binary, "--config-net", "--no-map-gw", "-t", "none", "-u", "none", "-T", "none",
            "-U", "none", "--foreground", "--quiet", "--netns", f"/proc/self/fd/{netns}"]
    if os.geteuid() == 0:
        argv[1:1] = ["--runas", "0"]  # else it becomes nobody, who may not enter the namespace
    setpriv = shutil.which("setpriv")  # util-linux: pasta dies with us, even when we are killed
    if setpriv is not None:
        argv[:0] = [setpriv, "--pdeathsig", "KILL", "--"]
    with tempfile.TemporaryFile() as log:
        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=[netns], start_new_session=True)

        process = spawn(popen) if spawn is not None else popen()
        egress = Egress(process)
        if journal is not None:
            journal.record("process", container=container, pid=process.pid, role="pasta",
                           start=process_start_time(process.pid))
        try:
            _wait_ready(proc, process, log, what)
        except BaseException:
            egress.close()
            raise
    return egress


def _wait_ready(proc: str, process: subprocess.Popen[bytes], log: Any, what: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while not _has_default_route(proc):
        code = process.poll()
        if code is not None or time.monotonic() > deadline:
            log.seek(0)
            said = " ".join(line for line in log.read().decode(errors="replace").splitlines()
                            if line and "syslog" not in line)
            how = f"exited with code {code}" if code is not None else \
                f"set up no route within {_READY_TIMEOUT:.0f}s"
            raise NetworkError(f"pasta (for {what}) {how}: {said or 'no output'}")
        time.sleep(0.005)


def _has_default_route(proc: str) -> bool:
    """Whether the namespace of ``proc`` (``/proc/PID``, ``/proc/self`` or a thread's) has an
    IPv4 or IPv6 default route (pasta's last step of --config-net)."""
    with contextlib.suppress(OSError), open(f"{proc}/net/route") as routes:
        for line in routes.readlines()[1:]:
            fields = line.split()
            if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                return True
    with contextlib.suppress(OSError), open(f"{proc}/net/ipv6_route") as routes:
        for line in routes:
            fields = line.split()
            if len(fields) > 9 and fields[0] == "0" * 32 and fields[1] == "00" \
                        and fields[9] != "lo":
                return True
    return False
