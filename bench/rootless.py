"""The lifecycle (docs/benchmarks.md) as root and as an ordinary user (rootless mode), in one
run on one machine: the same busybox image from the same seeded registry, the same steps.

    python bench/rootless.py --user pycontain-ci [--python PATH] [--singles N] [--batch N]

Run as root: it starts the seeded registry, measures the native engine in this process, then
runs itself as USER (``runuser``) with ``--child``, which measures the engine rootless and
prints one JSON line; both rows and their ratio are printed (and written with ``--json``).
``--python``: a Python the user can run with pytest-pycontain installed (pyenv's under /root
is not readable by other users; .ci/rootless makes one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.env import Env, note  # noqa: E402
from bench.lifecycle import EnginePeer, measure_peer  # noqa: E402


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


def child(args: argparse.Namespace) -> int:
    print(json.dumps(measure_here(args.singles, args.batch)))
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
        rootless = json.loads(out.stdout.strip().splitlines()[-1])
    results = {"root": root, "rootless": rootless,
               "ratio_median": round(rootless["median_ms"] / root["median_ms"], 2),
               "ratio_amortized": round(rootless["amortized_ms"] / root["amortized_ms"], 2)}
    for label in ("root", "rootless"):
        row = results[label]
        print(f"{label:9} median {row['median_ms']:7.1f} ms  p90 {row['p90_ms']:7.1f} ms  "
              f"{args.batch} back-to-back / {args.batch}: {row['amortized_ms']:7.1f} ms   "
              f"({row['engine']})")
    print(f"rootless / root: median x{results['ratio_median']}, "
          f"back-to-back x{results['ratio_amortized']}")
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
