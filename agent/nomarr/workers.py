"""The analysis worker processes: what runs in them, and the pool that keeps them.

Workers load the models once (in :func:`init_worker`) and then take three kinds of job: the
scanner's :func:`process_file` (identify a file, or analyse it unless a current analysis can be
reused), ``POST /analyze``'s :func:`analyze_job` (run the models on one file and touch nothing)
and ``POST /ingest``'s :func:`ingest_job` (the same for PCM that came without a file).
Jobs return plain data, never exceptions, because an exception that cannot be unpickled in the
parent makes it declare the whole pool broken. The HTTP layer and the scanner both use this module;
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
from typing import Any

import numpy as np

from nomarr.fingerprint import FingerprintError, fingerprint, match_recording
from nomarr.library import is_current
from nomarr.store import Store

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
) -> None:
    """Load the models once per worker process (lowered priority and pinned cores first, so even
    model loading respects the agent's CPU cap)."""
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import get_profile

    logging.basicConfig(level=log_level)
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
    ms = ModelSet(Registry(), model_ids, threads=threads, provider=provider)
    _W.update(
        analyzer=Analyzer(ms, get_profile(profile), batch_size=batch),
        db=db_path,
        want=want,
        store=None,
        model_ids=tuple(model_ids),
        threads=threads,
        provider=provider,
        batch=batch,
    )


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


def process_file(
    path: str, mode: str, rec_hint: int | None = None, analyzer: Any = None
) -> dict[str, Any]:
    """Worker job: identify a file, or analyse it unless a current analysis can be reused.

    ``mode`` is ``identify`` (new or changed file: fingerprint and match; ``kind`` is ``reuse``
    when the match carries current analyses, else ``identified``) or ``analyze`` (run the models,
    unless the recording ``rec_hint`` has become current meanwhile). Identification never runs the
    models itself: the main process decides which one file of a recording is analysed, so that
    several files of one new recording in flight at once are not all analysed. Returns plain data.
    ``analyzer`` replaces the worker's own (a remote worker keeps one per model set and profile).
    """
    from nomarr.audio.decode import AudioError
    from nomarr.models.registry import ModelError

    out: dict[str, Any] = {"path": path, "mode": mode}
    t0 = time.perf_counter()
    try:
        st0 = os.stat(path)
        _describe(path, out)
        rec = _identify(path, out) if mode == "identify" else rec_hint
        out["match"] = rec
        t_id = time.perf_counter() - t0
        store = _worker_store() if rec is not None else None
        if store is not None and rec is not None and is_current(store.analyses(rec), _W["want"]):
            kind = "reuse"
        elif mode == "identify":
            kind = "identified"
        else:
            _analyse(path, out, analyzer or _W["analyzer"])
            out["timing"].update(identify=t_id, total=time.perf_counter() - t0)
            st1 = os.stat(path)
            if (st1.st_size, st1.st_mtime_ns) != (st0.st_size, st0.st_mtime_ns):
                out.update(kind="changed", error="file changed while it was being analysed")
            out["stat"] = _stat_tuple(st0)
            return out
        out.update(kind=kind, timing={"identify": t_id, "total": time.perf_counter() - t0})
        out["stat"] = _stat_tuple(st0)
        return out
    except FileNotFoundError:
        return {
            **out,
            "kind": "failed",
            "error": "vanished (deleted or moved during the scan)",
            "vanished": True,
        }
    except PermissionError as e:
        return {**out, "kind": "failed", "error": f"permission denied ({e.strerror or e})"}
    except AudioError as e:
        vanished = not os.path.exists(path)
        return {
            **out,
            "kind": "failed",
            "error": "vanished during the scan" if vanished else e.reason,
            "vanished": vanished,
        }
    except (ModelError, OSError, ValueError, RuntimeError) as e:
        return {**out, "kind": "failed", "error": f"{type(e).__name__}: {e}"}


def ingest_job(spool: str, rate: int, name: str, embedding: bool = False) -> dict[str, Any]:
    """Worker job for ``POST /ingest/{id}/end``: fingerprint the session's PCM (a spool of float32
    mono samples at ``rate``), and run the models on it unless the fingerprint matches a stored
    recording whose analyses are current. Touches no database (the agent stores the result in
    one transaction); returns plain data like :func:`process_file`."""
    from nomarr.audio.decode import AudioError
    from nomarr.audio.pcm import PcmSource
    from nomarr.fingerprint import fingerprint_pcm
    from nomarr.models.registry import ModelError

    src = PcmSource.from_spool(spool, rate, name)
    out: dict[str, Any] = {"path": name, "duration": src.duration, "match": None}
    t0 = time.perf_counter()
    try:
        try:
            fp = fingerprint_pcm(src)
            out["fp"], out["fp_duration"] = fp.values, fp.duration
            store = _worker_store()
            out["match"] = match_recording(store, fp) if store is not None else None
        except FingerprintError as e:
            out["fp_error"] = str(e)
        store = _worker_store() if out["match"] is not None else None
        if store is not None and is_current(store.analyses(out["match"]), _W["want"]):
            out.update(kind="reuse", timing={"total": time.perf_counter() - t0})
            return out
        fa = _W["analyzer"].analyze(src)
        _analyse_result(fa, out)
        out["doc"] = fa.to_dict(with_embeddings=embedding)
        out["doc"]["elapsed_s"] = round(time.perf_counter() - t0, 4)
        return out
    except AudioError as e:
        return {**out, "kind": "failed", "error": f"cannot analyse the audio: {e.reason}"}
    except (ModelError, OSError, ValueError, RuntimeError) as e:
        return {**out, "kind": "failed", "error": f"{type(e).__name__}: {e}"}


def _describe(path: str, out: dict[str, Any]) -> None:
    """Stream facts and the identifiers in the file's tags (MBIDs, ISRC, title)."""
    from nomarr.audio.decode import probe
    from nomarr.tagio import TagError, read_tags

    info = probe(path)
    out.update(
        duration=info.duration,
        container=info.container,
        codec=info.codec,
        sample_rate=info.sample_rate,
        channels=info.channels,
    )
    try:
        out["ids"] = read_tags(path).ids
    except TagError:
        out["ids"] = {}


def _identify(path: str, out: dict[str, Any]) -> int | None:
    """Fingerprint the file and match it against the library (None: a new recording)."""
    try:
        fp = fingerprint(path)
    except FingerprintError as e:
        out["fp_error"] = str(e)
        return None
    out["fp"] = fp.values
    out["fp_duration"] = fp.duration
    store = _worker_store()
    return match_recording(store, fp) if store is not None else None


def _analyse(path: str, out: dict[str, Any], analyzer: Any) -> None:
    """Run the models on the file (kind ``analysed``, results as plain data)."""
    _analyse_result(analyzer.analyze(path), out)


def _analyse_result(fa: Any, out: dict[str, Any]) -> None:
    """A :class:`~nomarr.pipeline.analyze.FileAnalysis` as the plain data the store takes."""
    out["kind"] = "analysed"
    out["windows"] = [w.to_dict() for w in fa.windows]
    out["results"] = [
        {
            "model_id": r.model_id,
            "prefix": r.prefix,
            "provenance": r.provenance,
            "provider": r.provider,
            "n_patches": r.n_patches,
            "scores": r.scores,
            "embedding": None if r.embedding is None else np.asarray(r.embedding, dtype=np.float32),
        }
        for r in fa.results.values()
    ]
    out["warnings"] = fa.warnings
    out["timing"] = dict(fa.timing)


def _stat_tuple(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_mode)


class WorkerStat:
    """The fields of ``os.stat_result`` the store uses, rebuilt from a worker's tuple."""

    def __init__(self, t: tuple[int, int, int, int, int]) -> None:
        self.st_size, self.st_mtime_ns, self.st_dev, self.st_ino, self.st_mode = t


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
