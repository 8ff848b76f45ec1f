"""The models one analysis runs, loaded once: embedders, their heads and CLAP, each on the
execution provider chosen for it, and the provenance each analysis records.

Split from :mod:`nomarr.pipeline.analyze` (which runs them over files) so that what identifies an
analysis — :func:`planned_provenance`, computed without loading anything — sits with the models.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
from nomarr_client.tags import (
    TAG_SCHEMA_VERSION,
)

from nomarr import analyzers as dsp
from nomarr.models.backends import make_backend
from nomarr.models.clap import (
    DEFAULT_MOODS,
    ClapText,
    partner,
    prompt_fingerprint,
)
from nomarr.models.manifest import HeadSpec, Manifest
from nomarr.models.registry import ModelError, Registry
from nomarr.models.runtime import Backend, ProviderChoice, ProviderSelector
from nomarr.pipeline.profiles import Profile
from nomarr.store import DSP_ID  # the DSP descriptors' entry in provenance maps

log = logging.getLogger(__name__)

MEL_FRONTENDS = ("musicnn-mel", "effnet-mel")
DEFAULT_MODELS = ("msd-musicnn-1",)


@dataclass
class LoadedModel:
    """A verified model file loaded into a backend."""

    manifest: Manifest
    backend: Backend
    sha256: str
    choice: ProviderChoice

    @property
    def id(self) -> str:
        """Manifest id."""
        return self.manifest.id


def _head_spec(m: Manifest) -> HeadSpec:
    """A head's [head] table (the manifest parser guarantees heads have one)."""
    assert m.head is not None, m.id
    return m.head


def _head_feed(m: Manifest) -> str | None:
    """Which embedder output feeds this head; None: the embedder's [outputs].embedding."""
    return _head_spec(m).embedder_output


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if activation == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return x


class ModelSet:
    """The models one analysis runs, loaded once and reused for every file."""

    def __init__(
        self,
        registry: Registry,
        model_ids: list[str] | tuple[str, ...] = DEFAULT_MODELS,
        selector: ProviderSelector | None = None,
        threads: int = 0,
        provider: str | None = None,
    ) -> None:
        self.registry = registry
        self.selector = selector or ProviderSelector()
        self.threads = threads
        self.models: dict[str, LoadedModel] = {}
        # a head needs its embedder: it is loaded too (and its own tags are written as well)
        for m in resolve_models(registry, model_ids):
            self.models[m.id] = self._load(m, provider)
        # CLAP audio models get zero-shot mood scores when their text tower is installed too
        self.clap_text: dict[str, ClapText] = {}
        for lm in self.models.values():
            if lm.manifest.kind == "clap-audio":
                text = partner(registry, lm.manifest, "clap-text")
                if text is not None and registry.installed(text):
                    self.clap_text[lm.id] = ClapText(
                        registry, text, threads=threads, selector=self.selector, provider=provider
                    )

    def _load(self, m: Manifest, provider: str | None) -> LoadedModel:
        if m.kind not in ("embedder", "head", "clap-audio"):
            raise ModelError(
                f"model {m.id}: kind {m.kind} is not run on audio (select its clap-audio partner)"
            )
        if m.kind == "embedder" and m.input.frontend not in MEL_FRONTENDS:
            raise ModelError(f"model {m.id}: front end {m.input.frontend!r} is not supported")
        path = self.registry.require(m)
        sha = self.registry.verify(m)[0].actual_sha256 or ""
        be, choice = make_backend(
            m, path, sha, threads=self.threads, selector=self.selector, provider=provider
        )
        return LoadedModel(m, be, sha, choice)

    def embedders(self) -> list[LoadedModel]:
        """Mel-patch models fed by audio."""
        return [lm for lm in self.models.values() if lm.manifest.kind == "embedder"]

    def claps(self) -> list[LoadedModel]:
        """CLAP audio towers."""
        return [lm for lm in self.models.values() if lm.manifest.kind == "clap-audio"]

    def heads_of(self, embedder_id: str) -> list[LoadedModel]:
        """Heads consuming ``embedder_id``'s embeddings."""
        return [lm for lm in self.models.values() if lm.manifest.embedder_id == embedder_id]

    def provenance(self, lm: LoadedModel, profile: Profile) -> str:
        """This model's provenance hash under ``profile`` (see :func:`provenance_hash`)."""
        chain = [lm]
        if lm.manifest.embedder_id:
            chain.insert(0, self.models[lm.manifest.embedder_id])
        text_sha = self.clap_text[lm.id].sha256 if lm.id in self.clap_text else None
        return provenance_hash([(x.manifest, x.sha256) for x in chain], profile, text_sha)


def provenance_hash(
    chain: list[tuple[Manifest, str]], profile: Profile, clap_text_sha: str | None = None
) -> str:
    """Short sha256 over everything that changes a model's numbers (DESIGN §2).

    Model file hashes (the embedder's too, for heads), pre-processing, aggregation, the sampling
    profile and the tag-schema version: change any and the hash changes, so a rescan knows the
    stored numbers are stale. Needs no loaded model, so a rescan can decide what to skip without
    starting onnxruntime.
    """
    extra = {}
    if clap_text_sha is not None:
        extra = {"text_model": clap_text_sha, "zero_shot": prompt_fingerprint(DEFAULT_MOODS)}
    doc = {
        **extra,
        "schema": TAG_SCHEMA_VERSION,
        "models": [
            {
                "id": m.id,
                "sha256": sha,
                "input": m.input.to_dict(),
                "activation": m.outputs.activation,
            }
            for m, sha in chain
        ],
        "decode": {"downmix": "mean", "resampler": "soxr-hq"},
        "aggregation": "mean",
        "profile": profile.params(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def resolve_models(registry: Registry, model_ids: list[str] | tuple[str, ...]) -> list[Manifest]:
    """The manifests a model selection runs: each head's embedder is added before it."""
    wanted = list(dict.fromkeys(model_ids))
    for mid in list(wanted):
        m = registry.get(mid)
        if m.kind == "head" and m.embedder_id not in wanted:
            wanted.insert(wanted.index(mid), m.embedder_id)
    return [registry.get(mid) for mid in wanted]


def planned_provenance(
    registry: Registry, model_ids: list[str] | tuple[str, ...], profile: Profile
) -> dict[str, str]:
    """model id → the provenance an analysis with these models and profile would record.

    Verifies the model files' sha256 (cached by size and mtime) but loads nothing.
    """
    ms = resolve_models(registry, model_ids)
    by_id = {m.id: m for m in ms}
    sha = {}
    for m in ms:
        registry.require(m)
        sha[m.id] = registry.verify(m)[0].actual_sha256 or ""
    out = {}
    for m in ms:
        chain = [(m, sha[m.id])]
        if m.embedder_id:
            chain.insert(0, (by_id[m.embedder_id], sha[m.embedder_id]))
        text_sha = None
        if m.kind == "clap-audio":
            text = partner(registry, m, "clap-text")
            if text is not None and registry.installed(text):
                text_sha = registry.verify(text)[0].actual_sha256 or ""
        out[m.id] = provenance_hash(chain, profile, text_sha)
    if any(m.kind == "embedder" for m in ms):
        out[DSP_ID] = dsp_provenance(profile)
    return out


def dsp_provenance(profile: Profile) -> str:
    """The provenance the DSP descriptors record under a profile (``planned_provenance``'s
    ``DSP_ID`` entry; an import judges imported descriptors by it)."""
    return dsp.provenance(profile.params(), loudness=True)
