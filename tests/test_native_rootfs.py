"""Pure helpers of the native engine: user lookup in the image, paths kept inside the root,
tmpfs options, and how Entrypoint/Cmd/StopSignal combine (no root needed)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pytest_pycontain.engine import RunSpec
from pytest_pycontain.errors import ConfigError
from pytest_pycontain.native import syscalls as sc
from pytest_pycontain.native.container import signal_number
from pytest_pycontain.native.engine import command_line, image_config
from pytest_pycontain.native.process import not_found_message
from pytest_pycontain.native.rootfs import (
    UnknownUser,
    inside,
    resolve_user,
    tmpfs_options,
    write_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (tmp_path / "etc" / "group").write_text(
        "root:x:0:\nstaff:x:50:app,nobody\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n")
    return tmp_path


def test_users_by_name_and_number(root: Path) -> None:
    assert resolve_user(None, str(root)) == (0, 0, [], "/root")
    assert resolve_user("app", str(root)) == (1000, 1000, [10, 50], "/home/app")
    assert resolve_user("1000", str(root)) == (1000, 1000, [10, 50], "/home/app")
    assert resolve_user("app:staff", str(root)) == (1000, 50, [10], "/home/app")
    assert resolve_user("4242:4343", str(root)) == (4242, 4343, [], "/")
    assert resolve_user("nobody:65534", str(root))[:2] == (65534, 65534)


def test_unknown_users_and_groups(root: Path) -> None:
    with pytest.raises(UnknownUser, match="unable to find user ghost: no matching entries"):
        resolve_user("ghost", str(root))
    with pytest.raises(UnknownUser, match="unable to find group ghosts"):
        resolve_user("app:ghosts", str(root))


def test_symlinks_stay_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("/real", tmp_path / "absolute")
    os.symlink("../../../../real", tmp_path / "climbing")
    os.symlink("/etc", tmp_path / "host-etc")
    assert inside(str(tmp_path), "/absolute/x") == str(tmp_path / "real" / "x")
    assert inside(str(tmp_path), "/climbing/x") == str(tmp_path / "real" / "x")
    assert inside(str(tmp_path), "/host-etc/passwd") == str(tmp_path / "etc" / "passwd")
    assert inside(str(tmp_path), "/../../x") == str(tmp_path / "x")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(OSError, match="too many levels"):
        inside(str(tmp_path), "/loop/x")


def test_tmpfs_options_as_docker_reads_them() -> None:
    default = sc.MS_NOEXEC | sc.MS_NOSUID | sc.MS_NODEV
    assert tmpfs_options("") == (default, "")
    assert tmpfs_options("size=64m,mode=1777") == (default, "size=64m,mode=1777")
    assert tmpfs_options("exec,ro,size=1m") == (
        (default & ~sc.MS_NOEXEC) | sc.MS_RDONLY, "size=1m")


def test_entrypoint_and_cmd_combine_as_in_docker() -> None:
    config = {"Entrypoint": ["/entry"], "Cmd": ["--default"]}
    assert command_line(config, RunSpec(image=None)) == ["/entry", "--default"]
    assert command_line(config, RunSpec(image=None, command=["--given"])) == [
        "/entry", "--given"]
    assert command_line(config, RunSpec(image=None, command="echo $HOME")) == [
        "/entry", "/bin/sh", "-c", "echo $HOME"]
    assert command_line(config, RunSpec(image=None, entrypoint="/other -x")) == ["/other", "-x"]
    assert command_line({"Cmd": None, "Entrypoint": None}, RunSpec(image=None)) == []


def test_stop_signals() -> None:
    assert signal_number(None) == signal.SIGTERM
    assert signal_number("SIGQUIT") == signal_number("quit") == signal.SIGQUIT
    assert signal_number("9") == 9
    with pytest.raises(ConfigError, match="SIGNOPE"):
        signal_number("SIGNOPE")


def test_image_config_shapes() -> None:
    class Blob:
        config = {"config": {"Env": ["A=1"]}, "rootfs": {}}

    class Docker:
        config = {"Env": ["A=1"], "Cmd": None}

    assert image_config(Blob())["Env"] == image_config(Docker())["Env"] == ["A=1"]


def test_docker_words_for_a_command_that_cannot_start() -> None:
    assert not_found_message("nope", FileNotFoundError()) == (
        127, 'exec: "nope": executable file not found in $PATH')
    assert not_found_message("/bin/nope", FileNotFoundError()) == (
        127, 'exec: "/bin/nope": stat /bin/nope: no such file or directory')
    assert not_found_message("/etc", PermissionError())[0] == 126


def test_a_rewritten_etc_file_keeps_its_inode_and_holds_only_the_new_text(tmp_path: Path) -> None:
    """What a join does to a container's bind-mounted hosts and resolv.conf: longer, then
    shorter text than before, into the same file; a file not there yet is made."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n127.0.1.1\tabc\n")
    inode = hosts.stat().st_ino
    write_file(hosts, b"127.0.0.1\tlocalhost\n10.213.0.2\tabc\n10.213.0.1\thost.docker.internal\n",
               in_place=True)
    assert hosts.read_text().splitlines()[-1] == "10.213.0.1\thost.docker.internal"
    write_file(hosts, b"nameserver 10.213.0.1\n", in_place=True)
    assert hosts.read_text() == "nameserver 10.213.0.1\n"
    assert hosts.stat().st_ino == inode
    write_file(tmp_path / "resolv.conf", b"", in_place=True)
    assert (tmp_path / "resolv.conf").read_text() == ""
