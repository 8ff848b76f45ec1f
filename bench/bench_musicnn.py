#!/usr/bin/env python3
"""Benchmark nomarr's musicnn (ONNX Runtime) against upstream musicnn 0.1.0 (TensorFlow).

Why this exists: nomarr replaced musicnn's TensorFlow graph with its own ONNX conversion and its own
decode/mel front end. This script measures, in one run on one machine, what that bought and what
is left on the table:

  a. per-patch model latency, ORT vs the upstream TF1 graph, batch 1..64, 1 and 2 intra-op threads;
  b. whole-file speed (x real time): nomarr's ``--profile full`` pipeline vs upstream's extractor;
  c. throughput: one single-threaded session per core vs one session using every core;
  d. ONNX graph-optimisation levels and int8 quantisation (speed, and tag drift vs fp32).

How it measures, and why:
- time.perf_counter; warm-up calls excluded; tables show medians over repeats.
- Things being compared are timed *interleaved* (repeat 1 of A, repeat 1 of B, repeat 2 of A, ...),
  because on a shared VM speed drifts in phases of seconds; back-to-back blocks would turn a slow
  phase into a fake difference.
- Each cell also records CPU time / wall time ("cores used"): a thread setting that does not confine
  a runtime to the cores it names shows up there.
- TensorFlow runs in child processes, with our ORT session beside it in the same process for the
  interleaving; the musicnn wheel comes from ``--musicnn-dir``, /tmp/mnn/w, or
  ``pip download --no-deps musicnn==0.1.0`` into bench/.cache/ (never into the repository).

    .venv/bin/python bench/bench_musicnn.py            # full run, under ~10 minutes on 2 cores
    .venv/bin/python bench/bench_musicnn.py --quick    # smaller run, under ~3 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
MODEL = ROOT / "agent" / "models" / "builtin" / "msd_musicnn.onnx"
MODEL_ID = "msd-musicnn-1"
N_FRAMES, N_MELS, N_TAGS = 187, 96, 50
MUSICNN_VERSION = "0.1.0"
DEFAULT_MUSICNN_DIRS = (Path("/tmp/mnn/w"), CACHE / f"musicnn-{MUSICNN_VERSION}")
MAX_TAG_DRIFT = 0.01  # a quantised model must stay within this of fp32 track-level tag means
FASTER_BY = 0.05  # ... and be at least this much faster (relative) to count as faster

Engine = Callable[[np.ndarray], object]


@dataclass(frozen=True)
class Plan:
    """How much work each section does; ``--quick`` shrinks it to stay under ~3 minutes.

    ``opt_batch`` and ``tp_batches`` are replaced at run time by the Analyzer's default batch
    (and batch 1), so the experiments follow what nomarr actually runs.
    """

    batches: tuple[int, ...]
    threads: tuple[int, ...]
    lat_reps: int
    lat_min_patches: int
    n_files: int
    file_reps: int
    tp_batches: tuple[int, ...]
    tp_patches: int
    tp_reps: int
    opt_batch: int
    opt_reps: int
    eval_files: int
    calib_files: int
    calib_patches_per_file: int


FULL = Plan(
    batches=(1, 2, 4, 8, 16, 32, 64),
    threads=(1, 2),
    lat_reps=7,
    lat_min_patches=16,
    n_files=6,
    file_reps=3,
    tp_batches=(1, 8),
    tp_patches=192,
    tp_reps=3,
    opt_batch=8,
    opt_reps=7,
    eval_files=3,
    calib_files=4,
    calib_patches_per_file=16,
)
QUICK = Plan(
    batches=(1, 4, 32),
    threads=(1, 2),
    lat_reps=3,
    lat_min_patches=8,
    n_files=2,
    file_reps=1,
    tp_batches=(8,),
    tp_patches=64,
    tp_reps=2,
    opt_batch=8,
    opt_reps=3,
    eval_files=1,
    calib_files=2,
    calib_patches_per_file=8,
)


# -- small helpers --------------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    """Median, NaN for no samples (a failed cell prints as n/a rather than ending the run)."""
    return statistics.median(xs) if xs else float("nan")


def fmt(x: float | None, digits: int = 1) -> str:
    """Number for a table cell."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}"


def table(title: str, head: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """Print (and return) a Markdown table: readable in a terminal, pasteable into docs."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [
        f"\n### {title}\n",
        line(head),
        "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|",
    ]
    out += [line(r) for r in rows] + [f"\n{n}" for n in notes]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def cpu_seconds() -> float:
    """CPU time of this process, all threads (spinning pool threads included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class LoadMeter:
    """CPU used by *other* processes (and hypervisor steal) while a section ran.

    This VM is shared with other work; a section whose numbers a neighbour bent should say so next
    to its table instead of being silently wrong.
    """

    def __init__(self) -> None:
        self.t0, self.stat0, self.own0 = time.perf_counter(), self._stat(), self._own()

    @staticmethod
    def _stat() -> tuple[float, float] | None:
        """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
        try:
            first = Path("/proc/stat").read_text().split("\n", 1)[0]
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(float, first.split()[1:9])
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        return (user + nice + system + irq + softirq) / tick, steal / tick

    @staticmethod
    def _own() -> float:
        """CPU seconds of this process and its finished children."""
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cpu_seconds() + c.ru_utime + c.ru_stime

    def report(self) -> dict[str, float | None]:
        """Average cores busy with other work, and steal as a share of all cores."""
        wall = time.perf_counter() - self.t0
        stat, own = self._stat(), self._own()
        if stat is None or self.stat0 is None or wall <= 0:
            return {"wall_s": wall, "other_cores": None, "steal_pct": None}
        other = (stat[0] - self.stat0[0] - (own - self.own0)) / wall
        steal = 100 * (stat[1] - self.stat0[1]) / (wall * (os.cpu_count() or 1))
        return {"wall_s": wall, "other_cores": max(0.0, other), "steal_pct": steal}


def machine_info() -> dict[str, Any]:
    """Facts that decide the numbers: cores, CPU model, library versions, load."""
    import onnxruntime as ort
    from nomarr.models.runtime import available_cores

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": available_cores(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "loadavg_start": os.getloadavg(),
    }


def shipped_batch() -> int:
    """The Analyzer's default inference batch, so sections c and d measure what nomarr runs."""
    import inspect

    from nomarr.pipeline.analyze import Analyzer

    return int(inspect.signature(Analyzer).parameters["batch_size"].default)


def last_core() -> int:
    """The core that pinned single-core measurements run on."""
    return sorted(os.sched_getaffinity(0))[-1]


def corpus_files(corpus: Path) -> list[Path]:
    """The real-music corpus, sorted so every run gives the same files the same roles."""
    files = sorted(p for ext in ("ogg", "mp3", "flac") for p in corpus.glob(f"*.{ext}"))
    if not files:
        raise SystemExit(f"no audio files in {corpus} (pass --corpus DIR)")
    return files


def file_patches(path: Path) -> np.ndarray:
    """Non-overlapping [n, 187, 96] log-mel patches of a whole file (trailing partial dropped)."""
    from nomarr.audio.decode import load_mono
    from nomarr.audio.mel import log_mel

    m = log_mel(load_mono(str(path)))
    n = m.shape[0] // N_FRAMES
    return np.ascontiguousarray(m[: n * N_FRAMES].reshape(n, N_FRAMES, N_MELS), dtype=np.float32)


def bench_input(files: list[Path], n: int = 64, seed: int = 7) -> np.ndarray:
    """Random-but-realistic input: 187-frame crops at random offsets of real corpus log-mels.

    Real spectra rather than uniform noise, so value ranges (and any denormal or saturation
    effects) are those of music; random offsets so no patch boundary is special.
    """
    from nomarr.audio.decode import load_mono
    from nomarr.audio.mel import log_mel

    rng = np.random.default_rng(seed)
    mels = [log_mel(load_mono(str(f))) for f in files[:2]]
    crops = []
    for i in range(n):
        m = mels[i % len(mels)]
        s = int(rng.integers(0, m.shape[0] - N_FRAMES))
        crops.append(m[s : s + N_FRAMES])
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)


def paired_timing(
    cells: dict[str, tuple[Engine, np.ndarray]], reps: int, min_patches: int
) -> dict[str, dict[str, Any]]:
    """ms per patch of every (engine, input) cell; repeats interleaved round-robin (module doc).

    All cells that will be compared — engines, and batch sizes too — take turns within each
    repeat, so a slow phase of the machine hits them alike. Each turn makes enough calls to cover
    ``min_patches`` patches, so batch-1 samples are not timer noise. Two untimed warm-up calls per
    cell first: at a new batch size the first call plans memory, and at batch 64 the second call
    was still measurably slow.
    """
    names = list(cells)
    for fn, x in cells.values():
        for _ in range(2):
            fn(x)
    out: dict[str, dict[str, Any]] = {n: {"ms": [], "cpu_s": 0.0, "wall_s": 0.0} for n in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn, x = cells[name]
            calls = max(1, math.ceil(min_patches / x.shape[0]))
            c0, t0 = cpu_seconds(), time.perf_counter()
            for _ in range(calls):
                fn(x)
            wall = time.perf_counter() - t0
            out[name]["ms"].append(wall * 1e3 / (calls * x.shape[0]))
            out[name]["cpu_s"] += cpu_seconds() - c0
            out[name]["wall_s"] += wall
    return out


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over repeats of a[i] / b[i] (the two were timed next to each other)."""
    return med([x / y for x, y in zip(a, b, strict=False) if y > 0])


def cores_used(cells: list[dict[str, Any]]) -> float:
    """CPU seconds / wall seconds over a set of cells."""
    wall = sum(c["wall_s"] for c in cells)
    return sum(c["cpu_s"] for c in cells) / wall if wall else float("nan")


# -- upstream musicnn (TensorFlow) ------------------------------------------------------------------


def find_musicnn(explicit: str | None) -> Path:
    """Directory holding the unpacked musicnn 0.1.0 wheel; downloads it into bench/.cache if absent.

    The wheel carries the checkpoints we compare against; it is never vendored into the repo.
    """
    cands = [Path(explicit)] if explicit else list(DEFAULT_MUSICNN_DIRS)
    for d in cands:
        if (d / "musicnn" / "MSD_musicnn" / ".index").exists():
            return d
    if explicit:
        raise RuntimeError(f"{explicit}: no musicnn/MSD_musicnn checkpoint there")
    dest, wheels = DEFAULT_MUSICNN_DIRS[-1], CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pkg = f"musicnn=={MUSICNN_VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), pkg]
    print(f"fetching upstream: {shlex.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    whl = next(iter(sorted(wheels.glob(f"musicnn-{MUSICNN_VERSION}-*.whl"))), None)
    if whl is None:
        raise RuntimeError(f"pip did not leave a musicnn {MUSICNN_VERSION} wheel in {wheels}")
    with zipfile.ZipFile(whl) as z:
        z.extractall(dest)
    return dest


def tf_build(threads: int | None) -> tuple[Any, Engine]:
    """The upstream graph, built as musicnn.extractor builds it: TF1 graph, Session, restore.

    ``threads=None`` is the extractor's own default Session; otherwise intra-op threads as given
    and one inter-op thread (ORT's setting too), so musicnn's parallel front-end branches are not
    spread over more threads than the cell names. Returns the session and a run(batch) function
    fetching tags + penultimate layer, what our ONNX graph returns.
    """
    import musicnn
    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        outs = models.define_model(x, is_training, "MSD_musicnn", N_TAGS)
        tags = tf.nn.sigmoid(outs[0])
    config = None
    if threads is not None:
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1
        )
    sess = tf.compat.v1.Session(config=config)
    sess.run(tf.compat.v1.global_variables_initializer())
    ckpt = Path(musicnn.__file__).parent / "MSD_musicnn"
    tf.compat.v1.train.Saver().restore(sess, f"{ckpt}/")

    def run(batch: np.ndarray) -> object:
        return sess.run([tags, outs[-1]], {x: batch, is_training: False})

    return sess, run


def worker_latency(p: dict[str, Any]) -> dict[str, Any]:
    """Child process: per-patch latency of ORT and (optionally) TF, interleaved, one thread setting."""
    if p["pin"] is not None:  # before any runtime starts threads: they inherit the mask
        os.sched_setaffinity(0, {p["pin"]})
    from nomarr.models.runtime import OrtBackend

    x_all = np.load(p["input"])
    be = OrtBackend(str(MODEL), threads=p["threads"])
    engines: dict[str, Engine] = {
        "ort": lambda a: be.run({"melspectrogram": a}, ["tags", "embedding"])
    }
    res: dict[str, Any] = {}
    if p["tf"]:
        import tensorflow as tf

        t = time.perf_counter()
        _sess, engines["tf"] = tf_build(p["threads"])
        res.update(tensorflow=tf.__version__, tf_build_s=time.perf_counter() - t)
        ref = be.run({"melspectrogram": x_all}, ["tags", "embedding"])
        got = engines["tf"](x_all)
        res["tf_vs_ort"] = {
            "tags": float(np.abs(got[0] - ref["tags"]).max()),
            "embedding": float(np.abs(got[1] - ref["embedding"]).max()),
        }
    cells = {f"{e}:{b}": (fn, x_all[:b]) for b in p["batches"] for e, fn in engines.items()}
    timing = paired_timing(cells, p["reps"], p["min_patches"])
    res["cells"] = {str(b): {e: timing[f"{e}:{b}"] for e in engines} for b in p["batches"]}
    return res


def worker_files(p: dict[str, Any]) -> dict[str, Any]:
    """Child process: whole files, nomarr's Analyzer and upstream's extractor interleaved per file.

    Upstream's one-off costs (TF import, first call) and the parts of a call (graph build+restore,
    librosa decode+mel) are timed separately so they can be told apart.
    """
    from nomarr.audio.decode import probe
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import get_profile

    files = p["files"]
    t = time.perf_counter()
    an = Analyzer(ModelSet(Registry(), [MODEL_ID], threads=0), get_profile("full"))  # shipped batch
    res: dict[str, Any] = {"ours_load_s": time.perf_counter() - t, "batch": an.batch_size}
    t = time.perf_counter()
    an.analyze(files[0])
    res["ours_first_call_s"] = time.perf_counter() - t
    per: dict[str, Any] = {}
    for f in files:
        per[f] = {
            "duration": probe(f).duration or 0.0,
            "ours_s": [],
            "ours_decode_mel_s": [],
            "ours_inference_s": [],
            "up_s": [],
        }

    def ours(f: str) -> None:
        t = time.perf_counter()
        r = an.analyze(f)
        per[f]["ours_s"].append(time.perf_counter() - t)
        per[f]["ours_decode_mel_s"].append(r.timing["decode_mel"])
        per[f]["ours_inference_s"].append(r.timing["inference"])
        per[f]["patches"] = r.results[MODEL_ID].n_patches
        per[f]["ours_scores"] = r.results[MODEL_ID].scores

    steps: list[Callable[[str], None]] = [ours]
    sink = io.StringIO()  # the extractor prints progress to stdout
    if p["tf"]:
        t = time.perf_counter()
        import tensorflow as tf
        from musicnn import configuration
        from musicnn.extractor import batch_data, extractor

        res.update(
            tensorflow=tf.__version__,
            up_import_s=time.perf_counter() - t,
            labels=list(configuration.MSD_LABELS),
        )

        def up(f: str) -> None:
            t = time.perf_counter()
            with contextlib.redirect_stdout(sink):
                taggram, _labels, _features = extractor(
                    f, model="MSD_musicnn", extract_features=True
                )
            per[f]["up_s"].append(time.perf_counter() - t)
            per[f]["up_tag_means"] = taggram.mean(axis=0).astype(float).tolist()

        t = time.perf_counter()
        up(files[0])
        res["up_first_call_s"] = time.perf_counter() - t
        per[files[0]]["up_s"].clear()
        steps.append(up)
    for r in range(p["reps"]):
        for f in files:
            for step in steps if r % 2 == 0 else steps[::-1]:
                step(f)
    if p["tf"]:
        builds = []
        for _ in range(3):
            t = time.perf_counter()
            sess, _run = tf_build(None)
            builds.append(time.perf_counter() - t)
            sess.close()
        res["up_build_restore_s"] = builds
        for f in files:  # librosa decode + mel + float16 log, the extractor's front end
            t = time.perf_counter()
            _batch, spec = batch_data(f, N_FRAMES, N_FRAMES)
            per[f]["up_batch_data_s"] = time.perf_counter() - t
            per[f]["up_nonfinite_frac"] = float(np.mean(~np.isfinite(spec)))
    res["files"] = per
    return res


def worker_tf_cold(p: dict[str, Any]) -> dict[str, Any]:
    """Child process: import + one extractor call, as a user's one-off script would do."""
    with contextlib.redirect_stdout(io.StringIO()):
        from musicnn.extractor import extractor

        extractor(p["file"], model="MSD_musicnn", extract_features=True)
    return {}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "latency": worker_latency,
    "files": worker_files,
    "tf-cold": worker_tf_cold,
}


def run_worker(
    kind: str, params: dict[str, Any], musicnn_dir: Path | None, timeout: float = 600
) -> dict[str, Any]:
    """Run a child process; returns its result (or ``{"error": ...}``) plus its wall time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    io_path = CACHE / f"worker-{kind}.json"
    io_path.write_text(json.dumps(params))
    env = os.environ.copy()
    env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    if musicnn_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(musicnn_dir), env.get("PYTHONPATH")) if p
        )
    cmd = [sys.executable, __file__, "--worker", kind, "--worker-io", str(io_path)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{kind}: timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"{kind} exited {proc.returncode}: " + " / ".join(tail), "wall_s": wall}
    out = json.loads(io_path.read_text())
    out["wall_s"] = wall
    return out


def worker_main(kind: str, io_path: str) -> int:
    """Entry of a child process: read params, run, write the result over the params file."""
    import warnings

    warnings.filterwarnings("ignore")
    result = WORKERS[kind](json.loads(Path(io_path).read_text()))
    Path(io_path).write_text(json.dumps(result))
    return 0


# -- ONNX Runtime helpers ---------------------------------------------------------------------------


def ort_session(
    path: Path, threads: int, level: str = "ORT_ENABLE_ALL", save_to: Path | None = None
) -> Any:
    """A session with nomarr's runtime settings (agent.models.runtime.OrtBackend), any opt level."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if threads == 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def run_batched(sess: Any, patches: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(tags, embedding) for all patches, ``batch`` at a time."""
    tags, embs = [], []
    for i in range(0, patches.shape[0], batch):
        t, e = sess.run(["tags", "embedding"], {"melspectrogram": patches[i : i + batch]})
        tags.append(t)
        embs.append(e)
    return np.concatenate(tags), np.concatenate(embs)


@contextlib.contextmanager
def pinned(core: int | None) -> Iterator[None]:
    """Pin the calling thread (and threads it starts) to one core for the block, then restore."""
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- a. per-patch latency -----------------------------------------------------------------------------


def section_a(plan: Plan, input_path: Path, musicnn_dir: Path | None) -> dict[str, Any]:
    """ORT vs upstream TF graph, ms per patch, per batch size and intra-op thread setting."""
    configs = [(f"{th}T", th, None) for th in plan.threads]
    if 1 in plan.threads:  # TF's intra_op=1 still runs on >1 core; pinning gives a true 1-core cell
        configs.insert(1, ("1T pinned", 1, last_core()))
    runs: dict[str, dict[str, Any]] = {}
    for name, th, pin in configs:
        params = {
            "input": str(input_path),
            "threads": th,
            "pin": pin,
            "tf": musicnn_dir is not None,
            "batches": list(plan.batches),
            "reps": plan.lat_reps,
            "min_patches": plan.lat_min_patches,
        }
        runs[name] = run_worker("latency", params, musicnn_dir)
    head = ["batch"]
    for name, _, _ in configs:
        head += [f"ORT {name}", f"TF {name}", f"TF/ORT {name}"]
    rows = []
    for b in plan.batches:
        row = [str(b)]
        for name, _, _ in configs:
            cell = runs[name].get("cells", {}).get(str(b), {})
            o, t = cell.get("ort", {}).get("ms", []), cell.get("tf", {}).get("ms", [])
            row += [fmt(med(o)), fmt(med(t)), fmt(paired_ratio(t, o), 2)]
        rows.append(row)
    notes = [
        f"ms per patch, median of {plan.lat_reps} repeats (each >= {plan.lat_min_patches} patches; "
        "per thread setting, every batch size of both engines takes a turn in each repeat), 2 warm-up calls excluded. Both return tags + the 200-d embedding. nT: ORT "
        "intra_op_num_threads=n / TF intra_op_parallelism_threads=n, inter-op 1 on both. 'pinned': "
        f"process restricted to core {last_core()} with sched_setaffinity. TF/ORT: median of per-repeat ratios."
    ]
    used = []
    for name, _, _ in configs:
        r = runs[name]
        if "error" in r:
            notes.append(f"{name}: {r['error']}")
            continue
        cells = list(r["cells"].values())
        ort_c = cores_used([c["ort"] for c in cells])
        tf_c = cores_used([c["tf"] for c in cells]) if "tf" in cells[0] else float("nan")
        used.append(f"{name} ORT {ort_c:.2f} / TF {fmt(tf_c, 2)}")
    notes.append("Cores used (CPU time / wall time): " + "; ".join(used) + ".")
    agree = next((r["tf_vs_ort"] for r in runs.values() if "tf_vs_ort" in r), None)
    if agree:
        notes.append(
            f"Same input through both graphs: max |TF - ORT| = {agree['tags']:.1e} (tags), "
            f"{agree['embedding']:.1e} (embedding)."
        )
    text = table("a. Per-patch latency (ms/patch), ORT vs upstream TF graph", head, rows, notes)
    return {"runs": runs, "table": text}


# -- b. whole files -------------------------------------------------------------------------------------


def nomarr_cli() -> list[str]:
    """How to start the CLI with this interpreter's environment."""
    script = Path(sys.executable).parent / "nomarr"
    return [str(script)] if script.exists() else [sys.executable, "-m", "nomarr.cli"]


def section_b(plan: Plan, files: list[Path], musicnn_dir: Path | None) -> dict[str, Any]:
    """Whole-file speed: nomarr's full-profile pipeline vs upstream extractor, x real time."""
    files = files[: plan.n_files]
    # cold: fresh processes, interpreter start and imports included
    t = time.perf_counter()
    cmd = [*nomarr_cli(), "analyze", str(files[0]), "--profile", "full", "--json"]
    cli = subprocess.run(cmd, capture_output=True, text=True)
    cold_cli = time.perf_counter() - t
    cold_cli_own = json.loads(cli.stdout)["timing"]["total"] if cli.returncode == 0 else None
    cold_up = run_worker("tf-cold", {"file": str(files[0])}, musicnn_dir) if musicnn_dir else {}
    params = {
        "files": [str(f) for f in files],
        "reps": plan.file_reps,
        "tf": musicnn_dir is not None,
    }
    w = run_worker("files", params, musicnn_dir)
    if "error" in w:
        print(f"b: {w['error']}", flush=True)
        return {"worker": w, "table": ""}
    build = med(w.get("up_build_restore_s", []))
    rows, drift, nonfinite = [], [], []
    tot = dict.fromkeys(("audio", "ours", "up", "up_ex"), 0.0)
    for f in files:
        d = w["files"][str(f)]
        dur, ot, ut = d["duration"], med(d["ours_s"]), med(d["up_s"])
        ux = ut - build
        for k, v in (("audio", dur), ("ours", ot), ("up", ut), ("up_ex", ux)):
            tot[k] += v
        if "up_tag_means" in d:
            drift.append(
                max(
                    abs(d["ours_scores"][lab] - d["up_tag_means"][i])
                    for i, lab in enumerate(w["labels"])
                )
            )
            nonfinite.append(100 * d["up_nonfinite_frac"])
        rows.append(
            [
                f.name,
                fmt(dur),
                str(d["patches"]),
                fmt(ot, 3),
                fmt(dur / ot, 0),
                fmt(med(d["ours_decode_mel_s"]), 3),
                fmt(med(d["ours_inference_s"]), 3),
                fmt(ut, 3),
                fmt(dur / ut, 0),
                fmt(ux, 3),
                fmt(ut / ot, 1),
                fmt(ux / ot, 1),
                fmt(d.get("up_batch_data_s"), 3),
            ]
        )
    rows.append(
        [
            "all",
            fmt(tot["audio"]),
            "",
            fmt(tot["ours"], 3),
            fmt(tot["audio"] / tot["ours"], 0),
            "",
            "",
            fmt(tot["up"], 3),
            fmt(tot["audio"] / tot["up"], 0),
            fmt(tot["up_ex"], 3),
            fmt(tot["up"] / tot["ours"], 1),
            fmt(tot["up_ex"] / tot["ours"], 1),
            "",
        ]
    )
    head = [
        "file",
        "audio s",
        "patches",
        "ours s",
        "ours xRT",
        "ours decode+mel s",
        "ours inference s",
        "upstream s",
        "up xRT",
        "up excl. build s",
        "up/ours",
        "up excl. build/ours",
        "up librosa decode+mel s",
    ]
    notes = [
        f"Ours: Analyzer in-process, profile full, batch {w['batch']} (its default), threads=0 (all {os.cpu_count()} cores), model "
        f"load {w['ours_load_s']:.3f} s and first call {w['ours_first_call_s']:.2f} s not included. "
        "Upstream: musicnn.extractor.extractor(file, model='MSD_musicnn', extract_features=True): default "
        "Session (all cores), batch 1 (its configuration.BATCH_SIZE), graph rebuilt and restored on every call.",
        f"Median of {plan.file_reps} run(s) per file, ours and upstream alternating in one process.",
    ]
    if "up_import_s" in w:
        steady = med([med(d["up_s"]) for d in w["files"].values()])
        notes.append(
            f"Upstream one-offs: import TF+musicnn {w['up_import_s']:.2f} s; first extractor call "
            f"{w['up_first_call_s']:.2f} s vs steady median {steady:.2f} s. Graph build+restore "
            f"alone: {build:.3f} s (median of 3), subtracted in 'excl. build'."
        )
    notes.append(
        f"Cold one-file runs in fresh processes ({files[0].name}): `nomarr analyze --profile full "
        f"--json` {cold_cli:.2f} s wall (its own timer {fmt(cold_cli_own, 2)} s); upstream "
        f"`python` + import + extractor {fmt(cold_up.get('wall_s'), 2)} s wall."
    )
    if drift:
        notes.append(
            "Track-level tag means, ours vs upstream, max |Δ| per file: "
            + ", ".join(f"{d:.3f}" for d in drift)
            + "; share of upstream's log-mel values that "
            "are inf (its float16 mel overflows on loud frames): "
            + ", ".join(f"{n:.2f}%" for n in nonfinite)
            + ". The graphs agree on equal input "
            "(section a); the difference is upstream's front end."
        )
    text = table(
        "b. Whole files, x real time: nomarr (full profile) vs upstream extractor",
        head,
        rows,
        notes,
    )
    return {
        "worker": w,
        "cold_cli_s": cold_cli,
        "cold_cli_own_s": cold_cli_own,
        "cold_upstream": cold_up,
        "table": text,
    }


# -- c. throughput ------------------------------------------------------------------------------------


def _proc_loop(
    model: str, input_path: str, pin: int | None, cmds: Any, barrier: Any, results: Any
) -> None:
    """Child of the throughput test: one single-threaded session, serving timed rounds."""
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    from nomarr.models.runtime import OrtBackend

    x_all = np.load(input_path)
    be = OrtBackend(model, threads=1)
    while (cmd := cmds.get()) is not None:
        batch, calls = cmd
        x = x_all[:batch]
        be.run({"melspectrogram": x}, ["tags", "embedding"])  # warm-up at this batch size
        barrier.wait()
        t0 = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
        for _ in range(calls):
            be.run({"melspectrogram": x}, ["tags", "embedding"])
        results.put((t0, time.perf_counter()))


class ProcPool:
    """N processes with one single-threaded session each, started once and reused for every round."""

    def __init__(self, n: int, input_path: Path, pin: bool) -> None:
        ctx = mp.get_context("spawn")
        cores = sorted(os.sched_getaffinity(0))
        self.barrier = ctx.Barrier(n + 1)
        self.results = ctx.Queue()
        self.cmds = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(
                target=_proc_loop,
                daemon=True,
                args=(
                    str(MODEL),
                    str(input_path),
                    cores[i % len(cores)] if pin else None,
                    q,
                    self.barrier,
                    self.results,
                ),
            )
            for i, q in enumerate(self.cmds)
        ]
        for p in self.procs:
            p.start()

    def round(self, batch: int, calls: int) -> float:
        """patches/s of one round: every process runs ``calls`` batches; start-up not timed."""
        for q in self.cmds:
            q.put((batch, calls))
        self.barrier.wait(timeout=300)
        spans = [self.results.get(timeout=300) for _ in self.procs]
        return (
            len(self.procs) * calls * batch / (max(e for _, e in spans) - min(s for s, _ in spans))
        )

    def close(self) -> None:
        """Stop the children (they exit their loop on None)."""
        for q in self.cmds:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)


def throughput_threads(sessions: list[Any], x: np.ndarray, calls: int) -> float:
    """patches/s of ``sessions`` each driven by its own Python thread (ORT releases the GIL)."""
    for s in sessions:
        s.run({"melspectrogram": x}, ["tags", "embedding"])
    barrier = threading.Barrier(len(sessions) + 1)

    def work(be: Any) -> None:
        barrier.wait()
        for _ in range(calls):
            be.run({"melspectrogram": x}, ["tags", "embedding"])

    ths = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in ths:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ths:
        t.join()
    return len(sessions) * calls * x.shape[0] / (time.perf_counter() - t0)


def section_c(plan: Plan, x: np.ndarray, input_path: Path, cores: int) -> dict[str, Any]:
    """One single-threaded session per core vs one session using all cores, in patches/s."""
    from nomarr.models.runtime import OrtBackend

    one = [OrtBackend(str(MODEL), threads=cores)]
    many = [OrtBackend(str(MODEL), threads=1) for _ in range(cores)]
    pools = {
        "free": ProcPool(cores, input_path, pin=False),
        "pinned": ProcPool(cores, input_path, pin=True),
    }
    try:
        res: dict[str, dict[str, list[float]]] = {}
        for _ in range(plan.tp_reps):  # configurations interleaved within each repeat
            for b in plan.tp_batches:
                total = max(1, plan.tp_patches // b)
                each = max(1, total // cores)
                cfgs: dict[str, Callable[[], float]] = {
                    f"1 session x {cores} threads": lambda b=b, n=total: throughput_threads(
                        one, x[:b], n
                    ),
                    f"{cores} sessions x 1 thread, Python threads": lambda b=b, n=each: (
                        throughput_threads(many, x[:b], n)
                    ),
                    f"{cores} processes x 1 thread": lambda b=b, n=each: pools["free"].round(b, n),
                    f"{cores} processes x 1 thread, each pinned to a core": lambda b=b, n=each: (
                        pools["pinned"].round(b, n)
                    ),
                }
                for name, fn in cfgs.items():
                    res.setdefault(name, {}).setdefault(str(b), []).append(fn())
    finally:
        for pool in pools.values():
            pool.close()
    base = res[next(iter(res))]
    head = (
        ["configuration"]
        + [f"batch {b} patches/s" for b in plan.tp_batches]
        + [f"vs 1 session (batch {b})" for b in plan.tp_batches]
    )
    rows = [
        [name]
        + [fmt(med(d[str(b)])) for b in plan.tp_batches]
        + [fmt(paired_ratio(d[str(b)], base[str(b)]), 2) for b in plan.tp_batches]
        for name, d in res.items()
    ]
    notes = [
        f"{plan.tp_patches} patches per measurement, split across sessions; median of {plan.tp_reps} "
        "interleaved repeats; session/process start-up and one warm-up call per session excluded. "
        "Single-threaded sessions run with spinning off, as nomarr's workers do."
    ]
    text = table(f"c. Throughput on {cores} cores (patches/s)", head, rows, notes)
    return {"cells": res, "table": text}


# -- d. graph optimisation and quantisation -------------------------------------------------------------


def calibration_reader(patches: np.ndarray, batch: int = 8) -> Any:
    """An ORT CalibrationDataReader over real corpus log-mel patches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds ``patches`` in batches; rewindable (calibration may pass more than once)."""

        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= patches.shape[0]:
                return None
            self.i += batch
            return {"melspectrogram": patches[self.i - batch : self.i]}

        def rewind(self) -> None:
            self.i = 0

    return Reader()


def build_variants(calib: np.ndarray) -> Iterator[tuple[str, Path, str, str]]:
    """(name, model file, optimisation level, note) per experiment; builds files in the cache.

    A failing build yields a row with the error instead of ending the benchmark.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)  # "please run pre-processing" on every call
    d = CACHE / "models"
    d.mkdir(parents=True, exist_ok=True)
    yield "fp32 ORT_ENABLE_ALL (shipped)", MODEL, "ORT_ENABLE_ALL", "reference"
    yield "fp32 ORT_ENABLE_BASIC", MODEL, "ORT_ENABLE_BASIC", ""
    yield "fp32 ORT_ENABLE_EXTENDED", MODEL, "ORT_ENABLE_EXTENDED", ""
    opt = d / "msd_musicnn.opt-all.onnx"
    t = time.perf_counter()
    ort_session(MODEL, 1, "ORT_ENABLE_ALL", save_to=opt)
    save_note = f"optimise+save {time.perf_counter() - t:.2f} s"
    yield "fp32 ALL, saved optimized, loaded w/o opt", opt, "ORT_DISABLE_ALL", save_note
    pre = d / "msd_musicnn.pre.onnx"
    try:  # shape inference + ORT optimisations (Gemm becomes MatMul+Add); no sympy needed
        quant_pre_process(str(MODEL), str(pre), skip_symbolic_shape=True)
    except Exception as e:  # noqa: BLE001 - pre-processing is optional; quantise the raw model
        print(
            f"quant_pre_process failed ({type(e).__name__}: {e}); using the raw model", flush=True
        )
        pre = MODEL

    def static(out: Path, per_channel: bool, ops: list[str] | None = None) -> None:
        quantize_static(
            str(pre),
            str(out),
            calibration_reader(calib),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=ops,
            calibrate_method=CalibrationMethod.MinMax,
        )

    def dynamic(out: Path, ops: list[str]) -> None:
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=ops)

    dense = ["Gemm", "MatMul"]
    jobs: list[tuple[str, Path, Callable[[Path], None]]] = [
        (
            "int8 dynamic (Conv+dense)",
            d / "msd_musicnn.dyn.onnx",
            lambda o: dynamic(o, ["Conv", *dense]),
        ),
        (
            "int8 dynamic (dense only)",
            d / "msd_musicnn.dyn-dense.onnx",
            lambda o: dynamic(o, dense),
        ),
        ("int8 static QDQ per-tensor", d / "msd_musicnn.qdq.onnx", lambda o: static(o, False)),
        ("int8 static QDQ per-channel", d / "msd_musicnn.qdq-pc.onnx", lambda o: static(o, True)),
        (
            "int8 static QDQ per-channel, Conv only",
            d / "msd_musicnn.qdq-pc-conv.onnx",
            lambda o: static(o, True, ["Conv"]),
        ),
    ]
    for name, out, make in jobs:
        t = time.perf_counter()
        try:
            make(out)
        except Exception as e:  # noqa: BLE001 - report, go on with the other variants
            yield name, Path(), "", f"build failed: {type(e).__name__}: {str(e)[:120]}"
            continue
        note = f"built in {time.perf_counter() - t:.1f} s, {out.stat().st_size / 1e6:.2f} MB"
        yield name, out, "ORT_ENABLE_ALL", note


def section_d(plan: Plan, x: np.ndarray, files: list[Path]) -> dict[str, Any]:
    """Optimisation levels and int8 builds: speed at batch ``opt_batch`` and track-level tag drift."""
    eval_files = files[: plan.eval_files]
    calib_files = files[-plan.calib_files :]  # disjoint from the evaluation files
    rng = np.random.default_rng(11)
    calib = []
    for f in calib_files:
        p = file_patches(f)
        pick = rng.choice(
            p.shape[0], size=min(plan.calib_patches_per_file, p.shape[0]), replace=False
        )
        calib.append(p[np.sort(pick)])
    calib_arr = np.concatenate(calib)
    evals = {f.name: file_patches(f) for f in eval_files}
    top = max(plan.threads)
    rows_data: list[dict[str, Any]] = []
    ref: dict[str, np.ndarray] = {}
    for name, path, level, note in build_variants(calib_arr):
        row: dict[str, Any] = {
            "name": name,
            "path": str(path),
            "level": level,
            "note": note,
            "ms": {},
        }
        rows_data.append(row)
        if not level:
            continue
        try:
            t = time.perf_counter()
            sess = ort_session(path, top, level)
            row["load_s"] = time.perf_counter() - t
            means = {
                fn: run_batched(sess, pts, plan.opt_batch)[0].mean(axis=0)
                for fn, pts in evals.items()
            }
            ref = ref or means  # the first variant is the shipped fp32 session
            row["max_dtag"] = max(float(np.abs(means[k] - ref[k]).max()) for k in means)
            row["sessions"] = {
                th: sess if th == top else ort_session(path, th, level) for th in plan.threads
            }
        except Exception as e:  # noqa: BLE001
            row["note"] = f"{note}; failed: {type(e).__name__}: {str(e)[:120]}".strip("; ")
    xb = x[: plan.opt_batch]
    cpu_by_th: dict[int, str] = {}
    for th in plan.threads:
        live = [r for r in rows_data if "sessions" in r]
        engines = {
            r["name"]: (
                lambda a, s=r["sessions"][th]: s.run(["tags", "embedding"], {"melspectrogram": a})
            )
            for r in live
        }
        core = last_core() if th == 1 else None  # as in section a: a true single-core figure
        with pinned(core):
            timing = paired_timing(
                {n: (fn, xb) for n, fn in engines.items()}, plan.opt_reps, 2 * plan.opt_batch
            )
        cpu_by_th[th] = f"{cores_used(list(timing.values())):.2f}"
        for r in live:
            r["ms"][str(th)] = timing[r["name"]]["ms"]
    shipped = rows_data[0]
    head = (
        ["variant", "session create s"]
        + [f"{th}T ms/patch" for th in plan.threads]
        + [f"vs shipped {th}T" for th in plan.threads]
        + ["max |Δ| tag means", "verdict", "note"]
    )
    rows = []
    for r in rows_data:
        rel = {
            th: paired_ratio(r["ms"].get(str(th), []), shipped["ms"].get(str(th), []))
            for th in plan.threads
        }
        verdict = ""
        if r["name"].startswith("int8"):
            faster = bool(r["ms"]) and all(rel[th] <= 1 - FASTER_BY for th in plan.threads)
            close = r.get("max_dtag", 1.0) <= MAX_TAG_DRIFT
            why = [
                w
                for w, bad in (("not faster", not faster), (f"Δ>{MAX_TAG_DRIFT}", not close))
                if bad
            ]
            verdict = "qualifies" if not why else "no: " + " & ".join(why)
        r["verdict"] = verdict
        rows.append(
            [r["name"], fmt(r.get("load_s"), 3)]
            + [fmt(med(r["ms"].get(str(th), []))) for th in plan.threads]
            + [fmt(rel[th], 2) for th in plan.threads]
            + [fmt(r.get("max_dtag"), 4), verdict, r["note"]]
        )
        r.pop("sessions", None)
    notes = [
        f"Batch {plan.opt_batch}; median of {plan.opt_reps} repeats, all variants interleaved; 1T runs pinned to "
        f"core {last_core()}. Cores used (CPU/wall): "
        + ", ".join(f"{th}T {c}" for th, c in cpu_by_th.items())
        + ".",
        f"Δ: track-level tag means (probabilities) over every non-overlapping patch of {', '.join(evals)} vs the "
        f"shipped session. Calibration: {calib_arr.shape[0]} real log-mel patches from "
        f"{', '.join(f.name for f in calib_files)} (disjoint from the evaluation files), MinMax.",
        f"An int8 build 'qualifies' only if >= {FASTER_BY:.0%} faster at every thread count AND max |Δ| <= "
        f"{MAX_TAG_DRIFT}. Nothing is shipped by this script.",
    ]
    text = table(
        "d. Graph optimisation and int8 quantisation (ONNX Runtime, CPU)", head, rows, notes
    )
    return {"rows": rows_data, "table": text}


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(
        description="Benchmark nomarr's musicnn (ONNX Runtime) against upstream musicnn 0.1.0 "
        "(TensorFlow): a) per-patch latency, b) whole files x real time, c) throughput, "
        "d) graph optimisation and int8 quantisation.",
        epilog="Full mode takes under ~10 minutes on 2 cores, --quick under ~3. See docs/bench.md.",
    )
    p.add_argument("--quick", action="store_true", help="fewer sizes, files and repeats (< ~3 min)")
    p.add_argument("--json", metavar="OUT", help="also write every sample and result to OUT")
    p.add_argument("--sections", default="abcd", help="sections to run, e.g. 'ab' (default: abcd)")
    p.add_argument("--corpus", help="directory of real music (default: <repo>/../shared/corpus)")
    p.add_argument("--files", type=int, help="corpus files for section b (default 6, quick 2)")
    p.add_argument(
        "--musicnn-dir",
        help="unpacked musicnn 0.1.0 wheel (default: /tmp/mnn/w, "
        "else pip-downloaded into bench/.cache)",
    )
    p.add_argument("--no-tf", action="store_true", help="skip the upstream TensorFlow side")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-io", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections and print their tables."""
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.worker_io)
    t_start = time.perf_counter()
    plan = QUICK if args.quick else FULL
    if args.files:
        plan = replace(plan, n_files=args.files)
    sb = shipped_batch()
    plan = replace(plan, opt_batch=sb, tp_batches=(sb,) if args.quick else tuple(sorted({1, sb})))
    corpus = Path(args.corpus) if args.corpus else ROOT.parent / "shared" / "corpus"
    files = corpus_files(corpus)
    info = machine_info()
    cores = info["cores"]
    musicnn_dir: Path | None = None
    if not args.no_tf:
        try:
            musicnn_dir = find_musicnn(args.musicnn_dir)
        except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
            print(f"upstream musicnn unavailable, TF columns will be n/a: {e}", flush=True)
    info.update(
        command=shlex.join(["python", *sys.argv]),
        mode="quick" if args.quick else "full",
        musicnn_dir=str(musicnn_dir) if musicnn_dir else None,
        corpus=str(corpus),
        plan=asdict(plan),
    )
    print(
        f"# nomarr musicnn benchmark ({info['mode']})\n\n{info['date_utc']}; {cores} cores "
        f"({info['cpu']}); Python {info['python']}, onnxruntime {info['onnxruntime']}, numpy "
        f"{info['numpy']}; load average at start {info['loadavg_start'][0]:.2f}\n"
        f"command: {info['command']}",
        flush=True,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    x = bench_input(files)
    input_path = CACHE / "bench_input.npy"
    np.save(input_path, x)
    results: dict[str, Any] = {"machine": info}
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "a": lambda: section_a(plan, input_path, musicnn_dir),
        "b": lambda: section_b(plan, files, musicnn_dir),
        "c": lambda: section_c(plan, x, input_path, cores),
        "d": lambda: section_d(plan, x, files),
    }
    for key, run in sections.items():
        if key not in args.sections:
            continue
        meter = LoadMeter()
        results[key] = run()
        load = results[key]["load"] = meter.report()
        print(
            f"\n(section {key}: {load['wall_s']:.0f} s; other processes kept "
            f"{fmt(load['other_cores'], 2)} cores busy on average; steal {fmt(load['steal_pct'])}%)",
            flush=True,
        )
        if (load["other_cores"] or 0.0) > 0.2:
            print(
                f"warning: other work competed for the CPU during section {key}; its numbers are "
                "not trustworthy, rerun it on an idle machine (--sections)",
                flush=True,
            )
    for r in [
        *results.get("a", {}).get("runs", {}).values(),
        results.get("b", {}).get("worker", {}),
    ]:
        if r.get("tensorflow"):
            info.setdefault("tensorflow", r["tensorflow"])
    info["loadavg_end"] = os.getloadavg()
    info["total_s"] = time.perf_counter() - t_start
    print(
        f"\nTensorFlow {info.get('tensorflow', 'n/a')}; load average at end {info['loadavg_end'][0]:.2f}; "
        f"total {info['total_s']:.0f} s",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
