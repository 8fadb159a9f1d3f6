"""The fixtures as users run them: pytester sessions on each backend.

Every test that is not about one engine runs twice: on the native engine and on the Docker
backend against the test session's private dockerd, so the two cannot drift. Each inner session
builds the project's Dockerfile (busybox from the test registry), runs containers, and must
leave nothing behind.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from backends import NEEDS_ROOT, Backend, DockerBackend

from pytest_pycontain.config import Settings
from pytest_pycontain.docker import DockerEngine

WEB_DOCKERFILE = """\
FROM busybox
RUN mkdir -p /www && echo hello > /www/index.html
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile("", Dockerfile=WEB_DOCKERFILE)
    pytester.makepyprojecttoml('[tool.pycontain]\ndockerfile = "Dockerfile"\n')
    return pytester


def run(pytester: pytest.Pytester, backend: Backend, *args: str) -> Any:
    """An inner session on ``backend``, whose report header must say so."""
    result = pytester.runpytest(*backend.args, *args)
    result.stdout.fnmatch_lines([f"pycontain: engine {backend.name} (requested*"])
    return result


def test_container_from_the_dockerfile_with_ports_and_wait(project: pytest.Pytester,
                                                           backend: Backend) -> None:
    project.makepyfile("""
        import urllib.request
        import pytest
        from pytest_pycontain import wait

        @pytest.mark.pycontain(ports=[8080], wait=wait.http(8080))
        def test_home(container):
            host, port = container.address(8080)
            assert urllib.request.urlopen(f"http://{host}:{port}/").read() == b"hello\\n"
            reply = container.exec(r"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080")
            assert reply.output.startswith("HTTP/1.") and reply.output.endswith("\\nhello\\n")
            assert container.ip and container.status == "running"
            assert container.image.config["ExposedPorts"] == {"8080/tcp": {}}
    """)
    run(project, backend).assert_outcomes(passed=1)
    backend.assert_no_leftovers()


def test_function_scope_is_fresh_and_module_scope_shares(project: pytest.Pytester,
                                                         backend: Backend) -> None:
    project.makepyfile(test_fresh="""
        seen = []

        def test_one(container):
            seen.append(container.id)
            container.exec("touch /tmp/mark")

        def test_two(container):
            assert container.id not in seen
            assert container.exec("test -e /tmp/mark").exit_code == 1
    """, test_shared="""
        import pytest
        pytestmark = pytest.mark.pycontain(scope="module")
        seen = []

        def test_one(container):
            seen.append(container.id)
            container.exec("touch /tmp/mark")

        def test_two(container):
            assert seen == [container.id]
            assert container.exec("test -e /tmp/mark").exit_code == 0
    """)
    run(project, backend).assert_outcomes(passed=4)
    backend.assert_no_leftovers()


def test_session_scope_from_the_command_line(project: pytest.Pytester, backend: Backend) -> None:
    project.makepyfile(test_a="""
        import ids
        def test_a(container):
            ids.seen.add(container.id)
    """, test_b="""
        import ids
        def test_b(container):
            ids.seen.add(container.id)
            assert len(ids.seen) == 1
    """, ids="seen = set()\n")
    run(project, backend, "--pycontain-scope=session", "-p", "no:randomly"
        ).assert_outcomes(passed=2)
    backend.assert_no_leftovers()


def test_image_option_replaces_the_dockerfile_and_a_marker_wins(
        project: pytest.Pytester, backend: Backend) -> None:
    project.makepyfile("""
        import pytest

        def test_from_option(container):
            assert container.exec("cat /etc/os-release").output.startswith("PRETTY_NAME=\\"Debian")

        @pytest.mark.pycontain(dockerfile="Dockerfile")
        def test_marker_dockerfile(container):
            assert container.exec("cat /www/index.html").output == "hello\\n"
    """)
    project.makefile("", Dockerfile_debian="FROM debian:bookworm\nCMD [\"sleep\", \"3600\"]\n")
    run(project, backend, "--pycontain-dockerfile=Dockerfile_debian").assert_outcomes(passed=2)


def test_marker_env_and_the_failed_test_report(project: pytest.Pytester,
                                               backend: Backend) -> None:
    project.makefile("", Dockerfile="FROM busybox\nCMD [\"sh\", \"-c\", "
                                    "\"echo started as $ROLE; exec sleep 3600\"]\n")
    project.makepyfile("""
        import pytest

        @pytest.mark.pycontain(env={"ROLE": "primary"})
        def test_fails(container):
            assert container.exec("echo $ROLE").output == "replica\\n"
    """)
    result = run(project, backend)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- pycontain log: pycontain-* -*", "started as primary"])
    backend.assert_no_leftovers()


def test_a_failed_test_reports_session_containers_too(project: pytest.Pytester,
                                                      backend: Backend) -> None:
    """A session fixture's container (made through ``pycontain_session``) is often where the
    evidence is; its log goes in the report of a failed test that used it, and two containers
    of one name get a section each."""
    project.makefile("", Dockerfile="FROM busybox\nCMD [\"sh\", \"-c\", "
                                    "\"echo I am $ROLE; exec sleep 3600\"]\n")
    project.makepyfile("""
        import pytest
        from pytest_pycontain import wait

        @pytest.fixture(scope="session")
        def db(pycontain_session):
            image = pycontain_session.build(".")
            return pycontain_session.run(image, name="db", env={"ROLE": "the session db"},
                                         wait=wait.log("I am"))

        def test_fails(db, pycontain):
            image = pycontain.build(".")
            pycontain.run(image, name="db", env={"ROLE": "the test's db"}, wait=wait.log("I am"))
            assert False

        def test_passes_without_it(pycontain):
            pass
    """)
    result = run(project, backend)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    sections = re.findall(r"-+ (pycontain log: db.*?) -+\n(.*?)\n", out)
    assert sorted(body for _, body in sections) == ["I am the session db", "I am the test's db"]
    assert len({title for title, _ in sections}) == 2, sections
    backend.assert_no_leftovers()

def test_volumes_per_scope(project: pytest.Pytester, backend: Backend) -> None:
    """A session fixture's volume carries one test's data to the next (by the Volume or by
    its name); a test's own volume goes with the test, so the next one of that name is new;
    nothing is left after the session."""
    project.makefile("", Dockerfile="FROM busybox\nCMD [\"sleep\", \"3600\"]\n")
    project.makepyfile("""
        import pytest

        @pytest.fixture(scope="session")
        def shared(pycontain_session):
            return pycontain_session.volume("plugin-shared")

        def test_writes(pycontain, shared):
            box = pycontain.run(pycontain.build("."), volumes={shared: "/data"})
            assert box.exec("echo from the first test > /data/note").exit_code == 0
            own = pycontain.run(pycontain.build("."), volumes=["per-test:/own"])
            assert own.exec("touch /own/mark").exit_code == 0
            assert pycontain.volume("per-test") is pycontain.engine.find_volume("per-test")

        def test_reads(pycontain, shared):
            box = pycontain.run(pycontain.build("."), volumes=["plugin-shared:/data:ro"])
            assert box.exec("cat /data/note").output == "from the first test\\n"
            assert pycontain.engine.find_volume("plugin-shared") is shared
            assert pycontain.engine.find_volume("per-test") is None
            again = pycontain.run(pycontain.build("."), volumes={"per-test": "/own"})
            assert again.exec("ls -A /own").output == ""
    """)
    run(project, backend).assert_outcomes(passed=2)
    if backend.name == "native":
        volumes = Path(os.environ["PYCONTAIN_STATE_DIR"]) / "volumes"
        assert not [*volumes.glob("plugin-shared-*"), *volumes.glob("per-test-*")]
    backend.assert_no_leftovers()

def test_marker_and_factory_privilege_options(project: pytest.Pytester,
                                              backend: Backend) -> None:
    project.makefile("", Dockerfile="FROM busybox\nCMD [\"sleep\", \"3600\"]\n")
    project.makepyfile("""
        import pytest

        @pytest.mark.pycontain(cap_add=["NET_ADMIN"], cap_drop=["CAP_MKNOD"],
                               sysctls={"net.ipv4.ip_unprivileged_port_start": "99"})
        def test_marker(container):
            result = container.exec("ip link add probe0 type bridge && "
                                    "cat /proc/sys/net/ipv4/ip_unprivileged_port_start && "
                                    "grep CapEff /proc/self/status")
            assert result.output.split()[-3:] == ["99", "CapEff:", "00000000a00435fb"]

        def test_factory(pycontain):
            box = pycontain.run("busybox", command="sleep 3600",
                                security_opt=["no-new-privileges"])
            assert "NoNewPrivs:\t1" in box.exec("cat /proc/self/status").output

        @pytest.mark.pycontain(cap_add=["FLY"])
        def test_bad(container):
            pass
    """)
    result = run(project, backend)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.pycontain: cap_add: unknown capability 'FLY'*"])
    backend.assert_no_leftovers()


def test_pycontain_factory_network_names_and_session_factory(
        pytester: pytest.Pytester, backend: Backend) -> None:
    pytester.makepyfile("""
        import pytest
        from pytest_pycontain import wait

        @pytest.fixture(scope="session")
        def cache(pycontain_session):
            net = pycontain_session.network("backend")
            server = pycontain_session.run(
                "busybox", name="cache", network=net, aliases=["redis"],
                command="while true; do echo PONG | nc -l -p 6379; done", wait=wait.port(6379))
            return net, server

        def test_by_name(pycontain, cache):
            net, server = cache
            assert net.name == "backend" and server.name == "cache"
            app = pycontain.run("busybox", name="app", network=net, command=["sleep", "100"])
            assert app.exec("nc redis 6379 </dev/null").output.strip() == "PONG"
            assert app.exec("nslookup cache").exit_code == 0
            # no internet here: Docker's DNS forwards unknown names to an upstream that never
            # answers, so a short timeout keeps that case quick
            assert app.exec("nslookup -timeout=1 -retry=1 nowhere").exit_code != 0
            assert server.ip != app.ip and server.ip.startswith(net.subnet.rsplit(".", 1)[0])

        def test_session_container_survives(cache):
            assert cache[1].status == "running"
    """)
    run(pytester, backend).assert_outcomes(passed=2)
    backend.assert_no_leftovers()


def test_wait_on_an_exited_container_fails_fast(pytester: pytest.Pytester,
                                                backend: Backend) -> None:
    pytester.makepyfile("""
        from pytest_pycontain import wait

        def test_crash(pycontain):
            pycontain.run("busybox", command="echo boom >&2; exit 3",
                          wait=wait.port(80, timeout=600))
    """)
    result = run(pytester, backend)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ContainerError: wait.port(80): container * exited with "
                                 "status 3*", "*boom*"])
    backend.assert_no_leftovers()


def test_no_image_configured_is_a_clear_error(pytester: pytest.Pytester,
                                              backend: Backend) -> None:
    pytester.makepyfile("def test_x(container):\n    pass\n")
    result = run(pytester, backend)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the `container` fixture needs an image: set dockerfile in "
                                 "[[]tool.pycontain[]] or pass --pycontain-image*"])


def test_unknown_marker_key(project: pytest.Pytester, backend: Backend) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.pycontain(imgae="busybox")
        def test_x(container):
            pass
    """)
    result = run(project, backend)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.pycontain has unknown key(s) imgae*"])


def test_broken_dockerfile_errors_its_tests_and_the_others_run(
        pytester: pytest.Pytester, backend: Backend) -> None:
    pytester.makefile("", Dockerfile="FROM busybox\nRUN echo building; exit 7\n")
    pytester.makepyprojecttoml('[tool.pycontain]\ndockerfile = "Dockerfile"\n')
    pytester.makepyfile("""
        def test_needs_it(container):
            pass

        def test_needs_it_too(container):
            pass

        def test_plain():
            pass
    """)
    result = run(pytester, backend)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*Dockerfile:2*exit*7*"])
    backend.assert_no_leftovers()


def test_build_with_a_secret_and_a_cache_mount(pytester: pytest.Pytester,
                                               backend: Backend) -> None:
    pytester.makefile("", Dockerfile=(
        "FROM busybox\n"
        "RUN --mount=type=secret,id=token --mount=type=cache,target=/cache \\\n"
        "    wc -c < /run/secrets/token > /len && touch /cache/used\n"))
    (pytester.path / "secrets").mkdir()
    (pytester.path / "secrets" / "token").write_text("abc")
    pytester.makepyfile("""
        def test_built(pycontain):
            image = pycontain.build(".", secrets={"token": "secrets/token"})
            c = pycontain.run(image, command=["cat", "/len"])
            assert c.wait() == 0
            assert c.logs().strip() == "3"
    """)
    result = run(pytester, backend)
    result.assert_outcomes(passed=1)
    backend.assert_no_leftovers()


KEPT_TEST = """
    def test_fails(pycontain):
        c = pycontain.run("busybox", name="kept-one", command=["sleep", "3600"]{network})
        c.exec("echo evidence > /tmp/clue")
        assert False
"""


@NEEDS_ROOT
def test_keep_failed_keeps_and_says_how_to_enter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(KEPT_TEST.format(network=""))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pycontain-keep=failed",
                                           "--pycontain-backend=native")
    result.assert_outcomes(failed=1)
    # the venv need not be on PATH: the commands are printed so that they run as printed
    result.stdout.fnmatch_lines(["*pycontain: kept containers*",
                                 "kept kept-one (*): enter with `*pycontain exec * sh`, remove "
                                 "with `*pycontain rm *`"])
    line = next(x for x in result.stdout.lines if x.startswith("kept kept-one"))
    container_id = line.split("pycontain rm ")[1].rstrip("`")
    enter, remove = (shlex.split(part) for part in re.findall(r"`([^`]*)`", line))
    assert enter[-3:] == ["exec", container_id, "sh"] and remove[-2:] == ["rm", container_id]
    out = subprocess.run([*enter[:-1], "cat", "/tmp/clue"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert out.stdout == "evidence\n", out.stderr
    cli = [sys.executable, "-m", "pytest_pycontain.cli"]
    listing = subprocess.run([*cli, "ps"], capture_output=True, text=True, timeout=60).stdout
    assert container_id[:12] in listing and "kept" in listing
    subprocess.run(remove, check=True, timeout=60, capture_output=True,
                   env={**os.environ, "PATH": "/usr/bin:/bin"})
    listing = subprocess.run([*cli, "ps"], capture_output=True, text=True, timeout=60).stdout
    assert container_id[:12] not in listing


@NEEDS_ROOT
def test_keep_failed_under_xdist_says_how_to_enter_on_the_controller(
        pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(KEPT_TEST.format(network=""))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pycontain-keep=failed",
                                           "--pycontain-backend=native", "-n", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pycontain: kept containers*",
                                 "kept kept-one (*): enter with `*pycontain exec * sh`, remove "
                                 "with `*pycontain rm *`"])
    line = next(x for x in result.stdout.lines if x.startswith("kept kept-one"))
    enter, remove = (shlex.split(part) for part in re.findall(r"`([^`]*)`", line))
    try:
        out = subprocess.run([*enter[:-1], "cat", "/tmp/clue"], capture_output=True,
                             text=True, timeout=60)
        assert out.stdout == "evidence\n", out.stderr
    finally:
        subprocess.run(remove, check=True, timeout=60, capture_output=True)
    Backend().assert_no_leftovers()


def held_netns_fds() -> dict[int, set[str]]:
    """The network namespaces that processes of the engine's hold by an open fd (a bridge's
    keeper), by pid. Only the engine's helpers count (they run ``pytest_pycontain.native``):
    other software on the machine opens and closes namespaces of its own at any time."""
    held = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if b"pytest_pycontain.native" not in (fd_dir.parent / "cmdline").read_bytes():
                continue
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        held[int(fd_dir.parent.name)] = {link for link in links if link.startswith("net:[")}
    return held


def newly_held(before: dict[int, set[str]]) -> dict[int, set[str]]:
    """What engine processes hold now that they did not at ``before``."""
    now = {pid: held - before.get(pid, set()) for pid, held in held_netns_fds().items()}
    return {pid: held for pid, held in now.items() if held}


@NEEDS_ROOT
def test_a_kept_container_keeps_its_network(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_fails(pycontain):
            net = pycontain.network()
            pycontain.run("busybox", name="server", network=net,
                          command=["httpd", "-f", "-p", "8080", "-h", "/etc"])
            pycontain.run("busybox", name="client", network=net, command=["sleep", "3600"])
            assert False
    """)
    before = held_netns_fds()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pycontain-keep=failed",
                                           "--pycontain-backend=native")
    result.assert_outcomes(failed=1)
    ids = {line.split()[1]: line.split("pycontain rm ")[1].rstrip("`")
           for line in result.stdout.lines if line.startswith("kept ")}
    assert set(ids) == {"server", "client"}
    cli = [sys.executable, "-m", "pytest_pycontain.cli"]
    try:
        # pytest has exited: the bridge, the veth pairs and the names are still there
        out = subprocess.run([*cli, "exec", ids["client"], "wget", "-qO-",
                              "http://server:8080/hostname"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and out.stdout.strip(), out.stderr
        keepers = newly_held(before)
        assert keepers  # a keeper holds the bridge's namespace
        # and answers the network's names (nslookup asks the DNS server, not /etc/hosts)
        out = subprocess.run([*cli, "exec", ids["client"], "nslookup", "server"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Address" in out.stdout.split("server")[-1], out.stdout
        out = subprocess.run([*cli, "exec", ids["client"], "nslookup", "elsewhere"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "NXDOMAIN" in out.stdout + out.stderr
    finally:
        for container_id in ids.values():
            subprocess.run([*cli, "rm", container_id], timeout=60, capture_output=True)
    # and lets go of it with the containers (its shim ends just after `rm` returns); only the
    # keepers are watched: engines of other sessions on the machine come and go meanwhile
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(newly_held(before)) & set(keepers):
        time.sleep(0.1)
    assert set(newly_held(before)) & set(keepers) == set()


@pytest.mark.dockerd
def test_keep_failed_on_docker_says_the_docker_commands(pytester: pytest.Pytester,
                                                        docker_backend: DockerBackend) -> None:
    backend = docker_backend
    pytester.makepyfile(KEPT_TEST.format(network=", network=pycontain.network()"))
    result = pytester.runpytest_subprocess(*backend.args, "--pycontain-keep=failed")
    result.assert_outcomes(failed=1)
    assert "teardown" not in result.stdout.str()  # its network stays for it, without a warning
    result.stdout.fnmatch_lines(["*pycontain: kept containers*",
                                 "kept kept-one (*): enter with `docker exec -it * sh`, remove "
                                 "with `docker rm -f *`"])
    line = next(x for x in result.stdout.lines if x.startswith("kept kept-one"))
    container_id = line.split("docker rm -f ")[1].rstrip("`")
    env = {**os.environ, "DOCKER_HOST": backend.host}
    out = subprocess.run(["docker", "exec", container_id, "cat", "/tmp/clue"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "evidence\n", out.stderr
    assert backend.api.inspect_container(container_id)["State"]["Running"]
    subprocess.run(["docker", "rm", "-f", container_id], env=env, check=True, timeout=60,
                   capture_output=True)
    assert container_id not in {c["Id"] for c in backend.api.containers(all=True)}
    DockerEngine(Settings(), base_url=backend.host).close()  # reaps the dead run's network
    backend.assert_no_leftovers()


def test_a_run_without_fixtures_starts_no_engine(pytester: pytest.Pytester, backend: Backend,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # a probe would fail
    pytester.makepyfile("""
        import sys

        from pytest_pycontain.fixtures import SESSION_KEY

        def test_x(request):
            # the fixtures are registered (fixtures.py is imported), but nothing behind them
            assert not {"docker", "pyroute2"} & set(sys.modules)
            assert not request.config.stash[SESSION_KEY].started
    """)
    result = pytester.runpytest_subprocess(*backend.args)
    result.assert_outcomes(passed=1)
    assert "zygote" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                          text=True).stdout.split("pytest_pycontain")[0]


@pytest.mark.dockerd
def test_a_docker_session_leaves_nothing_labelled_and_a_killed_one_is_reaped(
        pytester: pytest.Pytester, docker_backend: DockerBackend,
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = docker_backend
    pytester.makefile("", Dockerfile=WEB_DOCKERFILE)
    pytester.makepyprojecttoml('[tool.pycontain]\ndockerfile = "Dockerfile"\n')
    pytester.makepyfile(test_many="""
        import os
        import signal
        import pytest
        from pathlib import Path

        @pytest.fixture(scope="session")
        def db(pycontain_session):
            net = pycontain_session.network("shared")
            return pycontain_session.run("busybox", name="db", network=net,
                                         command=["sleep", "600"])

        def labelled(engine):
            label = {"label": "pycontain.session=" + engine.session_id}
            return (len(engine.api.containers(filters=label)),
                    len(engine.api.networks(filters=label)))

        @pytest.mark.pycontain(ports=[8080], scope="module")
        def test_all_kinds(container, db, pycontain):
            pycontain.run("busybox", command=["sleep", "600"], ports=[80])
            pycontain.run("busybox", network=pycontain.network(), command=["sleep", "600"])
            Path("session").write_text(db.engine.session_id)
            assert labelled(db.engine) == (4, 4)

        def test_fails(pycontain, db):
            pycontain.run("busybox", network="none", command=["sleep", "600"])
            assert False

        def test_killed(pycontain):
            net = pycontain.network()  # starts the engine, which reaps what dead runs left
            if os.environ.get("KILL_ME"):
                pycontain.run("busybox", network=net, command=["sleep", "600"])
                Path("killed").write_text(pycontain.engine.session_id)
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    run(pytester, backend, "-k", "not killed").assert_outcomes(passed=1, failed=1)
    session = (pytester.path / "session").read_text()
    assert session and backend.labelled(session) == []
    backend.assert_no_leftovers()

    monkeypatch.setenv("KILL_ME", "1")
    assert pytester.runpytest_subprocess(*backend.args, "-k", "killed").ret == -9
    killed = (pytester.path / "killed").read_text()
    assert len(backend.labelled(killed)) == 2  # a container and its network, owner dead
    monkeypatch.delenv("KILL_ME")
    run(pytester, backend, "-k", "killed").assert_outcomes(passed=1)  # its engine reaps
    assert backend.labelled(killed) == []
    backend.assert_no_leftovers()


def test_an_error_in_a_fixture_is_its_message_and_the_users_line(pytester: pytest.Pytester,
                                                                 backend: Backend) -> None:
    """Not the hundreds of lines of our frames, the registry client's and the socket's; the
    long traceback is still there for the asking."""
    pytester.makepyfile("""
        import pytest

        @pytest.fixture
        def db(pycontain):
            return pycontain.run("busyboxx", name="db")

        def test_uses_db(db):
            pass
    """)
    result = run(pytester, backend)
    result.assert_outcomes(errors=1)
    start = result.stdout.lines.index(next(line for line in result.stdout.lines
                                           if "ERROR at setup of test_uses_db" in line))
    report = result.stdout.lines[start + 1:result.stdout.lines.index(
        next(line for line in result.stdout.lines if "short test summary info" in line))]
    assert len(report) == 3, report
    assert re.match(r"\w+Error: .*busyboxx", report[0]), report
    assert report[1] == '  at test_an_error_in_a_fixture_is_its_message_and_the_users_line.py:5, '\
                        'in db: return pycontain.run("busyboxx", name="db")'
    full = run(pytester, backend, "--tb=long")
    full.assert_outcomes(errors=1)
    assert "pytest_pycontain/" in full.stdout.str() and len(full.stdout.lines) > 30
    backend.assert_no_leftovers()


def test_a_kept_container_that_has_exited_says_so(pytester: pytest.Pytester,
                                                  backend: Backend) -> None:
    pytester.makepyfile("""
        def test_fails(pycontain):
            c = pycontain.run("busybox", name="quitter", command="echo bye; exit 3")
            assert c.wait(timeout=60) == 3
            assert False
    """)
    result = pytester.runpytest_subprocess(*backend.args, "--pycontain-keep=failed")
    result.assert_outcomes(failed=1)
    line = next(x for x in result.stdout.lines if x.startswith("kept quitter"))
    assert re.fullmatch(r"kept quitter \(\S+::test_fails\): it has exited \(code 3\), so there "
                        r"is nothing to enter; its logs are in the test's report; remove with "
                        r"`([^`]+)`", line), line
    assert " exec " not in line
    remove = shlex.split(re.findall(r"`([^`]*)`", line)[0])
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    if backend.name == "docker":
        env["DOCKER_HOST"] = backend.host  # type: ignore[attr-defined]
    out = subprocess.run(remove, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if backend.name == "docker":  # the rest a removed kept container left, for the next run
        DockerEngine(Settings(), base_url=backend.host).close()  # type: ignore[attr-defined]
    backend.assert_no_leftovers()


def test_a_kept_containers_named_volumes_stay_with_it(pytester: pytest.Pytester,
                                                      backend: Backend) -> None:
    """A failed test's kept container keeps its named volumes, its test's and a wider scope's
    (the teardowns leave them, without a warning, and so does the next run's reaper on
    Docker), with their data; ``pycontain rm`` of the container removes them (and on Docker
    its network too)."""
    token = os.urandom(4).hex()  # the state directory may be shared with other sessions
    names = {f"data{token}", f"shared{token}"}
    pytester.makepyfile(f"""
        def test_fails(pycontain, pycontain_session):
            data = pycontain.volume("data{token}")
            shared = pycontain_session.volume("shared{token}")
            c = pycontain.run("busybox", name="holder", command=["sleep", "3600"],
                              volumes={{data: "/data", shared: "/shared"}})
            assert c.exec("echo precious > /data/file; echo common > /shared/file").exit_code == 0
            assert False
    """)
    result = pytester.runpytest_subprocess(*backend.args, "--pycontain-keep=failed")
    result.assert_outcomes(failed=1)
    assert "teardown" not in result.stdout.str()  # no warning: the volumes stay for it
    line = next(x for x in result.stdout.lines if x.startswith("kept holder"))
    enter, remove = (shlex.split(part) for part in re.findall(r"`([^`]*)`", line))
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    if backend.name == "docker":
        env["DOCKER_HOST"] = backend.host  # type: ignore[attr-defined]
        enter = ["docker", "exec", enter[-2]]
    else:
        enter = enter[:-1]
    out = subprocess.run([*enter, "cat", "/data/file", "/shared/file"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "precious\ncommon\n", out.stderr
    if backend.name == "docker":  # the next run's reaper leaves them too while it is kept
        DockerEngine(Settings(), base_url=backend.host).close()  # type: ignore[attr-defined]
        out = subprocess.run([*enter, "cat", "/data/file", "/shared/file"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.stdout == "precious\ncommon\n", out.stderr
    volumes = _our_volumes(backend)
    assert names <= volumes, volumes
    if backend.name == "docker":  # pycontain rm takes what it left too (docker rm -f: the reaper)
        remove = [sys.executable, "-m", "pytest_pycontain.cli", "--backend", "docker", "rm",
                  remove[-1]]
    out = subprocess.run(remove, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not names & _our_volumes(backend)
    backend.assert_no_leftovers()


def _our_volumes(backend: Backend) -> set[str]:
    """The user's names of the named volumes the engine holds (native: under the state
    directory; Docker: labelled by any session)."""
    if backend.name == "docker":
        found = (backend.api.volumes() or {}).get("Volumes") or []  # type: ignore[attr-defined]
        return {(v.get("Labels") or {}).get("pycontain.name", v["Name"]) for v in found}
    root = Path(os.environ["PYCONTAIN_STATE_DIR"]) / "volumes"
    return {p.name.rsplit("-", 1)[0] for p in root.iterdir()} if root.is_dir() else set()
