"""CLAP path (zero-shot moods, text embeddings) with generated towers of the real signatures."""

from __future__ import annotations

import numpy as np
import pytest
from nomarr.audio.mel import clap_log_mel
from nomarr.models.clap import DEFAULT_MOODS, ClapText, zero_shot
from nomarr.models.registry import ModelError, Registry
from nomarr.pipeline.analyze import Analyzer, ModelSet
from nomarr.pipeline.profiles import get_profile

from . import fixture_models as fx
from .conftest import REPO, music_like

pytest.importorskip("tokenizers")


def test_clap_features_match_librosa_reflect_slaney_db() -> None:
    librosa = pytest.importorskip("librosa")
    y = music_like(10.0, 48000, 1)[0]
    ours = clap_log_mel(y)
    assert ours.shape == (1001, 64)
    ref = librosa.feature.melspectrogram(
        y=y.astype(np.float64),
        sr=48000,
        n_fft=1024,
        hop_length=480,
        n_mels=64,
        fmin=50,
        fmax=14000,
        pad_mode="reflect",
    )
    ref = librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=None).T
    assert np.abs(ours - ref).max() < 1e-3


@pytest.fixture
def clap_registry(tmp_path) -> Registry:
    """The shipped CLAP manifests, with generated model files installed in their place."""
    shipped = Registry()
    models = tmp_path / "models"
    a = shipped.get("clap-htsat-unfused-audio")
    t = shipped.get("clap-htsat-unfused-text")
    (models / a.id).mkdir(parents=True)
    (models / t.id).mkdir(parents=True)
    fx.clap_audio(models / a.id / a.model_file.name)
    fx.clap_text(models / t.id / t.model_file.name)
    tok = next(f for f in t.files if f.role == "tokenizer")
    fx.word_tokenizer(models / t.id / tok.name, "This is a song .".split() + list(DEFAULT_MOODS))
    # the shipped manifests pin the real files' hashes: point them at our fixtures instead
    user = tmp_path / "user"
    user.mkdir()
    for m in (a, t):
        text = (REPO / "models" / "manifests" / f"{m.id}.toml").read_text()
        for f in m.files:
            if f.sha256:
                text = text.replace(
                    f.sha256, fx.hashlib.sha256((models / m.id / f.name).read_bytes()).hexdigest()
                )
        (user / f"{m.id}.toml").write_text(text)
    return Registry(user_dir=user, models_dir=models)


def test_text_tower_embeds_unit_vectors(clap_registry) -> None:
    t = ClapText(clap_registry, clap_registry.get("clap-htsat-unfused-text"), threads=1)
    v = t.embed(["This is a happy song .", "This is a sad song ."])
    assert v.shape == (2, 512) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(t.embed(["This is a happy song ."])[0], v[0])
    assert not np.allclose(v[0], v[1])


def test_zero_shot_moods_in_analysis(clap_registry, make_audio) -> None:
    path = make_audio("song.opus", seconds=25.0, sr=48000)
    ms = ModelSet(clap_registry, ["clap-htsat-unfused-audio"], threads=1)
    res = Analyzer(ms, get_profile("full")).analyze(path)
    r = res.results["clap-htsat-unfused-audio"]
    assert r.embedding.shape == (512,) and abs(np.linalg.norm(r.embedding) - 1) < 1e-5
    assert r.n_patches == 2  # two 10 s clips from 25 s
    assert set(r.scores) == set(DEFAULT_MOODS) and abs(sum(r.scores.values()) - 1) < 1e-5
    text = ms.clap_text["clap-htsat-unfused-audio"]
    assert r.scores == pytest.approx(zero_shot(r.embedding, text))
    assert "nom:onnx_clap_htsat-unfused-1_audio_1_happy" in res.tags()


def test_short_clip_is_repeat_padded(clap_registry, make_audio) -> None:
    path = make_audio("short.wav", seconds=2.0, sr=48000)
    ms = ModelSet(clap_registry, ["clap-htsat-unfused-audio"], threads=1)
    r = Analyzer(ms, get_profile("full")).analyze(path).results["clap-htsat-unfused-audio"]
    assert r.n_patches == 1


def test_audio_only_without_text_tower(clap_registry, make_audio) -> None:
    t = clap_registry.get("clap-htsat-unfused-text")
    clap_registry.file_path(t, t.model_file).unlink()
    ms = ModelSet(clap_registry, ["clap-htsat-unfused-audio"], threads=1)
    r = (
        Analyzer(ms, get_profile("full"))
        .analyze(make_audio("s.wav", seconds=3.0))
        .results["clap-htsat-unfused-audio"]
    )
    assert r.scores == {} and r.embedding.shape == (512,)


def test_text_tower_alone_is_not_an_audio_model(clap_registry) -> None:
    with pytest.raises(ModelError, match="not run on audio"):
        ModelSet(clap_registry, ["clap-htsat-unfused-text"])
