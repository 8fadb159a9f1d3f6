"""The benchmark runs end to end with tiny counts and writes the stable JSON shape. No timing
is asserted: only that every section is there, counts are recorded, and nothing is left."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bench.run import (
    EXTRA_PEERS,
    GENERATED_END,
    LIFECYCLE_PEERS,
    empty_results,
    markdown,
    parse_args,
    run,
    table,
    write_markdown,
)
from bench.stats import summarize

TINY = {"lifecycle_singles": 2, "lifecycle_batch": 2, "build_samples": 1, "suite_tests": 2,
        "fleet_containers": 2, "mesh_containers": 3, "image_samples": 1,
        "unpack_image": "busybox"}

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"),
    reason="the native engine needs root: it makes namespaces, mounts and bridges")


def test_summarize_gives_median_p90_and_count():
    row = summarize([5.0, 1.0, 3.0, 2.0, 4.0], 2.5)
    assert row == {"median_ms": 3.0, "p90_ms": 5.0, "amortized_ms": 2.5, "n": 5}


def test_empty_results_have_the_stable_schema_and_table_names_every_peer():
    results = empty_results()
    assert set(results) >= {"machine", "lifecycle", "rebuild", "cold_build", "suite", "fleet"}
    assert set(results["lifecycle"]) == set(LIFECYCLE_PEERS + EXTRA_PEERS)
    assert results["rebuild"] == {"pycontain": None, "docker": None}
    text = table(results)
    for peer in LIFECYCLE_PEERS:
        assert f"| {peer} | - |" in text


def test_markdown_replaces_the_generated_part_and_keeps_what_follows(tmp_path: Path):
    results = empty_results()
    fresh = tmp_path / "new.md"
    write_markdown(fresh, results)
    assert fresh.read_text().startswith("# Benchmark results")
    kept = "## Hand-written\n\nmeasured by hand, kept across runs\n"
    fresh.write_text(fresh.read_text().replace("Machine: ", "Machine (old run): ") + kept)
    write_markdown(fresh, results)
    text = fresh.read_text()
    assert "Machine (old run)" not in text and text.count("Machine: ") == 1
    assert text.endswith(kept)
    written = tmp_path / "RESULTS.md"
    written.write_text("# Notes of my own\n")
    with pytest.raises(SystemExit, match=r"has no line .* not overwritten"):
        write_markdown(written, results)
    assert written.read_text() == "# Notes of my own\n"


def test_the_results_file_keeps_its_hand_written_sections():
    """bench/RESULTS.md has the line, with the hand-written sections after it."""
    text = (Path(__file__).parent.parent / "bench" / "RESULTS.md").read_text()
    generated, _, kept = text.partition(GENERATED_END)
    assert generated.startswith("# Benchmark results") and "## " in kept


@pytest.mark.parametrize(("argv", "message"), [
    (["--only", "lifecycle,bogus"], "--only: unknown section(s) ['bogus']"),
    (["--peers", "native,vagrant"], "--peers: unknown peer(s) ['vagrant']"),
    (["--counts", '{"apples": 1}'], "--counts: a JSON object with keys among"),
])
def test_bad_arguments_are_refused_naming_what(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bench's temporary directories go below this test's own: what another session's
    bench makes on the machine meanwhile is not this test's to count."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _workdirs(tmp: Path) -> list[str]:
    return [name for name in os.listdir(tmp) if name.startswith("pycontain-bench-")]


def _bench_mounts(tmp: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line for line in mounts if f"{tmp}/pycontain-bench-" in line]


@needs_root
def test_quick_run_of_the_native_sections_writes_the_json_and_leaves_nothing(
        test_registry, tmp_path, own_tmp):
    out = tmp_path / "bench.json"
    args = parse_args(["--quick", "--only", "lifecycle,builds,images,fleet,suite",
                       "--peers", "native,native_loopback", "--counts", json.dumps(TINY)])
    results = run(args, registry=test_registry)
    out.write_text(json.dumps(results))
    again = json.loads(out.read_text())
    assert again["counts"]["mode"] == "quick"
    assert again["counts"]["lifecycle_batch"] == 2
    native = again["lifecycle"]["native"]
    assert native["n"] == 2 and native["batch"] == 2
    assert native["network"] == "one shared per run"
    assert native["x_native_median"] == 1.0
    assert native["median_ms"] > 0 and native["p90_ms"] >= native["median_ms"]
    assert again["lifecycle"]["native_loopback"]["network"].startswith("none")
    for peer in ("docker_backend", "docker_cli", "podman_cli", "testcontainers"):
        assert again["lifecycle"][peer] is None  # not asked for: null, as a missing peer
    assert again["rebuild"]["pycontain"]["steps"] == 10
    assert again["rebuild"]["docker"] is None
    assert again["cold_build"]["pycontain"]["n"] == 1
    assert again["images"]["pull_present"]["downloads"] == 0
    assert again["images"]["unpack"]["tar_x"]["n"] == 1
    assert again["fleet"]["containers"] == 2 and again["fleet"]["running"] == 2
    assert again["fleet"]["pss_per_container_kib"] is not None
    assert again["mesh"]["pairs_ok"] == again["mesh"]["pairs_checked"] == 9
    assert again["suite"]["tests"] == 2 and again["suite"]["native"]["plain_s"] > 0
    assert again["suite"]["docker_backend"] is None
    assert "| native |" in table(again)
    assert "Machine: " in markdown(again) and "lifecycle_batch=2" in markdown(again)
    assert _workdirs(own_tmp) == []  # its temporary directory is gone
    assert _bench_mounts(own_tmp) == []  # and nothing is left mounted below it



@needs_root
@pytest.mark.podman
def test_podman_cli_runs_on_a_private_podman_and_leaves_nothing(test_registry, own_tmp):
    """The podman row: podman's CLI on the test set-up's private podman (its storage and its
    mount namespace), made and removed within the run."""
    args = parse_args(["--quick", "--only", "lifecycle", "--peers", "podman_cli",
                       "--counts", json.dumps(TINY)])
    results = run(args, registry=test_registry)
    podman = results["lifecycle"]["podman_cli"]
    if podman is None and not shutil.which("podman"):
        pytest.skip("podman is not installed")
    assert podman is not None and podman["n"] == 2 and podman["batch"] == 2
    assert podman["median_ms"] > 0
    assert _workdirs(own_tmp) == [] and _bench_mounts(own_tmp) == []


@needs_root
def test_the_compose_section_runs_a_stack_up_and_down(test_registry, own_tmp):
    args = parse_args(["--quick", "--only", "compose", "--peers", "native",
                       "--counts", json.dumps({"compose_samples": 1})])
    results = run(args, registry=test_registry)
    native = results["compose"]["native"]
    assert native["n"] == 1 and native["median_ms"] > 0 and native["x_native_median"] == 1.0
    assert results["compose"]["docker_backend"] is None  # not asked for
    assert "| native |" in table(results).split("3-service stack")[1]
    assert _bench_mounts(own_tmp) == []


@needs_root
def test_the_reuse_section_times_fresh_first_and_reused_runs_and_leaves_nothing(
        test_registry, own_tmp):
    args = parse_args(["--quick", "--only", "reuse", "--peers", "native",
                       "--counts", json.dumps({"reuse_tests": 2})])
    results = run(args, registry=test_registry)
    native = results["reuse"]["native"]
    assert native["fresh_s"] > 0 and native["first_reuse_s"] > 0 and native["reused_s"] > 0
    assert results["reuse"]["docker_backend"] is None  # not asked for
    assert "| native |" in table(results).split("reuse: 2 tests")[1]
    assert _bench_mounts(own_tmp) == []


@needs_root
def test_the_stack_section_runs_postgres_redis_and_an_app_per_test(service_images, own_tmp):
    args = parse_args(["--quick", "--only", "stack", "--peers", "native", "--counts",
                       json.dumps({"stack_modules": 1, "stack_tests": 2,
                                   "stack_build_samples": 1})])
    results = run(args, registry=service_images)
    native = results["stack"]["native"]
    assert native["n"] == 1 and native["tests_per_module"] == 2
    assert native["app_median_ms"] > 0 and native["up_median_ms"] > 0
    assert native["x_native_median"] == 1.0
    assert results["stack"]["docker_backend"] is None  # not asked for
    assert results["stack"]["testcontainers"] is None
    assert results["stack_build"]["pycontain"]["n"] == 1
    assert results["stack_build"]["docker"] is None
    assert "| native |" in table(results).split("per-module stack")[1]
    assert _bench_mounts(own_tmp) == []
