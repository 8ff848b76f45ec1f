"""The library database: SQLite in WAL mode with sqlite-vec for the embeddings.

One file holds everything a rescan, a query or the API needs: which files exist (and how they looked
when last seen), which recording each file is (chromaprint identity, so a moved or re-encoded file
reuses its analysis), each recording's analyses, what was written into each file, the per-library
tier calibration, and one ``vec0`` table per embedding space for cosine KNN.

Crash safety comes from SQLite itself: every state change the scanner makes for one file is one
transaction, WAL with ``synchronous=NORMAL`` keeps committed transactions across a process kill,
and the schema is versioned (``PRAGMA user_version``) with forward migrations run in a transaction.

Paths are stored as bytes (``os.fsencode``) so that file names that are not valid UTF-8 round-trip
exactly; they are decoded with ``os.fsdecode`` on the way out.
"""

from __future__ import annotations

from nomarr.store.analyses import AnalysesMixin, Analysis
from nomarr.store.browse import BrowseMixin
from nomarr.store.db import (
    SCHEMA_VERSION,
    Database,
    StoreError,
    dec_path,
    enc_path,
    space_name,
    sqlite3,
)
from nomarr.store.descriptors import DSP_ID, DescriptorsMixin
from nomarr.store.listens import Listen, ListenArrays, ListensMixin
from nomarr.store.recordings import RecordingsMixin
from nomarr.store.shared import SharedMixin, SharedRecord
from nomarr.store.streams import StreamsMixin
from nomarr.store.tracks import Track, TracksMixin
from nomarr.store.writes import WritesMixin

__all__ = [
    "DSP_ID",
    "SCHEMA_VERSION",
    "Analysis",
    "Listen",
    "ListenArrays",
    "Store",
    "StoreError",
    "SharedRecord",
    "Track",
    "dec_path",
    "enc_path",
    "space_name",
    "sqlite3",
]


class Store(
    DescriptorsMixin,
    StreamsMixin,
    TracksMixin,
    RecordingsMixin,
    AnalysesMixin,
    WritesMixin,
    SharedMixin,
    BrowseMixin,
    ListensMixin,
    Database,
):
    """A connection to one library database. Not shared between threads: open one per thread.

    One class per table family (``store/tracks.py``, ``recordings.py``, ``analyses.py``,
    ``writes.py``, ``shared.py``, ``descriptors.py``, ``browse.py``, ``listens.py``,
    ``streams.py``) over one connection (``store/db.py``); a new feature adds its mixin here and
    its named migration to ``store/schema.py``.
    """
