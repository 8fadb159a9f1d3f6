"""Reuse across runs (``run(..., reuse=True)`` with ``--pycontain-reuse``), as users run it:
pytest sessions in a row, in subprocesses, on each backend (native, Docker, Podman); the same
container (the same PID 1, its files and its published port) comes back, and only while the
request is the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import Backend

REUSED_TEST = """
import os
import time
import urllib.request

import pytest
from pytest_pycontain import wait


@pytest.mark.parametrize("n", range(int(os.environ.get("COPIES", "1"))))
def test_reused(pycontain, n):
    db = pycontain.run("busybox", name="db", ports=[8080], reuse=True,
                       env={"FLAVOUR": os.environ.get("FLAVOUR", "plain")},
                       command=["sh", "-c", "mkdir -p /www && echo up > /www/ok && "
                                "exec httpd -f -p 8080 -h /www"],
                       wait=wait.http(8080, "/ok"))
    runs = db.exec("echo x >> /tmp/runs; wc -l < /tmp/runs").output.strip()
    pid1 = db.exec("cut -d' ' -f22 /proc/1/stat").output.strip()  # PID 1's start time
    host, port = db.address(8080)
    assert urllib.request.urlopen(f"http://{host}:{port}/ok", timeout=10).read() == b"up\\n"
    with open("runs.txt", "a") as out:
        out.write(f"{db.id} {runs} {pid1} {port}\\n")
    if os.environ.get("KILL_ME"):
        os.kill(os.getpid(), 9)


def test_same_name_twice(pycontain):
    pycontain.run("busybox", name="twice", command="sleep 600", reuse=True)
    pycontain.run("busybox", name="twice", command="sleep 601", reuse=True)


def test_kept_data(pycontain):
    db = pycontain.run("busybox", name="vol", reuse=True, volumes={"data": "/data"},
                       env={"FLAVOUR": os.environ.get("FLAVOUR", "plain")},
                       command=["sleep", "3600"])
    runs = db.exec("echo x >> /data/runs; wc -l < /data/runs").output.strip()
    with open("runs.txt", "a") as out:
        out.write(f"{db.id} {runs} -\\n")


def _serving(who):
    return ["sh", "-c", f"mkdir -p /www && echo {who} > /www/who && "
            "exec httpd -f -p 80 -h /www"]


def test_pair(pycontain):
    net = pycontain.network("n")
    db = pycontain.run("busybox", name="db", network=net, reuse=True, aliases=["database"],
                       env={"FLAVOUR": os.environ.get("FLAVOUR", "plain")},
                       command=_serving("db"), wait=wait.port(80))
    web = pycontain.run("busybox", name="web", network=net, reuse=True,
                        command=_serving("web"), wait=wait.port(80))
    fresh = pycontain.run("busybox", network=net, command=["sleep", "600"])
    for asker, name, who in ((web, "database", "db"), (db, "web", "web"),
                             (fresh, "db", "db"), (fresh, "web", "web")):
        assert ask(asker, name) == who, (asker.name, name)
    with open("runs.txt", "a") as out:
        out.write(f"{db.id} {web.id} -\\n")
    if os.environ.get("KILL_ME"):
        os.kill(os.getpid(), 9)


def ask(asker, name):
    # what name's httpd says, found through the network's DNS (busybox's static wget
    # cannot resolve names); a few tries, while a service just started binds its port
    for _ in range(50):
        got = asker.exec(f"printf 'GET /who HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc -w 5 "
                         f"$(nslookup {name} | sed -n 's/^Address: //p' | head -1) 80 | "
                         "tail -1").output.strip()
        if got:
            return got
        time.sleep(0.1)
    return got


def test_compose_pair(pycontain):
    stack = pycontain.compose("compose.yaml", reuse=True)
    db, web = stack.service("db"), stack.service("web")
    assert (ask(web, "db"), ask(db, "web"), ask(web, "database")) == ("db", "web", "db")
    runs = db.exec("echo x >> /data/runs; wc -l < /data/runs").output.strip()
    with open("runs.txt", "a") as out:
        out.write(f"{db.id} {web.id} {runs}\\n")


@pytest.mark.parametrize("seconds", ["600", "601"])
def test_claimed(pycontain, seconds):
    with open(f"worker-{seconds}.txt", "w") as out:
        out.write(os.environ.get("PYTEST_XDIST_WORKER", "-"))
    pycontain.run("busybox", name="claimed", reuse=True,
                  command=["sleep", seconds])
"""


@pytest.fixture(autouse=True)
def reuse_tidy(backend: Backend, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Iterator[None]:
    """Each test starts without the opt-in, and what it left kept for reuse goes after it."""
    for name in ("PYCONTAIN_REUSE", "FLAVOUR", "KILL_ME", "COPIES"):
        monkeypatch.delenv(name, raising=False)
    if backend.name == "native":  # a state directory of its own: prune --reused takes
        # every reused container there, and other sessions may be reusing theirs meanwhile
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        monkeypatch.setenv("PYCONTAIN_STATE_DIR", str(state))
    before = backend.reused()
    yield
    if set(backend.reused()) - set(before):
        backend.prune_reused()


def runs(pytester: pytest.Pytester) -> list[list[str]]:
    """Each run's line: container id, how many runs it has seen, its PID 1's start time."""
    lines = (pytester.path / "runs.txt").read_text().splitlines()
    return [line.split() for line in lines]


def test_reuse_across_runs(pytester: pytest.Pytester, backend: Backend,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(REUSED_TEST)
    before = set(backend.reused())

    def session(*args: str) -> Any:
        return pytester.runpytest_subprocess(*backend.args, "-k", "reused", *args)

    session("--pycontain-reuse").assert_outcomes(passed=1)
    monkeypatch.setenv("PYCONTAIN_REUSE", "1")  # the other spelling of the opt-in
    session().assert_outcomes(passed=1)
    first, second = runs(pytester)
    assert first[0] == second[0] and (first[1], second[1]) == ("1", "2")
    assert first[2] == second[2]  # the same PID 1, still running
    assert first[3] == second[3]  # its port published on the same host port
    reused = [c for c in backend.reused() if c not in before]
    assert reused == [first[0]]

    monkeypatch.delenv("PYCONTAIN_REUSE")  # without the opt-in: a fresh one, removed after
    session().assert_outcomes(passed=1)
    fresh = runs(pytester)[-1]
    assert fresh[0] != first[0] and fresh[1] == "1"
    assert [c for c in backend.reused() if c not in before] == [first[0]]  # left alone

    monkeypatch.setenv("PYCONTAIN_REUSE", "1")
    monkeypatch.setenv("KILL_ME", "1")  # pytest killed between runs: found again
    assert session().ret == -9
    monkeypatch.delenv("KILL_ME")
    session().assert_outcomes(passed=1)
    assert [line[:2] for line in runs(pytester)[-2:]] == [[first[0], "3"], [first[0], "4"]]

    monkeypatch.setenv("FLAVOUR", "changed")  # a changed request: a new one, the old gone
    session().assert_outcomes(passed=1)
    changed = runs(pytester)[-1]
    assert changed[0] != first[0] and changed[1] == "1"
    assert [c for c in backend.reused() if c not in before] == [changed[0]]

    backend.prune_reused()
    assert [c for c in backend.reused() if c not in before] == []


def test_xdist_workers_share_one(pytester: pytest.Pytester, backend: Backend,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(REUSED_TEST)
    before = set(backend.reused())
    monkeypatch.setenv("COPIES", "4")
    result = pytester.runpytest_subprocess(*backend.args, "-k", "reused", "-n", "2",
                                           "--pycontain-reuse")
    result.assert_outcomes(passed=4)
    ids = {line[0] for line in runs(pytester)}
    assert len(ids) == 1
    assert [c for c in backend.reused() if c not in before] == list(ids)
    backend.prune_reused()
    assert [c for c in backend.reused() if c not in before] == []


def test_one_name_for_two_requests_is_an_error_naming_both(pytester: pytest.Pytester,
                                                          backend: Backend) -> None:
    path = pytester.makepyfile(REUSED_TEST)
    result = pytester.runpytest_subprocess(*backend.args, "-k", "same_name_twice",
                                           "--pycontain-reuse")
    result.assert_outcomes(failed=1)
    lines = path.read_text().splitlines()
    first = 1 + next(i for i, line in enumerate(lines) if "sleep 600" in line)
    result.stdout.fnmatch_lines([f"*ConfigError: reuse=True: two different requests under the "
                                 f"name 'twice' in one run: *{path.name}:{first} and "
                                 f"*{path.name}:{first + 1};*"])


def test_one_name_for_two_requests_across_xdist_workers_is_an_error_naming_both(
        pytester: pytest.Pytester, backend: Backend) -> None:
    pytest.importorskip("xdist")
    path = pytester.makepyfile(REUSED_TEST)
    before = set(backend.reused())
    result = pytester.runpytest_subprocess(*backend.args, "-k", "claimed", "-n", "2",
                                           "--pycontain-reuse")
    result.assert_outcomes(passed=1, failed=1)
    workers = {(pytester.path / f"worker-{s}.txt").read_text() for s in ("600", "601")}
    assert len(workers) == 2 and "-" not in workers  # one request in each worker
    line = 1 + next(i for i, text in enumerate(path.read_text().splitlines())
                    if "name=\"claimed\"" in text)
    result.stdout.fnmatch_lines([f"*ConfigError: reuse=True: two different requests under the "
                                 f"name 'claimed' in one run: *{path.name}:{line} and "
                                 f"*{path.name}:{line};*"])
    # the next run is another run: its request takes the name (the old one replaced)
    again = pytester.runpytest_subprocess(*backend.args, "-k", "claimed and 601",
                                          "--pycontain-reuse")
    again.assert_outcomes(passed=1)
    assert len([c for c in backend.reused() if c not in before]) == 1


def test_a_reused_container_keeps_its_named_volumes(pytester: pytest.Pytester,
                                                    backend: Backend,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(REUSED_TEST)
    before, volumes = set(backend.reused()), set(backend.volumes())

    def session(*args: str) -> Any:
        result = pytester.runpytest_subprocess(*backend.args, "-k", "kept_data", *args)
        result.assert_outcomes(passed=1)
        return runs(pytester)[-1], sorted(set(backend.volumes()) - volumes)

    first, kept = session("--pycontain-reuse")
    assert len(kept) == 1  # outlived the run's teardown, with the container
    second, still = session("--pycontain-reuse")
    assert second[:2] == [first[0], "2"] and still == kept  # what the last run wrote
    plain, unchanged = session()  # without the opt-in: a volume of the run, removed after
    assert plain[0] != first[0] and plain[1] == "1" and unchanged == kept
    monkeypatch.setenv("FLAVOUR", "changed")  # a changed request: the old one goes with its
    changed, replaced = session("--pycontain-reuse")  # volume, the new one starts empty
    assert changed[0] != first[0] and changed[1] == "1"
    assert len(replaced) == 1 and replaced != kept
    backend.prune_reused()
    assert [c for c in backend.reused() if c not in before] == []
    assert sorted(set(backend.volumes()) - volumes) == []


def test_reused_containers_keep_their_network_and_resolve_each_other(
        pytester: pytest.Pytester, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(REUSED_TEST)
    before, networks = set(backend.reused()), set(backend.networks())

    def session(*args: str) -> list[str]:
        pytester.runpytest_subprocess(*backend.args, "-k", "test_pair", *args).assert_outcomes(
            passed=1)
        return runs(pytester)[-1][:2]

    first = session("--pycontain-reuse")
    assert session("--pycontain-reuse") == first  # both found again, names resolve
    kept = sorted(set(backend.networks()) - networks)  # Docker: the network kept for them
    assert len(kept) == (0 if backend.name == "native" else 1)  # (native: their keepers hold
    # the run's that they were made on); the runs' own are gone
    monkeypatch.setenv("KILL_ME", "1")  # killed while they were on its network: the next
    assert pytester.runpytest_subprocess(*backend.args, "-k", "test_pair",  # run's reaper
                                         "--pycontain-reuse").ret == -9  # lets go of them
    monkeypatch.delenv("KILL_ME")  # and removes that network
    assert session("--pycontain-reuse") == first
    assert sorted(set(backend.networks()) - networks) == kept
    monkeypatch.setenv("FLAVOUR", "changed")  # one changed: made again, on the kept network
    db, web = session("--pycontain-reuse")
    assert db != first[0] and web == first[1]
    assert sorted(set(backend.networks()) - networks) == kept
    assert sorted(c for c in backend.reused() if c not in before) == sorted([db, web])
    backend.prune_reused()
    assert [c for c in backend.reused() if c not in before] == []
    assert sorted(set(backend.networks()) - networks) == []


COMPOSE = """
services:
  db:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo db > /www/who && exec httpd -f -p 80 -h /www"]
    environment:
      FLAVOUR: ${FLAVOUR:-plain}
    volumes: ["data:/data"]
    networks:
      default:
        aliases: [database]
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo web > /www/who && exec httpd -f -p 80 -h /www"]
    depends_on: [db]
volumes:
  data: {}
"""


def test_a_compose_stack_is_reused_service_by_service(
        pytester: pytest.Pytester, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(REUSED_TEST)
    pytester.path.joinpath("compose.yaml").write_text(COMPOSE)
    before, networks = set(backend.reused()), set(backend.networks())
    volumes = set(backend.volumes())

    def session(*args: str) -> list[str]:
        pytester.runpytest_subprocess(*backend.args, "-k", "compose_pair", *args).assert_outcomes(
            passed=1)
        return runs(pytester)[-1]

    first = session("--pycontain-reuse")
    assert first[2] == "1"
    assert session("--pycontain-reuse") == [*first[:2], "2"]  # the whole stack found again
    plain = session()  # without the opt-in: a stack of the run, removed after
    assert plain[:2] != first[:2] and plain[2] == "1"
    monkeypatch.setenv("FLAVOUR", "changed")  # one service changed: it alone is made again
    db, web, seen = session("--pycontain-reuse")
    assert db != first[0] and web == first[1] and seen == "1"
    assert sorted(c for c in backend.reused() if c not in before) == sorted([db, web])
    assert len(set(backend.volumes()) - volumes) == 1  # the new db's; the old one's went
    backend.prune_reused()
    assert [c for c in backend.reused() if c not in before] == []
    assert sorted(set(backend.networks()) - networks) == []
    assert sorted(set(backend.volumes()) - volumes) == []


def test_without_the_opt_in_reuse_is_a_normal_container(pytester: pytest.Pytester,
                                                        backend: Backend) -> None:
    pytester.makepyfile(REUSED_TEST)
    before = set(backend.reused())
    result = pytester.runpytest_subprocess(*backend.args, "-k", "same_name_twice")
    result.assert_outcomes(passed=1)  # no opt-in: two plain containers, no conflict
    assert set(backend.reused()) == before


def test_the_container_fixture_is_reused_where_the_project_asks(
        pytester: pytest.Pytester, backend: Backend) -> None:
    pytester.makefile("", Dockerfile="FROM busybox\nCMD [\"sleep\", \"3600\"]\n")
    pytester.makepyprojecttoml('[tool.pycontain]\ndockerfile = "Dockerfile"\nreuse = true\n')
    pytester.makepyfile("""
        def test_it(container):
            runs = container.exec("echo x >> /tmp/runs; wc -l < /tmp/runs").output.split()[0]
            with open("runs.txt", "a") as out:
                out.write(f"{container.id} {runs} -\\n")
    """)
    before = set(backend.reused())
    for opt_in in (("--pycontain-reuse",), ("--pycontain-reuse",), ()):
        pytester.runpytest_subprocess(*backend.args, *opt_in).assert_outcomes(passed=1)
    first, second, plain = runs(pytester)
    assert first[0] == second[0] and (first[1], second[1]) == ("1", "2")
    assert plain[0] != first[0] and plain[1] == "1"
    assert [c for c in backend.reused() if c not in before] == [first[0]]

