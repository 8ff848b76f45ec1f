"""Audio front end: decode, mean downmix, soxr resampling and the Slaney log-mel."""

from __future__ import annotations

import numpy as np
import pytest
from nomarr.audio.decode import load_mono, probe, stream_mono
from nomarr.audio.mel import MelSpec, MelStream, log_mel, mel_filterbank, patches

from .conftest import FORMATS, music_like


def test_filterbank_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(16000, 512, 96)
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-6


def test_log_mel_matches_librosa_on_same_signal() -> None:
    librosa = pytest.importorskip("librosa")
    y = music_like(7.3, 16000, 1)[0]
    ref = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96).T
    ref = np.log10(1 + 10000 * ref.astype(np.float32))
    ours = log_mel(y)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-5


def test_streaming_equals_one_shot() -> None:
    y = music_like(6.0, 16000, 1, seed=3)[0]
    whole = log_mel(y)
    ms = MelStream(MelSpec())
    parts = [ms.push(y[i : i + 777]) for i in range(0, y.shape[0], 777)] + [ms.finish()]
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape == (1 + y.shape[0] // 256, 96)
    assert np.abs(streamed - whole).max() < 1e-6


def test_patches_drop_trailing_partial() -> None:
    frames = [np.ones((100, 96), np.float32), np.ones((300, 96), np.float32)]
    got = list(patches(frames, 187))
    assert len(got) == 2 and all(p.shape == (187, 96) for p in got)


def test_downmix_is_the_mean_of_channels(make_audio) -> None:
    """0.7071*(L+R) (libswresample's mono) would be +3 dB; we must average like librosa."""
    sig = music_like(3.0, 16000, 1)[0]
    stereo = np.stack([sig, np.zeros_like(sig)])
    path = make_audio("half.wav", signal=stereo, sr=16000)
    y = load_mono(path, sr=16000)
    ref = np.round(sig * 32768).clip(-32768, 32767) / 32768 / 2
    assert y.shape[0] == sig.shape[0]
    assert np.abs(y - ref).max() < 1e-4


def test_resample_matches_librosa_soxr_hq(make_audio) -> None:
    librosa = pytest.importorskip("librosa")
    path = make_audio("r.wav", seconds=4.0, sr=44100, channels=2)
    ours = load_mono(path, sr=16000)
    ref, _ = librosa.load(str(path), sr=16000, mono=True)
    assert abs(ours.shape[0] - ref.shape[0]) <= 1
    n = min(ours.shape[0], ref.shape[0])
    assert np.abs(ours[:n] - ref[:n]).max() < 1e-5


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_every_promised_format_decodes(make_audio, ext: str) -> None:
    sr = 48000 if ext == "opus" else 44100
    path = make_audio(f"x.{ext}", seconds=3.0, sr=sr)
    info = probe(path)
    assert info.sample_rate == sr and info.channels == 2
    y = load_mono(path, sr=16000)
    assert y.dtype == np.float32
    assert abs(y.shape[0] / 16000 - 3.0) < 0.1
    assert 0.01 < np.abs(y).max() < 1.0


def test_windowed_decode_matches_slice_of_full(make_audio) -> None:
    path = make_audio("w.flac", seconds=12.0, sr=16000, channels=1)
    full = load_mono(path, sr=16000)
    win = load_mono(path, sr=16000, start=4.0, duration=3.0)
    assert win.shape[0] == 48000
    assert np.abs(win - full[64000:112000]).max() < 1e-6


def test_24bit_flac_scaled_like_libsndfile(make_audio) -> None:
    sig = music_like(2.0, 48000, 2)
    path = make_audio("hi.flac", signal=sig, sr=48000, sample_fmt="s32")
    y = load_mono(path, sr=48000)
    assert np.abs(y - sig.mean(axis=0)).max() < 1e-4


def test_stream_is_blockwise(make_audio) -> None:
    path = make_audio("b.mp3", seconds=20.0)
    sizes = [b.shape[0] for b in stream_mono(path)]
    # bounded blocks of about BLOCK_SAMPLES input samples (44.1 kHz in, 16 kHz out), never the whole file
    from nomarr.audio.decode import BLOCK_SAMPLES

    assert len(sizes) >= 5 and max(sizes) <= (BLOCK_SAMPLES + 2048) * 16000 / 44100 + 64
