"""The nomarr plugin provider: Music Assistant asks, the agent answers, ids are translated.

Everything heavy (decoding, models, vectors) happens in the agent, wherever it runs; this class only
speaks HTTP through ``nomarr_client`` and translates ids (see :mod:`.mapping`). Rules it keeps:

* Nothing blocks MA's event loop: HTTP is aiohttp on MA's own session, file checks go through
  ``asyncio.to_thread``, ``fpcalc`` runs as an asyncio subprocess.
* An unreachable agent never breaks playback: radio gets no answer from us (MA asks its other
  sources), rows fall back to the last good copy, and the error is kept for the status line.
* A second agent on the network never silently takes over: the first agent we talk to is pinned
  by id in the config.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from music_assistant_models.enums import ExternalID, MediaType
from music_assistant_models.errors import MusicAssistantError, SetupFailedError
from music_assistant_models.media_items import RecommendationFolder, Track
from music_assistant_models.unique_list import UniqueList
from nomarr_client import NomarrClient, NomarrError, Unauthorized, normalize_base_url
from nomarr_client import models as api
from nomarr_client.client import TOKEN_HINT
from zeroconf import ServiceStateChange

from music_assistant.models.plugin import PluginProvider

from . import mapping
from .constants import (
    CONF_AGENT_ID,
    CONF_AGENT_ROOT,
    CONF_MEDIA_PROVIDER,
    CONF_MOOD_ROWS,
    CONF_ROW_SIZE,
    CONF_ROWS,
    CONF_TOKEN,
    CONF_URL,
    DEFAULT_MOOD_ROWS,
    DEFAULT_ROW_SIZE,
    DISCOVERY_TIMEOUT_S,
    DOMAIN,
    MISS_TTL_S,
    MOOD_ICONS,
    MOOD_LABELS,
    MOOD_REFRESH_S,
    MOOD_ROW_PREFIX,
    MOOD_SAMPLE,
    PATH_DOMAINS,
    PER_SEED,
    PRIORITY,
    REQUEST_TIMEOUT_S,
    RESOLVE_CONCURRENCY,
    ROW_CHOICES,
    ROW_FOR_YOU,
    ROW_MOODS,
    ROW_RECENT,
    ROW_TTL_S,
    SEED_CACHE_SIZE,
    SEED_COUNT,
    SERVICE_TYPE,
    TIER_WEIGHT,
)
from .listening import Listening

if TYPE_CHECKING:
    from music_assistant_models.config_entries import ProviderConfig
    from music_assistant_models.enums import ProviderFeature
    from music_assistant_models.media_items import BrowseFolder, ItemMapping, MediaItemType
    from music_assistant_models.provider import ProviderManifest
    from zeroconf.asyncio import AsyncServiceInfo

    from music_assistant.mass import MusicAssistant

CACHE_CATEGORY_ROWS = 1


class NomarrProvider(PluginProvider):
    """Similar tracks, radio and mood rows for MA, answered by a nomarr agent."""

    # consulted by MA's similar-tracks dispatcher (lower first); see constants.PRIORITY
    priority: int = PRIORITY

    def __init__(
        self,
        mass: MusicAssistant,
        manifest: ProviderManifest,
        config: ProviderConfig,
        supported_features: set[ProviderFeature] | None = None,
    ) -> None:
        """Read the settings; nothing touches the network before handle_async_init."""
        super().__init__(mass, manifest, config, supported_features)
        self._media_provider = str(config.get_value(CONF_MEDIA_PROVIDER) or "").strip()
        self._configured_url = str(config.get_value(CONF_URL) or "").strip()
        self._client: NomarrClient | None = None
        self._url_source = ""  # "config" or "discovery"
        self._agent: api.Status | None = None
        self._agent_root = ""
        self._ma_base_path = ""
        self._fpcalc: str | None = None
        self._last_error: str | None = None
        self._seed_ids: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._misses: dict[str, float] = {}  # track key -> until when "not on the agent" holds
        self._mood_rows: list[tuple[str, int]] = []
        self._mood_refreshed = 0.0
        self._mood_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._last_rows: dict[str, list[list[str]]] = {}
        self._unregister: list[Callable[[], None]] = []
        self.listening = Listening(self)
        self._for_you_ready = False  # the agent holds listens of this listener (row shown)
        self._for_you_checked = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    async def handle_async_init(self) -> None:
        """Connect to the agent (configured URL, else discovery) or fail with what to do.

        A SetupFailedError shows in MA's provider page; its message is the whole help the user
        gets, so it names the URL tried and the next step.
        """
        if not self._media_provider:
            raise SetupFailedError(
                "choose which music provider's tracks nomarr should map "
                "(the 'Music provider' setting)"
            )
        if self._configured_url:
            try:
                url = normalize_base_url(self._configured_url)
            except NomarrError as e:
                raise SetupFailedError(str(e)) from e
            source = "config"
        else:
            url = await self._discover()
            source = "discovery"
        client = self._make_client(url)
        try:
            status = await client.verify()
        except Unauthorized as e:
            raise SetupFailedError(
                f"the nomarr agent at {url} refused the token: {TOKEN_HINT}"
            ) from e
        except NomarrError as e:
            raise SetupFailedError(
                f"cannot use the nomarr agent at {url}: {e}. Is `nomarr serve` "
                "running there and reachable from Music Assistant?"
            ) from e
        self._client, self._url_source = client, source
        await self._adopt(status)
        self._fpcalc = await asyncio.to_thread(shutil.which, "fpcalc")
        self._ma_base_path = self._provider_base_path()
        self.logger.info("using nomarr agent %s at %s (%s)", status.agent_id, url, source)

    async def loaded_in_mass(self) -> None:
        """Register the diagnostics commands and work out the mood rows in the background."""
        for name, handler in (
            ("status", self._cmd_status),
            ("similar", self._cmd_similar),
            ("map", self._cmd_map),
        ):
            self._unregister.append(self.mass.register_api_command(f"{DOMAIN}/{name}", handler))
        self._schedule_mood_refresh()
        self.listening.start()

    async def unload(self, is_removed: bool = False) -> None:
        """Unregister commands and stop background work; MA's HTTP session stays open."""
        for unregister in self._unregister:
            unregister()
        self._unregister.clear()
        await self.listening.stop()
        for task in (self._mood_task, self._reconnect_task):
            if task is not None and not task.done():
                task.cancel()
        if self._client is not None:
            await self._client.close()
        await super().unload(is_removed)

    async def on_mdns_service_state_change(
        self, name: str, state_change: ServiceStateChange, info: AsyncServiceInfo | None
    ) -> None:
        """Follow the agent on the LAN when the user has not set a URL.

        A configured URL always wins. Otherwise an announcement of the pinned agent (or, before
        pairing, the first agent) becomes the URL; others are ignored, so a second agent on the
        network cannot take over.
        """
        if self._configured_url or not name.endswith(SERVICE_TYPE):
            return
        if state_change is ServiceStateChange.Removed:
            self.logger.debug("nomarr agent %s left the network", name)
            return
        if info is None:
            return
        from nomarr_client.discovery import MalformedRecord, agent_from_record

        try:
            agent = agent_from_record(
                name=name,
                server=info.server,
                port=info.port,
                addresses=info.parsed_scoped_addresses(),
                properties=info.properties,
            )
        except MalformedRecord as e:
            self.logger.warning("ignoring nomarr announcement %s: %s", name, e)
            return
        pinned = self._pinned_id()
        if pinned and agent.agent_id.lower() != pinned:
            self.logger.debug("ignoring nomarr agent %s (paired with %s)", agent.agent_id, pinned)
            return
        if self._client is not None and self._client.base_url == agent.url:
            return
        self.logger.info("nomarr agent %s announced at %s", agent.agent_id, agent.url)
        old = self._client
        self._client, self._url_source = self._make_client(agent.url), "discovery"
        self._seed_ids.clear()
        self._misses.clear()
        if old is not None:
            await old.close()
        if not pinned:
            self._update_config_value(CONF_AGENT_ID, agent.agent_id)
        # its roots (for path mapping) may differ from the last agent's: ask, off this callback
        self._reconnect_task = self.mass.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Check the newly announced agent and take over its library roots."""
        client = self._client
        if client is None:
            return
        try:
            status = await client.verify()
        except NomarrError as e:
            self._note_error("connecting to the announced agent", e)
            return
        self._last_error = None
        await self._adopt(status)
        self._ma_base_path = self._provider_base_path()

    # -- similar tracks -----------------------------------------------------------------------

    async def get_similar_tracks(self, track: Track, limit: int = 25) -> list[Track]:
        """Tracks that sound like ``track``, as tracks of the mapped music provider.

        Asks for more neighbours than needed, since some may not be in MA's library (misses are
        dropped), and never returns the seed itself or another copy of its recording.
        """
        client = self._client
        if client is None or limit <= 0:
            return []
        try:
            seed = await self._agent_track(track)
            if seed is None:
                self.logger.debug("no nomarr track for %s", track.uri)
                return []
            hits = await client.similar(
                track_id=seed[0], limit=min(api.MAX_LIMIT, limit * 2 + 5), distinct=True
            )
        except NomarrError as e:
            self._note_error("similar tracks", e)
            return []
        self._last_error = None
        return await self._resolve(hits.items, limit, exclude={track.uri})

    # -- recommendations ----------------------------------------------------------------------

    async def get_recommendations(self) -> list[RecommendationFolder]:
        """The rows we offer, without items (no network: mood rows come from the last refresh)."""
        rows = self._enabled_rows()
        folders: list[RecommendationFolder] = []
        if ROW_FOR_YOU in rows:
            if time.monotonic() - self._for_you_checked > MOOD_REFRESH_S:
                self._for_you_checked = time.monotonic()
                self.mass.create_task(self._check_for_you())
            if self._for_you_ready:
                folders.append(
                    self._folder(
                        ROW_FOR_YOU,
                        "For you",
                        "mdi-account-music",
                        "Near your taste, from what you play",
                    )
                )
        if ROW_RECENT in rows:
            folders.append(
                self._folder(
                    ROW_RECENT,
                    "More like what you just played",
                    "mdi-playlist-music",
                    "Sounds like your recent plays",
                )
            )
        if ROW_MOODS in rows:
            if time.monotonic() - self._mood_refreshed > MOOD_REFRESH_S:
                self._schedule_mood_refresh()
            for label, _weight in self._mood_rows[: self._mood_row_count()]:
                folders.append(
                    self._folder(
                        MOOD_ROW_PREFIX + label,
                        mapping.mood_title(label),
                        MOOD_ICONS.get(label, "mdi-emoticon-outline"),
                        "A strong mood in your library",
                    )
                )
        return folders

    async def get_recommendation_items(
        self, item_id: str
    ) -> UniqueList[MediaItemType | ItemMapping | BrowseFolder]:
        """The tracks of one row: from MA's cache while fresh, else asked of the agent.

        When the agent is down, the last good copy is served (a stale row beats an empty one).
        """
        if not self._known_row(item_id):
            return UniqueList()
        refs = await self.mass.cache.get(
            item_id,
            provider=self.instance_id,
            category=CACHE_CATEGORY_ROWS,
            checksum=self._rows_checksum(),
        )
        if refs is None:
            try:
                tracks = await self._build_row(item_id)
            except NomarrError as e:
                self._note_error(f"row {item_id}", e)
                refs = self._last_rows.get(item_id, [])
            else:
                self._last_error = None
                refs = [[t.item_id, t.provider] for t in tracks]
                self._last_rows[item_id] = refs
                if refs:  # an empty row (nothing played yet) is asked again next time
                    await self.mass.cache.set(
                        item_id,
                        refs,
                        expiration=ROW_TTL_S,
                        provider=self.instance_id,
                        category=CACHE_CATEGORY_ROWS,
                        checksum=self._rows_checksum(),
                    )
                return UniqueList(tracks)
        return UniqueList(await self._get_tracks([(str(i), str(p)) for i, p in refs]))

    async def recommendations(self) -> list[RecommendationFolder]:
        """The older, single-call form (rows with their items) for MA versions that still use it."""
        folders = []
        for folder in await self.get_recommendations():
            items = await self.get_recommendation_items(folder.item_id)
            if items:
                folder.items = items
                folders.append(folder)
        return folders

    # -- the connection -----------------------------------------------------------------------

    @property
    def agent_url(self) -> str | None:
        """The API base URL in use (configured or discovered), None before setup."""
        return self._client.base_url if self._client is not None else None

    def _make_client(self, url: str) -> NomarrClient:
        token = self.config.get_value(CONF_TOKEN)
        session = getattr(self.mass, "http_session", None)
        return NomarrClient(
            url,
            str(token) if token else None,
            session=session,
            timeout=REQUEST_TIMEOUT_S,
            connect_timeout=3.0,
            retries=1,
            backoff=0.3,
            agent_id=self._pinned_id(),
        )

    def _pinned_id(self) -> str | None:
        value = str(self.config.get_value(CONF_AGENT_ID) or "").strip().lower()
        return value or None

    async def _discover(self) -> str:
        """The pinned (or only) agent announced on the LAN, through MA's own zeroconf."""
        from nomarr_client.discovery import DiscoveryError, browse, choose

        zc = getattr(self.mass, "aiozc", None)
        try:
            agents = await browse(DISCOVERY_TIMEOUT_S, zc=zc)
            return choose(agents, self._pinned_id()).url
        except DiscoveryError as e:
            raise SetupFailedError(f"no agent URL is set and discovery failed: {e}") from e

    async def _adopt(self, status: api.Status) -> None:
        """Pin the agent on first contact and work out the library root to map paths with."""
        self._agent = status
        if not self._pinned_id():
            self._update_config_value(CONF_AGENT_ID, status.agent_id)
            if self._client is not None:
                self._client.agent_id = status.agent_id.lower()
        root = str(self.config.get_value(CONF_AGENT_ROOT) or "").strip()
        if not root and len(status.roots) == 1:
            root = status.roots[0].path  # the obvious answer when the agent has one library
        self._agent_root = root
        if self._is_path_provider() and not root:
            self.logger.warning(
                "the agent has %d library roots: set 'Library folder on the agent' so "
                "file paths can be matched",
                len(status.roots),
            )

    def _note_error(self, what: str, e: NomarrError) -> None:
        self._last_error = f"{what}: {e}"
        self.logger.warning("nomarr %s failed: %s", what, e)

    # -- MA track -> agent track --------------------------------------------------------------

    def _is_path_provider(self) -> bool:
        prov = self.mass.get_provider(self._media_provider)
        domain = getattr(prov, "domain", None) or self._media_provider.split("--", 1)[0]
        return domain in PATH_DOMAINS

    def _provider_base_path(self) -> str:
        """Where the mapped file provider's files are, seen from MA (for fingerprinting)."""
        prov = self.mass.get_provider(self._media_provider)
        if prov is None or not self._is_path_provider():
            return ""
        base = getattr(prov, "base_path", None)
        if not base and getattr(prov, "config", None) is not None:
            base = prov.config.get_value("path")
        return str(base or "")

    async def _agent_track(self, track: Track) -> tuple[int, str] | None:
        """(agent track id, how it was found) for an MA track; remembered per track."""
        key = track.uri or f"{track.provider}://track/{track.item_id}"
        if key in self._seed_ids:
            self._seed_ids.move_to_end(key)
            return self._seed_ids[key]
        if self._misses.get(key, 0.0) > time.monotonic():
            return None  # looked up recently: not on the agent (a streaming track, say)
        found = await self._lookup(track)
        if found is None:
            self._misses[key] = time.monotonic() + MISS_TTL_S
            if len(self._misses) > SEED_CACHE_SIZE:
                now = time.monotonic()
                self._misses = {k: t for k, t in self._misses.items() if t > now}
            return None
        self._seed_ids[key] = found
        while len(self._seed_ids) > SEED_CACHE_SIZE:
            self._seed_ids.popitem(last=False)
        return found

    async def _lookup(self, track: Track) -> tuple[int, str] | None:
        client = self._client
        if client is None:
            return None
        ident = mapping.identity(track, self._media_provider)
        if self._is_path_provider() and self._agent_root:
            for rel in ident.paths:
                if (path := mapping.agent_path(rel, self._agent_root)) and (
                    tid := await _first(client.lookup(path=path))
                ):
                    return tid, "path"
        for mbid in ident.mbids:
            if tid := await _first(client.lookup(mbid=mbid)):
                return tid, "mbid"
        for isrc in ident.isrcs:
            if tid := await _first(client.lookup(isrc=isrc)):
                return tid, "isrc"
        for rel in ident.paths:
            if fp := await self._fingerprint(rel):
                if tid := await _first(client.lookup(fingerprint=fp[0], duration=fp[1])):
                    return tid, "fingerprint"
        return None

    async def _fingerprint(self, rel: str) -> tuple[str, float] | None:
        """Chromaprint of a file MA can read itself, when ``fpcalc`` is installed."""
        if not self._fpcalc or not self._ma_base_path:
            return None
        local = mapping.agent_path(rel, self._ma_base_path)  # same join rule, MA's side
        if local is None or not await asyncio.to_thread(os.path.isfile, local):
            return None
        proc = await asyncio.create_subprocess_exec(
            self._fpcalc, local, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        return mapping.parse_fpcalc(out.decode("utf-8", "replace"))

    # -- agent track -> MA track --------------------------------------------------------------

    async def _resolve(
        self, hits: Sequence[api.Track], limit: int, exclude: set[str | None] | None = None
    ) -> list[Track]:
        """MA tracks for agent answers, in the agent's order; misses dropped, no duplicates."""
        refs = await asyncio.gather(*(self._ma_ref(h) for h in hits))
        tracks = await self._get_tracks([r for r in refs if r is not None])
        out: list[Track] = []
        seen = set(exclude or ())
        for t in tracks:
            if t.uri in seen:
                continue
            seen.add(t.uri)
            out.append(t)
            if len(out) >= limit:
                break
        return out

    async def _ma_ref(self, hit: api.Track) -> tuple[str, str] | None:
        """(item_id, provider instance) of the mapped provider's track for an agent track; a
        streamed recording is the MA item whose audio was streamed (its uri)."""
        if hit.kind == "stream":
            uri = hit.stream.provider_id if hit.stream else None
            return mapping.parse_uri(uri) if uri else None
        if self._is_path_provider():
            item_id = mapping.provider_item_id(hit.path, self._agent_root)
            return (item_id, self._media_provider) if item_id else None
        ids = [(ExternalID.MB_RECORDING, hit.mb_recording), (ExternalID.ISRC, hit.isrc)]
        for kind, value in ids:
            if not value:
                continue
            try:
                lib = await self.mass.music.tracks.get_library_item_by_external_id(value, kind)
            except MusicAssistantError:
                lib = None
            if lib is None:
                continue
            for m in sorted(lib.provider_mappings, key=lambda m: m.item_id):
                if m.provider_instance == self._media_provider:
                    return m.item_id, self._media_provider
        return None

    async def _get_tracks(self, refs: Sequence[tuple[str, str]]) -> list[Track]:
        """``mass.music.tracks.get`` for each ref (bounded concurrency), misses dropped."""
        sem = asyncio.Semaphore(RESOLVE_CONCURRENCY)

        async def one(item_id: str, provider: str) -> Track | None:
            async with sem:
                try:
                    return await self.mass.music.tracks.get(item_id, provider)
                except MusicAssistantError:
                    return None

        got = await asyncio.gather(*(one(i, p) for i, p in refs))
        return [t for t in got if t is not None]

    # -- rows ---------------------------------------------------------------------------------

    def _enabled_rows(self) -> list[str]:
        value = self.config.get_value(CONF_ROWS)
        if value is None:
            return list(ROW_CHOICES)
        values = [value] if isinstance(value, str) else list(value)  # type: ignore[arg-type]
        return [str(v) for v in values if v in ROW_CHOICES]

    def _mood_row_count(self) -> int:
        return max(0, int(self.config.get_value(CONF_MOOD_ROWS) or DEFAULT_MOOD_ROWS))

    def _row_size(self) -> int:
        return max(
            1, min(api.MAX_LIMIT, int(self.config.get_value(CONF_ROW_SIZE) or DEFAULT_ROW_SIZE))
        )

    def _rows_checksum(self) -> str:
        # a row built for another agent, provider or root is not valid for this one
        agent = self._agent.agent_id if self._agent else ""
        return f"{agent}|{self._media_provider}|{self._agent_root}|{self._row_size()}"

    async def _check_for_you(self) -> None:
        """Whether the agent holds listens of this listener (else the row would be empty)."""
        client = self._client
        if client is None:
            return
        try:
            users = await client.users()
        except NomarrError as e:
            self._note_error("for-you row", e)
            return
        want = self.listening.user
        self._for_you_ready = any(u.user == want and u.matched > 0 for u in users.items)

    def _known_row(self, item_id: str) -> bool:
        rows = self._enabled_rows()
        if item_id == ROW_FOR_YOU:
            return ROW_FOR_YOU in rows
        if item_id == ROW_RECENT:
            return ROW_RECENT in rows
        return (
            ROW_MOODS in rows
            and item_id.startswith(MOOD_ROW_PREFIX)
            and len(item_id) > len(MOOD_ROW_PREFIX)
        )

    def _folder(self, item_id: str, name: str, icon: str, subtitle: str) -> RecommendationFolder:
        return RecommendationFolder(
            item_id=item_id,
            provider=self.instance_id,
            name=name,
            icon=icon,
            subtitle=subtitle,
            items=UniqueList(),
        )

    async def _build_row(self, item_id: str) -> list[Track]:
        client = self._client
        if client is None:
            return []
        size = self._row_size()
        if item_id == ROW_FOR_YOU:
            try:
                recs = await client.recommendations(
                    self.listening.user, "for_you", min(api.MAX_LIMIT, size * 2)
                )
            except NomarrError as e:
                if e.status == 404 or e.code == "unprocessable":
                    return []  # no listens (or none matched) yet
                raise
            return await self._resolve(recs.items, size)
        if item_id == ROW_RECENT:
            seeds = await self._recent_seeds()
            lists = []
            for seed_id, _track in seeds:
                hits = await client.similar(track_id=seed_id, limit=PER_SEED, distinct=True)
                lists.append(hits.items)
            seed_ids = {s for s, _ in seeds}
            merged = _interleave(lists, skip=seed_ids)
            return await self._resolve(merged, size, exclude={t.uri for _, t in seeds})
        label = item_id[len(MOOD_ROW_PREFIX) :]
        playlist = await client.mood_playlist(label, limit=min(api.MAX_LIMIT, size * 2))
        return await self._resolve(playlist.items, size)

    async def _recent_seeds(self) -> list[tuple[int, Track]]:
        """Recently played tracks that the agent knows, newest first."""
        try:
            recent = await self.mass.music.recently_played(
                limit=SEED_COUNT * 2, media_types=[MediaType.TRACK]
            )
        except MusicAssistantError as e:
            self.logger.debug("recently played is not available: %s", e)
            return []
        seeds: list[tuple[int, Track]] = []
        seen: set[int] = set()
        for item in recent:
            try:
                track = await self.mass.music.tracks.get(item.item_id, item.provider)
            except MusicAssistantError:
                continue
            found = await self._agent_track(track)
            if found is not None and found[0] not in seen:
                seen.add(found[0])
                seeds.append((found[0], track))
            if len(seeds) >= SEED_COUNT:
                break
        return seeds

    def _schedule_mood_refresh(self) -> None:
        if ROW_MOODS not in self._enabled_rows() or (
            self._mood_task is not None and not self._mood_task.done()
        ):
            return
        self._mood_task = self.mass.create_task(self._refresh_moods())

    async def _refresh_moods(self) -> None:
        """Pick the strong moods: mood labels at tier high/medium in what was played recently
        (or, with no history yet, in a sample of the library), strongest first."""
        client = self._client
        if client is None:
            return
        try:
            moods = await client.moods()
            candidates = {m.label for m in moods.items if m.label in MOOD_LABELS}
            seed_ids = [s for s, _ in await self._recent_seeds()]
            if not seed_ids:
                page = await client.tracks(limit=MOOD_SAMPLE)
                seed_ids = [t.id for t in page.items]
            weights: Counter[str] = Counter()
            for tid in seed_ids:
                detail = await client.track(tid)
                for analysis in detail.analyses:
                    for label, tier in analysis.tiers.items():
                        if label in candidates:
                            weights[label] += TIER_WEIGHT.get(tier, 0)
        except NomarrError as e:
            self._note_error("mood rows", e)
            return
        self._mood_rows = sorted(
            ((label, w) for label, w in weights.items() if w >= 2), key=lambda x: (-x[1], x[0])
        )
        self._mood_refreshed = time.monotonic()

    # -- API commands (diagnostics) -----------------------------------------------------------

    async def _cmd_status(self) -> dict[str, Any]:
        """Connection and mapping state; asks the agent, never raises."""
        status: dict[str, Any] = {
            "url": self.agent_url,
            "url_source": self._url_source,
            "agent_id": self._pinned_id(),
            "media_provider": self._media_provider,
            "agent_root": self._agent_root,
            "ma_base_path": self._ma_base_path,
            "fingerprint": bool(self._fpcalc),
            "mood_rows": [label for label, _ in self._mood_rows],
            "last_error": self._last_error,
            "reachable": False,
        }
        if self._client is not None:
            try:
                st = await self._client.status()
            except NomarrError as e:
                status["error"] = str(e)
            else:
                status.update(
                    reachable=True,
                    version=st.version,
                    tracks=st.tracks.get("ok", 0),
                    roots=[r.path for r in st.roots],
                    scanning=st.queue.running,
                )
        return status

    async def _cmd_map(self, item_id: str, provider: str) -> dict[str, Any]:
        """How one MA track maps onto the agent (path, mbid, isrc, fingerprint or not at all)."""
        track = await self.mass.music.tracks.get(item_id, provider)
        try:
            found = await self._lookup(track)
        except NomarrError as e:
            return {"uri": track.uri, "agent_track_id": None, "via": None, "error": str(e)}
        return {
            "uri": track.uri,
            "agent_track_id": found[0] if found else None,
            "via": found[1] if found else None,
        }

    async def _cmd_similar(self, item_id: str, provider: str, limit: int = 25) -> dict[str, Any]:
        """What radio would get for one track."""
        track = await self.mass.music.tracks.get(item_id, provider)
        items = await self.get_similar_tracks(track, limit)
        return {
            "uri": track.uri,
            "items": [{"uri": t.uri, "name": t.name} for t in items],
            "error": self._last_error,
        }

    def status_line(self) -> str:
        """One line for the config page, from what is already known (no network)."""
        if self._client is None:
            return "Not connected"
        where = "found on the network" if self._url_source == "discovery" else "configured"
        line = f"Connected to {self._client.base_url} ({where})"
        if self._agent is not None:
            line += f", nomarr {self._agent.version}, {self._agent.tracks.get('ok', 0)} tracks"
        if self._last_error:
            line += f"; last error: {self._last_error}"
        return line


async def _first(pending: Any) -> int | None:
    """The id of the first usable track in a lookup answer (404/no match → None)."""
    try:
        found = await pending
    except NomarrError as e:
        if e.status == 404 or (
            e.status is not None and 400 <= e.status < 500 and e.code != "unauthorized"
        ):
            return None
        raise
    for t in found.items:
        if t.status == "ok":
            return t.id
    return None


def _interleave(lists: Sequence[Sequence[api.Hit]], skip: set[int]) -> list[api.Hit]:
    """Round-robin over several ranked lists: every seed gets a say near the top."""
    out: list[api.Hit] = []
    seen = set(skip)
    for rank in range(max((len(x) for x in lists), default=0)):
        for hits in lists:
            if rank < len(hits) and hits[rank].id not in seen:
                seen.add(hits[rank].id)
                out.append(hits[rank])
    return out
