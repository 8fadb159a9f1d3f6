"""A client for the OCI Distribution API, on the standard library's ``http.client``.

It speaks to any registry: Docker Hub's anonymous bearer-token flow (``WWW-Authenticate``
realm/service/scope), basic auth, credentials from ``~/.docker/config.json`` (``auths``,
``credsStore``, ``credHelpers`` through ``docker-credential-NAME get``). Blobs are checked
against their digest while they stream; connection errors, 429 and 5xx are retried with
backoff. Errors name the reference and the registry. Plain http is used only for localhost and
for registries the settings mark insecure, as Docker does.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import PullError, PushError
from .reference import DOCKER_HUB, Reference

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
DOCKER_HUB_UPSTREAM = "https://registry-1.docker.io"
DOCKER_HUB_CREDENTIALS = "https://index.docker.io/v1/"
IDENTITY_TOKEN = "<token>"  # the user name Docker stores with an identity (refresh) token
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
MAX_MANIFEST = 4 * 1024 * 1024
CHUNK = 1 << 20

Progress = Callable[[str, str, int, "int | None"], None]


@dataclasses.dataclass(frozen=True)
class Platform:
    """An OCI platform; ``str()`` is ``os/arch[/variant]`` as the error messages show it."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def host_platform() -> Platform:
    """The platform this machine runs natively, in OCI's names (``linux/arm64/v8``, ...)."""
    machine = platform.machine().lower()
    table = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"),
             "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
             "i386": ("386", None), "i686": ("386", None), "ppc64le": ("ppc64le", None),
             "s390x": ("s390x", None), "riscv64": ("riscv64", None)}
    arch, variant = table.get(machine, (machine, None))
    return Platform("linux", arch, variant)


def choose_platform(index: dict[str, Any], want: Platform, *, what: str,
                    registry: str) -> dict[str, Any]:
    """The descriptor of ``index`` that matches ``want``; a clear error listing the others."""
    candidates = []
    available = []
    for entry in index.get("manifests") or []:
        plat = entry.get("platform") or {}
        if plat.get("os") == "unknown" or plat.get("architecture") == "unknown":
            continue  # attestation manifests, not images
        have = Platform(plat.get("os", "?"), plat.get("architecture", "?"), plat.get("variant"))
        available.append(str(have))
        if (have.os, have.architecture) != (want.os, want.architecture):
            continue
        variant = have.variant or ("v8" if have.architecture == "arm64" else None)
        if want.variant and variant and variant != want.variant:
            continue
        candidates.append((variant != want.variant, entry))
    if not candidates:
        raise PullError(
            f"{what}: no {want} in index; available: {', '.join(available) or 'none'} "
            f"(registry {registry})", reference=what, registry=registry)
    candidates.sort(key=lambda pair: pair[0])
    return candidates[0][1]


# ---------------------------------------------------------------------------- credentials


def _docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _strip_server(key: str) -> str:
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc or key
    return key.split("/")[0]


def credentials_for(registry: str, config_path: Path | None = None) -> tuple[str, str] | None:
    """``(username, password)`` for ``registry`` from the Docker client config, or ``None``.

    ``registry`` is a host (``ghcr.io``, ``127.0.0.1:5000``) or ``docker.io``. Order as in
    Docker: ``credHelpers[registry]``, then ``credsStore``, then ``auths``. An identity
    token comes back as ``("<token>", token)``, as credential helpers return it.
    """
    path = config_path or _docker_config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PullError(f"cannot read Docker credentials from {path}: {exc}",
                        registry=registry) from exc
    hub = registry == DOCKER_HUB
    server = DOCKER_HUB_CREDENTIALS if hub else registry
    hosts = {"index.docker.io", "docker.io", "registry-1.docker.io"} if hub else {registry}
    helpers = data.get("credHelpers") or {}
    for key, helper in helpers.items():
        if _strip_server(key) in hosts:
            return _run_helper(helper, server, path)
    if data.get("credsStore"):
        found = _run_helper(data["credsStore"], server, path)
        if found:
            return found
    for key, entry in (data.get("auths") or {}).items():
        if _strip_server(key) not in hosts or not isinstance(entry, dict):
            continue
        if entry.get("auth") and not entry.get("identitytoken"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise PullError(f"{path}: auths[{key!r}].auth is not base64 of user:password",
                                registry=registry) from exc
            return user, password
        if entry.get("identitytoken"):
            return IDENTITY_TOKEN, entry["identitytoken"]
        if entry.get("username"):
            return entry["username"], entry.get("password", "")
    return None


def _run_helper(name: str, server: str, path: Path) -> tuple[str, str] | None:
    program = shutil.which(f"docker-credential-{name}")
    if program is None:
        raise PullError(f"{path} names credential helper {name!r}, but "
                        f"docker-credential-{name} is not on PATH", registry=server)
    done = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        message = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
        if "credentials not found" in message.lower():
            return None
        raise PullError(f"docker-credential-{name} get {server} failed "
                        f"({done.returncode}): {message}", registry=server)
    try:
        answer = json.loads(done.stdout)
        return answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PullError(f"docker-credential-{name} get {server} printed no Username/Secret",
                        registry=server) from exc


# ---------------------------------------------------------------------------- endpoints


def _is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    return name in ("localhost", "::1") or name.startswith("127.")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a registry is reached: ``url`` (scheme and host) and how messages name it."""

    url: str
    name: str
    credentials_key: str

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc


def endpoint_url(text: str, insecure: Iterable[str] = ()) -> str:
    """``https://HOST``, or ``http://HOST`` for localhost and insecure registries."""
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PullError(f"invalid registry URL {text!r}", registry=text)
        return f"{parts.scheme}://{parts.netloc}"
    host = text.rstrip("/")
    insecure = {_strip_server(i) for i in insecure}
    scheme = "http" if _is_local(host) or host in insecure else "https"
    return f"{scheme}://{host}"


def endpoints_for(ref: Reference, *, mirror: str | None = None,
                  docker_io_endpoint: str | None = None, insecure: Iterable[str] = (),
                  push: bool = False) -> list[Endpoint]:
    """The endpoints to try for ``ref``, in order: the mirror first for docker.io pulls."""
    insecure = tuple(insecure)
    if ref.registry != DOCKER_HUB:
        return [Endpoint(endpoint_url(ref.registry, insecure), ref.registry, ref.registry)]
    found = []
    if mirror and not push:
        url = endpoint_url(mirror, insecure)
        host = urllib.parse.urlsplit(url).netloc
        found.append(Endpoint(url, f"mirror {host}", host))
    upstream = endpoint_url(docker_io_endpoint or DOCKER_HUB_UPSTREAM, insecure)
    found.append(Endpoint(upstream, "docker.io" if not docker_io_endpoint
                          else f"docker.io ({urllib.parse.urlsplit(upstream).netloc})",
                          DOCKER_HUB))
    return found


# ---------------------------------------------------------------------------- the client


class RegistryError(PullError):
    """A registry answered with an error; ``status`` is the HTTP status (0: unreachable)."""

    def __init__(self, message: str, *, status: int, reference: str | None = None,
                 registry: str | None = None):
        self.status = status
        super().__init__(message, reference=reference, registry=registry)


class _LocalWriteError(Exception):
    """Writing a download to our own disk failed (carries the ``OSError``)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """Whether ``response`` is the rest of a blob from byte ``offset`` (a 206 that says so)."""
    if response.status != 206:
        return False
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == offset


class _Response:
    """An ``HTTPResponse`` whose ``close()`` closes its connection too (no socket leaks)."""

    def __init__(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection):
        self._response = response
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def read(self, amount: int | None = None) -> bytes:
        return self._response.read(amount)

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._conn.close()


class RegistryPushError(RegistryError, PushError):
    """A registry refused a push."""


def _auth_params(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest))
    params.update({k: v for k, v in re.findall(r'(\w+)\s*=\s*([^",\s]+)', rest)
                   if k not in params})
    return scheme.lower(), params


class Client:
    """One repository on one endpoint: ``Client(endpoint, "library/busybox", what="busybox")``.

    ``what`` is the reference as the user wrote it, for error messages. ``push`` asks tokens
    for ``pull,push``. ``attempts`` bounds retries of connection errors, 429 and 5xx.
    """

    def __init__(self, endpoint: Endpoint, repository: str, *, what: str, push: bool = False,
                 credentials: tuple[str, str] | bool | None = True, attempts: int = 4,
                 backoff: float = 0.2, timeout: float = 60.0):
        self.endpoint = endpoint
        self.repository = repository
        self.what = what
        self.push = push
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self._credentials = credentials
        self._authorization: str | None = None

    # -- errors and credentials

    def fail(self, message: str, status: int = 0) -> RegistryError:
        text = f"{self.what}: {message} (registry {self.endpoint.name})"
        cls = RegistryPushError if self.push else RegistryError
        return cls(text, status=status, reference=self.what, registry=self.endpoint.name)

    def credentials(self) -> tuple[str, str] | None:
        if self._credentials is True:
            self._credentials = credentials_for(self.endpoint.credentials_key)
        return self._credentials or None

    # -- HTTP

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: bytes | Path | None) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        cls = (http.client.HTTPSConnection if parts.scheme == "https"
               else http.client.HTTPConnection)
        conn = cls(parts.netloc, timeout=self.timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {**headers, "Connection": "close"}  # one connection per request, no pool
        try:
            if isinstance(body, Path):
                headers = {**headers, "Content-Length": str(body.stat().st_size)}
                with body.open("rb") as stream:
                    conn.request(method, path, body=stream, headers=headers)
            else:
                conn.request(method, path, body=body, headers=headers)
        except BaseException:
            conn.close()
            raise
        try:
            return _Response(conn.getresponse(), conn)  # type: ignore[return-value]
        except BaseException:
            conn.close()
            raise

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes | Path | None = None, ok: tuple[int, ...] = (200,),
                what: str = "request") -> http.client.HTTPResponse:
        """Send with auth, redirects and retries; return a response whose status is in ``ok``."""
        url = path if "://" in path else self.endpoint.url + path
        authorized_retry = False
        redirects = 0
        attempt = 0
        while True:
            send_headers = {"User-Agent": "pytest-pycontain", **(headers or {})}
            same_host = urllib.parse.urlsplit(url).netloc == self.endpoint.host
            if self._authorization and same_host:
                send_headers["Authorization"] = self._authorization
            try:
                response = self._send(method, url, send_headers, body)
            except (OSError, http.client.HTTPException) as exc:
                attempt += 1
                if attempt >= self.attempts:
                    raise self.fail(f"cannot reach {url}: {exc}") from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            status = response.status
            if status in ok:
                return response
            detail = self._drain(response)
            if status in (301, 302, 303, 307, 308) and redirects < 5:
                redirects += 1
                url = urllib.parse.urljoin(url, response.headers.get("Location", ""))
                if status == 303:
                    method, body = "GET", None
                continue
            if status == 401 and not authorized_retry and same_host:
                authorized_retry = True
                self._authenticate(response.headers.get("WWW-Authenticate", ""))
                continue
            if status in RETRY_STATUS:
                attempt += 1
                if attempt < self.attempts:
                    delay = self.backoff * 2 ** (attempt - 1)
                    retry_after = response.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        delay = min(max(delay, float(retry_after)), 10.0)
                    time.sleep(delay)
                    continue
            raise self._http_error(status, detail, what)

    @staticmethod
    def _drain(response: http.client.HTTPResponse) -> str:
        try:
            return response.read(65536).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            return ""
        finally:
            response.close()

    def _http_error(self, status: int, detail: str, what: str) -> RegistryError:
        message = detail.strip()
        try:
            errors = json.loads(detail).get("errors") or []
            message = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
        except (ValueError, AttributeError):
            pass
        if status == 401:
            hint = ("wrong credentials" if self.credentials()
                    else "authentication required and no credentials found")
            return self.fail(f"{what}: unauthorized, {hint} ({message or 'HTTP 401'})", 401)
        if status == 404:
            return self.fail(f"{what}: not found ({message or 'HTTP 404'})", 404)
        return self.fail(f"{what}: HTTP {status} {message}".rstrip(), status)

    def _authenticate(self, header: str) -> None:
        scheme, params = _auth_params(header)
        creds = self.credentials()
        if scheme == "basic":
            if not creds or creds[0] == IDENTITY_TOKEN:
                raise self.fail("the registry wants basic auth and no credentials were found "
                                "in the Docker config", 401)
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            self._authorization = f"Basic {token}"
            return
        if scheme != "bearer" or "realm" not in params:
            raise self.fail(f"unsupported authentication challenge {header!r}", 401)
        actions = "pull,push" if self.push else "pull"
        query = {"scope": params.get("scope") or f"repository:{self.repository}:{actions}"}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"User-Agent": "pytest-pycontain"}
        method, body = "GET", None
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + \
            urllib.parse.urlencode(query)
        if creds and creds[0] == IDENTITY_TOKEN:
            # an identity (refresh) token from `docker login`: the OAuth2 form of the flow
            method, url = "POST", params["realm"]
            body = urllib.parse.urlencode({**query, "grant_type": "refresh_token",
                                           "refresh_token": creds[1],
                                           "client_id": "pytest-pycontain"}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif creds:
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        for attempt in range(self.attempts):
            try:
                response = self._send(method, url, headers, body)
                text = response.read(MAX_MANIFEST)
                response.close()
            except (OSError, http.client.HTTPException) as exc:
                if attempt + 1 >= self.attempts:
                    raise self.fail(f"cannot reach token service {params['realm']}: {exc}") \
                        from exc
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if response.status in RETRY_STATUS and attempt + 1 < self.attempts:
                time.sleep(self.backoff * 2 ** attempt)
                continue
            break
        if response.status in (401, 403):
            hint = "wrong credentials" if creds else "anonymous access refused"
            raise self.fail(f"token service {params['realm']} said {response.status}: {hint}",
                            401)
        if response.status != 200:
            raise self.fail(f"token service {params['realm']} said HTTP {response.status}",
                            response.status)
        try:
            answer = json.loads(text)
            token = answer.get("token") or answer["access_token"]
        except (ValueError, KeyError, AttributeError) as exc:
            raise self.fail(f"token service {params['realm']} sent no token") from exc
        self._authorization = f"Bearer {token}"

    # -- the distribution API

    def get_manifest(self, reference: str) -> tuple[bytes, str]:
        """The manifest bytes exactly as served, and their media type."""
        response = self.request("GET", f"/v2/{self.repository}/manifests/{reference}",
                                headers={"Accept": ACCEPT}, what="manifest")
        try:
            data = response.read(MAX_MANIFEST + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise self.fail(f"manifest download broke off: {exc}") from exc
        finally:
            response.close()
        if len(data) > MAX_MANIFEST:
            raise self.fail("manifest larger than 4 MiB")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise self.fail(f"manifest is not JSON: {exc}") from exc
        media_type = parsed.get("mediaType") or media_type
        if media_type in DOCKER_SCHEMA1 or parsed.get("schemaVersion") == 1:
            raise self.fail("schema 1 manifests are not supported (push the image again with "
                            "a current Docker or skopeo)")
        if not media_type or media_type == "application/json":
            media_type = OCI_INDEX if "manifests" in parsed else OCI_MANIFEST
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = reference if reference.startswith("sha256:") else \
            response.headers.get("Docker-Content-Digest", "")
        if expected.startswith("sha256:") and expected != digest:
            raise self.fail(f"manifest digest mismatch: expected {expected}, got {digest}")
        return data, media_type

    def fetch_blob(self, digest: str, dest: Path, *, size: int | None = None,
                   progress: Progress | None = None) -> None:
        """Stream blob ``digest`` into ``dest``, verifying size and digest as it comes.

        A download that breaks off is resumed where it stopped (``Range``) when the registry
        answers 206, else started again; a full disk is not retried (the ``OSError`` goes up
        as it is, for the caller to say where the space is missing)."""
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256":
            raise self.fail(f"blob {digest}: unsupported digest algorithm {algorithm!r}")
        attempt = 0
        hasher = hashlib.sha256()
        done = 0
        while True:
            attempt += 1
            headers = {"Range": f"bytes={done}-"} if done else None
            response = self.request("GET", f"/v2/{self.repository}/blobs/{digest}",
                                    headers=headers, ok=(200, 206), what=f"blob {digest}")
            if done and not _resumes_at(response, done):
                hasher, done = hashlib.sha256(), 0  # the whole blob came again: start over
            try:
                with dest.open("ab" if done else "wb") as out:
                    while chunk := response.read(CHUNK):
                        hasher.update(chunk)
                        try:
                            out.write(chunk)
                        except OSError as exc:
                            raise _LocalWriteError(exc) from exc
                        done += len(chunk)
                        if size is not None and done > size:
                            break
                        if progress:
                            progress("download", digest, done, size)
                    out.flush()
                    os.fsync(out.fileno())
            except _LocalWriteError as exc:
                raise exc.error from None  # our disk, not the registry: no retry
            except (OSError, http.client.HTTPException) as exc:
                if attempt < self.attempts and not isinstance(exc, PermissionError):
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise self.fail(f"blob {digest}: download broke off after {done} bytes "
                                f"(truncated): {exc}") from exc
            finally:
                response.close()
            if size is not None and done != size:
                if done < size and attempt < self.attempts:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise self.fail(f"blob {digest}: expected {size} bytes, got {done}"
                                + (" (truncated download)" if done < size else ""))
            if hasher.hexdigest() != expected:
                raise self.fail(f"blob {digest}: digest mismatch, the bytes received hash to "
                                f"sha256:{hasher.hexdigest()}")
            return

    def has_blob(self, digest: str) -> bool:
        try:
            response = self.request("HEAD", f"/v2/{self.repository}/blobs/{digest}",
                                    what=f"blob {digest}")
        except RegistryError as exc:
            if exc.status == 404:
                return False
            raise
        response.close()
        return True

    def upload_blob(self, digest: str, path: Path) -> None:
        """Upload ``path`` as blob ``digest`` unless the registry has it already."""
        if self.has_blob(digest):
            return
        response = self.request("POST", f"/v2/{self.repository}/blobs/uploads/",
                                headers={"Content-Length": "0"}, body=b"", ok=(202,),
                                what="starting a blob upload")
        location = response.headers.get("Location", "")
        self._drain(response)
        if not location:
            raise self.fail("blob upload started without a Location")
        location = urllib.parse.urljoin(self.endpoint.url + "/", location)
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode(
            {"digest": digest})
        response = self.request("PUT", location, body=path, ok=(201, 204),
                                headers={"Content-Type": "application/octet-stream"},
                                what=f"uploading blob {digest}")
        self._drain(response)

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        """Upload a manifest under ``reference`` (a tag or digest); return the registry digest."""
        response = self.request("PUT", f"/v2/{self.repository}/manifests/{reference}",
                                headers={"Content-Type": media_type}, body=data,
                                ok=(200, 201, 202), what="uploading the manifest")
        digest = response.headers.get("Docker-Content-Digest", "")
        self._drain(response)
        ours = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest and digest != ours:
            raise self.fail(f"registry stored the manifest as {digest}, expected {ours}")
        return ours
