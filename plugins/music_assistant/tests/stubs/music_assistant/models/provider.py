"""Stand-in for ``music_assistant.models.provider`` (the base of every provider)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, final

from music_assistant_models.errors import UnsupportedFeaturedException

from music_assistant.constants import CONF_LOG_LEVEL, MASS_LOGGER_NAME

if TYPE_CHECKING:
    from music_assistant_models.config_entries import ProviderConfig
    from music_assistant_models.enums import ProviderFeature, ProviderStage, ProviderType
    from music_assistant_models.provider import ProviderManifest
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceInfo


class Provider:
    """Base of all providers: holds mass, manifest, config, features, logger and cache."""

    def __init__(
        self,
        mass: Any,
        manifest: ProviderManifest,
        config: ProviderConfig,
        supported_features: set[ProviderFeature] | None = None,
    ) -> None:
        self.mass = mass
        self.manifest = manifest
        self.config = config
        self._supported_features = supported_features or set()
        parent = logging.getLogger(MASS_LOGGER_NAME)
        self.logger = parent.getChild(self.domain)
        level = str(config.get_value(CONF_LOG_LEVEL))  # MA fails the same way without the entry
        self.logger.setLevel(parent.level if level == "GLOBAL" else level)
        self.cache = mass.cache
        self.available = False

    @property
    def supported_features(self) -> set[ProviderFeature]:
        return self._supported_features

    async def handle_async_init(self) -> None:
        """Async set-up; raise SetupFailedError to refuse loading."""

    async def loaded_in_mass(self) -> None:
        """Called once the provider is registered."""

    async def unload(self, is_removed: bool = False) -> None:
        """Called when MA stops or the config is reloaded/removed."""

    async def on_mdns_service_state_change(
        self, name: str, state_change: ServiceStateChange, info: AsyncServiceInfo | None
    ) -> None:
        """Called for services of the manifest's mdns_discovery types."""

    @property
    @final
    def type(self) -> ProviderType:
        return self.manifest.type

    @property
    @final
    def domain(self) -> str:
        return self.manifest.domain

    @property
    @final
    def instance_id(self) -> str:
        return self.config.instance_id

    @property
    @final
    def name(self) -> str:
        return self.config.name or self.manifest.name

    @property
    @final
    def stage(self) -> ProviderStage:
        return self.manifest.stage

    def supports_feature(self, feature: ProviderFeature) -> bool:
        return feature in self.supported_features

    def check_feature(self, feature: ProviderFeature) -> None:
        if not self.supports_feature(feature):
            raise UnsupportedFeaturedException(
                f"Provider {self.name} does not support feature {feature.name}"
            )

    def _update_config_value(self, key: str, value: Any, encrypted: bool = False) -> None:
        # persisted by the config controller, and mirrored into the provider's copy
        self.mass.config.set_raw_provider_config_value(self.instance_id, key, value, encrypted)
        self.config.values[key].value = value
