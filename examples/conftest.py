"""Each folder here is a project of its own; stop a pytest run that mixes them up.

`pytest examples` from the repository root would take the repository's pyproject.toml as its
configuration (no [tool.pycontain]) and resolve every Dockerfile against the wrong folder. Each
example is run in its own folder instead (`bash examples/run` does that for all of them); this
file is loaded only when the rootdir is above the examples, that is when that went wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    if Path(config.rootpath).resolve() in (HERE, *HERE.parents):
        projects = sorted(p.name for p in HERE.iterdir() if (p / "pyproject.toml").is_file())
        raise pytest.UsageError(
            "examples/ holds separate projects, each with its own pyproject.toml "
            f"({', '.join(projects)}): run them all with `bash examples/run [PYTEST ARGS]`, or "
            "one with `pytest examples/NAME` (its folder is then the rootdir)"
        )
