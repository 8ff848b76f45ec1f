"""The backend factory: one entry per manifest backend, one fallback rule, errors that name the model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from nomarr.models import backends, runtime
from nomarr.models.backends import BACKENDS, choose_provider, make_backend
from nomarr.models.registry import ModelError, Registry


def _builtin(mid: str):
    reg = Registry()
    m = reg.get(mid)
    return m, reg.require(m), reg.verify(m)[0].actual_sha256 or ""


def test_onnx_manifest_gets_an_ort_session(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "ort_available_providers", lambda: ["CPUExecutionProvider"])
    m, path, sha = _builtin("msd-musicnn-1")
    sel = runtime.ProviderSelector(tmp_path / "c.json")
    be, choice = make_backend(m, path, sha, threads=1, selector=sel)
    assert isinstance(be, runtime.OrtBackend) and be.name == m.id
    assert choice.provider == be.provider == "CPUExecutionProvider"
    assert choose_provider(m, path, sha, selector=sel).provider == "CPUExecutionProvider"


def test_tflite_manifest_gets_the_tflite_backend() -> None:
    pytest.importorskip("ai_edge_litert")
    m, path, sha = _builtin("msd-musicnn-1-tflite")
    be, choice = make_backend(m, path, sha, threads=1)
    assert isinstance(be, runtime.TfliteBackend) and choice.provider == "TFLite"
    out = be.run({be.input_names[0]: np.zeros((1, 187, 96), np.float32)})
    assert set(out) == set(be.output_names)


def test_user_provider_that_fails_falls_back_to_cpu() -> None:
    m, path, sha = _builtin("msd-musicnn-1")
    be, choice = make_backend(m, path, sha, threads=1, provider="NoSuchExecutionProvider")
    assert be.provider == choice.provider == "CPUExecutionProvider"
    assert choice.reason.startswith("NoSuchExecutionProvider failed to load")


def test_unloadable_model_and_unknown_backend_name_the_model(tmp_path) -> None:
    m, _, _ = _builtin("msd-musicnn-1")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"model msd-musicnn-1: .*junk.onnx could not be loaded"):
        make_backend(m, junk, "x", provider="CPUExecutionProvider")
    odd = dataclasses.replace(m, backend="coreml")
    with pytest.raises(ModelError, match=r"model msd-musicnn-1: backend 'coreml' is not one of"):
        make_backend(odd, junk, "x")


def test_a_new_backend_is_one_entry(monkeypatch) -> None:
    class Echo:
        provider, input_names, output_names = "echo", ["x"], ["x"]

        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, inputs, outputs=None):
            return dict(inputs)

    kind = backends.BackendKind(
        "echo",
        lambda path, sha, sel, prov: runtime.ProviderChoice("echo", "test backend"),
        lambda path, prov, threads, name: Echo(name),
    )
    monkeypatch.setitem(BACKENDS, "echo", kind)
    m, path, sha = _builtin("msd-musicnn-1")
    be, choice = make_backend(dataclasses.replace(m, backend="echo"), path, sha)
    assert be.name == m.id and choice.reason == "test backend"
