"""How a Music Assistant track and an agent track find each other.

Kept free of the server's classes (only ``music_assistant_models`` and the standard library) so the
rules can be read and tested on their own. Two id spaces meet here:

* file providers (``filesystem_local`` and its network cousins) use the file's path relative to the
  provider's base folder as ``item_id``; the agent knows the same file by its absolute path on the
  agent's machine. One "library root on the agent" setting joins them, both ways.
* every other provider (an OpenSubsonic server, say) has opaque ids; there the shared facts are the
  MusicBrainz recording id and the ISRC both sides read from the file's tags, and as a last resort
  the Chromaprint fingerprint of a file MA can read.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from music_assistant_models.enums import ExternalID
from music_assistant_models.media_items import Track


@dataclass(frozen=True)
class Identity:
    """What one MA track offers for finding it on the agent, best evidence first."""

    paths: tuple[str, ...] = ()  # relative paths on the mapped file provider
    mbids: tuple[str, ...] = ()
    isrcs: tuple[str, ...] = ()


def _clean_relative(item_id: str) -> str | None:
    """A provider item id as a safe relative POSIX path, or None when it is not one.

    ``..`` segments are refused rather than resolved: an id climbing out of the library folder
    would map onto a file the agent may hold for a different library.
    """
    rel = item_id.replace("\\", "/").lstrip("/")
    if not rel:
        return None
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def agent_path(item_id: str, agent_root: str) -> str | None:
    """The agent's absolute path for a file provider's ``item_id``."""
    rel = _clean_relative(item_id)
    if rel is None or not agent_root:
        return None
    return posixpath.join(agent_root.rstrip("/") or "/", rel)


def provider_item_id(path: str, agent_root: str) -> str | None:
    """The file provider's ``item_id`` for an agent path, or None when it lies outside the root."""
    if not agent_root or not path:
        return None
    root = posixpath.normpath(agent_root)
    full = posixpath.normpath(path)
    if root == "/":
        rel = full.lstrip("/")
    elif full.startswith(root + "/"):
        rel = full[len(root) + 1 :]
    else:
        return None
    return rel or None


def identity(track: Track, media_provider: str) -> Identity:
    """Collect the mapping evidence a track carries for ``media_provider`` (an instance id).

    The track may be a library item (mappings to several providers) or the provider's own item (its
    ``provider`` is the instance and its ``item_id`` the provider's id).
    """
    paths: list[str] = []
    for m in sorted(track.provider_mappings or (), key=lambda m: m.item_id):
        if m.provider_instance == media_provider:
            paths.append(m.item_id)
    if track.provider == media_provider and track.item_id not in paths:
        paths.insert(0, track.item_id)
    mbids: list[str] = []
    isrcs: list[str] = []
    for kind, value in sorted(track.external_ids or (), key=lambda x: (str(x[0]), x[1])):
        if kind == ExternalID.MB_RECORDING and value not in mbids:
            mbids.append(value)
        elif kind == ExternalID.ISRC and value not in isrcs:
            isrcs.append(value.upper())
    return Identity(tuple(paths), tuple(mbids), tuple(isrcs))


def parse_fpcalc(output: str) -> tuple[str, float] | None:
    """(fingerprint, duration) from ``fpcalc``'s default output, or None when it has neither."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().upper()] = value.strip()
    fp, dur = fields.get("FINGERPRINT"), fields.get("DURATION")
    if not fp or not dur:
        return None
    try:
        duration = float(dur)
    except ValueError:
        return None
    return (fp, duration) if duration > 0 else None


def mood_title(label: str) -> str:
    """A row title for a mood label: ``easy_listening`` → ``Easy listening``."""
    words = label.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def parse_uri(uri: str) -> tuple[str, str] | None:
    """``provider://track/item_id`` (Music Assistant's uri of a track) → (item_id, provider)."""
    provider, sep, rest = uri.partition("://")
    kind, sep2, item_id = rest.partition("/")
    if not (sep and sep2 and provider and item_id) or kind != "track":
        return None
    return item_id, provider
