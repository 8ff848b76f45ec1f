"""Typed manifest tables: each key checked when the TOML is read, with one line naming file and field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from nomarr.models.manifest import (
    HeadSpec,
    InputSpec,
    ManifestError,
    OutputSpec,
    load_manifest,
    parse_manifest,
)
from nomarr.models.registry import Registry

BASE = {
    "schema": 1,
    "id": "ok-1",
    "kind": "embedder",
    "namespace": {
        "framework": "onnx",
        "embedder": "e",
        "embedder_id": "1",
        "model": "m",
        "model_id": "1",
    },
    "files": [{"name": "x.onnx", "url": "http://x"}],
    "input": {"sample_rate": 16000, "frontend": "musicnn-mel", "fmin": 50},
    "outputs": {"scores": "tags", "labels": ["rock", "pop"], "embedding_dim": 200},
}


def _with(table: str, **kv: object) -> dict:
    data = copy.deepcopy(BASE)
    data.setdefault(table, {}).update(kv)
    return data


def test_sections_are_typed_and_keep_what_was_written() -> None:
    m = parse_manifest(copy.deepcopy(BASE), "x.toml")
    assert isinstance(m.input, InputSpec) and isinstance(m.outputs, OutputSpec) and m.head is None
    assert m.input.sample_rate == 16000 and m.input.n_mels is None
    assert m.outputs.labels == ("rock", "pop") and m.outputs.activation == "none"
    # to_dict is the table as written (provenance hashes it): no defaults, ints stay ints
    assert m.input.to_dict() == BASE["input"] and m.outputs.to_dict() == BASE["outputs"]
    assert m.to_dict()["head"] == {} and m.labels == ["rock", "pop"]


def test_head_table_is_typed() -> None:
    m = Registry().get("mood-happy-msd-musicnn-1")
    assert isinstance(m.head, HeadSpec) and m.head.embedder == "msd-musicnn-1"
    assert m.head.embedder_output == "dense" and m.embedder_id == "msd-musicnn-1"


@pytest.mark.parametrize(
    "data, msg",
    [
        (_with("input", sample_rat=16000), r"x\.toml \[input\]: unknown key 'sample_rat'"),
        (_with("input", sample_rate="16k"), r"x\.toml \[input\]: 'sample_rate' must be an integer"),
        (_with("input", n_mels=True), r"\[input\]: 'n_mels' must be an integer"),
        (_with("input", hop_length=0), r"\[input\]: 'hop_length' must be positive"),
        (_with("input", fmin="low"), r"\[input\]: 'fmin' must be a number"),
        (_with("input", frontend="vibes"), r"\[input\]: frontend 'vibes' is not one of"),
        (_with("outputs", labels=["a", ""]), r"\[outputs\]: 'labels' must be a list of non-empty"),
        (_with("outputs", labels=["a", "a"]), r"\[outputs\]: label 'a' is listed twice"),
        (_with("outputs", activation="relu"), r"\[outputs\]: activation must be none, sigmoid"),
        (_with("outputs", embedding_dim=-1), r"\[outputs\]: 'embedding_dim' must be positive"),
        ({**BASE, "outputs": ["x"]}, r"x\.toml: \[outputs\] must be a table"),
        ({**BASE, "backend": "coreml"}, r"x\.toml: backend 'coreml' is not one of onnx, tflite"),
        ({**BASE, "kind": "head"}, r"\[head\]: missing 'embedder'"),
        ({**BASE, "head": {"embedder": "e"}}, r"x\.toml \[head\]: missing 'input_name'"),
        ({**BASE, "head": {"embedder": "e", "input_name": 3}}, r"'input_name' must be a string"),
    ],
)
def test_bad_tables_are_refused_with_file_and_field(data: dict, msg: str) -> None:
    with pytest.raises(ManifestError, match=msg) as e:
        parse_manifest(data, "x.toml")
    assert "\n" not in str(e.value)


def test_errors_name_the_manifest_file(tmp_path: Path) -> None:
    p = tmp_path / "msd-musicnn-1.toml"
    text = Path(Registry().get("msd-musicnn-1").path).read_text()
    p.write_text(text.replace("n_mels = 96", "n_mels = 96.5"))
    with pytest.raises(ManifestError, match=rf"{p} \[input\]: 'n_mels' must be an integer"):
        load_manifest(p)
