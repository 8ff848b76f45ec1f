"""nomarr for Music Assistant: similar tracks, radio and mood rows from a nomarr agent.

Music Assistant's radio mode and "don't stop the music" ask providers for similar tracks; for a
local library nothing else answers. This plugin hands those questions to a nomarr agent (running on
the NAS, a desktop with a GPU, wherever), found on the LAN by zeroconf or at a configured URL, and
maps the answers back onto the tracks of one of MA's music providers.

Installed either as a folder ``music_assistant/providers/nomarr`` (a custom provider) or as the pip
package ``nomarr-music-assistant`` loaded by ``music-assistant-plugin-manager``; relative imports
keep both working. See README.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from music_assistant_models.config_entries import ConfigEntry, ConfigValueOption
from music_assistant_models.enums import ConfigEntryType, ProviderFeature, ProviderType
from music_assistant_models.errors import SetupFailedError

from .constants import (
    CONF_AGENT_ID,
    CONF_AGENT_ROOT,
    CONF_LISTENER,
    CONF_MEDIA_PROVIDER,
    CONF_MOOD_ROWS,
    CONF_ROW_SIZE,
    CONF_ROWS,
    CONF_STATUS,
    CONF_STREAM_UNKNOWN,
    CONF_TOKEN,
    CONF_URL,
    DEFAULT_LISTENER,
    DEFAULT_MOOD_ROWS,
    DEFAULT_ROW_SIZE,
    LIBRARY_DOMAIN,
    PATH_DOMAINS,
    ROW_CHOICES,
    ROW_FOR_YOU,
    ROW_MOODS,
    ROW_RECENT,
)

if TYPE_CHECKING:
    from music_assistant_models.config_entries import ConfigValueType, ProviderConfig
    from music_assistant_models.provider import ProviderManifest

    from music_assistant.mass import MusicAssistant
    from music_assistant.models import ProviderInstanceType

SUPPORTED_FEATURES = {ProviderFeature.SIMILAR_TRACKS, ProviderFeature.RECOMMENDATIONS}


async def setup(
    mass: MusicAssistant, manifest: ProviderManifest, config: ProviderConfig
) -> ProviderInstanceType:
    """Create the provider; MA then runs its handle_async_init (the health check)."""
    try:
        from .provider import NomarrProvider
    except ImportError as e:  # the one dependency MA cannot install from PyPI by itself
        raise SetupFailedError(
            f"the nomarr plugin needs the nomarr-client package in Music Assistant's "
            f"Python ({e}); see the plugin's README"
        ) from e
    return NomarrProvider(mass, manifest, config, set(SUPPORTED_FEATURES))


async def get_config_entries(
    mass: MusicAssistant,
    instance_id: str | None = None,
    action: str | None = None,
    values: dict[str, ConfigValueType] | None = None,
) -> tuple[ConfigEntry, ...]:
    """The settings page. The music-provider choices are MA's loaded music providers (not the
    library aggregator, whose ids are database rows no file or server shares)."""
    providers = [p for p in mass.get_providers(ProviderType.MUSIC) if p.domain != LIBRARY_DOMAIN]
    options = [ConfigValueOption(title=p.name, value=p.instance_id) for p in providers]
    default_provider = next((p.instance_id for p in providers if p.domain in PATH_DOMAINS), None)
    return (
        ConfigEntry(
            key=CONF_STATUS,
            type=ConfigEntryType.LABEL,
            label=_status_label(mass, instance_id),
            category="status",
        ),
        ConfigEntry(
            key=CONF_URL,
            type=ConfigEntryType.STRING,
            required=False,
            default_value="",
            description="e.g. http://nas.local:8765 — leave empty to find the agent on the "
            "local network (zeroconf)",
        ),
        ConfigEntry(
            key=CONF_TOKEN,
            type=ConfigEntryType.SECURE_STRING,
            required=False,
            description="the agent's API token: the file ~/.config/nomarr/token on the "
            "agent's machine",
        ),
        ConfigEntry(
            key=CONF_MEDIA_PROVIDER,
            type=ConfigEntryType.STRING,
            required=True,
            options=options,
            default_value=default_provider,
            description="whose tracks radio and the rows are made of: the provider reading the "
            "same files the agent analysed",
        ),
        ConfigEntry(
            key=CONF_AGENT_ROOT,
            type=ConfigEntryType.STRING,
            required=False,
            default_value="",
            description="for local-file providers: the folder on the agent's machine that "
            "is the provider's base folder (e.g. /srv/music for MA's /media). "
            "Empty: the agent's library root, when it has only one",
        ),
        ConfigEntry(
            key=CONF_ROWS,
            type=ConfigEntryType.STRING,
            multi_value=True,
            required=False,
            default_value=list(ROW_CHOICES),
            options=[
                ConfigValueOption(title="For you (from what you play)", value=ROW_FOR_YOU),
                ConfigValueOption(title="More like what you just played", value=ROW_RECENT),
                ConfigValueOption(title="One row per strong mood", value=ROW_MOODS),
            ],
        ),
        ConfigEntry(
            key=CONF_LISTENER,
            type=ConfigEntryType.STRING,
            required=False,
            default_value=DEFAULT_LISTENER,
            description="the user id your plays are stored under on the agent (used when Music "
            "Assistant does not say which user played)",
        ),
        ConfigEntry(
            key=CONF_STREAM_UNKNOWN,
            type=ConfigEntryType.BOOLEAN,
            required=False,
            default_value=True,
            description="send the audio of tracks the agent has no file of (streaming "
            "providers) to it for analysis, in the background",
        ),
        ConfigEntry(
            key=CONF_MOOD_ROWS,
            type=ConfigEntryType.INTEGER,
            required=False,
            default_value=DEFAULT_MOOD_ROWS,
            range=(0, 10),
            advanced=True,
        ),
        ConfigEntry(
            key=CONF_ROW_SIZE,
            type=ConfigEntryType.INTEGER,
            required=False,
            default_value=DEFAULT_ROW_SIZE,
            range=(5, 100),
            advanced=True,
        ),
        ConfigEntry(
            key=CONF_AGENT_ID,
            type=ConfigEntryType.STRING,
            required=False,
            default_value="",
            advanced=True,
            description="the agent this plugin is paired with (filled on first connection); "
            "clear it to pair with another agent",
        ),
    )


def _status_label(mass: MusicAssistant, instance_id: str | None) -> str:
    """The status line: what the loaded provider knows; never raises, never waits."""
    if not instance_id:
        return "Not configured yet: leave the URL empty to find the agent on the network"
    try:
        from .provider import NomarrProvider
    except ImportError as e:
        return f"Cannot load: {e} (install nomarr-client into Music Assistant's Python, see the README)"
    prov = mass.get_provider(instance_id)
    if not isinstance(prov, NomarrProvider):
        return "Not loaded (see the provider's error above, or save to retry)"
    return prov.status_line()
