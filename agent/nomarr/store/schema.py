"""The database schema as a list of named migrations, applied in order and each exactly once.

Named rather than numbered so that features developed side by side (descriptors, listening
history, shared analyses…) each add their own entry without fighting over the next number: a
database records the names it has applied (table ``migrations``), a new nomarr applies the ones it
lacks in list order, each in one transaction, and an older nomarr refuses a database that has
applied a name it does not know. Never edit or reorder an entry that has shipped: append.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001-initial",
        """
    CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        fp_duration REAL,
        created REAL NOT NULL
    );
    CREATE TABLE tracks (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        dev INTEGER, inode INTEGER,
        duration REAL, container TEXT, codec TEXT, sample_rate INTEGER, channels INTEGER,
        fingerprint BLOB,
        recording_id INTEGER REFERENCES recordings(id) ON DELETE SET NULL,
        mb_recording TEXT, mb_track TEXT, mb_album TEXT, mb_artist TEXT, isrc TEXT,
        title TEXT, artist TEXT, album TEXT,
        status TEXT NOT NULL DEFAULT 'new',   -- new | ok | failed | missing
        error TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE INDEX tracks_recording ON tracks(recording_id);
    CREATE INDEX tracks_inode ON tracks(dev, inode);
    CREATE INDEX tracks_mbid ON tracks(mb_recording);
    CREATE INDEX tracks_isrc ON tracks(isrc);
    CREATE INDEX tracks_status ON tracks(status);
    CREATE TABLE fp_index (
        key INTEGER NOT NULL,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        PRIMARY KEY (key, recording_id)
    ) WITHOUT ROWID;
    CREATE INDEX fp_index_recording ON fp_index(recording_id);
    CREATE TABLE analyses (
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        prefix TEXT NOT NULL,
        provenance TEXT NOT NULL,
        profile TEXT NOT NULL,
        windows TEXT NOT NULL,
        n_patches INTEGER NOT NULL,
        provider TEXT,
        scores TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (recording_id, model_id)
    );
    CREATE TABLE spaces (
        name TEXT PRIMARY KEY,
        model_id TEXT NOT NULL,
        dim INTEGER NOT NULL
    );
    CREATE TABLE writes (
        track_id INTEGER PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
        tags TEXT NOT NULL,
        tags_hash TEXT NOT NULL,
        mood TEXT,
        method TEXT,
        written REAL NOT NULL
    );
    CREATE TABLE tiers (
        model_id TEXT NOT NULL,
        label TEXT NOT NULL,
        high REAL NOT NULL,
        medium REAL NOT NULL,
        n INTEGER NOT NULL,
        computed REAL NOT NULL,
        PRIMARY KEY (model_id, label)
    );
    CREATE TABLE scans (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL,
        roots TEXT NOT NULL,
        summary TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    ),
    (
        "0002-shared-analyses",
        """
    CREATE TABLE shared_records (
        id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,      -- sha256 of the signed record body: importing twice adds nothing
        fp_duration REAL NOT NULL,
        fingerprint BLOB NOT NULL,        -- raw chromaprint, uint32 little-endian
        duration REAL NOT NULL,
        signer TEXT NOT NULL,             -- key id of the agent that signed the record
        import_id INTEGER NOT NULL REFERENCES shared_imports(id),
        analyses TEXT NOT NULL,           -- the validated analyses, as in the bundle (JSON)
        imported REAL NOT NULL,
        adopted INTEGER REFERENCES recordings(id) ON DELETE SET NULL
    );
    CREATE TABLE shared_fp_index (
        key INTEGER NOT NULL,
        record_id INTEGER NOT NULL REFERENCES shared_records(id) ON DELETE CASCADE,
        PRIMARY KEY (key, record_id)
    ) WITHOUT ROWID;
    CREATE INDEX shared_fp_index_record ON shared_fp_index(record_id);
    CREATE INDEX shared_records_adopted ON shared_records(adopted);
    CREATE TABLE shared_imports (
        id INTEGER PRIMARY KEY,
        bundle TEXT NOT NULL,             -- the bundle's id (from its signed header)
        signer TEXT NOT NULL,
        agent_id TEXT,
        created REAL,
        imported REAL NOT NULL,
        summary TEXT NOT NULL
    );
    """,
    ),
    (
        "0003-analysis-coverage",
        """
    -- whether the analysis saw all of its planned audio (a damaged or truncated file decodes
    -- only part of it): a partial analysis never stands for a complete one (docs/reliability.md)
    ALTER TABLE analyses ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE analyses ADD COLUMN decoded_s REAL;
    """,
    ),
    (
        "0004-write-failures",
        """
    -- a file whose tags cannot be written for a reason of its own (audio that cannot be read to
    -- its end, so no write can be verified): remembered with its size and mtime so an unchanged
    -- file is not retried every scan
    CREATE TABLE write_failures (
        track_id INTEGER PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        reason TEXT NOT NULL,
        failed REAL NOT NULL
    );
    """,
    ),
    # DSP descriptors (tempo, key, loudness, energy, regions) and the per-track timeline, one row
    # per recording like analyses: the columns queries filter on, the whole document as JSON.
    # writes.std remembers the standard fields (BPM, key, ReplayGain) nomarr last wrote, for the
    # ownership rule.
    (
        "0005-descriptors",
        """
    CREATE TABLE descriptors (
        recording_id INTEGER PRIMARY KEY REFERENCES recordings(id) ON DELETE CASCADE,
        provenance TEXT NOT NULL,
        bpm REAL, bpm_confidence REAL,
        key TEXT, camelot TEXT, key_strength REAL,
        energy REAL, danceability REAL,
        lufs REAL, true_peak REAL,
        doc TEXT NOT NULL,
        timeline BLOB,
        created REAL NOT NULL
    );
    CREATE INDEX descriptors_bpm ON descriptors(bpm);
    CREATE INDEX descriptors_camelot ON descriptors(camelot);
    ALTER TABLE writes ADD COLUMN std TEXT;
    """,
    ),
    (
        "0100-listens",
        # What people listen to (docs/listens.md). ``user`` is the user id as the source names it;
        # ``dedup`` makes a replayed import add nothing. The external ids stay beside the match so
        # a listen of a recording the library gains later is matched then (``recording_id`` is set
        # NULL when its recording is collected, and matched again on the next pass).
        """
    CREATE TABLE listens (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        ts REAL NOT NULL,
        source TEXT NOT NULL,
        dedup TEXT NOT NULL,
        recording_id INTEGER REFERENCES recordings(id) ON DELETE SET NULL,
        match TEXT,
        mb_recording TEXT, isrc TEXT, provider_id TEXT,
        artist TEXT, title TEXT, album TEXT, duration REAL,
        seconds REAL,
        outcome TEXT NOT NULL,
        estimated INTEGER NOT NULL DEFAULT 0,
        UNIQUE (user, dedup)
    );
    CREATE INDEX listens_user_ts ON listens(user, ts);
    CREATE INDEX listens_recording ON listens(recording_id);
    CREATE TABLE favourites (
        user TEXT NOT NULL,
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        recording_id INTEGER REFERENCES recordings(id) ON DELETE SET NULL,
        match TEXT,
        mb_recording TEXT, isrc TEXT, provider_id TEXT,
        artist TEXT, title TEXT, album TEXT, duration REAL,
        score INTEGER NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (user, source, key)
    );
    CREATE INDEX favourites_recording ON favourites(recording_id);
    CREATE TABLE play_counters (
        user TEXT NOT NULL,
        source TEXT NOT NULL,
        item TEXT NOT NULL,
        plays INTEGER NOT NULL,
        skips INTEGER NOT NULL,
        last_played REAL,
        PRIMARY KEY (user, source, item)
    ) WITHOUT ROWID;
    CREATE TABLE listen_sources (
        user TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (user, source)
    );
    CREATE TABLE taste_profiles (
        user TEXT NOT NULL,
        space TEXT NOT NULL,
        version TEXT NOT NULL,
        profile BLOB NOT NULL,
        computed REAL NOT NULL,
        PRIMARY KEY (user, space)
    );
    CREATE TABLE listen_versions (
        user TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        rewrites INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
    ),
    (
        "0101-streams",
        # Recordings heard as a stream (the streaming-ingest API) that no library file holds: their
        # identity (external ids and the PCM's Chromaprint) lives here, and a recording a stream
        # row points to is not collected when no file points to it (docs/ingest.md).
        """
    CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        provider TEXT,
        provider_id TEXT,
        mb_recording TEXT,
        isrc TEXT,
        title TEXT, artist TEXT, album TEXT,
        duration REAL,
        sample_rate INTEGER,
        channels INTEGER,
        fingerprint BLOB,
        created REAL NOT NULL
    );
    CREATE UNIQUE INDEX streams_provider ON streams(provider, provider_id)
        WHERE provider_id IS NOT NULL;
    CREATE INDEX streams_recording ON streams(recording_id);
    CREATE INDEX streams_mbid ON streams(mb_recording);
    CREATE INDEX streams_isrc ON streams(isrc)
    """,
    ),
    (
        "0102-library-version",
        # A counter that moves only when what answers are made of moves (analyses and their
        # vectors, which files are present for which recording, streams), kept by triggers. The
        # in-memory vector copies follow it instead of SQLite's data_version, which also moves for
        # every listen stored: with listens arriving per track played, each would otherwise cost
        # a rebuild of the copies (seconds at 100k tracks) before the next answer.
        """
    CREATE TRIGGER library_version_analyses_insert AFTER INSERT ON analyses
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_analyses_update AFTER UPDATE ON analyses
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_analyses_delete AFTER DELETE ON analyses
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_tracks_insert AFTER INSERT ON tracks
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_tracks_delete AFTER DELETE ON tracks
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_tracks_update AFTER UPDATE ON tracks
    WHEN OLD.status IS NOT NEW.status OR OLD.recording_id IS NOT NEW.recording_id
        OR OLD.title IS NOT NEW.title OR OLD.artist IS NOT NEW.artist
        OR OLD.duration IS NOT NEW.duration OR OLD.mb_recording IS NOT NEW.mb_recording
        OR OLD.isrc IS NOT NEW.isrc OR OLD.path IS NOT NEW.path
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_streams_insert AFTER INSERT ON streams
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_streams_update AFTER UPDATE ON streams
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END;
    CREATE TRIGGER library_version_streams_delete AFTER DELETE ON streams
    BEGIN INSERT INTO meta (key, value) VALUES ('library_version', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1; END
    """,
    ),
]

# The web console's library table: full-text search over title, artist, album and path (prefix
# queries, diacritics folded), kept in step with ``tracks`` by triggers. External content: the
# index holds only the tokens, ``tracks`` the text. ``path`` is stored as bytes; its text form is
# what is indexed (non-UTF-8 bytes become U+FFFD, still searchable by the rest of the name).
MIGRATIONS.append(
    (
        "0006-console-tracks-fts",
        """
    CREATE VIRTUAL TABLE tracks_fts USING fts5(
        title, artist, album, path,
        content='tracks', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2', prefix='1 2 3'
    );
    INSERT INTO tracks_fts (rowid, title, artist, album, path)
        SELECT id, title, artist, album, CAST(path AS TEXT) FROM tracks;
    CREATE TRIGGER tracks_fts_insert AFTER INSERT ON tracks BEGIN
        INSERT INTO tracks_fts (rowid, title, artist, album, path)
        VALUES (new.id, new.title, new.artist, new.album, CAST(new.path AS TEXT));
    END;
    CREATE TRIGGER tracks_fts_delete AFTER DELETE ON tracks BEGIN
        INSERT INTO tracks_fts (tracks_fts, rowid, title, artist, album, path)
        VALUES ('delete', old.id, old.title, old.artist, old.album, CAST(old.path AS TEXT));
    END;
    CREATE TRIGGER tracks_fts_update AFTER UPDATE OF title, artist, album, path ON tracks BEGIN
        INSERT INTO tracks_fts (tracks_fts, rowid, title, artist, album, path)
        VALUES ('delete', old.id, old.title, old.artist, old.album, CAST(old.path AS TEXT));
        INSERT INTO tracks_fts (rowid, title, artist, album, path)
        VALUES (new.id, new.title, new.artist, new.album, CAST(new.path AS TEXT));
    END;
    CREATE INDEX analyses_created ON analyses(created)
    """,
    )
)

# Imported records keep the DSP descriptors they carried (bundle version 2): the document as JSON
# (its provenance inside) and the timeline blob, NULL where the record had none. Adoption stores
# them with the analyses, so an adopted recording is as current as an analysed one.
MIGRATIONS.append(
    (
        "0007-shared-descriptors",
        """
    ALTER TABLE shared_records ADD COLUMN descriptors TEXT;
    ALTER TABLE shared_records ADD COLUMN timeline BLOB
    """,
    )
)
