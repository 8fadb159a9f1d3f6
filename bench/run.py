"""Side-by-side benchmarks: ``python bench/run.py [--quick] [--json PATH]``.

Measures, in one run on one machine, pytest-pycontain beside Docker, Podman and
testcontainers-python, and prints a markdown table (ratios to the native engine) and writes
the JSON below. A section whose engine or peer is missing is ``null`` with a line saying why.

JSON schema (stable)::

    {"machine": {...},
     "lifecycle": {"native": {"median_ms", "p90_ms", "amortized_ms", "n"}, "docker_backend": ...,
                   "docker_cli": ..., "podman_cli": ..., "testcontainers": ...},
     "rebuild": {"pycontain": {...}, "docker": {...}},
     "cold_build": {...}, "suite": {...}, "fleet": {...}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

LIFECYCLE_PEERS = ("native", "docker_backend", "docker_cli", "podman_cli", "testcontainers")


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
    }


def summarize(samples_ms: list[float], amortized_ms: float | None) -> dict:
    ordered = sorted(samples_ms)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(p90, 2),
        "amortized_ms": None if amortized_ms is None else round(amortized_ms, 2),
        "n": len(ordered),
    }


def skipped(reason: str) -> None:
    print(f"skipped: {reason}", file=sys.stderr)


# Each measurement is a function returning its JSON value or None (skipped, with a line why).
# The issues that land engines and peers add them here.
MEASUREMENTS: dict[str, Callable[[argparse.Namespace], object]] = {}


def empty_results() -> dict:
    return {
        "machine": machine(),
        "lifecycle": dict.fromkeys(LIFECYCLE_PEERS),
        "rebuild": {"pycontain": None, "docker": None},
        "cold_build": {"pycontain": None, "docker": None},
        "suite": {"native": None, "docker_backend": None},
        "fleet": None,
    }


def table(results: dict) -> str:
    lines = ["| lifecycle | median ms | p90 ms | amortized ms | n | × native |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    native = (results["lifecycle"].get("native") or {}).get("median_ms")
    for peer in LIFECYCLE_PEERS:
        row = results["lifecycle"].get(peer)
        if row is None:
            lines.append(f"| {peer} | – | – | – | – | – |")
            continue
        ratio = f"{row['median_ms'] / native:.1f}" if native else "–"
        lines.append(f"| {peer} | {row['median_ms']} | {row['p90_ms']} | "
                     f"{row['amortized_ms']} | {row['n']} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (< 3 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    results = empty_results()
    for name, measure in MEASUREMENTS.items():
        results[name] = measure(args)
    if not MEASUREMENTS:
        skipped("no measurement has landed yet (the engine issues add them)")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
