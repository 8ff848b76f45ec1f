"""nomarr-client: what the plugins (beets, Music Assistant, Navidrome helpers) need to use a nomarr
agent, and nothing more: the API models (:mod:`nomarr_client.models`), the typed HTTP client
(:class:`NomarrClient`, and :class:`SyncNomarrClient` for hosts without an event loop) and zeroconf
discovery (:mod:`nomarr_client.discovery`).

Importing this package pulls in aiohttp and pydantic only; never numpy, onnxruntime or the agent.
Discovery (and with it zeroconf) is imported on first use, so a host that configures the agent's URL
never loads it, and a broken zeroconf install cannot break the client.
"""

from __future__ import annotations

from typing import Any

from . import models
from .client import (
    AgentUnavailable,
    BadRequest,
    Forbidden,
    ModelMissing,
    NomarrClient,
    NomarrError,
    NotFound,
    ServerError,
    SyncNomarrClient,
    Unauthorized,
    normalize_base_url,
)

_LAZY = {"find_agent", "browse", "choose", "DiscoveryError", "DiscoveredAgent"}


def __getattr__(name: str) -> Any:
    """``nomarr_client.find_agent`` and friends, importing discovery (zeroconf) only when asked."""
    if name in _LAZY:
        from . import discovery

        return getattr(discovery, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AgentUnavailable",
    "BadRequest",
    "Forbidden",
    "ModelMissing",
    "NomarrClient",
    "NomarrError",
    "NotFound",
    "ServerError",
    "SyncNomarrClient",
    "Unauthorized",
    "models",
    "normalize_base_url",
]
