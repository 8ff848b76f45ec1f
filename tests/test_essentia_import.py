"""Essentia metadata import, TOML writing, and the shipped model manifests.

The metadata dicts below are modelled on the files Essentia publishes next to its models
(mood_happy-discogs-effnet-1.json, discogs-effnet-bs64-1.json): same keys, same TF graph names,
same class order, shortened where the content does not matter.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest
from nomarr.models.essentia_import import dump_manifest_toml, manifest_from_essentia_json

REPO = Path(__file__).resolve().parents[1]
MANIFEST_DIR = REPO / "models" / "manifests"
BUILTIN_IDS = {"msd-musicnn-1", "mtt-musicnn-1"}
COMPONENT = re.compile(r"^[a-z0-9-]+$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

MOOD_HAPPY = {
    "name": "mood happy",
    "type": "multi-class classifier",
    "link": "https://essentia.upf.edu/models/classification-heads/mood_happy/mood_happy-discogs-effnet-1.pb",
    "version": "2",
    "description": "classification of music by mood (happy/non-happy)",
    "author": "Pablo Alonso",
    "release_date": "2022-08-25",
    "framework": "tensorflow",
    "framework_version": "2.4.0",
    "classes": ["happy", "non_happy"],
    "model_types": ["frozen_model"],
    "dataset": {
        "name": "In-house MTG collection",
        "size": "302 full tracks + excerpts, 139/163 per class",
        "metrics": {"5-fold_cross_validation_normalized_accuracy": 0.87},
    },
    "schema": {
        "inputs": [{"name": "model/Placeholder", "type": "float", "shape": [1280]}],
        "outputs": [
            {
                "name": "model/Softmax",
                "type": "float",
                "shape": [2],
                "op": "Softmax",
                "output_purpose": "predictions",
            },
            {
                "name": "model/dense/BiasAdd",
                "type": "float",
                "shape": [100],
                "op": "fully connected",
                "description": "penultimate layer",
                "output_purpose": "",
            },
        ],
    },
    "citation": "",
    "inference": {
        "sample_rate": 16000,
        "algorithm": "TensorflowPredict2D",
        "embedding_model": {
            "algorithm": "TensorflowPredictEffnetDiscogs",
            "model_name": "discogs-effnet-bs64-1",
            "link": "https://essentia.upf.edu/models/music-style-classification/discogs-effnet/discogs-effnet-bs64-1.pb",
        },
    },
}

EFFNET = {
    "name": "EffnetDiscogs",
    "type": "Music style classification and embeddings",
    "link": "https://essentia.upf.edu/models/feature-extractors/discogs-effnet/discogs-effnet-bs64-1.pb",
    "version": "1",
    "description": "Prediction of the top-400 music styles in the Discogs-4M dataset (unreleased)",
    "framework": "tensorflow",
    "framework_version": "2.8.0",
    "classes": ["Blues---Boogie Woogie", "Blues---Chicago Blues"]
    + [f"Style---{i}" for i in range(398)],
    "model_types": ["frozen_model", "SavedModel", "onnx"],
    "schema": {
        "inputs": [
            {"name": "serving_default_melspectrogram", "type": "float", "shape": [64, 128, 96]}
        ],
        "outputs": [
            {
                "name": "PartitionedCall:0",
                "type": "float",
                "shape": [64, 400],
                "op": "Sigmoid",
                "output_purpose": "predictions",
            },
            {
                "name": "PartitionedCall:1",
                "type": "float",
                "shape": [64, 1280],
                "op": "Flatten",
                "output_purpose": "embeddings",
            },
        ],
    },
    "inference": {"sample_rate": 16000, "algorithm": "TensorflowPredictEffnetDiscogs"},
}


# --- importer -------------------------------------------------------------------------------


def test_head_kind_labels_and_namespace():
    m = manifest_from_essentia_json(copy.deepcopy(MOOD_HAPPY))
    assert m["kind"] == "head"
    assert m["id"] == "mood-happy-discogs-effnet-1"
    assert m["outputs"]["labels"] == ["happy", "non_happy"]
    assert m["namespace"] == {
        "framework": "onnx",
        "embedder": "effnet",
        "embedder_id": "discogs-1",
        "model": "mood-happy",
        "model_id": "1",
    }
    for value in m["namespace"].values():
        assert COMPONENT.match(value), value
    assert m["licence"] == "CC-BY-NC-SA-4.0"
    assert m["backend"] == "onnx" and m["builtin"] is False


def test_head_tensor_names_follow_the_onnx_export_not_the_tf_graph():
    m = manifest_from_essentia_json(copy.deepcopy(MOOD_HAPPY))
    assert m["input"] == {"frontend": "embedding", "input_name": "embeddings"}
    assert m["head"] == {"embedder": "discogs-effnet-bsdynamic-1", "input_name": "embeddings"}
    assert m["outputs"]["scores"] == "activations"
    # Softmax is inside the graph: applying it again would flatten every score towards 0.5.
    assert m["outputs"]["activation"] == "none"
    assert "embedding" not in m["outputs"]  # the penultimate layer has no output_purpose


def test_head_file_and_url_come_from_the_link():
    m = manifest_from_essentia_json(copy.deepcopy(MOOD_HAPPY))
    model = [f for f in m["files"] if f["role"] == "model"]
    assert model == [
        {
            "name": "mood_happy-discogs-effnet-1.onnx",
            "role": "model",
            "url": "https://essentia.upf.edu/models/classification-heads/mood_happy/mood_happy-discogs-effnet-1.onnx",
        }
    ]
    assert "sha256" not in model[0]  # pinned on first download
    assert any(f["role"] == "licence" for f in m["files"])


def test_explicit_file_and_url_win():
    m = manifest_from_essentia_json(
        copy.deepcopy(MOOD_HAPPY), onnx_file="happy.onnx", url="https://example.org/x/happy.onnx"
    )
    model = next(f for f in m["files"] if f["role"] == "model")
    assert model["name"] == "happy.onnx"
    assert model["url"] == "https://example.org/x/happy.onnx"


def test_embedder_from_effnet_metadata():
    m = manifest_from_essentia_json(copy.deepcopy(EFFNET))
    assert m["kind"] == "embedder"
    # Essentia publishes this network as ONNX only in its dynamic-batch build.
    assert m["id"] == "discogs-effnet-bsdynamic-1"
    assert m["files"][0]["url"].endswith("/discogs-effnet/discogs-effnet-bsdynamic-1.onnx")
    assert m["namespace"]["embedder"] == "effnet"
    assert m["namespace"]["embedder_id"] == "discogs-1"
    assert m["namespace"]["model"] == "discogs400"
    assert m["input"]["input_name"] == "melspectrogram"
    assert m["input"]["frontend"] == "effnet-mel"
    inp = m["input"]
    assert (inp["patch_frames"], inp["patch_hop"], inp["n_mels"]) == (128, 62, 96)
    assert m["input"]["sample_rate"] == 16000
    assert m["outputs"]["scores"] == "activations"
    assert m["outputs"]["embedding"] == "embeddings"
    assert m["outputs"]["embedding_dim"] == 1280
    assert len(m["outputs"]["labels"]) == 400


def test_head_of_the_musicnn_embedder_points_at_the_builtin_id():
    meta = copy.deepcopy(MOOD_HAPPY)
    meta["link"] = meta["link"].replace("discogs-effnet", "msd-musicnn")
    meta["schema"]["inputs"][0]["shape"] = [200]
    meta["inference"]["embedding_model"] = {
        "algorithm": "TensorflowPredictMusiCNN",
        "model_name": "msd-musicnn-1",
    }
    m = manifest_from_essentia_json(meta)
    assert m["head"]["embedder"] == "msd-musicnn-1"
    assert m["namespace"]["embedder"] == "musicnn"
    assert m["namespace"]["embedder_id"] == "msd-1"


def test_logit_outputs_get_an_activation_from_the_model_type():
    meta = copy.deepcopy(MOOD_HAPPY)
    meta["schema"]["outputs"][0]["op"] = "fully connected"
    assert manifest_from_essentia_json(meta)["outputs"]["activation"] == "softmax"
    meta["type"] = "multi-label classifier"
    assert manifest_from_essentia_json(meta)["outputs"]["activation"] == "sigmoid"


def test_dotted_versions_become_hyphens():
    meta = copy.deepcopy(MOOD_HAPPY)
    meta["link"] = "https://example.org/m/mood_happy-discogs-effnet.pb"
    meta["version"] = "1.2.3"
    assert manifest_from_essentia_json(meta)["namespace"]["model_id"] == "1-2-3"


def test_licence_field_is_used_when_present():
    meta = copy.deepcopy(MOOD_HAPPY)
    meta["license"] = "CC BY-NC-ND 4.0"
    assert manifest_from_essentia_json(meta)["licence"] == "CC-BY-NC-ND-4.0"


@pytest.mark.parametrize(
    "meta",
    [
        [],
        {"name": "x"},
        {"model": "not essentia", "version": 3},
        {k: v for k, v in MOOD_HAPPY.items() if k != "schema"},
        {k: v for k, v in MOOD_HAPPY.items() if k != "inference"},
        {**MOOD_HAPPY, "schema": {"inputs": []}},
        {**MOOD_HAPPY, "schema": {"inputs": [{"name": "x"}], "outputs": "y"}},
        {**MOOD_HAPPY, "inference": {"algorithm": "TensorflowPredict2D"}},
    ],
)
def test_not_essentia_metadata_is_refused(meta):
    with pytest.raises(ValueError, match="not an Essentia model metadata file"):
        manifest_from_essentia_json(meta)


def test_predictions_without_classes_are_refused():
    meta = copy.deepcopy(MOOD_HAPPY)
    del meta["classes"]
    with pytest.raises(ValueError, match="classes"):
        manifest_from_essentia_json(meta)


def test_unknown_front_end_is_refused():
    meta = copy.deepcopy(EFFNET)
    meta["inference"]["algorithm"] = "TensorflowPredictVGGish"
    with pytest.raises(ValueError, match="no audio front end"):
        manifest_from_essentia_json(meta)


def test_missing_link_needs_a_file_or_url():
    meta = copy.deepcopy(MOOD_HAPPY)
    del meta["link"]
    with pytest.raises(ValueError, match="pass onnx_file= or url="):
        manifest_from_essentia_json(meta)
    m = manifest_from_essentia_json(
        meta, url="https://example.org/mood_happy-discogs-effnet-1.onnx"
    )
    assert m["id"] == "mood-happy-discogs-effnet-1"


# --- TOML writer ----------------------------------------------------------------------------


@pytest.mark.parametrize("meta", [MOOD_HAPPY, EFFNET], ids=["head", "embedder"])
def test_toml_round_trip(meta):
    m = manifest_from_essentia_json(copy.deepcopy(meta))
    text = dump_manifest_toml(m)
    assert tomllib.loads(text) == m
    assert text.index("[namespace]") < text.index("[[files]]") < text.index("[outputs]")


def test_toml_round_trip_of_awkward_values():
    m = manifest_from_essentia_json(copy.deepcopy(MOOD_HAPPY))
    m["description"] = 'quotes " and \\ backslash, tab\t, newline\n, é, 🎵, del \x7f'
    m["outputs"]["labels"] = ["Funk / Soul---Boogie", "Rock & Roll", 'say "hi"']
    m["input"]["weird key.with dot"] = 1.5
    m["input"]["flag"] = True
    m["input"]["nothing"] = None  # TOML has no null: left out
    text = dump_manifest_toml(m)
    back = tomllib.loads(text)
    expected = copy.deepcopy(m)
    del expected["input"]["nothing"]
    assert back == expected


def test_toml_writer_refuses_unwritable_values():
    with pytest.raises(ValueError):
        dump_manifest_toml({"id": "x", "bad": {1, 2}})


# --- the shipped manifests ------------------------------------------------------------------

TOP_KEYS = (
    "schema",
    "id",
    "kind",
    "name",
    "description",
    "licence",
    "licence_url",
    "source_url",
    "builtin",
    "backend",
    "namespace",
    "files",
    "input",
    "outputs",
)
MANIFEST_PATHS = sorted(MANIFEST_DIR.glob("*.toml"))


def _load_all() -> dict[str, dict]:
    return {p.stem: tomllib.loads(p.read_text(encoding="utf-8")) for p in MANIFEST_PATHS}


def test_there_are_manifests():
    assert MANIFEST_PATHS, f"no manifests in {MANIFEST_DIR}"


@pytest.mark.parametrize("path", MANIFEST_PATHS, ids=[p.stem for p in MANIFEST_PATHS])
def test_manifest_is_well_formed(path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    for key in TOP_KEYS:
        assert key in data, f"{path.name}: missing {key!r}"
    assert data["schema"] == 1
    assert data["id"] == path.stem, f"{path.name}: id must equal the file name"
    assert COMPONENT.match(data["id"])
    assert data["kind"] in ("embedder", "head", "clap-audio", "clap-text")
    assert data["backend"] in ("onnx", "tflite")
    assert isinstance(data["builtin"], bool)

    ns = data["namespace"]
    for key in ("framework", "embedder", "embedder_id", "model", "model_id"):
        assert COMPONENT.match(ns[key]), f"{path.name}: namespace.{key}={ns[key]!r}"

    roles = []
    for f in data["files"]:
        assert f["name"] and "/" not in f["name"], f
        assert f["role"] in ("model", "tokenizer", "vocab", "config", "licence"), f
        assert f["url"] == "builtin" or f["url"].startswith("https://"), f
        if "sha256" in f:
            assert SHA256.match(f["sha256"]), f
        if "size" in f:
            assert isinstance(f["size"], int) and f["size"] > 0, f
        roles.append(f["role"])
    assert roles.count("model") == 1

    inp, outs = data["input"], data["outputs"]
    if data["kind"] in ("embedder", "clap-audio"):
        assert isinstance(inp["sample_rate"], int) and inp["input_name"]
    if data["kind"] == "head":
        assert inp["frontend"] == "embedding"
        assert data["head"]["embedder"] and data["head"]["input_name"]
    if data["kind"] == "clap-text":
        assert "tokenizer" in roles
    if "scores" in outs:
        labels = outs["labels"]
        assert labels and all(isinstance(label, str) and label for label in labels)
        assert len(set(labels)) == len(labels), f"{path.name}: duplicate labels"
        assert outs["activation"] in ("none", "sigmoid", "softmax")
    if "embedding" in outs:
        assert isinstance(outs["embedding_dim"], int) and outs["embedding_dim"] > 0


def test_heads_reference_existing_embedders():
    manifests = _load_all()
    known = set(manifests) | BUILTIN_IDS
    for mid, data in manifests.items():
        if data["kind"] == "head":
            target = data["head"]["embedder"]
            assert target in known, f"{mid}: embedder {target!r} has no manifest"
            if target in manifests:
                assert manifests[target]["kind"] == "embedder", mid
                assert "embedding" in manifests[target]["outputs"], mid


def test_clap_towers_come_in_pairs():
    manifests = _load_all()
    towers = {}
    for data in manifests.values():
        if data["kind"] in ("clap-audio", "clap-text"):
            key = (data["namespace"]["embedder"], data["namespace"]["embedder_id"])
            towers.setdefault(key, set()).add(data["kind"])
    for key, kinds in towers.items():
        assert kinds == {"clap-audio", "clap-text"}, key
    for data in manifests.values():
        if data["kind"] in ("clap-audio", "clap-text"):
            assert data["outputs"]["embedding_dim"] == 512


def test_essentia_manifests_use_the_onnx_export_names():
    for data in _load_all().values():
        if "essentia.upf.edu" not in data["source_url"] or data["builtin"]:
            continue
        if data["kind"] == "head":
            assert data["head"]["input_name"] == "embeddings"
            assert data["outputs"]["scores"] == "activations"
        else:
            assert data["input"]["input_name"] == "melspectrogram"
            assert data["outputs"]["embedding"] == "embeddings"
