"""The fixtures as users run them: pytester sessions on the real native engine.

Each inner session builds the project's Dockerfile (busybox from the test registry), runs
containers, and must leave nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the native engine needs root (namespaces, mounts)")

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


def no_leftovers(state_dir: str | None = None) -> None:
    """No overlay mounts of ours on the host and no live containers of dead owners."""
    from pytest_pycontain.native import state

    mounts = Path("/proc/self/mounts").read_text()
    assert "pycontain" not in mounts
    root = state_dir or os.environ["PYCONTAIN_STATE_DIR"]
    assert [c for c in state.containers(root) if c["owner"].startswith(str(os.getpid()))] == []


def test_container_from_the_dockerfile_with_ports_and_wait(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import urllib.request
        import pytest
        from pytest_pycontain import wait

        @pytest.mark.pycontain(ports=[8080], wait=wait.http(8080))
        def test_home(container):
            host, port = container.address(8080)
            assert urllib.request.urlopen(f"http://{host}:{port}/").read() == b"hello\\n"
            assert container.exec("wget -qO- localhost:8080").output == "hello\\n"
            assert container.ip and container.status == "running"
            assert container.image.config["ExposedPorts"] == {"8080/tcp": {}}
    """)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    no_leftovers()


def test_function_scope_is_fresh_and_module_scope_shares(project: pytest.Pytester) -> None:
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
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=4)
    no_leftovers()


def test_session_scope_from_the_command_line(project: pytest.Pytester) -> None:
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
    project.runpytest("-p", "no:cacheprovider", "--pycontain-scope=session",
                      "-p", "no:randomly").assert_outcomes(passed=2)


def test_image_option_replaces_the_dockerfile_and_a_marker_wins(
        project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest

        def test_from_option(container):
            assert container.exec("cat /etc/os-release").output.startswith("PRETTY_NAME=\\"Debian")

        @pytest.mark.pycontain(dockerfile="Dockerfile")
        def test_marker_dockerfile(container):
            assert container.exec("cat /www/index.html").output == "hello\\n"
    """)
    project.makefile("", Dockerfile_debian="FROM debian:bookworm\nCMD [\"sleep\", \"3600\"]\n")
    subprocess_build = project.runpytest("-p", "no:cacheprovider",
                                         "--pycontain-dockerfile=Dockerfile_debian")
    subprocess_build.assert_outcomes(passed=2)


def test_marker_env_and_the_failed_test_report(project: pytest.Pytester) -> None:
    project.makefile("", Dockerfile="FROM busybox\nCMD [\"sh\", \"-c\", "
                                    "\"echo started as $ROLE; exec sleep 3600\"]\n")
    project.makepyfile("""
        import pytest

        @pytest.mark.pycontain(env={"ROLE": "primary"})
        def test_fails(container):
            assert container.exec("echo $ROLE").output == "replica\\n"
    """)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- pycontain log: pycontain-* -*", "started as primary"])


def test_pycontain_factory_network_names_and_session_factory(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from pytest_pycontain import wait

        @pytest.fixture(scope="session")
        def cache(pycontain_session):
            net = pycontain_session.network()
            server = pycontain_session.run(
                "busybox", name="cache", network=net, aliases=["redis"],
                command="while true; do echo PONG | nc -l -p 6379; done", wait=wait.port(6379))
            return net, server

        def test_by_name(pycontain, cache):
            net, server = cache
            app = pycontain.run("busybox", name="app", network=net, command=["sleep", "100"])
            assert app.exec("nc redis 6379 </dev/null").output.strip() == "PONG"
            assert app.exec("nslookup cache").exit_code == 0
            assert app.exec("nslookup nowhere").exit_code != 0
            assert server.ip != app.ip and server.ip.startswith(net.subnet.rsplit(".", 1)[0])

        def test_session_container_survives(cache):
            assert cache[1].status == "running"
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
    no_leftovers()


def test_wait_on_an_exited_container_fails_fast(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from pytest_pycontain import wait

        def test_crash(pycontain):
            pycontain.run("busybox", command="echo boom >&2; exit 3",
                          wait=wait.port(80, timeout=600))
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ContainerError: wait.port(80): container * exited with "
                                 "status 3*", "*boom*"])


def test_no_image_configured_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(container):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the `container` fixture needs an image: set dockerfile in "
                                 "[[]tool.pycontain[]] or pass --pycontain-image*"])


def test_unknown_marker_key(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.pycontain(imgae="busybox")
        def test_x(container):
            pass
    """)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.pycontain has unknown key(s) imgae*"])


def test_broken_dockerfile_errors_its_tests_and_the_others_run(
        pytester: pytest.Pytester) -> None:
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
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*Dockerfile:2*exit*7*"])


def test_keep_failed_keeps_and_says_how_to_enter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_fails(pycontain):
            c = pycontain.run("busybox", name="kept-one", command=["sleep", "3600"])
            c.exec("echo evidence > /tmp/clue")
            assert False
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pycontain-keep=failed")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pycontain: kept containers*",
                                 "kept kept-one (*): enter with `pycontain exec * sh`, remove "
                                 "with `pycontain rm *`"])
    line = next(x for x in result.stdout.lines if x.startswith("kept kept-one"))
    container_id = line.split("pycontain rm ")[1].rstrip("`")
    cli = [sys.executable, "-m", "pytest_pycontain.cli"]
    out = subprocess.run([*cli, "exec", container_id, "cat", "/tmp/clue"], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout == "evidence\n", out.stderr
    listing = subprocess.run([*cli, "ps"], capture_output=True, text=True, timeout=60).stdout
    assert container_id[:12] in listing and "kept" in listing
    subprocess.run([*cli, "rm", container_id], check=True, timeout=60, capture_output=True)
    listing = subprocess.run([*cli, "ps"], capture_output=True, text=True, timeout=60).stdout
    assert container_id[:12] not in listing


def test_a_run_without_fixtures_starts_no_engine(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "zygote" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                          text=True).stdout.split("pytest_pycontain")[0]
