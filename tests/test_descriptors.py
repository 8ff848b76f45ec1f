"""DSP descriptors: tempo, key, loudness, energy, regions, timeline; hard input; the tags and
standard fields they produce; the store migration. Real signals (synthetic music with known truth,
the shared corpus), real encoders, real mutagen/TagLib."""

from __future__ import annotations

import json
import sqlite3

import mutagen
import numpy as np
import pytest
import soxr
import taglib
from mutagen.mp4 import AtomDataType, MP4FreeForm
from nomarr.analyzers import DescriptorRun, descriptor_tags
from nomarr.analyzers.key import camelot_of, compatible, key_name, open_key_of, parse_key
from nomarr.analyzers.loudness import LoudnessMeter
from nomarr.analyzers.timeline import Timeline
from nomarr.tagio import read_tags, write_tags

from tests.conftest import encode
from tests.synth import song

SR = 44100


def describe(x: np.ndarray, sr: int = SR, loudness: bool = True):
    """Run the analyzers as the pipeline does: 16 kHz mono blocks plus native blocks."""
    mono = x.mean(axis=0) if x.ndim == 2 else x
    m16 = soxr.resample(mono.astype(np.float32), sr, 16000, quality="HQ")
    run = DescriptorRun(loudness=loudness)
    for i in range(0, m16.size, 20000):
        run.feed(m16[i : i + 20000], 16000, i / 16000)
    nat = x if x.ndim == 2 else x[None, :]
    for i in range(0, nat.shape[1], 65536):
        run.feed_native(nat[:, i : i + 65536], sr, i / sr)
    return run.finish(nat.shape[1] / sr, True)


@pytest.mark.parametrize(
    "bpm,tonic,mode,timbre,pattern",
    [
        (128.0, 9, "minor", "saw", "four"),
        (96.0, 2, "major", "pluck", "rock"),
        (75.0, 7, "major", "organ", "four"),
    ],
)
def test_synthetic_truth(bpm, tonic, mode, timbre, pattern):
    d = describe(song(bpm, tonic, mode, timbre=timbre, pattern=pattern, seconds=30, seed=3))
    assert d.tempo.bpm == pytest.approx(bpm, rel=0.02)
    assert d.key.key == key_name(tonic, mode)
    assert d.key.camelot == camelot_of(tonic, mode)
    assert 0.0 <= d.dynamics.energy <= 1.0 and 0.0 <= d.dynamics.danceability <= 1.0
    assert d.loudness is not None and -40 < d.loudness.integrated < 0


def test_click_track_tempo_and_phase():
    x = np.zeros(SR * 20, dtype=np.float32)
    offset = 0.25
    for k in range(int((20 - offset) / 0.5)):
        i = int((offset + 0.5 * k) * SR)
        x[i : i + 200] = np.hanning(200) * 0.8
    d = describe(np.stack([x, x]))
    assert d.tempo.bpm == pytest.approx(120.0, rel=0.01)
    assert d.tempo.confidence > 0.5
    # the first beat of a grid that is phase-locked to the clicks
    beat = 60.0 / d.tempo.bpm
    err = (d.tempo.first_beat - offset + beat / 2) % beat - beat / 2
    assert abs(err) < 0.03
    assert d.key.key is None and d.key.reason  # clicks have no key


def test_silence_and_short_input_get_reasons():
    d = describe(np.zeros((2, SR * 10), dtype=np.float32))
    assert d.tempo.bpm is None and "onset" in d.tempo.reason
    assert d.key.key is None and d.key.reason
    assert d.loudness.integrated is None and "silent" in d.loudness.reason
    assert d.dynamics.energy is None and d.regions == []
    short = describe(song(120, 0, "major", seconds=0.5))
    assert short.tempo.bpm is None and "short" in short.tempo.reason
    assert short.key.key is None
    assert short.loudness.integrated is not None  # one 400 ms block fits in 0.5 s
    tiny = describe(song(120, 0, "major", seconds=0.3))
    assert tiny.loudness.integrated is None and "400 ms" in tiny.loudness.reason


def test_clipping_and_8khz_mono():
    x = np.clip(song(140, 4, "minor", seconds=20) * 8.0, -1.0, 1.0)
    d = describe(x)
    assert d.tempo.bpm == pytest.approx(140, rel=0.02)
    assert d.loudness.true_peak >= d.loudness.sample_peak >= -0.01
    lo_fi = soxr.resample(song(110, 5, "major", seconds=20).mean(axis=0), SR, 8000)
    d8 = describe(lo_fi.astype(np.float32), sr=8000)
    assert d8.tempo.bpm == pytest.approx(110, rel=0.02)
    assert d8.key.key == "F"


def test_loudness_matches_pyloudnorm_on_every_rate():
    pyln = pytest.importorskip("pyloudnorm")
    rng = np.random.default_rng(1)
    for sr in (48000, 44100, 32000):
        x = (rng.standard_normal((2, sr * 12)) * 0.1).astype(np.float32)
        x[:, : sr * 3] *= 0.05  # a quiet intro the relative gate must drop
        m = LoudnessMeter()
        for i in range(0, x.shape[1], 30000):
            m.feed(x[:, i : i + 30000], sr)
        r = m.finish()
        ref = pyln.Meter(sr).integrated_loudness(x.T.astype(np.float64))
        assert r.integrated == pytest.approx(ref, abs=0.1)
        assert r.rg_gain == pytest.approx(-18.0 - r.integrated)
        assert r.r128_gain == round((-23.0 - r.integrated) * 256)


def test_true_peak_sees_intersample_peaks():
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * SR / 4 * t + np.pi / 4)).astype(np.float32)[None, :]
    m = LoudnessMeter()
    m.feed(x, SR)
    r = m.finish()
    assert r.sample_peak == pytest.approx(-9.03, abs=0.05)  # samples at ±0.354
    assert r.true_peak == pytest.approx(-6.02, abs=0.1)  # the sine's real peak, 0.5


def test_regions_split_on_silence_and_get_scores():
    a = song(120, 0, "major", seconds=25, seed=1)
    b = song(90, 9, "minor", seconds=25, seed=2, timbre="pluck")
    gap = np.zeros((2, SR * 4), dtype=np.float32)
    x = np.concatenate([gap[:, : SR // 2], a, gap, b, gap[:, :SR]], axis=1)
    d = describe(x)
    assert d.leading_silence == pytest.approx(0.5, abs=0.1)
    assert d.trailing_silence == pytest.approx(1.0, abs=0.15)
    assert len(d.regions) == 2
    r1, r2 = d.regions
    assert r1.start == pytest.approx(0.5, abs=0.1) and r2.start == pytest.approx(29.5, abs=0.1)
    assert r1.descriptors["bpm"] == pytest.approx(120, rel=0.02) and r1.descriptors["key"] == "C"
    assert r2.descriptors["bpm"] == pytest.approx(90, rel=0.02) and r2.descriptors["key"] == "Am"


def test_timeline_roundtrip_and_size():
    tl = Timeline(2.992, [i * 2.992 for i in range(40)])
    rng = np.random.default_rng(0)
    tl.add_scores("msd-musicnn-1", [f"l{i}" for i in range(50)], rng.uniform(0, 0.3, (40, 50)))
    tl.add_curve(0.0, rng.uniform(-40, -5, 120))
    blob = tl.encode()
    back = Timeline.decode(blob)
    assert back.patch_starts == pytest.approx(tl.patch_starts, abs=1e-3)
    a = back.scores["msd-musicnn-1"][1]
    assert np.array_equal(a, tl.scores["msd-musicnn-1"][1])
    assert np.array_equal(back.curve[0][1], tl.curve[0][1])
    assert len(blob) < 40 * 50 + 120 + 800  # a byte per patch and label, a little header
    means = back.region_means(0.0, 30.0)["msd-musicnn-1"]
    assert len(means) == 50 and all(0 <= v <= 0.31 for v in means.values())


def test_key_notations():
    assert key_name(9, "minor") == "Am" and key_name(6, "major") == "F#"
    assert camelot_of(9, "minor") == "8A" and camelot_of(0, "major") == "8B"
    assert open_key_of(0, "major") == "1d" and open_key_of(9, "minor") == "1m"
    for text, want in [
        ("Am", (9, "minor")),
        ("F#", (6, "major")),
        ("Bbm", (10, "minor")),
        ("8A", (9, "minor")),
        ("1d", (0, "major")),
        ("E minor", (4, "minor")),
    ]:
        assert parse_key(text) == want
    assert parse_key("H") is None and parse_key("") is None
    assert compatible((9, "minor"), (4, "minor"))  # 8A → 9A
    assert compatible((9, "minor"), (0, "major"))  # relative major
    assert not compatible((9, "minor"), (6, "major"))


def test_descriptor_tags_follow_the_grammar():
    from nomarr_client.tags import parse_key as parse_tag

    d = describe(song(124, 7, "major", seconds=20))
    tags = descriptor_tags(d.to_dict())
    assert tags["nom:dsp_nomarr_1_tempo_1_bpm"] == f"{d.tempo.bpm:.2f}"
    assert tags["nom:dsp_nomarr_1_key_1_key"] == "G"
    assert tags["nom:dsp_nomarr_1_key_1_camelot"] == "9B"
    for k in tags:
        p = parse_tag(k)
        assert p.namespace.framework == "dsp"
        assert p.kind in ("descriptor", "provenance")
    assert not parse_tag("nom:dsp_nomarr_1_key_1_key").numeric
    assert parse_tag("nom:dsp_nomarr_1_tempo_1_bpm").numeric


# ---------------------------------------------------------------- through the real pipeline


@pytest.fixture(scope="module")
def analyzer():
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import get_profile

    return Analyzer(ModelSet(Registry(), ["msd-musicnn-1"], threads=1), get_profile("balanced"))


@pytest.mark.parametrize(
    "name,seconds,sr,channels", [("half.wav", 0.5, 44100, 2), ("lofi.wav", 12.0, 8000, 1)]
)
def test_pipeline_hard_input(analyzer, tmp_path, name, seconds, sr, channels):
    sig = song(100, 2, "major", seconds=seconds, sr=sr)
    sig = sig[:1] if channels == 1 else sig
    p = encode(tmp_path / name, sig, sr)
    fa = analyzer.analyze(p)
    d = fa.descriptors.to_dict()
    assert set(d) >= {"tempo", "key", "energy", "loudness", "regions"}
    for part in ("tempo", "key"):
        assert d[part][{"tempo": "bpm", "key": "key"}[part]] is not None or d[part]["reason"]
    assert d["loudness"]["integrated_lufs"] is not None  # short file: analysed whole
    json.dumps(fa.to_dict())  # plain JSON all the way


def test_pipeline_windows_skip_loudness_and_timeline_times(analyzer, tmp_path):
    p = encode(tmp_path / "long.flac", song(118, 4, "minor", seconds=150, seed=4), SR)
    fa = analyzer.analyze(p)
    d = fa.descriptors
    assert len(fa.windows) == 3 and d.loudness is None
    assert any("loudness" in n for n in d.notes)
    assert d.tempo.bpm == pytest.approx(118, rel=0.02) and d.key.key == "Em"
    tl = d.timeline
    assert tl.patch_starts[0] == pytest.approx(fa.windows[0].start, abs=0.01)
    assert len(tl.patch_starts) == fa.results["msd-musicnn-1"].n_patches
    assert [round(t) for t, _ in tl.curve] == [round(w.start) for w in fa.windows]


@pytest.mark.corpus
def test_corpus_descriptors(corpus, analyzer):
    fa = analyzer.analyze(corpus / "sh01.ogg")
    d = fa.descriptors
    assert d.tempo.bpm is not None and 50 <= d.tempo.bpm <= 210
    assert d.key.key is not None and d.loudness.integrated is not None


# ---------------------------------------------------------------- standard fields


STD = {
    "bpm": "128",
    "initial_key": "Am",
    "replaygain_track_gain": "-6.52 dB",
    "replaygain_track_peak": "0.987654",
    "r128_track_gain": "-1927",
}
NOM = {"nom:dsp_nomarr_1_tempo_1_bpm": "128.00"}


@pytest.mark.parametrize("ext", ["mp3", "flac", "m4a", "opus", "wma", "ogg"])
def test_standard_fields_ownership(make_audio, ext):
    p = make_audio(f"s.{ext}", seconds=1.0, sr=48000 if ext == "opus" else 44100)
    from nomarr.tagio import nom_audio_md5

    audio = nom_audio_md5(p)
    r = write_tags(p, NOM, std=STD)
    assert r.changed
    owned = r.std_owned
    assert owned["bpm"] == "128" and owned["initial_key"] == "Am"
    if ext == "opus":
        assert "replaygain_track_gain" not in owned and owned["r128_track_gain"] == "-1927"
    elif ext != "wma":
        assert owned["replaygain_track_gain"] == "-6.52 dB" and "r128_track_gain" not in owned
    tl = dict(taglib.File(str(p)).tags)
    assert tl["BPM"] == ["128"] and tl["INITIALKEY"] == ["Am"]
    if ext == "opus":
        assert tl["R128_TRACK_GAIN"] == ["-1927"] and "REPLAYGAIN_TRACK_GAIN" not in tl
    elif ext in ("mp3", "flac", "ogg"):
        assert tl["REPLAYGAIN_TRACK_GAIN"] == ["-6.52 dB"]
    assert nom_audio_md5(p) == audio
    # nomarr owns them: a new analysis updates them
    r = write_tags(p, NOM, std={**STD, "bpm": "129"}, std_owned=owned)
    assert r.std_owned["bpm"] == "129"
    # the user sets their own key (with TagLib; in MP4 as beets/iTunes spell the atom, since
    # TagLib adds an upper-case twin instead of replacing it): never touched again
    if ext == "m4a":
        f = mutagen.File(p)
        f.tags["----:com.apple.iTunes:initialkey"] = [MP4FreeForm(b"C#m", AtomDataType.UTF8)]
        f.save()
    else:
        f = taglib.File(str(p))
        f.tags["INITIALKEY"] = ["C#m"]
        f.save()
        f.close()
    r = write_tags(p, NOM, std={**STD, "initial_key": "Bm"}, std_owned=r.std_owned)
    assert dict(taglib.File(str(p)).tags)["INITIALKEY"] == ["C#m"]
    assert "initial_key" not in (r.std_owned or {})
    assert read_tags(p).nom == NOM


def test_standard_fields_filled_by_scan_user_values_kept(tmp_path):
    from nomarr.scan import Scanner, ScanOptions

    lib = tmp_path / "lib"
    lib.mkdir()
    encode(lib / "a.flac", song(100, 0, "major", seconds=12, seed=1), SR)
    encode(lib / "b.flac", song(140, 9, "minor", seconds=12, seed=2), SR)
    f = mutagen.File(lib / "b.flac")
    f["BPM"] = "70"
    f.save()
    db = tmp_path / "n.db"
    s = Scanner(ScanOptions(roots=[str(lib)], db=str(db), workers=0)).run()
    assert s.analysed == 2 and s.descriptors["tempo"] == 2
    a, b = mutagen.File(lib / "a.flac"), mutagen.File(lib / "b.flac")
    assert a["BPM"] == ["100"] and a["INITIALKEY"] == ["C"] and "REPLAYGAIN_TRACK_GAIN" in a
    assert b["BPM"] == ["70"] and b["INITIALKEY"] == ["Am"]
    assert float(a["nom:dsp_nomarr_1_tempo_1_bpm"][0]) == pytest.approx(100, rel=0.02)
    # a second scan changes nothing
    s2 = Scanner(ScanOptions(roots=[str(lib)], db=str(db), workers=0)).run()
    assert s2.analysed == 0 and s2.written == 0


def test_store_migrates_v1_database(tmp_path):
    from nomarr.store import Store
    from nomarr.store.schema import MIGRATIONS

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(MIGRATIONS[0][1])  # a database from before the descriptors
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    with Store(path) as st:
        names = {r[0] for r in st.db.execute("SELECT name FROM migrations")}
        assert "0005-descriptors" in names
        rec = st.new_recording(10.0, [])
        st.put_descriptors(
            rec,
            {
                "provenance": "x",
                "tempo": {"bpm": 120.0},
                "key": {"key": "Am", "camelot": "8A", "strength": 0.7},
            },
            b"blob",
        )
        assert st.descriptors(rec)["tempo"]["bpm"] == 120.0
        assert st.descriptor_columns([rec])[rec]["camelot"] == "8A"
        assert st.timeline(rec) == b"blob"


def test_level_invariant_profile(analyzer, tmp_path):
    from nomarr.pipeline.analyze import Analyzer
    from nomarr.pipeline.profiles import get_profile

    x = song(110, 2, "minor", seconds=20, seed=8)
    a = encode(tmp_path / "a.flac", x, SR)
    b = encode(tmp_path / "b.flac", x * 10 ** (-6 / 20), SR)
    lvl = Analyzer(analyzer.models, get_profile("balanced+level"), descriptors=False)
    ra, rb = (lvl.analyze(f).results["msd-musicnn-1"] for f in (a, b))
    assert max(abs(ra.scores[k] - rb.scores[k]) for k in ra.scores) <= 0.01
    plain = analyzer.analyze(a).results["msd-musicnn-1"]
    assert plain.provenance != ra.provenance  # its own provenance
    assert "level_norm" not in get_profile("balanced").params()  # the default's is unchanged
    with pytest.raises(ValueError):
        get_profile("nope+level")
