"""Turn an Essentia model metadata file (``<model>.json``) into a nomarr manifest.

Essentia publishes a small JSON document next to every model (name, classes, TensorFlow graph
schema, inference recipe). ``nomarr models import`` reads one so that a user can add any of the
dozens of Essentia classification heads without hand-writing TOML; the result follows
``docs/manifests.md`` and is written with :func:`dump_manifest_toml`.

Three facts about the Essentia files shape the conversion and are easy to get wrong:

* ``schema`` describes the *TensorFlow* graph (``model/Placeholder``, ``PartitionedCall:1``…).
  Essentia's ONNX exports rename graph inputs and outputs after their purpose: a feature
  extractor takes ``melspectrogram`` and returns ``activations`` and ``embeddings``; a head takes
  ``embeddings`` and returns ``activations``. The ONNX names are therefore derived from
  ``output_purpose``, not copied from ``schema``, whenever the metadata describes a TensorFlow
  model.
* Heads already end in ``Softmax``/``Sigmoid`` inside the graph (``op`` in ``schema``), so the
  manifest says ``activation = "none"``; applying it again would squash every score towards 0.5.
* Heads name the embedder they were trained on (``inference.embedding_model.model_name``, usually
  ``discogs-effnet-bs64-1``), but Essentia ships that embedder as ONNX only in its dynamic-batch
  build ``discogs-effnet-bsdynamic-1``: same weights, different batch dimension. Heads are wired to
  the build nomarr can actually run.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from nomarr_client.tags import component as slug

ESSENTIA_LICENCE = "CC-BY-NC-SA-4.0"
ESSENTIA_LICENCE_URL = "https://essentia.upf.edu/models/LICENSE"
ESSENTIA_SOURCE_URL = "https://essentia.upf.edu/models.html"
ESSENTIA_LICENCE_FILE = "LICENSE-essentia-models.txt"

# Tokens that name a network architecture inside an Essentia model name
# ("mood_happy-discogs-effnet-1", "msd-musicnn-1", "mood_acoustic-openl3-music-mel128-emb512-1").
_ARCHITECTURES = ("effnet", "musicnn", "vggish", "yamnet", "openl3", "maest", "tempocnn", "vgg")

# Batch-size variants are different exports of the same weights; numbers from them may share keys.
_BATCH_VARIANT = re.compile(r"^bs(\d+|dynamic)$")

# Embedder names used in head metadata -> the embedder build that exists as ONNX.
_ONNX_EMBEDDER = {
    "discogs-effnet-bs64-1": "discogs-effnet-bsdynamic-1",
    "discogs-effnet-bs1-1": "discogs-effnet-bsdynamic-1",
}

# How audio becomes input for the feature extractors nomarr has a front end for. Hops are Essentia's
# own defaults (TensorflowPredictEffnetDiscogs: 62 frames, TensorflowPredictMusiCNN: 93 frames).
_FRONTENDS: dict[str, dict[str, Any]] = {
    "TensorflowPredictEffnetDiscogs": {"frontend": "effnet-mel", "patch_hop": 62},
    "TensorflowPredictMusiCNN": {"frontend": "musicnn-mel", "patch_hop": 93},
}
_MEL_DEFAULTS = {"n_fft": 512, "hop_length": 256, "log": "log10_1p_10000"}

# Ops that are an activation already applied inside the graph, and ops that leave raw logits.
_IN_GRAPH_ACTIVATIONS = {"softmax", "sigmoid", "identity"}
_LOGIT_OPS = {"fully connected", "biasadd", "matmul", "add", "dense"}

_TOP_ORDER = (
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
)
_TABLE_ORDER = ("namespace", "files", "input", "outputs", "head")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _split_name(name: str) -> tuple[list[str], str | None]:
    """Split ``discogs-effnet-bs64-1`` into its tokens and the trailing version (if any)."""
    tokens = [t for t in name.split("-") if t]
    if len(tokens) > 1 and tokens[-1].isdigit():
        return tokens[:-1], tokens[-1]
    return tokens, None


def _embedder_components(family: list[str], version: str | None) -> tuple[str, str]:
    """``(embedder, embedder_id)`` from the tokens of an embedder name.

    ``msd-musicnn-1`` -> (musicnn, msd-1) and ``discogs-effnet-bs64-1`` -> (effnet, discogs-1):
    the architecture is the embedder, the training data plus the release is its id, and batch-size
    variants are dropped because they do not change the numbers.
    """
    arch_at = next((i for i, t in enumerate(family) if t.lower() in _ARCHITECTURES), None)
    if arch_at is None:
        arch_at = 0
    arch = family[arch_at]
    rest = [t for i, t in enumerate(family) if i != arch_at and not _BATCH_VARIANT.match(t.lower())]
    if version is not None:
        rest.append(version)
    return slug(arch), slug("-".join(rest) or "1")


def _model_stem(meta: dict[str, Any], onnx_file: str | None, url: str | None) -> str:
    """The Essentia model name (file name without extension) this metadata describes."""
    for candidate in (onnx_file, url, meta.get("link")):
        if isinstance(candidate, str) and candidate.strip():
            base = candidate.strip().rstrip("/").rsplit("/", 1)[-1]
            return re.sub(r"\.(onnx|pb|tflite|json)$", "", base)
    raise ValueError(
        "cannot tell which model file this metadata describes: it has no 'link'; "
        "pass onnx_file= or url="
    )


def _check_metadata(meta: Any) -> None:
    """Refuse documents that are not Essentia model metadata, naming what is missing."""
    if not isinstance(meta, dict):
        raise ValueError("not an Essentia model metadata file: expected a JSON object")
    missing = [k for k in ("name", "schema", "inference") if k not in meta]
    if missing:
        raise ValueError(
            f"not an Essentia model metadata file: missing {', '.join(repr(k) for k in missing)}"
        )
    schema = meta["schema"]
    if (
        not isinstance(schema, dict)
        or not isinstance(schema.get("inputs"), list)
        or not isinstance(schema.get("outputs"), list)
    ):
        raise ValueError(
            "not an Essentia model metadata file: 'schema' must hold 'inputs' and 'outputs' lists"
        )
    if not schema["inputs"] or not all(
        isinstance(i, dict) and "name" in i for i in schema["inputs"]
    ):
        raise ValueError("not an Essentia model metadata file: 'schema.inputs' has no named input")
    if not all(isinstance(o, dict) and "name" in o for o in schema["outputs"]):
        raise ValueError(
            "not an Essentia model metadata file: every 'schema.outputs' entry needs a name"
        )
    inference = meta["inference"]
    if not isinstance(inference, dict) or "sample_rate" not in inference:
        raise ValueError("not an Essentia model metadata file: 'inference.sample_rate' is missing")


def _output(meta: dict[str, Any], purpose: str) -> dict[str, Any] | None:
    for out in meta["schema"]["outputs"]:
        if str(out.get("output_purpose", "")).strip().lower() == purpose:
            return out
    return None


def _last_dim(entry: dict[str, Any]) -> int | None:
    shape = entry.get("shape")
    if isinstance(shape, list) and shape and isinstance(shape[-1], int):
        return shape[-1]
    return None


def _activation(meta: dict[str, Any], predictions: dict[str, Any]) -> str:
    """What the runtime must still apply to the scores output.

    Essentia graphs normally end in Softmax/Sigmoid (or Identity for regressors), so nothing is
    left to do. Only when the predictions output is a bare linear layer do we fall back on the
    model type: multi-label classifiers get a sigmoid, multi-class ones a softmax.
    """
    op = str(predictions.get("op", "")).strip().lower()
    if op in _IN_GRAPH_ACTIVATIONS or not op:
        return "none"
    if op in _LOGIT_OPS:
        kind = str(meta.get("type", "")).lower()
        if "multi-label" in kind:
            return "sigmoid"
        if "multi-class" in kind or "classifier" in kind:
            return "softmax"
    return "none"


def _licence(meta: dict[str, Any]) -> tuple[str, str]:
    raw = meta.get("license") or meta.get("licence")
    if isinstance(raw, str) and raw.strip():
        return re.sub(r"\s+", "-", raw.strip()), ""
    return ESSENTIA_LICENCE, ESSENTIA_LICENCE_URL


def _components(
    meta: dict[str, Any], stem: str, is_head: bool, has_predictions: bool
) -> tuple[str, str, str, str]:
    """(embedder, embedder_id, model, model_id) of the key namespace, from Essentia's names."""
    tokens, version = _split_name(stem)
    if is_head:
        task, family = tokens[0], tokens[1:]
        emb_tokens, emb_version = _split_name(
            str(meta["inference"]["embedding_model"]["model_name"])
        )
        embedder, embedder_id = _embedder_components(emb_tokens or family, emb_version)
        model = slug(task)
    else:
        embedder, embedder_id = _embedder_components(tokens, version)
        dataset = tokens[0] if tokens and tokens[0].lower() not in _ARCHITECTURES else embedder
        model = slug(f"{dataset}{len(meta['classes'])}") if has_predictions else "embedding"
    model_id = slug(version if version is not None else str(meta.get("version", "1")))
    return embedder, embedder_id, model, model_id


def _audio_input(
    stem: str, inference: dict[str, Any], schema_in: dict[str, Any], input_name: str
) -> dict[str, Any]:
    """The ``[input]`` table of an audio embedder: its front end and patch geometry."""
    algorithm = str(inference.get("algorithm", ""))
    if algorithm not in _FRONTENDS:
        raise ValueError(
            f"{stem}: no audio front end for Essentia algorithm {algorithm!r} "
            f"(known: {', '.join(sorted(_FRONTENDS))})"
        )
    shape = schema_in.get("shape") if isinstance(schema_in.get("shape"), list) else []
    if len(shape) < 2 or not all(isinstance(d, int) for d in shape[-2:]):
        raise ValueError(f"{stem}: input shape {shape!r} does not give frames x mel bands")
    spec = _FRONTENDS[algorithm]
    return {
        "sample_rate": int(inference["sample_rate"]),
        "frontend": spec["frontend"],
        "input_name": input_name,
        "patch_frames": shape[-2],
        "patch_hop": spec["patch_hop"],
        "n_fft": _MEL_DEFAULTS["n_fft"],
        "hop_length": _MEL_DEFAULTS["hop_length"],
        "n_mels": shape[-1],
        "log": _MEL_DEFAULTS["log"],
    }


def _download_url(meta: dict[str, Any], stem: str, file_name: str) -> str:
    """Where Essentia publishes the ONNX export: beside the ``link``'s ``.pb`` file."""
    link = meta.get("link")
    if not isinstance(link, str) or "/" not in link:
        raise ValueError(f"cannot derive a download URL for {stem!r}: no 'link'; pass url=")
    return f"{link.rsplit('/', 1)[0]}/{file_name}"


def _outputs(
    meta: dict[str, Any],
    predictions: dict[str, Any] | None,
    embeddings: dict[str, Any] | None,
    scores_name: str,
    embedding_name: str,
) -> dict[str, Any]:
    """The ``[outputs]`` table: score tensor and activation, embedding tensor and size, labels."""
    outputs: dict[str, Any] = {}
    if predictions is not None:
        outputs["scores"] = scores_name
        outputs["activation"] = _activation(meta, predictions)
    if embeddings is not None:
        outputs["embedding"] = embedding_name
        dim = _last_dim(embeddings)
        if dim is not None:
            outputs["embedding_dim"] = dim
    if predictions is not None:
        outputs["labels"] = list(meta["classes"])
    return outputs


def _checked_outputs(meta: dict, stem: str) -> tuple[dict | None, dict | None]:
    """The predictions and embeddings outputs; at least one must exist, and predictions need
    their class names."""
    predictions = _output(meta, "predictions")
    embeddings = _output(meta, "embeddings")
    if predictions is None and embeddings is None:
        raise ValueError(
            f"{stem}: no output has output_purpose 'predictions' or 'embeddings'; nothing to read"
        )
    classes = meta.get("classes")
    if predictions is not None and (
        not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes)
    ):
        raise ValueError(
            f"{stem}: a predictions output needs a non-empty 'classes' list of strings"
        )
    return predictions, embeddings


def _io_names(
    schema_in: dict,
    predictions: dict | None,
    embeddings: dict | None,
    from_tensorflow: bool,
    is_head: bool,
) -> tuple[str, str, str]:
    """(input, scores, embedding) tensor names. Essentia's ONNX exports of TensorFlow models use
    fixed names; a model published as ONNX names them in its schema."""
    if from_tensorflow:
        return ("embeddings" if is_head else "melspectrogram"), "activations", "embeddings"
    return (
        str(schema_in["name"]),
        str(predictions["name"]) if predictions else "",
        str(embeddings["name"]) if embeddings else "",
    )


def manifest_from_essentia_json(
    meta: dict, *, onnx_file: str | None = None, url: str | None = None
) -> dict:
    """Build a manifest dict (docs/manifests.md) from an Essentia model metadata document.

    ``onnx_file`` names the local ONNX file and ``url`` where it is downloaded from; without them
    both are derived from the metadata's ``link`` (``.pb`` -> ``.onnx`` in the same folder, which is
    where Essentia publishes its ONNX exports). No sha256 is written: it is pinned on first download.

    Raises ``ValueError`` when ``meta`` is not an Essentia model metadata file, or when it describes
    a feature extractor nomarr has no audio front end for.
    """
    _check_metadata(meta)
    inference = meta["inference"]
    stem = _model_stem(meta, onnx_file, url)
    embedding_model = inference.get("embedding_model")
    is_head = isinstance(embedding_model, dict) and bool(embedding_model.get("model_name"))
    from_tensorflow = str(meta.get("framework", "tensorflow")).lower() != "onnx"

    if not is_head and onnx_file is None and url is None:
        stem = _ONNX_EMBEDDER.get(stem, stem)
    file_name = onnx_file or (url.rstrip("/").rsplit("/", 1)[-1] if url else f"{stem}.onnx")
    url = url or _download_url(meta, stem, file_name)

    predictions, embeddings = _checked_outputs(meta, stem)

    embedder, embedder_id, model, model_id = _components(
        meta, stem, is_head, predictions is not None
    )

    schema_in = meta["schema"]["inputs"][0]
    input_name, scores_name, embedding_name = _io_names(
        schema_in, predictions, embeddings, from_tensorflow, is_head
    )

    licence, licence_url = _licence(meta)
    files: list[dict[str, Any]] = [{"name": file_name, "role": "model", "url": url}]
    if licence_url:
        files.append({"name": ESSENTIA_LICENCE_FILE, "role": "licence", "url": licence_url})

    manifest: dict[str, Any] = {
        "schema": 1,
        "id": slug(stem),
        "kind": "head" if is_head else "embedder",
        "name": f"{meta['name']} ({stem})",
        "description": str(meta.get("description") or meta["name"]),
        "licence": licence,
        "licence_url": licence_url or ESSENTIA_SOURCE_URL,
        "source_url": ESSENTIA_SOURCE_URL,
        "builtin": False,
        "backend": "onnx",
        "namespace": {
            "framework": "onnx",
            "embedder": embedder,
            "embedder_id": embedder_id,
            "model": model,
            "model_id": model_id,
        },
        "files": files,
    }

    manifest["input"] = (
        {"frontend": "embedding", "input_name": input_name}
        if is_head
        else _audio_input(stem, inference, schema_in, input_name)
    )

    outputs = _outputs(meta, predictions, embeddings, scores_name, embedding_name)
    manifest["outputs"] = outputs

    if is_head:
        emb_name = str(embedding_model["model_name"])
        manifest["head"] = {
            "embedder": _ONNX_EMBEDDER.get(emb_name, slug(emb_name)),
            "input_name": input_name,
        }
    return manifest


def _toml_string(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes; DEL must be escaped too.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        items = [_toml_value(v, where) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(items) <= 4 and len(one_line) <= 80:
            return one_line
        return "[\n" + "".join(f"  {item},\n" for item in items) + "]"
    raise ValueError(f"{where}: cannot write a {type(value).__name__} value to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _ordered(keys: list[str], preferred: tuple[str, ...]) -> list[str]:
    return [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]


def _write_table(lines: list[str], table: dict[str, Any], path: str, header: str | None) -> None:
    scalars = [
        k
        for k, v in table.items()
        if v is not None and not isinstance(v, dict) and not _is_table_array(v)
    ]
    subtables = [k for k, v in table.items() if isinstance(v, dict) or _is_table_array(v)]
    if header is not None:
        lines.append("")
        lines.append(header)
    # Labels go last inside [outputs]: they are long and the rest of the table stays readable.
    for key in sorted(
        _ordered(scalars, _TOP_ORDER if not path else ()), key=lambda k: k == "labels"
    ):
        lines.append(
            f"{_toml_key(key)} = {_toml_value(table[key], f'{path}.{key}' if path else key)}"
        )
    for key in _ordered(subtables, _TABLE_ORDER if not path else ()):
        sub_path = f"{path}.{_toml_key(key)}" if path else _toml_key(key)
        value = table[key]
        if isinstance(value, dict):
            _write_table(lines, value, sub_path, f"[{sub_path}]")
        else:
            for item in value:
                _write_table(lines, item, sub_path, f"[[{sub_path}]]")


def dump_manifest_toml(manifest: dict) -> str:
    """Write a manifest dict as TOML that ``tomllib`` reads back to the same dict.

    Written by hand (no TOML writer is a dependency of the agent) in the layout of
    docs/manifests.md: top-level keys first, then ``[namespace]``, ``[[files]]``, ``[input]``,
    ``[outputs]`` and ``[head]``. ``None`` values are left out because TOML has no null.
    """
    if not isinstance(manifest, dict):
        raise ValueError("a manifest must be a dict")
    lines: list[str] = []
    _write_table(lines, manifest, "", None)
    return "\n".join(lines).lstrip("\n") + "\n"
