"""The image store: an OCI image layout on disk, shared by every process on the machine.

Layout under ``root`` (``<cache dir>/store``)::

    oci-layout, index.json      the OCI layout; index entries name images by full reference
    blobs/sha256/<hex>          manifests, configs and layer blobs, exactly as the registry sent
    layers/sha256/<hex>         each layer unpacked once, keyed by its diff_id (overlayfs lowers)
    locks/                      a file lock per digest (and one for index.json)
    tmp/                        partial downloads and unpacks, renamed into place when complete

Several processes (xdist workers, two pytest runs) may pull and unpack at once: a blob or
layer is written under its digest's lock to a temp path, fsynced, and renamed, so it is made
exactly once and nobody sees it half-written. ``prune`` takes the store's lock exclusively;
pulls, loads and commits hold it shared, so prune never removes a blob that a pull has just
fetched but not yet named.

A run looks its image up every time, so lookups (``get``, ``pull`` of a present image) parse
index.json again only when its bytes change, and make an ``Image`` once per manifest and names
(shared: read-only); the manifest and config are still read and checked against their digests
on every lookup.

Layer blobs made by :meth:`Store.add_layer` (builds) are gzip-compressed at zlib's fastest
level (1, no name, mtime 0): the same tar always gives the same digest with the same zlib, and
pushes stay gzip. Level 1 takes half the time of the default 6 for blobs ~10% larger; a build
waits for it on every layer, where BuildKit keeps layers uncompressed until it exports them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO

from filelock import FileLock

from . import registry as reg
from .errors import (
    ImageNotFound,
    LayerError,
    PullError,
    PushError,
    PycontainError,
    ReferenceError_,
)
from .image import Image, Layer
from .reference import Reference, is_image_id, parse
from .unpack import CHUNK, remove_tree, unpack_layer

Progress = Callable[[str, str, int, "int | None"], None]

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")
BUILD_GZIP_LEVEL = 1  # zlib's fastest: a build waits for every layer's compression
STALE_TMP = 3600.0
IMAGE_MEMO = 256  # Images kept made (a test session names a few dozen)


def _hex(digest: str) -> str:
    """The hex part of a sha256 digest; refuses anything else (digests become file names)."""
    match = _SHA256.fullmatch(digest or "")
    if not match:
        raise LayerError(f"unsupported or malformed digest {digest!r}")
    return match.group(1)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """What ``Store.verify`` found: how many blobs it ``checked``, the ``damaged`` ones, and of
    those the ``repaired`` and ``unrepaired`` ones, each with how or why."""

    checked: int
    damaged: tuple[str, ...]
    repaired: tuple[tuple[str, str], ...]
    unrepaired: tuple[tuple[str, str], ...]


class Store:
    """An OCI image layout at ``root`` with registry settings for pulls and pushes."""

    def __init__(self, root: Path | str, *, registry_mirror: str | None = None,
                 docker_io_endpoint: str | None = None, insecure_registries: Iterable[str] = (),
                 pull_policy: str = "missing", platform: reg.Platform | str | None = None,
                 progress: Progress | None = None, attempts: int = 4, backoff: float = 0.2,
                 jobs: int = 4):
        self.root = Path(root)
        self.registry_mirror = registry_mirror
        self.docker_io_endpoint = docker_io_endpoint
        self.insecure_registries = tuple(insecure_registries)
        self.pull_policy = pull_policy
        if isinstance(platform, str):
            platform = reg.Platform.parse(platform)
        self.platform = platform or reg.host_platform()
        self.progress = progress
        self.attempts = attempts
        self.backoff = backoff
        self.jobs = max(1, jobs)
        self._ready = False
        self._index_file = os.path.join(self.root, "index.json")
        self._blob_prefix = os.path.join(self.root, "blobs", "sha256", "")
        self._index_memo: tuple[bytes, list[dict[str, Any]]] | None = None
        self._image_memo: dict[tuple[str, tuple[str, ...], str | None], Image] = {}

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> Store:
        """The store under ``settings.cache_path`` with the settings' registry options."""
        options: dict[str, Any] = {
            "registry_mirror": settings.registry_mirror,
            "docker_io_endpoint": settings.docker_io_endpoint,
            "insecure_registries": settings.insecure_registries,
            "pull_policy": settings.pull,
        }
        options.update(overrides)
        return cls(Path(settings.cache_path) / "store", **options)

    # ------------------------------------------------------------------ layout and locks

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def layers_dir(self) -> Path:
        return self.root / "layers" / "sha256"

    def _ensure(self) -> None:
        if self._ready:
            return
        for sub in (self.blobs_dir, self.layers_dir, self.root / "locks", self.root / "tmp"):
            sub.mkdir(parents=True, exist_ok=True)
        if not (self.root / "oci-layout").exists():
            self._write_atomic(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.root / "index.json").exists():
            with self._lock("index"):  # another process may be writing its first entry
                if not (self.root / "index.json").exists():
                    self._write_atomic(self.root / "index.json",
                                       b'{"schemaVersion":2,"manifests":[]}')
        self._reap_partials()
        self._ready = True

    def _reap_partials(self) -> None:
        """Remove the partial downloads and unpacks of processes that died (a killed pull):
        temp names carry their maker's pid, and a dead maker's never complete."""
        with contextlib.suppress(FileNotFoundError):
            for item in (self.root / "tmp").iterdir():
                parts = item.name.split(".")
                if len(parts) < 3 or not parts[-2].isdigit() or _alive(int(parts[-2])):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    remove_tree(item)

    def _lock(self, name: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{name}.lock"))

    @contextlib.contextmanager
    def _gc_lock(self, exclusive: bool = False) -> Iterator[None]:
        """Shared by pulls/loads/commits, exclusive for prune (flock on ``locks/gc.lock``)."""
        self._ensure()
        fd = os.open(self.root / "locks" / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _tmp_path(self, stem: str) -> Path:
        return self.root / "tmp" / f"{stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = self._tmp_path(path.name) if (self.root / "tmp").is_dir() else \
            path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(path.parent)

    # ------------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self._blob_prefix + _hex(digest))

    def read_blob(self, digest: str) -> bytes:
        try:
            with open(self._blob_prefix + _hex(digest), "rb") as stream:
                return stream.read()
        except FileNotFoundError:
            raise ImageNotFound(f"blob {digest} is not in the store ({self.root})") from None

    def read_checked(self, digest: str) -> bytes:
        """The bytes of a small blob (a manifest, a config), checked against ``digest`` on
        every read: a damaged one is an error, never used."""
        data = self.read_blob(digest)
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise LayerError(f"blob {digest} in the image store {self.root} is damaged: its "
                             f"bytes hash to {actual} (`pycontain images --verify` repairs it "
                             "from its registry)")
        return data

    def blob_intact(self, digest: str) -> bool:
        """Whether blob ``digest`` is present and its bytes hash to ``digest`` (reads it)."""
        try:
            with self.blob_path(digest).open("rb") as stream:
                return "sha256:" + _hash_stream(stream) == digest
        except FileNotFoundError:
            return False

    def put_blob(self, data: bytes) -> str:
        """Store ``data``; return its digest. Idempotent: the same bytes land in the same file
        (a damaged file of that name is replaced)."""
        self._ensure()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest) or self.blob_path(digest).read_bytes() != data:
            self._write_atomic(self.blob_path(digest), data)
        return digest

    def _adopt(self, tmp: Path, digest: str) -> None:
        """Move a complete, verified temp file into place as blob ``digest``."""
        os.replace(tmp, self.blob_path(digest))
        _fsync_dir(self.blobs_dir)

    def _import_stream(self, stream: IO[bytes], digest: str | None = None) -> tuple[str, int]:
        """Copy ``stream`` into the store, verifying ``digest`` if given; return digest, size."""
        tmp = self._tmp_path("import")
        hasher = hashlib.sha256()
        size = 0
        try:
            try:
                with open(tmp, "wb") as out:
                    while chunk := stream.read(CHUNK):
                        hasher.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise self._no_space(exc, f"blob {digest or 'being imported'}", None) from exc
            actual = "sha256:" + hasher.hexdigest()
            if digest is not None and actual != digest:
                raise LayerError(f"blob {digest}: digest mismatch, its bytes hash to {actual}")
            if not self.has_blob(actual):
                self._adopt(tmp, actual)
            return actual, size
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    # ------------------------------------------------------------------ the index

    def _read_index(self) -> dict[str, Any]:
        """index.json parsed afresh: what an edit changes."""
        try:
            with open(self._index_file, "rb") as stream:
                return self._parse_index(stream.read())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}

    def _parse_index(self, data: bytes) -> dict[str, Any]:
        try:
            index = json.loads(data)
        except ValueError as exc:
            raise LayerError(f"{self._index_file} is corrupt: {exc}") from exc
        index.setdefault("manifests", [])
        return index

    def _entries(self) -> list[dict[str, Any]]:
        """The index's entries for a lookup (never to be edited). Parsed again only when
        index.json's bytes differ from the last read's: any writer (another process's tag,
        untag or rebuild) is seen at once. Bytes, not inode and times, because an edit in the
        same clock tick may reuse the inode at the same size (a retag changes a digest)."""
        try:
            with open(self._index_file, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            return []
        memo = self._index_memo
        if memo is None or memo[0] != data:
            memo = self._index_memo = (data, self._parse_index(data)["manifests"])
        return memo[1]

    @contextlib.contextmanager
    def _edit_index(self) -> Iterator[list[dict[str, Any]]]:
        self._ensure()
        with self._lock("index"):
            index = self._read_index()
            entries = index["manifests"]
            yield entries
            index["manifests"] = entries
            data = json.dumps(index, indent=1, sort_keys=True).encode()
            self._write_atomic(self.root / "index.json", data)

    @staticmethod
    def _name(entry: dict[str, Any]) -> str | None:
        return (entry.get("annotations") or {}).get(REF_NAME)

    def _set_name(self, entries: list[dict[str, Any]], name: str | None, digest: str,
                  media_type: str, size: int) -> None:
        entries[:] = [e for e in entries if not (
            self._name(e) == name or (self._name(e) is None and e["digest"] == digest))]
        entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
        if name is not None:
            entry["annotations"] = {REF_NAME: name}
        entries.append(entry)

    def _image(self, manifest_digest: str, entries: list[dict[str, Any]] | None = None) -> Image:
        """The image of a manifest with its names in ``entries``. Its manifest and config are
        read and checked every time; the Image made of them is made once per digest and
        names (shared by every caller: read-only)."""
        entries = self._entries() if entries is None else entries
        tags = tuple(sorted({self._name(e) for e in entries
                             if e["digest"] == manifest_digest and self._name(e)}))
        media_type = next((e.get("mediaType") for e in entries
                           if e["digest"] == manifest_digest), None)
        manifest_bytes = self.read_checked(manifest_digest)
        key = (manifest_digest, tags, media_type)
        image = self._image_memo.get(key)
        if image is not None:
            self.read_checked(image.manifest["config"]["digest"])
            return image
        try:
            manifest = json.loads(manifest_bytes)
            config_bytes = self.read_checked(manifest["config"]["digest"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LayerError(f"manifest {manifest_digest} in {self.root} is corrupt") from exc
        image = Image(config_bytes=config_bytes, manifest_bytes=manifest_bytes, tags=tags,
                      manifest_media_type=media_type)
        if len(self._image_memo) >= IMAGE_MEMO:
            self._image_memo.clear()
        self._image_memo[key] = image
        return image

    # ------------------------------------------------------------------ lookups

    def get(self, ref_or_id: str | Image) -> Image:
        """The image named by a reference, an image id (``sha256:…`` or a prefix of 12+ hex
        digits) or a manifest digest; raises ``ImageNotFound``."""
        if isinstance(ref_or_id, Image):
            ref_or_id = ref_or_id.digest
        entries = self._entries()
        text = ref_or_id
        if is_image_id(text):
            wanted = text if text.startswith("sha256:") else "sha256:" + text
            for entry in entries:
                if entry["digest"] == wanted:
                    return self._image(entry["digest"], entries)
            for digest in dict.fromkeys(e["digest"] for e in entries):
                with contextlib.suppress(ImageNotFound, LayerError, ValueError, KeyError):
                    config = json.loads(self.read_blob(digest))["config"]["digest"]
                    if config.startswith(wanted):
                        return self._image(digest, entries)
            if text.startswith("sha256:"):
                raise ImageNotFound(f"no image with id {text} in the store ({self.root})")
        ref = parse(text)
        name = str(ref)
        for entry in entries:
            if self._name(entry) == name:
                return self._image(entry["digest"], entries)
        if ref.digest:
            for entry in entries:
                if entry["digest"] == ref.digest:
                    return self._image(entry["digest"], entries)
        raise ImageNotFound(f"image {text} ({name}) is not in the store ({self.root})")

    def images(self) -> list[Image]:
        """Every image in the store, each once with all its names."""
        entries = self._entries()
        found = []
        for digest in dict.fromkeys(e["digest"] for e in entries):
            with contextlib.suppress(ImageNotFound, LayerError):
                found.append(self._image(digest, entries))
        return found

    def _complete(self, image: Image) -> bool:
        return all(self.has_blob(d["digest"]) for d in image.layer_descriptors)

    def tag(self, image: Image | str, ref: str) -> Image:
        """Name ``image`` (an Image, a reference or an id) ``ref`` too."""
        image = self.get(image) if isinstance(image, str) else image
        name = str(parse(ref))
        with self._edit_index() as entries:
            self._set_name(entries, name, image.digest, image.manifest_media_type,
                           len(image.manifest_bytes))
        return self.get(name)

    def untag(self, ref: str) -> None:
        """Remove the name ``ref``; its blobs stay until :meth:`prune`."""
        name = str(parse(ref)) if not is_image_id(ref) else None
        with self._edit_index() as entries:
            if name is None:
                image = self.get(ref)
                kept = [e for e in entries if e["digest"] != image.digest]
            else:
                kept = [e for e in entries if self._name(e) != name]
            if len(kept) == len(entries):
                raise ImageNotFound(f"image {ref} is not in the store ({self.root})")
            entries[:] = kept

    # ------------------------------------------------------------------ pull

    def _emit(self, progress: Progress | None, event: str, digest: str, done: int,
              total: int | None) -> None:
        for callback in (self.progress, progress):
            if callback is not None:
                callback(event, digest, done, total)

    def pull(self, ref: str, *, policy: str | None = None, platform: reg.Platform | str |
             None = None, progress: Progress | None = None) -> Image:
        """The image ``ref``, from the store or its registry according to ``policy``
        (``missing``: only when absent, ``always``: check the registry, ``never``)."""
        policy = policy or self.pull_policy
        if policy not in ("missing", "always", "never"):
            raise ValueError(f"pull policy must be missing, always or never, not {policy!r}")
        target = reg.Platform.parse(platform) if isinstance(platform, str) else \
            (platform or self.platform)
        ref_obj = parse(ref)
        if policy != "always":
            try:
                image = self.get(ref)
            except LayerError:
                if policy == "never":
                    raise
                image = None  # damaged here: fetched again below
            except ImageNotFound:
                if policy == "never":
                    raise ImageNotFound(f"image {ref} is not in the store ({self.root}) and "
                                        "the pull policy is 'never'") from None
            else:
                if image is not None and self._complete(image):
                    return image
        endpoints = reg.endpoints_for(ref_obj, mirror=self.registry_mirror,
                                      docker_io_endpoint=self.docker_io_endpoint,
                                      insecure=self.insecure_registries)
        failures: list[PullError] = []
        with self._gc_lock():
            for endpoint in endpoints:
                client = reg.Client(endpoint, ref_obj.repository, what=ref,
                                    attempts=self.attempts, backoff=self.backoff)
                try:
                    return self._pull_from(client, ref_obj, target, progress)
                except PullError as exc:
                    failures.append(exc)
        error = _pull_failure(ref, failures)
        if error in failures:
            raise error
        raise error from failures[-1]

    def _pull_from(self, client: reg.Client, ref: Reference, target: reg.Platform,
                   progress: Progress | None) -> Image:
        data, media_type = client.get_manifest(ref.reference)
        if media_type in reg.INDEX_TYPES:
            chosen = reg.choose_platform(json.loads(data), target, what=client.what,
                                         registry=client.endpoint.name)
            data, media_type = client.get_manifest(chosen["digest"])
        if media_type not in reg.MANIFEST_TYPES:
            raise client.fail(f"unsupported manifest media type {media_type!r}")
        try:
            manifest = json.loads(data)
            config_desc = manifest["config"]
            layer_descs = list(manifest.get("layers") or [])
            for desc in [config_desc, *layer_descs]:
                _hex(desc["digest"])
        except (ValueError, KeyError, TypeError, LayerError) as exc:
            raise client.fail(f"malformed manifest: {exc}") from exc
        for desc in layer_descs:
            kind = LAYER_TYPES.get(desc.get("mediaType", ""))
            if kind is None:
                raise client.fail(f"layer {desc['digest']} has unsupported media type "
                                  f"{desc.get('mediaType')!r}")
            if kind == "zstd" and not zstd_available():
                raise client.fail(f"layer {desc['digest']} is zstd-compressed, which is "
                                  "unsupported here: install the 'zstandard' package")
        fetched: list[str] = []
        try:
            self._fetch(client, config_desc, progress, fetched)
            try:
                config = json.loads(self.read_blob(config_desc["digest"]))
                diff_ids = config["rootfs"]["diff_ids"]
            except (ValueError, KeyError, TypeError) as exc:
                raise client.fail(f"image config {config_desc['digest']} is malformed") \
                    from exc
            if len(diff_ids) != len(layer_descs):
                raise client.fail(f"config lists {len(diff_ids)} diff_ids for "
                                  f"{len(layer_descs)} layers")
            unique = list({d["digest"]: d for d in layer_descs}.values())
            if unique:
                with ThreadPoolExecutor(min(self.jobs, len(unique))) as pool:
                    futures = [pool.submit(self._fetch, client, d, progress, fetched)
                               for d in unique]
                    for future in futures:
                        future.result()
            digest = self.put_blob(data)
        except BaseException:
            self._discard(fetched)
            raise
        name = str(ref)
        with self._edit_index() as entries:
            self._set_name(entries, name, digest, media_type, len(data))
            image = self._image(digest, entries)
        return image

    def _fetch(self, client: reg.Client, desc: dict[str, Any], progress: Progress | None,
               fetched: list[str]) -> None:
        digest = desc["digest"]
        size = desc.get("size")
        if self.blob_intact(digest):
            self._emit(progress, "exists", digest, size or 0, size)
            return
        with self._lock(_hex(digest)):
            if self.blob_intact(digest):  # a present blob that fails its check is fetched
                self._emit(progress, "exists", digest, size or 0, size)
                return
            tmp = self._tmp_path(_hex(digest))
            try:
                try:
                    client.fetch_blob(digest, tmp, size=size, progress=lambda e, d, n, t:
                                      self._emit(progress, e, d, n, t))
                except OSError as exc:
                    raise self._no_space(exc, f"blob {digest}", size) from exc
                self._adopt(tmp, digest)
                fetched.append(digest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._emit(progress, "downloaded", digest, size or 0, size)

    def _damaged(self, digest: str) -> str:
        return (f"blob {digest} in the image store {self.root} is damaged (its bytes do not "
                "hash to its name); nothing was written with it. `pycontain images --verify` "
                "repairs it from its registry")

    def _no_space(self, exc: OSError, what: str, size: int | None) -> Exception:
        """A full disk (or quota) named by the cache directory and the space wanted; any other
        ``OSError`` as it was."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return exc
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        needed = f"{_size(size)} for {what}" if size else what
        return PullError(f"the image cache {self.root} is out of space: {needed}, "
                         f"{_size(free) if free is not None else 'unknown'} free there "
                         f"({exc.strerror}); free some (`pycontain prune`) or point "
                         "PYCONTAIN_CACHE_DIR at a larger disk")

    def _discard(self, digests: list[str]) -> None:
        """Undo a failed pull: remove the blobs it fetched that no image references."""
        referenced = self._referenced()[0]
        for digest in digests:
            if digest not in referenced:
                with self._lock(_hex(digest)), contextlib.suppress(FileNotFoundError):
                    self.blob_path(digest).unlink()

    # ------------------------------------------------------------------ layers

    def layer_dirs(self, image: Image | str, *, progress: Progress | None = None) -> list[Path]:
        """The unpacked directories of ``image``'s layers, bottom layer first.

        Each is unpacked once (per machine), verified against its diff_id, and must be treated
        as read-only: containers use them as overlayfs lower directories.
        """
        image = self.get(image) if isinstance(image, str) else image
        return [self.unpacked(layer, progress=progress) for layer in image.layers]

    def unpacked(self, layer: Layer, *, progress: Progress | None = None) -> Path:
        """The unpacked directory of one layer (unpacked here once per machine; read-only)."""
        dest = self.layers_dir / _hex(layer.diff_id)
        if dest.is_dir():
            return dest
        self._ensure()
        with self._lock("layer-" + _hex(layer.diff_id)):
            if dest.is_dir():
                return dest
            blob = self.blob_path(layer.digest)
            if not blob.is_file():
                raise ImageNotFound(f"layer blob {layer.digest} is not in the store "
                                    f"({self.root}); pull the image again")
            work = self._tmp_path("layer-" + _hex(layer.diff_id))
            work.mkdir()
            self._emit(progress, "unpack", layer.diff_id, 0, None)
            try:
                unpack_layer(blob, work, diff_id=layer.diff_id)
                os.rename(work, dest)
            except BaseException:
                remove_tree(work)
                raise
            _fsync_dir(self.layers_dir)
        self._emit(progress, "unpacked", layer.diff_id, 1, 1)
        return dest

    # ------------------------------------------------------------------ builds

    def add_layer(self, tar: Path | str | bytes, *, compress: bool = True) -> Layer:
        """Store a layer tar (a path or bytes) gzip-compressed (``BUILD_GZIP_LEVEL``); return
        (digest, diff_id).
        ``compress=False`` stores it as it is (its digest is its diff_id): one pass over the
        bytes, what a commit of a container's changes wants to be cheap."""
        self._ensure()
        source: BinaryIO = io.BytesIO(tar) if isinstance(tar, bytes) else open(tar, "rb")  # noqa: SIM115
        if not compress:
            with source:
                digest, _size = self._import_stream(source)
            return Layer(digest, digest)
        tmp = self._tmp_path("layer")
        raw_hash = hashlib.sha256()
        gz_hash = hashlib.sha256()
        compressor = zlib.compressobj(BUILD_GZIP_LEVEL, zlib.DEFLATED, 31)
        try:
            with source, open(tmp, "wb") as out:
                while chunk := source.read(CHUNK):
                    raw_hash.update(chunk)
                    packed = compressor.compress(chunk)
                    gz_hash.update(packed)
                    out.write(packed)
                packed = compressor.flush()
                gz_hash.update(packed)
                out.write(packed)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + gz_hash.hexdigest()
            if not self.has_blob(digest):
                self._adopt(tmp, digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return Layer(digest, "sha256:" + raw_hash.hexdigest())

    def commit(self, config: dict[str, Any], layers: Iterable[Layer | tuple[str, str]],
               tag: str | None = None) -> Image:
        """Write an image of ``layers`` (bottom first) with ``config``; name it ``tag``.

        ``config`` is a full image config (``{"config": {...}, "history": [...]}``) or just the
        inner Docker ``Config`` mapping; ``rootfs`` is always set from ``layers``.
        """
        layers = [Layer(*item) for item in layers]
        full = dict(config) if ("config" in config or "rootfs" in config) else {"config": config}
        host = reg.host_platform()
        full.setdefault("architecture", host.architecture)
        full.setdefault("os", host.os)
        if host.variant and full["architecture"] == host.architecture:
            full.setdefault("variant", host.variant)
        full["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        descriptors = []
        for layer in layers:
            path = self.blob_path(layer.digest)
            if not path.is_file():
                raise ImageNotFound(f"layer blob {layer.digest} is not in the store "
                                    f"({self.root})")
            descriptors.append({"mediaType": _sniff_layer_type(path), "digest": layer.digest,
                                "size": path.stat().st_size})
        with self._gc_lock():
            config_bytes = json.dumps(full, sort_keys=True, separators=(",", ":")).encode()
            config_digest = self.put_blob(config_bytes)
            manifest = {"schemaVersion": 2, "mediaType": reg.OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                   "size": len(config_bytes)},
                        "layers": descriptors}
            manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
            digest = self.put_blob(manifest_bytes)
            name = str(parse(tag)) if tag else None
            with self._edit_index() as entries:
                self._set_name(entries, name, digest, reg.OCI_MANIFEST, len(manifest_bytes))
                return self._image(digest, entries)

    # ------------------------------------------------------------------ push, save, load

    def push(self, ref: str, dest: str | None = None, *, progress: Progress | None = None) -> str:
        """Push image ``ref`` to its registry (or to ``dest``); return the manifest digest."""
        image = self.get(ref)
        if dest is None and is_image_id(ref):
            raise PushError(f"push {ref}: an image id needs a destination reference",
                            reference=ref)
        target = parse(dest or ref)
        endpoint = reg.endpoints_for(target, docker_io_endpoint=self.docker_io_endpoint,
                                     insecure=self.insecure_registries, push=True)[0]
        client = reg.Client(endpoint, target.repository, what=dest or ref, push=True,
                            attempts=self.attempts, backoff=self.backoff)
        descs = [*{d["digest"]: d for d in image.layer_descriptors}.values(),
                 image.config_descriptor]

        def upload(desc: dict[str, Any]) -> None:
            if not self.blob_intact(desc["digest"]):
                raise PushError(f"push {ref}: {self._damaged(desc['digest'])}",
                                reference=ref, registry=endpoint.name)
            client.upload_blob(desc["digest"], self.blob_path(desc["digest"]))
            self._emit(progress, "uploaded", desc["digest"], desc.get("size", 0),
                       desc.get("size"))

        with ThreadPoolExecutor(min(self.jobs, len(descs))) as pool:
            for future in [pool.submit(upload, d) for d in descs]:
                future.result()
        digest = client.put_manifest(target.digest or target.tag or "latest",
                                     image.manifest_bytes, image.manifest_media_type)
        if dest is not None and not target.digest:
            self.tag(image, dest)
        return digest

    def save(self, ref: str, path: Path | str) -> Path:
        """Write image ``ref`` as an OCI archive (a tar of an OCI layout naming ``ref``)."""
        image = self.get(ref)
        path = Path(path)
        try:
            name = parse(ref) if not is_image_id(ref) else None
        except ReferenceError_:
            name = None
        if name is None and image.tags:
            name = parse(image.tags[0])
        entry: dict[str, Any] = {"mediaType": image.manifest_media_type,
                                 "digest": image.digest, "size": len(image.manifest_bytes)}
        if name is not None:
            entry["annotations"] = {REF_NAME: name.tag or name.digest or "latest",
                                    CONTAINERD_NAME: str(name)}
        index = {"schemaVersion": 2, "mediaType": reg.OCI_INDEX, "manifests": [entry]}
        digests = [image.digest, image.config_descriptor["digest"],
                   *dict.fromkeys(d["digest"] for d in image.layer_descriptors)]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
                _add_bytes(tar, "index.json", json.dumps(index, indent=1).encode())
                _add_dir(tar, "blobs")
                _add_dir(tar, "blobs/sha256")
                for digest in digests:
                    blob = self.blob_path(digest)
                    info = tarfile.TarInfo(f"blobs/sha256/{_hex(digest)}")
                    info.size = blob.stat().st_size
                    info.mode = 0o644
                    with blob.open("rb") as stream:
                        hashing = _HashingReader(stream)
                        tar.addfile(info, hashing)
                    if "sha256:" + hashing.hexdigest() != digest:
                        raise LayerError(f"save {ref}: {self._damaged(digest)}")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return path

    def load(self, path: Path | str) -> list[Image]:
        """Import an OCI archive or a ``docker save`` archive; return the images in it."""
        path = Path(path)
        try:
            tar = tarfile.open(path)  # noqa: SIM115 - closed below
        except (OSError, tarfile.TarError) as exc:
            raise LayerError(f"{path}: not a readable tar archive: {exc}") from exc
        with tar, self._gc_lock():
            members = {m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers()}

            def read(name: str) -> bytes:
                member = members.get(name)
                stream = tar.extractfile(member) if member is not None else None
                if stream is None:
                    raise LayerError(f"{path}: archive has no file {name!r}")
                return stream.read()

            try:
                if "oci-layout" in members and "index.json" in members:
                    return self._load_oci(path, tar, members, read)
                if "manifest.json" in members:
                    return self._load_docker(path, tar, members, read)
            except (ValueError, KeyError, TypeError, tarfile.TarError) as exc:
                raise LayerError(f"{path}: malformed image archive: {exc!r}") from exc
        raise LayerError(f"{path}: neither an OCI archive (oci-layout, index.json) nor a "
                         "docker save archive (manifest.json)")

    def _load_oci(self, path: Path, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                  read: Callable[[str], bytes]) -> list[Image]:
        def blob(digest: str) -> str:
            return f"blobs/sha256/{_hex(digest)}"

        def import_blob(digest: str) -> None:
            if not self.has_blob(digest):
                stream = tar.extractfile(members[blob(digest)])
                if stream is None:
                    raise LayerError(f"{path}: {blob(digest)} is not a file")
                self._import_stream(stream, digest)

        loaded = []
        queue = list(json.loads(read("index.json"))["manifests"])
        while queue:
            entry = queue.pop(0)
            data = read(blob(entry["digest"]))
            if "sha256:" + hashlib.sha256(data).hexdigest() != entry["digest"]:
                raise LayerError(f"{path}: manifest {entry['digest']} does not match its digest")
            manifest = json.loads(data)
            media_type = manifest.get("mediaType") or entry.get("mediaType")
            if media_type in reg.INDEX_TYPES or "manifests" in manifest:
                chosen = reg.choose_platform(manifest, self.platform, what=str(path),
                                             registry="archive")
                queue.append({**chosen, "annotations": entry.get("annotations")})
                continue
            for desc in [manifest["config"], *manifest.get("layers", [])]:
                import_blob(desc["digest"])
            digest = self.put_blob(data)
            annotations = entry.get("annotations") or {}
            name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
            with contextlib.suppress(ReferenceError_):
                name = str(parse(name)) if name else None
            with self._edit_index() as entries:
                self._set_name(entries, name, digest, media_type or reg.OCI_MANIFEST, len(data))
                loaded.append(self._image(digest, entries))
        return loaded

    def _load_docker(self, path: Path, tar: tarfile.TarFile,
                     members: dict[str, tarfile.TarInfo],
                     read: Callable[[str], bytes]) -> list[Image]:
        loaded = []
        for item in json.loads(read("manifest.json")):
            config_bytes = read(item["Config"])
            config_digest = self.put_blob(config_bytes)
            diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
            descriptors = []
            for name, diff_id in zip(item["Layers"], diff_ids, strict=True):
                stream = tar.extractfile(members[name.removeprefix("./")])
                if stream is None:
                    raise LayerError(f"{path}: layer {name} is not a file")
                digest, size = self._import_stream(stream)
                kind = _sniff_layer_type(self.blob_path(digest), docker=True)
                if kind.endswith(".tar") and digest != diff_id:
                    raise LayerError(f"{path}: layer {name} hashes to {digest}, but the config "
                                     f"says its diff_id is {diff_id}")
                descriptors.append({"mediaType": kind, "digest": digest, "size": size})
            manifest = {"schemaVersion": 2, "mediaType": reg.DOCKER_MANIFEST,
                        "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest,
                                   "size": len(config_bytes)},
                        "layers": descriptors}
            data = json.dumps(manifest, indent=3).encode()
            digest = self.put_blob(data)
            names = [str(parse(t)) for t in item.get("RepoTags") or []] or [None]
            with self._edit_index() as entries:
                for tag in names:
                    self._set_name(entries, tag, digest, reg.DOCKER_MANIFEST, len(data))
                loaded.append(self._image(digest, entries))
        return loaded

    # ------------------------------------------------------------------ prune

    def verify(self) -> VerifyReport:
        """Check every blob against its name; remove the damaged ones and pull the images that
        used them again by name. The report says what was damaged, repaired, or not."""
        self._ensure()
        damaged = []
        checked = 0
        for blob in sorted(self.blobs_dir.iterdir()):
            checked += 1
            if not self.blob_intact("sha256:" + blob.name):
                damaged.append("sha256:" + blob.name)
        users: dict[str, list[str]] = {}  # damaged digest -> names of the images using it
        for entry in self._entries():
            used = {entry["digest"]}
            with contextlib.suppress(ImageNotFound, LayerError, ValueError, KeyError, TypeError):
                manifest = json.loads(self.read_checked(entry["digest"]))
                used |= {manifest["config"]["digest"],
                         *(d["digest"] for d in manifest.get("layers") or [])}
            for digest in used & set(damaged):
                users.setdefault(digest, []).append(self._name(entry) or "")
        for digest in damaged:
            with self._lock(_hex(digest)), contextlib.suppress(FileNotFoundError):
                self.blob_path(digest).unlink()
        failures: dict[str, str] = {}
        for name in sorted({n for names in users.values() for n in names if n}):
            try:
                self.pull(name)
            except PycontainError as exc:
                failures[name] = str(exc)
        repaired, unrepaired = [], []
        for digest in damaged:
            names = users.get(digest, [])
            if not names:
                repaired.append((digest, "removed: no image uses it"))
            elif self.blob_intact(digest):
                repaired.append((digest, "pulled again for " + ", ".join(filter(None, names))))
            else:
                why = "; ".join(failures.get(n, f"{n}: the pull did not bring it back")
                                for n in names if n) or "the image has no name to pull it by"
                unrepaired.append((digest, why))
        return VerifyReport(checked, tuple(damaged), tuple(repaired), tuple(unrepaired))

    def _referenced(self) -> tuple[set[str], set[str]]:
        """Blob digests and diff_ids that the index's images use."""
        blobs: set[str] = set()
        diff_ids: set[str] = set()
        for entry in self._entries():
            blobs.add(entry["digest"])
            with contextlib.suppress(ImageNotFound, ValueError, KeyError, TypeError):
                manifest = json.loads(self.read_blob(entry["digest"]))
                blobs.add(manifest["config"]["digest"])
                blobs.update(d["digest"] for d in manifest.get("layers") or [])
                config = json.loads(self.read_blob(manifest["config"]["digest"]))
                diff_ids.update(config["rootfs"]["diff_ids"])
        return blobs, diff_ids

    def prune(self, *, keep: Iterable[str | Path] = ()) -> dict[str, int]:
        """Remove blobs and unpacked layers that no named image uses, and stale temp files.

        A layer that any mount namespace on the machine has as an overlayfs lower directory
        (a live container's root) is kept; ``keep`` names more (diff_ids or directories).
        Returns counts: ``blobs``, ``layers``, ``bytes``.
        """
        kept = {Path(k).name if isinstance(k, Path) or "/" in str(k) else _hex(str(k))
                for k in keep}
        kept |= self.layers_in_use()
        removed = {"blobs": 0, "layers": 0, "bytes": 0}
        with self._gc_lock(exclusive=True):
            blobs, diff_ids = self._referenced()
            wanted_blobs = {_hex(d) for d in blobs if _SHA256.fullmatch(d)}
            wanted_layers = {_hex(d) for d in diff_ids if _SHA256.fullmatch(d)} | kept
            for blob in self.blobs_dir.iterdir():
                if blob.name not in wanted_blobs:
                    removed["bytes"] += blob.stat().st_size
                    blob.unlink()
                    removed["blobs"] += 1
            for layer in self.layers_dir.iterdir():
                if layer.name not in wanted_layers:
                    trash = self._tmp_path("trash")
                    os.rename(layer, trash)
                    remove_tree(trash)
                    removed["layers"] += 1
            now = time.time()
            for item in (self.root / "tmp").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if item.name.startswith("trash") or now - item.lstat().st_mtime > STALE_TMP:
                        remove_tree(item)
        return removed


    def layers_in_use(self) -> set[str]:
        """Names (diff_id hex) of unpacked layers some overlayfs mount uses as a lower dir.

        Reads every process's mountinfo once per mount namespace, because containers mount
        their root in their own namespace, where the host's mount table does not show it.
        """
        prefix = str(self.layers_dir.resolve()) + "/"
        used: set[str] = set()
        seen: set[str] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                namespace = os.readlink(proc / "ns" / "mnt")
                if namespace in seen:
                    continue
                text = (proc / "mountinfo").read_text()
            except OSError:
                continue  # gone, or not ours to read
            seen.add(namespace)
            for match in re.finditer(r"lowerdir=([^,\s]+)", text):
                for lower in match.group(1).split(":"):
                    if lower.startswith(prefix):
                        used.add(lower[len(prefix):].split("/")[0])
        return used


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _sniff_layer_type(path: Path, docker: bool = False) -> str:
    with path.open("rb") as stream:
        magic = stream.read(4)
    if magic[:2] == b"\x1f\x8b":
        return ("application/vnd.docker.image.rootfs.diff.tar.gzip" if docker
                else "application/vnd.oci.image.layer.v1.tar+gzip")
    if magic == b"\x28\xb5\x2f\xfd":
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    return ("application/vnd.docker.image.rootfs.diff.tar" if docker
            else "application/vnd.oci.image.layer.v1.tar")


def _pull_failure(ref: str, failures: list[PullError]) -> PullError:
    """One error for a pull that failed at every endpoint. A registry that answered "not
    found" comes first: that is the news (a typo), not the fallback that could not be reached."""
    missing = [f for f in failures if getattr(f, "status", 0) == 404]
    if missing and len(failures) > 1:  # alone, the registry's answer says it first already
        first = missing[0]
        others = [f for f in failures if f is not first]
        also = f" (also tried: {'; '.join(map(str, others))})" if others else ""
        return PullError(f"image {ref} not found: {first}{also}", reference=ref,
                         registry=first.registry)
    last = failures[-1]
    if len(failures) > 1:
        earlier = "; ".join(str(f) for f in failures[:-1])
        return PullError(f"{last} (tried first: {earlier})", reference=ref,
                         registry=last.registry)
    return last


class _HashingReader:
    """A binary stream that hashes what is read from it (``save`` checks as it writes)."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self._hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hasher.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


def _hash_stream(stream: IO[bytes]) -> str:
    hasher = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
