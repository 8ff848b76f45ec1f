"""Model manifests (docs/manifests.md): parsing and validation.

Manifests are the single source of truth for what a model file is, where it comes from, and how
audio must be prepared for it; the tag namespace of every number we write is derived from them, so a
malformed manifest is refused with a message that names the file and the field.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nomarr_client.tags import COMPONENT_RE, Namespace

from nomarr.models.backends import BACKENDS

KINDS = ("embedder", "head", "clap-audio", "clap-text")
FRONTENDS = ("musicnn-mel", "effnet-mel", "raw-waveform", "clap-htsat-mel", "embedding", "text")
ACTIVATIONS = ("none", "sigmoid", "softmax")
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


@dataclass(frozen=True, kw_only=True)
class _Section:
    """A typed manifest table. ``given`` lists the keys the TOML had, in its order.

    Absent keys keep their defaults, but :meth:`to_dict` returns only the given ones, exactly as
    written: provenance hashes (DESIGN §2) are computed over it, so a table must hash the same as
    the dict it was parsed from, or every library would be re-analysed for nothing.
    """

    given: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The table as written in the manifest (``--json`` output, provenance)."""
        return {k: _plain(getattr(self, k)) for k in self.given}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True, kw_only=True)
class InputSpec(_Section):
    """``[input]``: how audio (or an embedding, or text) becomes the model's input tensor.

    Which defaults apply to absent keys depends on the front end, so they stay None here and the
    front end that reads them supplies its own.
    """

    frontend: str | None = None
    input_name: str | None = None
    sample_rate: int | None = None
    patch_frames: int | None = None
    patch_hop: int | None = None
    n_fft: int | None = None
    hop_length: int | None = None
    n_mels: int | None = None
    log: str | None = None
    fmin: float | None = None
    fmax: float | None = None


@dataclass(frozen=True, kw_only=True)
class OutputSpec(_Section):
    """``[outputs]``: the tensors that hold scores and embedding, and how scores are activated."""

    scores: str | None = None
    activation: str = "none"
    labels: tuple[str, ...] = ()
    embedding: str | None = None
    embedding_dim: int | None = None


@dataclass(frozen=True, kw_only=True)
class HeadSpec(_Section):
    """``[head]``: the embedder a head consumes, and through which tensors."""

    embedder: str
    input_name: str
    embedder_output: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest."""

    id: str
    kind: str
    name: str
    namespace: Namespace
    files: tuple[ModelFile, ...]
    input: InputSpec
    outputs: OutputSpec
    licence: str = ""
    licence_url: str = ""
    source_url: str = ""
    description: str = ""
    builtin: bool = False
    backend: str = "onnx"
    head: HeadSpec | None = None
    path: str = ""

    @property
    def labels(self) -> list[str]:
        """Score labels in output order (empty for pure embedders)."""
        return list(self.outputs.labels)

    @property
    def model_file(self) -> ModelFile:
        """The file with role ``model`` (every manifest has exactly one)."""
        return next(f for f in self.files if f.role == "model")

    @property
    def embedder_id(self) -> str | None:
        """For heads: the manifest id of the embedder whose output they consume."""
        return self.head.embedder if self.kind == "head" and self.head else None

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
            "input": self.input.to_dict(),
            "outputs": {k: v for k, v in self.outputs.to_dict().items() if k != "labels"},
            "labels": self.labels,
            "head": self.head.to_dict() if self.head else {},
        }


def _req(d: dict[str, Any], key: str, where: str, typ: type | tuple[type, ...] = str) -> Any:
    if key not in d:
        raise ManifestError(f"{where}: missing '{key}'")
    if not isinstance(d[key], typ):
        raise ManifestError(f"{where}: '{key}' must be {getattr(typ, '__name__', typ)}")
    return d[key]


_POSITIVE = frozenset(
    {"sample_rate", "patch_frames", "patch_hop", "n_fft", "hop_length", "n_mels", "embedding_dim"}
)
_KIND_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _check_value(value: Any, hint: Any, where: str, key: str) -> Any:
    """``value`` checked against a field's annotation; returns what the field stores."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    base = next(a for a in args if a is not type(None))
    if typing.get_origin(base) is tuple:  # labels: a list of non-empty strings
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            raise ManifestError(f"{where}: '{key}' must be a list of non-empty strings")
        return tuple(value)
    if base is float:  # an integer is a number too; kept as written, so provenance is unchanged
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, base)
    if not ok:
        raise ManifestError(f"{where}: '{key}' must be {_KIND_WORDS.get(base, base.__name__)}")
    if key in _POSITIVE and value <= 0:
        raise ManifestError(f"{where}: '{key}' must be positive")
    return value


_S = typing.TypeVar("_S", bound=_Section)


def _section(cls: type[_S], raw: Any, where: str, table: str) -> _S:
    """Parse one manifest table into its typed section: known keys only, each of its type."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: [{table}] must be a table")
    wt = f"{where} [{table}]"
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name != "given"]
    known = ", ".join(f.name for f in fields)
    values = {}
    for key, value in raw.items():
        if key not in hints or key == "given":
            raise ManifestError(f"{wt}: unknown key '{key}' (known: {known})")
        values[key] = _check_value(value, hints[key], wt, key)
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in values:
            raise ManifestError(f"{wt}: missing '{f.name}'")
    return cls(given=tuple(raw), **values)


def _parse_files(data: dict[str, Any], where: str) -> tuple[ModelFile, ...]:
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
    return tuple(files)


def _parse_namespace(data: dict[str, Any], where: str) -> Namespace:
    ns_raw = _req(data, "namespace", where, dict)
    comps = {}
    for key in ("framework", "embedder", "embedder_id", "model", "model_id"):
        val = _req(ns_raw, key, f"{where} [namespace]")
        if not COMPONENT_RE.match(val):
            raise ManifestError(
                f"{where} [namespace]: {key} {val!r} must match [a-z0-9-]+ (no underscores)"
            )
        comps[key] = val
    return Namespace(**comps)


def _check_sections(
    kind: str, inp: InputSpec, outs: OutputSpec, head: HeadSpec | None, where: str
) -> None:
    """The rules that tie a manifest's tables to its kind and to each other."""
    if kind == "head" and head is None:
        raise ManifestError(f"{where} [head]: missing 'embedder'")
    if inp.frontend is not None and inp.frontend not in FRONTENDS:
        raise ManifestError(
            f"{where} [input]: frontend {inp.frontend!r} is not one of {', '.join(FRONTENDS)}"
        )
    if kind in ("embedder", "clap-audio") and inp.sample_rate is None:
        raise ManifestError(f"{where} [input]: sample_rate is required for kind {kind}")
    if outs.scores and not outs.labels:
        raise ManifestError(f"{where} [outputs]: 'scores' needs 'labels'")
    if outs.activation not in ACTIVATIONS:
        raise ManifestError(f"{where} [outputs]: activation must be none, sigmoid or softmax")
    seen: set[str] = set()
    for label in outs.labels:
        if label in seen:
            raise ManifestError(f"{where} [outputs]: label {label!r} is listed twice")
        seen.add(label)


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
    backend = data.get("backend", "onnx")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ManifestError(
            f"{where}: backend {backend!r} is not one of {', '.join(sorted(BACKENDS))}"
        )
    namespace = _parse_namespace(data, where)
    files = _parse_files(data, where)
    inp = _section(InputSpec, data.get("input", {}), where, "input")
    outs = _section(OutputSpec, data.get("outputs", {}), where, "outputs")
    head = _section(HeadSpec, data["head"], where, "head") if "head" in data else None
    _check_sections(kind, inp, outs, head, where)
    return Manifest(
        id=mid,
        kind=kind,
        name=data.get("name", mid),
        namespace=namespace,
        files=files,
        input=inp,
        outputs=outs,
        licence=data.get("licence", ""),
        licence_url=data.get("licence_url", ""),
        source_url=data.get("source_url", ""),
        description=data.get("description", ""),
        builtin=bool(data.get("builtin", False)),
        backend=backend,
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
