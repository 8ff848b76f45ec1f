"""What to change in a file's tags for a request, and tagging a copy with proof it worked.

:func:`_plan` compares the file with the request and yields the edits (None: nothing to do, so an
unchanged file is never opened for writing); :func:`_tag_copy` applies them to a temp copy and
verifies the copy before any write path lets it near the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mutagen
from mutagen.asf import ASF
from mutagen.oggopus import OggOpus
from mutagen.wave import WAVE
from nomarr_client.tags import LEGACY_PREFIX, PREFIX

from nomarr.stages import timed
from nomarr.tagio.codecs import codec_for
from nomarr.tagio.codecs.base import STD_FIELDS, Item, _is_owned_name
from nomarr.tagio.codecs.iff import _mirror_info
from nomarr.tagio.errors import TagError
from nomarr.tagio.files import _load_copy, _save
from nomarr.tagio.fsio import _fsync_path
from nomarr.tagio.verify import _audio_md5


@dataclass
class _Request:
    nom: dict[str, str]
    mood: str | None
    mood_owned: str | None
    legacy: set[str] | None  # legacy keys to remove; None = all of them
    std: dict[str, str] = field(default_factory=dict)  # standard fields nomarr wants
    std_owned: dict[str, str] = field(default_factory=dict)  # …and those it wrote last time


@dataclass
class _Plan:
    delete: list[str]  # sids
    write: dict[str, str]
    removed: list[str]
    mood: tuple[str | None] | None  # (new value or None to remove,) or None = leave MOOD
    std: dict[str, str | None] = field(default_factory=dict)  # field → new value (None: remove)
    std_owned: dict[str, str] = field(default_factory=dict)  # what nomarr owns after the edit


def _plan(obj: mutagen.FileType, req: _Request) -> _Plan | None:
    """The edits that make this file carry exactly ``req``; None when it already does."""
    c = codec_for(obj)
    by_key: dict[str, list[Item]] = {}
    legacy: dict[str, list[Item]] = {}
    for it in c.items(obj.tags):
        low = it.name.lower()
        if low.startswith(PREFIX):
            by_key.setdefault(low, []).append(it)
        elif low.startswith(LEGACY_PREFIX):
            legacy.setdefault(low, []).append(it)
    delete: list[str] = []
    write: dict[str, str] = {}
    removed: list[str] = []
    for key, value in req.nom.items():
        have = by_key.pop(key, [])
        if len(have) == 1 and have[0].name == key and have[0].values == [value]:
            continue
        delete += [it.sid for it in have]
        write[key] = value
    for key, have in sorted(by_key.items()):  # stale keys from older model builds
        delete += [it.sid for it in have]
        removed.append(key)
    for key, have in sorted(legacy.items()):
        if req.legacy is None or key in req.legacy:
            delete += [it.sid for it in have]
            removed.append(key)
    cur = c.get_mood(obj.tags)
    mood: tuple[str | None] | None = None
    if req.mood is not None:
        if cur != req.mood and (cur is None or (req.mood_owned and cur == req.mood_owned)):
            mood = (req.mood,)
    elif req.mood_owned and cur == req.mood_owned:
        mood = (None,)
    std, owned = _plan_std(obj, req)
    if not delete and not write and mood is None and not std:
        return None
    return _Plan(delete, write, removed, mood, std, owned)


def _plan_std(obj: mutagen.FileType, req: _Request) -> tuple[dict[str, str | None], dict[str, str]]:
    """The ownership rule per standard field: set it where it is empty or still what nomarr
    wrote; remove nomarr's own value when nomarr no longer has one; never touch a user's. Opus
    carries R128_TRACK_GAIN, every other format the REPLAYGAIN pair (RFC 7845)."""
    opus = isinstance(obj, OggOpus)
    cur = codec_for(obj).get_std(obj.tags)
    edits: dict[str, str | None] = {}
    owned: dict[str, str] = {}
    for name in STD_FIELDS:
        if (name == "r128_track_gain") != opus and name.startswith(("replaygain", "r128")):
            continue
        if isinstance(obj, ASF) and name == "r128_track_gain":
            continue
        want, mine, have = req.std.get(name), req.std_owned.get(name), cur.get(name)
        ours = have is None or (mine is not None and have == mine)
        if want is not None:
            if have == want:
                if mine == have:
                    owned[name] = want
            elif ours:
                edits[name] = want
                owned[name] = want
        elif mine is not None and have == mine:
            edits[name] = None
    return edits, owned


def _apply(obj: mutagen.FileType, plan: _Plan, path: str) -> list[tuple[str, str]]:
    """Edit the in-memory tags; returns snapshot entries of frames mirrored from WAV INFO."""
    c = codec_for(obj)
    mirrored: list[tuple[str, str]] = []
    if obj.tags is None:
        obj.add_tags()
        if isinstance(obj, WAVE):
            mirrored = _mirror_info(path, obj.tags)
    for sid in plan.delete:
        c.delete(obj.tags, sid)
    for key, value in sorted(plan.write.items()):
        c.set(obj.tags, key, value)
    if plan.mood is not None:
        c.set_mood(obj.tags, plan.mood[0])
    for name, value in sorted(plan.std.items()):
        c.set_std(obj.tags, name, value)
    return mirrored


def _state(obj: mutagen.FileType) -> tuple:
    c = codec_for(obj)
    items = sorted(
        (it.name, tuple(it.values)) for it in c.items(obj.tags) if _is_owned_name(it.name)
    )
    return items, c.get_mood(obj.tags), sorted(c.get_std(obj.tags).items()), c.others(obj)


def _tag_copy(
    tmp: str, cls: type, req: _Request, src: str, audio: tuple[str, str] | None
) -> _Plan | None:
    """Tag the copy at ``tmp`` and verify it; returns the plan applied (None: nothing to do).

    Verification, all on the copy: (1) mutagen reads back exactly the tag state it was asked to
    write; (2) every tag nomarr does not own is unchanged; (3) a second plan against the copy is
    empty; (4) with ``audio`` (md5, demuxer), the audio packets hash as the original's did.
    """
    obj = _load_copy(tmp, cls, src)
    plan = _plan(obj, req)
    if plan is None:
        return None
    before = codec_for(obj).others(obj)
    mirrored = _apply(obj, plan, tmp)
    after = codec_for(obj).others(obj)
    if after != sorted(before + mirrored):
        raise TagError(src, "verify-failed", "edit would change tags nomarr does not own")
    expected = _state(obj)
    try:
        with timed("tag_write"):
            _save(obj, tmp)
    except Exception as e:
        raise TagError(src, "io", f"mutagen could not write the copy: {e}") from e
    with timed("tag_fsync"):
        _fsync_path(tmp)
    with timed("tag_verify"):
        back = _load_copy(tmp, cls, src)
    if _state(back) != expected or _plan(back, req) is not None:
        raise TagError(src, "verify-failed", "tags read back differ from the tags written")
    if audio is not None:
        try:
            with timed("tag_verify"):
                got, _ = _audio_md5(tmp, audio[1], src)
        except TagError as e:
            raise TagError(src, "verify-failed", f"audio of the copy unreadable: {e.detail}") from e
        if got != audio[0]:
            raise TagError(src, "verify-failed", "audio stream changed in the copy")
    return plan
