"""The registry client: auth flows, Docker credentials, retries, redirects, platforms, URLs.

Token and basic auth run against ``tests/tiny_registry.py`` (a registry with a token endpoint,
started per test on 127.0.0.1); pulls go through the real store so the whole path is exercised.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pycontain import registry as reg
from pytest_pycontain.errors import PullError, PushError
from pytest_pycontain.reference import parse
from pytest_pycontain.store import Store
from tests.tiny_registry import TinyRegistry, make_image

IMAGE = make_image({"bin/hello": b"hi\n"}, cmd=["hello"])


@pytest.fixture
def tiny() -> Iterator[TinyRegistry]:
    server = TinyRegistry()
    server.add("team/app", "v1", IMAGE)
    yield server
    server.stop()


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$DOCKER_CONFIG`` for this test; write ``config.json`` into it."""
    home = tmp_path / "docker-config"
    home.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(home))
    return home / "config.json"


def store(tmp_path: Path, **options) -> Store:
    return Store(tmp_path / "store", attempts=3, backoff=0.01, **options)


def write_auths(path: Path, host: str, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def test_anonymous_bearer_token_flow(tiny: TinyRegistry, tmp_path: Path,
                                     docker_config: Path) -> None:
    tiny.auth = "bearer"
    image = store(tmp_path).pull(f"{tiny.host}/team/app:v1")
    assert image.digest == IMAGE["digest"]
    assert tiny.requests["token"] >= 1
    used = [a for a in tiny.authorizations if a]
    assert used and all(a.startswith("Bearer ") for a in used)


def test_bearer_with_credentials_from_docker_config(tiny: TinyRegistry, tmp_path: Path,
                                                    docker_config: Path) -> None:
    tiny.auth = "bearer"
    tiny.users = {"alice": "s3cret"}
    write_auths(docker_config, f"http://{tiny.host}", "alice", "s3cret")
    image = store(tmp_path).pull(f"{tiny.host}/team/app:v1")
    assert image.config["Cmd"] == ["hello"]


def test_wrong_credentials_name_reference_and_registry(tiny: TinyRegistry, tmp_path: Path,
                                                       docker_config: Path) -> None:
    tiny.auth = "bearer"
    tiny.users = {"alice": "s3cret"}
    write_auths(docker_config, tiny.host, "alice", "wrong")
    s = store(tmp_path)
    with pytest.raises(PullError) as info:
        s.pull(f"{tiny.host}/team/app:v1")
    message = str(info.value)
    assert f"{tiny.host}/team/app:v1" in message and f"registry {tiny.host}" in message
    assert "wrong credentials" in message
    assert info.value.registry == tiny.host
    assert not any((tmp_path / "store" / "blobs" / "sha256").iterdir())
    assert json.loads((tmp_path / "store" / "index.json").read_text())["manifests"] == []


def test_identity_token_uses_the_oauth2_refresh_grant(tiny: TinyRegistry, tmp_path: Path,
                                                      docker_config: Path) -> None:
    tiny.auth = "bearer"
    tiny.users = {"nobody-by-password": "x"}
    tiny.refresh_tokens = {"refresh-123"}
    docker_config.write_text(json.dumps({"auths": {tiny.host: {"identitytoken": "refresh-123"}}}))
    assert reg.credentials_for(tiny.host) == ("<token>", "refresh-123")
    assert store(tmp_path).pull(f"{tiny.host}/team/app:v1").digest == IMAGE["digest"]
    assert tiny.token_scopes == ["repository:team/app:pull"]
    tiny.refresh_tokens = set()
    with pytest.raises(PullError, match=r"token service .* said 401: wrong credentials"):
        store(tmp_path).pull(f"{tiny.host}/team/app:v1", policy="always")


def test_missing_credentials_say_so(tiny: TinyRegistry, tmp_path: Path,
                                    docker_config: Path) -> None:
    tiny.auth = "basic"
    tiny.users = {"bob": "pw"}
    with pytest.raises(PullError, match="basic auth and no credentials were found"):
        store(tmp_path).pull(f"{tiny.host}/team/app:v1")


def test_basic_auth(tiny: TinyRegistry, tmp_path: Path, docker_config: Path) -> None:
    tiny.auth = "basic"
    tiny.users = {"bob": "pw"}
    docker_config.write_text(json.dumps({"auths": {tiny.host: {"username": "bob",
                                                               "password": "pw"}}}))
    assert store(tmp_path).pull(f"{tiny.host}/team/app:v1").digest == IMAGE["digest"]
    tiny.users = {"bob": "changed"}
    with pytest.raises(PullError, match="unauthorized, wrong credentials"):
        store(tmp_path, ).pull(f"{tiny.host}/team/app:v1", policy="always")


def helper_script(directory: Path, name: str, body: str) -> None:
    script = directory / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_cred_helpers_and_creds_store(tiny: TinyRegistry, tmp_path: Path, docker_config: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "asked"
    helper_script(bindir, "tiny", f'read server; echo "$server" >> {log}\n'
                                  'echo \'{"Username":"carol","Secret":"pw"}\'\n')
    helper_script(bindir, "none", 'echo "credentials not found in native keychain"; exit 1\n')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    tiny.auth = "bearer"
    tiny.users = {"carol": "pw"}
    docker_config.write_text(json.dumps({"credHelpers": {tiny.host: "tiny"}}))
    store(tmp_path).pull(f"{tiny.host}/team/app:v1")
    assert log.read_text().split() == [tiny.host]
    assert reg.credentials_for(tiny.host) == ("carol", "pw")
    docker_config.write_text(json.dumps({"credsStore": "tiny"}))
    assert reg.credentials_for("docker.io") == ("carol", "pw")
    assert log.read_text().split()[-1] == "https://index.docker.io/v1/"
    docker_config.write_text(json.dumps({"credsStore": "none"}))
    assert reg.credentials_for(tiny.host) is None
    docker_config.write_text(json.dumps({"credsStore": "absent"}))
    with pytest.raises(PullError, match="docker-credential-absent is not on PATH"):
        reg.credentials_for(tiny.host)


def test_docker_hub_credentials_key(docker_config: Path) -> None:
    write_auths(docker_config, "https://index.docker.io/v1/", "dora", "pw")
    assert reg.credentials_for("docker.io") == ("dora", "pw")
    assert reg.credentials_for("ghcr.io") is None
    docker_config.write_text("{not json")
    with pytest.raises(PullError, match="cannot read Docker credentials"):
        reg.credentials_for("docker.io")


def test_default_docker_config_is_under_home(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert reg.credentials_for("ghcr.io") is None  # no file: anonymous
    (tmp_path / ".docker").mkdir()
    write_auths(tmp_path / ".docker" / "config.json", "ghcr.io", "gh", "tok")
    assert reg.credentials_for("ghcr.io") == ("gh", "tok")


def test_retries_503_then_succeeds(tiny: TinyRegistry, tmp_path: Path,
                                   docker_config: Path) -> None:
    tiny.fail_first = 2
    image = store(tmp_path).pull(f"{tiny.host}/team/app:v1")
    assert image.digest == IMAGE["digest"]
    assert tiny.requests["503"] == 2


def test_retries_429_too(tiny: TinyRegistry, tmp_path: Path, docker_config: Path) -> None:
    tiny.fail_first = 2
    tiny.fail_status = 429
    assert store(tmp_path).pull(f"{tiny.host}/team/app:v1").digest == IMAGE["digest"]
    assert tiny.requests["429"] == 2


def test_push_with_bearer_token_asks_for_push_scope(tiny: TinyRegistry, tmp_path: Path,
                                                    docker_config: Path) -> None:
    target = TinyRegistry()
    try:
        target.auth = "bearer"
        target.users = {"pat": "pw"}
        write_auths(docker_config, target.host, "pat", "pw")
        s = store(tmp_path)
        image = s.pull(f"{tiny.host}/team/app:v1")
        dest = f"{target.host}/team/copy:v2"
        assert s.push(f"{tiny.host}/team/app:v1", dest) == image.digest
        assert "repository:team/copy:pull,push" in target.token_scopes
        assert target.manifests[("team/copy", "v2")][0] == image.manifest_bytes
        assert target.requests[f"PUT blob {IMAGE['layer']}"] == 1
        assert target.requests[f"PUT blob {IMAGE['config']}"] == 1
        assert s.get(dest) == image and dest in s.get(dest).tags
        s.push(dest)  # again: the registry has every blob, only the manifest goes up
        assert target.requests[f"PUT blob {IMAGE['layer']}"] == 1
        assert target.requests["PUT manifest v2"] == 2
    finally:
        target.stop()


def test_push_with_wrong_credentials(tiny: TinyRegistry, tmp_path: Path,
                                     docker_config: Path) -> None:
    s = store(tmp_path)
    s.pull(f"{tiny.host}/team/app:v1")
    tiny.auth = "bearer"
    tiny.users = {"pat": "pw"}
    write_auths(docker_config, tiny.host, "pat", "nope")
    dest = f"{tiny.host}/team/copy:v2"
    with pytest.raises(PushError) as info:
        s.push(f"{tiny.host}/team/app:v1", dest)
    assert f"{dest}: token service" in str(info.value) and "wrong credentials" in str(info.value)
    assert ("team/copy", "v2") not in tiny.manifests


def test_gives_up_after_attempts(tiny: TinyRegistry, tmp_path: Path,
                                 docker_config: Path) -> None:
    tiny.fail_first = 100
    with pytest.raises(PullError, match=r"manifest: HTTP 503 UNAVAILABLE.*registry 127"):
        store(tmp_path).pull(f"{tiny.host}/team/app:v1")
    assert tiny.requests["503"] == 3


def test_blob_redirect_drops_authorization(tiny: TinyRegistry, tmp_path: Path,
                                           docker_config: Path) -> None:
    storage = TinyRegistry()
    try:
        storage.add("team/app", "v1", IMAGE)
        tiny.auth = "bearer"
        tiny.redirect_blobs_to = storage
        image = store(tmp_path).pull(f"{tiny.host}/team/app:v1")
        assert image.id == "sha256:" + IMAGE["config"].split(":")[1]
        assert storage.blob_gets(IMAGE["layer"]) == 1
        assert storage.authorizations and not any(storage.authorizations)
    finally:
        storage.stop()


def test_endpoint_urls_follow_dockers_http_rule() -> None:
    assert reg.endpoint_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert reg.endpoint_url("localhost:5000") == "http://localhost:5000"
    assert reg.endpoint_url("[::1]:5000") == "http://[::1]:5000"
    assert reg.endpoint_url("registry.local:5000") == "https://registry.local:5000"
    assert reg.endpoint_url("registry.local:5000", ["registry.local:5000"]) == \
        "http://registry.local:5000"
    assert reg.endpoint_url("http://mirror.corp:80/") == "http://mirror.corp:80"
    with pytest.raises(PullError, match="invalid registry URL"):
        reg.endpoint_url("ftp://x")


def test_endpoints_for_docker_hub_try_the_mirror_first() -> None:
    hub = parse("busybox")
    found = reg.endpoints_for(hub, mirror="http://127.0.0.1:1", docker_io_endpoint=None)
    assert [e.url for e in found] == ["http://127.0.0.1:1", "https://registry-1.docker.io"]
    assert found[1].credentials_key == "docker.io"
    pushed = reg.endpoints_for(hub, mirror="http://127.0.0.1:1",
                               docker_io_endpoint="127.0.0.1:2", push=True)
    assert [e.url for e in pushed] == ["http://127.0.0.1:2"]
    other = reg.endpoints_for(parse("ghcr.io/a/b"), mirror="http://127.0.0.1:1")
    assert [e.url for e in other] == ["https://ghcr.io"]


def test_choose_platform() -> None:
    index = {"manifests": [
        {"digest": "a", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "d", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]}
    choose = reg.choose_platform
    assert choose(index, reg.Platform("linux", "arm64", "v8"), what="x", registry="r")["digest"] \
        == "a"
    assert choose(index, reg.Platform("linux", "arm", "v6"), what="x", registry="r")["digest"] \
        == "c"
    with pytest.raises(PullError) as info:
        choose(index, reg.Platform("linux", "amd64"), what="x:1", registry="r.io")
    assert str(info.value) == ("x:1: no linux/amd64 in index; available: linux/arm64, "
                               "linux/arm/v7, linux/arm/v6 (registry r.io)")


def test_platform_parse_and_host() -> None:
    assert str(reg.Platform.parse("linux/arm/v7")) == "linux/arm/v7"
    with pytest.raises(ValueError, match="os/arch"):
        reg.Platform.parse("linux")
    assert reg.host_platform().os == "linux"
