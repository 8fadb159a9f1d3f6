"""The two base images of the test environment, made from Debian packages.

* ``library/busybox:latest``: Debian's ``busybox-static`` binary, its applets hard-linked in
  ``/bin`` as upstream's image has them, ``/tmp`` 1777, and upstream's ``/etc/passwd`` and
  ``/etc/group``. Docker schema2 media types (skopeo converts).
* ``library/debian:bookworm``: ``debootstrap --variant=minbase bookworm``; the finished OCI
  layout is cached outside the repository, so only the first run on a machine debootstraps.

Two service images, made only when a test asks for them (``seed_services``):

* ``library/postgres:15`` and ``library/redis:7``: one ``debootstrap --variant=minbase
  --include=postgresql-15,redis-server bookworm`` shared as their base layer (the debootstrap is
  the slow part, so it runs once), and a config layer each with our own entrypoint following the
  official images' documented contract (``servicefiles.py``).

All are written as OCI image layouts with the standard library's ``tarfile``/``gzip`` and GNU
tar, and pushed by skopeo: pull tests never check our code against itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
from pathlib import Path

from .errors import EnvironmentProblem
from .tools import cache_root, require, run

EPOCH = 1700000000  # a fixed mtime, so the images are the same on every machine

BUSYBOX_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""


def go_platform() -> tuple[str, str | None]:
    """The host's architecture and variant as OCI names them (amd64, arm64/v8, ...)."""
    machine = platform.machine().lower()
    table = {
        "x86_64": ("amd64", None),
        "amd64": ("amd64", None),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "ppc64le": ("ppc64le", None),
        "s390x": ("s390x", None),
        "riscv64": ("riscv64", None),
        "i686": ("386", None),
    }
    return table.get(machine, (machine, None))


def _entry(name: str, kind: bytes, mode: int, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def busybox_layer() -> bytes:
    """An uncompressed layer tar holding the busybox rootfs."""
    binary = Path(require("busybox")).resolve()
    listing = run([str(binary), "--list"], what="busybox --list").split()
    applets = sorted(set(listing) - {"busybox"})
    data = binary.read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in [
            ("bin", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("home", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("usr", 0o755),
            ("usr/sbin", 0o755),
            ("var", 0o755),
            ("var/spool", 0o755),
            ("var/spool/mail", 0o755),
            ("var/www", 0o755),
        ]:
            tar.addfile(_entry(name, tarfile.DIRTYPE, mode))
        tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, 0o755, size=len(data)), io.BytesIO(data))
        for applet in applets:
            if "/" in applet or applet in ("", "."):
                continue
            tar.addfile(_entry(f"bin/{applet}", tarfile.LNKTYPE, 0o755, linkname="bin/busybox"))
        for name, text in [("etc/passwd", BUSYBOX_PASSWD), ("etc/group", BUSYBOX_GROUP)]:
            raw = text.encode()
            tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, size=len(raw)), io.BytesIO(raw))
    return out.getvalue()


def debian_layer(workdir: Path, include: tuple[str, ...] = ()) -> bytes:
    """An uncompressed layer tar of ``debootstrap --variant=minbase bookworm`` (+ ``include``)."""
    require("debootstrap")
    rootfs = workdir / "rootfs"
    mirror = os.environ.get("PYCONTAIN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    extra = [f"--include={','.join(include)}"] if include else []
    run(
        ["debootstrap", "--variant=minbase", *extra, "bookworm", str(rootfs), mirror],
        what=f"debootstrap --variant=minbase {' '.join(extra)} bookworm".replace("  ", " "),
        timeout=1800,
    )
    for leftover in ["var/cache/apt/archives", "var/lib/apt/lists"]:
        for child in (rootfs / leftover).glob("*"):
            if child.is_file():
                child.unlink()
    for leftover in SERVICE_LEFTOVERS if include else ():
        shutil.rmtree(rootfs / leftover, ignore_errors=True)
    layer = workdir / "layer.tar"
    run(
        [
            "tar",
            "--create",
            "--file",
            str(layer),
            "--directory",
            str(rootfs),
            "--sort=name",
            "--numeric-owner",
            "--xattrs",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "--exclude=./run/*",
            "--exclude=./tmp/*",
            ".",
        ],
        what="tar of the debian rootfs",
    )
    return layer.read_bytes()


def write_oci_layout(
    dest: Path, layer: bytes | list[bytes], config: dict, tag: str
) -> None:
    """Write an OCI image layout of gzip layers; ``dest`` appears complete or not at all."""
    arch, variant = go_platform()
    layers = [layer] if isinstance(layer, bytes) else layer
    compressed_layers = [gzip.compress(one, compresslevel=6, mtime=0) for one in layers]
    config = {
        "architecture": arch,
        **({"variant": variant} if variant else {}),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(one).hexdigest() for one in layers],
        },
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": "pycontain testenv"} for _ in layers
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config_bytes),
        "layers": [
            _descriptor("application/vnd.oci.image.layer.v1.tar+gzip", one)
            for one in compressed_layers
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **_descriptor("application/vnd.oci.image.manifest.v1+json", manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    tmp.chmod(0o755)
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for blob in (*compressed_layers, config_bytes, manifest_bytes):
            (blobs / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
        (tmp / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (tmp / "index.json").write_text(json.dumps(index))
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SERVICE_PACKAGES = ("postgresql-15", "redis-server")
# Debian's postinst makes a cluster of its own; the official image makes none (its entrypoint's
# initdb does, in the VOLUME), so ours goes too.
SERVICE_LEFTOVERS = ("etc/postgresql/15", "var/lib/postgresql/15")


def service_layout(name: str) -> Path:
    """The OCI layout of ``postgres`` or ``redis`` (made once per machine, from one debootstrap)."""
    from filelock import FileLock

    from . import servicefiles

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    arch, _ = go_platform()
    dest = root / f"{name}-{arch}-v1"
    if (dest / "index.json").exists():
        return dest
    with FileLock(str(root / "services.lock")):
        if (dest / "index.json").exists():
            return dest
        base = _service_base(root / f"services-base-{arch}-v1.tar")
        spec = servicefiles.IMAGES[name]
        write_oci_layout(
            dest, [base, _files_layer(spec.files)], spec.config(PATH), spec.tag
        )
    return dest


def _service_base(cached: Path) -> bytes:
    """The debootstrap with the service packages, as a layer tar kept beside the layouts."""
    if cached.exists():
        return cached.read_bytes()
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cached.parent))
    try:
        layer = debian_layer(work, SERVICE_PACKAGES)
        partial = cached.with_suffix(".partial")
        partial.write_bytes(layer)
        os.rename(partial, cached)
        return layer
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _files_layer(files: tuple[tuple[str, int, str | None], ...]) -> bytes:
    """A layer tar of (path, mode, text) files (text None: a directory), parents 0755 root."""
    out = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, mode, text in files:
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in seen:
                    seen.add(directory)
                    tar.addfile(_entry(directory, tarfile.DIRTYPE, 0o755))
            if text is None:
                seen.add(path)
                tar.addfile(_entry(path, tarfile.DIRTYPE, mode))
                continue
            raw = text.encode()
            tar.addfile(_entry(path, tarfile.REGTYPE, mode, size=len(raw)), io.BytesIO(raw))
    return out.getvalue()


def image_layout(name: str) -> Path:
    """The OCI layout of ``busybox`` or ``debian``, made (once per machine) if missing."""
    from filelock import FileLock

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    arch, _ = go_platform()
    dest = root / f"{name}-{arch}-v1"
    if (dest / "index.json").exists():
        return dest
    with FileLock(str(root / f"{name}.lock")):
        if (dest / "index.json").exists():
            return dest
        if name == "busybox":
            write_oci_layout(dest, busybox_layer(), {"Env": [PATH], "Cmd": ["sh"]}, "latest")
        elif name == "debian":
            work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=root))
            try:
                layer = debian_layer(work)
                write_oci_layout(dest, layer, {"Env": [PATH], "Cmd": ["bash"]}, "bookworm")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            raise EnvironmentProblem(f"unknown test image {name!r}")
    return dest


SEED = [
    ("busybox", "latest", "library/busybox:latest", "v2s2"),
    ("debian", "bookworm", "library/debian:bookworm", "oci"),
]


def seed(registry_host: str, names: tuple[str, ...] = ("busybox", "debian")) -> None:
    """Push the test images into the registry at ``registry_host`` with skopeo."""
    skopeo = require("skopeo")
    for name, tag, repo, fmt in SEED:
        if name not in names:
            continue
        layout = image_layout(name)
        argv = [
            skopeo,
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"oci:{layout}:{tag}",
            f"docker://{registry_host}/{repo}",
        ]
        if fmt == "v2s2":
            argv[4:4] = ["--format", "v2s2"]
        run(argv, what=f"skopeo copy of {repo} into the test registry")


SERVICES = [("postgres", "15", "library/postgres:15"), ("redis", "7", "library/redis:7")]


def seed_services(registry_host: str) -> None:
    """Push the service images (postgres, redis) into the registry; the first call debootstraps."""
    skopeo = require("skopeo")
    for name, tag, repo in SERVICES:
        layout = service_layout(name)
        run(
            [
                skopeo,
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"oci:{layout}:{tag}",
                f"docker://{registry_host}/{repo}",
            ],
            what=f"skopeo copy of {repo} into the test registry",
        )
