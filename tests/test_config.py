"""Settings resolution: precedence, parsing, and errors that name where a bad value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pycontain.config import default_cache_dir, read_pyproject, resolve
from pytest_pycontain.errors import ConfigError


def test_defaults() -> None:
    settings = resolve(environ={})
    assert settings.backend == "auto" and settings.scope == "function"
    assert settings.pull == "missing" and settings.timeout == 60.0
    assert settings.sources["backend"] == "default"


def test_precedence_marker_cli_env_ini_pyproject() -> None:
    layers = dict(
        marker={"scope": "session"},
        cli={"scope": "module"},
        environ={"PYCONTAIN_SCOPE": "function"},
        ini={"scope": "module"},
        pyproject={"scope": "session"},
    )
    assert resolve(**layers).scope == "session"
    assert resolve(**layers).sources["scope"].startswith("@pytest.mark.pycontain")
    layers.pop("marker")
    assert resolve(**layers).scope == "module"
    assert resolve(**layers).sources["scope"] == "--pycontain-scope"
    layers.pop("cli")
    assert resolve(**layers).scope == "function"
    assert resolve(**layers).sources["scope"] == "environment variable PYCONTAIN_SCOPE"
    layers.pop("environ")
    assert resolve(environ={}, **layers).sources["scope"] == "ini file: pycontain_scope"
    layers.pop("ini")
    settings = resolve(environ={}, **layers)
    assert settings.scope == "session"
    assert settings.sources["scope"] == "pyproject.toml: [tool.pycontain] scope"


def test_empty_values_mean_not_given() -> None:
    settings = resolve(
        cli={"image": None, "build_arg": []},
        environ={"PYCONTAIN_IMAGE": ""},
        pyproject={"image": "busybox", "build_args": {"A": "1"}},
    )
    assert settings.image == "busybox"
    assert settings.build_args == {"A": "1"}


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            {"environ": {"PYCONTAIN_SCOPE": "weekly"}},
            "environment variable PYCONTAIN_SCOPE = 'weekly': expected one of function, module, "
            "session",
        ),
        ({"cli": {"timeout": "soon"}}, "--pycontain-timeout = 'soon': expected a number"),
        (
            {"pyproject": {"no_cache": "maybe"}, "pyproject_path": "/p/pyproject.toml"},
            "/p/pyproject.toml: [tool.pycontain] no_cache = 'maybe': expected true or false",
        ),
        (
            {"pyproject": {"dockerfile": 3}},
            "[tool.pycontain] dockerfile = 3: expected a string, got int",
        ),
        (
            {"ini": {"build_arg": "NOEQUALS"}, "ini_path": "tox.ini"},
            "tox.ini: pycontain_build_arg = 'NOEQUALS': expected KEY=VALUE",
        ),
        ({"pyproject": {"dockerfiel": "Dockerfile"}}, "unknown key 'dockerfiel'"),
        ({"cli": {"timeout": "-1"}}, "expected a positive number"),
    ],
)
def test_bad_values_name_their_source(layers: dict, message: str) -> None:
    layers.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        resolve(**layers)
    assert message in str(info.value)


def test_every_unknown_pyproject_key_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={}, pyproject={"dockerfiel": "Dockerfile", "scope": "module",
                                       "scoep": "x", "timout": 3},
                pyproject_path="/p/pyproject.toml")
    message = str(info.value)
    assert message.startswith("/p/pyproject.toml: [tool.pycontain]: unknown keys "
                              "'dockerfiel', 'scoep', 'timout' (known: ")
    assert "'scope'" not in message.split("(known:")[0]


def test_build_args_forms() -> None:
    assert resolve(environ={"PYCONTAIN_BUILD_ARG": "A=1 B=x=y"}).build_args == {
        "A": "1",
        "B": "x=y",
    }
    assert resolve(environ={}, cli={"build_arg": ["A=1", "C="]}).build_args == {"A": "1", "C": ""}


def test_cache_dir_defaults() -> None:
    assert default_cache_dir({"PYCONTAIN_CACHE_DIR": "/c"}) == Path("/c")
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/pycontain")
    assert default_cache_dir({}) == Path.home() / ".cache" / "pycontain"
    settings = resolve(environ={}, cli={"cache_dir": "/tmp/c"})
    assert settings.cache_path == Path("/tmp/c")


def test_read_pyproject(tmp_path: Path) -> None:
    assert read_pyproject(tmp_path)[0] == {}
    (tmp_path / "pyproject.toml").write_text('[tool.pycontain]\ndockerfile = "Dockerfile"\n')
    table, path = read_pyproject(tmp_path)
    assert table == {"dockerfile": "Dockerfile"} and path.endswith("pyproject.toml")
    (tmp_path / "pyproject.toml").write_text("[tool.pycontain\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: cannot read"):
        read_pyproject(tmp_path)
