"""What a worker job returns: typed, picklable results (no exceptions, no dicts keyed by strings).

A job is a pure function from (path, options) to one :class:`WorkerResult`; it touches no
database row and no file, so it can run in a local worker process, in this process, or on another
machine (a distributed runner only needs to ship the path's bytes and this dataclass back). The
main process applies results: it stores them, writes tags and decides what runs next.

Errors travel as data (``kind="failed"`` with a one-line reason) because an exception that cannot
be unpickled in the parent makes it declare the whole process pool broken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from nomarr.pipeline.prepare import Prepared

Kind = Literal["identified", "reuse", "analysed", "failed", "changed"]


@dataclass(frozen=True)
class FileFacts:
    """What the worker saw of the file: its stat at the start of the job, stream facts and the
    identifiers in its tags (MusicBrainz ids, ISRC, title...)."""

    stat: tuple[int, int, int, int, int]  # size, mtime_ns, dev, ino, mode
    duration: float | None
    container: str
    codec: str
    sample_rate: int
    channels: int
    ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelOutput:
    """One model's track-level output for one file, as the store keeps it."""

    model_id: str
    prefix: str
    provenance: str
    provider: str
    n_patches: int
    scores: dict[str, float]
    embedding: np.ndarray | None


@dataclass
class WorkerResult:
    """One file through one job.

    ``kind``: ``identified`` (fingerprinted; ``prepared`` holds its patches unless it is too long
    to ship), ``reuse`` (its recording ``match`` already has current analyses), ``analysed``
    (``outputs`` hold the models' results), ``failed`` (``error`` says why; ``vanished`` when the
    file is gone), ``changed`` (the file changed while it was worked on: retried next scan).
    ``stages``: seconds per stage (see :mod:`nomarr.stages`), summed by the scan's profile.
    """

    path: str
    kind: Kind
    facts: FileFacts | None = None
    fp: np.ndarray | None = None  # uint32 raw Chromaprint
    fp_duration: float | None = None
    fp_error: str | None = None
    match: int | None = None
    prepared: Prepared | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[ModelOutput] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    vanished: bool = False
    stages: dict[str, float] = field(default_factory=dict)
    complete: bool = True  # every planned second was decoded (else a partial analysis)
    decoded_s: float | None = None  # seconds of audio the models saw
    silent: bool = False  # digital silence throughout: failed by the applier, never tagged
    ended_at: float | None = None  # where a partial file's audio really ends (not the header's)
    descriptors: dict[str, Any] | None = None  # DSP descriptors (nomarr.analyzers), JSON form
    timeline: bytes | None = None  # their compact per-track timeline (Timeline.encode)

    def with_identity(self, ident: WorkerResult) -> WorkerResult:
        """An analysis completed with what its identification step found (facts, fingerprint,
        match, and its stages). A file that changed between the two steps is reported as changed
        (retried next scan): its fingerprint may describe the old content."""
        out = replace(
            self,
            facts=self.facts or ident.facts,
            fp=self.fp if self.fp is not None else ident.fp,
            fp_duration=self.fp_duration if self.fp is not None else ident.fp_duration,
            fp_error=self.fp_error or ident.fp_error,
            match=self.match if self.match is not None else ident.match,
            stages=_sum(self.stages, ident.stages),
        )
        if out.kind in ("analysed", "reuse") and self.facts and ident.facts:
            if self.facts.stat[:2] != ident.facts.stat[:2]:
                out.kind, out.error = "changed", "file changed while it was being analysed"
        return out


def _sum(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def stat_tuple(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The fields of a stat the store keeps."""
    return (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_mode)


class WorkerStat:
    """The fields of ``os.stat_result`` the store uses, rebuilt from a worker's tuple."""

    def __init__(self, t: tuple[int, int, int, int, int]) -> None:
        self.st_size, self.st_mtime_ns, self.st_dev, self.st_ino, self.st_mode = t


def to_wire(res: WorkerResult) -> dict[str, Any]:
    """A result as plain data for the remote (Dask) path, whose checks read it as a mapping:
    ``results`` holds one dict per model output, ``stat`` the file's stat tuple."""
    d: dict[str, Any] = {
        k: getattr(res, k)
        for k in (
            "path",
            "kind",
            "fp",
            "fp_duration",
            "fp_error",
            "match",
            "prepared",
            "windows",
            "warnings",
            "error",
            "vanished",
            "stages",
            "complete",
            "decoded_s",
            "silent",
            "ended_at",
            "descriptors",
            "timeline",
        )
    }
    d["facts"] = res.facts
    d["results"] = [o.__dict__.copy() for o in res.outputs]
    if res.facts is not None:
        d["stat"] = res.facts.stat
    return d


def from_wire(d: dict[str, Any]) -> WorkerResult:
    """The inverse of :func:`to_wire` (unknown kinds from a remote worker count as failures);
    ``stat`` given by the agent replaces the worker's."""
    facts = d.get("facts")
    if facts is not None and d.get("stat") is not None:
        facts = replace(facts, stat=tuple(d["stat"]))
    kind = d.get("kind")
    if kind not in ("identified", "reuse", "analysed", "failed", "changed"):
        kind = "failed"
    return WorkerResult(
        path=d["path"],
        kind=kind,
        facts=facts,
        fp=d.get("fp"),
        fp_duration=d.get("fp_duration"),
        fp_error=d.get("fp_error"),
        match=d.get("match"),
        prepared=d.get("prepared"),
        windows=list(d.get("windows") or []),
        outputs=[ModelOutput(**o) for o in d.get("results") or []],
        warnings=list(d.get("warnings") or []),
        error=d.get("error") or (None if kind != "failed" else f"remote result {d.get('kind')}"),
        vanished=bool(d.get("vanished")),
        stages=dict(d.get("stages") or {}),
        complete=bool(d.get("complete", True)),
        decoded_s=d.get("decoded_s"),
        silent=bool(d.get("silent")),
        ended_at=d.get("ended_at"),
        descriptors=d.get("descriptors"),
        timeline=d.get("timeline"),
    )
