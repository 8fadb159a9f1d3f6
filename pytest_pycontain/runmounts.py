"""``RUN --mount``: what each mount asks for, and the host side of the kinds that need one.

BuildKit's mount types, with its defaults: ``bind`` (the default type: a read-only view of
the build context, a stage or an image; ``rw`` lets the step write, and its writes are
discarded), ``cache`` (a directory kept between builds, by ``id``, default the target;
``sharing`` shared, private or locked), ``tmpfs`` and ``secret`` (a file the build is given,
never in a layer or a cache key). ``ssh`` needs an agent to forward and is refused.

The builder (``build.py``) copies bind sources out, because only it knows the context's
``.dockerignore`` and the stages; this module parses, keeps the caches and the secrets, and
names in one string per mount what the step's cache key must hold.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError, DockerfileError, NotSupported

TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING = ("shared", "private", "locked")
_KEYS = {
    "bind": {"type", "target", "source", "from", "readonly", "readwrite"},
    "cache": {"type", "target", "id", "sharing", "mode", "uid", "gid", "readonly", "readwrite",
              "from", "source"},
    "tmpfs": {"type", "target", "size"},
    "secret": {"type", "target", "id", "required", "mode", "uid", "gid", "env"},
    "ssh": {"type", "target", "id", "required", "mode", "uid", "gid"},
}
_ALIASES = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly",
            "rw": "readwrite"}
_FLAGS = {"readonly", "readwrite", "required"}  # may stand alone, or be =true / =false


@dataclass(frozen=True)
class RunMount:
    """One ``--mount`` of a RUN, checked and with BuildKit's defaults filled in."""

    type: str
    target: str  # absolute, inside the container ("" for a secret given only as env)
    source: str = ""  # bind: a path in ``from``
    from_: str | None = None  # bind: a stage or image; None: the build context
    readonly: bool = False
    id: str = ""  # cache and secret
    sharing: str = "shared"
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    size: str = ""  # tmpfs
    required: bool = False
    env: str = ""  # secret: also (or only) as this variable

    def key(self) -> str:
        """What the step's cache key holds of this mount (a bind's files are added apart)."""
        fields = (self.type, self.target, self.source, self.from_ or "", self.readonly, self.id,
                  self.sharing, self.mode, self.uid, self.gid, self.size, self.env)
        return "\0".join(str(f) for f in fields)


def parse(text: str, workdir: str, path: str | None = None, line: int | None = None
          ) -> RunMount:
    """``type=cache,target=/root/.cache`` -> a RunMount; errors name ``path``:``line``.
    A relative target is under ``workdir``, as in BuildKit."""
    where = f"{path or 'Dockerfile'}:{line}"

    def fail(message: str) -> DockerfileError:
        return DockerfileError(f"RUN --mount={text}: {message}", path=path, line=line)

    fields: dict[str, str] = {}
    for item in next(csv.reader([text])) if text else []:
        key, eq, value = item.partition("=")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if not eq:
            if key not in _FLAGS:
                raise fail(f"{key!r} needs a value ({key}=...)")
            value = "true"
        if key in fields:
            raise fail(f"{key!r} is given twice")
        fields[key] = value
    kind = fields.get("type", "bind").lower()
    if kind not in TYPES:
        raise fail(f"unknown mount type {kind!r} (one of {', '.join(TYPES)})")
    unknown = sorted(set(fields) - _KEYS[kind])
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} for type={kind} "
                   f"(known: {', '.join(sorted(_KEYS[kind] - {'type'}))})")
    if kind == "ssh":
        raise NotSupported(f"{where}: RUN --mount=type=ssh: forwarding an SSH agent into a "
                           "build is not supported")

    def flag(name: str) -> bool:
        value = fields.get(name, "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise fail(f"{name}={fields[name]!r}: expected true or false")
        return value in ("true", "1")

    def number(name: str, base: int = 10) -> int | None:
        if name not in fields:
            return None
        try:
            return int(fields[name], base)
        except ValueError:
            raise fail(f"{name}={fields[name]!r} is not a number") from None

    target = fields.get("target", "")
    if target:
        target = posixpath.normpath(posixpath.join("/", workdir or "/", target))
    identity = fields.get("id", "")
    if kind == "secret":
        if not identity and target:
            identity = posixpath.basename(target)
        if not identity:
            raise fail("a secret needs an id (or a target to take it from)")
        if not target and not fields.get("env"):
            target = "/run/secrets/" + identity
    elif not target:
        raise fail(f"type={kind} needs a target")
    if kind == "cache":
        identity = identity or target
        if fields.get("from") or fields.get("source"):
            raise NotSupported(f"{where}: RUN --mount=type=cache,from=...: seeding a cache "
                               "from a stage is not supported")
    sharing = fields.get("sharing", "shared").lower()
    if sharing not in SHARING:
        raise fail(f"sharing={sharing!r}: one of {', '.join(SHARING)}")
    readonly = flag("readonly") or (kind == "bind" and not flag("readwrite"))
    if kind in ("bind", "cache") and flag("readonly") and flag("readwrite"):
        raise fail("readonly and readwrite together")
    mode = number("mode", 8)
    if mode is None and kind == "secret":
        mode = 0o400
    return RunMount(kind, target, source=fields.get("source", ""), from_=fields.get("from"),
                    readonly=readonly, id=identity, sharing=sharing, mode=mode,
                    uid=number("uid") or 0, gid=number("gid") or 0, size=fields.get("size", ""),
                    required=flag("required"), env=fields.get("env", ""))


@dataclass
class HostSide:
    """What the RUN container gets: bind mounts (host, target, read-only), tmpfs targets with
    their options, and environment variables (secrets given as env)."""

    binds: list[tuple[str, str, bool]]
    tmpfs: dict[str, str]
    env: list[str]


class Caches:
    """The cache mounts' directories, kept under ``root`` between builds (one per id).

    Each has a lock file that its users hold while a step runs: shared (``sharing=shared``)
    or exclusive (``locked``, and ``private``, which moves on to a new instance when the first
    is taken), so that ``clear`` removes only what no build is using."""

    def __init__(self, root: Path):
        self.root = root

    @contextlib.contextmanager
    def hold(self, mount: RunMount) -> Iterator[Path]:
        """The directory for ``mount`` for as long as the step runs."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(mount.id.encode()).hexdigest()[:32]
        if mount.sharing != "private":
            shared = mount.sharing == "shared"
            with self._locked(name, fcntl.LOCK_SH if shared else fcntl.LOCK_EX) as held:
                assert held
                yield self._directory(name, mount)
            return
        for n in range(64):  # the first instance nobody holds
            candidate = name if n == 0 else f"{name}-{n}"
            with self._locked(candidate, fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
                if held:
                    yield self._directory(candidate, mount)
                    return
        raise BuildError(f"cache mount {mount.id!r}: 64 private instances are in use")

    def clear(self) -> tuple[int, int]:
        """Remove every cache no build holds; (how many, bytes)."""
        count = size = 0
        if not self.root.is_dir():
            return 0, 0
        for path in sorted(self.root.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            with self._locked(path.name, fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
                if not held:
                    continue
                size += sum(f.lstat().st_size for f in path.rglob("*"))
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
                os.rename(path, trash / "gone")
                shutil.rmtree(trash, ignore_errors=True)
                count += 1
        for stray in self.root.glob(".*"):  # half-made by a killed build (an hour ago at least)
            with contextlib.suppress(OSError):
                if time.time() - stray.lstat().st_mtime > 3600:
                    shutil.rmtree(stray, ignore_errors=True)
        return count, size

    @contextlib.contextmanager
    def _locked(self, name: str, how: int) -> Iterator[bool]:
        fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, how)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _directory(self, name: str, mount: RunMount) -> Path:
        path = self.root / name
        if not path.is_dir():
            fresh = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
            os.chmod(fresh, mount.mode if mount.mode is not None else 0o755)
            os.chown(fresh, mount.uid, mount.gid)
            try:
                os.rename(fresh, path)
            except OSError:  # made meanwhile by another build
                shutil.rmtree(fresh, ignore_errors=True)
        return path


def secret_file(mount: RunMount, secrets: Mapping[str, str | os.PathLike], into: Path,
                path: str | None = None, line: int | None = None) -> Path | None:
    """The secret's bytes in a file of ``into`` with the mount's mode and owner; None when
    it is not given and not required. Errors name the RUN's ``path``:``line``."""
    source = secrets.get(mount.id)
    if source is None:
        if mount.required:
            given = ", ".join(sorted(secrets)) or "none"
            raise BuildError(f"secret {mount.id!r} is required but not given (given: "
                             f"{given}); pass secrets={{{mount.id!r}: PATH}} or "
                             f"--secret id={mount.id},src=PATH", path=path, line=line)
        return None
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise BuildError(f"secret {mount.id!r}: cannot read {source}: {exc.strerror or exc}",
                         path=path, line=line) from None
    copy = into / hashlib.sha256(mount.id.encode()).hexdigest()[:16]
    copy.write_bytes(data)
    os.chmod(copy, mount.mode if mount.mode is not None else 0o400)
    os.chown(copy, mount.uid, mount.gid)
    return copy


def secret_env(mount: RunMount, path: Path) -> list[str]:
    if not mount.env:
        return []
    return [f"{mount.env}={path.read_text(errors='surrogateescape')}"]
