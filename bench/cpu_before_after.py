"""CPU time per native lifecycle of an older revision beside this checkout's, in one run:
``python bench/cpu_before_after.py REV [--rounds 3] [--few 10] [--many 60]``.

Wall time on a busy machine moves by tens of percent; the CPU the whole process tree spends
(engine, zygote, shims, PID 1s, execs) moves much less. Each side runs ``--few`` and then
``--many`` back-to-back lifecycles under ``perf stat -e task-clock,minor-faults`` (which follows
every fork), in alternating rounds, and the difference divided by ``many - few`` is its CPU
per lifecycle: the start-up of the engine and of Python cancels out. Minor page faults (mostly
the copy-on-write faults of forked Python processes) are counted too: they hardly move with
the load, so they show a change that the CPU time's noise hides.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.before_after import ONE_SIDE  # noqa: E402  (the same lifecycle as the wall clock's)


def cpu_ms(checkout: Path, batch: int, env: dict[str, str]) -> tuple[float, int]:
    """The task-clock, in ms, and the minor page faults of one fresh process of ``checkout``
    running ``batch``."""
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as out:
        result = subprocess.run(
            ["perf", "stat", "-x,", "-e", "task-clock,minor-faults", "-o", out.name, "--",
             sys.executable, "-c", ONE_SIDE, "0", str(batch)],
            cwd=checkout, env={**env, "PYTHONPATH": str(checkout)},
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{checkout}: exit {result.returncode}: {result.stderr[-2000:]}")
        counted = {}
        for line in out.read().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2] in ("task-clock", "minor-faults"):
                counted[fields[2]] = float(fields[0])
    if len(counted) != 2:
        raise SystemExit(f"{checkout}: perf stat gave no task-clock or minor-faults")
    return counted["task-clock"], int(counted["minor-faults"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the older revision (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--few", type=int, default=10)
    parser.add_argument("--many", type=int, default=60)
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed (Debian: linux-perf)")

    from bench.env import Env

    with tempfile.TemporaryDirectory(prefix="pycontain-cpu-") as tmp, Env() as env:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before),
                        args.rev], check=True, capture_output=True)
        try:
            environ = {**os.environ, "PYCONTAIN_REGISTRY_MIRROR": env.registry.url,
                       "PYCONTAIN_CACHE_DIR": str(Path(tmp) / "cache")}
            sides = {"before": before, "after": REPO}
            per: dict[str, list[float]] = {side: [] for side in sides}
            faults: dict[str, list[float]] = {side: [] for side in sides}
            runs = args.many - args.few
            for _ in range(args.rounds):
                for side, checkout in sides.items():
                    few = cpu_ms(checkout, args.few, environ)
                    many = cpu_ms(checkout, args.many, environ)
                    per[side].append((many[0] - few[0]) / runs)
                    faults[side].append((many[1] - few[1]) / runs)
                    print(f"{side}: {per[side][-1]:.2f} ms, {faults[side][-1]:.0f} faults",
                          file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(before)], check=False, capture_output=True)
    print("| native lifecycle | CPU ms per lifecycle, median | minor faults per lifecycle, "
          "median | each round (ms) |")
    print("| --- | ---: | ---: | --- |")
    for side, label in (("before", args.rev), ("after", "this checkout")):
        rounds = ", ".join(f"{value:.2f}" for value in per[side])
        print(f"| {side} ({label}) | {statistics.median(per[side]):.2f} | "
              f"{statistics.median(faults[side]):.0f} | {rounds} |")


if __name__ == "__main__":
    main()
