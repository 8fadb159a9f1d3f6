"""The Compose loader against a real Compose implementation on the same files.

The oracle is Debian's ``docker-compose`` (1.29, Python; ``config`` needs no daemon). It prints
YAML, where docker compose v2 (whose JSON form ``pycontain compose config`` prints) has its
own representation; the known differences are normalised explicitly, one by one, in
``from_v1`` and ``from_ours`` below, so anything else that differs fails the test:

1. v1 prints every service; v2 leaves out those the active profiles do not enable.
2. v1 prints a string ``command``/``entrypoint`` as written; v2 splits it into words.
3. v1 keeps ``$$`` escapes in its output; v2 prints the value (``$``).
4. v1 has ``version`` and no ``name``: only services and networks are compared.
5. v1 does not write the implicit ``default`` network (on a service or at the top level).
6. Durations: v1 as written (``500ms``, ``90s``), v2 as Go writes them: compared as seconds.
7. Sizes: v1 as written (``256m``), v2 in bytes: compared as bytes.
8. Ports: v1 mixes mappings and ``ip:published:target/proto`` strings, v2 always mappings
   with a string ``published``: compared as (host_ip, published, target, protocol).
9. Healthchecks: a string test is a string in v1 and ``[CMD-SHELL, ...]`` in v2;
   ``disable: true`` is ``test: [NONE]`` in v1.
10. Volumes: v1 writes short-syntax volumes as ``[src:]dst[:mode]`` strings, v2 as mappings.
11. ``expose`` items are numbers in v1, strings in v2; ``depends_on`` has v2's ``required``
    (only the condition is compared); v2 fills ``build.dockerfile`` with ``Dockerfile``.
12. ``x-`` keys inside a service: v1 prints them; the model keeps no extensions.
13. A bare build arg (``args: [NAME]``) whose variable is unset: v1 passes ``''``, the
    loader leaves it unset (the Dockerfile's ``ARG`` default applies), as v2 does.
14. A network joined without options: v1 writes ``{}`` after merging files, else ``null``.
15. A bare ``environment`` entry whose variable is unset: v1 writes ``NAME: null``, the model
    leaves it out (the container gets no such variable either way).
16. ``extra_hosts``: v1 as written (``name:address``), v2 sorted ``name=address``: compared as
    sorted (name, address) pairs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_pycontain.compose import ComposeFileError, load
from pytest_pycontain.compose.jsonform import config_json

ORACLE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    ORACLE is None, reason="the oracle is missing: Debian's docker-compose is not installed "
                           "(.ci/setup installs it)")

ANCHORS = {
    "compose.yaml": """
        x-base: &base
          image: busybox
          environment: &env
            SHARED: "1"
        services:
          a:
            <<: *base
            command: sh -c 'echo "$$HOME is ${FROM_DOTENV}"'
            entrypoint: /bin/env -i
            environment:
              <<: *env
              D: ${FROM_DOTENV}
              E: ${UNSET:-default}
              F: ${EMPTY-kept-empty}
              G: ${EMPTY:-replaced}
              H: ${GIVEN:?must be given}
              I: $$literal
              BARE:
            user: nobody
          b:
            <<: *base
            x-note: extensions are kept out
        """,
    ".env": "FROM_DOTENV=dot\nGIVEN=from-dotenv\nEMPTY=\n",
}

OVERRIDES = {
    "compose.yaml": """
        services:
          app:
            image: busybox
            command: [one, two]
            environment: [A=1, B=1]
            ports: ["8080:80"]
            volumes: ["./data:/data", "./x:/x:ro"]
            depends_on: [db]
            healthcheck: {test: [CMD, "true"], interval: 5s}
            networks: [front]
          db:
            image: busybox
            networks: {front: {aliases: [database]}}
        networks: {front: {}}
        """,
    "override.yaml": """
        services:
          app:
            command: three four
            environment: {B: "2", C: "3"}
            ports: ["9090:90"]
            volumes: ["./other:/data"]
            depends_on: {db: {condition: service_healthy}}
            healthcheck: {test: [CMD, "false"]}
            user: "1000"
          db:
            healthcheck: {test: "pg_isready", interval: 1m30s, timeout: 500ms, retries: 2,
                          start_period: 1s}
        """,
}

SERVICE_KEYS = {
    "compose.yaml": """
        services:
          web:
            build:
              context: ctx
              args: [VERSION=1.2, FROM_PROCESS]
              target: final
            ports:
              - 80
              - "8081:81"
              - "127.0.0.1:8082:82"
              - {target: 83, published: 8083}
            expose: [90, "91"]
            deploy:
              replicas: 2
              resources: {limits: {memory: 256m, cpus: "0.5"}}
            tmpfs: /run
            volumes: [{type: tmpfs, target: /cache}, {type: bind, source: ./d, target: /d}]
            working_dir: /srv
            hostname: box
            init: true
            read_only: true
            stop_grace_period: 3s
            env_file: app.env
          job:
            image: busybox
            command: ["echo", "done"]
            healthcheck: {disable: true}
            depends_on:
              web: {condition: service_started}
          debug:
            image: busybox
            profiles: [debug]
          tools:
            image: busybox
            profiles: [tools, debug]
        """,
    "ctx/Dockerfile": "FROM busybox\n",
    "app.env": "FROM_ENV_FILE=yes\nQUOTED='single'\n",
}


VOLUME_KEYS = {
    "compose.yaml": """
        services:
          a:
            image: busybox
            volumes:
              - data:/data
              - {type: volume, source: data, target: /quiet, volume: {nocopy: true}}
              - {type: volume, source: outside, target: /outside, read_only: true}
              - /anonymous
            extra_hosts: ["gw:host-gateway", "db:10.0.0.5"]
        volumes:
          data: {}
          outside: {external: true}
        """,
}


@pytest.mark.parametrize(("files", "given", "profiles", "environ"), [
    pytest.param(ANCHORS, ["compose.yaml"], [], {"BARE": "b"}, id="anchors-interpolation"),
    pytest.param(ANCHORS, ["compose.yaml"], [], {"FROM_DOTENV": "process", "EMPTY": "x"},
                 id="process-over-dotenv"),
    pytest.param(OVERRIDES, ["compose.yaml", "override.yaml"], [], {}, id="override-rules"),
    pytest.param(SERVICE_KEYS, ["compose.yaml"], [], {"FROM_PROCESS": "p"}, id="service-keys"),
    pytest.param(SERVICE_KEYS, ["compose.yaml"], ["tools"], {}, id="profile-tools"),
    pytest.param(SERVICE_KEYS, ["compose.yaml"], ["debug"], {}, id="profile-debug"),
    pytest.param(VOLUME_KEYS, ["compose.yaml"], [], {}, id="volume-keys"),
])
def test_the_loader_resolves_as_docker_compose_does(
        tmp_path: Path, files: dict[str, str], given: list[str], profiles: list[str],
        environ: dict[str, str]) -> None:
    for name, text in files.items():
        path = tmp_path / "project" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    directory = tmp_path / "project"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **environ}
    argv = [ORACLE, "--project-directory", str(directory)]
    for f in given:
        argv += ["-f", str(directory / f)]
    for p in profiles:
        argv += ["--profile", p]
    oracle = subprocess.run([*argv, "config"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, check=False)
    assert oracle.returncode == 0, oracle.stderr
    import yaml

    theirs = from_v1(yaml.safe_load(oracle.stdout), profiles, frozenset(env))
    ours = from_ours(config_json(load(given, directory=directory, profiles=profiles,
                                      environ=env)))
    assert ours == theirs


@pytest.mark.parametrize("body", [
    "    environment: {V: '5$'}\n",
    "    environment: {V: 'a $ b'}\n",
    "    environment: {V: '$1x'}\n",
    "    environment: {V: '${'}\n",
    "    imagee: busybox\n",
    "    ports: 80\n",
    "    depends_on: [nope]\n",
    "    healthcheck: {test: [CMD, 'true'], interval: soon}\n",
    "    command: a: b\n",
])
def test_both_reject_the_same_bad_files(tmp_path: Path, body: str) -> None:
    (tmp_path / "compose.yaml").write_text(f"services:\n  a:\n    image: busybox\n{body}")
    oracle = subprocess.run([ORACLE, "config"], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin"}, check=False)
    assert oracle.returncode != 0, oracle.stdout
    with pytest.raises(ComposeFileError, match=f"^{tmp_path / 'compose.yaml'}:4: "):
        load(directory=tmp_path, environ={})


def test_both_reject_a_required_variable_left_unset(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: busybox\n"
                                           "    environment: {X: '${NEEDED:?give it}'}\n")
    oracle = subprocess.run([ORACLE, "config"], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin"}, check=False)
    assert oracle.returncode != 0 and "give it" in oracle.stderr
    with pytest.raises(Exception, match="required variable NEEDED is missing a value: give it"):
        load(directory=tmp_path, environ={})


# -- the normalisation, difference by difference (see the module's docstring) ---------------

def from_v1(doc: dict[str, Any], profiles: list[str],
            bare_set: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``bare_set``: the variables set (to anything, even empty) where the oracle ran."""
    services = {}
    for name, body in doc["services"].items():
        wanted = body.get("profiles")
        if wanted and not set(wanted) & set(profiles):  # 1
            continue
        body = _unescape(body)  # 3
        for key in ("command", "entrypoint"):  # 2
            if isinstance(body.get(key), str):
                body[key] = shlex.split(body[key])
        body.setdefault("networks", {"default": None})  # 5
        body["networks"] = {k: v or None for k, v in body["networks"].items()}  # 14
        body = {k: v for k, v in body.items() if not k.startswith("x-")}  # 12
        args = body.get("build", {}).get("args", {})
        for arg in [k for k, v in args.items() if v == "" and k not in bare_set]:
            del args[arg]  # 13
        if "environment" in body:
            body["environment"] = {k: v for k, v in body["environment"].items()
                                   if v is not None}  # 15
        services[name] = _canonical(body)
    networks = set(doc.get("networks") or {})
    if any("default" in s["networks"] for s in services.values()):
        networks.add("default")  # 5
    return {"services": services, "networks": networks}


def from_ours(doc: dict[str, Any]) -> dict[str, Any]:
    return {"services": {name: _canonical(body) for name, body in doc["services"].items()},
            "networks": set(doc.get("networks") or {})}


def _unescape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    return value.replace("$$", "$") if isinstance(value, str) else value


def _canonical(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out.pop("profiles", None)  # enabled services only; which ones is the comparison itself
    for key in ("command", "entrypoint"):
        out[key] = out.get(key)
    if "stop_grace_period" in out:
        out["stop_grace_period"] = _seconds(out["stop_grace_period"])  # 6
    if "healthcheck" in out:
        out["healthcheck"] = _healthcheck(out["healthcheck"])  # 6, 9
    if "ports" in out:
        out["ports"] = sorted(_port(p) for p in out["ports"])  # 8
    if "expose" in out:
        out["expose"] = [str(e) for e in out["expose"]]  # 11
    if "depends_on" in out:
        out["depends_on"] = {k: v["condition"] for k, v in out["depends_on"].items()}  # 11
    if "build" in out:
        out["build"] = {"dockerfile": "Dockerfile", **out["build"]}  # 11
    if "volumes" in out:
        out["volumes"] = [_volume(v) for v in out["volumes"]]  # 10
    if "extra_hosts" in out:  # 16
        out["extra_hosts"] = sorted(tuple(re.split("[=:]", h, maxsplit=1))
                                    for h in out["extra_hosts"])
    limits = out.get("deploy", {}).get("resources", {}).get("limits", {})
    if "memory" in limits:
        limits["memory"] = _bytes(limits["memory"])  # 7
    if "cpus" in limits:
        limits["cpus"] = float(limits["cpus"])
    if isinstance(out.get("tmpfs"), str):
        out["tmpfs"] = [out["tmpfs"]]
    return out


def _healthcheck(check: dict[str, Any]) -> dict[str, Any]:
    check = dict(check)
    if check.get("disable") or check.get("test") == ["NONE"]:
        return {"disable": True}
    if isinstance(check.get("test"), str):
        check["test"] = ["CMD-SHELL", check["test"]]
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if key in check:
            check[key] = _seconds(check[key])
    return check


def _seconds(text: Any) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return round(sum(float(n) * units[u]
                     for n, u in re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", str(text))), 9)


def _bytes(text: Any) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)b?", str(text).lower())
    assert match, text
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def _port(port: Any) -> tuple[str, str, int, str]:
    if isinstance(port, dict):
        return (port.get("host_ip") or "", str(port.get("published") or ""),
                int(port["target"]), port.get("protocol") or "tcp")
    spec, _, protocol = str(port).partition("/")
    *rest, target = spec.split(":")
    host_ip, published = (rest if len(rest) == 2 else ["", *rest] if rest else ["", ""])
    return host_ip, published, int(target), protocol or "tcp"


def _volume(volume: Any) -> tuple[str, str, str, bool]:
    if isinstance(volume, dict):
        return (volume["type"], volume.get("source") or "", volume["target"],
                bool(volume.get("read_only")))
    parts = volume.split(":")
    if len(parts) == 1:  # an anonymous volume
        return "volume", "", parts[0], False
    source, target, *mode = parts
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return kind, source, target, "ro" in (mode[0].split(",") if mode else [])
