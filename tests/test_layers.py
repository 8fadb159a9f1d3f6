"""Layer tars from directories, and from real overlayfs upper dirs (whiteouts, opaque dirs)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from pytest_pycontain.layers import write_tar

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")


def members(tar_path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return {m.name: m for m in tar.getmembers()}


def names(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return tar.getnames()


def test_plain_tree_order_owners_modes_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "b" / "deep" / "x").write_text("x")
    os.chmod(root / "a.txt", 0o4751)
    os.symlink("../a.txt", root / "b" / "link")
    os.link(root / "a.txt", root / "hard")
    os.mkfifo(root / "fifo")
    if os.geteuid() == 0:
        os.chown(root / "b" / "deep" / "x", 1234, 4321)
    out = write_tar(root, tmp_path / "layer.tar")
    assert names(out) == ["a.txt", "b", "b/deep", "b/deep/x", "b/link", "fifo", "hard"]
    got = members(out)
    assert got["a.txt"].mode == 0o4751 and got["a.txt"].isfile()
    assert got["b/link"].issym() and got["b/link"].linkname == "../a.txt"
    assert got["hard"].islnk() and got["hard"].linkname == "a.txt"
    assert got["fifo"].isfifo()
    assert got["b"].isdir()
    if os.geteuid() == 0:
        assert (got["b/deep/x"].uid, got["b/deep/x"].gid) == (1234, 4321)
    with tarfile.open(out) as tar:
        assert tar.extractfile("a.txt").read() == b"alpha"


def test_same_tree_same_digest_and_epoch_clamps(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "new").write_text("n")
    (root / "old").write_text("o")
    os.utime(root / "old", (100, 100))
    first = write_tar(root, tmp_path / "1.tar", epoch=1000)
    second = write_tar(root, tmp_path / "2.tar", epoch=1000)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second)]
    assert digest[0] == digest[1]
    got = members(first)
    assert got["new"].mtime == 1000  # clamped
    assert got["old"].mtime == 100  # older than the epoch: kept
    assert members(write_tar(root, tmp_path / "3.tar"))["new"].mtime > 1000


def test_owner_overrides_and_excludes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "x").write_text("")
    (root / "app").mkdir()
    (root / "app" / "f").write_text("f")
    out = write_tar(root, tmp_path / "l.tar", exclude=["proc"],
                    owners={"app/f": (1000, 1001)})
    got = members(out)
    assert "proc" not in got and "proc/x" not in got
    assert (got["app/f"].uid, got["app/f"].gid) == (1000, 1001)


@needs_root
def test_overlay_upper_dir_becomes_whiteouts(tmp_path: Path) -> None:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "gone.txt").write_text("bye")
    (lower / "keep.txt").write_text("keep")
    (lower / "opaque").mkdir()
    (lower / "opaque" / "old").write_text("old")
    (lower / "etc").mkdir()
    (lower / "etc" / "conf").write_text("v1")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        (merged / "gone.txt").unlink()
        (merged / "etc" / "conf").write_text("v2")
        os.chmod(merged / "etc" / "conf", 0o600)
        # rm -rf then mkdir: overlayfs marks the new directory opaque
        (merged / "opaque" / "old").unlink()
        (merged / "opaque").rmdir()
        (merged / "opaque").mkdir()
        (merged / "opaque" / "new").write_text("new")
        (merged / "added").write_text("added")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    out = write_tar(upper, tmp_path / "layer.tar", overlay=True)
    got = members(out)
    assert sorted(got) == [".wh.gone.txt", "added", "etc", "etc/conf", "opaque",
                           "opaque/.wh..wh..opq", "opaque/new"]
    assert got[".wh.gone.txt"].isfile() and got[".wh.gone.txt"].size == 0
    assert got["etc/conf"].mode == 0o600
    assert all("overlay" not in key for m in got.values() for key in m.pax_headers)
    with tarfile.open(out) as tar:
        assert tar.extractfile("etc/conf").read() == b"v2"
    # The store unpacks it back into overlay form: the round trip is lossless.
    from pytest_pycontain.store import unpack_layer

    back = tmp_path / "back"
    back.mkdir()
    unpack_layer(out, back)
    assert os.stat(back / "gone.txt", follow_symlinks=False).st_rdev == 0
    assert os.getxattr(back / "opaque", "trusted.overlay.opaque") == b"y"


@needs_root
def test_layered_view_honours_whiteouts_opaque_dirs_and_symlinks(tmp_path: Path) -> None:
    from pytest_pycontain.layers import LayeredFS

    bottom, top = tmp_path / "bottom", tmp_path / "top"
    for d in (bottom / "usr" / "bin", bottom / "etc", bottom / "opaque", top / "etc",
              top / "opaque"):
        d.mkdir(parents=True, exist_ok=True)
    os.symlink("usr/bin", bottom / "bin")
    (bottom / "usr" / "bin" / "tool").write_text("tool")
    (bottom / "etc" / "gone").write_text("gone")
    (bottom / "etc" / "kept").write_text("v1")
    (bottom / "opaque" / "hidden").write_text("h")
    os.mknod(top / "etc" / "gone", 0o020000, os.makedev(0, 0))  # a whiteout
    (top / "etc" / "kept").write_text("v2")
    (top / "opaque" / "new").write_text("n")
    os.setxattr(top / "opaque", "trusted.overlay.opaque", b"y")
    fs = LayeredFS([bottom, top])
    assert fs.find("/etc/gone") is None
    assert fs.read_text("/etc/kept") == "v2"
    assert fs.listdir("/etc") == ["kept"]
    assert fs.listdir("/opaque") == ["new"] and fs.find("/opaque/hidden") is None
    assert fs.resolve("/bin/tool") == "/usr/bin/tool"
    assert fs.read_text("/bin/tool") == "tool"
    os.symlink("../../../../etc", top / "escape")
    assert fs.resolve("/escape/kept") == "/etc/kept"  # symlinks never leave the root
