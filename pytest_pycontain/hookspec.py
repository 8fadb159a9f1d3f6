"""The hooks pytest-pycontain adds to pytest, all in one place (added via ``pytest_addhooks``)."""

from __future__ import annotations

import pytest


@pytest.hookspec(firstresult=True)
def pytest_pycontain_choose_backend(
    config: pytest.Config, requested: str
) -> tuple[str, str] | None:
    """Choose the engine for this run.

    :param config: the pytest config.
    :param requested: the resolved ``backend`` setting: ``auto``, ``native`` or ``docker``.
    :returns: ``(backend, reason)`` — the backend's name and one line saying why — or ``None``
        to let the next implementation (and finally the built-in choice) decide.
    """
