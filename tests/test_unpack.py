"""Layer unpacking: the right tree, overlayfs whiteouts, and nothing ever written outside.

Every hostile layer is unpacked next to a canary file; the canary and the directory around the
layer must be exactly as before, and the layer is refused with an error naming the entry, or
unpacked as a safe equivalent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_pycontain.errors import LayerError
from pytest_pycontain.unpack import unpack_layer

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and owners need root")


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644,
          link: str = "", uid: int = 0, gid: int = 0, major: int = 0, minor: int = 0,
          pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.uid, info.gid = uid, gid
    info.mtime = 1_600_000_000
    info.devmajor, info.devminor = major, minor
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data


def make_layer(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], *,
               gz: bool = False) -> str:
    """Write a layer tar at ``path``; return its diff_id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    data = raw.getvalue()
    path.write_bytes(gzip.compress(data) if gz else data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def snapshot(top: Path, skip: Path) -> dict[str, tuple]:
    """Every path under ``top`` except ``skip``'s subtree, with type, size, nlink, content."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == skip.parent:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path == skip:
                continue
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            seen[str(path)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_nlink,
                               st.st_mtime_ns, content)
    return seen


@pytest.fixture
def arena(tmp_path: Path) -> Callable[..., tuple[Path, dict]]:
    """A canary beside the layer dir: returns (layer dir, snapshot of everything outside)."""
    (tmp_path / "outside").mkdir()
    canary = tmp_path / "outside" / "canary"
    canary.write_text("untouched\n")
    (tmp_path / "canary").write_text("untouched too\n")
    dest = tmp_path / "layer"
    dest.mkdir()

    def prepare() -> tuple[Path, dict]:
        return dest, snapshot(tmp_path, dest)

    return prepare


def assert_untouched(tmp_path: Path, dest: Path, before: dict) -> None:
    after = snapshot(tmp_path, dest)
    # the layer blob itself is written before the snapshot; nothing else may change
    assert after == before
    assert (tmp_path / "outside" / "canary").read_text() == "untouched\n"
    assert (tmp_path / "canary").read_text() == "untouched too\n"


def test_regular_tree_with_links_modes_and_gzip(tmp_path: Path, arena) -> None:
    blob = tmp_path / "blob"
    diff_id = make_layer(blob, [
        entry("bin", tarfile.DIRTYPE, mode=0o755),
        entry("bin/busybox", data=b"\x7fELF...", mode=0o4755),
        entry("bin/sh", tarfile.LNKTYPE, link="bin/busybox"),
        entry("bin/ls", tarfile.SYMTYPE, link="/bin/busybox"),
        entry("./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
        entry("etc/ro", tarfile.DIRTYPE, mode=0o555),
        entry("etc/ro/file", data=b"x", mode=0o400),
        entry("tmp", tarfile.DIRTYPE, mode=0o1777),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("a/b/c/deep", data=b"implied parents"),
    ], gz=True)
    dest, before = arena()
    skipped = unpack_layer(blob, dest, diff_id=diff_id)
    assert skipped == []
    assert (dest / "bin/busybox").read_bytes() == b"\x7fELF..."
    assert stat.S_IMODE((dest / "bin/busybox").stat().st_mode) == 0o4755
    assert (dest / "bin/sh").stat().st_ino == (dest / "bin/busybox").stat().st_ino
    assert os.readlink(dest / "bin/ls") == "/bin/busybox"  # kept as is, never followed
    assert (dest / "etc/passwd").read_text().startswith("root:")
    assert stat.S_IMODE((dest / "etc/ro").stat().st_mode) == 0o555
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    assert stat.S_ISFIFO((dest / "run/fifo").lstat().st_mode)
    assert (dest / "a/b/c/deep").read_text() == "implied parents"
    assert (dest / "etc/passwd").stat().st_mtime == 1_600_000_000
    assert_untouched(tmp_path, dest, before)


@root_only
def test_owners_and_file_capabilities(tmp_path: Path, arena) -> None:
    blob = tmp_path / "blob"
    diff_id = make_layer(blob, [
        entry("home/app", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000),
        entry("home/app/x", data=b"1", uid=1000, gid=100),
        entry("home/app/l", tarfile.SYMTYPE, link="x", uid=1000, gid=1000),
        entry("usr/bin/user-xattr", data=b"2", pax={"SCHILY.xattr.user.test": "yes"}),
    ])
    dest, _ = arena()
    unpack_layer(blob, dest, diff_id=diff_id)
    st = (dest / "home/app").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o750)
    assert ((dest / "home/app/x").stat().st_uid, (dest / "home/app/x").stat().st_gid) == \
        (1000, 100)
    assert (dest / "home/app/l").lstat().st_uid == 1000


@root_only
def test_whiteouts_become_overlayfs_whiteouts(tmp_path: Path, arena) -> None:
    blob = tmp_path / "blob"
    diff_id = make_layer(blob, [
        entry("etc", tarfile.DIRTYPE, mode=0o755),
        entry("etc/.wh.motd"),
        entry("var/cache", tarfile.DIRTYPE, mode=0o755),
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/new", data=b"fresh"),
        entry("x/.wh..wh.plnk"),
    ])
    dest, before = arena()
    unpack_layer(blob, dest, diff_id=diff_id)
    motd = (dest / "etc/motd").lstat()
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.motd").exists()
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert not (dest / "var/cache/.wh..wh..opq").exists()
    assert (dest / "var/cache/new").read_text() == "fresh"
    assert list((dest / "x").iterdir()) == []
    assert_untouched(tmp_path, dest, before)


def test_later_entries_replace_earlier_ones(tmp_path: Path, arena) -> None:
    blob = tmp_path / "blob"
    diff_id = make_layer(blob, [
        entry("a", data=b"first"),
        entry("a", data=b"second"),
        entry("d/x", data=b"in a dir"),
        entry("d", data=b"now a file"),
        entry("s", tarfile.SYMTYPE, link="/nowhere"),
        entry("s", data=b"a file replaces the symlink, not its target"),
    ])
    dest, before = arena()
    unpack_layer(blob, dest, diff_id=diff_id)
    assert (dest / "a").read_text() == "second"
    assert (dest / "d").read_text() == "now a file"
    assert not (dest / "s").is_symlink()
    assert_untouched(tmp_path, dest, before)


# ------------------------------------------------------------------------------ hostile layers


def hostile(tmp_path: Path, entries: list) -> tuple[Path, str]:
    blob = tmp_path / "blob"
    return blob, make_layer(blob, entries)


def test_dot_dot_is_refused(tmp_path: Path, arena) -> None:
    blob, diff_id = hostile(tmp_path, [
        entry("ok", data=b"fine"),
        entry("../outside/canary", data=b"pwned"),
    ])
    dest, before = arena()
    with pytest.raises(LayerError, match=r"refusing entry '\.\./outside/canary': '\.\.' climbs"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert_untouched(tmp_path, dest, before)


def test_dot_dot_deep_inside_is_refused(tmp_path: Path, arena) -> None:
    blob, diff_id = hostile(tmp_path, [entry("a/b/../../../canary", data=b"pwned")])
    dest, before = arena()
    with pytest.raises(LayerError, match="climbs out"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert_untouched(tmp_path, dest, before)


def test_absolute_paths_land_inside(tmp_path: Path, arena) -> None:
    target = tmp_path / "outside" / "canary"
    blob, diff_id = hostile(tmp_path, [entry(str(target), data=b"pwned")])
    dest, before = arena()
    unpack_layer(blob, dest, diff_id=diff_id)
    inside = dest / str(target).lstrip("/")
    assert inside.read_bytes() == b"pwned"  # the safe equivalent: relative to the layer
    assert_untouched(tmp_path, dest, before)


@pytest.mark.parametrize("link", ["../outside", "/", "{outside}", "a/../../outside"])
def test_writing_through_a_symlink_is_refused(tmp_path: Path, arena, link: str) -> None:
    link = link.format(outside=tmp_path / "outside")
    blob, diff_id = hostile(tmp_path, [
        entry("evil", tarfile.SYMTYPE, link=link),
        entry("evil/canary", data=b"pwned"),
    ])
    dest, before = arena()
    with pytest.raises(LayerError, match=r"'evil/canary'.*'evil' on its path is a symlink"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert_untouched(tmp_path, dest, before)


def test_symlink_chain_to_outside_is_refused(tmp_path: Path, arena) -> None:
    blob, diff_id = hostile(tmp_path, [
        entry("d", tarfile.DIRTYPE, mode=0o755),
        entry("d/up", tarfile.SYMTYPE, link=".."),
        entry("d/up2", tarfile.SYMTYPE, link="up/.."),
        entry("d/up2/outside/canary", data=b"pwned"),
    ])
    dest, before = arena()
    with pytest.raises(LayerError, match="symlink"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert_untouched(tmp_path, dest, before)


@pytest.mark.parametrize("link", ["../outside/canary", "{canary}", "../canary"])
def test_hard_links_to_outside_are_refused(tmp_path: Path, arena, link: str) -> None:
    link = link.format(canary=tmp_path / "outside" / "canary")
    blob, diff_id = hostile(tmp_path, [
        entry("stolen", tarfile.LNKTYPE, link=link),
        entry("stolen", data=b"pwned"),
    ])
    dest, before = arena()
    with pytest.raises(LayerError, match="refusing entry 'stolen': hard link"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert (tmp_path / "outside" / "canary").stat().st_nlink == 1
    assert_untouched(tmp_path, dest, before)


def test_hard_link_through_a_symlink_is_refused(tmp_path: Path, arena) -> None:
    blob, diff_id = hostile(tmp_path, [
        entry("out", tarfile.SYMTYPE, link=str(tmp_path / "outside")),
        entry("stolen", tarfile.LNKTYPE, link="out/canary"),
    ])
    dest, before = arena()
    with pytest.raises(LayerError, match="symlink"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert (tmp_path / "outside" / "canary").stat().st_nlink == 1
    assert_untouched(tmp_path, dest, before)


def test_device_nodes_are_not_created(tmp_path: Path, arena) -> None:
    blob, diff_id = hostile(tmp_path, [
        entry("dev", tarfile.DIRTYPE, mode=0o755),
        entry("dev/mem", tarfile.CHRTYPE, mode=0o666, major=1, minor=1),
        entry("dev/sda", tarfile.BLKTYPE, mode=0o666, major=8, minor=0),
        entry("dev/ok", data=b"a file"),
    ])
    dest, before = arena()
    skipped = unpack_layer(blob, dest, diff_id=diff_id)
    assert skipped == ["dev/mem", "dev/sda"]
    assert sorted(p.name for p in (dest / "dev").iterdir()) == ["ok"]
    assert_untouched(tmp_path, dest, before)


def test_over_long_component_is_refused(tmp_path: Path, arena) -> None:
    blob, diff_id = hostile(tmp_path, [entry("d/" + "x" * 300, data=b"long")])
    dest, before = arena()
    with pytest.raises(LayerError, match="longer than 255 bytes"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert_untouched(tmp_path, dest, before)


def test_over_long_path_is_refused(tmp_path: Path, arena) -> None:
    blob, diff_id = hostile(tmp_path, [entry("/".join(["y" * 200] * 25), data=b"long")])
    dest, before = arena()
    with pytest.raises(LayerError, match="longer than 4095 bytes"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert_untouched(tmp_path, dest, before)


def test_diff_id_mismatch_is_refused(tmp_path: Path, arena) -> None:
    blob, _ = hostile(tmp_path, [entry("f", data=b"x")])
    dest, _ = arena()
    wrong = "sha256:" + "0" * 64
    with pytest.raises(LayerError, match=f"not its diff_id {wrong}"):
        unpack_layer(blob, dest, diff_id=wrong)


def test_truncated_gzip_is_refused(tmp_path: Path, arena) -> None:
    blob = tmp_path / "blob"
    diff_id = make_layer(blob, [entry("f", data=os.urandom(50_000))], gz=True)
    blob.write_bytes(blob.read_bytes()[:20_000])
    dest, before = arena()
    with pytest.raises(LayerError, match="corrupt or truncated"):
        unpack_layer(blob, dest, diff_id=diff_id)
    assert_untouched(tmp_path, dest, before)


def test_a_refused_layer_stops_its_reading_thread(tmp_path: Path, arena) -> None:
    """The decompressing thread runs ahead of the extractor; when the extractor refuses an
    entry early in a large layer, that thread (blocked on its full queue) is stopped too."""
    blob = tmp_path / "blob"
    make_layer(blob, [entry("../outside/canary", data=b"pwned"),
                      entry("big", data=os.urandom(12 << 20))], gz=True)
    dest, before = arena()
    with pytest.raises(LayerError, match="climbs out"):
        unpack_layer(blob, dest)
    assert not [t for t in threading.enumerate() if t.name == "pycontain-unpack"]
    assert_untouched(tmp_path, dest, before)


def test_garbage_is_refused(tmp_path: Path, arena) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"this is not a tar archive at all" * 40)
    dest, _ = arena()
    with pytest.raises(LayerError, match="corrupt or truncated"):
        unpack_layer(blob, dest)


def test_zstd_without_the_package_says_so(tmp_path: Path, arena) -> None:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("zstandard is installed here, so zstd layers are supported")
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    dest, _ = arena()
    with pytest.raises(LayerError, match="zstd-compressed layers are unsupported here; "
                                         "install the 'zstandard' package"):
        unpack_layer(blob, dest)
