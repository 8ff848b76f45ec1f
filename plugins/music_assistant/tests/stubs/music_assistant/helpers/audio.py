"""Stand-in for ``music_assistant.helpers.audio``: the two calls the provider uses to read a
track's audio, with the server's signatures. ``SOURCES`` maps a track uri to a file of raw 16-bit
stereo PCM (what MA's ffmpeg pipeline hands a reader for that format), read in 8 KiB chunks;
``DELAY_S`` slows each chunk (a slow provider); ``READS`` records which uris were read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from music_assistant_models.enums import StreamType
from music_assistant_models.errors import MediaNotFoundError
from music_assistant_models.media_items import AudioFormat
from music_assistant_models.streamdetails import StreamDetails

SOURCES: dict[str, str] = {}
DELAY_S = 0.0
READS: list[str] = []


async def get_stream_details(
    mass: Any,
    queue_item: Any,
    seek_position: int = 0,
    fade_in: bool = False,
    prefer_album_loudness: bool = False,
) -> StreamDetails:
    item = queue_item.media_item
    if item.uri not in SOURCES:
        raise MediaNotFoundError(f"no audio for {item.uri}")
    return StreamDetails(
        provider=item.provider,
        item_id=item.item_id,
        audio_format=AudioFormat(),
        stream_type=StreamType.LOCAL_FILE,
        path=SOURCES[item.uri],
    )


async def get_media_stream(
    mass: Any,
    streamdetails: StreamDetails,
    pcm_format: AudioFormat,
    seek_position: int = 0,
    filter_params: list[str] | None = None,
) -> AsyncGenerator[bytes, None]:
    READS.append(streamdetails.uri or "")
    with open(str(streamdetails.path), "rb") as f:
        while chunk := f.read(8192):
            if DELAY_S:
                await asyncio.sleep(DELAY_S)
            yield chunk
