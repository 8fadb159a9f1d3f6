"""Every ``--pycontain-*`` option, as a user passes it, on the native engine (pytester)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the native engine needs root (namespaces, mounts)")

STAGED = """\
FROM busybox AS base
ARG FLAVOUR=plain
RUN echo "$FLAVOUR" > /flavour
CMD ["sleep", "3600"]

FROM base AS extra
RUN echo extra > /extra
"""

CHECK = """
def test_flavour(container):
    print("flavour:", container.exec("cat /flavour").output.strip())
    print("extra:", container.exec("cat /extra").exit_code == 0)
"""


@pytest.fixture
def staged(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.mkdir("app")
    (pytester.path / "app" / "Dockerfile").write_text(STAGED)
    pytester.makepyfile(CHECK)
    return pytester


def test_dockerfile_context_build_arg_and_target(staged: pytest.Pytester) -> None:
    result = staged.runpytest("-p", "no:cacheprovider", "-s", "--pycontain-context=app",
                              "--pycontain-dockerfile=app/Dockerfile",
                              "--pycontain-build-arg=FLAVOUR=spicy", "--pycontain-target=base")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*flavour: spicy", "extra: False"])
    result = staged.runpytest("-p", "no:cacheprovider", "-s", "--pycontain-context=app",
                              "--pycontain-dockerfile=app/Dockerfile")
    result.stdout.fnmatch_lines(["*flavour: plain", "extra: True"])


def test_settings_from_pyproject_and_marker_build_args(staged: pytest.Pytester) -> None:
    staged.makepyprojecttoml('[tool.pycontain]\ndockerfile = "app/Dockerfile"\n'
                             'context = "app"\nbuild_args = {FLAVOUR = "mild"}\n')
    staged.makepyfile(test_marker="""
        import pytest

        @pytest.mark.pycontain(build_args={"FLAVOUR": "hot"})
        def test_marker(container):
            assert container.exec("cat /flavour").output == "hot\\n"
    """)
    result = staged.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*flavour: mild*"])


def test_progress_shows_a_slow_build_and_is_quiet_under_q(pytester: pytest.Pytester) -> None:
    pytester.makefile("", Dockerfile="FROM busybox\nRUN sleep 0.7\nCMD [\"sleep\", \"60\"]\n")
    pytester.makepyprojecttoml('[tool.pycontain]\ndockerfile = "Dockerfile"\n')
    pytester.makepyfile("def test_x(container):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--pycontain-no-cache")
    result.stdout.fnmatch_lines(["pycontain: *RUN /bin/sh -c sleep 0.7*",
                                 "pycontain: writing image sha256:*"])
    quiet = pytester.runpytest("-p", "no:cacheprovider", "--pycontain-no-cache", "-q")
    quiet.assert_outcomes(passed=1)
    assert not [line for line in quiet.stdout.lines if line.startswith("pycontain: ")]
    pytester.runpytest("-p", "no:cacheprovider")  # fills the layer cache
    cached = pytester.runpytest("-p", "no:cacheprovider")  # all cached: a moment, no lines
    assert not [line for line in cached.stdout.lines if line.startswith("pycontain: #")]


def test_pull_never_cache_dir_and_registry_mirror(pytester: pytest.Pytester,
                                                  tmp_path: Path) -> None:
    pytester.makepyfile("""
        def test_x(pycontain):
            assert pycontain.run("busybox", command="echo hi").wait() == 0
    """)
    cache = tmp_path / "empty-cache"
    never = pytester.runpytest("-p", "no:cacheprovider", f"--pycontain-cache-dir={cache}",
                               "--pycontain-pull=never")
    never.assert_outcomes(failed=1)
    never.stdout.fnmatch_lines(["*ImageNotFound*busybox*"])
    wrong_mirror = pytester.runpytest("-p", "no:cacheprovider", f"--pycontain-cache-dir={cache}",
                                      "--pycontain-registry-mirror=http://127.0.0.1:9",
                                      "--pycontain-docker-io-endpoint=http://127.0.0.1:9")
    wrong_mirror.assert_outcomes(failed=1)
    wrong_mirror.stdout.fnmatch_lines(["*PullError*127.0.0.1:9*"])
    fine = pytester.runpytest("-p", "no:cacheprovider", f"--pycontain-cache-dir={cache}")
    fine.assert_outcomes(passed=1)
    assert any(cache.rglob("blobs")), "the image landed in the given cache dir"
    again = pytester.runpytest("-p", "no:cacheprovider", f"--pycontain-cache-dir={cache}",
                               "--pycontain-pull=never")
    again.assert_outcomes(passed=1)


def test_timeout_bounds_waits(pytester: pytest.Pytester) -> None:
    """The option is the wait's bound (not the 60 s default): the error names it, with the
    container still running. It bounds a container's start too, so it is not made so short
    that a start on a loaded machine would miss it."""
    pytester.makepyfile("""
        from pytest_pycontain import wait

        def test_x(pycontain):
            pycontain.run("busybox", command=["sleep", "60"], wait=wait.port(1234))
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--pycontain-timeout=4")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*WaitTimeout: wait.port(1234): container * not ready after "
                                 "*s (timeout 4s; status running)*"])


def test_keep_always_and_never(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_ok(pycontain):
            pycontain.run("busybox", name="always-kept", command=["sleep", "60"])
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pycontain-keep=always")
    result.stdout.fnmatch_lines(["kept always-kept (*): enter with `*pycontain exec * sh`*"])
    line = next(x for x in result.stdout.lines if x.startswith("kept always-kept"))
    container_id = line.split("pycontain rm ")[1].rstrip("`")
    from pytest_pycontain.native import state

    state.remove_kept(os.environ["PYCONTAIN_STATE_DIR"], container_id)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pycontain-keep=never")
    assert not [x for x in result.stdout.lines if x.startswith("kept ")]


def test_markers_merge_closest_first(pytester: pytest.Pytester) -> None:
    pytester.makefile("", Dockerfile="FROM busybox\nCMD [\"sleep\", \"60\"]\n")
    pytester.makepyprojecttoml('[tool.pycontain]\ndockerfile = "Dockerfile"\n')
    pytester.makepyfile("""
        import pytest

        pytestmark = pytest.mark.pycontain(env={"LEVEL": "module"}, scope="function")

        @pytest.mark.pycontain(env={"LEVEL": "test"})
        def test_closest_wins(container):
            assert container.exec("echo $LEVEL").output == "test\\n"

        def test_module_level(container):
            assert container.exec("echo $LEVEL").output == "module\\n"
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
