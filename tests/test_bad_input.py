"""Bad input gets a clear error (AudioError / ModelError naming the file), never a crash or hang."""

from __future__ import annotations

import shutil
import tracemalloc
import wave

import numpy as np
import pytest
from nomarr.audio.decode import AudioError, load_mono, stream_mono
from nomarr.audio.mel import MelStream
from nomarr.models.registry import ModelError, Registry
from nomarr.pipeline.analyze import Analyzer, ModelSet
from nomarr.pipeline.profiles import get_profile

from .conftest import music_like


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(ModelSet(Registry(), ["msd-musicnn-1"], threads=1), get_profile("full"))


def test_zero_byte_file(tmp_path, analyzer) -> None:
    p = tmp_path / "empty.mp3"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        analyzer.analyze(p)


def test_text_file_named_flac(tmp_path, analyzer) -> None:
    p = tmp_path / "notes.flac"
    p.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioError, match="notes.flac"):
        analyzer.analyze(p)


def test_missing_file(tmp_path, analyzer) -> None:
    with pytest.raises(AudioError, match="no such file"):
        analyzer.analyze(tmp_path / "gone.ogg")


def test_truncated_mp3_analyses_what_is_there(make_audio, analyzer) -> None:
    p = make_audio("t.mp3", seconds=10.0)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    res = analyzer.analyze(p)
    r = res.results["msd-musicnn-1"]
    assert 1 <= r.n_patches <= 2
    assert all(0.0 <= s <= 1.0 for s in r.scores.values())


def test_garbage_in_the_middle_is_skipped(make_audio, analyzer) -> None:
    p = make_audio("g.mp3", seconds=10.0)
    data = bytearray(p.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = (
        np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    )
    p.write_bytes(bytes(data))
    r = analyzer.analyze(p).results["msd-musicnn-1"]
    assert r.n_patches >= 2


def test_half_second_file_gets_one_repeat_padded_patch(make_audio, analyzer) -> None:
    p = make_audio("short.wav", seconds=0.5)
    r = analyzer.analyze(p).results["msd-musicnn-1"]
    assert r.n_patches == 1
    assert np.isfinite(list(r.scores.values())).all()


def test_digital_silence(make_audio, analyzer) -> None:
    p = make_audio("silence.flac", signal=np.zeros((2, 44100 * 4), np.float32), sr=44100)
    res = analyzer.analyze(p)
    assert res.results["msd-musicnn-1"].n_patches == 1
    assert any("silence" in w for w in res.warnings)
    assert np.isfinite(list(res.results["msd-musicnn-1"].scores.values())).all()


def test_8khz_mono(make_audio, analyzer) -> None:
    p = make_audio("phone.wav", seconds=7.0, sr=8000, channels=1)
    assert analyzer.analyze(p).results["msd-musicnn-1"].n_patches == 2


def test_24bit_192khz_flac(make_audio, analyzer) -> None:
    p = make_audio("hires.flac", seconds=4.0, sr=192000, sample_fmt="s32")
    assert analyzer.analyze(p).results["msd-musicnn-1"].n_patches == 1


def test_loud_clipped_audio_stays_finite(make_audio, analyzer) -> None:
    """Upstream's float16 log overflows to inf on loud audio; ours is float32."""
    sig = np.clip(music_like(4.0, 44100, 2) * 20, -1, 1)
    p = make_audio("loud.wav", signal=sig, sr=44100)
    r = analyzer.analyze(p).results["msd-musicnn-1"]
    assert np.isfinite(list(r.scores.values())).all()


@pytest.mark.slow
def test_two_hour_file_decodes_in_bounded_memory(tmp_path) -> None:
    """A 2 h WAV streams through decode + mel with a small, length-independent peak."""
    p = tmp_path / "long.wav"
    sr = 8000
    block = (music_like(60.0, sr, 1)[0] * 32767).astype(np.int16).tobytes()
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        for _ in range(120):
            w.writeframes(block)
    tracemalloc.start()
    ms = MelStream()
    frames = 0
    for sig in stream_mono(p, sr=16000):
        frames += ms.push(sig).shape[0]
    frames += ms.finish().shape[0]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert frames == 1 + (7200 * 16000) // 256
    assert peak < 50e6, f"peak traced memory {peak / 1e6:.1f} MB"


def test_corrupt_model_is_refused_with_path_and_hash(tmp_path) -> None:
    reg = Registry()
    real = reg.builtin_dir
    fake = tmp_path / "builtin"
    shutil.copytree(real, fake)
    (fake / "msd_musicnn.onnx").write_bytes(b"\0" * 1000)
    reg2 = Registry(builtin_dir=fake)
    m = reg2.get("msd-musicnn-1")
    with pytest.raises(ModelError) as ei:
        reg2.require(m)
    msg = str(ei.value)
    assert str(fake / "msd_musicnn.onnx") in msg and m.model_file.sha256 in msg


def test_swapped_model_is_refused(tmp_path) -> None:
    fake = tmp_path / "builtin"
    shutil.copytree(Registry().builtin_dir, fake)
    shutil.copyfile(fake / "mtt_musicnn.onnx", fake / "msd_musicnn.onnx")
    with pytest.raises(ModelError, match="refusing to load"):
        ModelSet(Registry(builtin_dir=fake), ["msd-musicnn-1"])


def test_missing_model_file(tmp_path) -> None:
    fake = tmp_path / "builtin"
    fake.mkdir()
    with pytest.raises(ModelError, match="missing"):
        ModelSet(Registry(builtin_dir=fake), ["msd-musicnn-1"])


def test_unknown_model() -> None:
    with pytest.raises(ModelError, match="unknown model"):
        ModelSet(Registry(), ["no-such-model"])


def test_load_mono_of_directory(tmp_path) -> None:
    with pytest.raises(AudioError, match="directory"):
        load_mono(tmp_path)
