"""The analysis worker processes: what runs in them, and the pool that keeps them.

Workers load the models once (in :func:`init_worker`) and then take three kinds of job: the
scanner's :func:`process_file` (identify a file, decoding it once, or analyse it unless a current
analysis can be reused) and :func:`infer_job` (the models on an identified file's patches), and
``POST /analyze``'s :func:`analyze_job` (run the models on one file and touch nothing), and
``POST /ingest``'s :func:`ingest_job` (the same for PCM that came without a file). Scan jobs
return a typed :class:`~nomarr.results.WorkerResult`, never exceptions, because an exception that
cannot be unpickled in the parent makes it declare the whole pool broken. The HTTP layer and the scanner both use this module;
neither imports the other.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nomarr.fingerprint import match_recording
from nomarr.library import recording_reusable
from nomarr.results import FileFacts, ModelOutput, WorkerResult, stat_tuple, to_wire
from nomarr.stages import Stages
from nomarr.store import Store

if TYPE_CHECKING:
    from nomarr.pipeline.analyze import FileAnalysis
    from nomarr.pipeline.prepare import Prepared

_W: dict[str, Any] = {}


def init_worker(
    db_path: str,
    model_ids: list[str],
    profile: str,
    want: dict[str, str],
    threads: int,
    batch: int,
    provider: str | None,
    log_level: int,
    nice: int,
    cpus: list[int] | None = None,
    decode_only: bool = False,
) -> None:
    """Load the models once per worker process (lowered priority and pinned cores first, so even
    model loading respects the agent's CPU cap). ``decode_only``: the scan runs the models in one
    central session (:mod:`nomarr.scan.central`), so this worker loads none and only prepares
    patches (an accelerator is then initialised once, not once per worker)."""
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, FrontEnds, ModelSet, front_keys
    from nomarr.pipeline.profiles import get_profile

    die_with_parent()
    import multiprocessing as mp

    if mp.parent_process() is not None:  # a worker process: the parent's log line format
        from nomarr import logs

        logs.setup(logging.getLevelName(log_level))
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass
    prof = get_profile(profile)
    if decode_only:
        analyzer: Any = FrontEnds(front_keys(Registry(), model_ids), prof)
    else:
        ms = ModelSet(Registry(), model_ids, threads=threads, provider=provider)
        analyzer = Analyzer(ms, prof, batch_size=batch)
    _W.update(
        analyzer=analyzer,
        db=db_path,
        want=want,
        store=None,
        model_ids=tuple(model_ids),
        threads=threads,
        provider=provider,
        batch=batch,
        # CPU seconds this process spent before its first job (interpreter, imports, model load),
        # reported once, with the first job's stages
        startup=time.process_time(),
    )


def die_with_parent() -> None:
    """End this worker the moment its parent process is gone (``kill -9`` of ``nomarr scan`` or
    ``nomarr serve``, the OOM killer), instead of living on as an orphan holding its models.

    A spawned worker holds both ends of its job queue's pipe, so it never sees end-of-file when the
    parent dies, and the multiprocessing resource tracker lives as long as any worker does. The
    parent's *sentinel* is a pipe whose other end only the parent holds: it becomes readable when
    the parent exits, however it exits. A daemon thread waits on it and exits the process (no
    cleanup is owed: workers write nothing; the parent's database and tag writes are atomic). Not
    ``PR_SET_PDEATHSIG``: that fires when the *thread* that started the worker exits, and a pool's
    workers are started by whichever thread submits to it (the agent's scanner or event loop).
    """
    import multiprocessing as mp
    import threading
    from multiprocessing.connection import wait

    parent = mp.parent_process()
    if parent is None or _W.get("parent_watch"):  # not a spawned worker (--workers 0)
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="nomarr-parent-watch", daemon=True).start()
    _W["parent_watch"] = True


def analyze_job(
    path: str,
    profile: str | None = None,
    model_ids: list[str] | None = None,
    embedding: bool = False,
) -> dict[str, Any]:
    """Worker job for ``POST /analyze``: run the models on one file and return the JSON document of
    ``nomarr analyze``, touching no database and no file. The worker's loaded models are reused
    when the request asks for them (the usual case); other models or profiles are loaded once per
    worker and kept beside them."""
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import get_profile

    base: Analyzer = _W["analyzer"]
    ids = tuple(model_ids) if model_ids else _W["model_ids"]
    prof = get_profile(profile) if profile else base.profile
    if ids == _W["model_ids"]:
        ms = base.models
    else:
        cache = _W.setdefault("extra_sets", {})
        if ids not in cache:
            cache[ids] = ModelSet(
                Registry(), list(ids), threads=_W["threads"], provider=_W["provider"]
            )
        ms = cache[ids]
    from nomarr.audio.decode import AudioError
    from nomarr.models.registry import ModelError

    t0 = time.perf_counter()
    # Errors come back as data: an exception whose constructor takes other arguments than its
    # message cannot be unpickled in the parent, which then declares the whole pool broken.
    try:
        fa = Analyzer(ms, prof, batch_size=_W["batch"]).analyze(path)
    except AudioError as e:
        return {"error": {"kind": "audio", "message": f"cannot decode audio: {e.reason}"}}
    except ModelError as e:
        return {"error": {"kind": "model", "message": str(e)}}
    except OSError as e:
        return {"error": {"kind": "io", "message": f"cannot read the file: {e.strerror or e}"}}
    doc = fa.to_dict(with_embeddings=embedding)
    doc["elapsed_s"] = round(time.perf_counter() - t0, 4)
    return doc


class WorkerPool:
    """Analysis worker processes that can outlive one scan.

    ``nomarr scan`` makes one for its run and shuts it down at the end. ``nomarr serve`` keeps one
    across the many small scans the watcher triggers (spawning workers and loading models costs
    seconds per batch otherwise) and unloads it after a while idle, so an idle agent holds no
    models in memory.
    """

    def __init__(self, workers: int, initargs: tuple[Any, ...]) -> None:
        self.workers = workers
        self.initargs = initargs
        self._executor: ProcessPoolExecutor | None = None
        self.last_used = time.monotonic()
        self.busy = (
            0  # jobs submitted and not finished (the idle unloader must not shut a busy pool)
        )

    @property
    def loaded(self) -> bool:
        """Whether worker processes (and their models) exist now."""
        return self._executor is not None

    def get(self) -> ProcessPoolExecutor:
        """The executor, started on first use."""
        self.last_used = time.monotonic()
        if self._executor is None:
            import multiprocessing as mp

            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=init_worker,
                initargs=self.initargs,
            )
        return self._executor

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a worker; a pool broken by a dead worker is replaced once."""
        try:
            f = self.get().submit(fn, *args)
        except BrokenProcessPool:
            self.reset()
            f = self.get().submit(fn, *args)
        self.busy += 1

        def done(_: Future[Any]) -> None:
            self.busy -= 1
            self.last_used = time.monotonic()

        f.add_done_callback(done)
        return f

    def idle_for(self) -> float:
        """Seconds since the pool was last used (0 while jobs run)."""
        return 0.0 if self.busy > 0 else time.monotonic() - self.last_used

    def reset(self) -> None:
        """Drop a broken pool without waiting; the next job starts a fresh one."""
        self.shutdown(wait=False)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers (and free their models)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None


def _worker_store() -> Store | None:
    """The library, read-only; None in a remote worker (``db`` empty), which never opens it."""
    if _W.get("store") is None and _W.get("db") and Path(_W["db"]).exists():
        _W["store"] = Store(_W["db"], readonly=True)
    return _W.get("store")


# Patches kept for shipping to the inference step: above this (a 15-minute file at ``full``), the
# file is streamed through the models in one job instead (bounded memory, one more head decode).
MAX_SHIPPED_PATCHES = 300


def process_file(
    path: str, mode: str, rec_hint: int | None = None, analyzer: Any = None
) -> WorkerResult:
    """Worker job: identify a file (decoding it once), or analyse it unless a current analysis can
    be reused.

    ``mode`` is ``identify`` (new or changed file: the head is decoded once for the fingerprint,
    the match against the library and, unless the match carries current analyses (``reuse``) — current and complete — the
    mel patches of every window: ``identified`` with ``prepared`` set) or ``analyze`` (run the
    models, unless the recording ``rec_hint`` has become reusable meanwhile). Identification never
    runs the models: the main process decides which one file of a recording is analysed, so that
    several copies of one new recording in flight at once are analysed once. ``analyzer``
    replaces the worker's own (a remote worker keeps one per model set and profile).
    """
    st = Stages()
    out = WorkerResult(path, "failed")
    try:
        st0 = os.stat(path)
        with st("describe"):
            out.facts = _describe(path, st0)
        an = analyzer or _W["analyzer"]
        if mode == "identify":
            return _identify(path, out, st, an)
        rec = rec_hint
        store = _worker_store() if rec is not None else None
        if store is not None and rec is not None and recording_reusable(store, rec, _W["want"]):
            out.kind, out.match = "reuse", rec
            return out
        out.match = rec
        _analysed(out, an.analyze(path))
        st.merge(out.stages)
        st1 = os.stat(path)
        if (st1.st_size, st1.st_mtime_ns) != (st0.st_size, st0.st_mtime_ns):
            out.kind, out.error = "changed", "file changed while it was being analysed"
        return out
    except Exception as e:  # noqa: BLE001 - every failure is data (see nomarr.results)
        return _failure(out, e)
    finally:
        out.stages = _with_startup(st.as_dict())


def _with_startup(stages: dict[str, float]) -> dict[str, float]:
    """The worker's start-up (imports, model load) is counted once, with its first job."""
    t = _W.pop("startup", None)
    if t is not None:
        stages["startup"] = stages.get("startup", 0.0) + t
    return stages


def infer_job(path: str, prepared: Prepared) -> WorkerResult:
    """Worker job: the models on a file's prepared patches (no file is read)."""
    st = Stages()
    out = WorkerResult(path, "failed")
    try:
        _analysed(out, _W["analyzer"].infer(prepared, st))
        return out
    except Exception as e:  # noqa: BLE001
        return _failure(out, e)
    finally:
        out.stages = _with_startup(st.as_dict())


def _failure(out: WorkerResult, e: BaseException) -> WorkerResult:
    """A job's exception as a failed result with a one-line reason."""
    from nomarr.audio.decode import AudioError
    from nomarr.models.registry import ModelError

    out.kind = "failed"
    if isinstance(e, FileNotFoundError):
        out.error, out.vanished = "vanished (deleted or moved during the scan)", True
    elif isinstance(e, PermissionError):
        out.error = f"permission denied ({e.strerror or e})"
    elif isinstance(e, AudioError):
        out.vanished = not os.path.exists(out.path)
        out.error = "vanished during the scan" if out.vanished else e.reason
    elif isinstance(e, ModelError | OSError | ValueError | RuntimeError):
        out.error = f"{type(e).__name__}: {e}"
    else:
        out.error = f"{type(e).__name__}: {e}"
    return out


def ingest_job(spool: str, rate: int, name: str, embedding: bool = False) -> dict[str, Any]:
    """Worker job for ``POST /ingest/{id}/end``: fingerprint the session's PCM (a spool of float32
    mono samples at ``rate``), and run the models on it unless the fingerprint matches a stored
    recording whose analyses are reusable. Touches no database (the agent stores the result in
    one transaction); returns plain data (:func:`~nomarr.results.to_wire`'s fields, the stream's
    duration and the analysis document)."""
    from nomarr.audio.decode import AudioError
    from nomarr.audio.pcm import PcmSource
    from nomarr.fingerprint import FingerprintError, fingerprint_pcm

    src = PcmSource.from_spool(spool, rate, name)
    out: dict[str, Any] = {"path": name, "duration": src.duration, "match": None}
    t0 = time.perf_counter()
    res = WorkerResult(name, "failed")
    try:
        try:
            fp = fingerprint_pcm(src)
            out["fp"], out["fp_duration"] = fp.values, fp.duration
            store = _worker_store()
            out["match"] = match_recording(store, fp) if store is not None else None
        except FingerprintError as e:
            out["fp_error"] = str(e)
        store = _worker_store() if out["match"] is not None else None
        if store is not None and recording_reusable(store, out["match"], _W["want"]):
            out.update(kind="reuse", timing={"total": time.perf_counter() - t0})
            return out
        fa = _W["analyzer"].analyze(src)
        _analysed(res, fa)
        wire = to_wire(res)
        for k in ("kind", "windows", "results", "warnings", "complete", "decoded_s", "silent"):
            out[k] = wire[k]
        out["descriptors"], out["timeline"] = res.descriptors, res.timeline
        out["timing"] = dict(fa.timing)
        out["doc"] = fa.to_dict(with_embeddings=embedding)
        out["doc"]["elapsed_s"] = round(time.perf_counter() - t0, 4)
        return out
    except AudioError as e:  # (a stream has no file: _failure's "vanished" reading does not apply)
        return {**out, "kind": "failed", "error": f"cannot analyse the audio: {e.reason}"}
    except Exception as e:  # noqa: BLE001 - failures are data, as for every job
        return {**out, "kind": "failed", "error": _failure(res, e).error}


def _describe(path: str, st0: os.stat_result) -> FileFacts:
    """Stream facts and the identifiers in the file's tags (MBIDs, ISRC, title)."""
    from nomarr.audio.decode import probe
    from nomarr.tagio import TagError, read_tags

    info = probe(path)
    try:
        ids = read_tags(path).ids
    except TagError:
        ids = {}
    return FileFacts(
        stat_tuple(st0),
        info.duration,
        info.container,
        info.codec,
        info.sample_rate,
        info.channels,
        ids,
    )


def _identify(path: str, out: WorkerResult, st: Stages, analyzer: Any) -> WorkerResult:
    """Decode the head once: fingerprint, match, and (unless reused) the patches of every window."""

    def decide(prep: Prepared) -> bool:
        if prep.fp is None:
            out.fp_error = prep.fp_error
            return True
        out.fp, out.fp_duration = prep.fp.values, prep.fp.duration
        with st("match"):
            store = _worker_store()
            out.match = match_recording(store, prep.fp) if store is not None else None
            if out.match is not None and store is not None:
                if recording_reusable(store, out.match, _W.get("want", {})):
                    return False
        return True

    prep = analyzer.prepare(
        path, fingerprint=True, decide=decide, max_patches=MAX_SHIPPED_PATCHES, stages=st
    )
    if prep.stopped:
        out.kind = "reuse"
        return out
    out.kind = "identified"
    if not prep.too_long:
        out.prepared = prep
    return out


def _analysed(out: WorkerResult, fa: FileAnalysis) -> None:
    """A finished analysis as results (kind ``analysed``)."""
    out.kind = "analysed"
    out.windows = [w.to_dict() for w in fa.windows]
    out.outputs = [
        ModelOutput(
            r.model_id,
            r.prefix,
            r.provenance,
            r.provider,
            r.n_patches,
            r.scores,
            None if r.embedding is None else np.asarray(r.embedding, dtype=np.float32),
        )
        for r in fa.results.values()
    ]
    out.warnings = list(fa.warnings)
    out.stages = {k: v for k, v in fa.timing.items() if k not in _NOT_STAGES}
    out.complete, out.decoded_s, out.silent = fa.complete, fa.decoded_s, fa.silent
    if fa.descriptors is not None:
        out.descriptors = fa.descriptors.to_dict()
        out.timeline = fa.descriptors.timeline.encode()
    if not fa.complete:  # shorter than the header's when the file is truncated
        out.ended_at = fa.duration


_NOT_STAGES = ("total", "audio_seconds", "decode_mel")


def run_in_process(
    key: tuple[Any, ...], initargs: tuple[Any, ...], fn: Callable[..., Any], *args: Any
) -> Future[Any]:
    """Run a job in this process (``--workers 0``), set up as a worker would be.

    The in-process "worker" outlives one scan (models stay loaded), but it must follow the scan's
    database, models and profile: ``key`` names them, and a change reloads, so a later scan of
    another library in the same process never matches files against the first library.
    """
    if _W.get("cfg") != key:
        if _W.get("store") is not None:
            _W["store"].close()
        _W.clear()
        init_worker(*initargs)
        _W["cfg"] = key
    f: Future[Any] = Future()
    f.set_result(fn(*args))
    return f
