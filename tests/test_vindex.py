"""The agent's in-memory vector index answers exactly as sqlite-vec does, and follows the database."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from nomarr.store import Analysis, Store
from nomarr.vindex import VectorIndex


def _fill(st: Store, ids: range, rng: np.random.Generator, dim: int = 24) -> None:
    with st.tx():
        for _ in ids:
            rid = st.new_recording(30.0, [])
            st.put_analysis(
                rid,
                Analysis(
                    rid,
                    "m1",
                    "nom:x_",
                    "p",
                    "full",
                    [],
                    1,
                    None,
                    {"happy": float(rng.random()), "sad": float(rng.random())},
                ),
                rng.standard_normal(dim).astype(np.float32),
            )


def test_same_answers_as_vec0_and_follows_commits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    db = tmp_path / "v.db"
    writer = Store(db)
    _fill(writer, range(300), rng)
    vi = VectorIndex(str(db), min_interval_s=0.0)
    reader = Store(db, readonly=True)
    for _ in range(20):
        q = rng.standard_normal(24).astype(np.float32)
        ref = reader.knn("m1", q, 15)
        got = vi.knn("m1", q, 15)
        assert [r for r, _ in got] == [r for r, _ in ref]
        assert np.allclose([d for _, d in got], [d for _, d in ref], atol=1e-5)
    labels, mat, recs = vi.label_scores("m1")
    ref_labels, ref_mat, ref_recs = reader.label_scores("m1")
    assert labels == ref_labels and recs == ref_recs  # no tracks point at them: both empty
    # another connection commits: a cheap copy is rebuilt before the very next answer
    q = rng.standard_normal(24).astype(np.float32)
    rid = _add(writer, q)
    assert vi.knn("m1", q, 1)[0][0] == rid
    assert vi.knn("m1", q, 1)[0][1] < 1e-5
    # a reader with the index attached answers from it
    reader.vector_index = vi
    assert reader.knn("m1", q, 3) == vi.knn("m1", q, 3)
    vi.idle_unload_s = 0.0
    time.sleep(0.01)
    assert vi.unload_idle() >= 1 and vi.stats() == {}
    assert reader.knn("m1", q, 1)[0][0] == rid  # rebuilt on demand
    vi.close()
    reader.close()
    writer.close()


def _add(st: Store, vec: np.ndarray) -> int:
    with st.tx():
        rid = st.new_recording(30.0, [])
        st.put_analysis(rid, Analysis(rid, "m1", "nom:x_", "p", "full", [], 1, None, {}), vec)
    return rid


def test_expensive_copies_are_stale_by_at_most_max_stale_s(tmp_path: Path) -> None:
    """A copy too slow to rebuild per query answers from the previous state while a rebuild runs
    in the background, but never from a state older than ``max_stale_s``."""
    rng = np.random.default_rng(3)
    db = tmp_path / "v.db"
    writer = Store(db)
    _fill(writer, range(50), rng)
    # every build counts as expensive; background rebuilds held back for a long time
    vi = VectorIndex(str(db), sync_build_s=-1.0, min_interval_s=3600.0, max_stale_s=3600.0)
    vi.knn("m1", rng.standard_normal(24).astype(np.float32), 1)
    q = rng.standard_normal(24).astype(np.float32)
    rid = _add(writer, q)
    assert vi.knn("m1", q, 1)[0][0] != rid  # the previous copy: no rebuild allowed yet
    vi.max_stale_s = 0.0  # now the copy is older than the bound: the query waits for a rebuild
    assert vi.knn("m1", q, 1)[0][0] == rid
    # within the bound, a background rebuild catches up without any query waiting for it
    vi.max_stale_s, vi.min_interval_s = 3600.0, 0.0
    q2 = rng.standard_normal(24).astype(np.float32)
    rid2 = _add(writer, q2)
    deadline = time.monotonic() + 10
    while vi.knn("m1", q2, 1)[0][0] != rid2:
        assert time.monotonic() < deadline, "the background rebuild never landed"
        time.sleep(0.02)
    vi.close()
    writer.close()


def test_unknown_space_and_bad_vectors(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    st = Store(db)
    _fill(st, range(5), np.random.default_rng(1))
    vi = VectorIndex(str(db))
    assert vi.knn("nope", np.ones(24, dtype=np.float32), 3) == []
    import pytest

    with pytest.raises(ValueError):
        vi.knn("m1", np.ones(7, dtype=np.float32), 3)
    with pytest.raises(ValueError):
        vi.knn("m1", np.zeros(24, dtype=np.float32), 3)
    assert len(vi.knn("m1", np.ones(24, dtype=np.float32), 100)) == 5
    vi.close()
    st.close()
