"""The plugin's own logic on the in-memory FakeEngine: no root, no namespaces, no dockerd.

Scopes and sharing, teardown order, keep-on-failure, report sections, marker merging and
errors in fixture setup are the plugin's, not an engine's; the engine is supplied through the
``pytest_pycontain_make_engine`` hook, as any plugin would.
"""

from __future__ import annotations

import re

import pytest

from pytest_pycontain.testing import FakeEngine, SupplyEngine

IMAGE = "--pycontain-image=busybox"


def run(pytester: pytest.Pytester, engine: FakeEngine, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args, plugins=[SupplyEngine(engine)])


def container_names(engine: FakeEngine) -> list[str]:
    return [c.name for c in engine.containers]


def test_the_hook_supplies_the_engine_and_the_header_says_a_plugin_may(
        pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile("""
        def test_one(pycontain):
            c = pycontain.run("busybox", name="web")
            assert type(c).__name__ == "FakeContainer" and c.status == "running"
    """)
    result = run(pytester, engine)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pycontain: engine * started on first use; a plugin may "
                                 "supply the engine first: *"])
    assert engine.events == ["pull busybox", "run web", "remove web", "close"]


def test_no_fixture_no_engine(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile("def test_plain():\n    pass\n")
    run(pytester, engine).assert_outcomes(passed=1)
    assert engine.events == []  # the hook was never called: nothing made, nothing closed


def test_function_scope_gives_each_test_its_own_container(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile("""
        SEEN = []

        def test_a(container):
            SEEN.append(container.id)

        def test_b(container):
            assert container.id not in SEEN
    """)
    run(pytester, engine, IMAGE).assert_outcomes(passed=2)
    first, second = container_names(engine)
    runs_and_removals = [e for e in engine.events if e.split()[0] in ("run", "remove")]
    assert runs_and_removals == [f"run {first}", f"remove {first}", "remove network fake-net-1",
                                 f"run {second}", f"remove {second}",
                                 "remove network fake-net-2"]


def test_module_scope_shares_by_equal_settings_and_ends_with_the_module(
        pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile(
        test_one="""
            import pytest

            def test_a(container):
                pytest.shared = container.id

            def test_b(container):
                assert container.id == pytest.shared

            @pytest.mark.pycontain(env={"MODE": "other"})
            def test_other_settings(container):
                assert container.id != pytest.shared
        """,
        test_two="""
            import pytest

            def test_c(container):
                assert container.id != pytest.shared
        """)
    run(pytester, engine, IMAGE, "--pycontain-scope=module").assert_outcomes(passed=4)
    shared, other, second_module = engine.containers
    assert dict(other.spec.env or {}) == {"MODE": "other"} and not shared.spec.env
    order = engine.events
    # both of the first module's containers go when it ends, before the second module starts
    assert order.index(f"remove {shared.name}") < order.index(f"run {second_module.name}")
    assert order.index(f"remove {other.name}") < order.index(f"run {second_module.name}")


def test_session_scope_shares_across_modules_until_the_end(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile(
        test_one="""
            import pytest

            def test_a(container):
                pytest.shared = container.id
        """,
        test_two="""
            import pytest

            def test_b(container, pycontain):
                assert container.id == pytest.shared
                pycontain.run("busybox", name="per-test")
        """)
    run(pytester, engine, IMAGE, "--pycontain-scope=session").assert_outcomes(passed=2)
    shared, per_test = engine.containers
    assert per_test.name == "per-test"
    order = engine.events
    assert order.index("remove per-test") < order.index(f"remove {shared.name}")
    assert order[-1] == "close"


def test_a_failed_shared_setup_fails_each_sharing_test_once_made(
        pytester: pytest.Pytester) -> None:
    engine = FakeEngine(images={"busybox"})
    pytester.makepyfile("""
        def test_a(container):
            pass

        def test_b(container):
            pass
    """)
    result = run(pytester, engine, "--pycontain-image=nosuchimage", "--pycontain-scope=module")
    result.assert_outcomes(errors=2)
    assert engine.events.count("pull nosuchimage") == 1  # the failure is shared, not retried
    assert result.stdout.str().count("manifest unknown") >= 2


def test_factory_removes_in_reverse_order_then_networks(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="session")
        def db(pycontain_session):
            return pycontain_session.run("busybox", name="db")

        def test_stack(db, pycontain):
            net = pycontain.network("app-net")
            pycontain.run("busybox", name="first", network=net)
            pycontain.run("busybox", name="second", network=net)

        def test_later(db):
            pass
    """)
    run(pytester, engine).assert_outcomes(passed=2)
    removals = [e for e in engine.events if e.startswith("remove")]
    assert removals == ["remove second", "remove first", "remove network app-net", "remove db"]


def test_keep_failed_keeps_only_a_failed_tests_containers(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    engine.on_run("crashes", exit_code=3, logs="boom\n")
    pytester.makepyfile("""
        def test_passes(pycontain):
            pycontain.run("busybox", name="fine")

        def test_fails(pycontain):
            pycontain.run("busybox", name="alive")
            pycontain.run("crashes", name="dead")
            assert False
    """)
    result = run(pytester, engine, "--pycontain-keep=failed")
    result.assert_outcomes(passed=1, failed=1)
    alive, dead = engine.containers[1:]
    assert "remove fine" in engine.events
    assert alive.kept and dead.kept
    assert "remove alive" not in engine.events and "remove dead" not in engine.events
    result.stdout.fnmatch_lines([
        "*pycontain: kept containers*",
        f"kept alive (test_keep_failed_keeps_only_a_failed_tests_containers.py::test_fails): "
        f"enter with `fake-engine exec {alive.id} sh`, remove with `fake-engine rm {alive.id}`",
        f"kept dead (*::test_fails): it has exited (code 3), so there is nothing to enter; its "
        f"logs are in the test's report; remove with `fake-engine rm {dead.id}`",
    ])


def test_keep_always_and_never(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_passes(pycontain):
            pycontain.run("busybox", name="fine")
    """)
    engine = FakeEngine()
    result = run(pytester, engine, "--pycontain-keep=always")
    assert engine.containers[0].kept
    result.stdout.fnmatch_lines(["kept fine (*): enter with `fake-engine exec * sh`*"])
    engine = FakeEngine()
    result = run(pytester, engine, "--pycontain-keep=never")
    assert "remove fine" in engine.events
    assert "kept containers" not in result.stdout.str()


def test_keep_failed_under_xdist_prints_on_the_controller(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeconftest("""
        from pytest_pycontain.testing import FakeEngine

        def pytest_pycontain_make_engine(config, settings):
            return FakeEngine()
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_fails(pycontain, n):
            pycontain.run("busybox", name=f"box{n}")
            assert n % 2
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                           "--pycontain-keep=failed")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*pycontain: kept containers*"])
    kept = sorted(line.split()[1] for line in result.stdout.lines if line.startswith("kept "))
    assert kept == ["box0", "box2"]


def test_a_failed_test_reports_its_containers_logs(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    engine.on_run("busybox", logs="".join(f"line {n}\n" for n in range(1, 11)))
    pytester.makepyfile("""
        def test_fails(pycontain):
            pycontain.run("busybox", name="talker")
            assert False

        def test_passes(pycontain):
            pycontain.run("busybox", name="quiet")
    """)
    result = run(pytester, engine, "-o", "pycontain_log_lines=3")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    section = re.search(r"-+ pycontain log: talker -+\n(.*?)\n(=|-)", out, re.S)
    assert section is not None, out
    assert section.group(1).splitlines() == ["line 8", "line 9", "line 10"]
    assert "pycontain log: quiet" not in out


def test_marker_merges_per_key_closest_first(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile("""
        import pytest

        pytestmark = pytest.mark.pycontain(image="alpine", env={"LEVEL": "module"})

        @pytest.mark.pycontain(env={"LEVEL": "class"}, ports=[8080])
        class TestStack:
            @pytest.mark.pycontain(env={"LEVEL": "function"})
            def test_closest(self, container):
                pass

            def test_class(self, container):
                pass
    """)
    run(pytester, engine).assert_outcomes(passed=2)
    closest, klass = engine.runs
    for spec in (closest, klass):
        assert spec.image.ref == "alpine"  # the module's image=, not overridden below it
        assert list(spec.ports) == [8080]  # the class's ports=, merged per key
    assert dict(closest.env) == {"LEVEL": "function"}
    assert dict(klass.env) == {"LEVEL": "class"}


def test_marker_with_an_unknown_key_fails_that_test_alone(pytester: pytest.Pytester) -> None:
    engine = FakeEngine()
    pytester.makepyfile("""
        import pytest

        @pytest.mark.pycontain(imgae="busybox")
        def test_typo(container):
            pass

        def test_fine(container):
            pass
    """)
    result = run(pytester, engine, IMAGE)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_typo: @pytest.mark.pycontain has unknown key(s) imgae*"])
    assert len(engine.containers) == 1


ERRORS_IN_SETUP = {
    "conftest": """
        import pytest

        @pytest.fixture
        def db(pycontain):
            return pycontain.run("busyboxx", name="db")
    """,
    "test_errors": """
        def test_fixture(db):
            pass

        def test_body(pycontain):
            pycontain.run("busyboxx")

        def test_container(container):
            pass

        def test_other_error(pycontain):
            {}["no such key"]
    """,
}


def failure_sections(result: pytest.RunResult) -> dict[str, list[str]]:
    """Each failure's or error's report, by test name, as its lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in result.stdout.lines:
        heading = re.fullmatch(r"_+ (?:ERROR at setup of )?(\w+) _+", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
        elif re.fullmatch(r"=+ .* =+", line):
            current = None
        elif current is not None:
            current.append(line)
    return sections


def test_our_errors_in_setup_report_the_message_and_the_users_line(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ERRORS_IN_SETUP["conftest"])
    pytester.makepyfile(test_errors=ERRORS_IN_SETUP["test_errors"])
    engine = FakeEngine(images={"busybox"})
    result = run(pytester, engine, "--pycontain-image=nope")
    result.assert_outcomes(failed=2, errors=2)
    sections = failure_sections(result)
    hint = "  (pytest-pycontain hid its own frames; --tb=long or -v shows them)"
    assert sections["test_fixture"] == [
        "PullError: pull busyboxx: manifest unknown (the fake engine knows busybox)",
        '  at conftest.py:5, in db: return pycontain.run("busyboxx", name="db")', hint]
    assert sections["test_body"] == [
        "PullError: pull busyboxx: manifest unknown (the fake engine knows busybox)",
        '  at test_errors.py:5, in test_body: pycontain.run("busyboxx")', hint]
    assert sections["test_container"] == [
        "PullError: pull nope: manifest unknown (the fake engine knows busybox)",
        "  at test_errors.py:7, in test_container: setting up `container`", hint]
    # another exception keeps pytest's own report
    assert any(line.startswith("E ") and "KeyError" in line
               for line in sections["test_other_error"])
    result.stdout.fnmatch_lines(["FAILED test_errors.py::test_body - PullError: pull busyboxx*",
                                 "ERROR test_errors.py::test_fixture - PullError: pull busyboxx*"])


@pytest.mark.parametrize("args", [("--tb=long",), ("-v",), ("--full-trace",), ("--tb=native",)])
def test_long_tracebacks_and_verbose_still_show_everything(pytester: pytest.Pytester,
                                                           args: tuple[str, ...]) -> None:
    pytester.makeconftest(ERRORS_IN_SETUP["conftest"])
    pytester.makepyfile(test_errors=ERRORS_IN_SETUP["test_errors"])
    result = run(pytester, FakeEngine(images={"busybox"}), "--pycontain-image=nope", *args)
    result.assert_outcomes(failed=2, errors=2)
    out = result.stdout.str()
    assert "hid its own frames" not in out
    for frame in ("pytest_pycontain/fixtures.py", "pytest_pycontain/testing.py"):
        assert frame in out


def test_short_reports_come_through_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeconftest(ERRORS_IN_SETUP["conftest"] + """
        from pytest_pycontain.testing import FakeEngine

        def pytest_pycontain_make_engine(config, settings):
            return FakeEngine(images={"busybox"})
    """)
    pytester.makepyfile(test_errors=ERRORS_IN_SETUP["test_errors"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                           "--pycontain-image=nope")
    result.assert_outcomes(failed=2, errors=2)
    assert ('  at conftest.py:5, in db: return pycontain.run("busyboxx", name="db")'
            in failure_sections(result)["test_fixture"])


class EngineThatCannotKeep(FakeEngine):
    def keep(self, container: object) -> str:
        raise RuntimeError("the keeper would not start")


def test_a_container_that_cannot_be_kept_is_still_removed(pytester: pytest.Pytester) -> None:
    engine = EngineThatCannotKeep()
    pytester.makepyfile("""
        def test_fails(pycontain):
            pycontain.run("busybox", name="slippery")
            assert False
    """)
    result = run(pytester, engine, "--pycontain-keep=failed")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pycontain: kept containers*",
                                 "could not keep slippery: the keeper would not start"])
    assert "remove slippery" in engine.events


def test_the_fake_implements_the_protocols_and_the_waits_work_on_it() -> None:
    from pytest_pycontain import wait
    from pytest_pycontain.engine import Container, Engine, Network, RunSpec
    from pytest_pycontain.errors import ContainerError, WaitTimeout

    engine = FakeEngine()
    engine.on_run("server", logs="starting\nready on 8080\n", listening=[8080])
    engine.on_run("crasher", logs="no config\n", exit_code=2)
    engine.on_exec(["cat", "/etc/motd"], stdout="hello\n")
    network = engine.network()
    server = engine.run(RunSpec(image="server", network=network, ports=[8080]))
    assert isinstance(engine, Engine) and isinstance(server, Container)
    assert isinstance(network, Network)
    wait.until_ready(server, wait.all(wait.log("ready on"), wait.port(8080)), 1)
    with pytest.raises(WaitTimeout):
        wait.until_ready(server, wait.port(9090, timeout=0.2), 1)
    assert server.exec(["cat", "/etc/motd"]).output == "hello\n"
    assert server.address(8080)[0] == "127.0.0.1"
    crasher = engine.run(RunSpec(image="crasher"))
    with pytest.raises(ContainerError) as info:
        wait.until_ready(crasher, wait.port(80), 1)
    assert info.value.exit_code == 2 and "no config" in str(info.value)
    server.kill()
    assert server.wait() == 137 and server.status == "exited"
    published = server.address(8080)
    server.start()  # the same container again, as docker start
    assert (server.status, server.exit_code, server.address(8080)) == ("running", None,
                                                                       published)
    server.start()  # running: left as it is
    assert engine.events.count(f"start {server.name}") == 1
    crasher.start()  # scripted to exit: it exits again at once
    assert (crasher.status, crasher.exit_code) == ("exited", 2)
    gone = engine.run(RunSpec(image="server"))
    gone.remove()
    with pytest.raises(ContainerError, match="was removed"):
        gone.start()
    server.remove()
    engine.close()
    assert engine.events[-3:] == [f"remove {crasher.name}", f"remove network {network.name}",
                                  "close"]


def test_factory_network_options_and_expose_host_port_without_engine_support(
        pytester: pytest.Pytester) -> None:
    """The factory checks internal= itself, passes internal=True on, and says NotSupported
    (naming the engine) for expose_host_port on an engine that cannot reach this process."""
    engine = FakeEngine()
    pytester.makepyfile("""
        import pytest
        from pytest_pycontain.errors import ConfigError, NotSupported

        def test_one(pycontain):
            with pytest.raises(ConfigError, match=r"network\\(internal='yes'\\)"):
                pycontain.network(internal="yes")
            assert pycontain.network(internal=True) is not None
            with pytest.raises(NotSupported, match="expose_host_port: the fake engine"):
                pycontain.expose_host_port(8080)
    """)
    run(pytester, engine).assert_outcomes(passed=1)
