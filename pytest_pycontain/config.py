"""The one place where settings are resolved.

Precedence, highest first: marker > command line > environment (``PYCONTAIN_*``) > pytest ini
(``pycontain_*``) > ``[tool.pycontain]`` in pyproject.toml > default. Every value remembers
where it came from, so a bad one is reported with its origin ("PYCONTAIN_SCOPE=weekly: ...").
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import idmap
from .errors import ConfigError
from .frozen import FrozenMap

CHOICES_BACKEND = ("auto", "native", "docker")
CHOICES_SCOPE = ("function", "module", "session")
CHOICES_KEEP = ("never", "failed", "always")
CHOICES_PULL = ("missing", "always", "never")
# Where the native engine's networks take their subnets from, and how large each is: /20s of a
# /12, as Docker's default pools hand out /16s and /20s (4,093 containers a network, and 256
# networks side by side, as many as the /24s of a /16 that came before)
NETWORK_POOL = "10.208.0.0/12"
NETWORK_PREFIX = 20


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    return value or None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _seconds(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or number <= 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return number


def _count(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if isinstance(value, bool) or number < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return number


def _ipv4_network(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Network(str(value).strip()))
    except ValueError as exc:
        raise ValueError(f"expected an IPv4 network such as {NETWORK_POOL}, got {value!r} "
                         f"({exc})") from None


def _prefix_length(value: Any) -> int:
    text = str(value).strip().removeprefix("/")
    if isinstance(value, bool) or not text.isdigit() or not 8 <= int(text) <= 30:
        raise ValueError(f"expected a prefix length from 8 to 30 (/{NETWORK_PREFIX}: "
                         f"{2 ** (32 - NETWORK_PREFIX) - 3} containers a network), got {value!r}")
    return int(text)


def _words(value: Any) -> tuple[str, ...]:
    """A list of strings, from a TOML list or a comma/space separated string."""
    if isinstance(value, str):
        return tuple(w for w in value.replace(",", " ").split() if w)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a list of strings, got {value!r}")


def _build_args(value: Any) -> FrozenMap[str, str]:
    """``KEY=VALUE`` pairs, from a mapping, a list of ``K=V`` or a whitespace-separated string;
    the one form build args keep from here to the builder (hashable: it keys built images)."""
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = []
        for word in _words(value):
            if "=" not in word:
                raise ValueError(f"expected KEY=VALUE, got {word!r}")
            key, _, val = word.partition("=")
            pairs.append((key, val))
        items = pairs
    for key, _ in items:
        if not key:
            raise ValueError("a build arg needs a name before '='")
    return FrozenMap(items)


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its name, how to parse it, and its default."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    spelled: str | None = None  # the flag's and variable's word, where it is not the name

    @property
    def flag(self) -> str:
        return "--pycontain-" + (self.spelled or self.name).replace("_", "-")

    @property
    def env(self) -> str:
        return "PYCONTAIN_" + (self.spelled or self.name).upper()

    @property
    def ini(self) -> str:
        return "pycontain_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option(
        "image",
        _text,
        None,
        "run the `container` fixture from this image instead of the configured Dockerfile",
    ),
    Option("dockerfile", _text, None, "the Dockerfile the `container` fixture is built from"),
    Option("context", _text, ".", "the build context for the Dockerfile"),
    Option("build_arg", _build_args, FrozenMap(), "a build argument KEY=VALUE (repeatable)"),
    Option("target", _text, None, "the build stage to build"),
    Option(
        "backend",
        _choice(CHOICES_BACKEND),
        "auto",
        "the engine: native (Linux namespaces), docker (a Docker Engine), or auto",
        CHOICES_BACKEND,
    ),
    Option(
        "scope",
        _choice(CHOICES_SCOPE),
        "function",
        "the scope of the `container` fixture",
        CHOICES_SCOPE,
    ),
    Option(
        "keep",
        _choice(CHOICES_KEEP),
        "never",
        "keep containers alive after pytest exits: never, failed (of failed tests), always",
        CHOICES_KEEP,
    ),
    Option("no_cache", _boolean, False, "build without the layer cache"),
    Option("reuse", _boolean, False, "the `container` fixture asks to be reused across runs "
           "(it takes effect only with --pycontain-reuse)", spelled="reuse_container"),
    Option("reuse_enabled", _boolean, False, "let containers asked for with reuse=True "
           "outlive the run and be found again by the next one (the opt-in)", spelled="reuse"),
    Option("pull", _choice(CHOICES_PULL), "missing", "when to pull images", CHOICES_PULL),
    Option("registry_mirror", _text, None, "a registry mirror for docker.io images (URL)"),
    Option(
        "docker_io_endpoint",
        _text,
        None,
        "where docker.io itself is served from (URL), for proxies and tests",
    ),
    Option("insecure_registries", _words, (), "registries reached over plain http"),
    Option("cache_dir", _text, None, "where images and layers are cached"),
    Option("state_dir", _text, None, "where the engine records what it made"),
    Option("network_pool", _ipv4_network, NETWORK_POOL,
           "the addresses native networks take their subnets from (an IPv4 network)"),
    Option("network_prefix", _prefix_length, NETWORK_PREFIX,
           "the size of a native network's subnet, as a prefix length (20: 4,093 containers)"),
    Option("timeout", _seconds, 60.0, "seconds a wait or start may take"),
    Option("log_lines", _count, 50, "log lines of each container shown for a failed test"),
    Option("compose", _words, (), "a compose file the `compose` fixture starts (repeatable, "
           "merged in order; default: compose.yaml in the rootdir)"),
    Option("compose_profiles", _words, (), "a profile the `compose` fixture enables "
           "(repeatable)"),
)
BY_NAME = {option.name: option for option in OPTIONS}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every resolved setting; ``sources`` says where each value came from."""

    image: str | None = None
    dockerfile: str | None = None
    context: str = "."
    build_arg: Mapping[str, str] = FrozenMap()
    target: str | None = None
    backend: str = "auto"
    scope: str = "function"
    keep: str = "never"
    no_cache: bool = False
    reuse: bool = False
    reuse_enabled: bool = False
    pull: str = "missing"
    registry_mirror: str | None = None
    docker_io_endpoint: str | None = None
    insecure_registries: tuple[str, ...] = ()
    cache_dir: str | None = None
    state_dir: str | None = None
    network_pool: str = NETWORK_POOL
    network_prefix: int = NETWORK_PREFIX
    timeout: float = 60.0
    log_lines: int = 50
    compose: tuple[str, ...] = ()
    compose_profiles: tuple[str, ...] = ()
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    @property
    def build_args(self) -> Mapping[str, str]:
        return self.build_arg

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PYCONTAIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/pycontain``, else ``~/.cache/pycontain``."""
    environ = os.environ if environ is None else environ
    if environ.get("PYCONTAIN_CACHE_DIR"):
        return Path(environ["PYCONTAIN_CACHE_DIR"])
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]) / "pycontain"
    return Path.home() / ".cache" / "pycontain"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PYCONTAIN_STATE_DIR``, else ``$XDG_RUNTIME_DIR/pycontain``, else ``/run/pycontain``
    (for a user other than root: a directory of the user's own under /tmp, ``idmap.state_dir``)."""
    environ = os.environ if environ is None else environ
    if environ.get("PYCONTAIN_STATE_DIR"):
        return Path(environ["PYCONTAIN_STATE_DIR"])
    if idmap.host_uid() != 0:
        return idmap.state_dir(environ)
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "pycontain"
    return Path("/run/pycontain")


def read_pyproject(rootdir: Path) -> tuple[dict[str, Any], str]:
    """The ``[tool.pycontain]`` table of ``rootdir/pyproject.toml`` and the file's name."""
    path = Path(rootdir) / "pyproject.toml"
    if not path.is_file():
        return {}, str(path)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read [tool.pycontain]: {exc}") from exc
    table = data.get("tool", {}).get("pycontain", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.pycontain] must be a table")
    return table, str(path)


def resolve(
    *,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    ini: Mapping[str, Any] | None = None,
    ini_path: str = "ini file",
    pyproject: Mapping[str, Any] | None = None,
    pyproject_path: str = "pyproject.toml",
    marker: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every option from its sources, highest precedence first.

    ``cli``, ``ini`` and ``marker`` are keyed by option name; a value of ``None`` (or an empty
    list for repeatable options) means "not given". ``environ`` is the process environment.
    """
    environ = os.environ if environ is None else environ
    layers: list[tuple[Mapping[str, Any], Callable[[Option], str]]] = [
        (marker or {}, lambda o: f"@pytest.mark.pycontain({o.name}=...)"),
        (cli or {}, lambda o: o.flag),
        (
            {o.name: environ[o.env] for o in OPTIONS if environ.get(o.env, "") != ""},
            lambda o: f"environment variable {o.env}",
        ),
        (ini or {}, lambda o: f"{ini_path}: {o.ini}"),
        (
            _normalize_table(pyproject or {}, f"{pyproject_path}: [tool.pycontain]"),
            lambda o: f"{pyproject_path}: [tool.pycontain] {o.name}",
        ),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        for layer, describe in layers:
            raw = layer.get(option.name)
            if raw is None or (isinstance(raw, list | tuple) and not raw):
                continue
            try:
                values[option.name] = option.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{describe(option)} = {raw!r}: {exc}") from None
            sources[option.name] = describe(option)
            break
        else:
            values[option.name] = option.default
            sources[option.name] = "default"
    _check_network_sizes(values, sources)
    return Settings(**values, sources=sources)


def _check_network_sizes(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """A subnet must fit in the pool it is taken from (each value says where it came from)."""
    pool = ipaddress.IPv4Network(values["network_pool"])
    if values["network_prefix"] < pool.prefixlen:
        raise ConfigError(
            f"{sources['network_prefix']} = {values['network_prefix']}: a /"
            f"{values['network_prefix']} subnet does not fit in the network pool {pool} "
            f"({sources['network_pool']}); use a prefix of {pool.prefixlen} or more")


MARKER_OPTIONS = {"context": "context", "scope": "scope", "target": "target",
                  "build_args": "build_arg"}


def apply_marker(settings: Settings, marker: Mapping[str, Any], where: str) -> Settings:
    """``settings`` with a ``@pytest.mark.pycontain(...)``'s own values over them (the
    highest layer of ``resolve``, applied to its result rather than resolving again): each
    checked by its option's parser; ``build_args`` per key over the configured ones."""
    changes: dict[str, Any] = {}
    sources = dict(settings.sources)
    for key, name in MARKER_OPTIONS.items():
        raw = marker.get(key)
        if raw is None:
            continue
        described = f"{where}: @pytest.mark.pycontain({key}=...)"
        if name == "build_arg" and not isinstance(raw, Mapping):
            raise ConfigError(f"{described} must be a mapping")
        try:
            value = BY_NAME[name].parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{described} = {raw!r}: {exc}") from None
        changes[name] = settings.build_arg | value if name == "build_arg" else value
        sources[name] = described
    if not changes:
        return settings
    return dataclasses.replace(settings, **changes, sources=sources)


def _normalize_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``[tool.pycontain]`` keyed by option name; ``build_args`` is accepted for ``build_arg``."""
    aliases = {"build_args": "build_arg"}
    normalized: dict[str, Any] = {}
    unknown = []
    for key, value in table.items():
        name = aliases.get(key, key)
        if name not in BY_NAME:
            unknown.append(key)
            continue
        normalized[name] = value
    if unknown:  # all of them at once: one round of fixes, not one per run
        known = ", ".join(sorted(BY_NAME))
        keys = ", ".join(repr(key) for key in unknown)
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {keys} "
                          f"(known: {known})")
    return normalized
