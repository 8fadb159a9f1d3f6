"""A tiny OCI registry for tests that need what docker-registry can't do on demand.

It serves images from memory and can misbehave on purpose: bearer-token or basic auth, a
corrupted or truncated blob, 503s before answering, redirects of blobs to a second host. It
counts requests, so tests can prove a blob was fetched exactly once. Written from the
distribution spec for these tests; it is not our client.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
import urllib.parse
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes], *, gz: bool = True) -> bytes:
    """A layer of regular files (directories implied), gzip'd with mtime 0 if ``gz``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


def make_image(files: dict[str, bytes], *, cmd: list[str] | None = None, gz: bool = True,
               arch: str = "amd64", layer: bytes | None = None,
               layer_media_type: str | None = None) -> dict[str, Any]:
    """An image: ``{"manifest": bytes, "blobs": {digest: bytes}, "digest": ...}``."""
    layer = layer if layer is not None else layer_tar(files, gz=gz)
    diff = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd or ["sh"], "ExposedPorts": {"80/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(diff)]},
    }).encode()
    media = layer_media_type or ("application/vnd.oci.image.layer.v1.tar+gzip" if gz
                                 else "application/vnd.oci.image.layer.v1.tar")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": media, "digest": digest_of(layer), "size": len(layer)}],
    }).encode()
    return {"manifest": manifest, "digest": digest_of(manifest), "config": digest_of(config),
            "layer": digest_of(layer), "diff_id": digest_of(diff),
            "blobs": {digest_of(config): config, digest_of(layer): layer}}


def make_index(images: dict[str, dict[str, Any]]) -> bytes:
    """An OCI index of ``{"linux/arm64/v8": image, ...}``."""
    manifests = []
    for plat, image in images.items():
        os_, arch, *variant = plat.split("/")
        platform = {"os": os_, "architecture": arch}
        if variant:
            platform["variant"] = variant[0]
        manifests.append({"mediaType": OCI_MANIFEST, "digest": image["digest"],
                          "size": len(image["manifest"]), "platform": platform})
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                       "manifests": manifests}).encode()


class TinyRegistry:
    """``TinyRegistry()`` then ``add(repo, tag, image)``; ``url``/``host`` like the real one.

    Knobs: ``auth`` (None, "bearer", "basic"), ``users`` {user: password} (empty: anonymous
    tokens), ``corrupt`` / ``truncate`` (sets of blob digests), ``fail_first`` (how many
    requests get 503 first), ``redirect_blobs_to`` (another TinyRegistry serving the bytes),
    ``break_once`` (blob digests whose next GET breaks off halfway, once), ``serve_ranges``
    (answer ``Range: bytes=N-`` with a 206; ``ranges`` lists the ones asked for).
    """

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.auth: str | None = None
        self.users: dict[str, str] = {}
        self.corrupt: set[str] = set()
        self.truncate: set[str] = set()
        self.break_once: set[str] = set()
        self.serve_ranges = False
        self.ranges: list[str] = []
        self.fail_first = 0
        self.fail_status = 503
        self.redirect_blobs_to: TinyRegistry | None = None
        self.requests: Counter[str] = Counter()
        self.authorizations: list[str | None] = []
        self.tokens: dict[str, str] = {}  # token -> the scope it was issued for
        self.token_scopes: list[str] = []
        self.refresh_tokens: set[str] = set()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: str, tag: str, image: dict[str, Any]) -> None:
        self.blobs.update(image["blobs"])
        self.manifests[(repo, image["digest"])] = (image["manifest"], OCI_MANIFEST)
        self.manifests[(repo, tag)] = (image["manifest"], OCI_MANIFEST)

    def add_index(self, repo: str, tag: str, images: dict[str, dict[str, Any]]) -> str:
        for image in images.values():
            self.add(repo, image["digest"], image)
        index = make_index(images)
        self.manifests[(repo, tag)] = (index, OCI_INDEX)
        self.manifests[(repo, digest_of(index))] = (index, OCI_INDEX)
        return digest_of(index)

    def blob_gets(self, digest: str) -> int:
        return self.requests[f"GET blob {digest}"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def error(self, status: int, code: str) -> None:
                body = json.dumps({"errors": [{"code": code, "message": code.lower()}]})
                self.send(status, body.encode(), {"Content-Type": "application/json"})

            def authorized(self, scope: str) -> bool:
                header = self.headers.get("Authorization")
                registry.authorizations.append(header)
                if registry.auth is None:
                    return True
                if registry.auth == "basic":
                    for user, password in registry.users.items():
                        token = base64.b64encode(f"{user}:{password}".encode()).decode()
                        if header == f"Basic {token}":
                            return True
                    self.send(401, b"", {"WWW-Authenticate": 'Basic realm="tiny"'})
                    return False
                granted = registry.tokens.get((header or "").removeprefix("Bearer "), "")
                if granted and (granted == scope or scope.endswith(":pull")):
                    return True
                challenge = (f'Bearer realm="{registry.url}/token",service="tiny",'
                             f'scope="{scope}"')
                self.send(401, json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}).encode(),
                          {"WWW-Authenticate": challenge})
                return False

            def token(self) -> None:
                header = self.headers.get("Authorization", "")
                if registry.users:
                    good = {"Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
                            for u, p in registry.users.items()}
                    if header not in good:
                        self.send(401, b'{"details":"incorrect username or password"}')
                        return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scope = query.get("scope", [""])[0]
                registry.token_scopes.append(scope)
                token = hashlib.sha256(self.path.encode() + header.encode()).hexdigest()
                registry.tokens[token] = scope
                self.send(200, json.dumps({"token": token}).encode(),
                          {"Content-Type": "application/json"})

            def do_POST(self) -> None:
                if self.path.startswith("/token"):
                    form = urllib.parse.parse_qs(self.rfile.read(
                        int(self.headers.get("Content-Length") or 0)).decode())
                    registry.requests["token"] += 1
                    if form.get("grant_type") != ["refresh_token"] or \
                            form.get("refresh_token", [""])[0] not in registry.refresh_tokens:
                        self.send(401, b'{"error":"invalid_grant"}')
                        return
                    scope = form.get("scope", [""])[0]
                    registry.token_scopes.append(scope)
                    token = uuid.uuid4().hex
                    registry.tokens[token] = scope
                    self.send(200, json.dumps({"access_token": token}).encode(),
                              {"Content-Type": "application/json"})
                    return
                match = re.fullmatch(r"/v2/(.+)/blobs/uploads/", self.path.split("?")[0])
                if not match:
                    self.error(404, "NOT_FOUND")
                    return
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.authorized(f"repository:{match.group(1)}:pull,push"):
                    return
                registry.requests["POST upload"] += 1
                location = f"/v2/{match.group(1)}/blobs/uploads/{uuid.uuid4().hex}"
                self.send(202, b"", {"Location": location})

            def do_PUT(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = re.fullmatch(r"/v2/(.+)/(manifests/([^/]+)|blobs/uploads/[0-9a-f]+)",
                                     parts.path)
                if not match:
                    self.error(404, "NOT_FOUND")
                    return
                repo, _, ref = match.groups()
                if not self.authorized(f"repository:{repo}:pull,push"):
                    return
                if ref is not None:
                    registry.requests[f"PUT manifest {ref}"] += 1
                    media = self.headers.get("Content-Type", OCI_MANIFEST)
                    registry.manifests[(repo, ref)] = (body, media)
                    registry.manifests[(repo, digest_of(body))] = (body, media)
                    self.send(201, b"", {"Docker-Content-Digest": digest_of(body)})
                    return
                digest = urllib.parse.parse_qs(parts.query).get("digest", [""])[0]
                if digest != digest_of(body):
                    self.error(400, "DIGEST_INVALID")
                    return
                registry.requests[f"PUT blob {digest}"] += 1
                registry.blobs[digest] = body
                self.send(201, b"", {"Docker-Content-Digest": digest})

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path.startswith("/token"):
                    registry.requests["token"] += 1
                    self.token()
                    return
                with registry.lock:
                    if registry.fail_first > 0:
                        registry.fail_first -= 1
                        registry.requests[str(registry.fail_status)] += 1
                        self.send(registry.fail_status, b'{"errors":[{"code":"UNAVAILABLE"}]}',
                                  {"Retry-After": "0"})
                        return
                if path in ("/v2/", "/v2"):
                    self.send(200, b"{}")
                    return
                match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
                if not match:
                    self.error(404, "NOT_FOUND")
                    return
                repo, kind, ref = match.groups()
                if not self.authorized(f"repository:{repo}:pull"):
                    return
                if kind == "manifests":
                    registry.requests[f"{self.command} manifest {ref}"] += 1
                    found = registry.manifests.get((repo, ref))
                    if found is None:
                        self.error(404, "MANIFEST_UNKNOWN")
                        return
                    body, media = found
                    self.send(200, body, {"Content-Type": media,
                                          "Docker-Content-Digest": digest_of(body)})
                    return
                registry.requests[f"{self.command} blob {ref}"] += 1
                if registry.redirect_blobs_to is not None:
                    self.send(307, b"", {"Location":
                                         f"{registry.redirect_blobs_to.url}{self.path}"})
                    return
                body = registry.blobs.get(ref)
                if body is None:
                    self.error(404, "BLOB_UNKNOWN")
                    return
                if ref in registry.corrupt:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                wanted = self.headers.get("Range")
                if wanted and self.command == "GET":
                    registry.ranges.append(wanted)
                if wanted and registry.serve_ranges and self.command == "GET":
                    start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
                    self.send(206, body[start:], {
                        "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
                    return
                with registry.lock:
                    breaking = ref in registry.break_once and self.command == "GET"
                    registry.break_once.discard(ref)
                if (ref in registry.truncate or breaking) and self.command == "GET":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send(200, body, {"Content-Type": "application/octet-stream",
                                      "Docker-Content-Digest": ref})

        return Handler
