"""One model session for the whole scan, fed by every decode worker (the GPU layout).

On a CPU, each worker process runs the models itself (one single-threaded session per core beat
one shared session, docs/bench.md). A GPU is the opposite case: one session should own it, and a
file's 40 patches are far too few to keep it busy. So with ``--inference central`` (chosen
automatically when the models' provider is a GPU execution provider) the workers only decode and
compute patches (``identify`` jobs load no model), and this thread in the scan's process runs
every identified file's patches through one session, batching patches **across files**: whatever
has arrived while the previous batch ran is run together, in batches of ``batch_size``.

It answers with the same :class:`~nomarr.results.WorkerResult` futures as the worker pool, so the
dispatcher does not know which layout it drives. Without a GPU it is tested with the CPU provider.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

from nomarr.pipeline.analyze import Analyzer
from nomarr.pipeline.prepare import Prepared
from nomarr.results import WorkerResult

log = logging.getLogger("nomarr.scan")


class CentralInference:
    """A thread that runs the models on prepared files, several files per batch."""

    def __init__(self, analyzer: Analyzer, max_files: int = 16) -> None:
        self.analyzer = analyzer
        self.max_files = max_files
        self._todo: list[tuple[str, Prepared | None, Future[WorkerResult]]] = []
        self._cv = threading.Condition()
        self._closed = False
        self.batches: list[int] = []  # files per model run (for tests and the bench)
        self._thread = threading.Thread(target=self._loop, name="nomarr-inference", daemon=True)
        self._thread.start()

    def submit(self, path: str, prepared: Prepared) -> Future[WorkerResult]:
        """Queue one file's patches; its result arrives on the future."""
        f: Future[WorkerResult] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("central inference is closed")
            self._todo.append((path, prepared, f))
            self._cv.notify()
        return f

    def submit_file(self, path: str, rec: int | None) -> Future[WorkerResult]:
        """A file the workers cannot prepare for us (a stale recording, or too long to ship its
        patches): decoded and analysed here, streaming, in the inference thread's turn."""
        f: Future[WorkerResult] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("central inference is closed")
            self._todo.append((path, None, f))
            self._cv.notify()
        return f

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._todo and not self._closed:
                    self._cv.wait()
                if not self._todo:
                    return
                take, self._todo = self._todo[: self.max_files], self._todo[self.max_files :]
            whole = [t for t in take if t[1] is None]
            prepared = [t for t in take if t[1] is not None]
            for path, _, f in whole:
                f.set_result(self._file(path))
            if prepared:
                self.batches.append(len(prepared))
                self._run(prepared)  # type: ignore[arg-type]

    def _file(self, path: str) -> WorkerResult:
        import os

        from nomarr.stages import Stages
        from nomarr.workers import _analysed, _describe, _failure

        out = WorkerResult(path, "failed")
        try:
            out.facts = _describe(path, os.stat(path))
            _analysed(out, self.analyzer.analyze(path))
        except Exception as e:  # noqa: BLE001 - failures are data, as in the workers
            return _failure(out, e)
        out.stages = Stages().as_dict() | out.stages
        return out

    def _run(self, take: list[tuple[str, Prepared, Future[WorkerResult]]]) -> None:
        from nomarr.workers import _analysed, _failure

        try:
            done = self.analyzer.infer_many([p for _, p, _ in take])
        except Exception as e:  # noqa: BLE001 - one bad batch fails its files, not the scan
            log.warning("central inference failed", extra={"error": str(e), "files": len(take)})
            for path, _, f in take:
                f.set_result(_failure(WorkerResult(path, "failed"), e))
            return
        for (path, _, f), (fa, st) in zip(take, done, strict=True):
            out = WorkerResult(path, "failed")
            _analysed(out, fa)
            out.stages = st.as_dict()
            f.set_result(out)
