"""The build cache: BuildKit-like keys, invalidation from the first change, concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_pycontain.build import build
from pytest_pycontain.buildcache import BuildCache, file_checksum, step_key
from pytest_pycontain.store import Store

REPO = Path(__file__).resolve().parent.parent


def test_step_keys_chain_and_differ() -> None:
    root = step_key("v1", "scratch")
    assert step_key(root, "COPY a /a") == step_key(root, "COPY a /a")
    assert step_key(root, "COPY a /a") != step_key(root, "COPY a /b")
    assert step_key(root, "RUN x", [("A", "1")]) != step_key(root, "RUN x", [("A", "2")])
    assert step_key(step_key(root, "ENV A=1"), "RUN x") != step_key(root, "RUN x")


def test_file_checksum_sees_content_and_mode_not_mtime(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("one")
    before = file_checksum([("f", path)])
    os.utime(path, (1, 1))
    assert file_checksum([("f", path)]) == before
    os.chmod(path, 0o600)
    assert file_checksum([("f", path)]) != before
    os.chmod(path, 0o644)
    path.write_text("two")
    assert file_checksum([("f", path)]) != before
    assert file_checksum([("g", path)]) != file_checksum([("f", path)])


def test_entries_are_written_whole(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    assert cache.get("sha256:abc") is None
    with cache.lock("sha256:abc"):
        cache.put("sha256:abc", {"layer": ["sha256:1", "sha256:2"]})
    assert cache.get("sha256:abc") == {"layer": ["sha256:1", "sha256:2"]}
    assert not [p for p in (tmp_path / "steps").iterdir() if p.name.endswith(".tmp")]
    cache.forget("sha256:abc")
    assert cache.get("sha256:abc") is None


@pytest.fixture
def store(tmp_path: Path, test_registry) -> Store:
    return Store(tmp_path / "store", registry_mirror=test_registry.url, attempts=2,
                 backoff=0.01)


def steps(lines: list[str]) -> tuple[list[str], list[str]]:
    """(steps that ran, steps taken from the cache) among those that make layers."""
    layered = [line for line in lines if line.startswith("#") and "# buildkit" in line]
    ran = [line for line in layered if not line.endswith("CACHED")]
    cached = [line for line in layered if line.endswith("CACHED")]
    return ran, cached


def test_a_changed_file_rebuilds_from_its_step_on(tmp_path: Path, store: Store) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\nENV X=1\nCOPY b /b\nCOPY c /c\n")
    for name in "abc":
        (ctx / name).write_text(name)
    first: list[str] = []
    image = build(store, ctx, progress=first.append)
    assert len(steps(first)[0]) == 3
    again: list[str] = []
    assert build(store, ctx, progress=again.append).id == image.id
    assert steps(again)[0] == [] and len(steps(again)[1]) == 3
    os.utime(ctx / "a", (5, 5))  # mtimes are not part of the key
    (ctx / "b").write_text("B")
    changed: list[str] = []
    build(store, ctx, progress=changed.append)
    ran, cached = steps(changed)
    assert [line.split(" ", 1)[1] for line in ran] == ["COPY b /b # buildkit",
                                                       "COPY c /c # buildkit"]
    assert [line.split(" ", 1)[1] for line in cached] == ["COPY a /a # buildkit CACHED"]
    bypass: list[str] = []
    build(store, ctx, no_cache=True, progress=bypass.append)
    assert steps(bypass)[1] == []
    # a build arg the step sees is part of its key
    (ctx / "Dockerfile").write_text("FROM scratch\nARG V=1\nCOPY a /a\n")
    build(store, ctx, progress=[].append)
    with_arg: list[str] = []
    build(store, ctx, build_args={"V": "2"}, progress=with_arg.append)
    assert len(steps(with_arg)[0]) == 1


WORKER = """
import sys
from pytest_pycontain.build import build
from pytest_pycontain.native.engine import native_runner
from pytest_pycontain.store import Store
store = Store(sys.argv[1], registry_mirror=sys.argv[3], attempts=3, backoff=0.05)
runner = native_runner() if sys.argv[4] == "run" else None
try:
    image = build(store, sys.argv[2], run_step=runner, progress=lambda t: print(t, flush=True))
finally:
    if runner is not None:
        runner.close()
print("IMAGE", image.id, flush=True)
"""


def test_eight_concurrent_builds_run_each_step_once(tmp_path: Path, store: Store,
                                                    test_registry) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    root = os.geteuid() == 0
    lines = ["FROM busybox", "COPY f /f"]
    if root:
        lines += ["RUN sleep 0.3 && cat /f > /g", "RUN echo done > /h"]
    lines += ["COPY f /f2"]
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    (ctx / "f").write_text("shared")
    store.pull("busybox")  # the concurrent pull is the store's business, tested there
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(
        [sys.executable, "-c", WORKER, str(store.root), str(ctx), test_registry.url,
         "run" if root else "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env) for _ in range(8)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(out.splitlines())
    ids = {line.split()[1] for out in outputs for line in out if line.startswith("IMAGE")}
    assert len(ids) == 1  # every build gave the same image
    ran = [line.split(" ", 1)[1] for out in outputs for line in steps(out)[0]]
    step_count = len(lines) - 1
    assert len(ran) == step_count and len(set(ran)) == step_count  # each step ran once
    cached = [line for out in outputs for line in steps(out)[1]]
    assert len(cached) == 7 * step_count
