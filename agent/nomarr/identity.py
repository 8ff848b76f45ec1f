"""Who this agent is: the API token (created once, mode 0600, in the config dir) and the stable
agent id the plugins pin once paired (a UUID in the data dir).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import uuid
from pathlib import Path

from nomarr import paths
from nomarr.config import ConfigError, ServeConfig

log = logging.getLogger(__name__)


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
