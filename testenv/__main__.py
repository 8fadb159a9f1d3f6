"""``python -m testenv``: the test registry as a standalone command.

python -m testenv registry [--port N]      start, seed, print the mirror setting, serve
python -m testenv run -- CMD...            start and seed, run CMD with
                                           PYCONTAIN_REGISTRY_MIRROR set, stop, pass CMD's exit
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import EnvironmentProblem
from .images import seed
from .registry import start_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testenv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("registry", help="start the seeded registry and serve until Ctrl-C")
    serve.add_argument("--port", type=int, default=None)
    runner = sub.add_parser("run", help="run a command with the seeded registry as mirror")
    runner.add_argument("--port", type=int, default=None)
    runner.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pycontain-registry-") as workdir:
        try:
            registry = start_registry(Path(workdir), port=args.port)
        except EnvironmentProblem as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            print(
                f"seeding {registry.url} with library/busybox:latest and "
                "library/debian:bookworm (the first run on a machine debootstraps, ~3 min)",
                file=sys.stderr,
                flush=True,
            )
            seed(registry.host)
            if args.command == "registry":
                print(f"export PYCONTAIN_REGISTRY_MIRROR={registry.url}", flush=True)
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
                return 0
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not command:
                parser.error("run needs a command after --")
            env = {**os.environ, "PYCONTAIN_REGISTRY_MIRROR": registry.url}
            return subprocess.call(command, env=env)
        except EnvironmentProblem as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            registry.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if (
        len(sys.argv) > 1 and sys.argv[1] == "registry"
    ) else None
    sys.exit(main())
