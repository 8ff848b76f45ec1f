"""The agent's side of remote analysis: a Dask client the scan submits jobs to, with every fault
turned into local work rather than a lost or doubled file.

The scan sees one method, :meth:`RemoteExecutor.submit`, returning a ``concurrent.futures.Future``
that resolves exactly once with the same plain result a local worker gives (plus ``worker``). What
happens behind it:

- **Admission.** Each worker that joins the scheduler is asked for its signed hello
  (:func:`nomarr.remote.worker.hello`); it is approved only when the MAC proves it holds the
  cluster's secret, it loaded its models, and its provenance for every model of the scan equals
  the agent's own. Others are refused with the reason, listed in the scan summary, and no task is
  ever placed on them (tasks name the approved workers and forbid others).
- **Results are checked again** on arrival: an analysis whose provenance is not the scan's is
  thrown away, its worker refused, and the file re-run elsewhere. The agent alone writes.
- **A worker dies mid-task**: the scheduler re-runs the task on another approved worker; when none
  is left for a few seconds, or a task killed too many workers, the file runs locally.
- **The scheduler goes away**: every pending file, and every later one, runs locally, and the
  summary says when and why.
- **A slow worker**: a task outstanding for ``slow_factor`` times the median task time (at least
  ``slow_after`` seconds) is also started locally; whichever finishes first is the result, the
  other is cancelled or ignored.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as pysecrets
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nomarr.remote import worker as rworker
from nomarr.remote.secrets import mac_ok
from nomarr.results import WorkerResult, from_wire
from nomarr.store import DSP_ID

log = logging.getLogger("nomarr.remote")

MAX_SEND = 1 << 30  # files larger than this are never sent as bytes
NO_WORKER_GRACE_S = 5.0


@dataclass
class _Task:
    path: str
    mode: str
    rec: int | None
    proxy: Future[WorkerResult]
    st: tuple[int, int, int, int, int]
    probe: tuple[int, str]
    submitted: float = field(default_factory=time.monotonic)
    remote: Any = None  # the Dask future now running it
    local: bool = False  # a local run was started (fallback or speculative)
    attempts: int = 0


@dataclass
class _Worker:
    address: str
    info: dict[str, Any]
    nthreads: int


class RemoteExecutor:
    """A Dask client with admission, result checks and local fallback (see the module docstring)."""

    def __init__(
        self,
        address: str,
        *,
        security: Any,
        secret: bytes | None,
        want: dict[str, str],
        models: list[str],
        profile: str,
        roots: list[str],
        local_submit: Callable[[str, str, int | None], Future[WorkerResult]],
        connect_timeout: float = 10.0,
        slow_after: float = 60.0,
        slow_factor: float = 4.0,
        gpu_only: bool = False,
    ) -> None:
        self.address = address
        self.secret = secret
        self.want = dict(want)
        self.models = list(models)
        self.profile = profile
        self.roots = [os.path.abspath(r) for r in roots]
        self.local_submit = local_submit
        self.slow_after = slow_after
        self.slow_factor = slow_factor
        self.gpu_only = gpu_only
        self.approved: dict[str, _Worker] = {}
        self.refused: dict[str, str] = {}
        self.down: str | None = None
        self.tasks: dict[str, _Task] = {}  # Dask key → task
        self.pending: set[int] = set()  # ids of proxies not yet resolved
        self.durations: list[float] = []
        self.per_worker: dict[str, dict[str, Any]] = {}
        self.files: dict[str, str] = {}  # path → who analysed it
        self.events: list[str] = []
        self.counts = {"requeued": 0, "speculative": 0, "local_fallback": 0, "bytes_sent": 0}
        self._lock = threading.RLock()
        self._no_worker_since: float | None = None
        self._root_probes = self._probes()
        self._stop = threading.Event()
        from distributed import Client

        try:
            self.client = Client(
                address,
                security=security,
                timeout=connect_timeout,
                set_as_default=False,
                name=f"nomarr-agent-{os.getpid()}",
            )
        except Exception as e:  # OSError, TimeoutError, TLS errors: the scan runs locally
            self.client = None
            self._lose(f"cannot connect to the scheduler at {address}: {type(e).__name__}: {e}")
            return
        self.refresh()
        self._monitor = threading.Thread(target=self._watch, name="nomarr-remote", daemon=True)
        self._monitor.start()

    # -- admission ----------------------------------------------------------------------------

    def _probes(self) -> dict[str, Any]:
        """One file per root, probed, so each worker can say which roots it sees."""
        from nomarr.walk import walk

        out: dict[str, Any] = {}
        for r in self.roots:
            w = walk([r], vanished_ok=True) if os.path.isdir(r) else None
            first = w.files[0][0] if w and w.files else (r if os.path.isfile(r) else None)
            if first is not None:
                try:
                    out[r] = (first, rworker.probe(first))
                except OSError:
                    pass
        return out

    def refresh(self) -> None:
        """Handshake with workers that joined, forget those that left."""
        if self.client is None or self.down:
            return
        try:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
        except Exception as e:  # noqa: BLE001 - any failure to reach the scheduler
            self._lose(f"the scheduler stopped answering: {type(e).__name__}: {e}")
            return
        with self._lock:
            for addr in list(self.approved):
                if addr not in info:
                    self.events.append(f"worker {self.approved[addr].info['name']} left")
                    del self.approved[addr]
        new = [a for a in info if a not in self.approved and a not in self.refused]
        if not new:
            return
        nonce = pysecrets.token_hex(16)
        try:
            answers = self.client.run(
                rworker.hello,
                nonce,
                self.models,
                self.profile,
                self._root_probes,
                workers=new,
                on_error="return",
            )
        except Exception as e:  # noqa: BLE001
            log.warning("worker handshake failed", extra={"error": str(e)})
            return
        for addr, ans in answers.items():
            reason = self._judge(ans, nonce)
            with self._lock:
                if reason is None:
                    w = _Worker(addr, ans["info"], int(info[addr].get("nthreads", 1)))
                    self.approved[addr] = w
                    self.per_worker.setdefault(w.info["name"], self._describe(w))
                    log.info("remote worker approved", extra={"worker": w.info["name"]})
                else:
                    name = ans["info"]["name"] if isinstance(ans, dict) and "info" in ans else addr
                    self.refused[addr] = f"{name} ({addr}): {reason}"
                    log.warning("remote worker refused", extra={"worker": name, "reason": reason})

    def _judge(self, ans: Any, nonce: str) -> str | None:
        """Why a worker's hello is refused (None: approved)."""
        if isinstance(ans, BaseException):
            return f"no hello ({type(ans).__name__}: {ans}); is it a 'nomarr worker'?"
        info = ans.get("info") if isinstance(ans, dict) else None
        if not isinstance(info, dict):
            return "no hello; is it a 'nomarr worker'?"
        if info.get("error"):
            return str(info["error"])
        if self.secret is not None:
            payload = json.dumps(info, sort_keys=True).encode()
            if not mac_ok(self.secret, nonce, payload, ans.get("mac")):
                return "its hello is not signed with this cluster's shared secret"
        prov = info.get("provenance") or {}
        for mid, p in self.want.items():
            if mid not in prov:
                return f"it lacks model {mid}"
            if prov[mid] != p:
                return (
                    f"model {mid} has provenance {prov[mid]} there, {p} here (another model "
                    "file, front end or nomarr version): its results would not be this library's"
                )
        if self.gpu_only and not info.get("gpu"):
            return "no GPU (the scan asked for GPU workers only)"
        return None

    @staticmethod
    def _describe(w: _Worker) -> dict[str, Any]:
        i = w.info
        return {
            "address": w.address,
            "host": i.get("host"),
            "models": i.get("models"),
            "gpu": i.get("gpu", False),
            "roots_seen": [r for r, ok in (i.get("roots") or {}).items() if ok],
            "identified": 0,
            "analysed": 0,
            "failed": 0,
        }

    # -- the scan's side ----------------------------------------------------------------------

    def usable(self) -> bool:
        """Whether jobs can go to remote workers now."""
        return self.client is not None and not self.down and bool(self.approved)

    def slots(self) -> int:
        """Concurrent analyses the approved workers offer."""
        with self._lock:
            return sum(w.nthreads for w in self.approved.values())

    def submit(self, path: str, mode: str, rec: int | None) -> Future[WorkerResult]:
        """Run one scan job remotely (or, when that fails, locally); resolves exactly once."""
        proxy: Future[WorkerResult] = Future()
        try:
            st = os.stat(path)
            pr = rworker.probe(path)
        except OSError:  # gone or unreadable: the local job reports it the usual way
            return self.local_submit(path, mode, rec)
        t = _Task(path, mode, rec, proxy, _stat_tuple(st), pr)
        with self._lock:
            self.pending.add(id(proxy))
        self._send(t, by_path=True)
        return proxy

    def _send(self, t: _Task, by_path: bool, exclude: set[str] | None = None) -> None:
        """Submit a task to the approved workers (seeing the file's root when by path)."""
        with self._lock:
            cands = [a for a in self.approved if a not in (exclude or set())]
            root = next((r for r in self.roots if _under(t.path, r)), None)
            seeing = [a for a in cands if root in self.approved[a].info.get("roots", {}) and
                      self.approved[a].info["roots"][root]]  # fmt: skip
        if not cands or self.down:
            self._local(t, "no remote worker available")
            return
        spec = {
            "path": t.path,
            "mode": t.mode,
            "rec": t.rec,
            "models": self.models,
            "profile": self.profile,
            "probe": t.probe,
            "data": None,
        }
        if not (by_path and seeing):
            if t.st[0] > MAX_SEND:
                self._local(t, "too large to send")
                return
            try:
                with open(t.path, "rb") as f:
                    spec["data"] = f.read()
            except OSError:
                self._local(t, "unreadable here")
                return
            self.counts["bytes_sent"] += len(spec["data"])
        targets = seeing if (by_path and seeing) else cands
        key = f"nomarr-{t.mode}-{uuid.uuid4().hex}"
        t.attempts += 1
        try:
            fut = self.client.submit(  # type: ignore[union-attr]
                rworker.run,
                spec,
                key=key,
                workers=targets,
                allow_other_workers=False,
                resources={"nomarr": 1, **({"gpu": 1} if self.gpu_only else {})},
                pure=False,
            )
        except Exception as e:  # noqa: BLE001 - a closed client: run it here
            self._lose(f"cannot submit to the scheduler: {type(e).__name__}: {e}")
            self._local(t, "scheduler unavailable")
            return
        with self._lock:
            t.remote = fut
            self.tasks[key] = t
        fut.add_done_callback(lambda f, t=t, key=key: self._landed(t, key, f))

    def _landed(self, t: _Task, key: str, fut: Any) -> None:
        """A Dask future finished (in the client's callback thread)."""
        with self._lock:
            self.tasks.pop(key, None)
            if t.proxy.done() or t.remote is not fut:
                return
            t.remote = None
        status = fut.status
        if status != "finished":
            if status == "error":
                err = fut.exception()
                self.counts["requeued"] += 1
                self.events.append(f"{os.path.basename(t.path)}: {type(err).__name__}: {err}")
            if not t.local:
                self._local(t, f"remote task {status}")
            return
        try:
            res = fut.result()
        except Exception as e:  # noqa: BLE001
            self._local(t, f"result lost ({type(e).__name__})")
            return
        kind = res.get("kind")
        who = res.get("worker", "?")
        if kind == "unseen":  # the worker does not see this file after all: send the bytes
            self._send(t, by_path=False)
            return
        if kind == "refused" or (kind == "analysed" and not self._same_provenance(res)):
            addr = self._address_of(who)
            with self._lock:
                if addr is not None:
                    self.approved.pop(addr, None)
                    self.refused[addr] = f"{who} ({addr}): returned results of another provenance"
            self.events.append(f"results of {who} for {os.path.basename(t.path)} thrown away")
            self._send(t, by_path=True, exclude={addr} if addr else None)
            return
        self._resolve(t, res, who)

    def _same_provenance(self, res: dict[str, Any]) -> bool:
        got = {r["model_id"]: r["provenance"] for r in res.get("results") or []}
        desc = res.get("descriptors")
        if isinstance(desc, dict) and desc.get("provenance"):  # the DSP descriptors' entry
            got[DSP_ID] = desc["provenance"]
        return got == self.want

    def _address_of(self, name: str) -> str | None:
        with self._lock:
            return next((a for a, w in self.approved.items() if w.info["name"] == name), None)

    def _resolve(self, t: _Task, res: dict[str, Any], who: str) -> None:
        """Deliver a result once; the agent's own stat stands for the file (unchanged since?)."""
        res["stat"] = t.st
        try:
            now = os.stat(t.path)
            if (now.st_size, now.st_mtime_ns) != t.st[:2] and res.get("kind") not in (
                "failed",
                None,
            ):
                res.update(kind="changed", error="file changed while it was being analysed")
        except OSError:
            pass
        with self._lock:
            if t.proxy.done():
                return
            self.pending.discard(id(t.proxy))
            if t.remote is not None:
                t.remote.cancel()
            if who != "local":
                d = time.monotonic() - t.submitted
                self.durations = (self.durations + [d])[-200:]
                pw = self.per_worker.setdefault(who, {"identified": 0, "analysed": 0, "failed": 0})
                k = {"analysed": "analysed", "identified": "identified"}.get(res.get("kind", ""))
                pw[k or "failed"] += 1
            if res.get("kind") == "analysed":
                self.files[t.path] = who
            t.proxy.set_result(from_wire(res))

    def _local(self, t: _Task, why: str) -> None:
        """Run the task here too (or instead); the first result to land wins."""
        with self._lock:
            if t.local or t.proxy.done():
                return
            t.local = True
        self.counts["local_fallback"] += 1
        log.info("file runs locally", extra={"path": t.path, "reason": why})
        try:
            lf = self.local_submit(t.path, t.mode, t.rec)
        except Exception as e:  # noqa: BLE001 - no local pool: the proxy fails, the scan retries
            with self._lock:
                if not t.proxy.done():
                    self.pending.discard(id(t.proxy))
                    t.proxy.set_exception(e)
            return

        def done(f: Future[WorkerResult]) -> None:
            try:
                local = f.result()
            except BaseException as e:  # noqa: BLE001 - a dead local worker: the scan's rule
                with self._lock:
                    if not t.proxy.done():
                        self.pending.discard(id(t.proxy))
                        t.proxy.set_exception(e)
                return
            with self._lock:
                if t.proxy.done():
                    return
                self.pending.discard(id(t.proxy))
                if t.remote is not None:
                    t.remote.cancel()
                if local.kind == "analysed":
                    self.files[t.path] = "local"
                t.proxy.set_result(local)

        lf.add_done_callback(done)

    def note_local(self, f: Future[WorkerResult]) -> None:
        """A job the scan ran here directly (no remote worker free): count it as local's."""
        if f.cancelled() or f.exception() is not None:
            return
        res = f.result()
        if res.kind == "analysed":
            with self._lock:
                self.files[res.path] = "local"

    # -- watching -----------------------------------------------------------------------------

    def _lose(self, why: str) -> None:
        """The scheduler is gone: say so once, and run everything pending here."""
        with self._lock:
            if self.down:
                return
            self.down = why
            tasks = list(self.tasks.values())
            self.tasks.clear()
        log.warning("remote analysis unavailable; the scan goes on locally", extra={"reason": why})
        self.events.append(f"{time.strftime('%H:%M:%S')} {why}; the scan went on locally")
        for t in tasks:
            t.remote = None
            self._local(t, "scheduler gone")

    def _watch(self) -> None:
        """Every half second: scheduler alive? workers joined or left? a task too slow?"""
        last_refresh = 0.0
        while not self._stop.wait(0.5):
            if self.down or self.client is None:
                return
            if self.client.status not in ("running", "connecting"):
                self._lose(f"lost the scheduler at {self.address} (client {self.client.status})")
                return
            now = time.monotonic()
            if now - last_refresh > 2.0:
                last_refresh = now
                self.refresh()
            with self._lock:
                tasks = list(self.tasks.values())
                if self.approved:
                    self._no_worker_since = None
                elif self._no_worker_since is None:
                    self._no_worker_since = now
                orphaned = (
                    self._no_worker_since is not None
                    and now - self._no_worker_since > NO_WORKER_GRACE_S
                )
                med = statistics.median(self.durations) if len(self.durations) >= 3 else None
            limit = max(self.slow_after, self.slow_factor * med) if med else self.slow_after
            for t in tasks:
                if t.local or t.proxy.done():
                    continue
                if orphaned:
                    self.counts["requeued"] += 1
                    self._local(t, "no approved remote worker left")
                elif now - t.submitted > limit:
                    self.counts["speculative"] += 1
                    self._local(t, f"remote task slower than {limit:.0f} s")

    def report(self) -> dict[str, Any]:
        """The ``remote`` part of the scan summary: who analysed what, who was refused, faults."""
        with self._lock:
            return {
                "scheduler": self.address,
                "down": self.down,
                "workers": dict(self.per_worker),
                "refused": sorted(self.refused.values()),
                "events": list(self.events),
                "files": dict(sorted(self.files.items())),
                **self.counts,
            }

    def close(self) -> None:
        """Stop watching and disconnect (the workers and the scheduler keep running)."""
        self._stop.set()
        if self.client is not None:
            try:
                self.client.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing a client whose scheduler is gone
                pass


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _stat_tuple(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_mode)


def connect(
    address: str,
    secrets_dir: Path | None,
    insecure: bool,
    **kw: Any,
) -> RemoteExecutor:
    """A :class:`RemoteExecutor` with the cluster's security: TLS and the shared secret, or (with
    ``insecure`` and a ``tcp://`` address) neither."""
    from nomarr.remote import require
    from nomarr.remote.secrets import default_dir, security, shared_secret

    require()
    folder = secrets_dir or default_dir()
    if address.startswith("tls://"):
        return RemoteExecutor(
            address, security=security(folder), secret=shared_secret(folder), **kw
        )
    if not insecure:
        raise ValueError(
            f"{address}: remote analysis is TLS only (tls://HOST:PORT); plain tcp:// needs "
            "--insecure, for a trusted network"
        )
    secret = shared_secret(folder) if (folder / "secret").exists() else None
    return RemoteExecutor(address, security=None, secret=secret, **kw)
