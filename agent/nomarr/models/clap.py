"""CLAP: audio and text in one embedding space, for zero-shot moods and text search.

A CLAP pair is two manifests (``clap-audio`` and ``clap-text``) sharing the namespace's embedder and
embedder_id. Both towers' outputs are L2-normalised, so a dot product is the cosine similarity the
model was trained on. Zero-shot moods ask the text tower for "This is a <mood> song." and turn the
audio's cosines into a distribution over the moods with the model's usual logit scale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from nomarr_client.vocab import CLAP_MOODS

from nomarr.audio.decode import load_mono
from nomarr.audio.mel import clap_log_mel
from nomarr.models.backends import make_backend
from nomarr.models.manifest import Manifest
from nomarr.models.registry import ModelError, Registry
from nomarr.models.runtime import Backend, ProviderSelector

DEFAULT_MOODS = CLAP_MOODS  # the shared vocabulary's zero-shot moods (nomarr_client.vocab)
PROMPT = "This is a {} song."
LOGIT_SCALE = 100.0  # CLAP's learned temperature saturates near this value
MAX_CLIPS = 6  # at most this many 10 s clips per window: enough to describe a track, bounded cost


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def partner(registry: Registry, m: Manifest, kind: str) -> Manifest | None:
    """The other tower of a CLAP pair, if a manifest for it exists."""
    for other in registry.manifests().values():
        if (
            other.kind == kind
            and other.namespace.embedder == m.namespace.embedder
            and other.namespace.embedder_id == m.namespace.embedder_id
        ):
            return other
    return None


class ClapText:
    """Text tower: tokenizer (``tokenizers``, optional dependency) + ONNX encoder."""

    def __init__(
        self,
        registry: Registry,
        m: Manifest,
        threads: int = 0,
        selector: ProviderSelector | None = None,
        provider: str | None = None,
    ) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ModelError(
                "CLAP text search needs the tokenizer library: pip install 'nomarr[clap]'"
            ) from e
        self.manifest = m
        path = registry.require(m)
        tok_file = next((f for f in m.files if f.role == "tokenizer"), None)
        if tok_file is None:
            raise ModelError(f"model {m.id}: manifest lists no tokenizer file")
        self.tokenizer = Tokenizer.from_file(str(registry.file_path(m, tok_file)))
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("<pad>") or 1)
        self.tokenizer.enable_truncation(max_length=77)
        sha = registry.verify(m)[0].actual_sha256 or ""
        self.backend, self.choice = make_backend(
            m, path, sha, threads=threads, selector=selector, provider=provider
        )
        self.sha256 = sha
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """[n, dim] unit vectors (cached per text: prompts repeat for every track)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            enc = self.tokenizer.encode_batch(todo)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feeds = {"input_ids": ids}
            if "attention_mask" in self.backend.input_names:
                feeds["attention_mask"] = mask
            out = self.backend.run(feeds, [self.manifest.outputs.embedding or "text_embeds"])
            for t, v in zip(todo, _normalise(next(iter(out.values()))), strict=True):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts])


class ClapAudio:
    """Audio tower: 10 s clips at the model's rate → HTSAT log-mel → unit vector per clip."""

    def __init__(self, backend: Backend, m: Manifest) -> None:
        self.backend = backend
        self.manifest = m
        inp = m.input
        self.sr = int(inp.sample_rate or 48000)
        self.clip = int(round(10.0 * self.sr))
        given = {"n_fft": inp.n_fft, "n_mels": inp.n_mels, "fmin": inp.fmin, "fmax": inp.fmax}
        self.mel_args: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self.mel_args["hop"] = inp.hop_length or 480

    def clips(self, signal: np.ndarray) -> Iterator[np.ndarray]:
        """Evenly spaced non-overlapping 10 s clips; a short signal is repeat-padded to 10 s."""
        n = signal.shape[0]
        if n == 0:
            return
        if n < self.clip:
            reps = self.clip // n
            yield np.pad(np.tile(signal, reps), (0, self.clip - reps * n))
            return
        k = min(MAX_CLIPS, n // self.clip)
        starts = np.linspace(0, n - self.clip, k).astype(int) if k > 1 else [(n - self.clip) // 2]
        for s in starts:
            yield signal[s : s + self.clip]

    def embed_signal(self, signal: np.ndarray) -> np.ndarray:
        """[clips, dim] unit vectors."""
        feats = [clap_log_mel(c, sr=self.sr, **self.mel_args) for c in self.clips(signal)]
        if not feats:
            raise ModelError(f"model {self.manifest.id}: no audio to embed")
        x = np.stack(feats)[:, None, :, :]
        name = self.manifest.input.input_name or "input_features"
        out = self.backend.run({name: x}, [self.manifest.outputs.embedding or "audio_embeds"])
        return _normalise(next(iter(out.values())))

    def embed_file(
        self, path: str | Path, start: float = 0.0, duration: float | None = None
    ) -> np.ndarray:
        """[clips, dim] for a stretch of a file."""
        return self.embed_signal(load_mono(path, sr=self.sr, start=start, duration=duration))


def zero_shot(
    audio: np.ndarray,
    text: ClapText,
    labels: tuple[str, ...] | list[str] = DEFAULT_MOODS,
    prompt: str = PROMPT,
) -> dict[str, float]:
    """Distribution over ``labels`` for a (mean, unit) audio vector."""
    t = text.embed([prompt.format(lab) for lab in labels])
    logits = LOGIT_SCALE * (t @ _normalise(audio))
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return {lab: float(v) for lab, v in zip(labels, p, strict=True)}


def prompt_fingerprint(labels: tuple[str, ...] | list[str], prompt: str = PROMPT) -> str:
    """Changes whenever the zero-shot question changes (part of the provenance)."""
    return hashlib.sha256(json.dumps([prompt, list(labels), LOGIT_SCALE]).encode()).hexdigest()[:12]
