"""Small generated ONNX models with the same input/output signatures as the real ones.

They prove the plumbing (registry, heads, provider checks) for models whose real weights cannot be
downloaded on the build machines. Their numbers mean nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph: onnx.GraphProto, path: Path) -> str:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="nomarr-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mel_embedder(
    path: Path,
    frames: int = 128,
    n_mels: int = 96,
    n_labels: int = 400,
    dim: int = 1280,
    seed: int = 0,
) -> str:
    """Like discogs-effnet-bsdynamic-1: melspectrogram [B,frames,96] -> activations, embeddings."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(0, 0.1, (n_mels, dim)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.1, (dim, n_labels)).astype(np.float32), "w2")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["melspectrogram", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w1"], ["embeddings"]),
        helper.make_node("MatMul", ["embeddings", "w2"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["activations"]),
    ]
    g = helper.make_graph(
        nodes,
        "fixture-embedder",
        [
            helper.make_tensor_value_info(
                "melspectrogram", TensorProto.FLOAT, ["batch", frames, n_mels]
            )
        ],
        [
            helper.make_tensor_value_info("activations", TensorProto.FLOAT, ["batch", n_labels]),
            helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", dim]),
        ],
        initializer=[w1, w2, axes],
    )
    return _save(g, path)


def head(
    path: Path, dim: int = 200, n_labels: int = 2, seed: int = 1, input_name: str = "embeddings"
) -> str:
    """Like an Essentia classification head: embeddings [B,dim] -> activations [B,n] (softmax)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (dim, n_labels)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", [input_name, "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["activations"], axis=-1),
    ]
    g = helper.make_graph(
        nodes,
        "fixture-head",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("activations", TensorProto.FLOAT, ["batch", n_labels])],
        initializer=[w],
    )
    return _save(g, path)


def write_manifest(dir_: Path, text: str) -> Path:
    """Write a manifest whose file name is its id."""
    import tomllib

    mid = tomllib.loads(text)["id"]
    p = dir_ / f"{mid}.toml"
    p.write_text(text)
    return p


def clap_audio(path: Path, n_mels: int = 64, dim: int = 512, seed: int = 2) -> str:
    """Like the CLAP audio tower: input_features [B,1,1001,64] -> audio_embeds [B,512]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (n_mels, dim)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([1, 2], np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["input_features", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["audio_embeds"]),
    ]
    g = helper.make_graph(
        nodes,
        "fixture-clap-audio",
        [
            helper.make_tensor_value_info(
                "input_features", TensorProto.FLOAT, ["batch", 1, 1001, n_mels]
            )
        ],
        [helper.make_tensor_value_info("audio_embeds", TensorProto.FLOAT, ["batch", dim])],
        initializer=[w, axes],
    )
    return _save(g, path)


def clap_text(path: Path, vocab: int = 64, dim: int = 512, seed: int = 3) -> str:
    """Like the CLAP text tower: input_ids, attention_mask [B,S] -> text_embeds [B,512]."""
    rng = np.random.default_rng(seed)
    table = numpy_helper.from_array(rng.normal(0, 1.0, (vocab, dim)).astype(np.float32), "table")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tok"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "minus1"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes"], ["text_embeds"], keepdims=0),
    ]
    g = helper.make_graph(
        nodes,
        "fixture-clap-text",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", dim])],
        initializer=[table, axes, numpy_helper.from_array(np.array([-1], np.int64), "minus1")],
    )
    return _save(g, path)


def word_tokenizer(path: Path, words: list[str]) -> None:
    """A tiny word-level tokenizer.json (the real CLAP one is RoBERTa BPE; same file format)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(path))
