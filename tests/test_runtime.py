"""Backends, provider choice with the golden-input check, and heads through the analyzer."""

from __future__ import annotations

import numpy as np
import pytest
from nomarr.models import runtime
from nomarr.models.registry import Registry
from nomarr.models.runtime import OrtBackend, ProviderSelector, compare_outputs, golden_inputs
from nomarr.pipeline.analyze import Analyzer, ModelSet
from nomarr.pipeline.profiles import get_profile

from . import fixture_models as fx


def test_provider_order_prefers_accelerators(monkeypatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["CPUExecutionProvider", "AzureExecutionProvider", "CUDAExecutionProvider"],
    )
    assert runtime.ort_available_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_only_machine_uses_cpu_with_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "ort_available_providers", lambda: ["CPUExecutionProvider"])
    choice = ProviderSelector(tmp_path / "c.json").choose(
        str(Registry().require(Registry().get("msd-musicnn-1"))), "x"
    )
    assert choice.provider == "CPUExecutionProvider" and "no accelerated" in choice.reason


def test_broken_provider_falls_back_to_cpu_and_is_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(
        runtime,
        "ort_available_providers",
        lambda: ["FakeExecutionProvider", "CPUExecutionProvider"],
    )
    path = str(Registry().require(Registry().get("msd-musicnn-1")))
    sel = ProviderSelector(tmp_path / "c.json")
    choice = sel.choose(path, "sha-a")
    assert choice.provider == "CPUExecutionProvider"
    assert "FakeExecutionProvider error" in choice.reason
    again = ProviderSelector(tmp_path / "c.json").choose(path, "sha-a")
    assert again.tried[0]["cached"] is True and again.provider == "CPUExecutionProvider"


def test_provider_with_wrong_numbers_is_not_trusted(tmp_path, monkeypatch) -> None:
    """A provider that runs but computes different numbers (e.g. reduced precision) is refused."""
    monkeypatch.setattr(
        runtime,
        "ort_available_providers",
        lambda: ["SloppyExecutionProvider", "CPUExecutionProvider"],
    )
    real = runtime.OrtBackend

    class Sloppy:
        def __init__(self, path, provider="CPUExecutionProvider", threads=0, **kw) -> None:
            self.inner = real(path, "CPUExecutionProvider", threads=threads)
            self.provider = provider

        def input_specs(self):
            return self.inner.input_specs()

        def run(self, inputs, outputs=None):
            out = self.inner.run(inputs, outputs)
            if self.provider == "SloppyExecutionProvider":
                return {k: v + 0.05 for k, v in out.items()}
            return out

    monkeypatch.setattr(runtime, "OrtBackend", Sloppy)
    path = str(Registry().require(Registry().get("msd-musicnn-1")))
    choice = ProviderSelector(tmp_path / "c.json").choose(path, "sha-b")
    assert choice.provider == "CPUExecutionProvider"
    assert "differs from CPU by 5.00e-02" in choice.reason


def test_golden_inputs_are_deterministic_and_typed() -> None:
    specs = [
        ("melspectrogram", ["batch", 187, 96], "tensor(float)"),
        ("input_ids", ["batch", "seq"], "tensor(int64)"),
        ("attention_mask", ["batch", "seq"], "tensor(int64)"),
    ]
    a, b = golden_inputs(specs), golden_inputs(specs)
    assert a["melspectrogram"].shape == (2, 187, 96) and np.array_equal(
        a["melspectrogram"], b["melspectrogram"]
    )
    assert a["input_ids"].dtype == np.int64 and (a["attention_mask"] == 1).all()
    ok, diff = compare_outputs({"x": np.ones(3)}, {"x": np.ones(3) * np.nan})
    assert not ok


def test_single_thread_session_and_batching_agree() -> None:
    path = str(Registry().require(Registry().get("msd-musicnn-1")))
    x = np.random.default_rng(0).uniform(0, 3, (4, 187, 96)).astype(np.float32)
    one = OrtBackend(path, threads=1).run({"melspectrogram": x})
    two = OrtBackend(path, threads=2)
    singles = np.concatenate([two.run({"melspectrogram": x[i : i + 1]})["tags"] for i in range(4)])
    assert np.abs(one["tags"] - singles).max() < 1e-5
    assert set(one) == {"tags", "embedding", "dense"}


MUSICNN_HEAD = """
schema = 1
id = "fixture-mood-msd-musicnn-1"
kind = "head"
name = "fixture musicnn head"
[namespace]
framework = "onnx"
embedder = "musicnn"
embedder_id = "msd-1"
model = "fixture-mood"
model_id = "1"
[[files]]
name = "head.onnx"
role = "model"
url = "http://127.0.0.1:9/unused"
[input]
frontend = "embedding"
input_name = "embeddings"
[outputs]
scores = "activations"
activation = "none"
labels = ["happy", "non_happy"]
[head]
embedder = "msd-musicnn-1"
input_name = "embeddings"
embedder_output = "dense"
"""

EFFNET = """
schema = 1
id = "fixture-effnet-1"
kind = "embedder"
name = "fixture effnet"
[namespace]
framework = "onnx"
embedder = "effnet"
embedder_id = "fixture-1"
model = "genre"
model_id = "1"
[[files]]
name = "effnet.onnx"
role = "model"
url = "http://127.0.0.1:9/unused"
[input]
sample_rate = 16000
frontend = "effnet-mel"
input_name = "melspectrogram"
patch_frames = 128
patch_hop = 62
n_fft = 512
hop_length = 256
n_mels = 96
log = "log10_1p_10000"
[outputs]
scores = "activations"
activation = "none"
labels = [{labels}]
embedding = "embeddings"
embedding_dim = 1280
"""


@pytest.fixture
def fixture_registry(tmp_path) -> Registry:
    user, models = tmp_path / "manifests", tmp_path / "models"
    user.mkdir()
    for mid, text, make in (
        ("fixture-mood-msd-musicnn-1", MUSICNN_HEAD, lambda p: fx.head(p, dim=200)),
        (
            "fixture-effnet-1",
            EFFNET.format(labels=", ".join(f'"g{i}"' for i in range(400))),
            lambda p: fx.mel_embedder(p),
        ),
    ):
        fx.write_manifest(user, text)
        d = models / mid
        d.mkdir(parents=True)
        fname = "head.onnx" if "mood" in mid else "effnet.onnx"
        make(d / fname)
    reg = Registry(user_dir=user, models_dir=models)
    for mid in ("fixture-mood-msd-musicnn-1", "fixture-effnet-1"):
        m = reg.get(mid)
        reg._write_pin(m, m.model_file.name, reg.verify(m)[0].actual_sha256)
    return reg


def test_heads_run_on_the_embedders_dense_output(fixture_registry, make_audio) -> None:
    path = make_audio("song.mp3", seconds=10.0)
    ms = ModelSet(fixture_registry, ["fixture-mood-msd-musicnn-1", "fixture-effnet-1"], threads=1)
    assert set(ms.models) == {"msd-musicnn-1", "fixture-mood-msd-musicnn-1", "fixture-effnet-1"}
    res = Analyzer(ms, get_profile("full")).analyze(path)
    head = res.results["fixture-mood-msd-musicnn-1"]
    assert head.n_patches == 3 and abs(sum(head.scores.values()) - 1.0) < 1e-5
    eff = res.results["fixture-effnet-1"]
    assert eff.n_patches == 9  # 626 frames: patches of 128 every 62 frames
    assert eff.embedding.shape == (1280,) and len(eff.scores) == 400
    # the head really consumed "dense": recompute from the embedder by hand
    emb = ms.models["msd-musicnn-1"]
    head_be = ms.models["fixture-mood-msd-musicnn-1"].backend
    x = np.random.default_rng(1).uniform(0, 3, (2, 187, 96)).astype(np.float32)
    d = emb.backend.run({"melspectrogram": x}, ["dense"])["dense"]
    assert head_be.run({"embeddings": d})["activations"].shape == (2, 2)
    tags = res.tags()
    assert tags["nom:onnx_musicnn_msd-1_fixture-mood_1_happy"] == f"{head.scores['happy']:.4f}"
    assert "nom:onnx_musicnn_msd-1_fixture-mood_1_provenance" in tags
    # provenance of a head covers its embedder: differs from the embedder's own
    assert head.provenance != res.results["msd-musicnn-1"].provenance
