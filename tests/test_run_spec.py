"""The run request: every ``run`` option read once into one form, a bad value named at once.

Pure unit tests (no engine, no root): both backends take these forms as they are, so what is
checked here is what every backend gets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_pycontain.config import Settings, apply_marker, resolve
from pytest_pycontain.engine import Mount, RunSpec
from pytest_pycontain.errors import ConfigError
from pytest_pycontain.fixtures import container_request
from pytest_pycontain.frozen import FrozenMap
from pytest_pycontain.imageconfig import shell_argv
from pytest_pycontain.runspec import byte_size, memory_bytes, parse_ports


def test_defaults_are_empty_forms_not_none() -> None:
    spec = RunSpec("busybox")
    assert spec.command is None and spec.entrypoint is None  # None: the image's own
    assert spec.env == {} and spec.ports == {} and spec.tmpfs == {}
    assert spec.mounts == () and spec.aliases == ()
    assert spec.memory is None and spec.cpus is None and spec.pids is None


@pytest.mark.parametrize(("given", "argv"), [
    ("echo $HOME", ("/bin/sh", "-c", "echo $HOME")),
    (["sleep", "10"], ("sleep", "10")),
    (("sleep", 10), ("sleep", "10")),
    ([Path("/bin/true")], ("/bin/true",)),
    ([], ()),
])
def test_command_is_an_argv(given: object, argv: tuple[str, ...]) -> None:
    assert RunSpec("busybox", command=given).command == argv
    assert tuple(shell_argv(given)) == argv  # exec's rule is the same one


@pytest.mark.parametrize(("given", "argv"), [
    ("/entry --flag 'two words'", ("/entry", "--flag", "two words")),  # split, as Docker does
    (["/entry", "x y"], ("/entry", "x y")),
    ("", ()),  # drops the image's entrypoint
])
def test_entrypoint_is_an_argv(given: object, argv: tuple[str, ...]) -> None:
    assert RunSpec("busybox", entrypoint=given).entrypoint == argv


@pytest.mark.parametrize(("option", "value", "message"), [
    ("command", 42, "command: 42: expected a list"),
    ("command", ["echo", None], "command: .*None is not a word"),
    ("entrypoint", "/entry 'open", "entrypoint: \"/entry 'open\": No closing quotation"),
    ("entrypoint", {"a": 1}, "entrypoint: .*expected a list"),
])
def test_bad_commands(option: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunSpec("busybox", **{option: value})


def test_env_is_a_map_of_text() -> None:
    assert RunSpec("busybox", env={"A": 1, "B": "x=y"}).env == {"A": "1", "B": "x=y"}
    assert RunSpec("busybox", env=["A=1", "B="]).env == {"A": "1", "B": ""}


@pytest.mark.parametrize(("value", "message"), [
    ("A=1", "env: 'A=1': expected a list"),
    (["NOEQUALS"], "env: 'NOEQUALS': expected KEY=VALUE"),
    ({"": "x"}, "env: '': expected a variable name"),
    ({"A=B": "x"}, "env: 'A=B': expected a variable name"),
    ({"A": None}, "env: A=None: expected a text value"),
])
def test_bad_env(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunSpec("busybox", env=value)


@pytest.mark.parametrize(("given", "ports"), [
    ([8080], {8080: None}),
    ({8080: 18080}, {8080: 18080}),
    ({8080: None, 9090: 0}, {8080: None, 9090: None}),  # host port 0: any free one
    (["8080", "9090/tcp"], {8080: None, 9090: None}),
    ({"8080/tcp": "18080"}, {8080: 18080}),
    ((), {}),
])
def test_ports_are_container_port_to_host_port(given: object, ports: dict) -> None:
    assert RunSpec("busybox", ports=given).ports == ports


@pytest.mark.parametrize(("value", "message"), [
    ([70000], "ports: 70000: out of range 1-65535"),
    ([0], "ports: 0: out of range 1-65535"),
    ([-1], "ports: -1: out of range 1-65535"),
    (["http"], "ports: 'http': expected a TCP port number"),
    (["53/udp"], "ports: '53/udp': expected a TCP port number"),
    ([True], "ports: True: expected a TCP port number"),
    ([8.5], "ports: 8.5: expected a TCP port number"),
    ({8080: 70000}, "ports: 8080: host port 70000: out of range"),
    ({8080: "x"}, "ports: 8080: host port 'x': expected a TCP port number"),
    (8080, "ports: 8080: expected a list"),
    ("8080", "ports: '8080': expected a list"),
])
def test_bad_ports_are_config_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunSpec("busybox", ports=value)


def test_ports_need_a_network_to_be_published_on() -> None:
    with pytest.raises(ConfigError, match="ports: 8080, 9090: a container with network='none' "
                                          "has nothing to publish them on"):
        RunSpec("busybox", network="none", ports=[8080, 9090])
    assert RunSpec("busybox", network="none").ports == {}
    assert RunSpec("busybox", network="host", ports=[80]).ports == {80: None}  # Docker ignores


def test_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    spec = RunSpec("busybox", mounts=[f"{tmp_path}/data:/data", f"{tmp_path}:/ro:ro",
                                      f"{tmp_path}:/rw:rw"])
    assert spec.mounts == (Mount(tmp_path / "data", "/data"),
                           Mount(tmp_path, "/ro", read_only=True), Mount(tmp_path, "/rw"))
    assert [str(m) for m in spec.mounts] == [f"{tmp_path}/data:/data", f"{tmp_path}:/ro:ro",
                                             f"{tmp_path}:/rw"]
    monkeypatch.chdir(tmp_path)  # relative: the current directory, or the base given
    assert RunSpec("busybox", mounts=["data:/d"]).mounts == (Mount(tmp_path / "data", "/d"),)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    assert RunSpec.create("busybox", base=elsewhere, mounts=["data:/d"]).mounts == (
        Mount(elsewhere / "data", "/d"),)
    made = Mount(tmp_path, "/m", True)
    assert RunSpec("busybox", mounts=[made]).mounts == (made,)


@pytest.mark.parametrize(("value", "message"), [
    (["relative"], "mounts: 'relative': expected HOST:CONTAINER or HOST:CONTAINER:ro"),
    (["/a:/b:rx"], "mounts: '/a:/b:rx': expected HOST:CONTAINER"),
    (["{tmp}:relative"], "mounts: '.*:relative': the container path must be absolute"),
    ([":/x"], "mounts: ':/x': the host path is empty"),
    (["{tmp}/nope:/x"], "mounts: '.*/nope:/x': .*/nope does not exist on the host"),
    ("{tmp}:/x", "mounts: '.*:/x': expected a list"),
    ([42], "mounts: 42: expected 'HOST:CONTAINER"),
])
def test_bad_mounts(tmp_path: Path, value: object, message: str) -> None:
    if isinstance(value, str):
        value = value.format(tmp=tmp_path)
    else:
        value = [v.format(tmp=tmp_path) if isinstance(v, str) else v for v in value]
    with pytest.raises(ConfigError, match=message):
        RunSpec("busybox", mounts=value)


def test_a_mount_made_by_hand_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the host path must be absolute"):
        Mount(Path("rel"), "/x")
    with pytest.raises(ConfigError, match="the container path must be absolute"):
        Mount(tmp_path, "x")
    with pytest.raises(ConfigError, match="does not exist on the host"):
        RunSpec("busybox", mounts=[Mount(tmp_path / "gone", "/x")])


def test_tmpfs_and_aliases() -> None:
    assert RunSpec("busybox", tmpfs={"/run": "size=1m"}).tmpfs == {"/run": "size=1m"}
    assert RunSpec("busybox", tmpfs=["/run", "/tmp:size=2m"]).tmpfs == {
        "/run": "", "/tmp": "size=2m"}
    assert RunSpec("busybox", aliases=["db", "cache"]).aliases == ("db", "cache")
    with pytest.raises(ConfigError, match="tmpfs: 'run': the container path must be absolute"):
        RunSpec("busybox", tmpfs={"run": ""})
    with pytest.raises(ConfigError, match="tmpfs: /run: 64: expected mount options as text"):
        RunSpec("busybox", tmpfs={"/run": 64})
    with pytest.raises(ConfigError, match="aliases: 'db': expected a list"):
        RunSpec("busybox", aliases="db")
    with pytest.raises(ConfigError, match="aliases: '': expected a name"):
        RunSpec("busybox", aliases=[""])


@pytest.mark.parametrize(("given", "size"), [
    ("256m", 256 * 1024**2), ("1g", 1024**3), ("1GB", 1024**3), ("1GiB", 1024**3),
    ("6m", 6 * 1024**2), ("1.5g", int(1.5 * 1024**3)), (64 * 1024**2, 64 * 1024**2),
    (" 7000000 ", 7_000_000),
])
def test_memory_is_bytes(given: object, size: int) -> None:
    assert RunSpec("busybox", memory=given).memory == size == memory_bytes(given)


@pytest.mark.parametrize(("value", "message"), [
    ("lots", "memory: 'lots': expected bytes or a size like '256m'"),
    ("1m", "memory: '1m': the minimum memory limit is 6m"),  # the same minimum everywhere
    (1024, "memory: 1024: the minimum memory limit is 6m"),
    (True, "memory: True: expected bytes"),
    ("-5m", "memory: '-5m': expected bytes"),
])
def test_bad_memory(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunSpec("busybox", memory=value)


def test_sizes_below_a_memory_limit() -> None:
    """One size reader: Compose's sizes use it without the memory minimum."""
    assert (byte_size("100b"), byte_size("1k"), byte_size(0), byte_size("2MB")) == (
        100, 1024, 0, 2 * 1024**2)
    for bad in (-1, "1x", "", True, float("nan")):
        with pytest.raises(ValueError, match="expected bytes or a size like '256m'"):
            byte_size(bad)


def test_cpus_pids_and_flags() -> None:
    spec = RunSpec("busybox", cpus="0.5", pids=12, read_only=True, init=True)
    assert (spec.cpus, spec.pids, spec.read_only, spec.init) == (0.5, 12, True, True)
    for option, value, message in [
            ("cpus", 0, "cpus: 0: expected a positive number of CPUs"),
            ("cpus", "many", "cpus: 'many': expected a positive"),
            ("cpus", float("inf"), "cpus: inf: expected a positive"),
            ("pids", 0, "pids: 0: expected a whole number >= 1"),
            ("pids", 2.5, "pids: 2.5: expected a whole number"),
            ("pids", True, "pids: True: expected a whole number"),
            ("read_only", "yes", "read_only: 'yes': expected True or False"),
            ("init", 1, "init: 1: expected True or False"),
            ("workdir", "srv", "workdir='srv': the working directory must be absolute"),
            ("name", 5, "name: 5: expected a string"),
            ("user", ["root"], r"user: \['root'\]: expected a string")]:
        with pytest.raises(ConfigError, match=message):
            RunSpec("busybox", **{option: value})
    assert RunSpec("busybox", user=1000).user == "1000"


def test_a_spec_is_frozen_hashable_and_normalising_twice_changes_nothing(tmp_path: Path) -> None:
    one = RunSpec("busybox", command="echo hi", env={"A": "1", "B": "2"}, ports=[80, 81],
                  mounts=[f"{tmp_path}:/x"], tmpfs={"/run": ""}, memory="64m")
    two = RunSpec("busybox", command=["/bin/sh", "-c", "echo hi"], env={"B": "2", "A": "1"},
                  ports={81: None, 80: 0}, mounts=[Mount(tmp_path, "/x")], tmpfs=["/run"],
                  memory=64 * 1024**2)
    assert one == two and hash(one) == hash(two)
    assert {one: "memo"}[two] == "memo"
    assert dataclasses.replace(one, image="other") == dataclasses.replace(two, image="other")
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.ports = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        one.env["A"] = "x"  # type: ignore[index]


def test_frozen_map() -> None:
    first = FrozenMap({"a": 1, "b": 2})
    assert first == {"b": 2, "a": 1} and first == FrozenMap([("b", 2), ("a", 1)])
    assert hash(first) == hash(FrozenMap([("b", 2), ("a", 1)]))
    assert first | {"b": 3, "c": 4} == {"a": 1, "b": 3, "c": 4}
    assert isinstance(first | {}, FrozenMap) and first != {"a": 1}
    assert parse_ports(None) == {} and repr(FrozenMap({1: None})) == "FrozenMap({1: None})"


def test_build_args_keep_one_form_from_the_settings_to_the_build() -> None:
    settings = resolve(environ={}, cli={"build_arg": ["A=1", "B=2"]},
                       pyproject={"dockerfile": "Dockerfile"})
    assert isinstance(settings.build_arg, FrozenMap) and hash(settings.build_arg)
    request = container_request(settings, {"build_args": {"B": "marker", "C": 3}}, "t.py::t")
    assert request.build_args == {"A": "1", "B": "marker", "C": "3"}  # per key over the rest
    assert isinstance(request.build_args, FrozenMap)
    assert container_request(settings, {}, "t.py::t").build_args is settings.build_arg
    assert hash(request)  # a memo key of the shared containers


def test_the_marker_is_applied_to_resolved_settings_not_resolved_again() -> None:
    settings = resolve(environ={}, cli={"scope": "module", "context": "app"})
    assert apply_marker(settings, {}, "t") is settings
    marked = apply_marker(settings, {"scope": "session", "target": "dev"}, "t.py::t")
    assert (marked.scope, marked.target, marked.context) == ("session", "dev", "app")
    assert marked.sources["scope"] == "t.py::t: @pytest.mark.pycontain(scope=...)"
    assert marked.sources["context"] == "--pycontain-context"
    with pytest.raises(ConfigError, match=r"t\.py::t: @pytest\.mark\.pycontain\(scope=\.\.\.\) "
                                          r"= 'weekly': expected one of function"):
        apply_marker(settings, {"scope": "weekly"}, "t.py::t")
    with pytest.raises(ConfigError, match=r"\(build_args=\.\.\.\) must be a mapping"):
        apply_marker(settings, {"build_args": ["A=1"]}, "t.py::t")


def test_the_markers_ports_and_env_are_read_by_the_run_requests_readers() -> None:
    settings = Settings(image="busybox")
    request = container_request(settings, {"ports": [8080], "env": {"A": 1}}, "t.py::t")
    assert request.ports == {8080: None} and request.env == {"A": "1"}
    assert container_request(settings, {"ports": {8080: 18080}}, "t").ports == {8080: 18080}
    assert container_request(settings, {}, "t").ports == {}
    with pytest.raises(ConfigError, match=r"t\.py::t: @pytest\.mark\.pycontain: ports: 70000: "
                                          "out of range"):
        container_request(settings, {"ports": [70000]}, "t.py::t")
    with pytest.raises(ConfigError, match=r"env=\.\.\.\) must be a mapping"):
        container_request(settings, {"env": ["A=1"]}, "t.py::t")


def test_the_factory_hands_the_engine_one_form_with_mounts_from_the_rootdir(
        pytester: pytest.Pytester) -> None:
    """Through the plugin on the FakeEngine (no root): what ``pycontain.run`` and the marker
    give an engine is the normalised request; a bad option fails before any pull."""
    from pytest_pycontain.testing import FakeEngine, SupplyEngine

    engine = FakeEngine()
    (pytester.path / "data").mkdir()
    pytester.mkpydir("sub")
    pytester.makepyfile(**{"sub/test_it": """
        import pytest
        from pytest_pycontain.errors import ConfigError

        def test_run(pycontain):
            pycontain.run("busybox", name="one", command="echo hi", ports=[8080],
                          mounts=["data:/data:ro"], env={"N": 1}, memory="64m")

        def test_bad(pycontain):
            with pytest.raises(ConfigError, match="memory: '1k': the minimum memory limit"):
                pycontain.run("never-pulled", memory="1k")

        @pytest.mark.pycontain(ports={"8080/tcp": 18080}, env={"LEVEL": 2})
        def test_marker(container):
            pass
    """})
    result = pytester.runpytest("-p", "no:cacheprovider", "--pycontain-image=busybox",
                                plugins=[SupplyEngine(engine)])
    result.assert_outcomes(passed=3)
    first, marked = engine.runs
    assert first.command == ("/bin/sh", "-c", "echo hi") and first.ports == {8080: None}
    assert first.mounts == (Mount(pytester.path / "data", "/data", read_only=True),)
    assert first.env == {"N": "1"} and first.memory == 64 * 1024**2
    assert marked.ports == {8080: 18080} and marked.env == {"LEVEL": "2"}
    assert not any("never-pulled" in event for event in engine.events)


def test_a_read_only_write_is_told_which_option_made_it_read_only(tmp_path: Path) -> None:
    """The lines of a log that say "Read-only file system" name the read-only volumes and
    mounts they write under; a writable one, a path beside one, or another error is not."""
    spec = RunSpec("img", volumes=["data:/data:ro", "rw:/rw"],
                   mounts=[f"{tmp_path}:/mnt/x:ro"])
    logs = ("sh: can't create /data/x: Read-only file system\n"
            "mkdir: can't create directory '/mnt/x/a': Read-only file system\n"
            "touch: /rw/a: Read-only file system\n"
            "/datax/y: Read-only file system\n"
            "cat: /data/z: No such file or directory\n")
    assert spec.read_only_cause(logs) == (
        f"volumes: 'data:/data:ro' mounts /data read-only; "
        f"mounts: '{tmp_path}:/mnt/x:ro' mounts /mnt/x read-only")
    assert spec.read_only_cause("touch: /rw/a: Read-only file system\n") == ""
    assert spec.read_only_cause("cat: /data/z: No such file or directory\n") == ""
