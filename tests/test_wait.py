"""Wait strategies' own logic: polling, giving up at once on exit, the evidence on failure.

These drive a small scripted stand-in for a container (the strategies are the subject here);
the engine contract tests run the same waits against real containers.
"""

from __future__ import annotations

import dataclasses
import http.server
import threading

import pytest

from pytest_pycontain import wait
from pytest_pycontain.engine import ExecResult
from pytest_pycontain.errors import ContainerError, NotSupported, WaitTimeout


@dataclasses.dataclass
class Scripted:
    """Answers as a container would; ``ready_after`` polls before its port/log appear."""

    ready_after: int = 2
    exit_after: int | None = None
    name: str = "svc"
    health: str | None = None
    published: int | None = None
    polls: int = 0
    spec: None = None  # no run request, as for a container found again from another run

    @property
    def status(self) -> str:
        self.polls += 1
        if self.exit_after is not None and self.polls > self.exit_after:
            return "exited"
        return "running"

    @property
    def exit_code(self) -> int | None:
        return 3 if self.status == "exited" else None

    def probe_port(self, port: int) -> bool:
        return port == 6379 and self.polls > self.ready_after

    def logs(self) -> str:
        return "booting\n" + ("Ready to accept connections\n" if self.polls > self.ready_after
                              else "")

    def exec(self, cmd, timeout=None) -> ExecResult:
        code = 0 if self.polls > self.ready_after else 1
        return ExecResult(code, "", "", "")

    def address(self, port: int) -> tuple[str, int]:
        if self.published is None:
            raise NotSupported("no published port")
        return "127.0.0.1", self.published


@pytest.mark.parametrize("strategy", [
    wait.port(6379), wait.log(r"^Ready to accept"), wait.command("redis-cli ping"),
    wait.all(wait.port(6379), wait.log("Ready")),
])
def test_waits_until_ready(strategy: wait.Wait) -> None:
    box = Scripted()
    wait.until_ready(box, strategy, default_timeout=10, interval=0.001)
    assert box.polls > box.ready_after


def test_exited_container_fails_at_once_with_evidence() -> None:
    box = Scripted(ready_after=10**9, exit_after=2)
    with pytest.raises(ContainerError) as info:
        wait.until_ready(box, wait.port(6379), default_timeout=3600, interval=0.001)
    message = str(info.value)
    assert "wait.port(6379): container svc exited with status 3" in message
    assert "booting" in message and info.value.exit_code == 3


def test_timeout_names_the_wait_and_the_time() -> None:
    box = Scripted(ready_after=10**9)
    with pytest.raises(WaitTimeout) as info:
        wait.until_ready(box, wait.log("never", timeout=0.05), interval=0.001)
    assert "wait.log('never'): container svc not ready after 0." in str(info.value)
    assert "timeout 0.05s; status running" in str(info.value)
    assert "booting" in str(info.value)


def test_healthcheck_needs_a_healthcheck() -> None:
    with pytest.raises(ContainerError, match="has no HEALTHCHECK"):
        wait.until_ready(Scripted(), wait.healthcheck(), default_timeout=1)
    wait.until_ready(Scripted(health="healthy"), wait.healthcheck(), default_timeout=1)


def test_http_through_the_published_port() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        box = Scripted(published=server.server_address[1])
        wait.until_ready(box, wait.http(8080, "/health"), default_timeout=5)
        wait.until_ready(box, wait.http(8080, "/nope", status=404), default_timeout=5)
        with pytest.raises(WaitTimeout, match=r"wait.http\(8080, '/nope', status=200\)"):
            wait.until_ready(box, wait.http(8080, "/nope", timeout=0.1), default_timeout=5)
        port = server.server_address[1]
        with pytest.raises(WaitTimeout) as info:  # what it saw last, in the message
            wait.until_ready(box, wait.http(8080, "/nope", timeout=0.1), default_timeout=5)
        assert str(info.value).splitlines()[0].endswith(
            f"; last seen: HTTP 404 from http://127.0.0.1:{port}/nope")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(WaitTimeout) as info:  # nothing listens any more
        wait.until_ready(box, wait.all(wait.http(8080, "/health"), timeout=0.1), default_timeout=5)
    assert (f"last seen: wait.http(8080, '/health', status=200): ConnectionRefusedError: "
            f"[Errno 111] Connection refused from http://127.0.0.1:{port}/health") \
        in str(info.value)


def test_bad_regex_is_refused_when_written() -> None:
    with pytest.raises(Exception, match="unterminated"):
        wait.log("(unclosed")
