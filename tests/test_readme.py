"""The README's usage snippets are real: each fenced block that starts with ``# FILENAME`` is
written into a fresh project and the project's tests must pass on the native engine."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```(?:python|toml|dockerfile)\n# ([\w.\-]+)\n(.*?)```", re.DOTALL)


def snippets() -> dict[str, str]:
    return {name: body for name, body in BLOCK.findall(README.read_text())}


def test_the_readme_has_the_snippets_it_promises() -> None:
    assert {"Dockerfile", "pyproject.toml", "test_home.py", "test_stack.py"} <= set(snippets())


@pytest.mark.skipif(os.geteuid() != 0, reason="the native engine needs root (namespaces)")
def test_readme_snippets_pass(pytester: pytest.Pytester) -> None:
    for name, body in snippets().items():
        (pytester.path / name).write_text(body)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
