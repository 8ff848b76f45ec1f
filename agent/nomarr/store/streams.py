"""Streams: recordings the agent heard through the streaming-ingest API (docs/ingest.md) and holds
no file of — a streaming provider's track that Music Assistant played, say.

A stream row is the recording's identity for the outside world (provider and provider id, the
MusicBrainz recording id, the ISRC, what it is called) plus the Chromaprint of the PCM it was sent,
so a library file of the same audio scanned later joins the same recording and reuses its
analysis. Answers show a recording by a file where the library has one, else by its stream; a
recording a stream points to is kept when no file does (:meth:`RecordingsMixin.gc_recordings`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from nomarr.store.tracks import Track, TracksMixin

_STREAM_COLS = (
    "id, recording_id, provider, provider_id, mb_recording, isrc, title, artist, album, duration, "
    "sample_rate, channels, created"
)


def stream_track(row: Any) -> Track:
    """A stream row as an answer item (``kind="stream"``; ``id`` is the stream's id)."""
    (sid, rec, provider, pid, mbid, isrc, title, artist, album, dur, sr, ch, created) = row
    return Track(
        id=int(sid),
        path="",
        size=0,
        mtime_ns=0,
        dev=None,
        inode=None,
        duration=dur,
        container=None,
        codec="pcm",
        recording_id=int(rec),
        status="ok",
        error=None,
        title=title,
        artist=artist,
        album=album,
        mb_recording=mbid,
        isrc=isrc,
        kind="stream",
        stream={
            "id": int(sid),
            "provider": provider,
            "provider_id": pid,
            "sample_rate": sr,
            "channels": ch,
            "created": created,
        },
    )


class StreamsMixin(TracksMixin):
    """Queries on ``streams``, and answer items (files, else streams) per recording."""

    def items_of_recordings(
        self, rec_ids: list[int], *, files_only: bool = False
    ) -> dict[int, list[Track]]:
        """Present files per recording, and for recordings no present file holds, their stream:
        what turns KNN hits (recordings) into answer items."""
        out = self.tracks_of_recordings(rec_ids)
        if files_only:
            return out
        rest = [r for r in rec_ids if r not in out]
        if rest:
            out.update(self.streams_of_recordings(rest))
        return out

    def put_stream(
        self, rec_id: int, fingerprint: np.ndarray | None, **fields: Any
    ) -> tuple[int, bool]:
        """Store (or refresh) the stream row for a provider item; returns (stream id, created).

        One row per ``(provider, provider_id)`` when the provider id is known: streaming the same
        item again updates it (and may move it to another recording when the audio differs).
        """
        cols = {k: fields.get(k) for k in ("provider", "provider_id", "mb_recording", "isrc")}
        cols |= {k: fields.get(k) for k in ("title", "artist", "album", "duration")}
        cols |= {k: fields.get(k) for k in ("sample_rate", "channels")}
        fp = None if fingerprint is None else np.asarray(fingerprint, "<u4").tobytes()
        if cols["provider_id"] is not None:
            row = self.db.execute(
                "SELECT id FROM streams WHERE provider IS ? AND provider_id = ?",
                (cols["provider"], cols["provider_id"]),
            ).fetchone()
            if row is not None:
                sets = ", ".join(f"{k} = ?" for k in cols)
                self.db.execute(
                    f"UPDATE streams SET recording_id = ?, fingerprint = ?, {sets} WHERE id = ?",
                    (rec_id, fp, *cols.values(), row[0]),
                )
                return int(row[0]), False
        names = ", ".join(cols)
        cur = self.db.execute(
            f"INSERT INTO streams (recording_id, fingerprint, created, {names}) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(cols))})",
            (rec_id, fp, time.time(), *cols.values()),
        )
        return int(cur.lastrowid), True

    def stream(self, stream_id: int) -> Track | None:
        """A stream by id, as an answer item."""
        row = self.db.execute(
            f"SELECT {_STREAM_COLS} FROM streams WHERE id = ?", (stream_id,)
        ).fetchone()
        return stream_track(row) if row else None

    def streams_of_recordings(self, rec_ids: Iterable[int]) -> dict[int, list[Track]]:
        """Stream items per recording (for recordings no present file holds)."""
        ids = list(rec_ids)
        out: dict[int, list[Track]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = (
                f"SELECT {_STREAM_COLS} FROM streams WHERE recording_id IN "
                f"({','.join('?' * len(chunk))}) ORDER BY id"
            )
            for r in self.db.execute(q, chunk):
                t = stream_track(r)
                out.setdefault(t.recording_id or 0, []).append(t)
        return out

    def lookup_streams(
        self, *, provider_id: str | None = None, mbid: str | None = None, isrc: str | None = None
    ) -> list[Track]:
        """Streams by provider item id, MusicBrainz recording id or ISRC."""
        col, val = (
            ("provider_id", provider_id)
            if provider_id
            else ("mb_recording", mbid)
            if mbid
            else ("isrc", isrc)
        )
        if not val:
            return []
        return [
            stream_track(r)
            for r in self.db.execute(
                f"SELECT {_STREAM_COLS} FROM streams WHERE {col} = ? ORDER BY id", (val,)
            )
        ]

    def stream_fingerprints(self, rec_id: int) -> list[np.ndarray]:
        """Chromaprints of the streams of a recording (matched like files' fingerprints)."""
        return [
            np.frombuffer(r[0], dtype="<u4")
            for r in self.db.execute(
                "SELECT fingerprint FROM streams WHERE recording_id = ? AND fingerprint IS NOT NULL "
                "LIMIT 3",
                (rec_id,),
            )
        ]

    def delete_stream(self, stream_id: int) -> bool:
        """Forget a stream (its recording goes at the next collection unless a file holds it)."""
        return self.db.execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount > 0

    def count_streams(self) -> int:
        """How many streams are stored."""
        return int(self.db.execute("SELECT count(*) FROM streams").fetchone()[0])
