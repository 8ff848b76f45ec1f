"""The built-in musicnn must reproduce upstream musicnn (TensorFlow, float32 log) on real music.

../shared/reference/musicnn_msd.json holds upstream's per-track mean tag probabilities and mean
penultimate embeddings over non-overlapping 3 s patches; `--profile full` computes the same thing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from nomarr.models.registry import Registry
from nomarr.pipeline.analyze import Analyzer, ModelSet
from nomarr.pipeline.profiles import get_profile

from .conftest import REFERENCE

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def reference() -> dict:
    path = REFERENCE / "musicnn_msd.json"
    if not path.exists():
        pytest.skip(f"reference outputs not found at {path}")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(
        ModelSet(Registry(), ["msd-musicnn-1"], provider="CPUExecutionProvider"),
        get_profile("full"),
    )


def test_labels_match_reference(reference: dict) -> None:
    m = Registry().get("msd-musicnn-1")
    assert m.labels == reference["labels"]


def test_every_corpus_track_matches_upstream(reference: dict, analyzer: Analyzer, corpus) -> None:
    labels = reference["labels"]
    failures = []
    for name, ref in sorted(reference["tracks"].items()):
        path = corpus / name
        if not path.exists():
            continue
        r = analyzer.analyze(path).results["msd-musicnn-1"]
        scores = np.array([r.scores[lab] for lab in labels])
        tag_diff = float(np.abs(scores - np.array(ref["tags_mean"])).max())
        emb_diff = float(np.abs(r.embedding - np.array(ref["embedding_mean"])).max())
        top5 = [labels[i] for i in np.argsort(-scores, kind="stable")[:5]]
        if (
            r.n_patches != ref["n_patches"]
            or tag_diff > 1e-3
            or top5 != ref["top5"]
            or emb_diff > 1e-2
        ):
            failures.append(
                (name, r.n_patches, ref["n_patches"], tag_diff, emb_diff, top5, ref["top5"])
            )
    assert not failures, failures


def test_tflite_export_matches_upstream_too(reference: dict, corpus) -> None:
    pytest.importorskip("ai_edge_litert")
    an = Analyzer(ModelSet(Registry(), ["msd-musicnn-1-tflite"], threads=1), get_profile("full"))
    labels = reference["labels"]
    for name in ("sh01.ogg", "sh07.ogg"):
        r = an.analyze(corpus / name).results["msd-musicnn-1-tflite"]
        assert r.provider == "TFLite" and r.prefix.startswith("nom:tflite_musicnn_msd-1_msd50_1_")
        scores = np.array([r.scores[lab] for lab in labels])
        assert np.abs(scores - np.array(reference["tracks"][name]["tags_mean"])).max() < 1e-3
