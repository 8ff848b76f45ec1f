"""The few server constants the provider base class reads."""

from __future__ import annotations

from music_assistant_models.config_entries import ConfigEntry
from music_assistant_models.enums import ConfigEntryType

MASS_LOGGER_NAME = "music_assistant"
CONF_LOG_LEVEL = "log_level"

# MA appends this to every provider's own entries when it builds the provider's config
CONF_ENTRY_LOG_LEVEL = ConfigEntry(
    key=CONF_LOG_LEVEL,
    type=ConfigEntryType.STRING,
    default_value="GLOBAL",
    required=False,
    advanced=True,
)
