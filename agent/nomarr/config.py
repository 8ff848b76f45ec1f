"""``nomarr serve`` settings: declared once, read from a TOML file, ``NOMARR_*`` variables, then flags.

Each setting is one field of :class:`ServeConfig` (type, default, range, help text, config-file
table). Everything else is derived from that declaration: the file keys, the environment variables
(``NOMARR_<NAME>``, read by pydantic-settings), the ``nomarr serve`` flags
(:func:`nomarr.cli.serve.add_setting_flags`) and the settings table in ``docs/api.md``
(:func:`nomarr.cli.serve.settings_markdown`); tests check that every field is set through each of them and that
``config/nomarr.example.toml`` shows every field at its default. Before this, the same field list
was written out three times and two settings were silently ignored from the environment.

Precedence is file < environment < command line, so a systemd unit or a container overrides one
setting without editing the file. :func:`load` merges the layers itself (rather than letting
pydantic-settings merge them inside ``__init__``) so that a bad value is reported against the layer
it came from: ``/etc/nomarr.toml: port: must be at most 65535, got 70000``,
``NOMARR_MAX_JSON_KB: expected an integer, got 'x'``, ``--cpu-share: …``. Every default is safe on a
Raspberry Pi: half the cores, low priority, models unloaded when idle.

The model, its two sources and the wording of its errors change together, so they stay in one
module; the token and agent-id files live in :mod:`nomarr.identity`.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nomarr import paths

log = logging.getLogger("nomarr.config")

DEFAULT_PORT = 8765
ENV_PREFIX = "NOMARR_"
WATCH_MODES = ("off", "event", "poll")
# The config file's tables only group settings for people; keys are looked up by name alone.
TABLES = ("server", "scan", "watch", "listening")
# The short spelling of the library list from before NOMARR_LIBRARIES existed (kept: units use it).
LIBRARY_ENV = "NOMARR_LIBRARY"


class ConfigError(Exception):
    """The configuration cannot be used as written (the message says which setting and why)."""


class Library(BaseModel):
    """One library root and how changes in it are noticed.

    In the file: a ``[[libraries]]`` table, or a plain path string. In the environment:
    ``NOMARR_LIBRARIES`` as JSON (``[{"path": "/music", "watch": "poll"}]``) or as paths separated
    by ``os.pathsep`` (watched with events); ``NOMARR_LIBRARY`` is the same as the latter.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    path: str = Field(description="library root (~ is expanded; made absolute)")
    watch: Literal["off", "event", "poll"] = Field(
        "event",
        description="event: inotify (local disks); poll: rescan every poll_interval_s (network "
        "mounts, where inotify misses other machines' changes); off",
    )
    poll_interval_s: float = Field(900.0, ge=1.0, description="poll mode: rescan this often")
    rescan_interval_s: float = Field(
        6 * 3600.0, ge=0.0, description="event mode: safety-net full rescan this often; 0 = never"
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_path(cls, v: Any) -> Any:
        if isinstance(v, str | os.PathLike):
            v = {"path": os.fspath(v)}
        if isinstance(v, dict) and not v.get("path"):
            raise ValueError("a library needs a path")
        return v

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return os.path.abspath(os.path.expanduser(v))


def _setting(default: Any, table: str, help: str, **kw: Any) -> Any:
    """A field of :class:`ServeConfig`: ``table`` is where the example file shows it.

    ``flag`` names the ``nomarr serve`` option when it is not ``--<name-with-dashes>`` (``None``:
    no flag, with the reason in ``help``); ``aliases`` maps extra flags to the value they set;
    ``secret`` keeps the value out of error messages.
    """
    extra = {"table": table}
    for k in ("flag", "aliases", "secret", "metavar"):
        if k in kw:
            extra[k] = kw.pop(k)
    if extra.get("secret"):
        kw["repr"] = False  # never in a log line or a traceback
    return Field(default, description=help, json_schema_extra=extra, **kw)


class ServeConfig(BaseSettings):
    """Everything ``nomarr serve`` needs to run (see the module docstring for where it comes from).

    Built directly (``ServeConfig(port=0)``, as the tests do) it holds the defaults plus the
    arguments and reads nothing from the environment or disk; :func:`load` layers the sources.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="forbid",
        validate_assignment=True,
    )

    libraries: Annotated[list[Library], NoDecode] = _setting(
        [],
        "libraries",
        "library roots, each with its own watch mode (replaced as a whole by a later layer)",
        flag="--library",
        metavar="PATH",
    )
    db: str | None = _setting(
        None,
        "scan",
        "database file; unset: $NOMARR_DATA_DIR/nomarr.db or ~/.local/share/nomarr/nomarr.db",
        metavar="FILE",
    )
    # server
    host: str = _setting("0.0.0.0", "server", "address to listen on")
    port: int = _setting(DEFAULT_PORT, "server", "TCP port; 0 = any free port", ge=0, le=65535)
    auth: Literal["token", "none"] = _setting(
        "token",
        "server",
        "token: a bearer token (created on first start, mode 0600, in the config dir); none: "
        "no authentication (only on a trusted, private network)",
        aliases={"--no-auth": "none"},
    )
    token: str | None = _setting(
        None,
        "server",
        "use this token instead of the token file (at least 16 characters); no flag, so that it "
        "never shows in the process list",
        flag=None,
        secret=True,
    )
    zeroconf: bool = _setting(True, "server", "announce _nomarr._tcp on the LAN for the plugins")
    max_upload_mb: int = _setting(
        1024, "server", "POST /analyze uploads larger than this are refused (413)", ge=1
    )
    max_json_kb: int = _setting(
        256, "server", "JSON request bodies larger than this are refused (413)", ge=1
    )
    max_concurrent_analyses: int = _setting(
        2, "server", "POST /analyze requests analysed at once; the rest wait their turn", ge=1
    )
    log_level: Literal["debug", "info", "warning", "error"] = _setting(
        "info",
        "server",
        "log verbosity on stderr (the flag is the global one: nomarr --log-level LEVEL serve)",
        flag="--log-level",
    )
    # scanning
    profile: str = _setting(
        "balanced", "scan", "sampling profile: full, balanced, club_hifi_150s, fast"
    )
    models: Annotated[list[str], NoDecode] = _setting(
        ["msd-musicnn-1"],
        "scan",
        "model ids to run (environment: comma-separated)",
        flag="--model",
        metavar="ID",
        min_length=1,
    )
    write_tags: bool = _setting(
        True,
        "scan",
        "write nom:* tags into the files (false: database only)",
        aliases={"--no-write": False},
    )
    mood_field: bool = _setting(
        False, "scan", "also fill the standard MOOD tag (only when empty or written by nomarr)"
    )
    scan_on_start: bool = _setting(
        True, "scan", "catch up with changes made while the agent was down"
    )
    # the CPU cap: a music server must stay responsive while the agent works
    workers: int | None = _setting(
        None,
        "scan",
        "analysis processes (auto or 0: cpu_share of the cores)",
        ge=1,
        le=256,
        metavar="N",
    )
    cpu_share: float = _setting(
        0.5, "scan", "largest share of the cores the analysis may use (pinned)", ge=0.01, le=1.0
    )
    nice: int = _setting(10, "scan", "analysis runs at this low priority", ge=0, le=19)
    idle_unload_s: float = _setting(
        300.0, "scan", "stop the workers and unload the models after this long without work", ge=0
    )
    # KNN from an in-memory copy of the vectors (n × dim × 4 bytes) instead of sqlite-vec's scan:
    # ~8x faster at 100k tracks; off saves that memory on very small boxes
    vector_index: bool = _setting(
        True, "scan", "in-memory copy of the vectors for fast /similar (n x dim x 4 bytes)"
    )
    console: bool = _setting(
        True, "server", "serve the web console at / (same port and token); false: the API only"
    )
    # streaming ingest (docs/ingest.md)
    ingest_sessions: int = _setting(
        4, "listening", "streaming-ingest sessions open at once (more: 429)", ge=1
    )
    ingest_idle_s: float = _setting(
        60.0, "listening", "an ingest session with no chunk for this long is dropped", ge=1.0
    )
    ingest_max_mb: int = _setting(
        512, "listening", "raw PCM one ingest session may send (MiB; more: 413, dropped)", ge=1
    )
    ingest_min_s: float = _setting(
        10.0, "listening", "shorter streams are refused at their end (too short to tag)", ge=1.0
    )
    # ListenBrainz (docs/listens.md)
    listenbrainz_sync_s: float = _setting(
        6 * 3600.0,
        "listening",
        "re-sync the users whose ListenBrainz token the agent keeps this often; 0: on request only",
        ge=0,
    )
    listenbrainz_url: str = _setting(
        "https://api.listenbrainz.org",
        "listening",
        "the ListenBrainz API the agent syncs from",
        pattern=r"^https?://\S+$",
    )
    # watcher
    debounce_s: float = _setting(
        1.0, "watch", "gather file events for this long into one batch", ge=0
    )
    settle_s: float = _setting(
        2.0,
        "watch",
        "a new file must keep its size this long (still being copied?) before it is analysed",
        ge=0,
    )

    _source: str | None = None  # the file this was read from, for the log

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the constructor's arguments: :func:`load` reads the file and the environment, so
        that building a config in code never picks up whatever the process environment holds."""
        return (init_settings,)

    @field_validator("db", "token", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, v: Any) -> Any:
        return None if v in (0, "0", "auto", "") else v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("models", "libraries", mode="before")
    @classmethod
    def _list_from_text(cls, v: Any, info: ValidationInfo) -> Any:
        """From the environment: a JSON list, or items separated by commas (models) or like
        $PATH (library roots, watched with events)."""
        if not isinstance(v, str):
            return v
        if v.lstrip().startswith("["):
            return _json(v)
        sep = "," if info.field_name == "models" else os.pathsep
        return [s.strip() for s in v.split(sep) if s.strip()]

    @property
    def source(self) -> str | None:
        """The config file this was read from (``None``: defaults, environment and flags only)."""
        return self._source

    def worker_count(self) -> int:
        """Analysis worker processes: the explicit count, else ``cpu_share`` of the usable cores."""
        from nomarr.models.runtime import available_cores

        cores = available_cores()
        share = max(1, math.floor(cores * self.cpu_share))
        return max(1, min(self.workers, cores)) if self.workers else share

    def worker_cpus(self) -> list[int] | None:
        """Cores the workers are pinned to (the same cap as the count, enforced by the kernel)."""
        try:
            allowed = sorted(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows: the worker count is the cap
            return None
        n = self.worker_count()
        return allowed[-n:] if n < len(allowed) else None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"not valid JSON ({e})") from None


def env_name(field: str) -> str:
    """The environment variable for a setting: ``max_json_kb`` -> ``NOMARR_MAX_JSON_KB``."""
    return ENV_PREFIX + field.upper()


def default_path() -> Path:
    """``$NOMARR_CONFIG_DIR/config.toml`` or ``$XDG_CONFIG_HOME/nomarr/config.toml`` (DESIGN §4)."""
    return paths.config_dir() / "config.toml"


class _ConfigFile(TomlConfigSettingsSource):
    """The TOML file, with its ``[server]``/``[scan]``/``[watch]`` tables flattened away."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in super()._read_file(file_path).items():
            if isinstance(value, dict) and key not in ServeConfig.model_fields:
                if key not in TABLES:
                    raise ConfigError(
                        f"{file_path}: [{key}]: unknown table (settings go at the top level or "
                        f"in {', '.join(f'[{t}]' for t in TABLES)})"
                    )
                items = value.items()
            else:
                items = [(key, value)]
            for k, v in items:
                if k in flat:
                    raise ConfigError(f"{file_path}: {k}: set twice")
                flat[k] = v
        return flat


class _Environment(EnvSettingsSource):
    """``NOMARR_*`` variables from a given mapping (the process environment by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # case-insensitive like pydantic-settings' default; an empty variable counts as unset
        return {k.lower(): v for k, v in self._environ.items() if v != ""}


def load(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ServeConfig:
    """The settings: the file (``path``, else :func:`default_path` if it exists), then ``NOMARR_*``
    variables (``env``, else the process environment), then ``flags`` (field name -> value, as
    :func:`nomarr.cli.serve.setting_flags` gives them). A later layer replaces a whole setting,
    the library list included. Raises :class:`ConfigError` with a one-line reason.
    """
    environ = os.environ if env is None else env
    p = Path(path).expanduser() if path is not None else default_path()
    if path is not None and not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        from_file = _ConfigFile(ServeConfig, toml_file=p)()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: {e}") from e
    from_env = _Environment(ServeConfig, environ)()
    if environ.get(LIBRARY_ENV):
        if "libraries" in from_env:
            raise ConfigError(f"{LIBRARY_ENV} and {env_name('libraries')}: set only one")
        from_env["libraries"] = environ[LIBRARY_ENV]
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer, data in (("file", from_file), ("env", from_env), ("flag", flags or {})):
        for k, v in data.items():
            values[k], origin[k] = v, layer
    try:
        cfg = ServeConfig(**values)
    except ValidationError as e:
        raise ConfigError(_explain(e, origin, p, environ)) from None
    cfg._source = str(p) if p.is_file() else None
    return cfg


def _explain(
    e: ValidationError, origin: Mapping[str, str], file: Path, environ: Mapping[str, str]
) -> str:
    """One line naming, for each problem, where the value came from and what is wrong with it."""
    out = []
    for err in e.errors(include_url=False):
        loc = err["loc"]
        key = str(loc[0]) if loc else ""
        rest = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc[1:])
        field = ServeConfig.model_fields.get(key)
        secret = bool(field and (field.json_schema_extra or {}).get("secret"))  # type: ignore[union-attr]
        where = origin.get(key, "file")
        if where == "env":
            var = env_name(key)
            if key == "libraries" and not environ.get(var):
                var = LIBRARY_ENV
            label = var + rest
        elif where == "flag":
            label = flag_name(key) + rest
        else:
            label = f"{file}: {key}{rest}"
        out.append(f"{label}: {_problem(err, secret, key if field is None and not rest else None)}")
    return "; ".join(out)


def _problem(err: Any, secret: bool, unknown: str | None) -> str:
    """Pydantic's error in the words of a config file (``expected an integer, got 'x'``)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    got = "" if secret or kind in ("missing", "extra_forbidden") else f", got {err['input']!r}"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(unknown or "", list(ServeConfig.model_fields), n=1)
        return "unknown setting" + (f" (did you mean {close[0]}?)" if close else "")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "expected an integer" + got
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "expected a number" + got
    if kind in ("bool_parsing", "bool_type"):
        return "expected true or false" + got
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}" + got
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}" + got
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}" + got
    if kind == "too_short":
        return "must not be empty"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:] + got


def flag_name(field: str) -> str:
    """The ``nomarr serve`` option for a setting (``cpu_share`` -> ``--cpu-share``)."""
    extra = ServeConfig.model_fields[field].json_schema_extra or {}
    flag = extra.get("flag", "--" + field.replace("_", "-"))  # type: ignore[union-attr]
    return str(flag) if flag else f"{field} (no flag)"
