"""Where nomarr keeps its files (XDG base directories, overridable by NOMARR_* variables).

Kept in one place so the CLI, the agent and the tests agree on every default path.
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    val = os.environ.get(var)
    return Path(val) if val else Path.home() / fallback


def data_dir() -> Path:
    """``$NOMARR_DATA_DIR`` or ``$XDG_DATA_HOME/nomarr`` (``~/.local/share/nomarr``)."""
    env = os.environ.get("NOMARR_DATA_DIR")
    return Path(env) if env else _xdg("XDG_DATA_HOME", ".local/share") / "nomarr"


def config_dir() -> Path:
    """``$NOMARR_CONFIG_DIR`` or ``$XDG_CONFIG_HOME/nomarr`` (``~/.config/nomarr``)."""
    env = os.environ.get("NOMARR_CONFIG_DIR")
    return Path(env) if env else _xdg("XDG_CONFIG_HOME", ".config") / "nomarr"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nomarr``: things that are safe to delete (provider check verdicts)."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "nomarr"


def models_dir() -> Path:
    """``$NOMARR_MODELS_DIR`` or ``<data dir>/models``: downloaded model files, one folder per id."""
    env = os.environ.get("NOMARR_MODELS_DIR")
    return Path(env) if env else data_dir() / "models"


def user_manifests_dir() -> Path:
    """Manifests the user added with ``nomarr models import``."""
    return data_dir() / "manifests"


def default_db() -> Path:
    """``$NOMARR_DB`` or ``<data dir>/nomarr.db``."""
    env = os.environ.get("NOMARR_DB")
    return Path(env) if env else data_dir() / "nomarr.db"


def builtin_models_dir() -> Path:
    """Model files that ship inside the agent package."""
    return Path(__file__).resolve().parent / "models" / "builtin"


def shipped_manifests_dir() -> Path:
    """Manifests shipped with nomarr: inside the wheel, or ``models/manifests`` in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "manifests"
    return packaged if packaged.is_dir() else here.parents[1] / "models" / "manifests"
