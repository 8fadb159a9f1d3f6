"""The lifecycle (docs/benchmarks.md) as root and as an ordinary user (rootless mode), in one
run on one machine: the same busybox image from the same seeded registry, the same steps; and,
as the same user, rootless Podman and rootless Docker beside the rootless native engine, each
interleaved with it sample by sample, so the ratio between them is the one to quote.

    python bench/rootless.py --user pycontain-ci [--python PATH] [--singles N] [--batch N]

Run as root: it starts the seeded registry, measures the native engine in this process, then
runs itself as USER (``runuser``) with ``--child``, which measures the engine rootless beside
rootless Podman (its own storage, configuration and runtime directory) and a dockerd of the
user's (``dockerd-rootless.sh``: Debian's rootlesskit and slirp4netns), each removed after, and
prints one JSON line; the rows and their ratios are printed (and written with ``--json``). A
peer that is not installed is a line saying so. ``--python``: a Python the user can run with
pytest-pycontain installed (pyenv's under /root is not readable by other users; .ci/rootless
makes one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.env import IMAGE, Env, note  # noqa: E402
from bench.lifecycle import CliPeer, EnginePeer, measure_pair, measure_peer  # noqa: E402


def measure_here(singles: int, batch: int, settings: object = None) -> dict:
    """One row: the native engine of this process (root, or rootless as a user)."""
    from pytest_pycontain.config import resolve
    from pytest_pycontain.native.engine import NativeEngine

    with tempfile.TemporaryDirectory(prefix="pycontain-bench-state-") as state:
        engine = NativeEngine(settings or resolve(), state_dir=state)
        try:
            row = measure_peer(EnginePeer(engine), singles, batch)
            row["engine"] = engine.describe()
        finally:
            engine.close()
    return row


def rootless_podman(root: Path, mirror: str) -> dict[str, str]:
    """The environment of a rootless Podman whose configuration, storage and runtime
    directory all live below ``root`` (the test session's configuration, the user's dirs)."""
    from testenv.podman import podman_env, write_config

    write_config(root, urlparse(mirror).netloc)
    dirs = {"XDG_RUNTIME_DIR": "run", "XDG_DATA_HOME": "data", "XDG_CONFIG_HOME": "config"}
    for name in dirs.values():
        (root / name).mkdir(mode=0o700, exist_ok=True)
    return {**podman_env(root), **{k: str(root / v) for k, v in dirs.items()}}


# Runs commands for this process from outside its user namespace: podman must not run as root
# of the native engine's namespace (it would take itself for root), and a child of this
# process is in it once the engine has entered, so this one is started before.
RUNNER = """
import json, subprocess, sys
for line in sys.stdin:
    argv, env = json.loads(line)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd="/tmp")
    print(json.dumps([done.returncode, done.stdout, done.stderr]), flush=True)
"""


class Outside:
    """A process started before the engine enters its namespace, running commands for us."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", RUNNER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd="/tmp")

    def run(self, argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([argv, env]) + "\n")
        self.process.stdin.flush()
        code, out, err = json.loads(self.process.stdout.readline())
        return code, out, err

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


class OutsidePeer(CliPeer):
    """``podman`` or ``docker`` as ``CliPeer`` runs it, each command through ``Outside``."""

    def __init__(self, outside: Outside, argv0: str, env: dict[str, str],
                 rm: tuple[str, ...]) -> None:
        super().__init__([argv0], env, rm=rm)
        self.outside = outside

    def _run(self, *argv: str, ok_errors: tuple[str, ...] = ()) -> str:
        code, out, err = self.outside.run([*self.command, *argv], self.env)
        if code != 0 and not any(e in err for e in ok_errors):
            raise RuntimeError(f"{self.command[-1]} {' '.join(argv)}: exit {code}: "
                               f"{err.strip()[-300:]}")
        return out.strip()


def tidy_podman(peer: OutsidePeer, root: Path) -> None:
    """Remove its storage (files of the subordinate ids: podman removes them, inside its
    namespace) and end its pause process (its pid file is in the tmp_dir of containers.conf,
    read in the same namespace as the removal, which may have started it again)."""
    peer._run("system", "reset", "-f", ok_errors=("",))
    said = peer._run("unshare", "sh", "-c", 'cat "$0/tmp/pause.pid"; rm -rf "$0"', str(root),
                     ok_errors=("",))
    pid = said.split()[0] if said else ""
    if pid.isdigit():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    root.mkdir(exist_ok=True)  # for TemporaryDirectory's own removal


CONTRIB = "/usr/share/docker.io/contrib"  # Debian's docker.io keeps dockerd-rootless.sh here
DOCKER_PATH = f"/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:{CONTRIB}"  # dockerd is in sbin


class RootlessDocker:
    """A dockerd of the user's (``dockerd-rootless.sh``: rootlesskit and slirp4netns), all its
    state below ``root``; busybox loaded from an archive skopeo makes, since the registry on
    the host's loopback is out of its namespace's reach. Started before the engine enters its
    namespace (rootlesskit refuses to run as root of one)."""

    @staticmethod
    def missing() -> str | None:
        for tool in ("dockerd-rootless.sh", "rootlesskit", "dockerd", "docker", "skopeo"):
            if shutil.which(tool, path=DOCKER_PATH) is None:
                return f"{tool} is not installed"
        return None

    def __init__(self, root: Path, mirror: str) -> None:
        self.root = root
        for name in ("run", "data", "exec"):
            (root / name).mkdir(mode=0o700)
        sock = root / "run" / "docker.sock"
        self.env = {"PATH": DOCKER_PATH,
                    "HOME": os.environ.get("HOME", "/tmp"), "XDG_RUNTIME_DIR": str(root / "run"),
                    "DOCKER_HOST": f"unix://{sock}"}
        self.log = open(root / "dockerd.log", "wb")  # noqa: SIM115 -- closed in close()
        self.process = subprocess.Popen(
            ["dockerd-rootless.sh", "--data-root", str(root / "data"), "--exec-root",
             str(root / "exec"), "--host", f"unix://{sock}", "--pidfile",
             str(root / "run" / "docker.pid")],
            env=self.env, stdout=self.log, stderr=self.log, cwd="/tmp", start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=self.env, capture_output=True
                             ).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close(None)
                raise RuntimeError("rootless dockerd did not start: "
                                   + (root / "dockerd.log").read_text()[-500:])
            time.sleep(0.2)
        archive = root / "busybox.tar"
        source = f"docker://{urlparse(mirror).netloc}/library/{IMAGE}:latest"
        for argv in (["skopeo", "copy", "--quiet", "--src-tls-verify=false", source,
                      f"docker-archive:{archive}:{IMAGE}:latest"],
                     ["docker", "load", "-q", "-i", str(archive)]):
            subprocess.run(argv, env=self.env, capture_output=True, check=True, cwd="/tmp")
        self.version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                      env=self.env, capture_output=True, text=True
                                      ).stdout.strip()

    def close(self, outside: Outside | None) -> None:
        """Stop dockerd (its containerd, rootlesskit and slirp4netns go with it) and remove its
        state, whose files belong to the subordinate ids: rootlesskit's namespace removes them."""
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int((self.root / "run" / "docker.pid").read_text()), signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()
        if outside is not None:
            outside.run(["rootlesskit", "rm", "-rf", str(self.root / "data"),
                         str(self.root / "exec")], self.env)


def child(args: argparse.Namespace) -> int:
    """As the user: the native engine rootless, interleaved with rootless Podman and with
    rootless Docker where they are installed; one JSON line."""
    from pytest_pycontain.config import resolve
    from pytest_pycontain.native.engine import NativeEngine

    mirror = os.environ["PYCONTAIN_REGISTRY_MIRROR"]
    out: dict[str, Any] = {"podman_rootless": None, "docker_rootless": None,
                           "skipped": {}}
    with contextlib.ExitStack() as stack:
        outside = Outside()  # before the engine enters its namespace
        stack.callback(outside.close)
        state = stack.enter_context(tempfile.TemporaryDirectory(
            prefix="pycontain-bench-state-", ignore_cleanup_errors=True))
        podman = docker = None
        if shutil.which("podman"):
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="pycontain-bench-podman-", dir="/tmp")))
            podman = OutsidePeer(outside, "podman", rootless_podman(root, mirror),
                                 rm=("rm", "-f", "-t", "0"))
            stack.callback(tidy_podman, podman, root)
        else:
            out["skipped"]["podman_rootless"] = "podman is not installed"
        why = RootlessDocker.missing()
        if why is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="pycontain-bench-docker-", dir="/tmp")))
            dockerd = RootlessDocker(root, mirror)
            stack.callback(dockerd.close, outside)
            docker = OutsidePeer(outside, "docker", dockerd.env, rm=("rm", "-f"))
        else:
            out["skipped"]["docker_rootless"] = why
        engine = NativeEngine(resolve(), state_dir=state)
        stack.callback(engine.close)
        described = engine.describe()
        if podman is not None:
            podman._run("pull", "-q", f"docker.io/library/{IMAGE}")
            version = podman._run("version", "--format", "{{.Client.Version}}")
            native, theirs = measure_pair(EnginePeer(engine), podman, args.singles, args.batch)
            theirs["engine"] = (f"podman {version} rootless (netavark, slirp4netns, runc, "
                                "overlay in the user namespace)")
            out["podman_rootless"], out["rootless_beside_podman"] = theirs, native
        if docker is not None:
            native, theirs = measure_pair(EnginePeer(engine), docker, args.singles, args.batch)
            theirs["engine"] = (f"dockerd {dockerd.version} rootless (rootlesskit, slirp4netns, "
                                "overlay2 in the user namespace)")
            out["docker_rootless"], out["rootless_beside_docker"] = theirs, native
        if podman is None and docker is None:
            out["rootless"] = measure_peer(EnginePeer(engine), args.singles, args.batch)
        else:
            out["rootless"] = out.get("rootless_beside_podman") or out["rootless_beside_docker"]
        for key in ("rootless", "rootless_beside_podman", "rootless_beside_docker"):
            if key in out:
                out[key]["engine"] = described
    print(json.dumps(out))
    return 0


def parent(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench/rootless.py: run it as root (it measures root, then runs itself as "
              "--user)", file=sys.stderr)
        return 2
    python = args.python or str(REPO / ".venv-user" / "bin" / "python")
    with Env() as env:
        note("starting the seeded registry ...")
        mirror = env.registry.url
        note("lifecycle as root ...")
        root = measure_here(args.singles, args.batch, env.settings())
        note(f"lifecycle as {args.user} (rootless) ...")
        home = subprocess.run(["getent", "passwd", args.user], capture_output=True,
                              text=True, check=True).stdout.split(":")[5]
        out = subprocess.run(
            ["runuser", "-u", args.user, "--", "env", "-i", f"HOME={home}",
             f"USER={args.user}", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
             f"PYCONTAIN_REGISTRY_MIRROR={mirror}", python, str(Path(__file__).resolve()),
             "--child", "--singles", str(args.singles), "--batch", str(args.batch)],
            capture_output=True, text=True, cwd="/tmp")
        if out.returncode != 0:
            print(f"the rootless run failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            return 1
        measured = json.loads(out.stdout.strip().splitlines()[-1])
    rootless = measured["rootless"]
    results = {"root": root, **measured,
               "ratio_median": round(rootless["median_ms"] / root["median_ms"], 2),
               "ratio_amortized": round(rootless["amortized_ms"] / root["amortized_ms"], 2)}
    rows = [("root", root), ("rootless", rootless)]
    for peer in ("podman", "docker"):
        theirs, ours = measured[f"{peer}_rootless"], measured.get(f"rootless_beside_{peer}")
        if theirs is None:
            print(f"{peer} rootless: - ({measured['skipped'].get(f'{peer}_rootless')})")
            continue
        rows.append((f"{peer}_rootless", theirs))
        results[f"{peer}_over_rootless_median"] = round(theirs["median_ms"] / ours["median_ms"],
                                                        1)
        results[f"{peer}_over_rootless_amortized"] = round(
            theirs["amortized_ms"] / ours["amortized_ms"], 1)
    for label, row in rows:
        print(f"{label:16} median {row['median_ms']:7.1f} ms  p90 {row['p90_ms']:7.1f} ms  "
              f"{args.batch} back-to-back / {args.batch}: {row['amortized_ms']:7.1f} ms   "
              f"({row['engine']})")
    print(f"rootless / root: median x{results['ratio_median']}, "
          f"back-to-back x{results['ratio_amortized']}")
    for peer in ("podman", "docker"):
        if f"{peer}_over_rootless_median" in results:
            print(f"rootless {peer} / rootless native (interleaved): median "
                  f"x{results[f'{peer}_over_rootless_median']}, back-to-back "
                  f"x{results[f'{peer}_over_rootless_amortized']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", default="pycontain-ci", help="the ordinary user to run as")
    parser.add_argument("--python", default=None, help="the user's Python (see above)")
    parser.add_argument("--singles", type=int, default=30)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
