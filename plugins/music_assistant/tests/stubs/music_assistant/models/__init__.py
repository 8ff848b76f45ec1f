"""Provider model stand-ins (see the package docstring)."""

from __future__ import annotations

from typing import TypeAlias

from .plugin import PluginProvider
from .provider import Provider

ProviderInstanceType: TypeAlias = Provider | PluginProvider
