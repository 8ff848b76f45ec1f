"""Shared test fixtures: isolated XDG dirs, the shared corpus, and real encoded audio files.

Unit tests make their own small signals and encode them with PyAV (real MP3/FLAC/Opus/AAC/WMA
encoders), so decoding is exercised on genuine bitstreams, not on raw arrays.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("NOMARR_CORPUS", REPO.parent / "shared" / "corpus"))
REFERENCE = Path(os.environ.get("NOMARR_REFERENCE", REPO.parent / "shared" / "reference"))

# extension -> (container format, codec, sample format, extra codec options)
FORMATS = {
    "mp3": ("mp3", "libmp3lame", "fltp", {}),
    "flac": ("flac", "flac", "s16", {}),
    "ogg": ("ogg", "vorbis", "fltp", {"strict": "experimental"}),
    "opus": ("ogg", "libopus", "flt", {}),
    "m4a": ("ipod", "aac", "fltp", {}),
    "wav": ("wav", "pcm_s16le", "s16", {}),
    "aiff": ("aiff", "pcm_s16be", "s16", {}),
    "wma": ("asf", "wmav2", "fltp", {}),
}


@pytest.fixture(autouse=True)
def _isolated_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never touch the developer's real ~/.local/share/nomarr or ~/.cache."""
    base = tmp_path_factory.mktemp("xdg")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(base / var.lower()))
    for var in ("NOMARR_DATA_DIR", "NOMARR_CONFIG_DIR", "NOMARR_MODELS_DIR", "NOMARR_DB"):
        monkeypatch.delenv(var, raising=False)
    # The optional OpenVINO builds are measured once per machine, and every test has a fresh
    # cache: where the extra is installed, tests would spend seconds measuring in each one and
    # their numbers would depend on it. Tests of that path set the policy themselves.
    monkeypatch.setenv("NOMARR_PRECISION", "ort")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared real-music corpus, or a clean skip where it is absent."""
    if not (CORPUS / "sh01.ogg").exists():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


def music_like(seconds: float, sr: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A deterministic signal with notes, harmonics, a beat and noise: [channels, n] float32.

    Plain sines make degenerate mel spectra; this has onsets and broadband energy like music.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    sig = np.zeros(n)
    beat = 0.5  # 120 bpm
    for k in range(int(seconds / beat) + 1):
        start = int(k * beat * sr)
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = slice(start, min(n, start + int(0.45 * sr)))
        tt = t[seg] - k * beat
        env = np.exp(-tt * 4.0)
        for h in range(1, 5):
            sig[seg] += env * np.sin(2 * np.pi * f0 * h * tt) / h
        click = slice(start, min(n, start + 400))
        sig[click] += rng.normal(0, 0.5, click.stop - click.start)
    sig += rng.normal(0, 0.01, n)
    sig = 0.3 * sig / max(1e-9, np.abs(sig).max())
    out = np.stack([sig * (1.0 - 0.2 * c) for c in range(channels)])
    return out.astype(np.float32)


def encode(
    path: Path, signal: np.ndarray, sr: int, ext: str | None = None, sample_fmt: str | None = None
) -> Path:
    """Encode [channels, n] float32 to a real file with PyAV's encoders."""
    ext = ext or path.suffix.lstrip(".")
    fmt, codec, default_fmt, opts = FORMATS[ext]
    sample_fmt = sample_fmt or default_fmt
    channels = signal.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=sr, options=dict(opts))
        st.layout = layout
        st.format = sample_fmt
        if codec == "libopus" or codec == "wmav2":
            st.bit_rate = 96000
        frame_size = st.codec_context.frame_size or 1024
        for i in range(0, signal.shape[1], frame_size):
            chunk = signal[:, i : i + frame_size]
            if sample_fmt.startswith("s16"):
                data = np.clip(chunk * 32768, -32768, 32767).astype(np.int16)
            elif sample_fmt.startswith("s32"):
                data = np.clip(chunk * 2147483648.0, -2147483648, 2147483647).astype(np.int32)
            else:
                data = chunk.astype(np.float32)
            if not sample_fmt.endswith("p"):
                data = np.ascontiguousarray(data.T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format=sample_fmt, layout=layout
            )
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = Fraction(1, sr)
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


@pytest.fixture
def make_audio(tmp_path: Path):  # noqa: ANN201 - pytest factory fixture
    """Factory: make_audio("x.mp3", seconds=5, sr=44100, channels=2) -> Path of a real file."""

    def _make(
        name: str,
        seconds: float = 5.0,
        sr: int = 44100,
        channels: int = 2,
        seed: int = 0,
        sample_fmt: str | None = None,
        signal: np.ndarray | None = None,
    ) -> Path:
        sig = music_like(seconds, sr, channels, seed) if signal is None else signal
        return encode(tmp_path / name, sig, sr, sample_fmt=sample_fmt)

    return _make
