"""The library database (real SQLite + sqlite-vec) and chromaprint identity (real fpcalc/libchromaprint)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from nomarr import fingerprint as fpmod
from nomarr.fingerprint import (
    Fingerprint,
    bit_error_rate,
    fingerprint,
    fingerprint_lib,
    same_recording,
)
from nomarr.store import SCHEMA_VERSION, Analysis, Store, StoreError, enc_path

needs_fpcalc = pytest.mark.skipif(
    shutil.which("fpcalc") is None, reason="fpcalc (libchromaprint-tools) not installed"
)


def _analysis(rec: int, scores: dict[str, float]) -> Analysis:
    return Analysis(
        rec,
        "m1",
        "nom:onnx_e_1_m_1_",
        "abc",
        "balanced",
        [{"start": 0, "duration": None}],
        3,
        "CPU",
        scores,
    )


def test_schema_wal_and_reopen(tmp_path):
    db = tmp_path / "lib.db"
    with Store(db) as s:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.integrity_check() == "ok"
    with Store(db) as s:  # reopening runs no migration twice
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_named_migrations_upgrade_a_first_schema_database(tmp_path, monkeypatch):
    """A database made when the schema was one numbered step (user_version 1) opens with its data,
    gains only the steps it lacks, each once; a step this nomarr does not know is refused."""
    from nomarr.store import schema, sqlite3

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(schema.MIGRATIONS[0][1])
    con.execute("INSERT INTO recordings (id, fp_duration, created) VALUES (7, 12.5, 0)")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    extra = ("9999-test-step", "CREATE TABLE test_step (x INTEGER)")
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, extra])
    monkeypatch.setattr("nomarr.store.db.MIGRATIONS", schema.MIGRATIONS)
    with Store(db) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.schema()[0] == "0001-initial" and "9999-test-step" in s.schema()
        assert s.recording_fp_duration(7) == 12.5
        s.db.execute("INSERT INTO test_step VALUES (1)")
    with Store(db) as s:  # nothing applied twice (a second CREATE TABLE would fail)
        assert s.db.execute("SELECT count(*) FROM test_step").fetchone()[0] == 1
    monkeypatch.setattr("nomarr.store.db.MIGRATIONS", schema.MIGRATIONS[:-1])
    with pytest.raises(StoreError, match="9999-test-step"):
        Store(db)


def test_newer_schema_and_garbage_refused(tmp_path):
    db = tmp_path / "lib.db"
    with Store(db) as s:
        s.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(StoreError, match="newer"):
        Store(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable"):
        Store(junk)
    with pytest.raises(StoreError, match="no database"):
        Store(tmp_path / "absent.db", readonly=True)


def test_vectors_knn_cosine_and_gc(tmp_path):
    with Store(tmp_path / "lib.db") as s:
        st = os.stat(tmp_path)
        rng = np.random.default_rng(1)
        base = rng.normal(size=16).astype(np.float32)
        recs = []
        with s.tx():
            for i in range(20):
                rid = s.new_recording(90.0, [i, i + 1000])
                s.upsert_track(tmp_path / f"t{i}.mp3", st, recording_id=rid, status="ok")
                v = base * (1.0 if i == 0 else 0.1) + rng.normal(size=16).astype(np.float32) * (
                    i / 10
                )
                s.put_analysis(rid, _analysis(rid, {"happy": i / 20}), v)
                recs.append((rid, v))
        hits = s.knn("m1", recs[0][1], 5)
        assert hits[0][0] == recs[0][0] and hits[0][1] == pytest.approx(0.0, abs=1e-5)
        # cosine distance agrees with numpy
        q = recs[0][1]
        for rid, d in hits:
            v = dict(recs)[rid]
            assert d == pytest.approx(
                1 - np.dot(q, v) / np.linalg.norm(q) / np.linalg.norm(v), abs=1e-4
            )
        assert [d for _, d in hits] == sorted(d for _, d in hits)
        # replacing an analysis replaces its vector
        with s.tx():
            s.put_analysis(recs[0][0], _analysis(recs[0][0], {"happy": 1.0}), -recs[0][1])
        assert s.knn("m1", recs[0][1], 1)[0][0] != recs[0][0]
        labels, mat, ids = s.label_scores("m1")
        assert labels == ["happy"] and mat.shape == (20, 1)
        # a recording without files is collected with its vector
        with s.tx():
            s.delete_track(s.track_by_path(tmp_path / "t3.mp3").id)
            assert s.gc_recordings() == 1
        assert all(r != recs[3][0] for r, _ in s.knn("m1", recs[3][1], 20))


def test_non_utf8_paths_round_trip(tmp_path):
    name = os.fsdecode(b"caf\xe9-\xff.mp3")  # latin-1 bytes: not valid UTF-8
    p = tmp_path / name
    p.write_bytes(b"x")
    with Store(tmp_path / "lib.db") as s:
        with s.tx():
            tid = s.upsert_track(p, os.stat(p), status="ok")
        t = s.track(tid)
        assert os.fsencode(t.path) == enc_path(p)
        assert s.track_by_path(p).id == tid
        assert list(s.snapshot([str(tmp_path)])) == [enc_path(p)]


def test_snapshot_prefix_is_exact(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a0").mkdir()
    (tmp_path / "ab").mkdir()
    with Store(tmp_path / "lib.db") as s, s.tx():
        for d in ("a", "a0", "ab"):
            f = tmp_path / d / "x.mp3"
            f.write_bytes(b"x")
            s.upsert_track(f, os.stat(f), status="ok")
    with Store(tmp_path / "lib.db") as s:
        got = [os.fsdecode(p) for p in s.snapshot([str(tmp_path / "a")])]
        assert got == [str(tmp_path / "a" / "x.mp3")]
        assert len(s.tracks(under=[str(tmp_path / "a")])) == 1


def test_transaction_rolls_back(tmp_path):
    with Store(tmp_path / "lib.db") as s:
        with pytest.raises(RuntimeError), s.tx():
            s.new_recording(1.0, [1])
            raise RuntimeError("boom")
        assert s.counts()["recordings"] == 0


# -- fingerprints -----------------------------------------------------------------------------------


def test_bit_error_rate_alignment():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, 500, dtype=np.uint64).astype(np.uint32)
    assert bit_error_rate(a, a) == 0.0
    assert bit_error_rate(a[5:], a) == 0.0  # shifted start (encoder delay)
    noisy = a ^ (rng.random(500) < 0.05).astype(np.uint32)  # flip one bit in 5 % of items
    assert bit_error_rate(a, noisy) < 0.01
    other = rng.integers(0, 2**32, 500, dtype=np.uint64).astype(np.uint32)
    assert 0.4 < bit_error_rate(a, other) < 0.6
    assert bit_error_rate(a[:10], a[:10]) == 1.0  # too short to judge


def test_fpcalc_eof_status_is_tolerated(tmp_path, monkeypatch):
    """fpcalc 1.5.1 + FFmpeg 5 exits 3 after printing a complete fingerprint on short files."""
    script = tmp_path / "fpcalc"
    script.write_text(
        "#!/bin/sh\necho DURATION=12\necho FINGERPRINT=1,2,3,4\necho 'ERROR: Error decoding audio frame (End of file)' >&2\nexit 3\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("FPCALC", str(script))
    fp = fpmod.fingerprint(tmp_path / "any.mp3")
    assert fp.duration == 12 and list(fp.values) == [1, 2, 3, 4]
    script.write_text("#!/bin/sh\necho 'ERROR: Could not open the input file' >&2\nexit 2\n")
    with pytest.raises(fpmod.FingerprintError, match="Could not open"):
        fpmod.fingerprint(tmp_path / "any.mp3")


@needs_fpcalc
def test_reencodes_match_and_different_music_does_not(make_audio, tmp_path):
    from tests.conftest import encode, music_like

    sig = music_like(40, 44100, 2, seed=3)
    variants = [
        encode(tmp_path / f"v.{ext}", sig, 44100) for ext in ("mp3", "flac", "m4a", "ogg", "wma")
    ]
    other = make_audio("other.flac", seconds=40, seed=9)
    fps = [fingerprint(p) for p in variants]
    for f in fps[1:]:
        assert same_recording(fps[0], f), bit_error_rate(fps[0].values, f.values)
        assert len(fps[0].keys() & f.keys()) >= 2  # the index finds it
    assert not same_recording(fps[0], fingerprint(other))


@needs_fpcalc
def test_library_fingerprint_agrees_with_fpcalc(make_audio):
    """Without fpcalc we feed libchromaprint from our own decoder: the same identity."""
    p = make_audio("x.flac", seconds=30, seed=4)
    a, b = fingerprint(p), fingerprint_lib(str(p))
    assert bit_error_rate(a.values, b.values) < 0.05
    assert abs(a.duration - b.duration) < 1.0


def test_keys_are_a_stable_subset():
    fp = Fingerprint(
        1.0, (np.arange(10000, dtype=np.uint64) * 2654435761 % 2**32).astype(np.uint32)
    )
    k = fp.keys()
    assert 0 < len(k) < 10000 / 8
    assert k == Fingerprint(1.0, fp.values.copy()).keys()


def test_corpus_fingerprints_are_distinct(corpus):
    if shutil.which("fpcalc") is None:
        pytest.skip("fpcalc not installed")
    fps = {p.name: fingerprint(p) for p in sorted(Path(corpus).glob("sh*.ogg"))[:8]}
    names = list(fps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not same_recording(fps[a], fps[b]), (a, b)
