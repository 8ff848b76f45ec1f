"""Model runtime: one small backend interface over ONNX Runtime (and optionally TFLite).

Accelerators are only trusted once they have shown they compute the same numbers as the CPU: a
provider that silently changes results (TF32 convolutions, a buggy kernel, fp16 fallbacks) would
write wrong tags into thousands of files. So before a non-CPU execution provider is used for a model,
it runs a deterministic golden input and its outputs are compared with the CPU's; on a mismatch or
an error we fall back to CPU and say why. Verdicts are cached per (model hash, provider, ORT version).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nomarr import paths

log = logging.getLogger(__name__)

# DESIGN §3: preferred order, among those installed.
PROVIDER_ORDER = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
# Accelerated providers that are present in builds but not useful for these models.
IGNORED_PROVIDERS = {"AzureExecutionProvider", "TensorrtExecutionProvider"}

GOLDEN_ATOL = 2e-3
GOLDEN_RTOL = 1e-2


class Backend(Protocol):
    """What the pipeline needs from a loaded model."""

    name: str
    provider: str
    input_names: list[str]
    output_names: list[str]

    def run(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch; returns the requested outputs by name."""
        ...


def available_cores() -> int:
    """CPU cores this process may use (affinity/cgroup-aware where the OS tells us)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def ort_available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime, in our preference order."""
    import onnxruntime as ort

    have = set(ort.get_available_providers()) - IGNORED_PROVIDERS
    return [p for p in PROVIDER_ORDER if p in have] + sorted(have - set(PROVIDER_ORDER))


@dataclass
class OrtBackend:
    """An ONNX Runtime session with thread settings that do not oversubscribe the machine.

    ``threads`` is the intra-op pool size. Several sessions in one process (one per worker) should
    each get ``threads=1``; spinning threads of idle pools would steal cycles from busy ones. On 2
    cores, one single-threaded session per core beat one 2-thread session by ~11 % at batch 1 and
    tied at batch 4 (docs/bench.md).
    """

    path: str
    provider: str = "CPUExecutionProvider"
    threads: int = 0
    name: str = ""
    provider_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        threads = self.threads or available_cores()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        if threads == 1:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = [self.provider]
        if self.provider != "CPUExecutionProvider":
            providers = [(self.provider, self.provider_options), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(self.path, sess_options=so, providers=providers)
        active = self.session.get_providers()[0]
        if active != self.provider:
            raise RuntimeError(
                f"{self.provider} could not be initialised (onnxruntime chose {active})"
            )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = self.name or Path(self.path).stem

    def run(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch (ORT sessions are safe to run from several threads)."""
        names = outputs or self.output_names
        res = self.session.run(names, inputs)
        return dict(zip(names, res, strict=True))

    def input_specs(self) -> list[tuple[str, list[Any], str]]:
        """(name, shape with symbolic dims, element type) of every input."""
        return [(i.name, list(i.shape), i.type) for i in self.session.get_inputs()]


class TfliteBackend:
    """LiteRT (``ai-edge-litert``) interpreter for ``.tflite`` exports; optional.

    Measured slower than ORT on x86 for musicnn; it exists for platforms where a TFLite delegate
    (an NPU, an Edge TPU) is the only accelerator.
    """

    def __init__(self, path: str, threads: int = 0, name: str = "") -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - depends on optional install
            try:
                from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
            except ImportError as e:
                raise RuntimeError("TFLite backend needs: pip install 'nomarr[tflite]'") from e
        self.interp = Interpreter(model_path=path, num_threads=threads or available_cores())
        self.provider = "TFLite"
        self.name = name or Path(path).stem
        self._in = {d["name"]: d for d in self.interp.get_input_details()}
        self._out = {d["name"]: d for d in self.interp.get_output_details()}
        self.input_names = list(self._in)
        self.output_names = list(self._out)
        self._batch: int | None = None
        self._lock = threading.Lock()

    def run(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Resize to the batch, invoke, copy the outputs (the interpreter reuses its buffers)."""
        with self._lock:
            batch = next(iter(inputs.values())).shape[0]
            if batch != self._batch:
                for name, arr in inputs.items():
                    self.interp.resize_tensor_input(self._in[name]["index"], arr.shape)
                self.interp.allocate_tensors()
                self._batch = batch
            for name, arr in inputs.items():
                self.interp.set_tensor(self._in[name]["index"], arr)
            self.interp.invoke()
            names = outputs or self.output_names
            return {n: self.interp.get_tensor(self._out[n]["index"]).copy() for n in names}


# -- golden-input provider check --------------------------------------------------------------


def golden_inputs(
    specs: list[tuple[str, list[Any], str]], seed: int = 1234
) -> dict[str, np.ndarray]:
    """A deterministic input batch for any model signature (dynamic dims: batch 2, others 8).

    Float inputs get values in [0, 3), the range of musicnn's log-mel; integer inputs get small ids
    (and ones for attention masks), so text encoders see valid tokens.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for i, (name, shape, typ) in enumerate(specs):
        dims = [
            d if isinstance(d, int) and d > 0 else (2 if j == 0 else 8) for j, d in enumerate(shape)
        ]
        if "float" in typ:
            out[name] = rng.uniform(0.0, 3.0, size=dims).astype(np.float32)
        elif "int" in typ:
            arr = (
                np.ones(dims, dtype=np.int64) if "mask" in name else rng.integers(3, 100, size=dims)
            )
            out[name] = arr.astype(np.int64 if "int64" in typ else np.int32)
        else:
            raise ValueError(f"input {name}: unsupported type {typ} for a golden check (#{i})")
    return out


def compare_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[bool, float]:
    """(within tolerance, worst absolute difference) over every output."""
    worst = 0.0
    ok = True
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape or not np.all(np.isfinite(g)):
            return False, float("inf")
        diff = float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
        worst = max(worst, diff)
        ok = ok and bool(np.allclose(g, r, atol=GOLDEN_ATOL, rtol=GOLDEN_RTOL))
    return ok, worst


@dataclass
class ProviderChoice:
    """Which provider a model uses and why (shown by ``nomarr doctor``); ``speedup`` and
    ``drift`` are the measured numbers of a reduced-precision or OpenVINO CPU build."""

    provider: str
    reason: str
    max_abs_diff: float | None = None
    tried: list[dict[str, Any]] = field(default_factory=list)
    speedup: float | None = None
    drift: float | None = None


@dataclass(frozen=True)
class CpuCheck:
    """What the CPU-build check needs to know of a mel-patch model (from its manifest)."""

    input_name: str
    scores: str
    activation: str
    frames: int
    n_mels: int
    sample_rate: int


class ProviderSelector:
    """Chooses and validates execution providers, remembering verdicts across runs."""

    def __init__(self, cache_file: Path | None = None, allowed: list[str] | None = None) -> None:
        self.cache_file = cache_file or (paths.cache_dir() / "provider-checks.json")
        self.allowed = allowed
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            try:
                self._cache = json.loads(self.cache_file.read_text())
            except (OSError, json.JSONDecodeError):
                self._cache = {}
        return self._cache

    def _store(self, key: str, verdict: dict[str, Any]) -> None:
        cache = self._load()
        cache[key] = verdict
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            os.replace(tmp, self.cache_file)
        except OSError as e:  # a read-only home must not stop analysis
            log.debug("cannot write provider cache: %s", e)

    def candidates(self) -> list[str]:
        """Installed providers in preference order, restricted by configuration."""
        provs = ort_available_providers()
        if self.allowed:
            provs = [p for p in provs if p in self.allowed or p == "CPUExecutionProvider"]
        return provs

    def choose(
        self, model_path: str, model_sha: str, cpu_check: CpuCheck | None = None
    ) -> ProviderChoice:
        """The first accelerated provider that reproduces CPU outputs; else the fastest CPU build
        that qualifies (see :mod:`nomarr.models.openvino`; needs ``cpu_check``); else CPU."""
        import onnxruntime as ort

        tried: list[dict[str, Any]] = []
        accel = [p for p in self.candidates() if p != "CPUExecutionProvider"]
        if not accel:
            return self._cpu_build(
                model_path,
                model_sha,
                cpu_check,
                tried,
                "no accelerated execution provider installed",
            )
        ref: dict[str, np.ndarray] | None = None
        inputs: dict[str, np.ndarray] | None = None
        for prov in accel:
            key = f"{model_sha}:{prov}:{ort.__version__}"
            cached = self._load().get(key)
            if cached is not None:
                tried.append({"provider": prov, **cached, "cached": True})
                if cached["ok"]:
                    return ProviderChoice(
                        prov,
                        f"matched CPU on golden input (cached; max diff {cached['diff']:.2e})",
                        cached["diff"],
                        tried,
                    )
                continue
            if ref is None:
                cpu = OrtBackend(model_path, "CPUExecutionProvider")
                inputs = golden_inputs(cpu.input_specs())
                ref = cpu.run(inputs)
            assert inputs is not None
            try:
                be = OrtBackend(model_path, prov)
                ok, diff = compare_outputs(ref, be.run(inputs))
                verdict = {"ok": ok, "diff": diff, "error": None}
            except Exception as e:  # noqa: BLE001 - any provider failure means: not trusted
                verdict = {"ok": False, "diff": None, "error": f"{type(e).__name__}: {e}"[:300]}
            self._store(key, verdict)
            tried.append({"provider": prov, **verdict, "cached": False})
            if verdict["ok"]:
                return ProviderChoice(
                    prov,
                    f"matched CPU on golden input (max diff {verdict['diff']:.2e})",
                    verdict["diff"],
                    tried,
                )
            log.warning(
                "execution provider failed the golden check; falling back",
                extra={
                    "provider": prov,
                    "model": model_path,
                    "diff": verdict["diff"],
                    "error": verdict["error"],
                },
            )
        why = "; ".join(
            f"{t['provider']} {'error: ' + t['error'] if t.get('error') else 'differs from CPU by %.2e' % (t['diff'] or 0)}"
            for t in tried
        )
        return self._cpu_build(model_path, model_sha, cpu_check, tried, f"fell back to CPU: {why}")

    def _cpu_build(
        self,
        model_path: str,
        model_sha: str,
        check: CpuCheck | None,
        tried: list[dict[str, Any]],
        why_cpu: str,
    ) -> ProviderChoice:
        """ONNX Runtime on the CPU, unless an OpenVINO build (fp32, or bf16 where the CPU has it)
        measured faster here with track-level drift within bounds (cached per model, OpenVINO
        version, CPU and core count)."""
        from nomarr.models import openvino as ovb

        max_drift = ovb.MAX_DRIFT[ovb.policy()]
        if check is None or max_drift < 0 or ovb.runtime() is None:
            return ProviderChoice("CPUExecutionProvider", why_cpu, None, tried)
        with self._exclusive():
            return self._cpu_build_locked(model_path, check, tried, why_cpu, max_drift, model_sha)

    def _exclusive(self) -> Any:
        """A lock file beside the cache: the workers of a scan load their models at the same
        time, and two measuring at once would measure each other; the second waits and then
        reads the first one's verdict."""
        import contextlib
        import fcntl

        @contextlib.contextmanager
        def lock() -> Any:
            try:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                fh = open(self.cache_file.with_suffix(".lock"), "a")  # noqa: SIM115
            except OSError:
                yield
                return
            try:
                fcntl.flock(fh, fcntl.LOCK_EX)
                self._cache = None  # re-read: another process may have just measured
                yield
            finally:
                fh.close()

        return lock()

    def _cpu_build_locked(
        self,
        model_path: str,
        check: CpuCheck,
        tried: list[dict[str, Any]],
        why_cpu: str,
        max_drift: float,
        model_sha: str,
    ) -> ProviderChoice:
        from nomarr.models import openvino as ovb

        best: dict[str, Any] | None = None
        tracks: list[np.ndarray] | None = None
        for prec in ovb.precisions():
            prov = ovb.provider_name(prec)
            version = ovb.runtime().__version__
            key = f"{model_sha}:{prov}:{version}:{ovb.cpu_id()}:{available_cores()}"
            verdict = self._load().get(key)
            cached = verdict is not None
            if verdict is None:
                if tracks is None:
                    tracks = ovb.music_like_patches(check.frames, check.n_mels, check.sample_rate)
                try:
                    verdict = ovb.qualify(
                        model_path, prec, check.input_name, check.scores, check.activation, tracks
                    )
                except Exception as e:  # noqa: BLE001 - a build that fails is not used
                    verdict = {"error": f"{type(e).__name__}: {e}"[:300]}
                self._store(key, verdict)
                log.info("CPU build checked", extra={"provider": prov, **verdict})
            ok, why = ovb.passes(verdict, max_drift)
            tried.append({"provider": prov, **verdict, "ok": ok, "why_not": why, "cached": cached})
            if ok and (best is None or verdict["speedup"] > best["speedup"]):
                best = {"provider": prov, **verdict}
        if best is None:
            why = "; ".join(f"{t['provider']} {t['why_not']}" for t in tried if t.get("why_not"))
            return ProviderChoice("CPUExecutionProvider", f"{why_cpu}; {why}", None, tried)
        return ProviderChoice(
            best["provider"],
            f"{best['speedup']:.2f}x ONNX Runtime fp32 per patch here, track-level drift "
            f"{best['drift']:.1e} (<= {max_drift:g}, precision policy {ovb.policy()})",
            best["drift"],
            tried,
            speedup=best["speedup"],
            drift=best["drift"],
        )


def platform_info() -> dict[str, Any]:
    """Facts about this machine that decide speed (for ``doctor`` and benchmarks)."""
    import onnxruntime as ort

    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cores": available_cores(),
        "onnxruntime": ort.__version__,
        "ort_device": ort.get_device(),
        "providers": ort_available_providers(),
    }
