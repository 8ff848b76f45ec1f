"""Names and tunables shared by the provider's modules.

Config keys are stable strings: Music Assistant stores them in its settings file, so renaming one
silently drops a user's setting.
"""

from __future__ import annotations

from nomarr_client import models
from nomarr_client.vocab import MOODS

DOMAIN = "nomarr"
SERVICE_TYPE = models.SERVICE_TYPE

# -- config keys ----------------------------------------------------------------------------------
CONF_URL = "agent_url"
CONF_TOKEN = "agent_token"
CONF_AGENT_ID = "agent_id"
CONF_MEDIA_PROVIDER = "media_provider"
CONF_AGENT_ROOT = "agent_library_root"
CONF_ROWS = "rows"
CONF_MOOD_ROWS = "mood_rows"
CONF_ROW_SIZE = "row_size"
CONF_STATUS = "status_label"
CONF_LISTENER = "listener"
CONF_STREAM_UNKNOWN = "stream_unknown"

ROW_RECENT = "more_like_recent"
ROW_MOODS = "moods"
ROW_FOR_YOU = "for_you"
ROW_CHOICES = (ROW_FOR_YOU, ROW_RECENT, ROW_MOODS)
MOOD_ROW_PREFIX = "mood_"

# The music provider aggregating all others: its ids are database row numbers, never the ids a
# file or media-server provider uses, so it cannot be the one we map tracks through.
LIBRARY_DOMAIN = "library"
# Providers whose track item_id is the file's path relative to the provider's base folder.
PATH_DOMAINS = frozenset({"filesystem_local", "filesystem_smb", "filesystem_nfs"})

# -- behaviour ------------------------------------------------------------------------------------
# MA consults similar-track sources in ascending `priority` (default 50; the track's own music
# provider wins a tie). Below the default so radio and "don't stop the music" ask the agent first
# for local files, which no streaming service can answer for.
PRIORITY = 20
DISCOVERY_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 15.0
ROW_TTL_S = 600  # items of one recommendation row, in MA's cache
MOOD_REFRESH_S = 900  # which mood rows exist
SEED_COUNT = 5  # recently played tracks that seed the rows
PER_SEED = 10
MOOD_SAMPLE = 12  # agent tracks whose tiers decide the strong moods when nothing was played yet
DEFAULT_ROW_SIZE = 20
DEFAULT_MOOD_ROWS = 3
SEED_CACHE_SIZE = 4096
MISS_TTL_S = 300  # a track the agent does not know is not asked about again for this long
RESOLVE_CONCURRENCY = 8
# listens and streaming ingest (listening.py)
DEFAULT_LISTENER = "music_assistant"  # the agent's user id when MA's report names no user
LISTEN_QUEUE = 1000  # listens kept while the agent is away (oldest dropped beyond)
LISTEN_BATCH = 200
INGEST_QUEUE = 20  # tracks waiting to be streamed to the agent
INGEST_BUFFER = 8  # PCM chunks in flight between MA's reader and the agent (bounded memory)
INGEST_CHUNK_S = 2.0
INGEST_RATE = 44100
INGEST_CHANNELS = 2

# Which labels are moods: the vocabulary every host shares (nomarr_client.vocab).
MOOD_LABELS = MOODS
TIER_WEIGHT = {"high": 2, "medium": 1}
MOOD_ICONS = {
    "happy": "mdi-emoticon-happy-outline",
    "sad": "mdi-emoticon-sad-outline",
    "party": "mdi-party-popper",
    "chill": "mdi-sofa",
    "chillout": "mdi-sofa",
    "mellow": "mdi-weather-night",
    "relaxed": "mdi-sofa",
    "aggressive": "mdi-fire",
}
