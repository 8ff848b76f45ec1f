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

from nomarr import analyzers as dsp
from nomarr.audio.decode import AudioError, load_mono, probe, stream_mono
from nomarr.audio.mel import MelSpec, MelStream, log_mel, patches
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
        out[DSP_ID] = dsp.provenance(profile.params(), loudness=True)
    return out


class LevelScaler:
    """The level-invariant option (profiles ``<name>+level``): the models see the analysed audio
    scaled to ``reference`` dBFS.

    The level is the gated RMS of the 16 kHz mono input (the models' own samples): mean squares
    per 100 ms, blocks below −70 dBFS dropped, then blocks more than 10 dB below the mean of the
    rest (BS.1770's gating, unweighted). The gain is applied to the power mel *before* musicnn's
    log compression — exactly what scaling the samples would do, with no second decode: the power
    mel of a stretch is buffered until its level is known. A stretch is a window of the profile,
    or 5 minutes of a longer one (bounded memory: 5 min of 96-band mel is 11 MB), so a −6 dB copy
    gets exactly the same model input up to its codec's noise.
    """

    CHUNK_S = 300.0

    def __init__(self, spec: MelSpec, reference: float) -> None:
        self.spec = spec
        self.reference = reference
        self._ms: list[float] = []
        self._acc = 0.0
        self._n = 0

    def measure(self, sig: np.ndarray) -> None:
        """Add samples to the level measurement (100 ms blocks)."""
        block = self.spec.sr // 10
        x = sig.astype(np.float64)
        i = 0
        while i < x.shape[0]:
            take = min(block - self._n, x.shape[0] - i)
            self._acc += float(np.dot(x[i : i + take], x[i : i + take]))
            self._n += take
            i += take
            if self._n == block:
                self._ms.append(self._acc / block)
                self._acc, self._n = 0.0, 0

    def _gain(self) -> float:
        ms = np.asarray(self._ms)
        self._ms = []
        ms = ms[ms > 1e-7]  # −70 dBFS
        if ms.size == 0:
            return 1.0
        ms = ms[ms > ms.mean() * 0.1]  # −10 dB relative gate
        level = 10 * np.log10(ms.mean())
        return float(10 ** ((self.reference - level) / 10))  # a power gain

    def frames(self, power: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Log-mel frames of a stretch of power-mel frames, each chunk scaled once measured."""
        pending: list[np.ndarray] = []
        n = 0
        limit = int(self.CHUNK_S * self.spec.sr / self.spec.hop)
        for block in power:
            pending.append(block)
            n += block.shape[0]
            if n >= limit:
                g = self._gain()
                yield from (self.spec.log_compress(b * g) for b in pending)
                pending, n = [], 0
        if pending:
            g = self._gain()
            yield from (self.spec.log_compress(b * g) for b in pending)


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
    descriptors: dsp.TrackDescriptors | None = None

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
        if self.descriptors is not None:
            out.update(dsp.descriptor_tags(self.descriptors.to_dict()))
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
            "descriptors": None if self.descriptors is None else self.descriptors.to_dict(),
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
            "warnings": self.warnings,
        }


class Analyzer:
    """Runs a :class:`ModelSet` over files with one sampling profile."""

    def __init__(
        self,
        models: ModelSet,
        profile: Profile,
        batch_size: int = 4,
        descriptors: bool = True,
        loudness: bool = True,
    ) -> None:
        self.models = models
        self.profile = profile
        self.batch_size = max(1, batch_size)
        # DSP descriptors ride on the first mel group's decode; loudness (which needs the whole
        # file) only when the windows cover the file
        self.descriptors = descriptors
        self.loudness = loudness

    def _onset_finder(self, path: str) -> Any:
        spec = MelSpec()

        def find(start: float, length: float) -> float | None:
            sig = load_mono(path, sr=spec.sr, start=start, duration=length)
            return first_strong_onset(log_mel(sig, spec), spec.sr / spec.hop)

        return find

    def plan(self, path: str, duration: float | None) -> list[Window]:
        """Deterministic windows for ``path`` under this analyzer's profile."""
        return plan_windows(self.profile, duration, self._onset_finder(path))

    def analyze(self, path: str | Path) -> FileAnalysis:
        """Analyse one file; raises AudioError for undecodable input."""
        path = str(path)
        t0 = time.perf_counter()
        info = probe(path)
        windows = self.plan(path, info.duration)
        t_plan = time.perf_counter() - t0
        timing = {"plan": t_plan, "decode_mel": 0.0, "inference": 0.0}
        results: dict[str, ModelResult] = {}
        warnings: list[str] = []
        whole = windows == [Window(0.0, None)]
        run = (
            dsp.DescriptorRun(
                loudness=self.loudness and whole,
                provenance=dsp.provenance(self.profile.params(), self.loudness),
            )
            if self.descriptors and self.models.embedders()
            else None
        )
        timeline = dsp.Timeline()
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
            starts: list[float] = []
            for patch_batch, e in self._patch_batches(
                path, windows, spec, patch, patch_hop, timing, run, starts
            ):
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
            if run is not None and not timeline.scores:  # the first group fed the analyzers
                self._add_timeline(timeline, members, per_model, starts, patch * hop / sr)
                t1 = time.perf_counter()
                descriptors = run.finish(info.duration, whole, timeline)
                timing["descriptors"] = timing.get("descriptors", 0.0) + (time.perf_counter() - t1)
                run = None
        for lm in self.models.claps():
            t1 = time.perf_counter()
            results[lm.id] = self._run_clap(lm, path, windows)
            timing["inference"] += time.perf_counter() - t1
        if not results:
            raise ModelError("no audio model selected")
        timing["total"] = time.perf_counter() - t0
        desc = locals().get("descriptors")
        timing["audio_seconds"] = float(info.duration or 0.0)
        return FileAnalysis(
            path=path,
            duration=info.duration,
            profile=self.profile.name,
            windows=windows,
            results=results,
            timing=timing,
            manifests={mid: lm.manifest for mid, lm in self.models.models.items()},
            warnings=warnings,
            descriptors=desc,
        )

    def _add_timeline(
        self,
        timeline: dsp.Timeline,
        members: list[LoadedModel],
        per_model: dict[str, dict[str, list[np.ndarray]]],
        starts: list[float],
        patch_seconds: float,
    ) -> None:
        """Per-patch scores of a mel group's models (and their heads) into the timeline."""
        timeline.patch_seconds = patch_seconds
        timeline.patch_starts = [round(t, 3) for t in starts]
        for lm in members:
            acc = per_model[lm.id]
            if acc["s"]:
                timeline.add_scores(lm.id, lm.manifest.labels, np.concatenate(acc["s"]))
            for head in self.models.heads_of(lm.id):
                if acc.get(f"head:{head.id}"):
                    timeline.add_scores(
                        head.id, head.manifest.labels, np.concatenate(acc[f"head:{head.id}"])
                    )

    def _patch_batches(
        self,
        path: str,
        windows: list[Window],
        spec: MelSpec,
        patch: int,
        hop: int,
        timing: dict[str, float],
        run: dsp.DescriptorRun | None = None,
        starts: list[float] | None = None,
    ) -> Any:
        """Yield ([b, patch, n_mels] float32, signal energy) batches across all windows.

        Time spent producing a batch (decode + mel) is added to ``timing["decode_mel"]``; time the
        consumer spends between batches (inference) is not.

        SEAM (issue 16 → the shared decode of issue 15): ``run`` is fed the very blocks the mel
        front end gets (16 kHz mono, with their time in the file) and, when it meters loudness,
        the native multichannel blocks of the same decode (``stream_mono(native=…)``). Time spent
        in the analyzers goes to ``timing["descriptors"]``. ``starts`` receives each patch's
        start time (for the timeline).
        """
        energy = 0.0
        frame_s = spec.hop / spec.sr

        level = LevelScaler(spec, self.profile.level_norm) if self.profile.level_norm else None

        def frames(w: Window) -> Iterator[np.ndarray]:
            nonlocal energy
            if level is not None:  # level-invariant option: scale the power mel, then the log
                yield from level.frames(raw_frames(w))
                return
            yield from raw_frames(w)

        def raw_frames(w: Window) -> Iterator[np.ndarray]:
            nonlocal energy
            ms = MelStream(spec, log=level is None)
            t_in = w.start
            native = None
            if run is not None and run.meter is not None:

                def native(block: np.ndarray, _sr: int = self._native_sr(path)) -> None:
                    t = time.perf_counter()
                    run.feed_native(block, _sr)
                    timing["descriptors"] = timing.get("descriptors", 0.0) + time.perf_counter() - t

            for sig in stream_mono(
                path, sr=spec.sr, start=w.start, duration=w.duration, native=native
            ):
                energy += float(np.dot(sig, sig))
                if run is not None:
                    t = time.perf_counter()
                    run.feed(sig, spec.sr, t_in)
                    timing["descriptors"] = timing.get("descriptors", 0.0) + time.perf_counter() - t
                t_in += sig.shape[0] / spec.sr
                if level is not None:
                    level.measure(sig)
                yield ms.push(sig)
            yield ms.finish()

        pending: list[np.ndarray] = []
        t = time.perf_counter()
        for w in windows:
            for i, p in enumerate(patches(frames(w), patch, hop)):
                if starts is not None:
                    starts.append(w.start + i * hop * frame_s)
                pending.append(p)
                if len(pending) == self.batch_size:
                    timing["decode_mel"] += time.perf_counter() - t
                    yield np.stack(pending), energy
                    pending, energy = [], 0.0
                    t = time.perf_counter()
        timing["decode_mel"] += time.perf_counter() - t
        if pending:
            yield np.stack(pending), energy

    @staticmethod
    def _native_sr(path: str) -> int:
        return probe(path).sample_rate

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

    def _run_clap(self, lm: LoadedModel, path: str, windows: list[Window]) -> ModelResult:
        """Unit audio vectors over the profile's windows, their mean, and zero-shot moods."""
        enc = ClapAudio(lm.backend, lm.manifest)
        vecs = np.concatenate([enc.embed_file(path, w.start, w.duration) for w in windows])
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
