"""Judging one imported record against what this agent knows.

A record is refused whole when it is malformed (a bad fingerprint, a duration that cannot be, a
score outside [0, 1], an embedding of the wrong size or with a NaN): such a record is either
damaged or made up, and nothing in it can be trusted. A record whose numbers are fine but some of
whose analyses were made by a model build this agent does not run (another file hash, another
front end, another tag schema: another *provenance*) keeps only the analyses this agent could have
made itself; with none left it is refused as foreign. The provenance an agent "knows" is the one
:func:`~nomarr.pipeline.modelset.planned_provenance` computes from its own verified model files for
the record's model and profile, so an import can never bring in numbers this agent's models would
not have produced.

The record's DSP descriptors follow the same two rules (:mod:`nomarr.share.descriptors`): bad
ones (a value out of range, a key whose notations disagree, an undecodable timeline) refuse the
record as malformed; well-formed ones of a provenance this agent's analyzers would not record for
the record's profile are dropped (counted) and the record kept without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nomarr.fingerprint import FP_LENGTH_S, MIN_OVERLAP, Fingerprint
from nomarr.share import descriptors as desc
from nomarr.share.bundle import array_b64

FP_ALG = "chromaprint-raw-u32le"
FP_ITEMS_PER_S = 11025 / (4096 / 3)  # chromaprint: 11025 Hz, 4096-sample frames, 2/3 overlap
MAX_DURATION = 24 * 3600.0
MAX_ANALYSES = 32
MAX_LABELS = 4096
MAX_DIM = 8192
ID_KEYS = ("musicbrainz_recordingid", "isrc")


class Refused(Exception):
    """Why a record (or one analysis in it) cannot be imported."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # malformed | foreign
        self.reason = reason


@dataclass
class Accepted:
    """A record this agent can use: identity and the analyses it knows."""

    fingerprint: Fingerprint
    duration: float
    analyses: list[dict[str, Any]]
    foreign: list[str] = field(default_factory=list)  # analyses dropped, with why
    descriptors: desc.Descriptors | None = None
    descriptors_foreign: str | None = None  # descriptors dropped, with why


def _num(x: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise Refused("malformed", f"{what} is not a finite number")
    if not lo <= x <= hi:
        raise Refused("malformed", f"{what} {x} is outside [{lo}, {hi}]")
    return float(x)


def check_fingerprint(doc: Any, duration: float) -> Fingerprint:
    """A raw Chromaprint that could come from audio of this duration."""
    if not isinstance(doc, dict) or doc.get("alg") != FP_ALG:
        raise Refused("malformed", f"fingerprint is not {{alg: {FP_ALG!r}, duration, values}}")
    fp_dur = _num(doc.get("duration"), "fingerprint duration", 1.0, FP_LENGTH_S + 1.0)
    if fp_dur > duration + 1.0:
        raise Refused("malformed", "fingerprint covers more audio than the recording has")
    try:
        values = array_b64(doc.get("values"), "<u4", 4096).astype(np.uint32)
    except ValueError as e:
        raise Refused("malformed", f"fingerprint values: {e}") from None
    expect = FP_ITEMS_PER_S * min(fp_dur, FP_LENGTH_S)
    # fpcalc reports whole seconds and drops the chroma filter's first items: a few more or up to
    # ~3 % + 40 fewer items than the duration gives are normal; anything else is not one fingerprint
    if values.size < MIN_OVERLAP or not expect * 0.97 - 40 <= values.size <= expect + 16:
        raise Refused(
            "malformed",
            f"fingerprint has {values.size} items; {fp_dur:.0f} s of audio gives about {expect:.0f}",
        )
    if np.unique(values).size < max(8, values.size // 20):
        raise Refused("malformed", "fingerprint is (nearly) constant: not audio")
    return Fingerprint(fp_dur, values)


class Validator:
    """Checks records against this agent's registry; provenances are computed once per (model,
    profile)."""

    def __init__(self, registry: Any, version: int = 2) -> None:
        self.registry = registry
        self.version = version  # the bundle's: version 1 records carry no descriptors
        self._known: dict[tuple[str, str], tuple[str, Any] | str] = {}
        self._dsp: dict[str, str | None] = {}
        self._labels: dict[str, list[str] | None] = {}

    def known(self, model_id: str, profile: str) -> tuple[str, Any]:
        """(provenance, manifest) this agent would record; Refused("foreign") when it cannot."""
        k = (model_id, profile)
        if k not in self._known:
            self._known[k] = self._compute(model_id, profile)
        v = self._known[k]
        if isinstance(v, str):
            raise Refused("foreign", v)
        return v

    def _compute(self, model_id: str, profile: str) -> tuple[str, Any] | str:
        from nomarr.models.registry import ModelError
        from nomarr.pipeline.modelset import planned_provenance
        from nomarr.pipeline.profiles import get_profile

        try:
            prof = get_profile(profile)
        except ValueError:
            return f"profile {profile!r} is unknown here"
        if model_id not in self.registry.manifests():
            return f"model {model_id!r} is unknown here"
        try:
            m = self.registry.get(model_id)
            prov = planned_provenance(self.registry, [model_id], prof)[model_id]
        except ModelError as e:
            return f"model {model_id!r} is not usable here ({e})"
        return prov, m

    def dsp_provenance(self, profile: str) -> str | None:
        """The descriptors' provenance this agent records under a profile (None: unknown profile)."""
        if profile not in self._dsp:
            from nomarr.pipeline.modelset import dsp_provenance
            from nomarr.pipeline.profiles import get_profile

            try:
                self._dsp[profile] = dsp_provenance(get_profile(profile))
            except ValueError:
                self._dsp[profile] = None
        return self._dsp[profile]

    def labels_of(self, model_id: str) -> list[str] | None:
        """A model's labels where this agent has its manifest (timeline rows are checked by it)."""
        if model_id not in self._labels:
            m = self.registry.manifests().get(model_id)
            self._labels[model_id] = None if m is None or not m.labels else list(m.labels)
        return self._labels[model_id]

    def record(self, body: dict[str, Any]) -> Accepted:
        """Validate one record body; raises :class:`Refused`."""
        allowed = {"fingerprint", "duration", "ids", "analyses", "descriptors"}
        extra = set(body) - allowed
        if extra:
            raise Refused("malformed", f"unknown fields {sorted(extra)}")
        duration = _num(body.get("duration"), "duration", 0.5, MAX_DURATION)
        fp = check_fingerprint(body.get("fingerprint"), duration)
        ids = body.get("ids", {})
        if not isinstance(ids, dict) or any(
            k not in ID_KEYS or not isinstance(v, str) or len(v) > 64 for k, v in ids.items()
        ):
            raise Refused("malformed", f"ids must map {list(ID_KEYS)} to short strings")
        try:
            dsp_prov = desc.envelope(body.get("descriptors", {}))
        except desc.BadDescriptors as e:
            raise Refused("malformed", str(e)) from None
        if dsp_prov is not None and self.version < 2:
            raise Refused("malformed", f"a version {self.version} record carries no descriptors")
        items = body.get("analyses")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ANALYSES:
            raise Refused("malformed", f"analyses must be a list of 1 to {MAX_ANALYSES}")
        keep: list[dict[str, Any]] = []
        foreign: list[str] = []
        seen: set[str] = set()
        for a in items:
            self._shape(a, duration)
            if a["model_id"] in seen:
                raise Refused("malformed", f"model {a['model_id']} appears twice")
            seen.add(a["model_id"])
            try:
                prov, manifest = self.known(a["model_id"], a["profile"])
            except Refused as e:
                foreign.append(f"{a['model_id']}: {e.reason}")
                continue
            if a["provenance"] != prov:
                foreign.append(
                    f"{a['model_id']}: provenance {a['provenance']} is not this agent's {prov} "
                    f"(another model build, front end or profile)"
                )
                continue
            self._numbers(a, manifest)
            keep.append(a)
        if not keep:
            raise Refused("foreign", "; ".join(foreign))
        ok = Accepted(fp, duration, keep, foreign)
        if dsp_prov is not None:
            self._descriptors(ok, body["descriptors"], dsp_prov)
        return ok

    def _descriptors(self, ok: Accepted, part: dict[str, Any], prov: str) -> None:
        """Keep the record's descriptors if they are this agent's (for one of the profiles of its
        kept analyses) and sound; drop them if another analyzer build made them."""
        mine = {self.dsp_provenance(a["profile"]) for a in ok.analyses} - {None}
        if prov not in mine:
            ok.descriptors_foreign = (
                f"descriptors provenance {prov} is not this agent's "
                f"{' or '.join(sorted(mine)) or '(none)'} (another analyzer version or profile)"
            )
            return
        try:
            ok.descriptors = desc.check(part, ok.duration, self.labels_of)
        except desc.BadDescriptors as e:
            raise Refused("malformed", str(e)) from None

    @staticmethod
    def _shape(a: Any, duration: float) -> None:
        """Types and ranges that hold for any model."""
        fields = {"model_id", "prefix", "provenance", "profile", "windows", "n_patches"}
        fields |= {"provider", "scores", "embedding"}
        if not isinstance(a, dict) or set(a) != fields:
            raise Refused("malformed", f"an analysis must have exactly {sorted(fields)}")
        for k in ("model_id", "prefix", "provenance", "profile"):
            if not isinstance(a[k], str) or not 0 < len(a[k]) <= 200:
                raise Refused("malformed", f"analysis {k} must be a short string")
        if a["provider"] is not None and (
            not isinstance(a["provider"], str) or len(a["provider"]) > 64
        ):
            raise Refused("malformed", "analysis provider must be a short string or null")
        n = a["n_patches"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10 * MAX_DURATION:
            raise Refused("malformed", "n_patches must be a positive integer")
        w = a["windows"]
        if not isinstance(w, list) or not 1 <= len(w) <= 64:
            raise Refused("malformed", "windows must be a list of 1 to 64")
        for x in w:
            if not isinstance(x, dict) or set(x) != {"start", "duration"}:
                raise Refused("malformed", "a window is {start, duration}")
            _num(x["start"], "window start", 0.0, duration + 1.0)
            if x["duration"] is not None:
                _num(x["duration"], "window duration", 0.0, MAX_DURATION)

    @staticmethod
    def _numbers(a: dict[str, Any], manifest: Any) -> None:
        """Scores and embedding as this agent's manifest of the model says they must be."""
        if a["prefix"] != manifest.namespace.prefix():
            raise Refused("malformed", f"{a['model_id']}: tag prefix is not the model's")
        scores = a["scores"]
        if not isinstance(scores, dict) or len(scores) > MAX_LABELS:
            raise Refused("malformed", f"{a['model_id']}: scores must be an object")
        labels = manifest.labels
        if labels and set(scores) != set(labels):
            raise Refused("malformed", f"{a['model_id']}: labels differ from the model's")
        for lab, v in scores.items():  # tag values are 0.0000-1.0000 (DESIGN §2)
            if not isinstance(lab, str) or not lab:
                raise Refused("malformed", f"{a['model_id']}: a label is not a string")
            _num(v, f"{a['model_id']} score {lab!r}", 0.0, 1.0)
        dim = manifest.outputs.embedding_dim
        emb = a["embedding"]
        if emb is None:
            if manifest.outputs.embedding or manifest.kind == "clap-audio":
                raise Refused("malformed", f"{a['model_id']}: the embedding is missing")
            return
        try:
            vec = array_b64(emb, "<f4", MAX_DIM)
        except ValueError as e:
            raise Refused("malformed", f"{a['model_id']} embedding: {e}") from None
        if dim and vec.size != dim:
            raise Refused(
                "malformed", f"{a['model_id']}: embedding has {vec.size} values, the model {dim}"
            )
        if vec.size == 0 or not np.isfinite(vec).all() or not np.any(vec):
            raise Refused("malformed", f"{a['model_id']}: embedding is empty, zero or not finite")
