"""The plugin as users meet it before any fixture: options, header, settings errors, zero cost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_help_shows_the_option_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "disposable containers (pytest-pycontain):",
            "*--pycontain-image=IMAGE*",
            "*--pycontain-backend={auto,native,docker}*",
            "*--pycontain-registry-mirror=REGISTRY_MIRROR*",
            "*--pycontain-cache-dir=CACHE_DIR*",
        ]
    )


def test_report_header_names_the_engine_and_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest("--pycontain-backend=native")
    result.stdout.fnmatch_lines(["pycontain: engine native (requested*); started on first use"])
    result.assert_outcomes(passed=1)


def test_bad_setting_in_pyproject_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pycontain]\nscope = "weekly"\n')
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(
        [
            "*pyproject.toml: [[]tool.pycontain[]] scope = 'weekly': "
            "expected one of function, module, session*"
        ]
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_ini_and_environment_settings(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\npycontain_backend = docker\n")
    pytester.makepyfile("def test_ok():\n    pass\n")
    pytester.runpytest().stdout.fnmatch_lines(["pycontain: engine docker (requested*"])
    monkeypatch.setenv("PYCONTAIN_BACKEND", "native")
    pytester.runpytest().stdout.fnmatch_lines(["pycontain: engine native (requested*"])


def test_plain_run_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    """A run that uses no pycontain fixture must not import the engine, pyroute2 or docker."""
    pytester.makepyfile("""
        import sys

        def test_modules():
            heavy = [m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'docker')
                     or m.startswith('pytest_pycontain.native') or m in (
                         'pytest_pycontain.store', 'pytest_pycontain.registry',
                         'pytest_pycontain.build', 'pytest_pycontain.fixtures_engine')]
            assert heavy == []
            assert 'pytest_pycontain.plugin' in sys.modules
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest_pycontain.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("build", "run", "exec", "pull", "push", "images", "ps", "rm", "prune"):
        assert command in out


def test_header_on_docker_names_the_builder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest("--pycontain-backend=docker")
    result.stdout.fnmatch_lines(["pycontain: engine docker (requested*); started on first use; "
                                 "builds with *"])


def test_auto_falls_back_to_docker_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root, on a host that stops user namespaces (so no rootless mode either)."""
    from pytest_pycontain import backends, idmap

    monkeypatch.setattr(backends.idmap.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(idmap, "blockers", lambda: [
        "user namespaces are disabled (user.max_user_namespaces = 0); enable them: "
        "sysctl -w user.max_user_namespaces=28633"])
    chosen, reason = backends.choose("auto", {"DOCKER_HOST": "unix:///tmp/d.sock"})
    assert chosen == "docker"
    assert "needs root" in reason and "unix:///tmp/d.sock" in reason
    monkeypatch.setattr(backends, "docker_sockets", lambda environ=None: [])
    chosen, reason = backends.choose("auto", {})
    assert chosen == "none" and "no Docker socket was found" in reason


def test_auto_picks_rootless_native_without_root_where_user_namespaces_work(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from pytest_pycontain import backends, idmap

    monkeypatch.setattr(backends.idmap.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(idmap, "blockers", lambda: [])
    subuid = tmp_path / "subuid"
    subuid.write_text("someone:100000:65536\n")
    real_plan = idmap.plan
    monkeypatch.setattr(idmap, "plan", lambda: real_plan(
        4321, 4321, subuid=str(subuid), subgid=str(subuid)))
    chosen, reason = backends.choose("auto", {"DOCKER_HOST": "unix:///tmp/d.sock"})
    assert chosen == "native"
    assert reason.startswith("rootless: single id: uid 4321 is root, no other ids (no entry "
                             "for 4321 in ")
    assert "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 4321" in reason
    monkeypatch.setattr(idmap, "user_name", lambda uid: "someone")
    chosen, reason = backends.choose("auto", {})
    assert chosen == "native"
    if idmap.shutil.which("newuidmap") and idmap.shutil.which("newgidmap"):
        assert reason.startswith("rootless: uid 4321 is root, ids 1-65536 are 100000-165535 "
                                 "from /etc/subuid; auto")


@pytest.mark.parametrize("args", [(), ("-q",), ("--no-header",), ("-n", "2")])
def test_bad_environment_value_stops_the_session_at_once(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    """Whether or not a header is printed, and before any worker or test starts."""
    if "-n" in args:
        pytest.importorskip("xdist")
    monkeypatch.setenv("PYCONTAIN_TIMEOUT", "soon")
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.stderr.fnmatch_lines(["ERROR: pycontain: environment variable PYCONTAIN_TIMEOUT = "
                                 "'soon': expected a number of seconds, got 'soon'"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "passed" not in result.stdout.str()


def test_every_unknown_pyproject_key_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pycontain]\ndockerfiel = "Dockerfile"\nscoep = "module"\n')
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest("-q")
    result.stderr.fnmatch_lines(["*pyproject.toml: [[]tool.pycontain[]]: unknown keys "
                                 "'dockerfiel', 'scoep' (known: *"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_help_still_works_with_a_bad_setting(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.pycontain]\nscope = "weekly"\n')
    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*--pycontain-scope=*"])


def test_the_printed_pycontain_command_runs_without_the_venv_on_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_pycontain import invocation

    bare_path = {**os.environ, "PATH": "/usr/bin:/bin"}
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    argv = invocation.pycontain_argv()  # the venv's script, by its full path
    assert Path(argv[0]).is_absolute() and argv[0].endswith("pycontain"), argv
    # without an installed script: this interpreter runs the package
    monkeypatch.setattr(invocation.sysconfig, "get_path", lambda _name: str(tmp_path))
    fallback = invocation.pycontain_argv()
    assert fallback == [sys.executable, "-m", "pytest_pycontain"]
    for command in (argv, fallback):
        out = subprocess.run([*command, "--help"], capture_output=True, text=True,
                             env=bare_path, timeout=60)
        assert out.returncode == 0 and "usage: pycontain" in out.stdout, out.stderr
