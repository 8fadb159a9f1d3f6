"""RUN --mount: bind (context, stage), cache, tmpfs and secret mounts, with what they leave
in the layer (nothing), in the cache key, and on the host (nothing but the caches)."""

from __future__ import annotations

import os
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pycontain.build import build
from pytest_pycontain.cli_build import _secret
from pytest_pycontain.errors import BuildError, DockerfileError, ImageNotFound, NotSupported
from pytest_pycontain.native.engine import native_runner
from pytest_pycontain.runmounts import Caches, RunMount, parse
from pytest_pycontain.store import Store

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs the native engine (root)")


# ------------------------------------------------------------------------------ the flag


def test_defaults_of_each_type() -> None:
    assert parse("type=bind,target=/src", "/") == RunMount("bind", "/src", readonly=True)
    assert parse("target=/src,rw", "/") == RunMount("bind", "/src", readonly=False)
    assert parse("type=cache,target=/root/.cache", "/") == RunMount(
        "cache", "/root/.cache", id="/root/.cache")
    assert parse("type=tmpfs,target=/t,size=64m", "/") == RunMount("tmpfs", "/t", size="64m")
    assert parse("type=secret,id=token", "/") == RunMount(
        "secret", "/run/secrets/token", id="token", mode=0o400)
    assert parse("type=secret,target=/etc/npmrc", "/") == RunMount(
        "secret", "/etc/npmrc", id="npmrc", mode=0o400)
    assert parse("type=secret,id=t,env=TOKEN", "/") == RunMount(
        "secret", "", id="t", mode=0o400, env="TOKEN")


def test_aliases_relative_targets_and_options() -> None:
    got = parse('type=bind,src=app,dst=code,from=builder,ro=false,readwrite', "/work")
    assert (got.source, got.target, got.from_, got.readonly) == ("app", "/work/code", "builder",
                                                                 False)
    got = parse("type=cache,destination=../c,id=pip,sharing=LOCKED,mode=0700,uid=10,gid=20",
                "/work/sub")
    assert (got.target, got.id, got.sharing, got.mode, got.uid, got.gid) == (
        "/work/c", "pip", "locked", 0o700, 10, 20)
    assert parse('"type=cache","target=/a,b"', "/").target == "/a,b"  # CSV quoting


@pytest.mark.parametrize(("text", "message"), [
    ("type=volume,target=/x", "unknown mount type 'volume'"),
    ("type=cache,target=/x,colour=red", "unknown key 'colour' for type=cache"),
    ("type=tmpfs,target=/x,id=a", "unknown key 'id' for type=tmpfs"),
    ("type=cache", "type=cache needs a target"),
    ("type=cache,target=/x,sharing=sometimes", "sharing='sometimes'"),
    ("type=cache,target=/x,target=/y", "'target' is given twice"),
    ("type=cache,target=/x,mode=rwx", "mode='rwx' is not a number"),
    ("type=cache,target=/x,uid=me", "uid='me' is not a number"),
    ("type=bind,target=/x,readonly=maybe", "readonly='maybe': expected true or false"),
    ("type=cache,target", "'target' needs a value"),
    ("type=secret", "a secret needs an id"),
    ("type=bind,target=/x,ro,rw", "readonly and readwrite together"),
])
def test_bad_flags_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text, "/", "ctx/Dockerfile", 7)
    assert str(info.value).startswith(f"ctx/Dockerfile:7: RUN --mount={text}: ")
    assert message in str(info.value)


def test_what_is_not_supported_says_so() -> None:
    with pytest.raises(NotSupported, match=r"Dockerfile:3: RUN --mount=type=ssh"):
        parse("type=ssh", "/", "Dockerfile", 3)
    with pytest.raises(NotSupported, match="seeding a cache from a stage"):
        parse("type=cache,target=/x,from=builder", "/", "Dockerfile", 3)


def test_the_cache_key_sees_every_option() -> None:
    base = parse("type=cache,target=/x", "/")
    assert base.key() == parse("type=cache,target=/x", "/").key()
    for other in ("type=cache,target=/y", "type=cache,target=/x,id=z",
                  "type=cache,target=/x,sharing=locked", "type=cache,target=/x,uid=1",
                  "type=cache,target=/x,ro"):
        assert parse(other, "/").key() != base.key(), other


def test_the_secret_flag_of_the_command_line() -> None:
    assert _secret("id=npm,src=/home/me/.npmrc") == ("npm", "/home/me/.npmrc")
    assert _secret("type=file,id=a,source=rel/path") == ("a", "rel/path")
    for bad in ("id=a", "src=/x", "id=a,src=/x,env=X", "type=env,id=a,src=/x"):
        with pytest.raises(Exception, match="expected id=ID,src=PATH"):
            _secret(bad)


# ------------------------------------------------------------------------------ the caches


@needs_root
def test_cache_directories_are_made_once_with_their_owner(tmp_path: Path) -> None:
    caches = Caches(tmp_path / "caches")
    mount = parse("type=cache,target=/c,uid=1234,gid=99,mode=0700", "/")
    with caches.hold(mount) as path:
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 99, 0o700)
        (path / "kept").write_text("x")
    with caches.hold(parse("type=cache,target=/c,mode=0755", "/")) as again:
        assert again == path and (again / "kept").exists()  # same id: same directory
        assert again.stat().st_mode & 0o7777 == 0o700  # made once: options of the first
    assert [p.name for p in (tmp_path / "caches").iterdir() if p.name.startswith(".")] == []


@needs_root
def test_private_caches_are_not_shared_and_locked_ones_wait(tmp_path: Path) -> None:
    caches = Caches(tmp_path / "caches")
    private = parse("type=cache,target=/c,sharing=private", "/")
    with caches.hold(private) as first, caches.hold(private) as second:
        assert first != second
    with caches.hold(private) as third:
        assert third == first  # free again
    locked = parse("type=cache,target=/l,sharing=locked", "/")
    order: list[str] = []
    holding = threading.Event()

    def other() -> None:
        holding.wait()
        with caches.hold(locked):
            order.append("second")

    thread = threading.Thread(target=other)
    thread.start()
    with caches.hold(locked):
        holding.set()
        time.sleep(0.3)  # the other build is waiting for the lock meanwhile
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]


@needs_root
def test_clearing_the_caches_spares_those_in_use(tmp_path: Path) -> None:
    caches = Caches(tmp_path / "caches")
    idle, busy = parse("type=cache,target=/idle", "/"), parse("type=cache,target=/busy", "/")
    with caches.hold(idle) as path:
        (path / "data").write_bytes(b"x" * 1000)
    with caches.hold(busy) as in_use:
        (in_use / "keep").write_text("k")
        assert caches.clear() == (1, 1000)  # the idle one only
        assert (in_use / "keep").read_text() == "k"
    assert caches.clear() == (1, 1)
    with caches.hold(idle) as path:
        assert list(path.iterdir()) == []  # made afresh
    assert Caches(tmp_path / "none").clear() == (0, 0)


# ------------------------------------------------------------------------------ in builds


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, test_registry) -> Store:
    return Store(tmp_path_factory.mktemp("mounts-store"), registry_mirror=test_registry.url,
                 attempts=2, backoff=0.01)


@pytest.fixture(scope="module")
def runner() -> Iterator:
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine()
    yield native_runner(engine)
    engine.close()


def names(store: Store, image, layer: int = -1) -> list[str]:
    """What a RUN's layer holds, but for runc's /proc and /sys mount points (kept, as Docker
    keeps them: busybox has neither)."""
    with tarfile.open(store.blob_path(image.layers[layer].digest)) as tar:
        return sorted(n.rstrip("/") for n in tar.getnames() if n not in ("proc", "sys"))


def content(store: Store, image, name: str) -> str:
    for layer in reversed(image.layers):
        with tarfile.open(store.blob_path(layer.digest)) as tar:
            try:
                return tar.extractfile(name).read().decode()
            except KeyError:
                continue
    raise KeyError(name)


def leftovers(store: Store) -> list[str]:
    """What a build left in the store's scratch directory (copies of bind sources, secrets)."""
    scratch = Path(store.root) / "tmp"
    return sorted(p.name for p in scratch.iterdir()) if scratch.exists() else []


@needs_root
def test_bind_mounts_of_the_context(tmp_path: Path, store: Store, runner) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / "app" / "debug.log").write_text("noise")
    (tmp_path / "requirements.txt").write_text("flask==3.0\n")
    (tmp_path / ".dockerignore").write_text("*.log\n**/*.log\n")
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox
WORKDIR /work
RUN --mount=type=bind,source=requirements.txt,target=/tmp/req.txt cat /tmp/req.txt > /seen
RUN --mount=type=bind,src=app,dst=code ls code > /listing && \\
    if touch code/new 2>/dev/null; then echo writable; else echo read-only; fi > /ro
RUN --mount=type=bind,target=/ctx,rw touch /ctx/written && ls -A /ctx > /ctx-listing
""")
    image = build(store, tmp_path, run_step=runner, no_cache=True)
    assert content(store, image, "seen") == "flask==3.0\n"
    assert content(store, image, "listing") == "main.py\n"  # .dockerignore holds for mounts
    assert content(store, image, "ro") == "read-only\n"
    assert content(store, image, "ctx-listing").split() == [
        ".dockerignore", "Dockerfile", "app", "requirements.txt", "written"]
    assert not (tmp_path / "written").exists()  # rw: the step's writes are thrown away
    for layer, made in ((-3, ["seen"]), (-2, ["listing", "ro"]), (-1, ["ctx-listing"])):
        assert names(store, image, layer) == made, "a mount point was left in the layer"
    assert "tmp/req.txt" not in names(store, image, -3)
    assert leftovers(store) == []


@needs_root
def test_a_bind_mounts_files_are_in_the_cache_key(tmp_path: Path, store: Store,
                                                  runner) -> None:
    (tmp_path / "requirements.txt").write_text("one\n")
    (tmp_path / "unrelated").write_text("a")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN --mount=type=bind,source=requirements.txt,target=/r cat /r > /got\n")
    seen: list[str] = []
    first = build(store, tmp_path, run_step=runner, progress=seen.append)
    (tmp_path / "unrelated").write_text("b")  # not mounted: the step stays cached
    seen.clear()
    again = build(store, tmp_path, run_step=runner, progress=seen.append)
    assert again.id == first.id and any("CACHED" in line for line in seen)
    (tmp_path / "requirements.txt").write_text("two\n")
    changed = build(store, tmp_path, run_step=runner)
    assert content(store, changed, "got") == "two\n"


@needs_root
def test_bind_mounts_of_a_stage(tmp_path: Path, store: Store, runner) -> None:
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox AS builder
RUN mkdir -p /out && echo artifact > /out/app && chown 1000:1000 /out/app
FROM busybox
RUN --mount=type=bind,from=builder,source=/out,target=/from-builder \\
    cat /from-builder/app > /copied && stat -c '%u' /from-builder/app > /owner
""")
    image = build(store, tmp_path, run_step=runner)
    assert content(store, image, "copied") == "artifact\n"
    assert content(store, image, "owner") == "1000\n"  # a stage's files keep their owner
    assert names(store, image) == ["copied", "owner"]


@needs_root
def test_cache_mounts_outlive_the_build(tmp_path: Path, store: Store, runner) -> None:
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox
RUN --mount=type=cache,target=/root/.cache/tool \\
    echo run >> /root/.cache/tool/log && wc -l < /root/.cache/tool/log | tr -d ' ' > /count
RUN --mount=type=cache,target=/owned,uid=65534,mode=0700,id=owned-cache \\
    stat -c '%u %a' /owned > /owned-stat
""")
    first = build(store, tmp_path, run_step=runner, no_cache=True)
    second = build(store, tmp_path, run_step=runner, no_cache=True)
    assert content(store, first, "count") == "1\n"
    assert content(store, second, "count") == "2\n"  # the same directory, kept
    assert content(store, second, "owned-stat") == "65534 700\n"
    assert names(store, second, -2) == ["count"]  # no /root/.cache left, no copied-up /root
    assert names(store, second, -1) == ["owned-stat"]


@needs_root
def test_tmpfs_mounts(tmp_path: Path, store: Store, runner) -> None:
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox
RUN --mount=type=tmpfs,target=/scratch,size=1m echo t > /scratch/t && \\
    grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /fs && ls /scratch > /seen
""")
    image = build(store, tmp_path, run_step=runner, no_cache=True)
    assert content(store, image, "fs") == "tmpfs\n"
    assert content(store, image, "seen") == "t\n"
    assert names(store, image) == ["fs", "seen"]


@needs_root
def test_secrets_are_mounted_but_kept_out_of_layers_and_keys(tmp_path: Path, store: Store,
                                                             runner) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-token"
    secret.write_text("s3cret")
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox
RUN --mount=type=secret,id=token \\
    stat -c '%a %u' /run/secrets/token > /mode && wc -c < /run/secrets/token | tr -d ' ' > /len
RUN --mount=type=secret,id=token,env=TOKEN,uid=65534 echo ${#TOKEN} > /env-len
RUN --mount=type=secret,id=absent \\
    if test -e /run/secrets/absent; then echo y; else echo n; fi > /absent
""")
    image = build(store, tmp_path, run_step=runner, secrets={"token": secret})
    assert content(store, image, "mode") == "400 0\n"
    assert content(store, image, "len") == "6\n"
    assert content(store, image, "env-len") == "6\n"
    assert content(store, image, "absent") == "n\n"  # not given, not required: no mount
    every = [n for layer in range(len(image.layers)) for n in names(store, image, layer)]
    assert not [n for n in every if n.startswith("run/secrets")]
    assert "s3cret" not in str(image.raw_config)
    secret.write_text("other!")  # the same length: only a key holding the bytes would see it
    seen: list[str] = []
    build(store, tmp_path, run_step=runner, secrets={"token": secret}, progress=seen.append)
    assert sum("CACHED" in line for line in seen) == 3  # secrets are not in the cache key
    assert leftovers(store) == []


@needs_root
def test_mount_failures_name_the_line_and_leave_nothing(tmp_path: Path, store: Store,
                                                        runner) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN echo fine\n"
        "RUN --mount=type=secret,id=npmrc,required cat /run/secrets/npmrc\n")
    with pytest.raises(BuildError, match=r"Dockerfile:3: secret 'npmrc' is required but not "
                                         r"given \(given: none\)"):
        build(store, tmp_path, run_step=runner, tag="mounts:failed")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=bind,source=missing.txt,target=/m true\n")
    with pytest.raises(BuildError, match=r"Dockerfile:2: .*missing.txt: file not found in "
                                         r"build context"):
        build(store, tmp_path, run_step=runner, tag="mounts:failed")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=bind,target=/ro touch /ro/x\n")
    with pytest.raises(BuildError, match=r"Dockerfile:2: RUN /bin/sh -c touch /ro/x: exited "
                                         r"with code 1\ntouch: /ro/x: Read-only file system"):
        build(store, tmp_path, run_step=runner, tag="mounts:failed", no_cache=True)
    with pytest.raises(ImageNotFound):
        store.get("mounts:failed")
    assert leftovers(store) == []


@needs_root
def test_the_command_line_passes_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    from pytest_pycontain import cli
    from pytest_pycontain.config import resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "token").write_text("abcd")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=secret,id=t,required --mount=type=cache,target=/c \\\n"
        "    wc -c < /run/secrets/t > /len\n")
    assert cli.main(["build", "--secret", "id=t,src=token", "-t", "cli-secret:1",
                     str(context)]) == 0
    store = Store.from_settings(resolve())
    assert content(store, store.get("cli-secret:1"), "len") == "4\n"
    capsys.readouterr()
    assert cli.main(["build", "--no-cache", str(context)]) == 1
    assert "secret 't' is required but not given" in capsys.readouterr().err
    assert cli.main(["prune", "--build-cache"]) == 0
    assert "RUN --mount=type=cache directories" in capsys.readouterr().out
    assert not [p for p in (Path(store.root) / "run-cache").iterdir() if p.is_dir()]


@needs_root
def test_independent_stages_build_at_the_same_time(tmp_path: Path, store: Store,
                                                   runner) -> None:
    """Stage ``a`` waits for a file that only stage ``b`` makes, in a cache mount both share:
    built one after the other (``a`` first, as the target names it first) ``a`` gives up after
    its timeout and the build fails saying so; built at once, as BuildKit does, both finish.
    The token keeps an earlier run's file from answering for this one."""
    token = os.urandom(8).hex()
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox AS a
ARG TOKEN
RUN --mount=type=cache,target=/meet,id=rendezvous,sharing=shared \\
    i=0; until [ -e /meet/$TOKEN ]; do \\
      i=$((i+1)); [ $i -lt 1200 ] || { echo "b never came: built in sequence?"; exit 7; }; \\
      sleep 0.05; done; echo a > /a

FROM busybox AS b
ARG TOKEN
RUN --mount=type=cache,target=/meet,id=rendezvous,sharing=shared \\
    echo b > /b && touch /meet/$TOKEN

FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
""")
    image = build(store, tmp_path, run_step=runner, build_args={"TOKEN": token})
    assert (content(store, image, "a"), content(store, image, "b")) == ("a\n", "b\n")


@needs_root
def test_concurrent_stages_report_the_first_failure_in_order(tmp_path: Path, store: Store,
                                                             runner) -> None:
    """Two independent stages fail at once: the error is the one a build in order meets
    first (the stage the target names first), every time, and nothing is left running."""
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox AS first
RUN sleep 0.2; exit 3

FROM busybox AS second
RUN exit 4

FROM busybox
COPY --from=first /etc/passwd /one
COPY --from=second /etc/passwd /two
""")
    for _ in range(2):
        with pytest.raises(BuildError, match=r"Dockerfile:2: RUN .*exited with code 3"):
            build(store, tmp_path, run_step=runner, no_cache=True)
    assert leftovers(store) == []


def test_a_cycle_across_stages_is_still_an_error(tmp_path: Path, store: Store) -> None:
    (tmp_path / "Dockerfile").write_text("""\
FROM busybox AS a
COPY --from=b /x /x

FROM busybox AS b
COPY --from=a /y /y

FROM busybox
COPY --from=a /x /x
""")
    with pytest.raises(DockerfileError, match="circular dependency detected on stage"):
        build(store, tmp_path)
