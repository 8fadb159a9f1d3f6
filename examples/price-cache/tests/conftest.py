"""A fresh stack per test: network faults are per test, so nothing is shared between tests."""

from __future__ import annotations

import pytest

from pytest_pycontain import wait


@pytest.fixture
def network(pycontain):
    return pycontain.network()


@pytest.fixture
def pricing(pycontain, network):
    """The upstream pricing service (pricing/Dockerfile), found on the network as `pricing`."""
    return pycontain.run(pycontain.build("pricing"), name="pricing", network=network,
                         wait=wait.port(7000))


@pytest.fixture
def shop(pycontain, network, pricing):
    """The shop front (./Dockerfile), published on 127.0.0.1 for the test process."""
    return pycontain.run(pycontain.build("."), name="shop", network=network, ports=[8080],
                         wait=wait.http(8080, "/cgi-bin/health"))
