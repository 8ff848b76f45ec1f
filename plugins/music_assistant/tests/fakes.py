"""A mocked ``mass`` (the MusicAssistant object a provider receives), the way MA's own provider tests
mock it: only what the nomarr provider touches, with the server's method names and signatures,
holding real ``music_assistant_models`` objects. Plus the loader steps MA runs for a provider.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from music_assistant_models import config_entries
from music_assistant_models.config_entries import ProviderConfig
from music_assistant_models.enums import ExternalID, MediaType, ProviderType
from music_assistant_models.errors import MediaNotFoundError
from music_assistant_models.media_items import ItemMapping, ProviderMapping, Track
from music_assistant_models.provider import ProviderManifest

from music_assistant.constants import CONF_ENTRY_LOG_LEVEL

PKG = Path(__file__).resolve().parents[1] / "nomarr_ma"

# MA keeps secure strings encrypted at rest with its own key; these tests do not need secrecy
config_entries.ENCRYPT_CALLBACK = lambda value: value
config_entries.DECRYPT_CALLBACK = lambda value: value


@dataclass
class FakeMusicProvider:
    """A loaded music provider as the plugin sees it (domain, instance id, name, config)."""

    domain: str
    instance_id: str
    name: str
    base_path: str | None = None
    type: ProviderType = ProviderType.MUSIC


class FakeCache:
    """``mass.cache``: get/set keyed by (provider, category, key), with expiry and checksum.
    Values go through JSON, as MA's database cache does, so a non-serialisable value fails here."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, int, str], tuple[str, str | None, float]] = {}
        self.hits = 0
        self.sets = 0

    async def get(
        self,
        key: str,
        provider: str = "default",
        category: int = 0,
        checksum: str | int | None = None,
        default: Any = None,
        allow_bypass: bool = True,
    ) -> Any:
        got = self._data.get((provider, category, key))
        if (
            got is None
            or got[2] < time.time()
            or (checksum is not None and got[1] != str(checksum))
        ):
            return default
        self.hits += 1
        return json.loads(got[0])

    async def set(
        self,
        key: str,
        data: Any,
        expiration: int = 86400 * 30,
        provider: str = "default",
        category: int = 0,
        checksum: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.sets += 1
        self._data[(provider, category, key)] = (
            json.dumps(data),
            None if checksum is None else str(checksum),
            time.time() + expiration,
        )

    async def clear(
        self,
        key_filter: str | None = None,
        category_filter: int | None = None,
        provider_filter: str | None = None,
        include_persistent: bool = False,
    ) -> None:
        self._data.clear()


class FakeTracks:
    """``mass.music.tracks``: provider items by (instance, item_id), library items by external id."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Track] = {}
        self.calls: list[tuple[str, str]] = []

    def add(self, track: Track) -> None:
        self.items[(track.provider, track.item_id)] = track

    async def get(
        self, item_id: str, provider_instance_id_or_domain: str, recursive: bool = True
    ) -> Track:
        self.calls.append((item_id, provider_instance_id_or_domain))
        await asyncio.sleep(0)
        try:
            return self.items[(provider_instance_id_or_domain, item_id)]
        except KeyError:
            raise MediaNotFoundError(
                f"Track {item_id} not found on provider {provider_instance_id_or_domain}"
            ) from None

    async def get_library_item_by_external_id(
        self, external_id: str, external_id_type: ExternalID | None = None
    ) -> Track | None:
        for (prov, _), t in sorted(self.items.items()):
            if prov != "library":
                continue
            for kind, value in t.external_ids:
                if value == external_id and (external_id_type is None or kind == external_id_type):
                    return t
        return None


class FakeMusic:
    def __init__(self) -> None:
        self.tracks = FakeTracks()
        self.played: list[ItemMapping] = []

    async def get_item_by_uri(self, uri: str) -> Track:
        """``provider://track/item_id`` → the provider's track (MediaNotFoundError if none)."""
        provider, _, rest = uri.partition("://")
        return await self.tracks.get(rest.partition("/")[2], provider)

    async def recently_played(
        self, limit: int = 10, media_types: list[MediaType] | None = None
    ) -> list[ItemMapping]:
        return [x for x in self.played if media_types is None or x.media_type in media_types][
            :limit
        ]


class FakeConfigController:
    def __init__(self) -> None:
        self.raw: dict[tuple[str, str], Any] = {}

    def set_raw_provider_config_value(
        self, provider_instance: str, key: str, value: Any, encrypted: bool = False
    ) -> None:
        self.raw[(provider_instance, key)] = value


@dataclass
class FakeMass:
    """The MusicAssistant object, as far as the plugin uses it."""

    music: FakeMusic = field(default_factory=FakeMusic)
    cache: FakeCache = field(default_factory=FakeCache)
    config: FakeConfigController = field(default_factory=FakeConfigController)
    providers: dict[str, Any] = field(default_factory=dict)
    command_handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    subscribers: list[tuple[Callable[[Any], Any], Any]] = field(default_factory=list)
    aiozc: Any = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    @property
    def http_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def get_providers(self, provider_type: ProviderType | None = None) -> list[Any]:
        return [
            p for p in self.providers.values() if provider_type is None or p.type == provider_type
        ]

    def get_provider(
        self, provider_instance_or_domain: str, return_unavailable: bool = False
    ) -> Any:
        if prov := self.providers.get(provider_instance_or_domain):
            return prov
        return next(
            (p for p in self.providers.values() if p.domain == provider_instance_or_domain), None
        )

    def create_task(
        self,
        target: Coroutine[Any, Any, Any],
        *args: Any,
        task_id: str | None = None,
        abort_existing: bool = False,
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(target)
        self.tasks.append(task)
        return task

    def subscribe(
        self, cb_func: Callable[[Any], Any], event_filter: Any = None, id_filter: Any = None
    ) -> Callable[[], None]:
        """``mass.subscribe``: the callback gets every matching MassEvent."""
        entry = (cb_func, event_filter)
        self.subscribers.append(entry)
        return lambda: self.subscribers.remove(entry)

    def signal_event(self, event: Any, object_id: str | None = None, data: Any = None) -> None:
        """``mass.signal_event``: call the subscribers as MA does (a MassEvent each)."""
        from music_assistant_models.event import MassEvent

        ev = MassEvent(event=event, object_id=object_id, data=data)
        for cb, flt in list(self.subscribers):
            if flt is None or event == flt or (isinstance(flt, tuple) and event in flt):
                cb(ev)

    def register_api_command(
        self,
        command: str,
        handler: Callable[..., Any],
        authenticated: bool = True,
        required_scope: Any = None,
        allow_impersonation: bool = False,
        alias: bool = False,
    ) -> Callable[[], None]:
        if command in self.command_handlers:
            raise RuntimeError(f"Command {command} is already registered")
        self.command_handlers[command] = handler

        def unregister() -> None:
            self.command_handlers.pop(command, None)

        return unregister

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self._session is not None:
            await self._session.close()


async def load_provider(mass: FakeMass, values: dict[str, Any], instance_id: str = "nomarr") -> Any:
    """What MA's loader does: parse the manifest, build the config from the provider's entries
    (plus MA's default log-level entry), ``setup()``, ``handle_async_init()``, ``loaded_in_mass()``."""
    import nomarr_ma

    manifest = await ProviderManifest.parse(str(PKG / "manifest.json"))
    prov = await create_provider(mass, values, instance_id, manifest)
    await prov.handle_async_init()
    mass.providers[instance_id] = prov
    await prov.loaded_in_mass()
    assert isinstance(prov, nomarr_ma.provider.NomarrProvider)
    return prov


async def create_provider(
    mass: FakeMass,
    values: dict[str, Any],
    instance_id: str = "nomarr",
    manifest: ProviderManifest | None = None,
) -> Any:
    """``setup()`` only: the provider object before its async init."""
    import nomarr_ma

    manifest = manifest or await ProviderManifest.parse(str(PKG / "manifest.json"))
    entries = [*await nomarr_ma.get_config_entries(mass, instance_id), CONF_ENTRY_LOG_LEVEL]
    raw = {
        "type": "plugin",
        "domain": manifest.domain,
        "instance_id": instance_id,
        "values": values,
    }
    config = ProviderConfig.parse(entries, raw)
    return await nomarr_ma.setup(mass, manifest, config)


def fs_track(
    instance: str, rel: str, name: str, ext: Iterable[tuple[ExternalID, str]] = ()
) -> Track:
    """A track as a file provider lists it (item_id = path relative to its base folder)."""
    domain = instance.split("--", 1)[0]
    return Track(
        item_id=rel,
        provider=instance,
        name=name,
        external_ids=set(ext),
        provider_mappings={
            ProviderMapping(item_id=rel, provider_domain=domain, provider_instance=instance)
        },
    )
