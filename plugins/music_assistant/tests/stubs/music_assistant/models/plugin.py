"""Stand-in for ``music_assistant.models.plugin`` (the plugin provider base), reduced to the hooks
a similarity/recommendation plugin implements; signatures as in the server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from music_assistant_models.enums import MediaType, ProviderFeature
from music_assistant_models.media_items import SearchResults
from music_assistant_models.unique_list import UniqueList

from .provider import Provider

if TYPE_CHECKING:
    from music_assistant_models.media_items import (
        BrowseFolder,
        ItemMapping,
        MediaItemType,
        RecommendationFolder,
        Track,
    )


class PluginProvider(Provider):
    """Base of plugin providers: each hook is only called when its feature is declared."""

    async def search(
        self, search_query: str, media_types: list[MediaType], limit: int = 5
    ) -> SearchResults:
        if ProviderFeature.SEARCH in self.supported_features:
            raise NotImplementedError
        return SearchResults()

    async def get_similar_tracks(self, track: Track, limit: int = 25) -> list[Track]:
        if ProviderFeature.SIMILAR_TRACKS in self.supported_features:
            raise NotImplementedError
        return []

    async def get_recommendations(self) -> list[RecommendationFolder]:
        if ProviderFeature.RECOMMENDATIONS in self.supported_features:
            raise NotImplementedError
        return []

    async def get_recommendation_items(
        self, item_id: str
    ) -> UniqueList[MediaItemType | ItemMapping | BrowseFolder]:
        if ProviderFeature.RECOMMENDATIONS in self.supported_features:
            raise NotImplementedError
        return UniqueList()

    async def browse(self, path: str) -> Sequence[MediaItemType | ItemMapping | BrowseFolder]:
        if ProviderFeature.BROWSE in self.supported_features:
            raise NotImplementedError
        return []
