"""Side-by-side benchmarks: ``python bench/run.py [--quick] [--json PATH]``.

Measures, in one run on one machine, pytest-pycontain beside Docker, Podman and
testcontainers-python, and prints a markdown table (ratios to the native engine) and writes
the JSON below. A section whose engine or peer is missing is ``null`` with a line saying why.
It starts what it needs (the seeded local registry, a private dockerd, podman on private
storage) and stops it all after.

JSON schema (stable)::

    {"machine": {...}, "counts": {...},
     "lifecycle": {"native": {"median_ms", "p90_ms", "amortized_ms", "n", "batch", "network",
                              "x_native_median", "x_native_amortized"}, "docker_backend": ...,
                   "docker_cli": ..., "podman_cli": ..., "testcontainers": ...,
                   "native_loopback": ..., "native_fresh_network": ..., "docker_raw": ...,
                   "docker_backend_overhead_pct": float},
     "rebuild": {"pycontain": {...}, "docker": {...}},
     "cold_build": {...}, "suite": {...}, "fleet": {...}, "mesh": {...}, "images": {...},
     "compose": {...},
     "stack": {"native": {"median_ms", "p90_ms", "n", "up_median_ms", "app_median_ms",
                          "tests_per_module", "x_native_median"}, "docker_backend": ...,
               "testcontainers": ...},
     "stack_build": {"pycontain": {...}, "docker": {...}, "x_docker_over_pycontain"},
     "pgcopy": {"native": {"rows", "initdb": {"median_ms", "p90_ms", "n"}, "commit": {...},
                           "template": {...}, "setup_ms": {"commit", "template"},
                           "x_initdb_over_commit"}, "docker_backend": ...}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``testenv`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import builds, compose, fleet, images, lifecycle, pgcopy, reuse, stack, suite
from bench.env import Env, note
from bench.stats import summarize  # noqa: F401 - kept importable from here

LIFECYCLE_PEERS = ("native", "docker_backend", "docker_cli", "podman_cli", "testcontainers")
EXTRA_PEERS = ("native_loopback", "native_fresh_network", "docker_raw")

COUNTS = {
    "full": {"lifecycle_singles": 30, "lifecycle_batch": 50, "build_samples": 10,
             "suite_tests": 200, "fleet_containers": 100, "mesh_containers": 50,
             "image_samples": 5, "unpack_image": "debian:bookworm", "compose_samples": 10,
             "reuse_tests": 20, "stack_modules": 5, "stack_tests": 10,
             "stack_build_samples": 3, "pgcopy_samples": 10},
    "quick": {"lifecycle_singles": 5, "lifecycle_batch": 10, "build_samples": 2,
              "suite_tests": 10, "fleet_containers": 20, "mesh_containers": 8,
              "image_samples": 2, "unpack_image": "busybox", "compose_samples": 2,
              "reuse_tests": 5, "stack_modules": 1, "stack_tests": 3,
              "stack_build_samples": 1, "pgcopy_samples": 3},
}


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
    }


def empty_results() -> dict:
    return {
        "machine": machine(),
        "counts": {},
        "lifecycle": dict.fromkeys(LIFECYCLE_PEERS + EXTRA_PEERS),
        "rebuild": {"pycontain": None, "docker": None},
        "cold_build": {"pycontain": None, "docker": None},
        "suite": {"native": None, "docker_backend": None},
        "fleet": None,
        "mesh": None,
        "images": None,
        "compose": dict.fromkeys(compose.PEERS),
        "reuse": None,
        "stack": dict.fromkeys(stack.PEERS),
        "stack_build": {"pycontain": None, "docker": None},
        "pgcopy": dict.fromkeys(pgcopy.PEERS),
    }


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def table(results: dict) -> str:
    """The markdown tables the README carries."""
    life = results["lifecycle"]
    batch = results.get("counts", {}).get("lifecycle_batch", "N")
    lines = [f"| lifecycle | median ms | p90 ms | {batch} back-to-back ÷ {batch}, ms | n | "
             f"x native (median) | x native (÷ {batch}) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for peer in LIFECYCLE_PEERS + EXTRA_PEERS:
        row = life.get(peer)
        if row is None:
            lines.append(f"| {peer} | - | - | - | - | - | - |")
            continue
        lines.append(f"| {peer} | {row['median_ms']} | {row['p90_ms']} | "
                     f"{_cell(row['amortized_ms'])} | {row['n']} | "
                     f"{_cell(row.get('x_native_median'))} | "
                     f"{_cell(row.get('x_native_amortized'))} |")
    if life.get("docker_backend_overhead_pct") is not None:
        lines.append(f"\ndocker backend over the raw `docker` package: "
                     f"{life['docker_backend_overhead_pct']:+.1f}% (median)")
    lines += ["", "| build (10 steps) | pycontain ms | docker build ms | x |",
              "| --- | ---: | ---: | ---: |"]
    for key, label in (("rebuild", "no-change rebuild"), ("cold_build", "cold build")):
        section = results[key]
        ours = (section.get("pycontain") or {}).get("median_ms")
        theirs = (section.get("docker") or {}).get("median_ms")
        lines.append(f"| {label} | {_cell(ours)} | {_cell(theirs)} | "
                     f"{_cell(section.get('x_docker_over_pycontain'))} |")
    s = results["suite"]
    lines += ["", f"| suite of {s.get('tests', '?')} tests | plain s | -n 2 s |",
              "| --- | ---: | ---: |"]
    for key in ("native", "docker_backend"):
        row = s.get(key) or {}
        lines.append(f"| {key} | {_cell(row.get('plain_s'))} | {_cell(row.get('n2_s'))} |")
    f = results.get("fleet")
    if f:
        lines += ["", f"{f['containers']} containers alive at once (native): started in "
                  f"{f['start_all_s']} s ({f['per_container_start_ms']} ms each); the engine's "
                  f"helpers add {f['pss_per_container_kib'] / 1024:.2f} MiB PSS per container."]
    m = results.get("mesh")
    if m:
        lines.append(f"{m['containers']} containers on one network: {m['pairs_ok']}/"
                     f"{m['pairs_checked']} pairs reach each other by name (ping NAME).")
    stacks = results.get("compose") or {}
    if any(stacks.values()):
        lines += ["", "| 3-service stack: up (healthy) + a request + down | median ms | p90 ms "
                  "| n | x native |", "| --- | ---: | ---: | ---: | ---: |"]
        for peer, row in stacks.items():
            row = row or {}
            lines.append(f"| {peer} | {_cell(row.get('median_ms'))} | "
                         f"{_cell(row.get('p90_ms'))} | {_cell(row.get('n'))} | "
                         f"{_cell(row.get('x_native_median'))} |")
    r = results.get("reuse")
    if r:
        lines += ["", f"| reuse: {r['tests']} tests, a session service that starts in "
                  f"{r['service_start_s']} s | fresh s | first run (reuse) s | reused run s | "
                  "x fresh / reused |", "| --- | ---: | ---: | ---: | ---: |"]
        for key in ("native", "docker_backend"):
            row = r.get(key) or {}
            lines.append(f"| {key} | {_cell(row.get('fresh_s'))} | "
                         f"{_cell(row.get('first_reuse_s'))} | {_cell(row.get('reused_s'))} | "
                         f"{_cell(row.get('x_fresh_over_reused'))} |")
    stacks = results.get("stack") or {}
    if any(stacks.values()):
        tests = next(row["tests_per_module"] for row in stacks.values() if row)
        lines += ["", f"| per-module stack (postgres + redis, {tests} tests with a fresh app) "
                  "| module median ms | p90 ms | stack up ms | app per test ms | n | x native |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for peer, row in stacks.items():
            row = row or {}
            lines.append(f"| {peer} | {_cell(row.get('median_ms'))} | "
                         f"{_cell(row.get('p90_ms'))} | {_cell(row.get('up_median_ms'))} | "
                         f"{_cell(row.get('app_median_ms'))} | {_cell(row.get('n'))} | "
                         f"{_cell(row.get('x_native_median'))} |")
    sb = results.get("stack_build") or {}
    if sb.get("pycontain") or sb.get("docker"):
        lines += ["", "| cold multi-stage build (the stack's app) | pycontain ms | "
                  "docker build ms | x |", "| --- | ---: | ---: | ---: |",
                  f"| no cache, bases present | "
                  f"{_cell((sb.get('pycontain') or {}).get('median_ms'))} | "
                  f"{_cell((sb.get('docker') or {}).get('median_ms'))} | "
                  f"{_cell(sb.get('x_docker_over_pycontain'))} |"]
    lines += pgcopy.table(results.get("pgcopy"))
    im = results.get("images")
    if im:
        u = im["unpack"]
        lines.append(f"Pull with every blob present: {im['pull_present']['median_ms']} ms "
                     f"({im['pull_present']['downloads']} downloads); from the store: "
                     f"{im['pull_from_store']['median_ms']} ms. Unpacking {u['image']}'s layer "
                     f"({u['bytes'] / 2**20:.1f} MiB): {u['pycontain']['median_ms']} ms vs "
                     f"`tar -x` {u['tar_x']['median_ms']} ms ({u['x_tar']}x).")
    return "\n".join(lines)


# Ends what ``--markdown`` writes: what follows it in the file is kept (hand-written sections).
GENERATED_END = ("<!-- bench/run.py --markdown replaces everything above this line and keeps "
                 "what follows -->")


def write_markdown(path: Path, results: dict) -> None:
    """``markdown(results)`` into ``path``: in place of what is above ``GENERATED_END`` there,
    keeping what follows it; a new file gets the line. A file of another shape is left alone
    (SystemExit naming it): its hand-written sections would be lost."""
    generated = markdown(results) + "\n" + GENERATED_END + "\n"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        path.write_text(generated, encoding="utf-8")
        return
    _, found, kept = text.partition(GENERATED_END + "\n")
    if not found:
        raise SystemExit(f"--markdown {path}: the file has no line {GENERATED_END!r} ending "
                         "its generated part; not overwritten (add the line where the "
                         "generated part ends, or name a new file)")
    path.write_text(generated + kept, encoding="utf-8")


def markdown(results: dict) -> str:
    """RESULTS.md: the machine, the counts, the tables, and how to reproduce them."""
    m, c = results["machine"], results.get("counts", {})
    life = results["lifecycle"]
    lines = ["# Benchmark results", "",
             f"Machine: {m.get('cpu') or m['machine']}, {m['cpus']} CPUs, "
             f"{m['memory_gib']} GiB, {m['platform']}, Python {m['python']}.",
             f"Run: `{c.get('mode', '?')}` mode, {c.get('wall_s', '?')} s in all. Counts: "
             + ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("mode", "wall_s"))
             + ".", ""]
    networks = sorted({row["network"] for row in life.values()
                       if isinstance(row, dict) and "network" in row})
    lines += [table(results), "",
              "Lifecycle (docs/benchmarks.md): create and start busybox on a network, exec `true`, "
              "kill, remove. Networks used: " + "; ".join(networks) + ". `docker_raw` is the "
              "`docker` package's low-level client making the same calls, interleaved with "
              "`docker_backend` sample by sample. Missing peers are `-` here and `null` in "
              "the JSON.", "",
              "Reproduce, as root: `python bench/run.py --json results.json "
              "--markdown bench/RESULTS.md` (`--quick` for a run under three minutes)."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, registry: object = None) -> dict:
    """Every section ``args.only`` names; ``registry``: a running seeded one to reuse."""
    counts = {**COUNTS["quick" if args.quick else "full"], **args.counts}
    results = empty_results()
    results["counts"] = {"mode": "quick" if args.quick else "full", **counts}
    started = time.perf_counter()
    with Env(registry=registry) as env:
        note("starting the seeded registry ...")
        env.registry  # noqa: B018 - starts it
        if "lifecycle" in args.only:
            note("lifecycle ...")
            life = lifecycle.measure(env, counts["lifecycle_singles"],
                                     counts["lifecycle_batch"], only=args.peers)
            results["lifecycle"].update(life)
        if "builds" in args.only:
            note("builds ...")
            results["rebuild"], results["cold_build"] = builds.measure(
                env, counts["build_samples"], docker="docker_cli" in args.peers)
        if "images" in args.only:
            note("images ...")
            results["images"] = images.measure(env, counts["image_samples"],
                                               counts["unpack_image"])
        if "fleet" in args.only:
            note("fleet ...")
            results["fleet"] = fleet.alive(env, counts["fleet_containers"])
            results["mesh"] = fleet.mesh(env, counts["mesh_containers"])
        if "compose" in args.only:
            note("compose ...")
            wanted = {"native": "native", "docker_backend": "docker_backend",
                      "docker_cli": "docker_compose"}
            results["compose"] = compose.measure(
                env, counts["compose_samples"],
                tuple(wanted[p] for p in args.peers if p in wanted))
        if "stack" in args.only:
            note("stack ...")
            wanted = tuple(p for p in ("native", "docker_backend", "testcontainers")
                           if p in args.peers)
            results["stack"] = stack.measure(env, counts["stack_modules"],
                                             counts["stack_tests"], wanted)
            results["stack_build"] = stack.cold_build(env, counts["stack_build_samples"],
                                                      docker="docker_cli" in args.peers)
        if "suite" in args.only:
            note("suite ...")
            results["suite"] = suite.measure(env, counts["suite_tests"],
                                             docker="docker_backend" in args.peers)
        if "reuse" in args.only:
            note("reuse ...")
            results["reuse"] = reuse.measure(env, counts["reuse_tests"],
                                             docker="docker_backend" in args.peers)
        if "pgcopy" in args.only:
            note("pgcopy ...")
            results["pgcopy"] = pgcopy.measure(
                env, counts["pgcopy_samples"],
                tuple(p for p in pgcopy.PEERS if p in args.peers))
    results["counts"]["wall_s"] = round(time.perf_counter() - started, 1)
    return results


SECTIONS = ("lifecycle", "builds", "images", "fleet", "suite", "compose", "reuse", "stack",
            "pgcopy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (< 3 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="write RESULTS.md's generated part (machine, counts, tables) "
                             "here, keeping what follows it")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {SECTIONS})")
    parser.add_argument("--peers", default=",".join(LIFECYCLE_PEERS + EXTRA_PEERS),
                        help="comma-separated lifecycle peers (default: all); docker build "
                             "runs with docker_cli, the docker suite with docker_backend")
    parser.add_argument("--counts", type=json.loads, default={},
                        help='override counts, as JSON: \'{"lifecycle_batch": 20}\'')
    args = parser.parse_args(argv)
    args.peers = tuple(s.strip() for s in args.peers.split(",") if s.strip())
    bad_peers = set(args.peers) - set(LIFECYCLE_PEERS + EXTRA_PEERS)
    if bad_peers:
        parser.error(f"--peers: unknown peer(s) {sorted(bad_peers)}; "
                     f"known: {LIFECYCLE_PEERS + EXTRA_PEERS}")
    if not isinstance(args.counts, dict) or set(args.counts) - set(COUNTS["full"]):
        parser.error(f"--counts: a JSON object with keys among {sorted(COUNTS['full'])}")
    args.only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; known: {SECTIONS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        write_markdown(args.markdown, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
