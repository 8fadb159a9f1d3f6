"""Image-store numbers (issue 3): a pull whose blobs are all present, and unpacking a layer
beside ``tar -x`` of the same blob."""

from __future__ import annotations

import shutil
import subprocess
import time

from .env import Env, skipped
from .stats import summarize


def measure(env: Env, samples: int, unpack_image: str = "debian:bookworm") -> dict | None:
    """Pull timings for busybox; unpacking the largest layer of ``unpack_image``."""
    try:
        from pytest_pycontain.store import unpack_layer

        store = env.native.store
        store.pull("busybox")
        downloads: list[str] = []

        def count(event: str, digest: str, done: int, total: int | None) -> None:
            if event == "downloaded":
                downloads.append(digest)

        def timed(policy: str) -> list[float]:
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                store.pull("busybox", policy=policy, progress=count)
                times.append((time.perf_counter() - start) * 1000)
            return times

        present = summarize(timed("always"), None)
        present.update(image="busybox", downloads=len(downloads),
                       how="policy=always: manifest asked of the registry, every blob present")
        stored = summarize(timed("missing"), None)
        stored.update(image="busybox", downloads=len(downloads),
                      how="policy=missing: answered from the store")
        image = store.pull(unpack_image)
        layer = max(image.layers, key=lambda lay: store.blob_path(lay.digest).stat().st_size)
        blob = store.blob_path(layer.digest)
        ours, tars = [], []
        for i in range(samples):
            dest = env.workdir / f"unpack-{i}"
            dest.mkdir()
            start = time.perf_counter()
            unpack_layer(blob, dest, diff_id=layer.diff_id)
            ours.append((time.perf_counter() - start) * 1000)
            shutil.rmtree(dest)
            dest.mkdir()
            start = time.perf_counter()
            subprocess.run(["tar", "-xf", str(blob), "-C", str(dest)], check=True)
            tars.append((time.perf_counter() - start) * 1000)
            shutil.rmtree(dest)
        unpack = {"pycontain": summarize(ours, None), "tar_x": summarize(tars, None),
                  "layer": layer.digest, "bytes": blob.stat().st_size,
                  "image": unpack_image}
        unpack["x_tar"] = round(unpack["pycontain"]["median_ms"] / unpack["tar_x"]["median_ms"],
                                2)
        return {"pull_present": present, "pull_from_store": stored, "unpack": unpack}
    except Exception as exc:
        skipped(f"images: failed: {type(exc).__name__}: {exc}")
        return None
