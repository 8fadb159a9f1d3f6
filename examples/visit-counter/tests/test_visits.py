"""A service and its data store talking by name on a network.

The store runs for the whole session (`pycontain_session`), each test gets its own app
(`pycontain`); see conftest.py. The test process talks HTTP to the app's published port; the
app talks to the store by name over the private network.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

from pytest_pycontain import wait


def visit(app, page: str) -> tuple[int, str]:
    """GET /cgi-bin/visit?page=PAGE from the app: (status, body)."""
    host, port = app.address(8080)
    url = f"http://{host}:{port}/cgi-bin/visit?page={page}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def a_page() -> str:
    """A page name no other test uses: the store is shared by the whole session."""
    return f"page-{uuid.uuid4().hex[:8]}"


def test_counts_visits(app):
    page = a_page()
    assert visit(app, page) == (200, f"{page} has been visited 1 times\n")
    assert visit(app, page) == (200, f"{page} has been visited 2 times\n")


def test_the_count_lives_in_the_store(app, store):
    """The app keeps no state of its own: the store has the count (`exec` looks inside it)."""
    page = a_page()
    visit(app, page)
    assert store.exec(f"cat /data/visits.{page}").output == "1\n"


def test_two_apps_share_one_store(start_app):
    """Scale out: a second instance sees the first one's visits."""
    first, second = start_app(), start_app()
    page = a_page()
    visit(first, page)
    assert visit(second, page) == (200, f"{page} has been visited 2 times\n")
    assert first.ip != second.ip


def test_the_store_answers_to_its_alias_too(start_app):
    """`aliases=["kv"]` gives the store a second name on the network."""
    app = start_app(STORE="kv:6379")
    assert visit(app, a_page())[0] == 200


def test_a_store_that_is_not_there_is_a_503(start_app):
    """The failure path: a wrong name does not resolve, and the app says so instead of hanging."""
    app = start_app(STORE="nowhere:6379")
    assert visit(app, a_page()) == (503, "store unavailable\n")
    wait.until_ready(app, wait.log("visit: store nowhere:6379 did not answer", timeout=10))
