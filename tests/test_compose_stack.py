"""Compose stacks as users run them: ``pycontain.compose(...)`` in pytester sessions on the
native engine and on the Docker backend, the same files and the same expectations on both.

One inner session per backend holds every scenario (a migrate one-shot before the app, a
healthy wait, names and aliases on two networks, published ports, a partition, profiles,
interpolation and override values seen inside the containers, and the errors), so the engine
starts once per backend; the outer test checks that all of them passed and nothing was left.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from backends import NEEDS_ROOT, Backend
from test_plugin_fixtures import run

WEB = """\
FROM busybox
ARG WORD=unset
RUN mkdir -p /www && echo "$WORD" > /www/index.html
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""

STACK = """\
x-web: &web
  image: busybox
  command: sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www'

services:
  migrate:
    image: busybox
    command: sh -c 'sleep 0.2; echo migrated > /shared/marker; echo migration done'
    volumes: ["./shared:/shared"]
  db:
    <<: *web
    command: >-
      sh -c 'sleep 0.3; mkdir -p /www && echo db-data > /www/index.html;
      exec httpd -f -p 8080 -h /www'
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 100ms
      retries: 100
  app:
    build:
      context: .
      dockerfile: Dockerfile.web
      args: {WORD: "${WORD:-from-default}"}
    depends_on:
      migrate: {condition: service_completed_successfully}
      db: {condition: service_healthy}
    entrypoint: ["/bin/sh", "-c"]
    command:
      - cat /shared/marker; wget -q -O - http://db:8080/; exec httpd -f -p 8080 -h /www
    volumes: ["./shared:/shared:ro"]
    ports: ["8080"]
    environment:
      MESSAGE: "${GREETING} from ${PLACE:-nowhere}"
      FROM_DOTENV: ${DOTENV_VALUE}
    healthcheck:
      test: wget -q -O /dev/null http://127.0.0.1:8080/
      interval: 100ms
      retries: 100  # a slow start on a busy machine is not a failure here
  debug:
    image: busybox
    command: sleep 1000
    profiles: [debug]
"""

OVERRIDE = """\
services:
  app:
    environment:
      OVERRIDDEN: "yes, ${GREETING}"
"""

NETWORKS = """\
x-web: &web
  image: busybox
  command: >-
    sh -c 'mkdir -p /www && echo "$$(hostname) says hi" > /www/index.html &&
    exec httpd -f -p 8080 -h /www'
  healthcheck:
    test: [CMD-SHELL, "wget -q -O /dev/null http://127.0.0.1:8080/"]
    interval: 100ms
    retries: 100

services:
  api:
    <<: *web
    networks:
      front: {aliases: [api-alias]}
  client:
    image: busybox
    command: sleep 1000
    networks: [front]
  store:
    <<: *web
    hostname: store-host
    networks:
      back: {aliases: [storage]}
  loner:
    image: busybox
    command: sleep 1000
    networks: [back]
  bridge:
    <<: *web
    networks:
      front: {aliases: [bridge-front]}
      back: {aliases: [bridge-back]}
networks:
  front: {}
  back: {}
"""

FAILING = """\
services:
  migrate:
    image: busybox
    command: sh -c 'echo cannot reach the database >&2; exit 3'
  app:
    image: busybox
    command: sleep 1000
    depends_on:
      migrate: {condition: service_completed_successfully}
"""

CRASHING = """\
services:
  worker:
    image: busybox
    command: sh -c 'echo starting; echo bad config >&2; exit 2'
    healthcheck: {test: [CMD, "true"], interval: 1s}
  sleeper:
    image: busybox
    command: sleep 1000
  sick:
    image: busybox
    command: sleep 1000
    healthcheck:
      test: [CMD-SHELL, "echo not yet; exit 1"]
      interval: 100ms
      retries: 2
    profiles: [sick]
"""

OPTIONS = """\
services:
  box:
    image: busybox
    command: sleep 1000
    user: "65534:65534"
    working_dir: /srv/app
    hostname: boxhost
    init: true
    read_only: true
    tmpfs: ["/run/scratch"]
    volumes:
      - {type: tmpfs, target: /cache}
    deploy:
      resources: {limits: {memory: 64m, pids: 50}}
  worker:
    image: busybox
    command: sleep 1000
    scale: 2
  built:
    build: .
    stop_grace_period: 1s
  slow:
    image: busybox
    command: sh -c 'sleep 0.5; touch /tmp/up; exec sleep 1000'
    healthcheck:
      test: [CMD, test, -f, /tmp/up]
      interval: 100ms
      retries: 1
      start_period: 30s
  cleared:
    build: {context: ., dockerfile: Dockerfile.entry}
    entrypoint: ""
    command: ["sleep", "1000"]
"""

SECURITY = """\
services:
  loose:
    image: busybox
    command: sleep 1000
    cap_add: [NET_ADMIN]
    cap_drop: [chown]
    security_opt: ["no-new-privileges:true"]
    sysctls: {net.ipv4.ip_forward: 1}
    shm_size: 16m
    extra_hosts: ["db.example:10.9.8.7", "other=10.9.8.6"]
    networks: [sealed]
  plain:
    image: busybox
    command: sleep 1000
  graceful:
    image: busybox
    command: sh -c "trap 'exit 9' USR2; echo up; while true; do sleep 0.05; done"
    stop_signal: SIGUSR2
    labels: {team: db}
  everything:
    image: busybox
    command: sleep 1000
    privileged: true
    profiles: [privileged]
networks:
  sealed: {internal: true}
"""

VOLUMES = """\
services:
  writer:
    image: busybox
    command: sleep 1000
    volumes: ["data:/data", /scratch]
  reader:
    image: busybox
    command: sleep 1000
    volumes:
      - {type: volume, source: data, target: /data, read_only: true}
      - {type: volume, target: /scratch}
volumes:
  data: {}
"""

INNER = r'''
import urllib.request

import pytest

from pytest_pycontain.errors import ConfigError, ContainerError, NotSupported


def answer(asker, command, within=30.0):
    """What ``command`` prints once it succeeds: Podman's DNS (aardvark) learns the address
    of a container started again a moment late (Docker's and the native engine's answer at
    once; the engine contract checks that)."""
    import time

    deadline = time.monotonic() + within
    while True:
        result = asker.exec(command)
        if result.exit_code == 0 or time.monotonic() > deadline:
            return result.output
        time.sleep(0.1)


def test_the_stack_in_order_healthy_with_ports_and_values(pycontain):
    stack = pycontain.compose("compose.yaml", "compose.override.yaml", env={"GREETING": "hi"})
    assert set(stack.services) == {"migrate", "db", "app"}
    migrate, app = stack.services["migrate"], stack.service("app")
    assert migrate.status == "exited" and migrate.exit_code == 0  # a completed one-shot stays
    assert stack.health("app") == "healthy" and stack.health("db") == "healthy"
    # app started after migrate completed and db was healthy: its first lines say so
    assert app.logs().startswith("migrated\ndb-data\n")
    host, port = app.address(8080)
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as response:
        assert response.read() == b"built-by-test\n"  # build arg from WORD in .env
    env = app.exec("env").output.splitlines()
    assert "MESSAGE=hi from nowhere" in env  # env= and a default, interpolated
    assert "OVERRIDDEN=yes, hi" in env  # the override file's
    assert "FROM_DOTENV=dotenv-value" in env
    assert not [line for line in env if line.startswith(("DOTENV_VALUE=", "WORD="))]
    assert "migrate-1  | migration done" in stack.logs()
    with pytest.raises(ConfigError, match="service 'debug' is not started: it needs "
                                          "profile\\(s\\) debug"):
        stack.service("debug")
    with pytest.raises(ConfigError, match="no volume 'data' in project .*volumes: none"):
        stack.volume("data")


def test_a_stopped_service_starts_again_under_its_name(pycontain):
    stack = pycontain.compose("compose.yaml", "compose.override.yaml", env={"GREETING": "hi"})
    app = stack.service("app")
    db = stack.services["db"]
    ask_db = "timeout 5 wget -q -O - http://db:8080/"
    stack.stop("db")
    assert db.status == "exited" and app.status == "running"  # its dependant is left alone
    assert app.exec(ask_db).exit_code != 0
    stack.start("db")  # the same container, healthy again, its name resolving again
    assert stack.services["db"] is db and db.status == "running"
    assert stack.health("db") == "healthy" and answer(app, ask_db) == "db-data\n"
    stack.restart("app")
    assert app.status == "running" and stack.health("app") == "healthy"
    assert app.logs().count("db-data\n") == 2  # its log goes on, as Docker's does
    host, port = app.address(8080)  # published again
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as response:
        assert response.read() == b"built-by-test\n"
    with pytest.raises(ConfigError, match="service 'debug' is not started"):
        stack.start("debug")


def test_profiles_and_two_stacks_from_one_directory(pycontain):
    one = pycontain.compose("compose.yaml", profiles=["debug"], env={"GREETING": "a"},
                            wait=False)
    two = pycontain.compose("compose.yaml", env={"GREETING": "b"})
    assert "debug" in one.services and "debug" not in two.services
    assert one.name != two.name and one.name.startswith(two.name.rsplit("-", 1)[0])
    assert one.service("debug").status == "running"


def test_names_and_aliases_on_two_networks_and_a_partition(pycontain):
    stack = pycontain.compose("networks.yaml", project="netcheck")
    client, loner = stack.services["client"], stack.services["loner"]
    fetch = "timeout 3 wget -q -O - http://{}:8080/"
    api = stack.services["api"]
    assert client.exec(fetch.format("api")).output == f"{api.hostname} says hi\n"
    assert client.exec(fetch.format("api-alias")).exit_code == 0
    assert loner.exec(fetch.format("storage")).output == "store-host says hi\n"
    assert loner.exec(fetch.format("store")).exit_code == 0
    assert client.exec(fetch.format("store")).exit_code != 0  # not on its network
    assert loner.exec(fetch.format("api-alias")).exit_code != 0
    front = stack.network("front")
    assert front is not stack.network("back")
    with pytest.raises(ConfigError, match="no network 'default' in project 'netcheck'"):
        stack.network()
    front.partition(client, api)
    assert client.exec(fetch.format("api")).exit_code != 0
    front.heal()
    assert client.exec(fetch.format("api")).exit_code == 0
    # a service on both networks: reached from each by its name and that network's alias,
    # and it reaches both sides
    bridge = stack.services["bridge"]
    for asker, name in ((client, "bridge"), (client, "bridge-front"), (loner, "bridge"),
                        (loner, "bridge-back")):
        assert asker.exec(fetch.format(name)).output == f"{bridge.hostname} says hi\n", name
    assert client.exec(fetch.format("bridge-back")).exit_code != 0  # back's alias, not front's
    assert bridge.exec(fetch.format("api")).exit_code == 0
    assert bridge.exec(fetch.format("storage")).exit_code == 0
    stack.network("back").partition(bridge, loner)
    assert loner.exec(fetch.format("bridge")).exit_code != 0
    assert client.exec(fetch.format("bridge")).exit_code == 0
    stack.network("back").heal()


def test_a_service_on_two_networks_starts_again_with_both_names(pycontain):
    """Stopped, it is nobody's to reach; started again, both networks' names are its again."""
    stack = pycontain.compose("networks.yaml", project="restartcheck")
    client, loner = stack.services["client"], stack.services["loner"]
    bridge = stack.services["bridge"]
    fetch = "timeout 3 wget -q -O - http://{}:8080/"
    assert answer(client, fetch.format("bridge")) == f"{bridge.hostname} says hi\n"
    stack.stop("bridge")
    assert client.exec(fetch.format("bridge")).exit_code != 0
    stack.start("bridge")
    for asker, name in ((client, "bridge"), (client, "bridge-front"), (loner, "bridge"),
                        (loner, "bridge-back")):
        assert answer(asker, fetch.format(name)) == f"{bridge.hostname} says hi\n", name
    assert bridge.exec(fetch.format("storage")).exit_code == 0


def test_a_failing_one_shot_stops_the_stack(pycontain):
    with pytest.raises(ContainerError) as info:
        pycontain.compose("failing.yaml")
    message = str(info.value)
    assert "service 'migrate' exited with code 3; 'app' needs it to complete" in message
    assert "cannot reach the database" in message
    assert info.value.exit_code == 3


def test_a_crashing_service(pycontain):
    with pytest.raises(ContainerError, match="service 'worker' exited with code 2 before it "
                                             "was healthy") as info:
        pycontain.compose("crashing.yaml")
    assert "bad config" in info.value.logs
    stack = pycontain.compose("crashing.yaml", wait=False)
    assert stack.service("sleeper").status == "running"
    with pytest.raises(ContainerError, match="service 'sick' is unhealthy: 2 checks failed in "
                                             "a row; the last said: not yet"):
        pycontain.compose("crashing.yaml", profiles=["sick"])


def test_service_options_seen_inside(pycontain):
    stack = pycontain.compose("options.yaml", profiles=[], build=True)
    box = stack.service("box")
    assert box.exec("id -u; id -g; pwd; hostname").output == "65534\n65534\n/srv/app\nboxhost\n"
    assert box.exec("touch /nope").exit_code != 0  # read_only
    assert box.exec("touch /run/scratch/x /cache/y").exit_code == 0  # tmpfs, both forms
    # the memory limit, seen as what it does: a 128 MiB buffer is killed, 8 MiB is not
    assert box.exec("dd if=/dev/zero of=/dev/null bs=8M count=1").exit_code == 0
    assert box.exec("dd if=/dev/zero of=/dev/null bs=128M count=1").exit_code != 0
    assert box.exec("cat /proc/1/cmdline").output.split("\0")[0] != "sleep"  # init: true
    first, second = stack.service("worker", 1), stack.service("worker", 2)
    assert first.id != second.id and second.status == "running"
    with pytest.raises(ConfigError, match="service 'worker' has 2 container\\(s\\); index 3"):
        stack.service("worker", 3)
    with pytest.raises(ConfigError, match="no service 'nope' in project"):
        stack.service("nope")
    assert stack.health("slow") == "healthy"  # its failures in the start period did not count
    cleared = stack.service("cleared")
    assert cleared.exec("cat /proc/1/cmdline").output == "sleep\x001000\x00"
    stack.stop("built")
    assert stack.services["built"].status == "exited"


def test_build_false_needs_an_image(pycontain):
    with pytest.raises(ConfigError, match="options.yaml:.*service 'built' has only a build "
                                          "context.*build=False"):
        pycontain.compose("options.yaml", build=False)


def test_a_bad_file_names_file_and_line(pycontain, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  a:\n    image: busybox\n    dns: [10.0.0.1]\n")
    with pytest.raises(NotSupported, match=f"^{bad}:4: service 'a': compose key 'dns'"):
        pycontain.compose(str(bad))
    bad.write_text("services:\n  a:\n    image: busybox\n    cap_add: [NET_ADMIN]\n"
                   "    sysctls: [kernel.pid_max=10]\n")
    with pytest.raises(ConfigError, match=f"^{bad}:5: services.a.sysctls.kernel.pid_max: "
                                          "sysctls: 'kernel.pid_max' is not in a separate"):
        pycontain.compose(str(bad))


def test_the_privilege_boundary_shm_hosts_and_an_internal_network(pycontain):
    stack = pycontain.compose("security.yaml")
    loose, plain = stack.service("loose"), stack.service("plain")
    mtu = "ip link set lo mtu 1400"
    assert loose.exec(mtu).exit_code == 0 and plain.exec(mtu).exit_code != 0  # cap_add
    chown = "touch /tmp/f && chown 1 /tmp/f"
    assert loose.exec(chown).exit_code != 0 and plain.exec(chown).exit_code == 0  # cap_drop
    assert "NoNewPrivs:\t1" in loose.exec("cat /proc/self/status").output
    assert "NoNewPrivs:\t0" in plain.exec("cat /proc/self/status").output
    assert loose.exec("cat /proc/sys/net/ipv4/ip_forward").output == "1\n"
    assert loose.exec("df -k /dev/shm").output.split()[-5] == "16384"
    assert plain.exec("df -k /dev/shm").output.split()[-5] == "65536"
    hosts = loose.exec("cat /etc/hosts").output
    assert "10.9.8.7\tdb.example" in hosts and "10.9.8.6\tother" in hosts
    assert plain.exec("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m").exit_code != 0
    from pytest_pycontain import wait

    wait.until_ready(stack.service("graceful"), wait.log("up", timeout=30))  # trap set
    assert dict(stack.service("graceful").labels) == {"team": "db"}
    stack.stop("graceful")  # its stop_signal, which its trap turns into exit code 9
    assert stack.services["graceful"].exit_code == 9
    assert stack.network("sealed").internal is True  # made as the file says
    assert stack.network("default").internal is False


def test_named_anonymous_and_read_only_volumes(pycontain):
    stack = pycontain.compose("volumes.yaml")
    writer, reader = stack.service("writer"), stack.service("reader")
    assert stack.volume("data").name == f"{stack.name}_data"
    assert writer.exec("echo kept > /data/file && touch /scratch/mine").exit_code == 0
    assert reader.exec("cat /data/file").output == "kept\n"  # one named volume, shared
    assert reader.exec("touch /data/other").exit_code != 0  # read_only: true
    assert reader.exec("ls -A /scratch").output == ""  # an anonymous volume is its own
    assert reader.exec("touch /scratch/x").exit_code == 0
    with pytest.raises(ConfigError, match="no volume 'nope' in project .*volumes: data"):
        stack.volume("nope")
    stack.restart("writer")  # the same container: its named and anonymous volumes kept
    assert writer.exec("cat /data/file; ls /scratch").output == "kept\nmine\n"


def test_a_privileged_service(pycontain):
    try:
        stack = pycontain.compose("security.yaml", profiles=["privileged"])
    except ContainerError as exc:  # the host's limit, as in the security tests: said, not hidden
        if "unable to apply caps" not in str(exc):
            raise
        pytest.skip(f"this dockerd cannot start a privileged container here: {exc}")
    mount = "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m"
    assert stack.service("everything").exec(mount).exit_code == 0
    assert stack.service("plain").exec(mount).exit_code != 0
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".web", Dockerfile=WEB)
    pytester.makefile(".entry", Dockerfile='FROM busybox\nENTRYPOINT ["echo", "never"]\n')
    pytester.makefile(".yaml", compose=STACK, networks=NETWORKS, failing=FAILING,
                      crashing=CRASHING, options=OPTIONS, security=SECURITY,
                      volumes=VOLUMES)
    pytester.makefile("", Dockerfile="FROM busybox\nCMD [\"sleep\", \"1000\"]\n")
    pytester.makefile(".override.yaml", compose=OVERRIDE)
    pytester.makefile("", **{".env": "WORD=built-by-test\nDOTENV_VALUE=dotenv-value\n"})
    pytester.makepyfile(test_stack=INNER)
    return pytester


def test_compose_stacks(project: pytest.Pytester, backend: Backend,
                        request: pytest.FixtureRequest) -> None:
    result = run(project, backend, "-v", "-rfs")
    outcomes = result.parseoutcomes()
    if backend.name == "docker" and outcomes.get("skipped"):  # a dockerd without privileges
        result.stdout.fnmatch_lines(
            ["SKIPPED * this dockerd cannot start a privileged container here*"])
        result.assert_outcomes(passed=12, skipped=1)
    elif request.node.callspec.params["backend"] == "podman" and outcomes.get("failed"):
        # Podman 4.3's aardvark-dns, seen in CI on a quiet machine: a container started again
        # may stay unknown by name for longer than the test waits (30 s). Only the two checks
        # of a service started again may fail there; every other one must pass.
        late_dns = {"test_a_service_on_two_networks_starts_again_with_both_names",
                    "test_a_stopped_service_starts_again_under_its_name"}
        failed = {line.split("::")[1].split()[0] for line in result.stdout.lines
                  if line.startswith("FAILED test_stack.py::")}
        assert failed and failed <= late_dns, result.stdout.str()
        result.assert_outcomes(passed=13 - len(failed), failed=len(failed))
    else:
        result.assert_outcomes(passed=13)
    backend.assert_no_leftovers()


FIXTURE_TESTS = r'''
import pytest


@pytest.fixture(scope="session")
def shared(pycontain_session):
    return pycontain_session.compose("marked.yaml", project="shared")


def test_a_session_stack(shared):
    assert shared.name == "shared" and shared.services["marked"].status == "running"


def test_the_same_session_stack(shared):
    assert shared.services["marked"].exec("true").exit_code == 0


def test_configured(compose):
    assert sorted(compose.services) == EXPECTED
    assert compose.services["one"].exec("echo $WHO").output == WHO


@pytest.mark.pycontain(compose=["marked.yaml"], compose_profiles=[])
def test_marker_wins(compose):
    assert sorted(compose.services) == ["marked"]


def test_a_failing_test_reports_the_stack_logs(compose):
    assert compose.services["one"].logs() == "nothing like this\n"
'''


def test_the_compose_fixture_from_settings_marker_and_command_line(
        pytester: pytest.Pytester, backend: Backend) -> None:
    service = "    image: busybox\n    command: sh -c 'echo {0} says hello; exec sleep 1000'\n"
    pytester.makefile(".yaml", stack="services:\n  one:\n" + service.format("one")
                      + "    environment: {WHO: pyproject}\n  two:\n" + service.format("two")
                      + "    profiles: [extra]\n",
                      cli="services:\n  one:\n" + service.format("one")
                      + "    environment: {WHO: cli}\n",
                      marked="services:\n  marked:\n" + service.format("marked"))
    pytester.makepyprojecttoml('[tool.pycontain]\ncompose = ["stack.yaml"]\n'
                               'compose_profiles = ["extra"]\n')
    pytester.makepyfile(test_fixture="EXPECTED = ['one', 'two']\nWHO = 'pyproject\\n'\n"
                        + FIXTURE_TESTS)
    result = run(pytester, backend)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*pycontain log: one*", "one says hello"])
    pytester.makepyfile(test_fixture="EXPECTED = ['one']\nWHO = 'cli\\n'\n" + FIXTURE_TESTS)
    result = run(pytester, backend, "--pycontain-compose", "cli.yaml",
                 "--pycontain-compose-profiles", "none")
    result.assert_outcomes(passed=4, failed=1)
    backend.assert_no_leftovers()


UP = """\
services:
  first:
    image: busybox
    command: sh -c 'echo one; sleep 0.3; echo two'
  second:
    image: busybox
    command: sh -c 'echo after first'
    depends_on: {first: {condition: service_completed_successfully}}
  failing:
    image: busybox
    command: sh -c 'echo broken >&2; exit 4'
    profiles: [broken]
  dependent:
    image: busybox
    command: "true"
    depends_on: {failing: {condition: service_completed_successfully}}
    profiles: [broken]
"""


@NEEDS_ROOT
def test_pycontain_compose_up_runs_the_stack_in_the_foreground(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(UP)
    command = [sys.executable, "-m", "pytest_pycontain.cli", "compose"]
    done = subprocess.run([*command, "up"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "first-1  | one\nfirst-1  | two\nsecond-1  | after first\n"
    failed = subprocess.run([*command, "--profile", "broken", "up"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode == 1
    assert "service 'failing' exited with code 4; 'dependent' needs it" in failed.stderr
    assert "broken" in failed.stderr
