"""``pycontain info`` and the rootless facts behind it (``idmap``): pure reads, so they are
tested here for root and, through .ci/rootless, for users."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_pycontain import backends, idmap


def test_info_says_the_mode_and_what_this_host_lacks() -> None:
    out = subprocess.run([sys.executable, "-m", "pytest_pycontain", "info", "--backend",
                          "native"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("engine: native (")
    if idmap.host_uid() == 0:
        assert lines[1] == "mode: root"
        assert "overlay: overlayfs with trusted.* xattrs (root)" in lines
    else:
        assert lines[1] == "mode: rootless"
        assert f"id mapping: {idmap.plan().describe()}" in lines
        assert any(line.startswith("user namespace: ") and "pause process" in line
                   for line in lines)
        assert any(line.startswith("overlay: overlayfs in the user namespace with userxattr")
                   for line in lines)
        delegated, why = idmap.cgroup_delegation()
        if delegated is None:
            assert f"fix: memory, cpus and pids limits: {why}" in lines


@pytest.fixture
def proc_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(idmap, "PROC_SYS", tmp_path)
    return tmp_path


def test_ubuntus_apparmor_restriction_is_named_with_its_sysctl(
        proc_sys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (proc_sys / "kernel").mkdir()
    (proc_sys / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    found = idmap.blockers()
    assert any("kernel.apparmor_restrict_unprivileged_userns = 1" in b and
               "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in b for b in found)
    monkeypatch.setattr(idmap.os, "geteuid", lambda: 1000)
    chosen, reason = backends.choose("auto", {})
    assert chosen in ("none", "docker")
    assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in reason


def test_disabled_user_namespaces_are_named_with_their_sysctl(proc_sys: Path) -> None:
    (proc_sys / "user").mkdir()
    (proc_sys / "user" / "max_user_namespaces").write_text("0\n")
    (proc_sys / "kernel").mkdir()
    (proc_sys / "kernel" / "unprivileged_userns_clone").write_text("0\n")
    found = " | ".join(idmap.blockers())
    assert "sysctl -w user.max_user_namespaces=" in found
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in found


def test_old_kernels_cannot_mount_overlayfs_in_a_user_namespace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idmap.platform, "release", lambda: "5.10.0-28-amd64")
    assert any("5.11 or later" in b for b in idmap.blockers())
    assert idmap.kernel_version("6.1.0-18-amd64") == (6, 1)


def test_subordinate_ranges_by_name_or_uid_and_big_enough(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:1000\nalice:300000:65536\n1234:500000:70000\nbad line\n")
    assert idmap.subordinate_range(subuid, "alice", 1000) == idmap.IdRange(1, 300000, 65536)
    assert idmap.subordinate_range(subuid, "bob", 1234) == idmap.IdRange(1, 500000, 65536)
    assert idmap.subordinate_range(subuid, "carol", 99) is None
    mapping = idmap.plan(1234, 1234, subuid=str(subuid), subgid=str(subuid))
    if mapping.full:  # newuidmap and newgidmap installed
        assert [r.line() for r in mapping.uids] == ["0 1234 1", "1 500000 65536"]
    single = idmap.plan(99, 99, subuid=str(subuid), subgid=str(subuid))
    assert not single.full and [r.line() for r in single.uids] == ["0 99 1"]
    assert "usermod --add-subuids 100000-165535 --add-subgids 100000-165535" in \
        single.why_single
