"""What every tag codec offers, and the helpers they share.

A codec knows one tag format (ID3v2, Vorbis comments, MP4 ilst, ASF attributes): how custom text
keys are stored, how the standard MOOD field is spelt, where identity fields live, and which parts
of the tag nomarr does not own (so a write can prove it left them alone). Everything above the
codecs — planning, verification, the write paths — is format-agnostic because of this interface.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import mutagen
from nomarr_client.tags import LEGACY_PREFIX, PREFIX


@dataclass
class Item:
    """One custom text key as stored: ``sid`` deletes it, ``name`` is the key as written."""

    sid: str
    name: str
    values: list[str]


# Standard fields nomarr may fill under the ownership rule (DESIGN §2): only when empty or still
# holding what nomarr last wrote. Opus files get R128_TRACK_GAIN instead of the REPLAYGAIN pair
# (RFC 7845); the plan drops what a format must not carry.
STD_FIELDS = (
    "bpm",
    "initial_key",
    "replaygain_track_gain",
    "replaygain_track_peak",
    "r128_track_gain",
)


def _std_value(values: list[str]) -> str | None:
    """A standard field's value from every stored spelling of it (``BPM`` and ``bpm``, an iTunes
    atom TagLib re-spelt): one value when they agree, else all distinct values joined — never
    nomarr's own value alone, so a field someone else also wrote counts as theirs."""
    distinct = sorted({v for v in values if v})
    return "; ".join(distinct) if distinct else None


def _first(values: list[str]) -> str | None:
    for v in values:
        if v:
            return v
    return None


def _digest(obj: object) -> str:
    return hashlib.md5(repr(obj).encode("utf-8", "surrogatepass")).hexdigest()


def _is_owned_name(name: str) -> bool:
    low = name.lower()
    return low.startswith(PREFIX) or low.startswith(LEGACY_PREFIX)


class Codec(Protocol):
    """One tag format. ``tags`` is mutagen's tag object of a parsed file (None: the file has none).

    Keys are the custom text keys (``nom:…``, ``essentia:…``, anything else a tagger wrote);
    MOOD is the format's standard mood field, which nomarr fills only under the ownership rule.
    """

    fmt: str  # id3 | vorbis | mp4 | asf: FileTags.format

    def items(self, tags: mutagen.Tags | None) -> list[Item]:
        """Every custom text key as stored, one item per stored key (case variants apart)."""
        ...

    def delete(self, tags: mutagen.Tags, sid: str) -> None:
        """Remove the stored key ``sid`` (an :attr:`Item.sid`)."""
        ...

    def set(self, tags: mutagen.Tags, key: str, value: str) -> None:
        """Add the key ``key`` with one text value (the caller removed any previous one)."""
        ...

    def get_mood(self, tags: mutagen.Tags | None) -> str | None:
        """The standard MOOD value, first non-empty one; None when there is none."""
        ...

    def set_mood(self, tags: mutagen.Tags, value: str | None) -> None:
        """Replace every MOOD value by ``value``; None removes MOOD."""
        ...

    def get_std(self, tags: mutagen.Tags | None) -> dict[str, str]:
        """The standard fields of :data:`STD_FIELDS` the file has (first non-empty value)."""
        ...

    def set_std(self, tags: mutagen.Tags, name: str, value: str | None) -> None:
        """Replace a standard field (one of :data:`STD_FIELDS`); None removes it."""
        ...

    def ids(self, tags: mutagen.Tags | None) -> dict[str, str]:
        """Identity fields (MusicBrainz ids, ISRC, title, artist, ...) under FileTags.ids names."""
        ...

    def others(self, obj: mutagen.FileType) -> list[tuple[str, str]]:
        """A sorted digest of every part of the tag nomarr does not own, for verification."""
        ...
