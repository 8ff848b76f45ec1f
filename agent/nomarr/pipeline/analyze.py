"""Analyse one audio file with a set of models: decode → mel patches → embedders → heads → scores.

Models that share a front end (both built-in musicnn models, say) share one decode and one mel
computation; heads run on their embedder's per-patch embeddings. Track-level values are the mean
over patches, as upstream musicnn and Essentia report them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nomarr_client.tags import (
    TAG_SCHEMA_VERSION,
    fmt_score,
    provenance_key,
    score_key,
    tier_key,
    tier_of,
)

from nomarr.audio.decode import AudioError, load_mono, probe, stream_mono
from nomarr.audio.mel import MelSpec, MelStream, log_mel, patches
from nomarr.audio.pcm import PcmSource
from nomarr.models.backends import make_backend
from nomarr.models.clap import (
    DEFAULT_MOODS,
    ClapAudio,
    ClapText,
    partner,
    prompt_fingerprint,
    zero_shot,
)
from nomarr.models.manifest import HeadSpec, Manifest
from nomarr.models.registry import ModelError, Registry
from nomarr.models.runtime import Backend, ProviderChoice, ProviderSelector
from nomarr.pipeline.profiles import Profile, Window, first_strong_onset, plan_windows

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


Source = str | Path | PcmSource  # a file, or PCM that arrived without one (POST /ingest)


def _stream(src: Source, sr: int, start: float, duration: float | None) -> Iterator[np.ndarray]:
    """Mono blocks at ``sr`` of a file or of a :class:`PcmSource` (the same arithmetic)."""
    if isinstance(src, PcmSource):
        return src.stream(sr, start, duration)
    return stream_mono(src, sr=sr, start=start, duration=duration)


def _load(src: Source, sr: int, start: float, duration: float | None) -> np.ndarray:
    if isinstance(src, PcmSource):
        return src.load(sr, start, duration)
    return load_mono(src, sr=sr, start=start, duration=duration)


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
    return out


@dataclass
class ModelResult:
    """One model's track-level output for one file."""

    model_id: str
    prefix: str
    provider: str
    n_patches: int
    provenance: str
    scores: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None

    def tiers(self, thresholds: dict[str, tuple[float, float]] | None = None) -> dict[str, str]:
        """Tier per label (per-label calibrated thresholds when given, else the defaults)."""
        out = {}
        for label, s in self.scores.items():
            out[label] = (
                tier_of(s, thresholds[label]) if thresholds and label in thresholds else tier_of(s)
            )
        return out


@dataclass
class FileAnalysis:
    """Everything ``nomarr analyze`` reports about one file."""

    path: str
    duration: float | None
    profile: str
    windows: list[Window]
    results: dict[str, ModelResult]
    timing: dict[str, float]
    manifests: dict[str, Manifest]
    warnings: list[str] = field(default_factory=list)

    def tags(
        self, thresholds: dict[str, dict[str, tuple[float, float]]] | None = None
    ) -> dict[str, str]:
        """The ``nom:`` keys and values this analysis would write to the file."""
        out: dict[str, str] = {}
        for mid, r in self.results.items():
            ns = self.manifests[mid].namespace
            tiers = r.tiers((thresholds or {}).get(mid))
            for label, s in r.scores.items():
                out[score_key(ns, label)] = fmt_score(s)
                out[tier_key(ns, label, tiers[label])] = fmt_score(s)
            out[provenance_key(ns)] = r.provenance
        return out

    def to_dict(self, with_embeddings: bool = False) -> dict[str, Any]:
        """JSON document for ``--json``."""
        models = {}
        for mid, r in self.results.items():
            d: dict[str, Any] = {
                "tag_prefix": r.prefix,
                "provider": r.provider,
                "patches": r.n_patches,
                "provenance": r.provenance,
                "scores": {k: round(v, 6) for k, v in r.scores.items()},
                "tiers": r.tiers(),
                "top5": [k for k, _ in sorted(r.scores.items(), key=lambda kv: -kv[1])[:5]],
                "embedding_dim": None if r.embedding is None else int(r.embedding.shape[0]),
            }
            if with_embeddings and r.embedding is not None:
                d["embedding"] = [round(float(x), 6) for x in r.embedding]
            models[mid] = d
        return {
            "path": self.path,
            "duration": self.duration,
            "profile": self.profile,
            "windows": [w.to_dict() for w in self.windows],
            "models": models,
            "tags": self.tags(),
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
            "warnings": self.warnings,
        }


class Analyzer:
    """Runs a :class:`ModelSet` over files with one sampling profile."""

    def __init__(self, models: ModelSet, profile: Profile, batch_size: int = 4) -> None:
        self.models = models
        self.profile = profile
        self.batch_size = max(1, batch_size)

    def _onset_finder(self, path: Source) -> Any:
        spec = MelSpec()

        def find(start: float, length: float) -> float | None:
            sig = _load(path, spec.sr, start, length)
            return first_strong_onset(log_mel(sig, spec), spec.sr / spec.hop)

        return find

    def plan(self, path: Source, duration: float | None) -> list[Window]:
        """Deterministic windows for ``path`` under this analyzer's profile."""
        return plan_windows(self.profile, duration, self._onset_finder(path))

    def analyze(self, path: str | Path | PcmSource) -> FileAnalysis:
        """Analyse one file, or PCM that came without a file (a :class:`PcmSource`); raises
        AudioError for undecodable input."""
        src: Source = path if isinstance(path, PcmSource) else str(path)
        path = src.name if isinstance(src, PcmSource) else str(src)
        t0 = time.perf_counter()
        duration = src.duration if isinstance(src, PcmSource) else probe(path).duration
        windows = self.plan(src, duration)
        t_plan = time.perf_counter() - t0
        timing = {"plan": t_plan, "decode_mel": 0.0, "inference": 0.0}
        results: dict[str, ModelResult] = {}
        warnings: list[str] = []
        groups: dict[tuple[Any, ...], list[LoadedModel]] = {}
        for lm in self.models.embedders():
            inp = lm.manifest.input
            key = (  # musicnn's front end where the manifest is silent
                inp.sample_rate or 16000,
                inp.n_fft or 512,
                inp.hop_length or 256,
                inp.n_mels or 96,
                inp.patch_frames or 187,
                inp.patch_hop or 187,
            )
            groups.setdefault(key, []).append(lm)
        for (sr, n_fft, hop, n_mels, patch, patch_hop), members in groups.items():
            spec = MelSpec(sr=sr, n_fft=n_fft, hop=hop, n_mels=n_mels)
            per_model: dict[str, dict[str, list[np.ndarray]]] = {
                m.id: {"s": [], "e": []} for m in members
            }
            n_patches = 0
            energy = 0.0
            for patch_batch, e in self._patch_batches(src, windows, spec, patch, patch_hop, timing):
                energy += e
                t1 = time.perf_counter()
                for lm in members:
                    self._run_embedder(lm, patch_batch, per_model[lm.id])
                timing["inference"] += time.perf_counter() - t1
                n_patches += patch_batch.shape[0]
            if n_patches == 0:
                raise AudioError(path, "no audio frames to analyse")
            if energy == 0.0:
                warnings.append("digital silence: scores describe silence")
            t1 = time.perf_counter()
            for lm in members:
                results.update(self._collect(lm, per_model[lm.id], n_patches))
            timing["inference"] += time.perf_counter() - t1
        for lm in self.models.claps():
            t1 = time.perf_counter()
            results[lm.id] = self._run_clap(lm, src, windows)
            timing["inference"] += time.perf_counter() - t1
        if not results:
            raise ModelError("no audio model selected")
        timing["total"] = time.perf_counter() - t0
        timing["audio_seconds"] = float(duration or 0.0)
        return FileAnalysis(
            path=path,
            duration=duration,
            profile=self.profile.name,
            windows=windows,
            results=results,
            timing=timing,
            manifests={mid: lm.manifest for mid, lm in self.models.models.items()},
            warnings=warnings,
        )

    def _patch_batches(
        self,
        path: Source,
        windows: list[Window],
        spec: MelSpec,
        patch: int,
        hop: int,
        timing: dict[str, float],
    ) -> Any:
        """Yield ([b, patch, n_mels] float32, signal energy) batches across all windows.

        Time spent producing a batch (decode + mel) is added to ``timing["decode_mel"]``; time the
        consumer spends between batches (inference) is not.
        """
        energy = 0.0

        def frames(w: Window) -> Iterator[np.ndarray]:
            nonlocal energy
            ms = MelStream(spec)
            for sig in _stream(path, spec.sr, w.start, w.duration):
                energy += float(np.dot(sig, sig))
                yield ms.push(sig)
            yield ms.finish()

        pending: list[np.ndarray] = []
        t = time.perf_counter()
        for w in windows:
            for p in patches(frames(w), patch, hop):
                pending.append(p)
                if len(pending) == self.batch_size:
                    timing["decode_mel"] += time.perf_counter() - t
                    yield np.stack(pending), energy
                    pending, energy = [], 0.0
                    t = time.perf_counter()
        timing["decode_mel"] += time.perf_counter() - t
        if pending:
            yield np.stack(pending), energy

    def _run_embedder(
        self, lm: LoadedModel, batch: np.ndarray, acc: dict[str, list[np.ndarray]]
    ) -> None:
        out = lm.manifest.outputs
        heads = self.models.heads_of(lm.id)
        feeds = {h.id: _head_feed(h.manifest) or out.embedding for h in heads}
        names = list(dict.fromkeys(n for n in (out.scores, out.embedding, *feeds.values()) if n))
        res = lm.backend.run({lm.manifest.input.input_name or "melspectrogram": batch}, names)
        if out.scores:
            acc["s"].append(_activate(res[out.scores], out.activation))
        if out.embedding:
            acc["e"].append(res[out.embedding])
        for head in heads:
            ho, hs = head.manifest.outputs, _head_spec(head.manifest)
            hres = head.backend.run({hs.input_name: res[feeds[head.id]]}, [ho.scores])
            acc.setdefault(f"head:{head.id}", []).append(_activate(hres[ho.scores], ho.activation))

    def _run_clap(self, lm: LoadedModel, path: Source, windows: list[Window]) -> ModelResult:
        """Unit audio vectors over the profile's windows, their mean, and zero-shot moods."""
        enc = ClapAudio(lm.backend, lm.manifest)
        vecs = np.concatenate(
            [enc.embed_signal(_load(path, enc.sr, w.start, w.duration)) for w in windows]
        )
        mean = vecs.mean(axis=0)
        mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        scores = (
            zero_shot(mean, self.models.clap_text[lm.id]) if lm.id in self.models.clap_text else {}
        )
        return ModelResult(
            model_id=lm.id,
            prefix=lm.manifest.namespace.prefix(),
            provider=lm.choice.provider,
            n_patches=int(vecs.shape[0]),
            provenance=self.models.provenance(lm, self.profile),
            scores=scores,
            embedding=mean,
        )

    def _collect(
        self, lm: LoadedModel, acc: dict[str, list[np.ndarray]], n: int
    ) -> dict[str, ModelResult]:
        out: dict[str, ModelResult] = {}

        def result(
            m: LoadedModel, scores: list[np.ndarray], emb: list[np.ndarray] | None
        ) -> ModelResult:
            labels = m.manifest.labels
            mean = np.concatenate(scores).mean(axis=0) if scores else np.zeros(0)
            if scores and mean.shape[0] != len(labels):
                raise ModelError(
                    f"model {m.id}: {mean.shape[0]} scores but {len(labels)} labels in its manifest"
                )
            return ModelResult(
                model_id=m.id,
                prefix=m.manifest.namespace.prefix(),
                provider=m.choice.provider,
                n_patches=n,
                provenance=self.models.provenance(m, self.profile),
                scores={lab: float(v) for lab, v in zip(labels, mean, strict=False)},
                embedding=np.concatenate(emb).mean(axis=0) if emb else None,
            )

        out[lm.id] = result(lm, acc["s"], acc["e"] or None)
        for head in self.models.heads_of(lm.id):
            out[head.id] = result(head, acc.get(f"head:{head.id}", []), None)
        return out
