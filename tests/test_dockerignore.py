"""``.dockerignore`` rules as Docker applies them (moby's patternmatcher behaviour)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pycontain.dockerignore import DockerIgnore, ignore_file_for, load
from pytest_pycontain.errors import DockerfileError


def ignore(*lines: str) -> DockerIgnore:
    return DockerIgnore(lines)


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["*.pyc"], "a.pyc", True),
        (["*.pyc"], "sub/a.pyc", False),  # anchored at the root: * stays in one element
        (["**/*.pyc"], "sub/deep/a.pyc", True),
        (["**/*.pyc"], "a.pyc", True),  # ** matches zero directories too
        (["/build"], "build/out.o", True),  # a leading slash means nothing more
        (["build/"], "build/out.o", True),  # nor does a trailing one
        (["build"], "build", True),
        (["build"], "rebuild", False),
        (["docs/**"], "docs/a/b.md", True),
        (["docs/**"], "docs", False),
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[a-c].txt"], "b.txt", True),
        (["[!a-c].txt"], "b.txt", False),
        (["[!a-c].txt"], "d.txt", True),
        (["./tmp/../cache"], "cache/x", True),  # patterns are cleaned like paths
        (["*.md", "!README.md"], "README.md", False),
        (["*.md", "!README.md"], "NOTES.md", True),
        (["*.md", "!README.md", "README*"], "README.md", True),  # the last match wins
        (["dir", "!dir/keep"], "dir/keep", False),
        (["dir", "!dir/keep"], "dir/other", True),
        (["file(1).txt"], "file(1).txt", True),
        (["a.b"], "axb", False),  # regex characters are literal
        (["# comment", "", "  x  "], "x", True),
        ([r"\*"], "*", True),
        (["**"], "anything/at/all", True),
    ],
)
def test_rules(patterns: list[str], path: str, excluded: bool) -> None:
    assert DockerIgnore(patterns).excluded(path) is excluded


def test_empty_ignores_nothing() -> None:
    rules = ignore()
    assert not rules
    assert not rules.excluded("anything")


def test_walk_honours_exceptions_inside_excluded_dirs(tmp_path: Path) -> None:
    for name in ("keep.txt", "node_modules/x.js", "node_modules/lib/y.js", "logs/a.log",
                 "logs/important.log", "src/main.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    rules = ignore("node_modules", "logs", "!logs/important.log")
    assert rules.walk(tmp_path) == ["keep.txt", "logs/important.log", "src", "src/main.py"]


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("general\n")
    dockerfile = tmp_path / "app.Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    assert ignore_file_for(tmp_path, dockerfile) == tmp_path / ".dockerignore"
    (tmp_path / "app.Dockerfile.dockerignore").write_text("# only this one\nspecific\n")
    rules = load(tmp_path, dockerfile)
    assert rules.excluded("specific")
    assert not rules.excluded("general")
    assert load(tmp_path, tmp_path / "Dockerfile").excluded("general")


def test_no_ignore_file(tmp_path: Path) -> None:
    assert not load(tmp_path, None)


def test_bad_patterns_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n!\n")
    with pytest.raises(DockerfileError, match=r"\.dockerignore:2: illegal exclusion"):
        load(tmp_path)
    with pytest.raises(DockerfileError, match=r":1: bad pattern '\[abc'"):
        DockerIgnore(["[abc"])
