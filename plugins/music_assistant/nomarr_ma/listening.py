"""What Music Assistant plays, told to the agent: playback events become listens, and the audio of
tracks the agent has no file of (a streaming provider's) is streamed to it for analysis.

**Listens.** MA signals ``media_item_played`` with a progress report (uri, name, artist, album,
duration, seconds played, fully played, still playing, the user). When a playback ends (the report
says it is no longer playing, or fully played) it is queued as one listen — when it started, how
long it played, completed or not — and sent in batches. Its id is the user, the uri and the start
time rounded to 30 s, so the reports MA sends during and at the end of one playback are one listen
on the agent. An agent that is down costs nothing: up to :data:`LISTEN_QUEUE` listens wait and
are sent when it answers again (the oldest go first when the queue is full).

**Audio the agent cannot see.** The first report of a track the agent does not know (no file of
it by path, MusicBrainz id, ISRC or fingerprint, no stream of its uri) queues the track for
ingest. One track at a time, a background task asks MA for the track's audio as 16-bit PCM — a
second read of the source through MA's own stream pipeline, not a tap on what the player
receives, so playback never waits for it — and sends it to the agent's streaming-ingest API in
numbered chunks through a buffer of :data:`INGEST_BUFFER` chunks (the reader waits when the agent
is slower; memory stays bounded). Any failure aborts the session: the agent stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from music_assistant_models.enums import ContentType, EventType, MediaType
from music_assistant_models.errors import MusicAssistantError
from nomarr_client import NomarrError

from . import mapping
from .constants import (
    CONF_LISTENER,
    CONF_STREAM_UNKNOWN,
    DEFAULT_LISTENER,
    INGEST_BUFFER,
    INGEST_CHANNELS,
    INGEST_CHUNK_S,
    INGEST_QUEUE,
    INGEST_RATE,
    LISTEN_BATCH,
    LISTEN_QUEUE,
)

if TYPE_CHECKING:
    from .provider import NomarrProvider

SOURCE = "music_assistant"


def _field(report: Any, name: str) -> Any:
    """A report field, from the dataclass MA signals or its dict form."""
    if isinstance(report, dict):
        return report.get(name)
    return getattr(report, name, None)


class Listening:
    """Playback events → listens, unknown tracks → streaming ingest, for one provider."""

    def __init__(self, prov: NomarrProvider) -> None:
        self.prov = prov
        self.pending: deque[dict[str, Any]] = deque(maxlen=LISTEN_QUEUE)
        self._wake = asyncio.Event()
        self._unsubscribe: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._ingest_queue: asyncio.Queue[str] | None = None
        self._seen: OrderedDict[str, float] = OrderedDict()  # uris checked for ingest, and when
        self.ingested: list[str] = []  # uris whose audio reached the agent (diagnostics, tests)
        self.ingest_errors: list[str] = []
        self.sent = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to playback events and start the senders."""
        self._ingest_queue = asyncio.Queue(maxsize=INGEST_QUEUE)
        self._unsubscribe = self.prov.mass.subscribe(self.on_event, EventType.MEDIA_ITEM_PLAYED)
        # long-lived loops of this provider, cancelled in stop() (not MA's one-shot tasks)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._send_loop(), name="nomarr-listens"),
            loop.create_task(self._ingest_loop(), name="nomarr-ingest"),
        ]

    async def stop(self) -> None:
        """Unsubscribe, send what is queued (briefly), stop the tasks."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with contextlib.suppress(NomarrError, TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=5)
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    @property
    def user(self) -> str:
        return str(self.prov.config.get_value(CONF_LISTENER) or DEFAULT_LISTENER)

    # -- playback events ------------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        """MA's event callback (on its loop; never blocks, never raises)."""
        try:
            report = event.data
            if report is None or _field(report, "media_type") not in (MediaType.TRACK, "track"):
                return
            uri = _field(report, "uri")
            if not uri:
                return
            if _field(report, "is_playing") and not _field(report, "fully_played"):
                self._maybe_ingest(str(uri))
                return
            self._queue_listen(report)
        except Exception:  # a malformed event must not disturb MA
            self.prov.logger.exception("cannot handle a playback event")

    def _queue_listen(self, report: Any) -> None:
        played = float(_field(report, "seconds_played") or 0)
        start = time.time() - played
        user = str(_field(report, "userid") or self.user)
        uri = str(_field(report, "uri"))
        listen: dict[str, Any] = {
            "ts": start,
            "seconds": played,
            "id": f"{user}:{uri}:{int(start) // 30}",
            "provider_id": uri,
            "mbid": _field(report, "mbid"),
            "artist": _field(report, "artist"),
            "title": _field(report, "name"),
            "album": _field(report, "album"),
            "duration": float(_field(report, "duration") or 0) or None,
        }
        if _field(report, "fully_played"):
            listen["outcome"] = "completed"
        self.pending.append({"user": user, **{k: v for k, v in listen.items() if v is not None}})
        self._wake.set()

    async def flush(self) -> None:
        """Send every queued listen now (per user, in batches); raises when the agent fails,
        keeping what was not sent."""
        client = self.prov._client
        if client is None:
            return
        while self.pending:
            user = self.pending[0]["user"]
            batch = [x for x in list(self.pending)[:LISTEN_BATCH] if x["user"] == user]
            for x in batch:
                if "track_id" not in x:
                    await self._attach_track(x)
            body = [{k: v for k, v in x.items() if k != "user"} for x in batch]
            await client.add_listens(user, body, source=SOURCE)
            for _ in batch:  # sent: drop them (newer ones may have been queued meanwhile)
                self.pending.remove(next(x for x in self.pending if x["user"] == user))
            self.sent += len(batch)

    async def _attach_track(self, listen: dict[str, Any]) -> None:
        """The agent's track id for a listen's MA track, found the way radio finds its seeds
        (path, MusicBrainz id, ISRC, fingerprint; remembered per track), so a file the agent
        holds is matched whatever the report's names say."""
        try:
            track = await self.prov.mass.music.get_item_by_uri(listen["provider_id"])
            found = await self.prov._agent_track(track)
        except MusicAssistantError:
            return
        if found is not None:
            listen["track_id"] = found[0]

    async def _send_loop(self) -> None:
        delay = 1.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                delay = 1.0
            except NomarrError as e:
                self.prov._note_error("sending listens", e)
                await asyncio.sleep(delay)  # the agent is away: try again later, queue kept
                delay = min(delay * 2, 300.0)
                self._wake.set()

    # -- streaming ingest ---------------------------------------------------------------------

    def _maybe_ingest(self, uri: str) -> None:
        if not self.prov.config.get_value(CONF_STREAM_UNKNOWN) or self._ingest_queue is None:
            return
        if uri in self._seen:
            return
        self._seen[uri] = time.monotonic()
        while len(self._seen) > 4096:
            self._seen.popitem(last=False)
        with contextlib.suppress(asyncio.QueueFull):  # a burst beyond the queue waits for replay
            self._ingest_queue.put_nowait(uri)

    async def _ingest_loop(self) -> None:
        assert self._ingest_queue is not None
        while True:
            uri = await self._ingest_queue.get()
            try:
                if not await self._agent_knows(uri):
                    await self.ingest(uri)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the loop goes on whatever one track does
                self.ingest_errors.append(f"{uri}: {type(e).__name__}: {e}")
                self.prov.logger.info("nomarr: no ingest of %s: %s", uri, e)
                self._seen.pop(uri, None)  # may be tried again at its next playback

    async def _agent_knows(self, uri: str) -> bool:
        client = self.prov._client
        if client is None:
            return True
        if (await client.lookup_recording(provider_id=uri)).items:
            return True
        try:
            track = await self.prov.mass.music.get_item_by_uri(uri)
        except MusicAssistantError:
            return False
        return await self.prov._agent_track(track) is not None

    async def ingest(self, uri: str) -> None:
        """Stream one track's audio to the agent (see the module docstring)."""
        from music_assistant_models.media_items import AudioFormat
        from music_assistant_models.queue_item import QueueItem

        from music_assistant.helpers.audio import get_media_stream, get_stream_details

        client = self.prov._client
        if client is None:
            return
        track = await self.prov.mass.music.get_item_by_uri(uri)
        details = await get_stream_details(
            self.prov.mass, QueueItem.from_media_item("nomarr", track)
        )
        pcm = AudioFormat(
            content_type=ContentType.PCM_S16LE,
            sample_rate=INGEST_RATE,
            bit_depth=16,
            channels=INGEST_CHANNELS,
        )
        ids = mapping.identity(track, track.provider)
        identity = {
            "provider": str(track.provider or "")[:64] or None,
            "provider_id": uri,
            "mbid": ids.mbids[0] if ids.mbids else None,
            "isrc": ids.isrcs[0] if ids.isrcs else None,
            "title": track.name,
            "artist": ", ".join(a.name for a in getattr(track, "artists", []) or []) or None,
            "album": getattr(getattr(track, "album", None), "name", None),
            "duration": float(track.duration) if getattr(track, "duration", None) else None,
        }
        fmt = {"encoding": "s16le", "sample_rate": INGEST_RATE, "channels": INGEST_CHANNELS}
        session = await client.ingest_start(fmt, {k: v for k, v in identity.items() if v})
        chunk_bytes = int(INGEST_CHUNK_S * INGEST_RATE) * 2 * INGEST_CHANNELS
        buf: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=INGEST_BUFFER)

        async def read() -> None:
            part = bytearray()
            async for data in get_media_stream(self.prov.mass, details, pcm):
                part += data
                while len(part) >= chunk_bytes:
                    await buf.put(bytes(part[:chunk_bytes]))
                    del part[:chunk_bytes]
            whole = len(part) - len(part) % (2 * INGEST_CHANNELS)
            if whole:
                await buf.put(bytes(part[:whole]))
            await buf.put(None)

        reader = asyncio.create_task(read())
        try:
            seq = 0
            while (data := await buf.get()) is not None:
                await client.ingest_chunk(session.id, seq, data)
                seq += 1
            await reader
            await client.ingest_end(session.id)
        except BaseException:
            reader.cancel()
            with contextlib.suppress(NomarrError, asyncio.CancelledError):
                await client.ingest_abort(session.id)
            raise
        self.ingested.append(uri)
        self.prov.logger.info("nomarr: analysed the audio of %s (%d chunks)", uri, seq)
