"""In-root resolution and fd-relative copying (``native/inroot.py``, ``fdcopy.py``) on a plain
directory standing for a container's root, with openat2 and with the walk older kernels use:
planted symlinks (absolute, ``../``, chained, looping) never lead out of the root."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="O_PATH and openat2 are Linux's")

from pytest_pycontain import fdcopy  # noqa: E402
from pytest_pycontain.native import inroot  # noqa: E402

MODES = [pytest.param(True, id="openat2"), pytest.param(False, id="walk")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with links that would escape if followed from the host: the host's own
    ``tmp_path/outside`` exists, and so does the root's ``outside`` of the same path."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host\n")
    base = tmp_path / "root"
    inner = base / str(outside).lstrip("/")
    inner.mkdir(parents=True)
    (inner / "secret").write_text("root\n")
    (base / "a").mkdir()
    os.symlink(str(outside), base / "a" / "abs")
    os.symlink("../" * 15 + str(outside).lstrip("/"), base / "a" / "rel")
    os.symlink("abs", base / "a" / "chain")
    os.symlink("loop", base / "a" / "loop")
    os.symlink(f"{outside}/secret", base / "a" / "file")
    return base


def _read(root_fd: int, path: str, use_openat2: bool) -> str:
    where = inroot.locate(root_fd, path, follow_last=True, use_openat2=use_openat2)
    try:
        fd = os.open(where.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=where.dir_fd)
        with os.fdopen(fd) as handle:
            return handle.read()
    finally:
        where.close()


@pytest.mark.parametrize("use_openat2", MODES)
def test_links_resolve_inside_the_root(root: Path, use_openat2: bool) -> None:
    if use_openat2 and not inroot.openat2_available():
        pytest.skip("this kernel has no openat2 (before 5.6): the walk is what runs")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for path in ("/a/abs/secret", "a/rel/secret", "/a/chain/secret", "/a/file",
                     "/a/../../../a/abs/../abs/secret"):
            assert _read(fd, path, use_openat2) == "root\n", path
        with pytest.raises(OSError) as caught:
            inroot.open_dir(fd, "/a/loop/x", use_openat2=use_openat2)
        assert caught.value.errno == errno.ELOOP
        with pytest.raises(FileNotFoundError):
            inroot.open_dir(fd, "/a/missing/x", use_openat2=use_openat2)
        with pytest.raises(NotADirectoryError):
            inroot.open_dir(fd, "/a/file/x", use_openat2=use_openat2)
        where = inroot.locate(fd, "/a/abs", follow_last=False, use_openat2=use_openat2)
        assert where.name == "abs" and where.lstat() is not None
        where.close()
    finally:
        os.close(fd)


@pytest.mark.parametrize("use_openat2", MODES)
def test_make_parents_and_copy_stay_inside(root: Path, tmp_path: Path,
                                           use_openat2: bool) -> None:
    outside = tmp_path / "outside"
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("copied\n")
    os.symlink("/etc/passwd", src / "d" / "link")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    up = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        inroot.make_parents(fd, "/a/abs/new/deeper", use_openat2=use_openat2)
        where = inroot.locate(fd, "/a/rel/new/deeper/tree", follow_last=True,
                              use_openat2=use_openat2)
        fdcopy.copy(fdcopy.Location(up, "src", "src"), where)
        where.close()
    finally:
        os.close(fd)
        os.close(up)
    assert sorted(os.listdir(outside)) == ["secret"]
    tree = root / str(outside).lstrip("/") / "new" / "deeper" / "tree"
    assert (tree / "d" / "f").read_text() == "copied\n"
    assert os.readlink(tree / "d" / "link") == "/etc/passwd"


def test_copy_replaces_links_where_it_writes(tmp_path: Path) -> None:
    """A symlink (or file) where a directory or file goes is replaced, not written through;
    a directory already there is merged into."""
    victim = tmp_path / "victim"
    victim.mkdir()
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("new\n")
    (src / "g").write_text("new g\n")
    dst = tmp_path / "dst"
    dst.mkdir()
    os.symlink(victim, dst / "d")
    os.symlink(victim / "g", dst / "g")
    (dst / "keep").mkdir()
    (src / "keep").mkdir()
    (src / "keep" / "added").write_text("x")
    (dst / "keep" / "old").write_text("y")
    a, b = os.open(tmp_path, os.O_RDONLY), os.open(tmp_path, os.O_RDONLY)
    try:
        fdcopy.copy(fdcopy.Location(a, "src", "src"), fdcopy.Location(b, "dst", "dst"))
    finally:
        os.close(a)
        os.close(b)
    assert os.listdir(victim) == []
    assert not (dst / "d").is_symlink() and (dst / "d" / "f").read_text() == "new\n"
    assert not (dst / "g").is_symlink() and (dst / "g").read_text() == "new g\n"
    assert sorted(os.listdir(dst / "keep")) == ["added", "old"]
