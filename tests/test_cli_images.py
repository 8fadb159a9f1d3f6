"""``pycontain pull/push/images/rmi/save/load/prune`` as a user runs them."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from pytest_pycontain.cli import main
from pytest_pycontain.cli_images import ProgressPrinter, add_parsers
from testenv.registry import RunningRegistry


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYCONTAIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_pull_images_save_rmi_load_prune(cache: Path, test_registry: RunningRegistry,
                                         capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    ref = f"{test_registry.host}/library/busybox:latest"
    code, out, err = run(capsys, "pull", ref)
    assert code == 0 and f"{ref}: digest sha256:" in out
    assert "downloaded" in err
    digest = out.split("digest ")[1].split(",")[0]

    code, out, _ = run(capsys, "images")
    header, row = out.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "DIGEST", "SIZE"]
    assert row.split()[:2] == [f"{test_registry.host}/library/busybox", "latest"]

    archive = tmp_path / "bb.tar"
    assert run(capsys, "save", ref, "-o", str(archive))[0] == 0
    inspected = subprocess.run(["skopeo", "inspect", "--format", "{{.Digest}}",
                                f"oci-archive:{archive}"], capture_output=True, text=True,
                               check=True).stdout.strip()
    assert inspected == digest

    code, out, _ = run(capsys, "rmi", ref)
    assert code == 0 and out == f"untagged {ref}\n"
    code, out, _ = run(capsys, "prune")
    assert code == 0 and out.startswith("removed 3 blobs and 0 unpacked layers")
    assert run(capsys, "images", "-q")[1] == ""

    code, out, _ = run(capsys, "load", "-i", str(archive))
    assert code == 0 and out == f"loaded {ref} ({digest})\n"

    dest = f"{test_registry.host}/cli/busybox:pushed"
    code, out, _ = run(capsys, "push", ref, dest)
    assert code == 0 and out == f"{dest}: digest {digest}\n"


def test_docker_hub_names_go_through_the_configured_mirror(
        cache: Path, test_registry: RunningRegistry, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYCONTAIN_REGISTRY_MIRROR", test_registry.url)
    code, out, err = run(capsys, "pull", "busybox")
    assert code == 0, err
    assert out.startswith("busybox: digest sha256:")
    code, out, _ = run(capsys, "images")
    assert out.splitlines()[1].split()[:2] == ["busybox", "latest"]


def test_errors_exit_1_and_name_the_reference(cache: Path, test_registry: RunningRegistry,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"{test_registry.host}/library/nothing:here"
    code, out, err = run(capsys, "pull", ref)
    assert code == 1 and out == ""
    assert err.startswith(f"pycontain pull: {ref}: manifest: not found")
    assert f"registry {test_registry.host}" in err
    code, _, err = run(capsys, "rmi", "never-pulled")
    assert code == 1 and "never-pulled" in err and "not in the store" in err
    code, _, err = run(capsys, "save", "never-pulled", "-o", "x.tar")
    assert code == 1 and "never-pulled" in err
    assert not Path("x.tar").exists()


def test_add_parsers_registers_every_command() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parsers(sub, prune=False)
    assert set(sub.choices) == {"pull", "push", "images", "rmi", "save", "load"}
    args = parser.parse_args(["push", "a", "b"])
    assert (args.ref, args.dest, args.handler.__name__) == ("a", "b", "cmd_push")


def test_progress_printer(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter(interval=0)
    printer("download", "sha256:" + "a" * 64, 1500, 3000)
    printer("downloaded", "sha256:" + "a" * 64, 3000, 3000)
    printer("exists", "sha256:" + "b" * 64, 10, 10)
    err = capsys.readouterr().err.splitlines()
    assert err == ["  1.5 kB of 3.0 kB", "aaaaaaaaaaaa: downloaded 3.0 kB",
                   "bbbbbbbbbbbb: already present"]
