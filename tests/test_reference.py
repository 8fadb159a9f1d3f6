"""Image references are read the way Docker reads them."""

from __future__ import annotations

import pytest

from pytest_pycontain.errors import ReferenceError_
from pytest_pycontain.reference import Reference, is_image_id, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("redis", "docker.io", "library/redis", "latest", None),
        ("redis:7", "docker.io", "library/redis", "7", None),
        ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None),
        ("docker.io/redis", "docker.io", "library/redis", "latest", None),
        ("index.docker.io/library/redis:1", "docker.io", "library/redis", "1", None),
        ("ghcr.io/a/b:t", "ghcr.io", "a/b", "t", None),
        ("ghcr.io/a/b/c", "ghcr.io", "a/b/c", "latest", None),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None),
        ("localhost/x:y", "localhost", "x", "y", None),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "latest", None),
        (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST),
        (f"busybox:1.36@{DIGEST}", "docker.io", "library/busybox", "1.36", DIGEST),
        (f"127.0.0.1:5000/x@{DIGEST}", "127.0.0.1:5000", "x", None, DIGEST),
        ("a.b_c__d-e---f", "docker.io", "library/a.b_c__d-e---f", "latest", None),
        ("Registry/x", "Registry", "x", "latest", None),
        ("[::1]:5000/x:t", "[::1]:5000", "x", "t", None),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None,
               digest: str | None) -> None:
    ref = parse(text)
    assert ref == Reference(registry, repository, tag, digest)
    assert parse(str(ref)) == ref  # the canonical form reads back the same


def test_familiar_and_canonical_forms() -> None:
    assert str(parse("redis")) == "docker.io/library/redis:latest"
    assert parse("redis").familiar == "redis:latest"
    assert parse("bitnami/redis:7").familiar == "bitnami/redis:7"
    assert parse("ghcr.io/a/b:t").familiar == "ghcr.io/a/b:t"
    assert parse(f"busybox@{DIGEST}").reference == DIGEST
    assert parse("busybox:1").reference == "1"
    assert parse("busybox").with_digest(DIGEST).reference == DIGEST
    assert parse(f"busybox@{DIGEST}").with_tag("x").digest is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Redis", "component 'Redis'"),
        ("redis:", "bad tag"),
        ("redis:-x", "bad tag"),
        ("redis@sha256:abc", "bad digest"),
        ("redis@sha256:" + "AB" * 32, "64 lower-case hex"),
        ("redis@sha256:" + "ab" * 31, "64 lower-case hex"),
        ("a//b", "component ''"),
        ("a/b_/c", "component 'b_'"),
        ("ghcr.io/", "component ''"),
        (" redis", "whitespace"),
        ("x" * 300, "255"),
        ("bad_host!:5000/x", "bad registry"),
    ],
)
def test_bad_references_name_the_problem(text: str, why: str) -> None:
    with pytest.raises(ReferenceError_) as info:
        parse(text)
    assert repr(text)[:40].rstrip("'") in str(info.value)
    assert why in str(info.value)


def test_image_ids() -> None:
    assert is_image_id("sha256:" + "0" * 64)
    assert is_image_id("0123456789ab")
    assert not is_image_id("0123456789a")
    assert not is_image_id("busybox")
    assert not is_image_id("sha256:xyz")
