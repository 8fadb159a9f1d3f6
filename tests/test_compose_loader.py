"""The Compose loader on its own: files, variables, interpolation, override rules, anchors,
profiles, project names, and the errors (with file:line) for what compose rejects or we do
not do yet. Pure unit tests: no engine."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_pycontain.compose import (
    ComposeFileError,
    DependsOn,
    Port,
    ServiceNetwork,
    ServiceVolume,
    load,
)
from pytest_pycontain.compose.jsonform import config_json, go_duration
from pytest_pycontain.errors import ConfigError, NotSupported


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_the_default_file_and_its_override(tmp_path: Path) -> None:
    write(tmp_path, "docker-compose.yml", "services: {a: {image: busybox, command: old}}\n")
    assert load(directory=tmp_path, environ={}).services["a"].command == ("old",)
    write(tmp_path, "compose.yaml", "services: {a: {image: busybox, command: first}}\n")
    write(tmp_path, "compose.override.yaml", "services: {a: {command: over}}\n")
    project = load(directory=tmp_path, environ={})
    assert project.services["a"].command == ("over",)  # compose.yaml wins over docker-compose
    assert [p.name for p in project.files] == ["compose.yaml", "compose.override.yaml"]


def test_given_files_are_exactly_those_merged_in_order(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", "services: {a: {image: busybox, command: default}}\n")
    write(tmp_path, "compose.override.yaml", "services: {a: {command: override}}\n")
    write(tmp_path, "base.yaml", "services: {a: {image: busybox, command: base}}\n")
    write(tmp_path, "sub/more.yaml", "services: {a: {command: more}}\n")
    project = load(["base.yaml", "sub/more.yaml"], directory=tmp_path, environ={})
    assert project.services["a"].command == ("more",)
    assert project.working_dir == tmp_path.resolve()


def test_compose_file_variable_picks_the_files(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", "services: {a: {image: busybox, command: default}}\n")
    write(tmp_path, "one.yaml", "services: {a: {image: busybox, command: one}}\n")
    write(tmp_path, "two.yaml", "services: {a: {command: two}}\n")
    assert load(directory=tmp_path, environ={"COMPOSE_FILE": "one.yaml:two.yaml"}).services[
        "a"].command == ("two",)
    assert load(directory=tmp_path, environ={}, env={"COMPOSE_FILE": "one.yaml"}).services[
        "a"].command == ("one",)
    write(tmp_path, ".env", "COMPOSE_FILE=one.yaml,two.yaml\nCOMPOSE_PATH_SEPARATOR=,\n")
    assert load(directory=tmp_path, environ={}).services["a"].command == ("two",)
    assert load(["compose.yaml"], directory=tmp_path, environ={}).services["a"].command == (
        "default",)  # files given win


def test_no_compose_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no compose file in .*compose\.yaml, compose\.yml"):
        load(directory=tmp_path, environ={})
    with pytest.raises(ConfigError, match=r"cannot read compose file .*missing\.yaml"):
        load(["missing.yaml"], directory=tmp_path, environ={})


def test_variables_env_over_process_over_dotenv(tmp_path: Path) -> None:
    write(tmp_path, ".env", """
        # a comment
        export FROM_DOTENV=dotenv
        BOTH=dotenv
        ALL=dotenv
        QUOTED="a \\"b\\"\\nc"
        SINGLE='$$literal'
        INLINE=value # a comment
        BARE_ONLY=bare
        """)
    write(tmp_path, "compose.yaml", """
        services:
          a:
            image: busybox
            environment:
              - DOTENV=${FROM_DOTENV}
              - BOTH=${BOTH}
              - ALL=${ALL}
              - QUOTED=${QUOTED}
              - SINGLE=${SINGLE}
              - INLINE=${INLINE}
              - BARE_ONLY
              - UNSET_BARE
        """)
    env = load(directory=tmp_path, environ={"BOTH": "process", "ALL": "process"},
               env={"ALL": "given"}).services["a"].environment
    assert env == {"DOTENV": "dotenv", "BOTH": "process", "ALL": "given",
                   "QUOTED": 'a "b"\nc', "SINGLE": "$$literal", "INLINE": "value",
                   "BARE_ONLY": "bare"}
    assert "FROM_DOTENV" not in env  # a .env variable reaches a container only via the file


@pytest.mark.parametrize(("text", "variables", "expected"), [
    ("${X}", {"X": "x"}, "x"),
    ("$X-and-$Y", {"X": "x"}, "x-and-"),
    ("${X:-d}", {"X": ""}, "d"),
    ("${X:-d}", {}, "d"),
    ("${X:-d}", {"X": "x"}, "x"),
    ("${X-d}", {"X": ""}, ""),
    ("${X-d}", {}, "d"),
    ("${X:+alt}", {"X": "x"}, "alt"),
    ("${X:+alt}", {"X": ""}, ""),
    ("${X+alt}", {"X": ""}, "alt"),
    ("${X:?must}", {"X": "x"}, "x"),
    ("${X?must}", {"X": ""}, ""),
    ("$$X and $${X}", {"X": "x"}, "$X and ${X}"),
    ("${X:-${Y:-nested}}", {}, "nested"),
    ("a$${X}b${X}", {"X": "1"}, "a${X}b1"),
])
def test_every_interpolation_form(tmp_path: Path, text: str, variables: dict[str, str],
                                  expected: str) -> None:
    write(tmp_path, "compose.yaml", f"services:\n  a:\n    image: busybox\n"
                                    f"    environment:\n      V: '{text}'\n")
    assert load(directory=tmp_path, environ=variables).services["a"].environment["V"] == expected


@pytest.mark.parametrize(("text", "message"), [
    ("${X:?it is needed}", "5: services.a.environment.V: required variable X is missing a "
                           "value: it is needed"),
    ("${X?}", "5: services.a.environment.V: required variable X is missing a value"),
    ("${X", "5: services.a.environment.V: invalid interpolation format in '\\$\\{X': unclosed"),
    ("${1X}", "5: .*does not start with a variable name"),
    ("${X!y}", "5: .*unknown operator"),
    ("5$", "5: .*a \\$ must start a variable or be written \\$\\$"),
])
def test_interpolation_errors_name_file_and_line(tmp_path: Path, text: str,
                                                 message: str) -> None:
    path = write(tmp_path, "compose.yaml", f"services:\n  a:\n    image: busybox\n"
                                           f"    environment:\n      V: '{text}'\n")
    with pytest.raises(ComposeFileError, match=f"^{path}:{message}"):
        load(directory=tmp_path, environ={})


def test_extensions_anchors_and_merge_keys(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        x-base: &base
          image: busybox
          environment: &env
            SHARED: "1"
          user: nobody
        services:
          a:
            <<: *base
            user: root
          b:
            <<: *base
            environment:
              <<: *env
              OWN: "2"
            x-ignored: [anything]
        """)
    project = load(directory=tmp_path, environ={})
    a, b = project.services["a"], project.services["b"]
    assert (a.image, a.user, dict(a.environment)) == ("busybox", "root", {"SHARED": "1"})
    assert (b.user, dict(b.environment)) == ("nobody", {"SHARED": "1", "OWN": "2"})


def test_yaml_errors_and_duplicate_keys_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "compose.yaml", "services:\n  a:\n    image: busybox\n"
                                           "    image: other\n")
    with pytest.raises(ComposeFileError, match=f"^{path}:4: duplicate key 'image' "
                                               "\\(first at line 3\\)"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "services:\n  a: [unclosed\n")
    with pytest.raises(ComposeFileError, match=f"^{path}:3: invalid YAML"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "- a list\n")
    with pytest.raises(ComposeFileError, match="must be a mapping at the top level"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "")
    with pytest.raises(ComposeFileError, match="empty compose file"):
        load(directory=tmp_path, environ={})


def test_profiles(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          app: {image: busybox}
          debug: {image: busybox, profiles: [debug]}
          tools: {image: busybox, profiles: [tools, debug]}
        """)
    assert set(load(directory=tmp_path, environ={}).services) == {"app"}
    project = load(directory=tmp_path, environ={}, profiles=["tools"])
    assert set(project.services) == {"app", "tools"}
    assert dict(project.disabled) == {"debug": ("debug",)}
    assert set(load(directory=tmp_path, environ={"COMPOSE_PROFILES": "debug"}).services) == {
        "app", "debug", "tools"}
    assert set(load(directory=tmp_path, environ={}, profiles=["*"]).services) == {
        "app", "debug", "tools"}


def test_depends_on_a_service_a_profile_leaves_out(tmp_path: Path) -> None:
    path = write(tmp_path, "compose.yaml", """
        services:
          app:
            image: busybox
            depends_on: [db]
          db: {image: busybox, profiles: [db]}
        """)
    with pytest.raises(ComposeFileError, match=f"^{path}:4: .*'app' depends on 'db', which "
                                               "profile\\(s\\) db leave out"):
        load(directory=tmp_path, environ={})
    assert load(directory=tmp_path, environ={}, profiles=["db"]).order() == ["db", "app"]


def test_depends_on_forms_order_and_errors(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          app:
            image: busybox
            depends_on:
              migrate: {condition: service_completed_successfully}
              db: {condition: service_healthy, required: false}
          migrate: {image: busybox, depends_on: [db]}
          db: {image: busybox}
        """)
    project = load(directory=tmp_path, environ={})
    assert project.services["app"].depends_on == (
        DependsOn("migrate", "service_completed_successfully"),
        DependsOn("db", "service_healthy", required=False))
    assert project.order() == ["db", "migrate", "app"]
    path = write(tmp_path, "compose.yaml", """
        services:
          a: {image: busybox, depends_on: [b]}
          b: {image: busybox, depends_on: {a: {condition: service_started}}}
        """)
    with pytest.raises(ComposeFileError, match=f"^{path}:.*dependency cycle: a -> b -> a"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "services:\n  a:\n    image: busybox\n"
                                    "    depends_on: {b: {condition: service_ready}}\n")
    with pytest.raises(ComposeFileError, match=f"^{path}:4: .*unknown condition "
                                               "'service_ready'"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "services:\n  a:\n    image: busybox\n"
                                    "    depends_on: [nope]\n")
    with pytest.raises(ComposeFileError, match=f"^{path}:4: .*undefined service 'nope'"):
        load(directory=tmp_path, environ={})


def test_project_name_rules(tmp_path: Path) -> None:
    directory = tmp_path / "My.Project Dir"
    write(directory, "compose.yaml", "services: {a: {image: busybox}}\n")
    assert load(directory=directory, environ={}).name == "myprojectdir"
    write(directory, "compose.yaml", "name: from-file\nservices: {a: {image: busybox}}\n")
    assert load(directory=directory, environ={}).name == "from-file"
    assert load(directory=directory, environ={"COMPOSE_PROJECT_NAME": "Env_Name"}).name == (
        "env_name")
    assert load(directory=directory, environ={}, project="given").name == "given"
    with pytest.raises(ConfigError, match="project name 'Bad!' must contain only lowercase"):
        load(directory=directory, environ={}, project="Bad!")
    assert load(directory=directory, environ={}).networks["default"].name == "from-file_default"


def test_a_string_command_is_split_into_words_as_compose_does(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          a:
            image: busybox
            command: sh -c 'echo "$$HOME is home"; exit 3'
            entrypoint: ["/bin/env", 1, true]
          b:
            image: busybox
            entrypoint: ""
        """)
    project = load(directory=tmp_path, environ={})
    assert project.services["a"].command == ("sh", "-c", 'echo "$HOME is home"; exit 3')
    assert project.services["a"].entrypoint == ("/bin/env", "1", "true")
    assert project.services["b"].entrypoint == ()
    write(tmp_path, "compose.yaml", "services:\n  a:\n    image: busybox\n"
                                    "    command: echo 'unclosed\n")
    with pytest.raises(ComposeFileError, match=r":4: services\.a\.command: cannot split"):
        load(directory=tmp_path, environ={})


def test_override_rules(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """
        services:
          app:
            image: busybox
            command: [one, two]
            environment: [A=1, B=1]
            ports: ["8080:80"]
            volumes: ["./data:/data", "./x:/x:ro"]
            networks: [front]
            depends_on: [db]
            healthcheck: {test: [CMD, "true"], interval: 5s}
            profiles: [p]
          db: {image: busybox}
        networks: {front: {}, back: {}}
        """)
    write(tmp_path, "b.yaml", """
        services:
          app:
            command: three
            environment: {B: "2", C: "3"}
            ports: ["9090:90", "8080:80"]
            volumes: ["./other:/data"]
            networks: {back: {aliases: [api]}}
            depends_on: {db: {condition: service_healthy}}
            healthcheck: {test: [CMD, "false"]}
            profiles: [p, q]
        """)
    both = load(["a.yaml", "b.yaml"], directory=tmp_path, environ={}, profiles=["p"])
    assert both.services["app"].networks == (ServiceNetwork("front"),
                                             ServiceNetwork("back", ("api",)))
    write(tmp_path, "b.yaml", (tmp_path / "b.yaml").read_text().replace(
        "networks: {back: {aliases: [api]}}", "networks: {front: {aliases: [api]}}"))
    app = load(["a.yaml", "b.yaml"], directory=tmp_path, environ={},
               profiles=["p"]).services["app"]
    assert app.command == ("three",)
    assert dict(app.environment) == {"A": "1", "B": "2", "C": "3"}
    assert app.ports == (Port(80, 8080), Port(90, 9090))
    assert app.volumes == (ServiceVolume("bind", "/data", str(tmp_path / "other")),
                           ServiceVolume("bind", "/x", str(tmp_path / "x"), read_only=True))
    assert app.networks == (ServiceNetwork("front", ("api",)),)
    assert app.depends_on == (DependsOn("db", "service_healthy"),)
    assert app.healthcheck is not None
    assert (app.healthcheck.test, app.healthcheck.interval) == (("false",), 5.0)
    assert app.profiles == ("p", "q")


def test_ports_short_and_long_syntax(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          a:
            image: busybox
            ports:
              - 80
              - "8080:81"
              - "127.0.0.1:8081:82/tcp"
              - "9000-9001:90-91"
              - target: 83
                published: "8083"
                host_ip: 127.0.0.1
              - {target: 84}
        """)
    assert load(directory=tmp_path, environ={}).services["a"].ports == (
        Port(80), Port(81, 8080), Port(82, 8081, "127.0.0.1"), Port(90, 9000), Port(91, 9001),
        Port(83, 8083, "127.0.0.1"), Port(84))
    path = write(tmp_path, "compose.yaml", "services:\n  a:\n    image: busybox\n"
                                           "    ports:\n      - 80\n      - '53:53/udp'\n")
    with pytest.raises(NotSupported, match=f"^{path}:6: service 'a': compose key 'ports.1' is "
                                           "not supported yet: udp ports"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "services:\n  a:\n    image: busybox\n"
                                    "    ports: ['70000']\n")
    with pytest.raises(ComposeFileError, match=f"^{path}:4: services.a.ports.0: invalid port"):
        load(directory=tmp_path, environ={})


def test_healthcheck_forms_and_durations(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          cmd:
            image: busybox
            healthcheck:
              test: [CMD, wget, -q, localhost]
              interval: 1m30s
              timeout: 500ms
              retries: 5
              start_period: 1.5s
          shell: {image: busybox, healthcheck: {test: [CMD-SHELL, "test -f /x"]}}
          string: {image: busybox, healthcheck: {test: "test -f /y"}}
          none: {image: busybox, healthcheck: {test: [NONE]}}
          disabled: {image: busybox, healthcheck: {disable: true}}
        """)
    services = load(directory=tmp_path, environ={}).services
    cmd = services["cmd"].healthcheck
    assert cmd is not None
    assert (cmd.test, cmd.interval, cmd.timeout, cmd.retries, cmd.start_period) == (
        ("wget", "-q", "localhost"), 90.0, 0.5, 5, 1.5)
    assert services["shell"].healthcheck.test == ("/bin/sh", "-c", "test -f /x")
    assert services["string"].healthcheck.test == ("/bin/sh", "-c", "test -f /y")
    assert services["none"].healthcheck.disable and services["disabled"].healthcheck.disable
    assert services["shell"].healthcheck.interval_s == 30.0
    assert [go_duration(s) for s in (90, 0.5, 1.5, 0, 3600, 3725.25)] == [
        "1m30s", "500ms", "1.5s", "0s", "1h0m0s", "1h2m5.25s"]
    path = write(tmp_path, "compose.yaml", "services:\n  a:\n    image: busybox\n"
                                           "    healthcheck:\n      test: [CMD, 'true']\n"
                                           "      interval: soon\n")
    with pytest.raises(ComposeFileError, match=f"^{path}:6: services.a.healthcheck.interval: "
                                               "must be a duration"):
        load(directory=tmp_path, environ={})


def test_limits_replicas_and_other_service_keys(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          a:
            image: busybox
            deploy:
              replicas: 2
              resources: {limits: {memory: 256m, cpus: "0.5", pids: 64}}
            user: "1000:1000"
            working_dir: /srv
            hostname: box
            init: true
            read_only: true
            tmpfs: [/run, "/tmp:size=1m"]
            volumes:
              - {type: tmpfs, target: /cache, tmpfs: {size: 1048576}}
            stop_grace_period: 3s
          b: {image: busybox, scale: 3, mem_limit: 1g, cpus: 2, pids_limit: 10}
        """)
    services = load(directory=tmp_path, environ={}).services
    a, b = services["a"], services["b"]
    assert (a.replicas, a.limits.memory, a.limits.cpus, a.limits.pids) == (2, 256 << 20, 0.5,
                                                                           64)
    assert (a.user, a.working_dir, a.hostname, a.init, a.read_only) == (
        "1000:1000", "/srv", "box", True, True)
    assert a.tmpfs == ("/run", "/tmp:size=1m") and a.stop_grace_period == 3.0
    assert a.volumes == (ServiceVolume("tmpfs", "/cache", tmpfs_size=1 << 20),)
    assert (b.replicas, b.limits.memory, b.limits.cpus, b.limits.pids) == (3, 1 << 30, 2.0, 10)


@pytest.mark.parametrize(("body", "line", "message"), [
    ("    dns: [10.0.0.1]\n", 4, "service 'a': compose key 'dns' is not supported yet"),
    ("    label_file: a.labels\n", 4,
     "service 'a': compose key 'label_file' is not supported yet"),
    ("    restart: always\n", 4, "service 'a': compose key 'restart' is not supported yet"),
    ("    volumes:\n      - {type: volume, source: d, target: /d, volume: {labels: {a: b}}}\n",
     5, "service 'a': compose key 'volumes.0.volume.labels' is not supported yet"),
    ("    volumes:\n      - {type: bind, source: ., target: /d, bind: {propagation: shared}}\n",
     5, "service 'a': compose key 'volumes.0.bind.propagation' is not supported yet"),
    ("    volumes: ['d:/d:z']\n", 4,
     "service 'a': compose key 'volumes.0' is not supported yet: mount mode 'z'"),
    ("    build:\n      context: .\n      secrets: [s]\n", 6,
     "service 'a': compose key 'build.secrets' is not supported yet"),
    ("    deploy:\n      restart_policy: {condition: any}\n", 5,
     "service 'a': compose key 'deploy.restart_policy' is not supported yet"),
    ("    env_file:\n      - {path: a.env, format: raw}\n", 5,
     "service 'a': compose key 'env_file.0.format' is not supported yet"),
    ("    networks:\n      default:\n        ipv4_address: 10.0.0.5\n", 6,
     "service 'a': compose key 'networks.default.ipv4_address' is not supported yet"),
])
def test_valid_compose_keys_we_do_not_do_are_not_supported(tmp_path: Path, body: str,
                                                           line: int, message: str) -> None:
    path = write(tmp_path, "compose.yaml", f"services:\n  a:\n    image: busybox\n{body}")
    with pytest.raises(NotSupported, match=f"^{path}:{line}: {message}"):
        load(directory=tmp_path, environ={})


def test_top_level_keys_we_do_not_do(tmp_path: Path) -> None:
    path = write(tmp_path, "compose.yaml", "services: {a: {image: busybox}}\n"
                                           "volumes: {data: {labels: {a: b}}}\n")
    with pytest.raises(NotSupported, match=f"^{path}:2: compose key 'volumes.data.labels' "
                                           "is not supported yet"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "services: {a: {image: busybox}}\nsecrets: {s: {file: x}}\n")
    with pytest.raises(NotSupported, match=f"^{path}:2: compose key 'secrets'"):
        load(directory=tmp_path, environ={})
    write(tmp_path, "compose.yaml", "services: {a: {image: busybox}}\n"
                                    "networks: {n: {attachable: true}}\n")
    with pytest.raises(NotSupported, match=f"^{path}:2: compose key 'networks.n.attachable'"):
        load(directory=tmp_path, environ={})


def test_privileges_sysctls_shm_and_extra_hosts(tmp_path: Path) -> None:
    write(tmp_path, "seccomp.json", '{"defaultAction": "SCMP_ACT_ALLOW"}\n')
    write(tmp_path, "compose.yaml", """
        services:
          a:
            image: busybox
            privileged: true
            cap_add: [net_admin, CAP_SYS_TIME, NET_ADMIN]
            cap_drop: [ALL]
            security_opt: ["no-new-privileges:true", "seccomp=seccomp.json"]
            sysctls: [net.core.somaxconn=1024, "kernel.shmmax=100"]
            shm_size: 1g
            extra_hosts: ["db:10.0.0.5", "v6=::1"]
            stop_signal: usr1
            labels: [team=db, solo]
            networks: [inside]
          b:
            image: busybox
            sysctls: {net.ipv4.ip_forward: 1}
            extra_hosts: {cache: 10.0.0.6}
        networks:
          inside: {internal: true}
        """)
    project = load(directory=tmp_path, environ={}, project="p")
    a, b = project.services["a"], project.services["b"]
    assert (a.privileged, a.cap_add, a.cap_drop) == (True, ("NET_ADMIN", "SYS_TIME"), ("ALL",))
    assert a.security_opt == ("no-new-privileges:true",
                              f"seccomp={(tmp_path / 'seccomp.json').resolve()}")
    assert dict(a.sysctls) == {"net.core.somaxconn": "1024", "kernel.shmmax": "100"}
    assert dict(b.sysctls) == {"net.ipv4.ip_forward": "1"}
    assert (a.shm_size, b.shm_size, b.privileged) == (1 << 30, None, None)
    assert dict(a.extra_hosts) == {"db": "10.0.0.5", "v6": "::1"}
    assert dict(b.extra_hosts) == {"cache": "10.0.0.6"}
    assert (a.stop_signal, b.stop_signal) == ("SIGUSR1", None)
    assert (dict(a.labels), dict(b.labels)) == ({"team": "db", "solo": ""}, {})
    assert project.networks["inside"].internal and not project.networks["default"].internal
    shaped = config_json(project)
    assert shaped["networks"]["inside"] == {"name": "p_inside", "ipam": {}, "internal": True}
    assert {k: shaped["services"]["a"][k] for k in ("cap_add", "cap_drop", "privileged",
                                                    "shm_size", "extra_hosts")} == {
        "cap_add": ["NET_ADMIN", "SYS_TIME"], "cap_drop": ["ALL"], "privileged": True,
        "shm_size": str(1 << 30), "extra_hosts": ["db=10.0.0.5", "v6=::1"]}


def test_named_anonymous_and_long_syntax_volumes(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          a:
            image: busybox
            volumes:
              - data:/data
              - /scratch
              - logs:/logs:ro
              - {type: volume, source: data, target: /again, read_only: true}
              - {type: volume, target: /anon}
              - ./here:/here
        volumes:
          data: {}
          logs: {name: shared-logs}
        """)
    project = load(directory=tmp_path, environ={}, project="p")
    assert project.services["a"].volumes == (
        ServiceVolume("volume", "/data", "data"), ServiceVolume("volume", "/scratch"),
        ServiceVolume("volume", "/logs", "logs", read_only=True),
        ServiceVolume("volume", "/again", "data", read_only=True),
        ServiceVolume("volume", "/anon"),
        ServiceVolume("bind", "/here", str(tmp_path.resolve() / "here")))
    assert {k: v.name for k, v in project.volumes.items()} == {"data": "p_data",
                                                                "logs": "shared-logs"}
    shaped = config_json(project)
    assert shaped["volumes"] == {"data": {"name": "p_data"}, "logs": {"name": "shared-logs"}}
    assert shaped["services"]["a"]["volumes"][:2] == [
        {"type": "volume", "source": "data", "target": "/data", "volume": {}},
        {"type": "volume", "target": "/scratch", "volume": {}}]


def test_external_volumes_nocopy_subpath_create_host_path_and_host_gateway(
        tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        services:
          a:
            image: busybox
            volumes:
              - outside:/outside
              - data:/quiet:nocopy
              - {type: volume, source: data, target: /sub, volume: {subpath: one/two}}
              - {type: volume, source: data, target: /nc, volume: {nocopy: true}}
              - {type: bind, source: ./strict, target: /strict,
                 bind: {create_host_path: false}}
            extra_hosts: ["host.docker.internal:host-gateway", "db=10.0.0.5"]
        volumes:
          data: {}
          outside: {external: true}
          renamed: {external: true, name: made-elsewhere}
        """)
    project = load(directory=tmp_path, environ={}, project="p")
    assert project.services["a"].volumes == (
        ServiceVolume("volume", "/outside", "outside"),
        ServiceVolume("volume", "/quiet", "data", nocopy=True),
        ServiceVolume("volume", "/sub", "data", subpath="one/two"),
        ServiceVolume("volume", "/nc", "data", nocopy=True),
        ServiceVolume("bind", "/strict", str(tmp_path.resolve() / "strict"),
                      create_host_path=False))
    assert {k: (v.name, v.external) for k, v in project.volumes.items()} == {
        "data": ("p_data", False), "outside": ("outside", True),
        "renamed": ("made-elsewhere", True)}
    assert dict(project.services["a"].extra_hosts) == {"host.docker.internal": "host-gateway",
                                                       "db": "10.0.0.5"}
    shaped = config_json(project)
    assert shaped["volumes"]["outside"] == {"name": "outside", "external": True}
    assert [v.get("volume", v.get("bind")) for v in shaped["services"]["a"]["volumes"]] == [
        {}, {"nocopy": True}, {"subpath": "one/two"}, {"nocopy": True},
        {"create_host_path": False}]
    assert shaped["services"]["a"]["extra_hosts"] == ["db=10.0.0.5",
                                                      "host.docker.internal=host-gateway"]


@pytest.mark.parametrize(("text", "message"), [
    ("services:\n  a:\n    image: busybox\n    volumes:\n"
     "      - {type: volume, source: d, target: /d, volume: {subpath: ../up}}\n"
     "volumes: {d: {}}\n",
     ":5: services.a.volumes.0.volume.subpath: subpath '../up' must be a relative path"),
    ("services:\n  a:\n    image: busybox\n    volumes:\n"
     "      - {type: volume, target: /d, volume: {subpath: x}}\n",
     ":5: services.a.volumes.0.volume.subpath: an anonymous volume is empty"),
    ("services:\n  a:\n    image: busybox\nvolumes:\n  d: {external: true, driver: local}\n",
     ":5: volumes.d.driver: volume 'd' is external: 'driver' cannot be set"),
    ("services:\n  a:\n    image: busybox\n    volumes: ['./x:/x:nocopy']\n",
     ":4: service 'a': compose key 'volumes.0' is not supported yet: mount mode 'nocopy'"),
    ("services:\n  a:\n    image: busybox\n    volumes:\n"
     "      - {type: tmpfs, target: /d, volume: {nocopy: true}}\n",
     ":5: services.a.volumes.0.volume: volume options need type: volume"),
    ("services:\n  a:\n    image: busybox\n    extra_hosts: [db:host-gatewy]\n",
     ":4: services.a.extra_hosts.db: 'host-gatewy' is not an IPv4 or IPv6 address "
     "\\(nor host-gateway\\)"),
])
def test_bad_volume_options_name_file_and_line(tmp_path: Path, text: str,
                                               message: str) -> None:
    path = write(tmp_path, "compose.yaml", text)
    with pytest.raises((ComposeFileError, NotSupported), match=f"^{path}{message}"):
        load(directory=tmp_path, environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("services:\n  a:\n    image: busybox\n    volumes: ['nope:/x']\n",
     ":4: services.a.volumes.0: service 'a' refers to undefined volume 'nope'"),
    ("services:\n  a:\n    image: busybox\n    volumes: ['data:x']\nvolumes: {data: {}}\n",
     ":4: services.a.volumes.0: the container path 'x' must be absolute"),
    ("services:\n  a:\n    image: busybox\nvolumes:\n  data: {name: '-bad'}\n",
     ":5: volumes.data: volume 'data': '-bad': not a valid volume name"),
])
def test_bad_volumes_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "compose.yaml", text)
    with pytest.raises(ComposeFileError, match=f"^{path}{message}"):
        load(directory=tmp_path, environ={})


@pytest.mark.parametrize(("body", "message"), [
    ("    cap_add: [NET_ADMINS]\n",
     ":4: services.a.cap_add.0: cap_add: unknown capability 'NET_ADMINS'"),
    ("    privileged: sometimes\n", ":4: services.a.privileged: must be a boolean"),
    ("    security_opt: [nonsense]\n",
     ":4: services.a.security_opt.0: security_opt 'nonsense': unknown option"),
    ("    security_opt: [seccomp=missing.json]\n",
     ":4: services.a.security_opt.0: seccomp profile .*missing.json not found"),
    ("    sysctls: {kernel.pid_max: 10}\n",
     ":4: services.a.sysctls.kernel.pid_max: sysctls: 'kernel.pid_max' is not in a separate"),
    ("    shm_size: huge\n", ":4: services.a.shm_size: must be a size such as 256m"),
    ("    stop_signal: SIGNOPE\n",
     ":4: services.a.stop_signal: stop_signal: 'SIGNOPE': not a signal name"),
    ("    extra_hosts: [db:10.0.0.500]\n",
     ":4: services.a.extra_hosts.db: '10.0.0.500' is not an IPv4 or IPv6 address"),
])
def test_bad_privileges_and_hosts_name_file_and_line(tmp_path: Path, body: str,
                                                     message: str) -> None:
    path = write(tmp_path, "compose.yaml", f"services:\n  a:\n    image: busybox\n{body}")
    with pytest.raises(ComposeFileError, match=f"^{path}{message}"):
        load(directory=tmp_path, environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("services:\n  a:\n    image: busybox\n    imagee: x\n",
     ":4: services.a.imagee: additional property 'imagee' is not allowed"),
    ("services:\n  a:\n    command: true\n", ":2: services.a: service 'a' has neither an "
                                              "image nor a build context"),
    ("services:\n  a:\n    image: busybox\n    ports: 80\n",
     ":4: services.a.ports: must be a list, not a number"),
    ("services:\n  a:\n    image: busybox\n    init: maybe\n",
     ":4: services.a.init: must be a boolean, not 'maybe'"),
    ("services:\n  a:\n    image: busybox\n    networks: [nope]\n",
     ":4: services.a.networks.nope: service 'a' refers to undefined network 'nope'"),
    ("services:\n  a:\n    image: busybox\n    deploy: {replicas: 2}\n    scale: 3\n",
     ":4: services.a.deploy.replicas: deploy.replicas \\(2\\) and scale \\(3\\) disagree"),
    ("services:\n  a:\n    image: busybox\n    mem_limit: lots\n",
     ":4: services.a.mem_limit: must be a size such as 256m"),
    ("services:\n  a:\n    build: ./nowhere\n",
     ":3: services.a.build.context: build context .*nowhere is not a directory"),
    ("services:\n  a:\n    image: busybox\n    env_file: missing.env\n",
     ":4: services.a.env_file: env file .*missing.env not found"),
    ("services: {}\n", ":1: no service is defined"),
    ("servics: {}\n", ":1: servics: additional property 'servics' is not allowed"),
])
def test_bad_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "compose.yaml", text)
    with pytest.raises(ComposeFileError, match=f"^{path}{message}"):
        load(directory=tmp_path, environ={})


def test_env_file_and_build(tmp_path: Path) -> None:
    write(tmp_path, "app.env", "FROM_FILE=1\nOVERRIDDEN=file\n")
    write(tmp_path, "ctx/Dockerfile", "FROM busybox\n")
    write(tmp_path, "compose.yaml", """
        services:
          a:
            build:
              context: ctx
              dockerfile: Dockerfile
              args: [VERSION=1.2, FROM_ENV]
              target: final
            env_file: [app.env, {path: optional.env, required: false}]
            environment: {OVERRIDDEN: service}
        """)
    a = load(directory=tmp_path, environ={"FROM_ENV": "e"}).services["a"]
    assert dict(a.environment) == {"FROM_FILE": "1", "OVERRIDDEN": "service"}
    assert a.build is not None
    assert (a.build.context, a.build.dockerfile, dict(a.build.args), a.build.target) == (
        tmp_path.resolve() / "ctx", "Dockerfile", {"VERSION": "1.2", "FROM_ENV": "e"}, "final")


def test_config_json_has_compose_shape(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", """
        name: shape
        services:
          web:
            image: busybox
            command: echo hi
            ports: ["8080:80"]
            depends_on: {db: {condition: service_healthy}}
            healthcheck: {test: [CMD, "true"], interval: 1s}
          db: {image: busybox, networks: {back: {aliases: [database]}}}
        networks: {back: {}}
        """)
    assert config_json(load(directory=tmp_path, environ={})) == {
        "name": "shape",
        "services": {
            "db": {"command": None, "entrypoint": None, "image": "busybox",
                   "networks": {"back": {"aliases": ["database"]}}},
            "web": {"command": ["echo", "hi"], "entrypoint": None, "image": "busybox",
                    "depends_on": {"db": {"condition": "service_healthy", "required": True}},
                    "healthcheck": {"test": ["CMD", "true"], "interval": "1s"},
                    "networks": {"default": None},
                    "ports": [{"mode": "ingress", "target": 80, "published": "8080",
                               "protocol": "tcp"}]}},
        "networks": {"back": {"name": "shape_back", "ipam": {}},
                     "default": {"name": "shape_default", "ipam": {}}}}


def test_pycontain_compose_config_prints_the_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pytest_pycontain.cli import main

    write(tmp_path, "base.yaml", "services:\n  a: {image: busybox}\n"
                                 "  b: {image: busybox, profiles: [extra]}\n")
    write(tmp_path, "more.yaml", "services:\n  a:\n    command: echo ${WORD}\n")
    write(tmp_path, ".env", "WORD=hello\n")
    monkeypatch.chdir(tmp_path)
    assert main(["compose", "-f", "base.yaml", "-f", "more.yaml", "-p", "demo", "--profile",
                 "extra", "config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_json(load(["base.yaml", "more.yaml"], directory=tmp_path,
                                       project="demo", profiles=["extra"]))
    assert printed["name"] == "demo" and printed["services"]["a"]["command"] == ["echo", "hello"]
    assert main(["compose", "-f", "base.yaml", "-p", "Bad Name", "config"]) == 1
    assert "project name 'Bad Name' must contain only" in capsys.readouterr().err
