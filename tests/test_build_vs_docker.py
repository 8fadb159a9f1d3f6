"""Differential tests: the same Dockerfile and context built by us and by ``docker build``
(BuildKit, the private dockerd) give the same image config and the same file tree.

Docker 20.10's BuildKit lacks heredocs and ``${V%...}``-style expansion, so these Dockerfiles
avoid them (the conformance vectors and test_build.py cover them).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pytest_pycontain.build import build
from pytest_pycontain.native.engine import native_runner
from pytest_pycontain.store import Store

pytestmark = [
    pytest.mark.dockerd,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs the native engine (root)"),
]

DOCKER = shutil.which("docker", path="/usr/bin") or "docker"  # Debian's 20.10 client
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
               "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild")

Tree = dict[str, tuple]


def apply_layer(tree: Tree, tar: tarfile.TarFile) -> None:
    """Apply one layer to ``tree`` (path -> summary), honouring OCI whiteouts."""
    for member in tar.getmembers():
        name = member.name.strip("/").removeprefix("./")
        if not name or name == ".":
            continue
        parent, _, leaf = name.rpartition("/")
        if leaf == ".wh..wh..opq":
            for key in [k for k in tree if k.startswith(parent + "/")]:
                del tree[key]
            continue
        if leaf.startswith(".wh."):
            gone = (parent + "/" if parent else "") + leaf[4:]
            for key in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                del tree[key]
            continue
        if member.isdir():
            summary: tuple = ("dir",)
        elif member.issym():
            summary = ("symlink", member.linkname)
        elif member.islnk():
            target = member.linkname.strip("/").removeprefix("./")
            summary = tree.get(target, ("hardlink", target))
        elif member.isfile():
            data = tar.extractfile(member).read()
            summary = ("file", hashlib.sha256(data).hexdigest()[:16])
        else:
            summary = ("special", member.type)
        if not member.isdir() and name in tree and tree[name][0] == "dir":
            for key in [k for k in tree if k.startswith(name + "/")]:
                del tree[key]
        tree[name] = (*summary[:2], oct(stat.S_IMODE(member.mode)), member.uid, member.gid)


def our_tree(store: Store, image) -> Tree:
    tree: Tree = {}
    for layer in image.layers:
        with tarfile.open(store.blob_path(layer.digest)) as tar:
            apply_layer(tree, tar)
    return tree


def docker_tree(env: dict[str, str], tag: str, workdir: Path) -> tuple[Tree, dict]:
    archive = workdir / "saved.tar"
    subprocess.run([DOCKER, "save", "-o", str(archive), tag], env=env, check=True)
    tree: Tree = {}
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))[0]
        config = json.load(saved.extractfile(manifest["Config"]))
        for layer in manifest["Layers"]:
            data = saved.extractfile(layer).read()
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                apply_layer(tree, tar)
    return tree, config


def normal(config: dict) -> dict:
    """The compared keys, with Docker's empty forms (null, [], {}, "") made equal."""
    return {key: config.get(key) for key in CONFIG_KEYS
            if config.get(key) not in (None, [], {}, "")}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, test_registry) -> Store:
    return Store(tmp_path_factory.mktemp("vs-docker"), registry_mirror=test_registry.url,
                 attempts=2, backoff=0.01)


@pytest.fixture(scope="module")
def runner():
    run = native_runner()
    yield run
    run.close()


def make_context(root: Path) -> Path:
    files = {
        "app/main.py": "print('hi')\n", "app/pkg/mod.py": "x = 1\n", "app/notes.log": "log",
        "README.md": "readme", "CHANGES.md": "changes", "script.sh": "#!/bin/sh\necho hi\n",
        ".dockerignore": "*.log\n**/*.log\n!keep.log\n", "keep.log": "kept",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.chmod(root / "script.sh", 0o755)
    os.symlink("main.py", root / "app" / "link.py")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, uid in (("bundle/one", 0), ("bundle/two", 1000)):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.mode = 3, uid, 0o640
            tar.addfile(info, io.BytesIO(b"abc"))
    (root / "bundle.tgz").write_bytes(buffer.getvalue())
    return root


DOCKERFILES = {
    "config_and_copy": """\
ARG BASE=busybox
FROM ${BASE}
ARG VERSION=1.2
ENV APP_HOME=/srv/app VERSION=${VERSION} LEGACY_FORM="a b"
LABEL org.opencontainers.image.version=$VERSION maintainer="someone"
WORKDIR $APP_HOME
COPY app/ ./
COPY *.md /docs/
COPY --chmod=0700 script.sh /usr/local/bin/
COPY --chown=nobody:nogroup app/main.py /owned/
COPY --chown=1234 keep.log /owned/ids
ADD bundle.tgz /opt/
COPY bundle.tgz /opt/copied/
EXPOSE 8080 53/udp
VOLUME ["/data"]
USER nobody
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=2s --retries=2 CMD wget -q -O- localhost:8080
CMD ["python", "main.py"]
ONBUILD RUN echo child
""",
    "run_steps": """\
FROM busybox
ENV GREETING=hello
RUN mkdir -p /var/made && echo "$GREETING" > /var/made/file && chmod 600 /var/made/file
RUN rm -rf /usr/share /bin/sed && ln -s /var/made/file /linked
RUN ["/bin/sh", "-c", "echo builder:x:2000:2000::/home/builder:/bin/sh >> /etc/passwd"]
RUN mkdir -p /home/builder/x && chown -R 2000:2000 /home/builder
USER builder
WORKDIR /home/builder
RUN echo mine > owned
SHELL ["/bin/sh", "-e", "-c"]
RUN touch /tmp/shell-form
ENTRYPOINT /bin/sh
""",
    "multi_stage": """\
FROM busybox AS build
WORKDIR /src
COPY app /src/
RUN echo built > /src/out.txt
FROM busybox AS unused
RUN exit 1
FROM scratch AS final
COPY --from=build /src/out.txt /src/main.py /result/
COPY --from=0 /bin/busybox /bin/
ENTRYPOINT ["/bin/busybox"]
CMD ["true"]
""",
    "copy_edge_cases": """\
FROM busybox
COPY app/link.py /top-level-link
COPY app /etc
COPY README.md /tmp
COPY app/. /dot/
COPY ap* /glob/
COPY app/pk? /globdir/
COPY --chown=1:2 app /owned-tree/
COPY keep.log script.sh /two/
ONBUILD ENV TRIGGERED=yes
""",
    "stage_base_onbuild": """\
FROM busybox AS base
ONBUILD COPY README.md /onbuild-readme
ENV BASE=1
CMD ["base"]
FROM base AS child
ENTRYPOINT ["/bin/sh"]
RUN ls / > /listing
""",
    "run_mounts": """\
FROM busybox AS stage
RUN mkdir /out && echo staged > /out/file
FROM busybox
WORKDIR /work
RUN --mount=type=bind,source=app,target=/src ls /src > /listing && cat /src/main.py > /main
RUN --mount=type=bind,target=ctx,rw touch ctx/written && ls -A ctx > /ctx-listing
RUN --mount=type=bind,from=stage,source=/out,target=/staged cp /staged/file /copied
RUN --mount=type=cache,target=/root/.cache/tool echo cached > /root/.cache/tool/f && touch /done
RUN --mount=type=cache,target=/var/newcache/deep,id=x,uid=1000 ls /var/newcache > /varcache
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && ls /scratch > /scratch-listing
RUN --mount=type=secret,id=none ls /run > /run-listing 2>&1 || true
""",
    "copy_through_planted_symlinks": """\
FROM busybox
RUN mkdir -p /real/sub /a/b && ln -s /real /abs && ln -s ../../real /a/b/rel && \
    ln -s ../../../../.. /a/up && ln -s /real/sub/file /real/flink && echo old > /real/sub/file
COPY README.md /abs/
COPY CHANGES.md /a/b/rel/changes
COPY keep.log /a/up/real/sub/
COPY app /abs/app
COPY script.sh /real/flink
""",
    "debian_usrmerge": """\
FROM debian:bookworm
COPY script.sh /bin/
RUN useradd -m -u 1500 appuser && mkdir -p /data && chown appuser /data
USER appuser:appuser
COPY --chown=appuser app/main.py /data/
""",
}


# The RUN --mount targets Docker 20.10's BuildKit (v0.8) leaves in the image as empty
# directories; BuildKit removes them since v0.11 (moby/buildkit#3307 and #3314), as we do.
OLD_BUILDKIT_STUBS = {
    "run_mounts": ["root/.cache", "root/.cache/tool", "scratch", "src", "staged",
                   "var/newcache", "var/newcache/deep", "work/ctx"],
}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_same_image_as_docker(name: str, tmp_path: Path, store: Store, runner, dockerd) -> None:
    context = make_context(tmp_path / "ctx")
    (context / "Dockerfile").write_text(DOCKERFILES[name])
    tag = f"vs-docker-{name.replace('_', '-')}:1"
    env = dockerd.env()
    done = subprocess.run([DOCKER, "build", "-q", "-t", tag, str(context)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    theirs, their_config = docker_tree(env, tag, tmp_path)
    ours_image = build(store, context, run_step=runner)
    ours = our_tree(store, ours_image)
    assert len(theirs) > 3 and normal(their_config["config"])  # compared something real
    assert normal(dict(ours_image.config)) == normal(their_config["config"])
    stubs = OLD_BUILDKIT_STUBS.get(name, [])
    assert all(theirs[k][0] == "dir" for k in stubs)
    missing = sorted(set(theirs) - set(ours) - set(stubs))
    extra = sorted(set(ours) - set(theirs))
    different = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    assert (missing, extra, [(k, ours[k], theirs[k]) for k in different]) == ([], [], [])
