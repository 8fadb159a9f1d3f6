"""Compose's volume options and ``host-gateway`` on the native engine and on the Docker
backend: ``external`` volumes, ``nocopy``, ``subpath``, ``create_host_path: false`` and
``extra_hosts: [NAME:host-gateway]``, each seen from inside the containers, with Docker's
behaviour as the reference; bad input is an error naming the file and line, and nothing is
left behind."""

from __future__ import annotations

import pytest
from backends import NEEDS_ROOT, Backend
from test_plugin_fixtures import run

VOLUME_IMAGE = """\
FROM busybox
RUN mkdir -p /data/one/two && echo from-image > /data/one/two/file
"""

KEYS = """\
services:
  copied:
    build: {context: ., dockerfile: Dockerfile.vol}
    command: sleep 1000
    volumes: ["filled:/data"]
  quiet:
    build: {context: ., dockerfile: Dockerfile.vol}
    command: sleep 1000
    volumes: ["quiet:/data:nocopy", {type: volume, source: again, target: /d,
                                     volume: {nocopy: true}}]
  outside:
    image: busybox
    command: sleep 1000
    volumes: ["premade:/premade:ro"]
    extra_hosts: ["gw:host-gateway"]
    profiles: [external]
  sub:
    image: busybox
    command: sleep 1000
    depends_on: [copied]
    volumes: [{type: volume, source: filled, target: /sub, volume: {subpath: one/two}}]
    profiles: [subpath]
  badsub:
    image: busybox
    command: sleep 1000
    depends_on: [copied]
    volumes: [{type: volume, source: filled, target: /sub, volume: {subpath: nowhere}}]
    profiles: [badsub]
  strict:
    image: busybox
    command: sleep 1000
    volumes:
      - {type: bind, source: ./absent, target: /x, bind: {create_host_path: false}}
    profiles: [strict]
  lost:
    image: busybox
    command: sleep 1000
    volumes: ["gone:/gone"]
    profiles: [lost]
volumes:
  filled: {}
  quiet: {}
  again: {}
  premade: {external: true}
  gone: {external: true, name: never-made-anywhere}
"""

INNER = r'''
import http.server
import threading

import pytest

from pytest_pycontain.errors import ConfigError, NotSupported

DOCKER = BACKEND in ("docker", "podman")


def test_copy_up_nocopy_external_and_host_gateway(pycontain):
    premade = pycontain.volume("premade")
    pycontain.run("busybox", command="sh -c 'echo made-before > /v/note'",
                  volumes={premade: "/v"}).wait(timeout=30)

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"hello\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    if BACKEND != "podman":  # Podman's default network has no gateway address to relay on
        pycontain.expose_host_port(port)  # until a container runs on it (its contract xfail)
    stack = pycontain.compose("keys.yaml", profiles=["external"])
    copied, quiet = stack.service("copied"), stack.service("quiet")
    assert copied.exec("cat /data/one/two/file").output == "from-image\n"  # copy-up
    assert quiet.exec("ls -A /data /d").output == "/d:\n\n/data:\n"  # nocopy: empty
    outside = stack.service("outside")
    assert outside.exec("cat /premade/note").output == "made-before\n"  # external
    assert stack.volume("premade") is premade
    # host-gateway: where the host is, as the network sees it (this process's exposed port)
    if BACKEND == "podman":  # Podman 4.3 writes it into /etc/hosts as it is (4.7 knows it)
        assert outside.exec("grep -w gw /etc/hosts").output == "host-gateway\tgw\n"
    else:
        assert outside.exec(f"wget -q -O - http://gw:{port}/").output == "hello\n"
    server.shutdown()


def test_subpath(pycontain):
    if DOCKER:  # the test dockerd is Docker 20.10 (API 1.41): said, never ignored
        with pytest.raises(NotSupported, match=rf"keys.yaml:{LINES['sub']}: service 'sub': "
                           r".*subpath 'one/two': needs Docker Engine API 1.45"):
            pycontain.compose("keys.yaml", profiles=["subpath"])
        return
    stack = pycontain.compose("keys.yaml", profiles=["subpath"])
    assert stack.service("sub").exec("ls /sub; cat /sub/file").output == "file\nfrom-image\n"


@pytest.mark.parametrize(("profile", "error", "message"), [
    ("badsub", ConfigError if not DOCKER else NotSupported,
     rf"keys.yaml:{LINES['badsub']}: service 'badsub': .*subpath 'nowhere'"
     + (" does not exist in volume" if not DOCKER else ": needs Docker Engine API 1.45")),
    ("strict", ConfigError, rf"keys.yaml:{LINES['strict']}: service 'strict': bind source "
     r"path .*absent does not exist \(create_host_path: false\)"),
    ("lost", ConfigError, rf"keys.yaml:{LINES['gone']}: volume 'gone': volume "
     "'never-made-anywhere' does not exist"),
])
def test_bad_volumes_name_file_and_line(pycontain, profile, error, message):
    with pytest.raises(error, match=message):
        pycontain.compose("keys.yaml", profiles=[profile])
'''


@pytest.fixture(params=[pytest.param("native", marks=NEEDS_ROOT),
                        pytest.param("docker", marks=pytest.mark.dockerd),
                        pytest.param("podman", marks=pytest.mark.podman)])
def engine(request: pytest.FixtureRequest) -> Backend:
    """The native engine, or the Docker backend over the test session's private dockerd or
    Podman service."""
    if request.param != "native":
        return request.getfixturevalue(f"{request.param}_backend")
    return Backend()


def test_volume_options_and_host_gateway(pytester: pytest.Pytester, engine: Backend) -> None:
    pytester.makefile(".vol", Dockerfile=VOLUME_IMAGE)
    pytester.makefile(".yaml", keys=KEYS)
    lines = {key: next(n for n, line in enumerate(KEYS.splitlines(), 1)
                       if line.startswith(f"  {key}:")) for key in ("sub", "badsub", "strict",
                                                                     "gone")}
    name = "podman" if "podman" in str(getattr(engine, "host", "")) else engine.name
    pytester.makepyfile(test_keys=f"BACKEND = {name!r}\nLINES = {lines!r}\n" + INNER)
    result = run(pytester, engine, "-v")
    result.assert_outcomes(passed=5)
    engine.assert_no_leftovers()
    assert not (pytester.path / "absent").exists()  # create_host_path: false made nothing
