"""``nomarr serve`` configuration: a TOML file, ``NOMARR_*`` environment variables, then flags.

Precedence is file < environment < command line, so a systemd unit or a container can override one
setting without editing the file. Every setting has a default that is safe on a Raspberry Pi:
half the cores, low priority, models unloaded when idle. The file is documented in
``config/nomarr.example.toml``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import stat
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nomarr import paths

log = logging.getLogger("nomarr.config")

DEFAULT_PORT = 8765
WATCH_MODES = ("off", "event", "poll")


class ConfigError(Exception):
    """The configuration cannot be used as written (the message says which setting and why)."""


@dataclass
class Library:
    """One library root and how changes in it are noticed."""

    path: str
    watch: Literal["off", "event", "poll"] = "event"
    poll_interval_s: float = 900.0  # poll mode: rescan this often (network mounts: no inotify)
    rescan_interval_s: float = 6 * 3600.0  # event mode: safety-net rescan; 0 = never


@dataclass
class ServeConfig:
    """Everything ``nomarr serve`` needs to run."""

    libraries: list[Library] = field(default_factory=list)
    db: str | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    auth: Literal["token", "none"] = "token"
    token: str | None = None  # set in the file/env instead of the token file
    zeroconf: bool = True
    # scanning
    profile: str = "balanced"
    models: list[str] = field(default_factory=lambda: ["msd-musicnn-1"])
    write_tags: bool = True
    mood_field: bool = False
    scan_on_start: bool = True
    # the CPU cap: a music server must stay responsive while the agent works
    workers: int | None = None  # None: cpu_share of the cores
    cpu_share: float = 0.5
    nice: int = 10
    idle_unload_s: float = 300.0  # stop the workers (and free their models) after this long idle
    # watcher
    debounce_s: float = 1.0
    settle_s: float = 2.0
    # requests
    max_upload_mb: int = 1024
    max_json_kb: int = 256
    max_concurrent_analyses: int = 2
    # KNN from an in-memory copy of the vectors (n × dim × 4 bytes) instead of sqlite-vec's scan:
    # ~8x faster at 100k tracks; off saves that memory on very small boxes
    vector_index: bool = True
    # streaming ingest (docs/ingest.md): open sessions, idle timeout, PCM per session, shortest
    ingest_sessions: int = 4
    ingest_idle_s: float = 60.0
    ingest_max_mb: int = 512
    ingest_min_s: float = 10.0
    # ListenBrainz: re-sync users whose token the agent keeps this often (0: only on request)
    listenbrainz_sync_s: float = 6 * 3600.0
    listenbrainz_url: str = "https://api.listenbrainz.org"
    log_level: str = "info"
    source: str | None = None  # the file this was read from

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


_BOOL = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _as_bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    b = _BOOL.get(str(v).strip().lower())
    if b is None:
        raise ConfigError(f"{name}: expected true or false, got {v!r}")
    return b


def _as_num(name: str, v: Any, kind: type, lo: float | None = None, hi: float | None = None) -> Any:
    try:
        x = kind(v)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}: expected {'an integer' if kind is int else 'a number'}, got {v!r}"
        ) from None
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise ConfigError(f"{name}: {x} is outside {lo}..{hi}")
    return x


def _library(item: Any, where: str) -> Library:
    if isinstance(item, str):
        item = {"path": item}
    if not isinstance(item, dict) or not item.get("path"):
        raise ConfigError(f"{where}: a library needs a path")
    unknown = set(item) - {"path", "watch", "poll_interval_s", "rescan_interval_s"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    watch = str(item.get("watch", "event"))
    if watch not in WATCH_MODES:
        raise ConfigError(f"{where}: watch must be one of {', '.join(WATCH_MODES)}, got {watch!r}")
    return Library(
        path=os.path.abspath(os.path.expanduser(str(item["path"]))),
        watch=watch,  # type: ignore[arg-type]
        poll_interval_s=_as_num(
            f"{where}.poll_interval_s", item.get("poll_interval_s", 900.0), float, 1.0
        ),
        rescan_interval_s=_as_num(
            f"{where}.rescan_interval_s", item.get("rescan_interval_s", 6 * 3600.0), float, 0.0
        ),
    )


def _apply(cfg: ServeConfig, data: dict[str, Any], where: str) -> None:
    """Apply one flat mapping of settings (file or environment) onto ``cfg``, validating each."""
    for key, v in data.items():
        name = f"{where}{key}"
        if key == "libraries":
            if not isinstance(v, list):
                raise ConfigError(f"{name}: expected a list of libraries")
            cfg.libraries = [_library(x, f"{name}[{i}]") for i, x in enumerate(v)]
        elif key in ("host", "profile", "log_level"):
            setattr(cfg, key, str(v))
        elif key == "listenbrainz_url":
            if not str(v).startswith(("http://", "https://")):
                raise ConfigError(f"{name}: expected an http(s) URL, got {v!r}")
            cfg.listenbrainz_url = str(v).rstrip("/")
        elif key in ("db", "token"):
            setattr(cfg, key, str(v) if v not in (None, "") else None)
        elif key == "auth":
            if v not in ("token", "none"):
                raise ConfigError(f'{name}: expected "token" or "none", got {v!r}')
            cfg.auth = v
        elif key == "port":
            cfg.port = _as_num(name, v, int, 0, 65535)
        elif key == "models":
            cfg.models = (
                [str(x) for x in v] if isinstance(v, list) else [s for s in str(v).split(",") if s]
            )
        elif key in ("zeroconf", "write_tags", "mood_field", "scan_on_start", "vector_index"):
            setattr(cfg, key, _as_bool(name, v))
        elif key == "workers":
            cfg.workers = None if v in (None, "", 0, "0", "auto") else _as_num(name, v, int, 1, 256)
        elif key == "cpu_share":
            cfg.cpu_share = _as_num(name, v, float, 0.01, 1.0)
        elif key == "nice":
            cfg.nice = _as_num(name, v, int, 0, 19)
        elif key in ("idle_unload_s", "debounce_s", "settle_s", "listenbrainz_sync_s"):
            setattr(cfg, key, _as_num(name, v, float, 0.0))
        elif key in ("ingest_idle_s", "ingest_min_s"):
            setattr(cfg, key, _as_num(name, v, float, 1.0))
        elif key in (
            "max_upload_mb",
            "max_json_kb",
            "max_concurrent_analyses",
            "ingest_sessions",
            "ingest_max_mb",
        ):
            setattr(cfg, key, _as_num(name, v, int, 1))
        else:
            raise ConfigError(f"{name}: unknown setting")


ENV_KEYS = (
    "host",
    "port",
    "auth",
    "token",
    "zeroconf",
    "profile",
    "models",
    "write_tags",
    "mood_field",
    "scan_on_start",
    "workers",
    "cpu_share",
    "nice",
    "idle_unload_s",
    "debounce_s",
    "settle_s",
    "max_upload_mb",
    "log_level",
    "vector_index",
    "ingest_sessions",
    "ingest_idle_s",
    "ingest_max_mb",
    "ingest_min_s",
    "listenbrainz_sync_s",
    "listenbrainz_url",
)


def load(
    path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> ServeConfig:
    """The file (``path`` or the default one, if it exists), then ``NOMARR_*`` variables.

    ``NOMARR_LIBRARY`` holds library roots separated by ``os.pathsep`` (watched with events);
    ``NOMARR_DB`` is the database (as for every command).
    """
    env = dict(os.environ if env is None else env)
    cfg = ServeConfig()
    p = Path(path) if path else paths.config_dir() / "config.toml"
    if path is not None and not p.exists():
        raise ConfigError(f"{p}: no such config file")
    if p.exists():
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{p}: {e}") from e
        flat: dict[str, Any] = {}
        for k, v in data.items():
            if isinstance(v, dict):  # [server], [scan], [watch] tables are only grouping
                flat.update(v)
            else:
                flat[k] = v
        _apply(cfg, flat, "")
        cfg.source = str(p)
    from_env = {
        k: env[f"NOMARR_{k.upper()}"] for k in ENV_KEYS if env.get(f"NOMARR_{k.upper()}", "") != ""
    }
    _apply(cfg, from_env, "NOMARR_")
    if env.get("NOMARR_LIBRARY"):
        cfg.libraries = [
            _library(x, "NOMARR_LIBRARY") for x in env["NOMARR_LIBRARY"].split(os.pathsep) if x
        ]
    if env.get("NOMARR_DB"):
        cfg.db = env["NOMARR_DB"]
    return cfg


def _read_secret(p: Path) -> str | None:
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "token file was readable by others; restricting it to its owner", extra={"path": str(p)}
        )
        os.chmod(p, 0o600)
    value = p.read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigError(f"{p}: token file is empty (delete it to have a new token made)")
    return value


def ensure_token(cfg: ServeConfig) -> tuple[str | None, bool]:
    """The API token and whether it was created just now (``nomarr serve`` then shows it once).

    A configured token wins. Otherwise the token file in the config dir, created with mode 0600
    (``O_EXCL``: two agents starting at once do not overwrite each other's token).
    """
    if cfg.auth == "none":
        return None, False
    if cfg.token:
        if len(cfg.token) < 16:
            raise ConfigError("token: use at least 16 characters")
        return cfg.token, False
    p = paths.config_dir() / "token"
    value = _read_secret(p)
    if value is not None:
        return value, False
    p.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another agent made it meanwhile
        return _read_secret(p), False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


def agent_id() -> str:
    """This agent's stable id (a UUID kept in the data dir): plugins pin it once paired."""
    p = paths.data_dir() / "agent-id"
    try:
        v = p.read_text(encoding="utf-8").strip()
        return str(uuid.UUID(v))
    except (FileNotFoundError, ValueError):
        p.parent.mkdir(parents=True, exist_ok=True)
        v = str(uuid.uuid4())
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(v + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return v
