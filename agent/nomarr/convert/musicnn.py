"""Convert the musicnn TensorFlow checkpoints (PyPI wheel ``musicnn==0.1.0``) to ONNX.

Why a hand-built graph instead of a generic TF→ONNX exporter: the upstream model is TF1 graph code
(``tf.compat.v1.layers``) that no longer builds on current TensorFlow without legacy shims, and a
generic exporter would carry training-only nodes (dropout switches, ``is_training`` placeholders).
Reading the raw variables and writing the inference graph ourselves gives a small, deterministic
file whose structure we understand, with batch norms folded where that is exact.

Run (conversion only; TensorFlow is never needed at run time)::

    pip install -e '.[convert]'
    python -m nomarr.convert.musicnn --wheel musicnn-0.1.0-py3-none-any.whl

The TFLite export (``msd_musicnn.tflite``) is made by TensorFlow's own converter from the upstream
model definition shipped in the wheel (imported, not copied), restored from the same checkpoint; it
needs ``tf_keras`` because that definition uses ``tf.compat.v1.layers``.

The wheel is fetched with ``pip download --no-deps musicnn==0.1.0`` when ``--wheel`` is omitted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

# upstream builds its graph with tf.compat.v1.layers, which on TF >= 2.16 needs the Keras 2 shim
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
N_FRAMES = 187
N_MELS = 96
OPSET = 18

MSD_LABELS = [
    "rock",
    "pop",
    "alternative",
    "indie",
    "electronic",
    "female vocalists",
    "dance",
    "00s",
    "alternative rock",
    "jazz",
    "beautiful",
    "metal",
    "chillout",
    "male vocalists",
    "classic rock",
    "soul",
    "indie rock",
    "Mellow",
    "electronica",
    "80s",
    "folk",
    "90s",
    "chill",
    "instrumental",
    "punk",
    "oldies",
    "blues",
    "hard rock",
    "ambient",
    "acoustic",
    "experimental",
    "female vocalist",
    "guitar",
    "Hip-Hop",
    "70s",
    "party",
    "country",
    "easy listening",
    "sexy",
    "catchy",
    "funk",
    "electro",
    "heavy metal",
    "Progressive rock",
    "60s",
    "rnb",
    "indie pop",
    "sad",
    "House",
    "happy",
]

MTT_LABELS = [
    "guitar",
    "classical",
    "slow",
    "techno",
    "strings",
    "drums",
    "electronic",
    "rock",
    "fast",
    "piano",
    "ambient",
    "beat",
    "violin",
    "vocal",
    "synth",
    "female",
    "indian",
    "opera",
    "male",
    "singing",
    "vocals",
    "no vocals",
    "harpsichord",
    "loud",
    "quiet",
    "flute",
    "woman",
    "male vocal",
    "no vocal",
    "pop",
    "soft",
    "sitar",
    "solo",
    "man",
    "classic",
    "choir",
    "voice",
    "new age",
    "dance",
    "male voice",
    "female vocal",
    "beats",
    "harp",
    "cello",
    "no voice",
    "weird",
    "country",
    "metal",
    "female voice",
    "choral",
]

# checkpoint directory inside the wheel -> (output file, labels)
MODELS = {
    "MSD_musicnn": ("msd_musicnn.onnx", MSD_LABELS),
    "MTT_musicnn": ("mtt_musicnn.onnx", MTT_LABELS),
}


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """All trainable/inference variables of a TF1 checkpoint, as float64 arrays.

    The wheel's ``checkpoint`` index file points at the author's home directory, so we open the
    tensor bundle by prefix instead of asking TF for the 'latest' checkpoint.
    """
    import tensorflow as tf  # conversion-only dependency

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    return {
        name: np.asarray(reader.get_tensor(name), dtype=np.float64)
        for name in reader.get_variable_to_shape_map()
        if "Adam" not in name and not name.startswith("beta")
    }


class _Graph:
    """Tiny ONNX graph accumulator; names are generated so the graph reads top to bottom."""

    def __init__(self) -> None:
        from onnx import helper

        self.h = helper
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, value: np.ndarray, dtype: type = np.float32) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs: object) -> str:
        self._n += 1
        out = name or f"{op_type.lower()}_{self._n}"
        self.nodes.append(
            self.h.make_node(op_type, inputs, [out], name=f"n{self._n}_{op_type}", **attrs)
        )
        return out


def _bn_affine(v: dict[str, np.ndarray], bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Inference batch norm as scale/shift: y = x * s + b."""
    s = v[f"{bn}/gamma"] / np.sqrt(v[f"{bn}/moving_variance"] + BN_EPS)
    b = v[f"{bn}/beta"] - v[f"{bn}/moving_mean"] * s
    return s, b


# build_onnx is long on purpose: it spells out the network layer by layer in upstream's order, so
# it reads side by side with musicnn's model definition; it runs once, offline, never at run time.
def build_onnx(v: dict[str, np.ndarray], labels: list[str], doc: str) -> object:
    """Write the musicnn inference graph (NCHW) from checkpoint variables.

    Layer naming follows creation order in the upstream model definition: batch_normalization_k and
    conv2d_k / dense_k numbered in the order the layers are built (input BN, two timbral blocks, three
    temporal blocks, three mid-end convolutions, back-end).
    """
    from onnx import TensorProto, checker, helper

    g = _Graph()
    n_classes = len(labels)

    def bn(x: str, name: str, rank: int) -> str:
        s, b = _bn_affine(v, name)
        shape = [1, -1] + [1] * (rank - 2)
        xs = g.op("Mul", [x, g.const(f"{name}.scale", s.reshape(shape))])
        return g.op("Add", [xs, g.const(f"{name}.shift", b.reshape(shape))])

    def conv_block(x: str, conv: str, bn_name: str, weight: np.ndarray, pads: list[int]) -> str:
        w = g.const(f"{conv}.weight", weight)
        b = g.const(f"{conv}.bias", v[f"{conv}/bias"])
        y = g.op("Conv", [x, w, b], pads=pads)
        y = g.op("Relu", [y])
        return bn(y, bn_name, len(weight.shape))

    # input [B, T=187, F=96] -> [B, 1, T, F]; the input BN has one channel: a scalar affine.
    x = g.op("Unsqueeze", ["melspectrogram", g.const("axes1", np.array([1]), np.int64)])
    x = bn(x, "batch_normalization", 4)

    def tf2d(kernel: np.ndarray) -> np.ndarray:  # [kh, kw, in, out] -> [out, in, kh, kw]
        return kernel.transpose(3, 2, 0, 1)

    fronts = []
    # timbral blocks: time padded 3+3 with zeros after the input BN, 'valid' in frequency
    for conv, bnn in (("conv2d", "batch_normalization_1"), ("conv2d_1", "batch_normalization_2")):
        y = conv_block(x, conv, bnn, tf2d(v[f"{conv}/kernel"]), pads=[3, 0, 3, 0])
        fronts.append(
            g.op("ReduceMax", [y, g.const(f"{conv}.axes", np.array([3]), np.int64)], keepdims=0)
        )
    # temporal blocks: TF 'same' padding for an even kernel k puts (k-1)//2 before and k//2 after
    for conv, bnn in (
        ("conv2d_2", "batch_normalization_3"),
        ("conv2d_3", "batch_normalization_4"),
        ("conv2d_4", "batch_normalization_5"),
    ):
        k = v[f"{conv}/kernel"].shape[0]
        y = conv_block(x, conv, bnn, tf2d(v[f"{conv}/kernel"]), pads=[(k - 1) // 2, 0, k // 2, 0])
        fronts.append(
            g.op("ReduceMax", [y, g.const(f"{conv}.axes", np.array([3]), np.int64)], keepdims=0)
        )
    front = g.op("Concat", fronts, axis=1)  # [B, 561, T]

    def tf1d(kernel: np.ndarray) -> np.ndarray:  # [k, in, 1, out] -> [out, in, k]
        return kernel[:, :, 0, :].transpose(2, 1, 0)

    # mid-end: 1-D convolutions over time across all features, with residual connections
    c1 = conv_block(front, "conv2d_5", "batch_normalization_6", tf1d(v["conv2d_5/kernel"]), [3, 3])
    c2 = conv_block(c1, "conv2d_6", "batch_normalization_7", tf1d(v["conv2d_6/kernel"]), [3, 3])
    r2 = g.op("Add", [c2, c1])
    c3 = conv_block(r2, "conv2d_7", "batch_normalization_8", tf1d(v["conv2d_7/kernel"]), [3, 3])
    r3 = g.op("Add", [c3, r2])
    mid = g.op("Concat", [front, c1, r2, r3], axis=1)  # [B, 753, T]

    # back-end: temporal max and mean pooling. Upstream flattens [max, mean] interleaved per
    # feature; we concatenate [all max, all mean] and permute the following weights to match.
    t_axis = g.const("time_axis", np.array([2]), np.int64)
    mx = g.op("ReduceMax", [mid, t_axis], keepdims=0)
    mn = g.op("ReduceMean", [mid, t_axis], keepdims=0)
    pooled = g.op("Concat", [mx, mn], axis=1)  # [B, 1506]
    n_feat = v["dense/kernel"].shape[0] // 2
    perm = np.concatenate([np.arange(n_feat) * 2, np.arange(n_feat) * 2 + 1])
    s9, b9 = _bn_affine(v, "batch_normalization_9")
    s9, b9 = s9[perm], b9[perm]
    w_dense = v["dense/kernel"][perm]  # [1506, 200]
    # BN before a dense layer folds exactly: W^T (s*x + b) + c = (s[:,None]*W)^T x + (W^T b + c)
    w_fold = s9[:, None] * w_dense
    b_fold = v["dense/bias"] + b9 @ w_dense
    # "dense" (pre-ReLU, upstream model/dense/BiasAdd) is what Essentia's musicnn heads consume
    dense = g.op(
        "Gemm",
        [pooled, g.const("dense.weight", w_fold), g.const("dense.bias", b_fold)],
        name="dense",
    )
    h = g.op("Relu", [dense])
    s10, b10 = _bn_affine(v, "batch_normalization_10")
    h = g.op("Mul", [h, g.const("bn10.scale", s10)])
    emb = g.op("Add", [h, g.const("bn10.shift", b10)], name="embedding")
    logits = g.op(
        "Gemm",
        [
            emb,
            g.const("dense_1.weight", v["dense_1/kernel"]),
            g.const("dense_1.bias", v["dense_1/bias"]),
        ],
    )
    g.op("Sigmoid", [logits], name="tags")

    graph = helper.make_graph(
        g.nodes,
        "musicnn",
        [
            helper.make_tensor_value_info(
                "melspectrogram", TensorProto.FLOAT, ["batch", N_FRAMES, N_MELS]
            )
        ],
        [
            helper.make_tensor_value_info("tags", TensorProto.FLOAT, ["batch", n_classes]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 200]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", 200]),
        ],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="nomarr-convert-musicnn",
        doc_string=doc,
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    for i, label in enumerate(labels):
        model.metadata_props.add(key=f"label.{i}", value=label)
    checker.check_model(model)
    return model


def export_tflite(wheel_dir: Path, name: str, out: Path) -> str:
    """TFLite flatbuffer of the upstream inference graph (dynamic batch), outputs tags + embedding."""
    import sys

    import tensorflow as tf

    sys.path.insert(0, str(wheel_dir))
    try:
        from musicnn import models as upstream  # the wheel's own model definition
    finally:
        sys.path.remove(str(wheel_dir))
    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS], name="melspectrogram")
        out_ = upstream.define_model(x, False, name, len(MODELS[name][1]))
        tags = tf.identity(tf.nn.sigmoid(out_[0]), name="tags")
        emb = tf.identity(out_[-1], name="embedding")
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, str(wheel_dir / "musicnn" / name) + "/")
            data = tf.compat.v1.lite.TFLiteConverter.from_session(sess, [x], [tags, emb]).convert()
    out.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    print(f"{name} -> {out} sha256={digest} size={len(data)}")
    return digest


def _fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "musicnn==0.1.0", "-d", str(dest)],
        check=True,
    )
    return next(dest.glob("musicnn-0.1.0-*.whl"))


def convert(wheel: Path, out_dir: Path, models: list[str]) -> dict[str, str]:
    """Convert the named checkpoints; returns {file name: sha256}."""

    out_dir.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
        for name in models:
            fname, labels = MODELS[name]
            variables = read_checkpoint(str(Path(tmp) / "musicnn" / name) + "/")
            doc = (
                f"musicnn {name} converted by nomarr from the musicnn==0.1.0 wheel "
                "(sha256 of wheel: " + hashlib.sha256(wheel.read_bytes()).hexdigest() + "). "
                "Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019; ISC licence."
            )
            model = build_onnx(variables, labels, doc)
            data = model.SerializeToString()
            (out_dir / fname).write_bytes(data)
            hashes[fname] = hashlib.sha256(data).hexdigest()
            print(f"{name} -> {out_dir / fname} sha256={hashes[fname]} size={len(data)}")
        if "MSD_musicnn" in models:
            hashes["msd_musicnn.tflite"] = export_tflite(
                Path(tmp), "MSD_musicnn", out_dir / "msd_musicnn.tflite"
            )
        lic = Path(tmp) / "musicnn-0.1.0.dist-info" / "LICENSE.md"
        (out_dir / "LICENSE-musicnn.txt").write_text(
            "The musicnn models in this folder are converted from the checkpoints in the PyPI wheel\n"
            "musicnn==0.1.0 (https://github.com/jordipons/musicnn). Their licence notice:\n\n"
            + lic.read_text()
        )

    return hashes


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: convert and print the hashes to put into the manifests."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--wheel", type=Path, help="musicnn-0.1.0 wheel (downloaded with pip when omitted)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "models" / "builtin",
        help="output folder (default: the agent package's built-in model folder)",
    )
    p.add_argument("--model", action="append", choices=sorted(MODELS), help="default: all")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or _fetch_wheel(Path(tmp))
        convert(wheel, args.out, args.model or sorted(MODELS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
