"""Analyse one audio file with a set of models: decode → mel patches → embedders → heads → scores.

Models that share a front end (both built-in musicnn models, say) share one decode and one mel
computation; heads run on their embedder's per-patch embeddings. Track-level values are the mean
over patches, as upstream musicnn and Essentia report them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nomarr_client.tags import (
    fmt_score,
    provenance_key,
    score_key,
    tier_key,
    tier_of,
)

from nomarr import analyzers as dsp
from nomarr.audio.decode import AudioError, load_mono
from nomarr.audio.pcm import PcmSource
from nomarr.models.clap import (
    ClapAudio,
    zero_shot,
)
from nomarr.models.manifest import Manifest
from nomarr.models.registry import ModelError, Registry
from nomarr.pipeline.modelset import (
    LoadedModel,
    ModelSet,
    _activate,
    _head_feed,
    _head_spec,
    resolve_models,
)
from nomarr.pipeline.prepare import FrontKey, Prepared, prepare
from nomarr.pipeline.profiles import Profile, Window
from nomarr.stages import Stages

log = logging.getLogger(__name__)

Source = str | Path | PcmSource  # a file, or PCM that arrived without one (POST /ingest)


def _load(src: Source, sr: int, start: float, duration: float | None) -> np.ndarray:
    """A window of a file or of a :class:`PcmSource` at ``sr`` (what CLAP takes whole)."""
    if isinstance(src, PcmSource):
        return src.load(sr, start, duration)
    return load_mono(src, sr=sr, start=start, duration=duration)


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
    complete: bool = True  # every planned second of audio was decoded (see Coverage)
    decoded_s: float | None = None  # seconds of audio the models saw
    silent: bool = False  # digital silence throughout: nothing to describe, so no tags
    descriptors: dsp.TrackDescriptors | None = None

    def tags(
        self, thresholds: dict[str, dict[str, tuple[float, float]]] | None = None
    ) -> dict[str, str]:
        """The ``nom:`` keys and values this analysis would write to the file (none for silence:
        scores of silence describe no music)."""
        out: dict[str, str] = {}
        if self.silent:
            return out
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
            "complete": self.complete,
            "decoded_s": None if self.decoded_s is None else round(self.decoded_s, 3),
            "silent": self.silent,
        }


def _front_key(lm: LoadedModel) -> FrontKey:
    """An embedder's mel front end."""
    return _manifest_front(lm.manifest)


def _manifest_front(m: Manifest) -> FrontKey:
    """A manifest's mel front end (musicnn's where the manifest is silent)."""
    inp = m.input
    return (
        inp.sample_rate or 16000,
        inp.n_fft or 512,
        inp.hop_length or 256,
        inp.n_mels or 96,
        inp.patch_frames or 187,
        inp.patch_hop or 187,
    )


def front_keys(registry: Registry, model_ids: list[str] | tuple[str, ...]) -> list[FrontKey]:
    """The mel front ends a model selection needs, from the manifests alone (nothing loaded)."""
    keys: list[FrontKey] = []
    for m in resolve_models(registry, model_ids):
        if m.kind == "embedder" and _manifest_front(m) not in keys:
            keys.append(_manifest_front(m))
    return keys


def dsp_factory(profile: Profile, loudness: bool = True) -> Callable[[bool], dsp.DescriptorRun]:
    """The DSP descriptors' run for one file under ``profile`` (``whole``: the whole file is
    analysed, so loudness can be metered)."""
    prov = dsp.provenance(profile.params(), loudness)

    def make(whole: bool) -> dsp.DescriptorRun:
        return dsp.DescriptorRun(loudness=loudness and whole, provenance=prov)

    return make


class FrontEnds:
    """The decode-and-patches half of an :class:`Analyzer`, without any model: what a worker runs
    when the models run elsewhere (the central session of a GPU scan). The DSP descriptors are
    computed here too, from the same decode."""

    def __init__(self, keys: list[FrontKey], profile: Profile, descriptors: bool = True) -> None:
        self.keys, self.profile = keys, profile
        self.describe = dsp_factory(profile) if descriptors else None

    def prepare(self, path: str | Path, **kw: Any) -> Prepared:
        """As :meth:`Analyzer.prepare`."""
        return prepare(str(path), self.profile, self.keys, describe=self.describe, **kw)

    def analyze(self, path: str | Path) -> FileAnalysis:
        raise ModelError("this worker loads no models (the scan runs them centrally)")


class _Outputs:
    """Per-model patch outputs of one file, accumulated batch by batch."""

    def __init__(self, members: dict[FrontKey, list[LoadedModel]]) -> None:
        self.acc: dict[str, dict[str, list[np.ndarray]]] = {
            lm.id: {"s": [], "e": []} for ms in members.values() for lm in ms
        }


class Analyzer:
    """Runs a :class:`ModelSet` over files with one sampling profile.

    Two halves, usable apart: :meth:`prepare` (decode once, windows, mel patches — no model
    needed) and :meth:`infer` (the models on prepared patches). :meth:`analyze` does both for one
    file, streaming patches into the models so memory stays bounded for any length.
    """

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
        # DSP descriptors ride on the models' decode (loudness only when the whole file is read)
        self.describe = dsp_factory(profile, loudness) if descriptors else None
        self.groups: dict[FrontKey, list[LoadedModel]] = {}
        for lm in models.embedders():
            self.groups.setdefault(_front_key(lm), []).append(lm)

    def prepare(
        self,
        path: str | Path,
        *,
        fingerprint: bool = False,
        decide: Any = None,
        max_patches: int | None = None,
        stages: Stages | None = None,
    ) -> Prepared:
        """Decode ``path`` once into windows and patches (see :func:`~nomarr.pipeline.prepare.prepare`)."""
        return prepare(
            str(path),
            self.profile,
            list(self.groups),
            fingerprint=fingerprint,
            decide=decide,
            max_patches=max_patches,
            consumers=self.consumers(),
            stages=stages,
            describe=self.describe,
        )

    def consumers(self) -> list[Any]:
        """Extra PCM consumers fed each file's decode (none yet; analyzers that need the signal
        plug in here, see :mod:`nomarr.audio.reader`)."""
        return []

    def analyze(self, path: str | Path | PcmSource) -> FileAnalysis:
        """Analyse one file, or PCM that came without a file (a :class:`PcmSource`); raises
        AudioError for undecodable input."""
        src: str | PcmSource = path if isinstance(path, PcmSource) else str(path)
        t0 = time.perf_counter()
        st = Stages()
        out = _Outputs(self.groups)
        pending: dict[FrontKey, list[np.ndarray]] = {k: [] for k in self.groups}

        def sink(key: FrontKey, batch: np.ndarray) -> None:
            pending[key].append(batch)
            if sum(b.shape[0] for b in pending[key]) >= self.batch_size:
                self._run_batches(key, np.concatenate(pending[key]), out, st)
                pending[key] = []

        prep = prepare(
            src,
            self.profile,
            list(self.groups),
            sink=sink,
            consumers=self.consumers(),
            stages=st,
            describe=self.describe,
        )
        for key, parts in pending.items():
            if parts:
                self._run_batches(key, np.concatenate(parts), out, st)
        return self._finish(prep, out, st, t0)

    def infer(self, prep: Prepared, stages: Stages | None = None) -> FileAnalysis:
        """The models on a prepared file's patches (in batches of ``batch_size``)."""
        t0 = time.perf_counter()
        st = stages if stages is not None else Stages()
        out = _Outputs(self.groups)
        for g in prep.groups:
            self._run_batches(g.key, g.patches, out, st)
        return self._finish(prep, out, st, t0)

    def infer_many(self, preps: list[Prepared]) -> list[tuple[FileAnalysis, Stages]]:
        """The models on several files' patches at once: each front end's patches of every file
        are concatenated and run in shared batches of ``batch_size`` (what keeps a GPU busy when
        one file has only a few dozen patches), then split back per file. Track-level numbers
        are per-file means, so they do not depend on which files shared a batch."""
        t0 = time.perf_counter()
        outs = [_Outputs(self.groups) for _ in preps]
        stages = [Stages() for _ in preps]
        total = sum(p.n_patches for p in preps) or 1
        t_inf = time.perf_counter()
        for key in self.groups:
            parts = [(i, g.patches) for i, p in enumerate(preps) for g in p.groups if g.key == key]
            if not parts:
                continue
            joint = _Outputs(self.groups)
            self._run_batches(key, np.concatenate([x for _, x in parts]), joint, Stages())
            for lm in self.groups[key]:
                for name, arrays in joint.acc[lm.id].items():
                    if not arrays:
                        continue
                    allrows = np.concatenate(arrays)
                    at = 0
                    for i, x in parts:
                        outs[i].acc[lm.id].setdefault(name, []).append(
                            allrows[at : at + x.shape[0]]
                        )
                        at += x.shape[0]
        spent = time.perf_counter() - t_inf
        results = []
        for p, out, st in zip(preps, outs, stages, strict=True):
            st.add("inference", spent * p.n_patches / total)
            results.append((self._finish(p, out, st, t0), st))
        return results

    def _run_batches(self, key: FrontKey, patches: np.ndarray, out: _Outputs, st: Stages) -> None:
        with st("inference"):
            for i in range(0, patches.shape[0], self.batch_size):
                batch = patches[i : i + self.batch_size]
                for lm in self.groups.get(key, []):
                    self._run_embedder(lm, batch, out.acc[lm.id])

    def _finish(self, prep: Prepared, out: _Outputs, st: Stages, t0: float) -> FileAnalysis:
        results: dict[str, ModelResult] = {}
        warnings: list[str] = []
        silent = False
        for key, members in self.groups.items():
            n = prep.counts.get(key, 0)
            if n == 0:
                raise AudioError(prep.path, "no audio frames to analyse")
            if prep.energy.get(key, 0.0) == 0.0 and not silent:
                silent = True
                warnings.append("digital silence: nothing to describe, no tags are written")
            with st("inference"):
                for lm in members:
                    results.update(self._collect(lm, out.acc[lm.id], n))
        for lm in self.models.claps():
            with st("inference"):
                results[lm.id] = self._run_clap(lm, prep.pcm or prep.path, prep.windows)
        if not results:
            raise ModelError("no audio model selected")
        coverage = prep.coverage
        duration = prep.info.duration
        if not coverage.complete:
            warnings.append(coverage.warning())
            end = coverage.ended_at()
            if end is not None and (duration is None or end < duration):
                duration = end  # the header's length is not what can be played
        desc = None
        if prep.descriptors is not None:
            with st("descriptors"):
                desc = dsp.attach_scores(prep.descriptors, self._timeline(prep, out))
        timing = st.as_dict()
        timing["decode_mel"] = sum(
            timing.get(k, 0.0) for k in ("open", "decode", "resample", "mel", "onset", "buffer")
        )
        timing.setdefault("inference", 0.0)
        timing["total"] = time.perf_counter() - t0
        timing["audio_seconds"] = float(duration or 0.0)
        return FileAnalysis(
            path=prep.path,
            duration=duration,
            profile=self.profile.name,
            windows=prep.windows,
            results=results,
            timing=timing,
            manifests={mid: lm.manifest for mid, lm in self.models.models.items()},
            warnings=warnings,
            complete=coverage.complete,
            decoded_s=coverage.decoded_s if self.models.embedders() else None,
            silent=silent,
            descriptors=desc,
        )

    def _timeline(self, prep: Prepared, out: _Outputs) -> dsp.Timeline | None:
        """Per-patch scores of the first front end's models (and their heads), with each patch's
        start: the timeline a track page draws and regions average."""
        if not self.groups:
            return None
        key, members = next(iter(self.groups.items()))
        tl = dsp.Timeline(patch_seconds=key[4] * key[2] / key[0])
        tl.patch_starts = [round(t, 3) for t in prep.starts.get(key, [])]
        for lm in members:
            acc = out.acc[lm.id]
            if acc.get("s"):
                tl.add_scores(lm.id, lm.manifest.labels, np.concatenate(acc["s"]))
            for head in self.models.heads_of(lm.id):
                if acc.get(f"head:{head.id}"):
                    tl.add_scores(
                        head.id, head.manifest.labels, np.concatenate(acc[f"head:{head.id}"])
                    )
        return tl

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
