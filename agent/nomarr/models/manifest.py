"""Model manifests (docs/manifests.md): parsing and validation.

Manifests are the single source of truth for what a model file is, where it comes from, and how
audio must be prepared for it; the tag namespace of every number we write is derived from them, so a
malformed manifest is refused with a message that names the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nomarr_client.tags import COMPONENT_RE, Namespace

KINDS = ("embedder", "head", "clap-audio", "clap-text")
ROLES = ("model", "tokenizer", "vocab", "config", "licence")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ModelFile:
    """One file a model needs."""

    name: str
    role: str
    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def builtin(self) -> bool:
        """True when the file ships inside the agent package."""
        return self.url == "builtin"


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest."""

    id: str
    kind: str
    name: str
    namespace: Namespace
    files: tuple[ModelFile, ...]
    input: dict[str, Any]
    outputs: dict[str, Any]
    licence: str = ""
    licence_url: str = ""
    source_url: str = ""
    description: str = ""
    builtin: bool = False
    backend: str = "onnx"
    head: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def labels(self) -> list[str]:
        """Score labels in output order (empty for pure embedders)."""
        return list(self.outputs.get("labels", []))

    @property
    def model_file(self) -> ModelFile:
        """The file with role ``model`` (every manifest has exactly one)."""
        return next(f for f in self.files if f.role == "model")

    @property
    def embedder_id(self) -> str | None:
        """For heads: the manifest id of the embedder whose output they consume."""
        return self.head.get("embedder") if self.kind == "head" else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` output."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "licence": self.licence,
            "licence_url": self.licence_url,
            "source_url": self.source_url,
            "builtin": self.builtin,
            "backend": self.backend,
            "namespace": self.namespace.__dict__,
            "tag_prefix": self.namespace.prefix(),
            "files": [f.__dict__ for f in self.files],
            "input": self.input,
            "outputs": {k: v for k, v in self.outputs.items() if k != "labels"},
            "labels": self.labels,
            "head": self.head,
        }


def _req(d: dict[str, Any], key: str, where: str, typ: type | tuple[type, ...] = str) -> Any:
    if key not in d:
        raise ManifestError(f"{where}: missing '{key}'")
    if not isinstance(d[key], typ):
        raise ManifestError(f"{where}: '{key}' must be {getattr(typ, '__name__', typ)}")
    return d[key]


def parse_manifest(data: dict[str, Any], where: str = "<manifest>") -> Manifest:
    """Validate a manifest dict (as read from TOML) into a :class:`Manifest`."""
    schema = data.get("schema", 1)
    if schema != 1:
        raise ManifestError(f"{where}: unsupported schema {schema!r} (this nomarr reads schema 1)")
    mid = _req(data, "id", where)
    if not ID_RE.match(mid):
        raise ManifestError(f"{where}: id {mid!r} must match [a-z0-9-]+")
    kind = _req(data, "kind", where)
    if kind not in KINDS:
        raise ManifestError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    ns_raw = _req(data, "namespace", where, dict)
    comps = {}
    for key in ("framework", "embedder", "embedder_id", "model", "model_id"):
        val = _req(ns_raw, key, f"{where} [namespace]")
        if not COMPONENT_RE.match(val):
            raise ManifestError(
                f"{where} [namespace]: {key} {val!r} must match [a-z0-9-]+ (no underscores)"
            )
        comps[key] = val
    files = []
    for i, f in enumerate(_req(data, "files", where, list)):
        fw = f"{where} [[files]] #{i + 1}"
        name = _req(f, "name", fw)
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ManifestError(f"{fw}: file name {name!r} must be a plain file name")
        role = f.get("role", "model")
        if role not in ROLES:
            raise ManifestError(f"{fw}: role {role!r} is not one of {', '.join(ROLES)}")
        sha = (f.get("sha256") or "").lower() or None
        if sha is not None and not SHA256_RE.match(sha):
            raise ManifestError(f"{fw}: sha256 must be 64 hex digits")
        size = f.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ManifestError(f"{fw}: size must be a non-negative integer")
        files.append(ModelFile(name=name, role=role, url=_req(f, "url", fw), sha256=sha, size=size))
    if sum(1 for f in files if f.role == "model") != 1:
        raise ManifestError(f"{where}: exactly one file must have role 'model'")
    inp = data.get("input", {})
    outs = data.get("outputs", {})
    if not isinstance(inp, dict) or not isinstance(outs, dict):
        raise ManifestError(f"{where}: [input] and [outputs] must be tables")
    head = data.get("head", {})
    if kind == "head":
        _req(head, "embedder", f"{where} [head]")
        _req(head, "input_name", f"{where} [head]")
    if outs.get("scores") and not outs.get("labels"):
        raise ManifestError(f"{where} [outputs]: 'scores' needs 'labels'")
    if outs.get("activation", "none") not in ("none", "sigmoid", "softmax"):
        raise ManifestError(f"{where} [outputs]: activation must be none, sigmoid or softmax")
    if kind in ("embedder", "clap-audio") and "sample_rate" not in inp:
        raise ManifestError(f"{where} [input]: sample_rate is required for kind {kind}")
    return Manifest(
        id=mid,
        kind=kind,
        name=data.get("name", mid),
        namespace=Namespace(**comps),
        files=tuple(files),
        input=inp,
        outputs=outs,
        licence=data.get("licence", ""),
        licence_url=data.get("licence_url", ""),
        source_url=data.get("source_url", ""),
        description=data.get("description", ""),
        builtin=bool(data.get("builtin", False)),
        backend=data.get("backend", "onnx"),
        head=head,
        path=where,
    )


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate one manifest file; the id must equal the file name."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{p}: not valid TOML ({e})") from e
    except OSError as e:
        raise ManifestError(f"{p}: cannot read ({e.strerror})") from e
    m = parse_manifest(data, str(p))
    if m.id != p.stem:
        raise ManifestError(f"{p}: id {m.id!r} must equal the file name {p.stem!r}")
    return m
