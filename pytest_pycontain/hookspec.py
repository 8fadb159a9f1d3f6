"""The hooks pytest-pycontain adds to pytest, all in one place (added via ``pytest_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .config import Settings
    from .engine import Engine


@pytest.hookspec(firstresult=True)
def pytest_pycontain_make_engine(config: pytest.Config, settings: Settings) -> Engine | None:
    """Make the engine the fixtures use in this session (or this xdist worker).

    Called once, when a pycontain fixture is first used, never in a run that uses none. The
    built-in implementation makes the native engine or the Docker backend, as the ``backend``
    setting and the host decide; a plugin or conftest may return any object that implements
    :class:`pytest_pycontain.engine.Engine` (for example
    :class:`pytest_pycontain.testing.FakeEngine`). The session closes it at the end.

    :param config: the pytest config.
    :param settings: the session's resolved settings (``settings.backend`` is ``auto``,
        ``native`` or ``docker``).
    :returns: the engine, or ``None`` to let the next implementation (finally the built-in
        one) decide.
    """
