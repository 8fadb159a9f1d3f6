"""The native lifecycle of an older revision beside this checkout's, in one run:
``python bench/before_after.py REV [--rounds 4] [--singles 10] [--batch 20]``.

A change to the shim, the plan or the network path must keep the lifecycle where it was; timings
move with the machine's load, so the two sides run in alternating rounds (each round a fresh
process of one side) and the table compares their medians. REV is checked out into a temporary
git worktree; both sides use the same seeded local registry and image cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Runs inside each side's checkout, against that side's package: only what both revisions
# offer (settings, the engine, RunSpec, network, run, exec, kill, remove).
ONE_SIDE = r"""
import json, os, sys, time
from pytest_pycontain.config import resolve
from pytest_pycontain.engine import RunSpec
from pytest_pycontain.native.engine import NativeEngine

singles, batch = int(sys.argv[1]), int(sys.argv[2])
make = getattr(RunSpec, "create", None) or RunSpec
engine = NativeEngine(resolve(environ=dict(os.environ)))

def drain():
    waiting = getattr(engine, "drain", None)
    if waiting is not None:
        waiting()
        return
    trash = getattr(engine, "_trash", None)  # revisions before the janitor had a name
    deadline = time.monotonic() + 30
    while trash is not None and not trash.empty() and time.monotonic() < deadline:
        time.sleep(0.001)

net = engine.network()

def once():
    container = engine.run(make(image="busybox", command=["sleep", "3600"], network=net))
    if container.exec(["true"]).exit_code != 0:
        raise SystemExit("exec true failed")
    container.kill()
    container.remove()

try:
    for _ in range(2):
        once()
    drain()
    samples = []
    for _ in range(singles):
        start = time.perf_counter()
        once()
        samples.append((time.perf_counter() - start) * 1000)
        drain()
    start = time.perf_counter()
    for _ in range(batch):
        once()
    drain()
    amortized = (time.perf_counter() - start) * 1000 / batch
finally:
    net.remove()
    engine.close()
print(json.dumps({"samples": samples, "amortized": amortized}))
"""


def run_side(checkout: Path, singles: int, batch: int, env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", ONE_SIDE, str(singles), str(batch)],
                            cwd=checkout, env={**env, "PYTHONPATH": str(checkout)},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{checkout}: exit {result.returncode}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the older revision (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--singles", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args(argv)

    from bench.env import Env

    with tempfile.TemporaryDirectory(prefix="pycontain-before-") as tmp, Env() as env:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before),
                        args.rev], check=True, capture_output=True)
        try:
            registry = env.registry
            environ = {**os.environ, "PYCONTAIN_REGISTRY_MIRROR": registry.url,
                       "PYCONTAIN_CACHE_DIR": str(Path(tmp) / "cache")}
            sides = {"before": before, "after": REPO}
            found: dict[str, dict[str, list[float]]] = {
                side: {"samples": [], "amortized": []} for side in sides}
            for _ in range(args.rounds):
                for side, checkout in sides.items():
                    row = run_side(checkout, args.singles, args.batch, environ)
                    found[side]["samples"] += row["samples"]
                    found[side]["amortized"].append(row["amortized"])
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(before)], check=False, capture_output=True)
    print(f"| native lifecycle | median ms | back-to-back ÷ {args.batch}, ms | n |")
    print("| --- | ---: | ---: | ---: |")
    for side, label in (("before", args.rev), ("after", "this checkout")):
        samples = found[side]["samples"]
        print(f"| {side} ({label}) | {statistics.median(samples):.2f} | "
              f"{statistics.median(found[side]['amortized']):.2f} | {len(samples)} |")


if __name__ == "__main__":
    main()
