"""OpenVINO on the CPU, behind the same :class:`~nomarr.models.runtime.Backend` interface, in fp32
and reduced precision (bf16), used only where it pays on *this* machine.

Why: on CPUs with AVX-512 BF16 or AMX, OpenVINO runs musicnn in bf16 1.8-2.9x faster per patch
than ONNX Runtime in fp32 (docs/bench.md), and even its fp32 kernels can beat ONNX Runtime's. But
reduced precision moves the numbers, and speed depends on the CPU, so nothing is assumed:
:func:`qualify` measures, on first load on a machine, (1) the speed of each build against ONNX
Runtime fp32 with the scan's settings (one thread, batch 1), interleaved, and (2) the drift of
track-level tag means against fp32 on music-like input; a build is used only if it is at least
:data:`MIN_SPEEDUP` faster **and** drifts at most the precision policy's bound per label
(:data:`MAX_DRIFT`). Verdicts are
cached with the provider checks (per model hash, OpenVINO version and CPU), and ``nomarr doctor``
shows the choice and both numbers.

``openvino`` is an optional dependency (``pip install 'nomarr[openvino]'``, ~180 MB): everything
works without it, and nothing here imports it until a machine is checked.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

PROVIDER_PREFIX = "OpenVINO-CPU-"
MIN_SPEEDUP = 1.05  # at least 5 % faster per patch than ONNX Runtime fp32
# Worst per-label difference of track-level means vs fp32 a build may show, per precision policy
# (``NOMARR_PRECISION`` / ``--precision``): ``exact`` keeps the project's fidelity contract (1e-3
# against the reference, docs/bench.md), so bf16 builds rarely qualify; ``reduced`` allows the
# 0.01 that tiers tolerate, for 2-3x the speed on CPUs with bf16; ``ort`` uses no CPU build.
MAX_DRIFT = {"exact": 1e-3, "reduced": 0.01, "ort": -1.0}
DEFAULT_POLICY = "exact"


def policy() -> str:
    """The precision policy in force (``NOMARR_PRECISION``; default ``exact``)."""
    import os

    p = os.environ.get("NOMARR_PRECISION", DEFAULT_POLICY).strip().lower()
    return p if p in MAX_DRIFT else DEFAULT_POLICY


def provider_name(precision: str) -> str:
    """The provider string stored with analyses and shown by doctor (e.g. ``OpenVINO-CPU-bf16``)."""
    return PROVIDER_PREFIX + precision


def is_openvino(provider: str) -> bool:
    return provider.startswith(PROVIDER_PREFIX)


@functools.lru_cache(maxsize=1)
def runtime() -> Any:
    """The ``openvino`` module, or None where it is not installed (or cannot load)."""
    try:
        import openvino

        openvino.Core()
    except Exception:  # noqa: BLE001 - an optional accelerator that cannot load is absent
        return None
    return openvino


@functools.lru_cache(maxsize=1)
def precisions() -> tuple[str, ...]:
    """Precisions worth trying on this CPU: fp32 always; bf16 where the CPU computes it natively
    (OpenVINO reports BF16 among the CPU's capabilities: AVX-512 BF16 or AMX)."""
    ov = runtime()
    if ov is None:
        return ()
    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001
        caps = []
    return ("f32", "bf16") if "BF16" in caps else ("f32",)


def cpu_id() -> str:
    """Which CPU verdicts are for (a verdict moves with the machine, not with the model)."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import platform

    return name or platform.processor() or platform.machine()


class OpenVinoBackend:
    """A model compiled by OpenVINO for the CPU at one inference precision."""

    def __init__(self, path: str, precision: str = "f32", threads: int = 0, name: str = "") -> None:
        ov = runtime()
        if ov is None:
            raise RuntimeError("OpenVINO is not installed: pip install 'nomarr[openvino]'")
        from nomarr.models.runtime import available_cores

        core = ov.Core()
        model = core.read_model(path)
        cfg = {
            "INFERENCE_NUM_THREADS": threads or available_cores(),
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        self.compiled = core.compile_model(model, "CPU", cfg)
        self.request = self.compiled.create_infer_request()
        self.provider = provider_name(precision)
        self.precision = precision
        self.name = name or Path(path).stem
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self._outs = {o.get_any_name(): o for o in self.compiled.outputs}
        self.output_names = list(self._outs)
        self._lock = threading.Lock()  # one infer request: one call at a time

    def run(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch; returns copies of the requested outputs."""
        names = outputs or self.output_names
        with self._lock:
            res = self.request.infer(inputs)
            return {n: np.array(res[self._outs[n]], copy=True) for n in names}


def music_like_patches(
    frames: int, n_mels: int, sample_rate: int, tracks: int = 4, per_track: int = 6
) -> list[np.ndarray]:
    """Deterministic, music-like log-mel patches, ``tracks`` sets of ``per_track``.

    The drift of a reduced-precision build is measured on input shaped like what it will see
    (chords with harmonics, a pulse of noise bursts, changing levels), not on uniform noise, which
    sits far from the model's training data.
    """
    from nomarr.audio.mel import MelSpec, log_mel

    rng = np.random.default_rng(20261205)
    hop = 256
    seconds = per_track * frames * hop / sample_rate + 0.5
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    out = []
    for k in range(tracks):
        sig = np.zeros(n)
        bpm = 80 + 25 * k
        beat = int(sample_rate * 60 / bpm)
        for i, start in enumerate(range(0, n, beat * 4)):  # a chord per bar
            root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
            seg = slice(start, min(n, start + beat * 4))
            for ratio in (1.0, 1.26, 1.5, 2.0):
                for h in range(1, 6):
                    sig[seg] += np.sin(2 * np.pi * root * ratio * h * t[seg]) / (h * 4.0)
            sig[seg] *= 0.3 + 0.7 * ((i + k) % 3) / 2
        for start in range(0, n, beat):  # percussion
            m = min(n - start, sample_rate // 20)
            sig[start : start + m] += rng.normal(0, 0.6, m) * np.exp(-np.arange(m) / (m / 5))
        sig *= 0.25 / max(1e-9, np.abs(sig).max()) * (0.5 + 0.5 * k / max(1, tracks - 1))
        mel = log_mel(sig.astype(np.float32), MelSpec(sr=sample_rate))
        out.append(np.stack([mel[i * frames : (i + 1) * frames] for i in range(per_track)]))
    return out


def passes(verdict: dict[str, Any], max_drift: float) -> tuple[bool, str | None]:
    """Whether a measured build qualifies under ``max_drift``, and why not."""
    if verdict.get("error"):
        return False, f"error: {verdict['error']}"
    why = []
    if verdict["speedup"] < MIN_SPEEDUP:
        why.append(f"not faster ({verdict['speedup']:.2f}x)")
    if not verdict["drift"] <= max_drift:
        why.append(f"drift {verdict['drift']:.1e} > {max_drift:g}")
    return not why, "; ".join(why) or None


def qualify(
    path: str,
    precision: str,
    input_name: str,
    scores: str,
    activation: str,
    tracks: list[np.ndarray],
    reps: int = 5,
) -> dict[str, Any]:
    """Speed (vs ONNX Runtime fp32, one thread, batch 1, interleaved) and drift (worst per-label
    difference of track-level means) of one OpenVINO build: measured once per machine and
    cached; whether it qualifies is decided against the policy's bound (:func:`passes`)."""
    from nomarr.models.runtime import OrtBackend
    from nomarr.pipeline.modelset import _activate

    ref = OrtBackend(path, "CPUExecutionProvider", threads=1)
    cand = OpenVinoBackend(path, precision, threads=1)
    drift, worst_patch = 0.0, 0.0
    for patches in tracks:
        r = _activate(ref.run({input_name: patches}, [scores])[scores], activation)
        c = _activate(cand.run({input_name: patches}, [scores])[scores], activation)
        worst_patch = max(worst_patch, float(np.abs(r - c).max()))
        drift = max(drift, float(np.abs(r.mean(axis=0) - c.mean(axis=0)).max()))
    sample = np.concatenate(tracks)[:8]
    for be in (ref, cand):  # warm-up
        be.run({input_name: sample[:1]}, [scores])
    t_ref, t_cand = [], []
    for _ in range(reps):  # interleaved, so a slow phase of a shared machine hits both
        for be, acc in ((ref, t_ref), (cand, t_cand)):
            t0 = time.perf_counter()
            for i in range(sample.shape[0]):
                be.run({input_name: sample[i : i + 1]}, [scores])
            acc.append((time.perf_counter() - t0) / sample.shape[0])
    # the minimum is the run least disturbed by other processes; the median is reported beside it
    speedup = min(t_ref) / min(t_cand)
    if not np.isfinite(worst_patch):
        drift = float("inf")
    return {
        "speedup": round(speedup, 3),
        "speedup_median": round(statistics.median(t_ref) / statistics.median(t_cand), 3),
        "ms_per_patch": round(1000 * min(t_cand), 2),
        "ms_per_patch_ort": round(1000 * min(t_ref), 2),
        "drift": drift,
        "max_patch_diff": worst_patch,
        "error": None,
    }
