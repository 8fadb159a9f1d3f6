"""The store against real registries: pull, push, save, load, tags, prune, builds' layers,
the failure paths (each leaves the store exactly as before) and 8 processes pulling at once."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pycontain.errors import (
    ImageNotFound,
    LayerError,
    PullError,
    PushError,
    ReferenceError_,
)
from pytest_pycontain.registry import host_platform
from pytest_pycontain.store import Store
from testenv.registry import RunningRegistry, free_port, start_registry
from tests.tiny_registry import TinyRegistry, digest_of, make_image

REPO = Path(__file__).resolve().parent.parent


def skopeo_digest(target: str) -> str:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                          target], capture_output=True, text=True, check=True).stdout
    return out.strip()


def tree(root: Path) -> dict[str, str]:
    """Everything in the store but its lock files, with content hashes: 'exactly as before'."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "locks":
            continue
        found[str(rel)] = (hashlib.sha256(path.read_bytes()).hexdigest()
                           if path.is_file() and not path.is_symlink() else "dir")
    return found


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", attempts=2, backoff=0.01)


@pytest.fixture
def tiny() -> Iterator[TinyRegistry]:
    server = TinyRegistry()
    yield server
    server.stop()


@pytest.fixture
def busybox(test_registry: RunningRegistry) -> str:
    return f"{test_registry.host}/library/busybox:latest"


# ------------------------------------------------------------------------------ pulls


def test_pull_busybox_keeps_the_registry_digest(store: Store, busybox: str) -> None:
    events: list[tuple[str, str]] = []
    image = store.pull(busybox, progress=lambda e, d, n, t: events.append((e, d)))
    assert image.digest == skopeo_digest(f"docker://{busybox}")
    assert image.id == "sha256:" + hashlib.sha256(image.config_bytes).hexdigest()
    assert image.tags == [f"{busybox}"]
    assert image.config["Cmd"] == ["sh"] and image.config["Entrypoint"] is None
    assert image.image_config.env_dict["PATH"].endswith("/bin")
    assert image.image_config.os == "linux" and len(image.diff_ids) == 1
    assert ("downloaded", image.layers[0].digest) in events
    index = json.loads((store.root / "index.json").read_text())
    assert index["manifests"][0]["annotations"] == {
        "org.opencontainers.image.ref.name": busybox}
    assert json.loads((store.root / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    [layer] = store.layer_dirs(image)
    assert layer.name == image.diff_ids[0].removeprefix("sha256:")
    assert os.access(layer / "bin" / "sh", os.X_OK)
    assert (layer / "etc" / "passwd").read_text().startswith("root:x:0:0:")


def test_second_pull_downloads_nothing(store: Store, busybox: str) -> None:
    store.pull(busybox)
    events: list[str] = []
    again = store.pull(busybox, progress=lambda e, d, n, t: events.append(e))
    assert events == [] and again.tags == [busybox]
    events.clear()
    store.pull(busybox, policy="always", progress=lambda e, d, n, t: events.append(e))
    assert "download" not in events and "exists" in events


def test_policy_never_and_lookup_errors(store: Store, busybox: str) -> None:
    with pytest.raises(ImageNotFound, match=r"busybox:latest is not in the store .* 'never'"):
        store.pull(busybox, policy="never")
    with pytest.raises(ImageNotFound, match=f"not in the store \\({store.root}\\)"):
        store.get("busybox")
    image = store.pull(busybox)
    assert store.pull(busybox, policy="never") == image
    assert store.get(image.id) == image
    assert store.get(image.id.removeprefix("sha256:")[:12]) == image
    assert store.get(image.digest) == image
    with pytest.raises(ReferenceError_):
        store.get("Not A Reference")


def test_pull_by_digest(store: Store, busybox: str, test_registry: RunningRegistry) -> None:
    digest = skopeo_digest(f"docker://{busybox}")
    ref = f"{test_registry.host}/library/busybox@{digest}"
    image = store.pull(ref)
    assert image.digest == digest and store.get(ref) == image
    assert image.tags == [] and image.names == [ref]


def test_push_then_pull_gives_identical_digests(store: Store, busybox: str, tmp_path: Path,
                                                test_registry: RunningRegistry) -> None:
    image = store.pull(busybox)
    dest = f"{test_registry.host}/pushed/busybox:copy"
    assert store.push(busybox, dest) == image.digest
    assert skopeo_digest(f"docker://{dest}") == image.digest
    fresh = Store(tmp_path / "fresh").pull(dest)
    assert (fresh.digest, fresh.id) == (image.digest, image.id)


def test_debian_round_trip(store: Store, tmp_path: Path, test_registry: RunningRegistry) -> None:
    ref = f"{test_registry.host}/library/debian:bookworm"
    image = store.pull(ref)
    assert image.digest == skopeo_digest(f"docker://{ref}")
    assert image.manifest_media_type == "application/vnd.oci.image.manifest.v1+json"
    dest = f"{test_registry.host}/pushed/debian:bookworm"
    store.push(ref, dest)
    fresh = Store(tmp_path / "fresh").pull(dest)
    assert (fresh.digest, fresh.id) == (image.digest, image.id)


def test_mirror_then_fallback_to_docker_io(tmp_path: Path, test_registry: RunningRegistry,
                                           busybox: str) -> None:
    upstream = start_registry(tmp_path / "upstream")
    try:
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                        "--dest-tls-verify=false", f"docker://{busybox}",
                        f"docker://{upstream.host}/library/onlyupstream:1"], check=True)
        s = Store(tmp_path / "store", registry_mirror=test_registry.url,
                  docker_io_endpoint=upstream.url, attempts=2, backoff=0.01)
        assert s.pull("busybox").tags == ["busybox:latest"]
        fallback = s.pull("onlyupstream:1")
        assert fallback.digest == skopeo_digest(f"docker://{busybox}")
        with pytest.raises(PullError) as info:
            s.pull("nowhere")
        message = str(info.value)
        assert f"registry docker.io ({upstream.host})" in message
        assert f"mirror {test_registry.host}" in message and "nowhere" in message
        down = Store(tmp_path / "down", registry_mirror=f"http://127.0.0.1:{free_port()}",
                     docker_io_endpoint=upstream.url, attempts=1)
        assert down.pull("onlyupstream:1").digest == fallback.digest
        assert s.push("onlyupstream:1", "copied:2") == fallback.digest
        assert skopeo_digest(f"docker://{upstream.host}/library/copied:2") == fallback.digest
    finally:
        upstream.stop()


def test_from_settings(tmp_path: Path) -> None:
    from pytest_pycontain import config

    settings = config.resolve(environ={"PYCONTAIN_CACHE_DIR": str(tmp_path),
                                       "PYCONTAIN_REGISTRY_MIRROR": "http://127.0.0.1:9",
                                       "PYCONTAIN_INSECURE_REGISTRIES": "a:1,b:2",
                                       "PYCONTAIN_PULL": "never"})
    s = Store.from_settings(settings)
    assert s.root == tmp_path / "store"
    assert (s.registry_mirror, s.insecure_registries, s.pull_policy) == \
        ("http://127.0.0.1:9", ("a:1", "b:2"), "never")


# ------------------------------------------------------------------------------ platforms


def test_index_picks_the_host_platform(store: Store, tiny: TinyRegistry) -> None:
    host = host_platform()
    ours = make_image({"mine": b"1"}, arch=host.architecture)
    other = make_image({"other": b"2"}, arch="s390x" if host.architecture != "s390x" else "ppc64le")
    tiny.add_index("multi", "v1", {str(host): ours, f"linux/{other_arch(host)}": other})
    image = store.pull(f"{tiny.host}/multi:v1")
    assert image.digest == ours["digest"]
    assert tiny.blob_gets(other["layer"]) == 0


def other_arch(host) -> str:
    return "s390x" if host.architecture != "s390x" else "ppc64le"


def test_missing_platform_lists_the_available_ones(store: Store, tiny: TinyRegistry) -> None:
    store._ensure()
    before = tree(store.root)
    tiny.add_index("multi", "v1", {"linux/riscv64": make_image({"a": b"1"}, arch="riscv64"),
                                   "linux/arm/v7": make_image({"b": b"2"}, arch="arm")})
    with pytest.raises(PullError) as info:
        store.pull(f"{tiny.host}/multi:v1", platform="linux/mips64le")
    assert str(info.value) == (f"{tiny.host}/multi:v1: no linux/mips64le in index; available: "
                               f"linux/riscv64, linux/arm/v7 (registry {tiny.host})")
    assert tree(store.root) == before
    assert store.pull(f"{tiny.host}/multi:v1", platform="linux/arm/v7").image_config.architecture \
        == "arm"


# ------------------------------------------------------------------------------ bad input


def failing_pull(store: Store, ref: str, match: str) -> PullError:
    store._ensure()
    before = tree(store.root)
    with pytest.raises(PullError, match=match) as info:
        store.pull(ref)
    assert tree(store.root) == before  # no partial blob, no dangling reference
    assert ref in str(info.value)
    return info.value


def test_digest_mismatch(store: Store, tiny: TinyRegistry) -> None:
    image = make_image({"f": os.urandom(4000)})
    tiny.add("app", "v1", image)
    tiny.corrupt.add(image["layer"])
    error = failing_pull(store, f"{tiny.host}/app:v1", f"blob {image['layer']}: digest mismatch")
    assert f"registry {tiny.host}" in str(error)


def test_truncated_download(store: Store, tiny: TinyRegistry) -> None:
    image = make_image({"f": os.urandom(100_000)})
    tiny.add("app", "v1", image)
    tiny.truncate.add(image["layer"])
    failing_pull(store, f"{tiny.host}/app:v1", "truncated")
    assert tiny.blob_gets(image["layer"]) == 2  # retried once (attempts=2), then gave up


def test_unknown_tag(store: Store, test_registry: RunningRegistry) -> None:
    ref = f"{test_registry.host}/library/busybox:no-such-tag"
    error = failing_pull(store, ref, "manifest: not found")
    assert f"registry {test_registry.host}" in str(error)


def test_registry_down(store: Store) -> None:
    ref = f"127.0.0.1:{free_port()}/app:v1"
    error = failing_pull(store, ref, "cannot reach")
    assert error.registry == ref.split("/")[0]


def test_zstd_layer_is_refused_clearly(store: Store, tiny: TinyRegistry) -> None:
    try:  # zstandard is not a dependency; without it the error must say so
        import zstandard  # noqa: F401
        pytest.skip("zstandard installed")
    except ImportError:
        pass
    image = make_image({}, layer=b"\x28\xb5\x2f\xfd" + b"\0" * 32,
                       layer_media_type="application/vnd.oci.image.layer.v1.tar+zstd")
    tiny.add("z", "v1", image)
    failing_pull(store, f"{tiny.host}/z:v1", "zstd-compressed.*install the 'zstandard' package")


def test_hostile_layer_is_refused_at_unpack(store: Store, tiny: TinyRegistry,
                                            tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../../escape")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pwned"))
    image = make_image({}, layer=raw.getvalue(),
                       layer_media_type="application/vnd.oci.image.layer.v1.tar")
    tiny.add("evil", "v1", image)
    pulled = store.pull(f"{tiny.host}/evil:v1")
    with pytest.raises(LayerError, match=r"refusing entry '\.\./\.\./escape'"):
        store.layer_dirs(pulled)
    assert list(store.layers_dir.iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []
    assert not (tmp_path / "escape").exists() and not (store.root.parent / "escape").exists()


# ------------------------------------------------------------------------------ tags, save, load


def test_tag_untag_images_prune(store: Store, busybox: str, tiny: TinyRegistry) -> None:
    image = store.pull(busybox)
    other = make_image({"x": b"y"})
    tiny.add("other", "v1", other)
    second = store.pull(f"{tiny.host}/other:v1")
    store.layer_dirs(second)
    store.tag(image, "mine:1")
    assert sorted(store.get("mine:1").tags) == sorted([busybox, "mine:1"])
    assert "docker.io/library/mine:1" in store.get("mine:1").names
    assert {i.digest for i in store.images()} == {image.digest, second.digest}
    store.untag(f"{tiny.host}/other:v1")
    with pytest.raises(ImageNotFound):
        store.untag(f"{tiny.host}/other:v1")
    removed = store.prune()
    assert removed["blobs"] == 3 and removed["layers"] == 1
    assert not store.has_blob(other["layer"]) and store.has_blob(image.layers[0].digest)
    assert store.get("mine:1") == image
    store.untag(busybox)
    store.untag("mine:1")
    store.prune()
    assert list(store.blobs_dir.iterdir()) == [] and store.images() == []


def _layer(text: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("app/version")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return raw.getvalue()


def test_names_changed_through_another_store_are_seen_at_once(store: Store) -> None:
    """Lookups reuse what they made while index.json is unchanged; a tag, a retag (a rebuild
    of ``myapp:latest``), an untag or a prune by another process (here: another Store on the
    same root) is seen by the very next lookup, however fast the edits follow each other."""
    other = Store(store.root)
    first = store.commit({"Cmd": ["one"]}, [store.add_layer(_layer(b"1"))], tag="myapp:latest")
    assert other.get("myapp:latest") == first
    assert other.get("myapp:latest") is other.get("myapp") is other.pull("myapp:latest")
    second = store.commit({"Cmd": ["two"]}, [store.add_layer(_layer(b"2"))], tag="myapp:latest")
    assert other.get("myapp:latest") == second and other.get("myapp").config["Cmd"] == ["two"]
    assert other.get(second.id).tags == ["myapp:latest"]
    with pytest.raises(ImageNotFound):  # its only name went to the rebuild
        other.get(first.id)
    for round_ in range(30):  # same-size edits in one clock tick, inodes freed and reused
        wanted = (first, second)[round_ % 2]
        store.tag(wanted, "myapp:latest")
        assert other.get("myapp:latest").digest == wanted.digest, round_
    store.tag(second, "myapp:2")
    assert sorted(other.get("myapp:2").tags) == ["myapp:2", "myapp:latest"]
    store.untag("myapp:latest")
    with pytest.raises(ImageNotFound):
        other.get("myapp:latest")
    assert other.get("myapp:2").tags == ["myapp:2"]
    store.untag("myapp:2")
    store.prune()
    with pytest.raises(ImageNotFound):
        other.get(second.id)
    with pytest.raises(ImageNotFound, match="pull policy is 'never'"):
        other.pull("myapp:2", policy="never")
    assert other.images() == []
    again = store.commit({"Cmd": ["two"]}, [store.add_layer(_layer(b"2"))], tag="myapp:2")
    assert other.get("myapp:2") == again == second


def test_prune_keeps_layers_in_use_and_clears_stale_temp_files(store: Store,
                                                              tiny: TinyRegistry) -> None:
    image = make_image({"x": b"y"})
    tiny.add("other", "v1", image)
    [layer] = store.layer_dirs(store.pull(f"{tiny.host}/other:v1"))
    store.untag(f"{tiny.host}/other:v1")
    stale, fresh = store.root / "tmp" / "stale.partial", store.root / "tmp" / "fresh.partial"
    stale.write_bytes(b"left by a killed pull")
    fresh.write_bytes(b"a pull in progress")
    os.utime(stale, (time.time() - 7200,) * 2)
    assert store.prune(keep=[layer]) == {"blobs": 3, "layers": 0,
                                         "bytes": sum(len(b) for b in image["blobs"].values())
                                         + len(image["manifest"])}
    assert layer.is_dir() and fresh.exists() and not stale.exists()
    assert store.prune(keep=[image["diff_id"]])["layers"] == 0
    assert store.prune()["layers"] == 1 and not layer.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")
def test_prune_keeps_layers_a_mounted_overlay_uses(store: Store, tiny: TinyRegistry,
                                                  tmp_path: Path) -> None:
    tiny.add("other", "v1", make_image({"x": b"y"}))
    [layer] = store.layer_dirs(store.pull(f"{tiny.host}/other:v1"))
    store.untag(f"{tiny.host}/other:v1")
    for name in ("upper", "work", "merged"):
        (tmp_path / name).mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={layer},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}",
                    str(tmp_path / "merged")], check=True)
    try:
        assert layer.name in store.layers_in_use()
        assert store.prune()["layers"] == 0 and (tmp_path / "merged" / "x").read_bytes() == b"y"
    finally:
        subprocess.run(["umount", str(tmp_path / "merged")], check=True)
    assert store.prune()["layers"] == 1 and not layer.exists()


def test_save_is_an_oci_archive_skopeo_reads(store: Store, busybox: str, tmp_path: Path) -> None:
    image = store.pull(busybox)
    archive = store.save(busybox, tmp_path / "busybox.tar")
    out = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)["Digest"] == image.digest
    fresh = Store(tmp_path / "fresh")
    [loaded] = fresh.load(archive)
    assert (loaded.digest, loaded.id, loaded.tags) == (image.digest, image.id, [busybox])
    assert (fresh.layer_dirs(loaded)[0] / "bin" / "busybox").is_file()


@pytest.mark.dockerd
def test_docker_pulls_what_we_push_and_we_load_what_docker_saves(
        dockerd, store: Store, busybox: str, test_registry: RunningRegistry,
        tmp_path: Path) -> None:
    image = store.pull(busybox)
    dest = f"{test_registry.host}/fromus/busybox:1"
    store.push(busybox, dest)

    def docker(*argv: str) -> str:
        return subprocess.run(["docker", *argv], env=dockerd.env(), capture_output=True,
                              text=True, check=True, timeout=120).stdout.strip()

    docker("pull", "-q", dest)
    try:
        image_id, repo_digest = docker("image", "inspect", "--format",
                                       "{{.Id}} {{index .RepoDigests 0}}", dest).split()
        assert image_id == image.id and repo_digest.endswith("@" + image.digest)
        docker("save", "-o", str(tmp_path / "saved.tar"), dest)
    finally:
        docker("rmi", dest)
    fresh = Store(tmp_path / "fresh")
    [loaded] = fresh.load(tmp_path / "saved.tar")
    assert loaded.id == image.id and loaded.tags == [dest]
    assert (fresh.layer_dirs(loaded)[0] / "bin" / "busybox").is_file()


def test_load_docker_save_archive(store: Store, tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    layer = raw.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["cat"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}}).encode()
    archive = tmp_path / "docker.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in [("abc/layer.tar", layer), ("cfg.json", config),
                           ("manifest.json", json.dumps([{
                               "Config": "cfg.json", "RepoTags": ["hello:1"],
                               "Layers": ["abc/layer.tar"]}]).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    [image] = store.load(archive)
    assert image.tags == ["hello:1"] and image.config["Cmd"] == ["cat"]
    assert image.id == digest_of(config)
    assert (store.layer_dirs(image)[0] / "hello.txt").read_text() == "hi\n"
    (tmp_path / "junk.tar").write_bytes(b"nothing")
    with pytest.raises(LayerError, match=r"junk\.tar: not a readable tar archive"):
        store.load(tmp_path / "junk.tar")


# ------------------------------------------------------------------------------ builds


def test_built_layers_are_gzip_at_the_fastest_level(store: Store) -> None:
    """A build waits for every layer's compression: the blob is a plain gzip stream of the tar
    (no name, mtime 0), made at zlib's fastest level, which the gzip header records (XFL 4)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for n in range(50):
            data = (b"line %d of a file that compresses\n" % n) * 200
            info = tarfile.TarInfo(f"app/f{n}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer = store.add_layer(raw.getvalue())
    blob = store.blob_path(layer.digest).read_bytes()
    assert layer.digest == digest_of(blob) and layer.diff_id == digest_of(raw.getvalue())
    assert blob[:4] == b"\x1f\x8b\x08\x00" and blob[4:8] == b"\0\0\0\0"
    assert blob[8] == 4, f"gzip XFL {blob[8]}: not the fastest level"
    assert gzip.decompress(blob) == raw.getvalue()
    assert len(blob) < len(raw.getvalue()) // 10


def test_add_layer_and_commit_are_reproducible(store: Store, tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("app/run.sh")
        info.size = 10
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(b"echo hello"))
    layer = store.add_layer(raw.getvalue())
    assert layer.diff_id == digest_of(raw.getvalue())
    (tmp_path / "layer.tar").write_bytes(raw.getvalue())
    assert store.add_layer(tmp_path / "layer.tar") == layer
    image = store.commit({"Cmd": ["/app/run.sh"], "ExposedPorts": {"8080/tcp": {}}}, [layer],
                         tag="built:1")
    again = store.commit({"Cmd": ["/app/run.sh"], "ExposedPorts": {"8080/tcp": {}}}, [layer])
    assert again.digest == image.digest and again.tags == ["built:1"]
    assert image.config["ExposedPorts"] == {"8080/tcp": {}}
    assert image.image_config.exposed_ports == ("8080/tcp",)
    assert image.diff_ids == [layer.diff_id]
    [unpacked] = store.layer_dirs(image)
    assert (unpacked / "app" / "run.sh").read_bytes() == b"echo hello"
    untagged = store.commit({"config": {"Cmd": ["x"]}, "history": [{"created_by": "x"}]},
                            [layer])
    assert untagged.tags == [] and store.get(untagged.id) == untagged
    with pytest.raises(ImageNotFound, match="layer blob sha256:0000"):
        store.commit({}, [("sha256:" + "0" * 64, "sha256:" + "0" * 64)])


# ------------------------------------------------------------------------------ concurrency

WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from pytest_pycontain.store import Store
    root, ref, out, go = sys.argv[1:5]
    events = []
    store = Store(root, progress=lambda e, d, n, t: events.append((e, d)) if e != "download"
                  else None)
    while not os.path.exists(go):
        time.sleep(0.002)
    image = store.pull(ref)
    dirs = store.layer_dirs(image)
    listing = sorted(str(p.relative_to(dirs[0])) + ":" + str(p.stat().st_size)
                     for p in dirs[0].rglob("*"))
    blobs = {{d: __import__("hashlib").sha256(store.blob_path(d).read_bytes()).hexdigest()
              for d in [image.layers[0].digest, image.config_descriptor["digest"]]}}
    Path(out).write_text(json.dumps({{"events": events, "digest": image.digest,
                                      "dirs": [str(d) for d in dirs], "listing": listing,
                                      "blobs": blobs}}))
""")


def test_eight_processes_pull_and_unpack_once(tmp_path: Path, tiny: TinyRegistry) -> None:
    files = {f"data/f{i:03}": os.urandom(8000) for i in range(250)}
    image = make_image(files)
    tiny.add("shared", "v1", image)
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)))
    go = tmp_path / "go"
    ref = f"{tiny.host}/shared:v1"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "store"), ref,
                               str(tmp_path / f"out{i}.json"), str(go)]) for i in range(8)]
    time.sleep(0.3)  # let them start; they wait for the go file
    go.touch()
    assert [p.wait(120) for p in procs] == [0] * 8
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(8)]
    events = Counter((e, d) for r in results for e, d in r["events"])
    assert events[("downloaded", image["layer"])] == 1
    assert events[("downloaded", image["config"])] == 1
    assert events[("unpacked", image["diff_id"])] == 1
    assert tiny.blob_gets(image["layer"]) == 1 and tiny.blob_gets(image["config"]) == 1
    first = results[0]
    for result in results:  # everyone saw the complete blob and the complete layer
        assert result["digest"] == image["digest"] and result["dirs"] == first["dirs"]
        assert result["listing"] == first["listing"] and len(result["listing"]) == 251
        assert all(d == "sha256:" + h for d, h in result["blobs"].items())
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_a_typo_says_not_found_first(tmp_path: Path, test_registry: RunningRegistry) -> None:
    """The mirror answers "not found"; Docker Hub (here: a port nothing listens on) cannot be
    reached. The news is the first: the name is wrong."""
    store = Store(tmp_path / "store", registry_mirror=test_registry.url,
                  docker_io_endpoint=f"http://127.0.0.1:{free_port()}", attempts=1)
    error = failing_pull(store, "busyboxx", "^image busyboxx not found: ")
    assert f"registry mirror {test_registry.host}" in str(error).split("(also tried")[0]
    assert "cannot reach" in str(error).split("(also tried")[1]


# ------------------------------------------------------------------------------ a store that heals

def _damage(store: Store, digest: str) -> None:
    path = store.blob_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["manifest", "config"])
def test_a_damaged_manifest_or_config_is_never_used(store: Store, tiny: TinyRegistry,
                                                    which: str) -> None:
    image = make_image({"f": b"x"})
    tiny.add("app", "v1", image)
    ref = f"{tiny.host}/app:v1"
    store.pull(ref)
    _damage(store, image["digest"] if which == "manifest" else image["config"])
    with pytest.raises(LayerError, match=r"is damaged: its bytes hash to sha256:"):
        store.get(ref)
    store.pull(ref)  # the pull that finds it damaged fetches it again
    assert store.get(ref).digest == image["digest"]
    assert store.blob_intact(image[which if which == "config" else "digest"])


def test_pull_fetches_a_damaged_layer_again(store: Store, tiny: TinyRegistry) -> None:
    image = make_image({"f": os.urandom(5000)})
    tiny.add("app", "v1", image)
    ref = f"{tiny.host}/app:v1"
    store.pull(ref)
    _damage(store, image["layer"])
    store.pull(ref, policy="always")
    assert tiny.blob_gets(image["layer"]) == 2
    assert store.blob_intact(image["layer"])


def test_save_and_push_never_export_a_damaged_blob(store: Store, tiny: TinyRegistry,
                                                   tmp_path: Path) -> None:
    image = make_image({"f": os.urandom(5000)})
    tiny.add("app", "v1", image)
    ref = f"{tiny.host}/app:v1"
    store.pull(ref)
    _damage(store, image["layer"])
    with pytest.raises(LayerError, match=f"save {re.escape(ref)}: blob {image['layer']} in "
                       "the image store .* is damaged"):
        store.save(ref, tmp_path / "out.tar")
    assert list(tmp_path.glob("*out.tar*")) == []
    other = TinyRegistry()
    try:
        with pytest.raises(PushError, match=f"blob {image['layer']} .* is damaged"):
            store.push(ref, f"{other.host}/copy:v1")
        assert image["layer"] not in other.blobs and not other.manifests
    finally:
        other.stop()


def test_partials_of_dead_owners_go_at_the_next_start(tmp_path: Path) -> None:
    Store(tmp_path / "store")._ensure()
    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = tmp_path / "store" / "tmp"
    (tmp / f"{'a' * 64}.{dead.pid}.0123abcd").write_bytes(b"half a layer")
    (tmp / f"unpack.{dead.pid}.4567abcd").mkdir()
    (tmp / f"{'b' * 64}.{os.getpid()}.89abcdef").write_bytes(b"a live download")
    Store(tmp_path / "store")._ensure()
    assert sorted(p.name for p in tmp.iterdir()) == [f"{'b' * 64}.{os.getpid()}.89abcdef"]


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "started-over"])
def test_a_broken_off_download_resumes_where_it_stopped(store: Store, tiny: TinyRegistry,
                                                        ranges: bool) -> None:
    image = make_image({"f": os.urandom(300_000)})
    tiny.add("app", "v1", image)
    tiny.serve_ranges = ranges
    tiny.break_once.add(image["layer"])
    store.pull(f"{tiny.host}/app:v1")
    half = len(image["blobs"][image["layer"]]) // 2
    assert tiny.ranges == [f"bytes={half}-"]  # asked for the rest (served or not)
    assert tiny.blob_gets(image["layer"]) == 2
    assert store.blob_intact(image["layer"])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as the cache")
def test_a_full_disk_names_the_cache_directory_and_the_space(tmp_path: Path,
                                                            tiny: TinyRegistry) -> None:
    image = make_image({"f": os.urandom(3_000_000)}, gz=False)
    tiny.add("big", "v1", image)
    root = tmp_path / "cache"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pycontain-test-full", str(root)],
                   check=True)
    try:
        store = Store(root / "store", attempts=2, backoff=0.01)
        with pytest.raises(PullError) as info:
            store.pull(f"{tiny.host}/big:v1")
        message = str(info.value)
        assert message.startswith(f"the image cache {root / 'store'} is out of space: 3.0 MB "
                                  f"for blob {image['layer']}, "), message
        assert "free there" in message and "PYCONTAIN_CACHE_DIR" in message
        assert tiny.blob_gets(image["layer"]) == 1  # our disk, not the registry: no retry
        assert list((root / "store" / "tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_images_verify_repairs_and_says_what_it_could_not(tmp_path: Path,
                                                         tiny: TinyRegistry) -> None:
    """Through the command: one damaged layer comes back from its registry; one of a registry
    that is gone cannot."""
    env = {**os.environ, "PYCONTAIN_CACHE_DIR": str(tmp_path / "cache")}
    store = Store(tmp_path / "cache" / "store")
    good, lost = make_image({"g": os.urandom(4000)}), make_image({"l": os.urandom(4000)})
    tiny.add("good", "v1", good)
    gone = TinyRegistry()
    gone.add("lost", "v1", lost)
    store.pull(f"{tiny.host}/good:v1")
    store.pull(f"{gone.host}/lost:v1")
    gone.stop()
    _damage(store, good["layer"])
    _damage(store, lost["layer"])
    done = subprocess.run([sys.executable, "-m", "pytest_pycontain.cli", "images", "--verify"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert f"repaired {good['layer']}: pulled again for {tiny.host}/good:v1" in done.stdout
    assert f"could not repair {lost['layer']}: " in done.stderr
    assert f"cannot reach http://{gone.host}/" in done.stderr
    assert "checked 6 blobs" in done.stdout and "2 damaged, 1 repaired, 1 not" in done.stdout
    assert store.blob_intact(good["layer"]) and not store.has_blob(lost["layer"])
    again = subprocess.run([sys.executable, "-m", "pytest_pycontain.cli", "images", "--verify"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "0 damaged" in again.stdout
