"""The stack: one data store for the whole session, a fresh app for each test.

Starting the store once is what you would do with a real database; the tests then keep out of
each other's way by using their own keys (here: page names) rather than by a fresh store.
Under pytest-xdist every worker has its own session, so its own network and store.
"""

from __future__ import annotations

import pytest

from pytest_pycontain import wait


@pytest.fixture(scope="session")
def network(pycontain_session):
    """A private network: containers on it find each other by name, nothing else reaches it."""
    return pycontain_session.network()


@pytest.fixture(scope="session")
def store(pycontain_session, network):
    """The key-value store built from store/Dockerfile, named `store`, also known as `kv`."""
    image = pycontain_session.build("store")
    return pycontain_session.run(image, name="store", aliases=["kv"], network=network,
                                 wait=wait.port(6379))


@pytest.fixture
def start_app(pycontain, network, store):
    """Start an app container (built from ./Dockerfile) on the store's network."""

    def start(**env: str):
        return pycontain.run(pycontain.build("."), network=network, env=env or None,
                             ports=[8080], wait=wait.http(8080, "/cgi-bin/health"))

    return start


@pytest.fixture
def app(start_app):
    """The app as deployed: it finds the store by the name in its image's ENV STORE."""
    return start_app()
