"""A web service tested over HTTP from the test process.

The `container` fixture builds ./Dockerfile (configured in pyproject.toml) once per session and
starts a fresh container for each test. `ports=[8080]` publishes the port on 127.0.0.1,
`container.address(8080)` says where, and `wait.http` holds the test back until the service
answers its health check.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from pytest_pycontain import wait

# Every test in this module gets the service with its port published and ready to answer.
pytestmark = pytest.mark.pycontain(ports=[8080], wait=wait.http(8080, "/cgi-bin/health"))


def get(container, path: str) -> tuple[int, str]:
    """GET ``path`` from the container's published port: (status, body)."""
    host, port = container.address(8080)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_greets_by_name(container):
    assert get(container, "/cgi-bin/greet?name=Ada") == (200, "Hello, Ada!\n")


def test_serves_its_home_page(container):
    status, body = get(container, "/")
    assert status == 200
    assert "/cgi-bin/greet?name=Ada" in body


def test_a_missing_name_is_a_client_error(container):
    assert get(container, "/cgi-bin/greet") == (400, "name= is missing\n")


def test_an_unknown_path_is_not_found(container):
    assert get(container, "/nowhere")[0] == 404


@pytest.mark.pycontain(env={"GREETING": "Bonjour"})
def test_the_greeting_is_configured_by_the_environment(container):
    """Markers merge per key: the module's ports and wait, this test's environment."""
    assert get(container, "/cgi-bin/greet?name=Ada") == (200, "Bonjour, Ada!\n")


def test_the_access_log_names_each_request(container):
    """What the service writes goes to the container's log (and into a failed test's report).

    The log is collected as it comes, so wait for the line rather than read it at once.
    """
    get(container, "/cgi-bin/greet?name=Grace")
    wait.until_ready(container, wait.log("greet: greeted Grace", timeout=10))
    assert container.logs().count("greet: greeted Grace") == 1
