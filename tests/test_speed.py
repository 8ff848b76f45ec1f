"""Issue 15's structure: one decode per file, its consumers, the stream start, typed worker results,
shipped patches, cross-file batching (central inference, on the CPU provider) and the CPU-build
qualification rule."""

from __future__ import annotations

import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from nomarr.audio.decode import load_mono
from nomarr.audio.reader import Block, FileReader, HeadBuffer
from nomarr.fingerprint import (
    ChromaprintFeed,
    bit_error_rate,
    fingerprint_fpcalc,
    fingerprint_lib,
    fpcalc_path,
)
from nomarr.models import openvino as ovb
from nomarr.models.registry import Registry
from nomarr.pipeline.analyze import Analyzer, ModelSet
from nomarr.pipeline.prepare import prepare
from nomarr.pipeline.profiles import get_profile
from nomarr.results import WorkerResult
from nomarr.scan.central import CentralInference

from .conftest import encode, music_like

KEY = (16000, 512, 256, 96, 187, 187)


def _crc_table() -> list[int]:
    t = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        t.append(r & 0xFFFFFFFF)
    return t


def cut_ogg(src: Path, dst: Path, k: int) -> None:
    """An Ogg stream as cut out of a longer one: every audio page's granule position lowered by
    ``k``, so a conforming decoder must drop the first ``k`` samples (CRCs recomputed)."""
    table = _crc_table()
    d = bytearray(src.read_bytes())
    i = 0
    while i < len(d):
        assert d[i : i + 4] == b"OggS"
        nseg = d[i + 26]
        size = 27 + nseg + sum(d[i + 27 : i + 27 + nseg])
        g = struct.unpack_from("<q", d, i + 6)[0]
        if g > 0:
            struct.pack_into("<q", d, i + 6, max(0, g - k))
        struct.pack_into("<I", d, i + 22, 0)
        c = 0
        for x in d[i : i + size]:
            c = ((c << 8) & 0xFFFFFFFF) ^ table[((c >> 24) & 0xFF) ^ x]
        struct.pack_into("<I", d, i + 22, c)
        i += size
    dst.write_bytes(bytes(d))


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    ms = ModelSet(Registry(), ["msd-musicnn-1"], provider="CPUExecutionProvider", threads=1)
    return Analyzer(ms, get_profile("balanced"), batch_size=4)


@pytest.fixture(scope="module")
def long_track(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 160 s stereo MP3: long enough for the balanced profile's windows and tail seeks."""
    p = tmp_path_factory.mktemp("long") / "long.mp3"
    encode(p, music_like(160.0, 44100, 2, seed=7), 44100)
    return p


def test_cut_ogg_stream_drops_samples_before_time_zero(tmp_path: Path) -> None:
    src = tmp_path / "a.ogg"
    encode(src, music_like(6.0, 44100, 2, seed=3), 44100)
    cut = tmp_path / "cut.ogg"
    cut_ogg(src, cut, 1000)
    a = load_mono(src, sr=44100)
    b = load_mono(cut, sr=44100)
    assert a.shape[0] - b.shape[0] == 1000
    assert np.array_equal(a[1000:], b)


def test_reader_feeds_consumers_one_continuous_read(long_track: Path) -> None:
    """Every consumer sees the same audio: native and model rate, continuous, timestamped; the
    head buffer equals a separate decode of the same stretch."""

    class Recorder:
        stage = "test"

        def __init__(self) -> None:
            self.blocks: list[Block] = []

        def feed(self, block: Block) -> bool:
            self.blocks.append(block)
            return True

        def finish(self) -> None:
            self.finished = True

    rec = Recorder()
    head = HeadBuffer(30.0, 16000)
    with FileReader(long_track) as r:
        left = r.read(30.0, [head, rec])
        assert rec in left and head not in left and rec.finished
    t = [b.native_t for b in rec.blocks]
    n = [b.native.shape[0] / b.native_rate for b in rec.blocks]
    assert all(abs(t[i] + n[i] - t[i + 1]) < 1e-6 for i in range(len(t) - 1))  # no gap
    native = np.concatenate([b.native for b in rec.blocks])
    assert np.array_equal(native, load_mono(long_track, sr=44100)[: native.shape[0]])
    model = np.concatenate([b.model for b in rec.blocks])
    assert np.array_equal(model, head.samples)
    ref = load_mono(long_track, sr=16000)[: model.shape[0] - 200]
    assert np.abs(model[: ref.shape[0]] - ref).max() < 1e-6  # one stream, one resampler


def test_chromaprint_fed_by_our_decode_matches_fpcalc(long_track: Path) -> None:
    fp = fingerprint_lib(str(long_track))
    assert fp.values.dtype == np.uint32 and fp.values.size > 900
    assert abs(fp.duration - 160.0) < 0.1  # the file's duration, as fpcalc reports it
    if fpcalc_path():
        ref = fingerprint_fpcalc(str(long_track))
        assert ref.values.size == fp.values.size
        assert bit_error_rate(ref.values, fp.values) < 0.02


def test_prepare_decides_after_the_fingerprint(long_track: Path) -> None:
    """``decide`` sees the fingerprint before any mel is computed; saying no stops there."""
    seen = []

    def no(prep):
        seen.append(prep.fp)
        return False

    prep = prepare(str(long_track), get_profile("balanced"), [KEY], fingerprint=True, decide=no)
    assert prep.stopped and seen[0] is not None and prep.n_patches == 0 and not prep.windows
    assert prep.fp is not None and isinstance(ChromaprintFeed(None).error, str | None)


def test_shipped_patches_give_the_streamed_analysis(analyzer: Analyzer, long_track: Path) -> None:
    """identify-then-infer (patches shipped between processes) == analyze (streamed)."""
    streamed = analyzer.analyze(long_track).results["msd-musicnn-1"]
    prep = analyzer.prepare(long_track, fingerprint=True, decide=lambda p: True)
    assert [(w.start, w.duration) for w in prep.windows][0][1] == 90.0 and len(prep.windows) == 3
    prep = pickle.loads(pickle.dumps(prep))
    shipped = analyzer.infer(prep).results["msd-musicnn-1"]
    assert shipped.n_patches == streamed.n_patches == 40
    a = np.array(list(shipped.scores.values()))
    b = np.array(list(streamed.scores.values()))
    assert np.abs(a - b).max() < 1e-6


def test_worker_result_is_picklable_and_typed(tmp_path: Path, analyzer: Analyzer) -> None:
    from nomarr import workers

    p = tmp_path / "x.flac"
    encode(p, music_like(8.0, 44100, 2, seed=5), 44100)
    workers._W.update(analyzer=analyzer, db=str(tmp_path / "none.db"), want={}, store=None)
    try:
        ident = workers.process_file(str(p), "identify")
        assert isinstance(ident, WorkerResult) and ident.kind == "identified"
        assert ident.facts is not None and ident.fp is not None and ident.prepared is not None
        ident = pickle.loads(pickle.dumps(ident))
        res = workers.infer_job(str(p), ident.prepared).with_identity(ident)
        assert res.kind == "analysed" and res.outputs[0].model_id == "msd-musicnn-1"
        assert res.facts == ident.facts and res.fp is not None
        assert {"decode", "mel", "fingerprint", "inference"} <= set(res.stages)
        bad = workers.process_file(str(tmp_path / "gone.mp3"), "identify")
        assert bad.kind == "failed" and bad.vanished
    finally:
        workers._W.clear()


def test_central_inference_batches_across_files(analyzer: Analyzer, tmp_path: Path) -> None:
    """One session for several files' patches (the GPU layout, here on the CPU provider): the
    same numbers as one file at a time, and files share model runs."""
    preps, alone = [], []
    for i in range(3):
        p = tmp_path / f"f{i}.wav"
        encode(p, music_like(7.0 + i, 44100, 1, seed=10 + i), 44100)
        preps.append(analyzer.prepare(p))
        alone.append(analyzer.infer(preps[-1]).results["msd-musicnn-1"])
    joint = analyzer.infer_many(preps)
    for (fa, st), ref in zip(joint, alone, strict=True):
        r = fa.results["msd-musicnn-1"]
        assert r.n_patches == ref.n_patches and st.t["inference"] > 0
        a, b = np.array(list(r.scores.values())), np.array(list(ref.scores.values()))
        assert np.abs(a - b).max() < 1e-5
    central = CentralInference(analyzer)
    central._cv.acquire()  # hold the thread so that all three arrive before it runs
    futs = [central.submit(str(tmp_path / f"f{i}.wav"), p) for i, p in enumerate(preps)]
    central._cv.release()
    results = [f.result(timeout=60) for f in futs]
    central.close()
    assert [r.kind for r in results] == ["analysed"] * 3
    assert central.batches == [3]


def test_central_scan_matches_worker_scan(tmp_path: Path, capsys) -> None:
    from .test_scan import scan

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        encode(lib / f"t{i}.flac", music_like(12.0, 44100, 2, seed=20 + i), 44100)
    shutil.copy(lib / "t0.flac", lib / "copy.flac")
    a = scan(capsys, lib, tmp_path / "a.db", "--no-write", "--inference", "central", workers=2)
    b = scan(capsys, lib, tmp_path / "b.db", "--no-write", workers=0)
    assert (
        (a["analysed"], a["reused"], a["failed"])
        == (3, 1, 0)
        == (b["analysed"], b["reused"], b["failed"])
    )
    assert a["time"]["central_batches"] >= 1
    from nomarr.store import Store

    with (
        Store(tmp_path / "a.db", readonly=True) as sa,
        Store(tmp_path / "b.db", readonly=True) as sb,
    ):
        for t in sa.tracks():
            x = sa.analyses(t.recording_id)["msd-musicnn-1"].scores
            u = sb.track_by_path(t.path)
            y = sb.analyses(u.recording_id)["msd-musicnn-1"].scores
            assert max(abs(x[k] - y[k]) for k in x) < 1e-5


def test_cpu_build_rule() -> None:
    """A build qualifies only when faster by 5 % and within the policy's drift."""
    fast_exact = {"speedup": 1.3, "drift": 3e-7, "error": None}
    fast_drifting = {"speedup": 3.1, "drift": 2.8e-3, "error": None}
    slow = {"speedup": 1.01, "drift": 0.0, "error": None}
    assert ovb.passes(fast_exact, ovb.MAX_DRIFT["exact"]) == (True, None)
    ok, why = ovb.passes(fast_drifting, ovb.MAX_DRIFT["exact"])
    assert not ok and "drift" in why
    assert ovb.passes(fast_drifting, ovb.MAX_DRIFT["reduced"])[0]
    assert not ovb.passes(slow, 1.0)[0]
    assert not ovb.passes({"error": "boom"}, 1.0)[0]


def test_cpu_build_choice_is_measured_and_cached(tmp_path: Path, monkeypatch) -> None:
    """With OpenVINO installed: each build is measured once, cached, and the choice follows the
    policy; ``ort`` never uses one."""
    if ovb.runtime() is None:
        pytest.skip("openvino not installed (pip install 'nomarr[openvino]')")
    from nomarr.models.backends import choose_provider
    from nomarr.models.runtime import ProviderSelector

    reg = Registry()
    m = reg.get("msd-musicnn-1")
    path = reg.require(m)
    sha = reg.verify(m)[0].actual_sha256 or ""
    monkeypatch.setenv("NOMARR_PRECISION", "exact")
    calls = []
    real = ovb.qualify
    monkeypatch.setattr(ovb, "qualify", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    sel = ProviderSelector(tmp_path / "c.json")
    c = choose_provider(m, path, sha, selector=sel)
    assert sorted(calls) == sorted(ovb.precisions())
    builds = {t["provider"]: t for t in c.tried if "speedup" in t}
    assert set(builds) == {ovb.provider_name(p) for p in ovb.precisions()}
    f32 = builds[ovb.provider_name("f32")]
    assert f32["drift"] < 1e-4  # fp32 is fp32
    if c.provider != "CPUExecutionProvider":
        assert c.speedup >= ovb.MIN_SPEEDUP and c.drift <= ovb.MAX_DRIFT["exact"]
    again = choose_provider(m, path, sha, selector=ProviderSelector(tmp_path / "c.json"))
    assert again.provider == c.provider and len(calls) == len(ovb.precisions())  # cached
    monkeypatch.setenv("NOMARR_PRECISION", "ort")
    assert choose_provider(m, path, sha, selector=sel).provider == "CPUExecutionProvider"
