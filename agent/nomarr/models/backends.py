"""One factory for model backends, keyed by the manifest's ``backend`` (docs/manifests.md).

Every place that runs a model — the model set of an analysis, the CLAP text tower, ``nomarr
doctor`` — gets its provider verdict and its loaded backend from here, so they cannot disagree on
how a model is loaded, which accelerator it may use, or what happens when that accelerator fails.
Adding a backend is one entry in :data:`BACKENDS`.

This module imports nothing heavy at import time (onnxruntime, numpy and LiteRT load only when a
backend is built), so manifest validation can use :data:`BACKENDS` to know which backends exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nomarr.models.manifest import Manifest
    from nomarr.models.runtime import Backend, CpuCheck, ProviderChoice, ProviderSelector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendKind:
    """How models of one ``backend`` value are run.

    ``choose(path, sha256, selector, provider)`` decides the execution provider (``provider`` is
    the user's explicit choice, or None); ``load(path, provider, threads, name)`` builds the
    backend. When loading with the chosen provider fails, ``fallback`` (if any, and different) is
    tried once before the model is refused; ``runtime`` names the library in error messages.
    """

    runtime: str
    choose: Callable[..., ProviderChoice]  # (path, sha256, selector, provider[, m=manifest])
    load: Callable[[str, str, int, str], Backend]
    fallback: str | None = None
    wants_manifest: bool = False  # ``choose`` also takes ``m=`` (the CPU-build check needs it)


def _ort_choose(
    path: str,
    sha256: str,
    selector: ProviderSelector,
    provider: str | None,
    m: Manifest | None = None,
) -> ProviderChoice:
    from nomarr.models.runtime import ProviderChoice

    if provider:
        return ProviderChoice(provider, "chosen by the user")
    return selector.choose(path, sha256, _cpu_check(m))


def _cpu_check(m: Manifest | None) -> CpuCheck | None:
    """What the CPU-build check needs, for models fed mel patches (embedders); None otherwise:
    heads, CLAP and text towers always run on ONNX Runtime's CPU provider."""
    from nomarr.models.runtime import CpuCheck

    if m is None or m.kind != "embedder" or not m.outputs.scores:
        return None
    inp = m.input
    return CpuCheck(
        inp.input_name or "melspectrogram",
        m.outputs.scores,
        m.outputs.activation,
        inp.patch_frames or 187,
        inp.n_mels or 96,
        inp.sample_rate or 16000,
    )


def _ort_load(path: str, provider: str, threads: int, name: str) -> Backend:
    from nomarr.models import openvino, runtime

    if openvino.is_openvino(provider):
        return openvino.OpenVinoBackend(
            path, provider[len(openvino.PROVIDER_PREFIX) :], threads=threads, name=name
        )
    return runtime.OrtBackend(path, provider, threads=threads, name=name)


def _tflite_choose(
    path: str, sha256: str, selector: ProviderSelector, provider: str | None
) -> ProviderChoice:
    from nomarr.models.runtime import ProviderChoice

    return ProviderChoice("TFLite", "manifest backend is tflite")


def _tflite_load(path: str, provider: str, threads: int, name: str) -> Backend:
    from nomarr.models import runtime

    return runtime.TfliteBackend(path, threads=threads, name=name)


BACKENDS: dict[str, BackendKind] = {
    "onnx": BackendKind(
        "onnxruntime", _ort_choose, _ort_load, fallback="CPUExecutionProvider", wants_manifest=True
    ),
    "tflite": BackendKind("TFLite", _tflite_choose, _tflite_load),
}


def backend_kind(m: Manifest) -> BackendKind:
    """The entry for ``m.backend``; a ModelError naming the model when there is none."""
    from nomarr.models.registry import ModelError

    kind = BACKENDS.get(m.backend)
    if kind is None:
        raise ModelError(
            f"model {m.id}: backend {m.backend!r} is not one of {', '.join(sorted(BACKENDS))}"
        )
    return kind


def choose_provider(
    m: Manifest,
    path: str | Path,
    sha256: str,
    *,
    selector: ProviderSelector | None = None,
    provider: str | None = None,
) -> ProviderChoice:
    """Which execution provider ``m`` would run on, and why (what ``nomarr doctor`` shows)."""
    from nomarr.models.runtime import ProviderSelector

    kind = backend_kind(m)
    extra = {"m": m} if kind.wants_manifest else {}
    return kind.choose(str(path), sha256, selector or ProviderSelector(), provider, **extra)


def make_backend(
    m: Manifest,
    path: str | Path,
    sha256: str,
    *,
    threads: int = 0,
    selector: ProviderSelector | None = None,
    provider: str | None = None,
) -> tuple[Backend, ProviderChoice]:
    """Load the model file ``path`` of ``m`` with its backend: (backend, provider verdict).

    ``provider`` forces an execution provider (the user's ``--provider``); otherwise the backend
    chooses (for ONNX: the first accelerator that reproduces the CPU on a golden input). A
    provider that then fails to load the model falls back to the backend's fallback, saying so;
    a model no provider can load is a ModelError that names it.
    """
    from nomarr.models.registry import ModelError
    from nomarr.models.runtime import ProviderChoice

    kind = backend_kind(m)
    choice = choose_provider(m, path, sha256, selector=selector, provider=provider)
    try:
        return kind.load(str(path), choice.provider, threads, m.id), choice
    except Exception as e:  # noqa: BLE001 - an unusable model must name itself
        if kind.fallback is None or choice.provider == kind.fallback:
            raise ModelError(
                f"model {m.id}: {path} could not be loaded by {kind.runtime} ({e})"
            ) from e
        log.warning(
            "provider failed to load model, using %s",
            kind.fallback,
            extra={"model": m.id, "error": str(e)},
        )
        choice = ProviderChoice(kind.fallback, f"{choice.provider} failed to load: {e}")
    try:
        return kind.load(str(path), choice.provider, threads, m.id), choice
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {m.id}: {path} could not be loaded by {kind.runtime} ({e})") from e
