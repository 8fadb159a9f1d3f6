"""Building images: instructions, stages, COPY/ADD rules, the config Docker writes, errors.

Steps that need no container run everywhere; RUN runs in the native engine (root only).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pycontain.build import build
from pytest_pycontain.errors import BuildError, DockerfileError, ImageNotFound, NotSupported
from pytest_pycontain.native.engine import native_runner
from pytest_pycontain.store import Store

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs the native engine (root)")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, test_registry) -> Store:
    return Store(tmp_path_factory.mktemp("build-store"), registry_mirror=test_registry.url,
                 attempts=2, backoff=0.01)


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def tree(store: Store, image) -> dict[str, tarfile.TarInfo]:
    """The image's files as the last layer naming each path has them (no whiteouts here)."""
    found: dict[str, tarfile.TarInfo] = {}
    for layer in image.layers:
        with tarfile.open(store.blob_path(layer.digest)) as tar:
            for member in tar.getmembers():
                found[member.name.rstrip("/")] = member
    return found


def content(store: Store, image, name: str) -> bytes:
    for layer in reversed(image.layers):
        with tarfile.open(store.blob_path(layer.digest)) as tar:
            try:
                return tar.extractfile(name).read()
            except KeyError:
                continue
    raise KeyError(name)


def test_config_instructions_from_scratch(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": """\
FROM scratch
ARG VERSION=1.0
ENV APP=/opt/app VERSION_FULL=v${VERSION}
ENV LEGACY some value
LABEL org.example.version="$VERSION_FULL" "multi word"=yes
EXPOSE 8080 53/udp 9000-9001
VOLUME ["/data"]
VOLUME /cache /logs
WORKDIR $APP
WORKDIR sub
USER 1000:1000
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=4 CMD wget -q localhost
SHELL ["/bin/bash", "-eu", "-c"]
CMD run --fast
ENTRYPOINT ["/entry"]
ONBUILD COPY . /src
MAINTAINER someone
"""})
    image = build(store, tmp_path, tag="cfg:1")
    config = image.config
    assert config["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "APP=/opt/app", "VERSION_FULL=v1.0", "LEGACY=some value"]
    assert config["Labels"] == {"org.example.version": "v1.0", "multi word": "yes"}
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}, "9000/tcp": {},
                                      "9001/tcp": {}}
    assert config["Volumes"] == {"/data": {}, "/cache": {}, "/logs": {}}
    assert config["WorkingDir"] == "/opt/app/sub"
    assert config["User"] == "1000:1000"
    assert config["StopSignal"] == "SIGQUIT"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"],
                                     "Interval": 30_000_000_000, "Timeout": 5_000_000_000,
                                     "StartPeriod": 60_000_000_000, "Retries": 4}
    assert config["Shell"] == ["/bin/bash", "-eu", "-c"]
    assert config["Entrypoint"] == ["/entry"]
    # shell form uses the SHELL of its time; a CMD of the same stage survives ENTRYPOINT
    assert config["Cmd"] == ["/bin/bash", "-eu", "-c", "run --fast"]
    assert config["OnBuild"] == ["COPY . /src"]
    assert image.raw_config["author"] == "someone"
    history = image.raw_config["history"]
    assert history[0]["created_by"].startswith("ARG VERSION=1.0")
    assert all(h["created"] == "1970-01-01T00:00:00Z" for h in history)
    assert [h["created_by"] for h in history if not h.get("empty_layer")] == [
        "WORKDIR /opt/app", "WORKDIR /opt/app/sub"]
    assert image.tags == ["docker.io/library/cfg:1"] or "cfg:1" in image.tags[0]
    # WORKDIR made the directories, root-owned 0755
    files = tree(store, image)
    assert files["opt/app/sub"].isdir() and files["opt/app/sub"].mode == 0o755


def test_entrypoint_resets_the_base_images_cmd(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": 'FROM scratch\nENTRYPOINT ["/e"]\nCMD ["a", "b"]\n'})
    image = build(store, tmp_path, tag="with-cmd:1")
    assert image.config["Entrypoint"] == ["/e"] and image.config["Cmd"] == ["a", "b"]
    write(tmp_path, {"Dockerfile": 'FROM with-cmd:1\nENTRYPOINT ["/other"]\n'})
    child = build(store, tmp_path)
    assert child.config["Entrypoint"] == ["/other"] and child.config["Cmd"] is None


def test_same_inputs_same_digest_and_source_date_epoch(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "x"})
    first = build(store, tmp_path)
    second = build(store, tmp_path, no_cache=True)
    assert first.id == second.id and first.digest == second.digest
    dated = build(store, tmp_path, build_args={"SOURCE_DATE_EPOCH": "1700000000"})
    assert dated.raw_config["created"] == "2023-11-14T22:13:20Z"
    assert tree(store, dated)["a"].mtime <= 1_700_000_000


def test_copy_rules(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {
        "Dockerfile": """\
FROM scratch
COPY file.txt /single
COPY file.txt /dir/
COPY src /app
COPY src/ /app2/
COPY *.md /docs/
COPY --chmod=0751 file.txt /modes/
COPY ["file.txt", "src/a.py", "/multi/"]
WORKDIR /w
COPY file.txt rel
""",
        "file.txt": "hello", "src/a.py": "a", "src/pkg/b.py": "b", "one.md": "1", "two.md": "2",
    })
    os.symlink("a.py", tmp_path / "src" / "link")
    os.chmod(tmp_path / "file.txt", 0o640)
    image = build(store, tmp_path)
    files = tree(store, image)
    assert files["single"].isfile() and files["single"].mode == 0o640
    assert files["dir/file.txt"].isfile()
    assert files["app/a.py"].isfile() and files["app/pkg/b.py"].isfile()
    assert "app/src" not in files  # a directory's contents are copied, not the directory
    assert files["app/link"].issym() and files["app/link"].linkname == "a.py"
    assert files["app2/pkg/b.py"].isfile()
    assert files["docs/one.md"].isfile() and files["docs/two.md"].isfile()
    assert files["modes/file.txt"].mode == 0o751
    assert files["multi/file.txt"].isfile() and files["multi/a.py"].isfile()
    assert files["w/rel"].isfile()
    assert all((m.uid, m.gid) == (0, 0) for m in files.values())
    assert content(store, image, "app/pkg/b.py") == b"b"


def test_chown_by_name_through_the_images_passwd(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {
        "Dockerfile": """\
FROM scratch
COPY passwd group /etc/
COPY --chown=app file /by-name
COPY --chown=app:staff file /by-names
COPY --chown=5:6 file /by-ids
COPY --chown=7 file /by-uid
""",
        "passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        "group": "root:x:0:\nstaff:x:50:\n", "file": "f"})
    files = tree(store, build(store, tmp_path))
    assert (files["by-name"].uid, files["by-name"].gid) == (1000, 1001)
    assert (files["by-names"].uid, files["by-names"].gid) == (1000, 50)
    assert (files["by-ids"].uid, files["by-ids"].gid) == (5, 6)
    assert (files["by-uid"].uid, files["by-uid"].gid) == (7, 7)
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY --chown=nobody file /x\n"})
    with pytest.raises(BuildError, match=r"Dockerfile:2: .*unable to find user nobody"):
        build(store, tmp_path)


def test_dockerignore_and_exceptions(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
                     ".dockerignore": "*.log\nsecret\nbuild\n!build/keep\n",
                     "a.txt": "a", "x.log": "l", "secret": "s", "build/out": "o",
                     "build/keep": "k"})
    files = tree(store, build(store, tmp_path))
    names = {n for n in files if n.startswith("ctx/")}
    assert names == {"ctx/a.txt", "ctx/Dockerfile", "ctx/.dockerignore", "ctx/build",
                     "ctx/build/keep"}
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY secret /s\n"})
    with pytest.raises(BuildError, match=r"Dockerfile:2: .*secret.*excluded by \.dockerignore"):
        build(store, tmp_path, tag="never:tagged")
    with pytest.raises(ImageNotFound):
        store.get("never:tagged")


def test_copy_exclude(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {
        "dir1/a.1": "a", "dir1/a.2": "a", "dir1/dir2/a.1": "a", "dir1/dir2/a.2": "a",
        "home.md": "h", "homework.txt": "h", "src/app.py": "x", "src/app.pyc": "x",
        "src/pkg/mod.pyc": "x", "src/pkg/keep.pyc": "x", ".dockerignore": "src/app.py\n",
        "Dockerfile": """\
FROM scratch
ARG PATTERN=*.1
COPY --exclude=$PATTERN dir1 /shallow/
COPY --exclude=**/*.1 dir1 /deep/
COPY --exclude=*.txt hom* /docs/
COPY --exclude=**/*.pyc --exclude=!pkg/keep.pyc src /app/
COPY --exclude=dir2 dir1 /nodir/
"""})
    image = build(store, tmp_path)
    files = {name for name, info in tree(store, image).items() if info.isfile()}
    # patterns are .dockerignore's, relative to each source: *.1 only at its top
    assert {f for f in files if f.startswith("shallow/")} == {
        "shallow/a.2", "shallow/dir2/a.1", "shallow/dir2/a.2"}
    assert {f for f in files if f.startswith("deep/")} == {"deep/a.2", "deep/dir2/a.2"}
    assert {f for f in files if f.startswith("docs/")} == {"docs/home.md"}
    assert {f for f in files if f.startswith("app/")} == {"app/pkg/keep.pyc"}
    assert {f for f in files if f.startswith("nodir/")} == {"nodir/a.1", "nodir/a.2"}
    history = [h["created_by"] for h in image.raw_config["history"]]
    assert "COPY --exclude=*.1 dir1 /shallow/ # buildkit" in history
    seen: list[str] = []
    build(store, tmp_path, progress=seen.append)
    assert sum("CACHED" in line for line in seen) == 5
    write(tmp_path, {"src/pkg/mod.pyc": "changed"})  # excluded: the cache holds
    seen.clear()
    build(store, tmp_path, progress=seen.append)
    assert sum("CACHED" in line for line in seen) == 5
    write(tmp_path, {"src/pkg/keep.pyc": "changed"})  # brought back by its ! pattern
    seen.clear()
    build(store, tmp_path, progress=seen.append)
    assert [line.split(" # ")[0] for line in seen if "COPY" in line and "CACHED" not in line] \
        == ["#5 COPY --exclude=**/*.pyc --exclude=!pkg/keep.pyc src /app/",
            "#6 COPY --exclude=dir2 dir1 /nodir/"]
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY --exclude=! dir1 /x/\n"})
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: COPY --exclude: illegal exclusion"):
        build(store, tmp_path)


def test_multi_stage_target_and_copy_from(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": """\
ARG BASE=scratch
FROM ${BASE} AS files
COPY a /built/a
FROM scratch AS unused
COPY missing /nope
FROM files AS second
ENV FROM_FILES=1
FROM scratch
COPY --from=files /built/a /from-name
COPY --from=0 /built /from-index/
COPY --from=second /built/a /from-second
""", "a": "A"})
    seen: list[str] = []
    image = build(store, tmp_path, progress=seen.append)
    files = tree(store, image)
    assert {"from-name", "from-index/a", "from-second"} <= set(files)
    assert content(store, image, "from-name") == b"A"
    assert not any("missing" in line for line in seen)  # the unused stage was not built
    target = build(store, tmp_path, target="second")
    assert "FROM_FILES=1" in target.config["Env"]
    with pytest.raises(DockerfileError, match="target stage 'nope' could not be found"):
        build(store, tmp_path, target="nope")


def test_base_image_and_args(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": """\
ARG TAG=latest
FROM busybox:${TAG}
ARG TAG
ARG TARGETARCH
ARG UNSET
ENV SEEN="tag=$TAG arch=$TARGETARCH unset=${UNSET:-none} proxy=${HTTP_PROXY:-x}"
COPY --chown=nobody f /f
"""})
    write(tmp_path, {"f": "f"})
    seen: list[str] = []
    image = build(store, tmp_path, build_args={"HTTP_PROXY": "http://proxy:3128", "NOPE": "1"},
                  progress=seen.append)
    assert "[warning] build args not consumed: NOPE" in seen
    env = dict(item.split("=", 1) for item in image.config["Env"])
    arch = store.platform.architecture
    assert env["SEEN"] == f"tag=latest arch={arch} unset=none proxy=x"
    busybox = store.get("busybox:latest")
    assert image.layers[: len(busybox.layers)] == busybox.layers
    files = tree(store, image)
    assert files["f"].uid == 65534  # nobody, from busybox's /etc/passwd


def test_onbuild_triggers_run_in_the_child(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": "FROM scratch\nONBUILD COPY a /triggered\n", "a": "a"})
    build(store, tmp_path, tag="onbuild-base:1")
    write(tmp_path, {"Dockerfile": "FROM onbuild-base:1\nENV X=1\n"})
    child = build(store, tmp_path)
    assert "triggered" in tree(store, child)
    assert child.config["OnBuild"] is None


def test_add_tar_and_url(tmp_path: Path, store: Store) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("inner/file")
        info.size = 2
        info.uid = 42
        tar.addfile(info, io.BytesIO(b"hi"))
    served = tmp_path / "served"
    write(served, {"remote.txt": "remote"})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ctx = tmp_path / "ctx"
        write(ctx, {"archive.tar.gz": buffer.getvalue(), "Dockerfile": f"""\
FROM scratch
ADD archive.tar.gz /x/
COPY archive.tar.gz /y/
ADD http://127.0.0.1:{server.server_port}/remote.txt /dl/
ADD --checksum=sha256:{hashlib.sha256(b"remote").hexdigest()} \\
    http://127.0.0.1:{server.server_port}/remote.txt /sum/
ADD --unpack=false archive.tar.gz /z/
"""})
        image = build(store, ctx)
        write(ctx, {"Dockerfile": "FROM scratch\nADD --checksum=sha256:00ff "
                                  f"http://127.0.0.1:{server.server_port}/remote.txt /\n"})
        with pytest.raises(BuildError, match=r"Dockerfile:2: .*checksum mismatch"):
            build(store, ctx)
    finally:
        server.shutdown()
    files = tree(store, image)
    assert files["x/inner/file"].isfile() and files["x/inner/file"].uid == 42
    assert files["y/archive.tar.gz"].isfile()  # COPY never extracts
    assert files["dl/remote.txt"].mode == 0o600
    assert content(store, image, "dl/remote.txt") == b"remote"
    assert content(store, image, "sum/remote.txt") == b"remote"
    assert files["z/archive.tar.gz"].isfile()  # --unpack=false


def test_heredoc_copy(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": "FROM scratch\nENV WHO=world\nCOPY <<EOF /greeting\n"
                                   "hello $WHO\nEOF\n"})
    image = build(store, tmp_path)
    assert content(store, image, "greeting") == b"hello world\n"


@pytest.mark.parametrize(
    ("dockerfile", "error", "message"),
    [
        ("FROM scratch\nBOGUS x\n", DockerfileError, r"Dockerfile:2: unknown instruction"),
        ("FROM scratch\nARG =x\n", DockerfileError, r"Dockerfile:2: .*can not be blank"),
        ("FROM scratch\nCOPY a\n", DockerfileError, r"Dockerfile:2: COPY requires at least"),
        ("FROM scratch\nCOPY --bogus a /\n", DockerfileError, r"Dockerfile:2: .*unknown flag"),
        ("FROM scratch\nCOPY missing /\n", BuildError, r"Dockerfile:2: .*missing.*not found"),
        ("FROM scratch\nCOPY ../outside /\n", BuildError, r"Dockerfile:2: .*outside the build"),
        ("FROM scratch\nCOPY --from=nostage /a /\n", DockerfileError,
         r"Dockerfile:2: --from=nostage names no build stage"),
        ('FROM scratch\nARG X\nENV Y="${X:?X is required}"\n', DockerfileError,
         r"Dockerfile:3: .*X is required"),
        ("FROM scratch AS a\nCOPY --from=a /x /\n", DockerfileError,
         r"Dockerfile:2: circular dependency"),
        ("FROM a AS a\n", DockerfileError, r"Dockerfile:1: circular dependency"),
        ("# syntax=example.com/front:1\nFROM scratch\n", DockerfileError,
         "custom front ends are not supported"),
        ("FROM scratch\nRUN true\n", NotSupported, "RUN needs a container engine"),
    ],
)
def test_bad_input_is_an_error_at_file_line(tmp_path: Path, store: Store, dockerfile: str,
                                            error: type, message: str) -> None:
    write(tmp_path, {"Dockerfile": dockerfile, "a": "a"})
    with pytest.raises(error, match=message):
        build(store, tmp_path, tag="bad:input")
    with pytest.raises(ImageNotFound):
        store.get("bad:input")


def test_syntax_directive_of_docker_is_accepted(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": "# syntax=docker/dockerfile:1\nFROM scratch\nENV A=1\n"})
    assert "A=1" in build(store, tmp_path).config["Env"]


def test_platform_flag_accepts_the_host_platform_only(tmp_path: Path, store: Store) -> None:
    write(tmp_path, {"Dockerfile": "FROM --platform=$BUILDPLATFORM scratch AS a\n"
                                   "ARG TARGETPLATFORM\nENV P=$TARGETPLATFORM\n"})
    image = build(store, tmp_path)
    host = f"{store.platform.os}/{store.platform.architecture}"
    assert any(e.startswith(f"P={host}") for e in image.config["Env"])
    assert image.raw_config["architecture"] == store.platform.architecture
    write(tmp_path, {"Dockerfile": "FROM --platform=plan9/mips scratch\n"})
    with pytest.raises(NotSupported, match=r"Dockerfile:1: FROM --platform=plan9/mips"):
        build(store, tmp_path)


# --------------------------------------------------------------------------- RUN (root)


@pytest.fixture(scope="module")
def runner() -> Iterator:
    from pytest_pycontain.native.engine import NativeEngine

    engine = NativeEngine()
    yield native_runner(engine)
    engine.close()


@needs_root
def test_run_steps_make_layers(tmp_path: Path, store: Store, runner) -> None:
    write(tmp_path, {"Dockerfile": """\
FROM busybox
ARG GREETING=hi
ENV WHERE=/out
RUN echo "$HTTP_PROXY" > /proxy
WORKDIR /work
RUN echo "$GREETING from $(pwd) as $(id -u)" > note && rm /bin/sed
RUN ["/bin/sh", "-c", "mkdir -p $WHERE && echo exec > $WHERE/e"]
USER nobody
RUN id -u > /tmp/uid
RUN <<EOF
echo heredoc > /tmp/h
EOF
RUN <<-'SCRIPT'
	#!/bin/sh -e
	echo "shebang $0" > /tmp/s
	SCRIPT
RUN --network=none ls /sys/class/net > /tmp/net
RUN cat <<EOF > /tmp/c
from cat $WHERE
EOF
"""})
    image = build(store, tmp_path, run_step=runner,
                  build_args={"HTTP_PROXY": "http://proxy.example:3128"})
    files = tree(store, image)
    assert content(store, image, "proxy") == b"http://proxy.example:3128\n"
    assert not any("proxy.example" in h["created_by"] for h in image.raw_config["history"])
    assert content(store, image, "work/note") == b"hi from /work as 0\n"
    assert content(store, image, "out/e") == b"exec\n"
    assert content(store, image, "tmp/uid") == b"65534\n"
    assert content(store, image, "tmp/h") == b"heredoc\n"
    assert content(store, image, "tmp/s").startswith(b"shebang /dev/shm/")
    assert content(store, image, "tmp/c") == b"from cat /out\n"  # the shell expands it
    assert content(store, image, "tmp/net") == b"lo\n"  # --network=none: loopback only
    assert "bin/.wh.sed" in files
    assert "etc/hosts" not in files  # BuildKit's mount stubs are left out...
    assert files["proc"].isdir() and files["sys"].isdir()  # ...runc's mount points stay
    assert files["tmp/uid"].uid == 65534


@needs_root
def test_a_run_that_changes_nothing_is_reproducible(tmp_path: Path, store: Store,
                                                    runner) -> None:
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN true\n"})
    first = build(store, tmp_path, run_step=runner, no_cache=True)
    second = build(store, tmp_path, run_step=runner, no_cache=True)
    assert first.id == second.id
    with tarfile.open(store.blob_path(first.layers[-1].digest)) as tar:
        # no copied-up /etc left behind by /etc/hosts; runc's mount points stay, as in Docker
        assert tar.getnames() == ["proc", "sys"]


@needs_root
def test_failing_run_shows_command_code_and_output(tmp_path: Path, store: Store,
                                                   runner) -> None:
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo first\nRUN echo oops && exit 3\n"})
    with pytest.raises(BuildError) as info:
        build(store, tmp_path, run_step=runner, tag="failed:run")
    message = str(info.value)
    assert "Dockerfile:3:" in message and "echo oops && exit 3" in message
    assert "code 3" in message and "oops" in message
    assert info.value.exit_code == 3
    with pytest.raises(ImageNotFound):
        store.get("failed:run")
    seen: list[str] = []
    with pytest.raises(BuildError):
        build(store, tmp_path, run_step=runner, progress=seen.append)
    assert any("echo first" in s and "CACHED" in s for s in seen)  # completed steps stay
    assert not any("oops" in s and "CACHED" in s for s in seen)


def test_cli_build_prints_steps_cached_marks_and_the_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from pytest_pycontain import cli
    from pytest_pycontain.config import resolve

    monkeypatch.chdir(tmp_path)
    ctx = write(tmp_path / "ctx", {"app.Dockerfile": "FROM scratch\nARG V\nCOPY f /f-$V\n",
                                   "f": "f"})
    argv = ["build", "-t", "cli-built:1", "-f", str(ctx / "app.Dockerfile"), "--build-arg",
            "V=2", str(ctx)]
    assert cli.main(argv) == 0
    first = capsys.readouterr()
    image_id = first.out.strip().splitlines()[-1]
    assert image_id.startswith("sha256:")
    assert "COPY f /f-2" in first.err and "CACHED" not in first.err
    assert cli.main(argv) == 0
    second = capsys.readouterr()
    assert second.out.strip() == image_id
    assert "COPY f /f-2 # buildkit CACHED" in second.err
    assert cli.main([*argv[:-1], "--no-cache", str(ctx)]) == 0
    assert "CACHED" not in capsys.readouterr().err
    store = Store.from_settings(resolve())
    assert store.get("cli-built:1").id == image_id
    assert cli.main(["build", str(ctx)]) == 1  # no Dockerfile in the context
    assert "cannot read Dockerfile" in capsys.readouterr().err


def test_dockerfile_specific_ignore_file_applies_to_the_build(tmp_path: Path,
                                                               store: Store) -> None:
    write(tmp_path, {"docker/app.Dockerfile": "FROM scratch\nCOPY . /c/\n",
                     "docker/app.Dockerfile.dockerignore": "docker\nsecret*\n",
                     ".dockerignore": "public\n", "public": "p", "secret.key": "k"})
    files = tree(store, build(store, tmp_path, dockerfile=tmp_path / "docker/app.Dockerfile"))
    assert {n for n in files if n.startswith("c/")} == {"c/.dockerignore", "c/public"}
