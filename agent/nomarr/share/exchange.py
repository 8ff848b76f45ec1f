"""Export a library's analyses as a bundle, import another agent's, and adopt an imported record
when a scan meets a file of the same recording.

Export writes one record per recording that has analyses and a present, fingerprinted file: the
fingerprint of that file, its duration, its identifiers, every analysis with its embedding, and the
recording's DSP descriptors with their timeline.
Recordings whose analyses were themselves adopted from an import are left out unless asked for,
so an agent re-signs only what it computed.

Import validates record by record (:mod:`nomarr.share.validate`) and keeps the accepted ones in
the store's shared pool (:mod:`nomarr.store.shared`); nothing in the library changes until a scan
adopts a record for a file. A record is adopted only when it carries every provenance the scan
plans, the descriptors' included: an adopted recording is then exactly as current as an analysed
one, and its files get the same tags and standard fields.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nomarr import __version__
from nomarr.fingerprint import MATCH_MAX_BER, Fingerprint, bit_error_rate, durations_agree
from nomarr.share.bundle import (
    BundleError,
    BundleWriter,
    SigningKey,
    array_b64,
    b64_array,
    digest,
    open_bundle,
    verify,
)
from nomarr.share.descriptors import MAX_TIMELINE_BYTES, record_part
from nomarr.share.validate import FP_ALG, Refused, Validator, check_fingerprint
from nomarr.store import Analysis, Store, enc_path

log = logging.getLogger("nomarr.share")

MAX_REFUSALS_LISTED = 200
COMMIT_EVERY = 500


@dataclass
class ExportSummary:
    """What an export wrote."""

    path: str
    bundle: str
    signer: str
    records: int = 0
    analyses: int = 0
    descriptors: int = 0  # records carrying the recording's DSP descriptors
    timelines_left_out: int = 0  # timelines over MAX_TIMELINE_BYTES (the descriptors still go)
    skipped_no_fingerprint: int = 0  # no fingerprint, or one too short to match by
    skipped_shared: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


def _export_rows(store: Store) -> Iterable[tuple[Any, ...]]:
    """(recording, fp duration, fingerprint, duration, mbid, isrc, path) per recording with
    analyses: the lowest-id present file that has a fingerprint stands for the recording."""
    return store.db.execute(
        "SELECT r.id, r.fp_duration, t.fingerprint, t.duration, t.mb_recording, t.isrc, t.path "
        "FROM recordings r LEFT JOIN tracks t ON t.id = (SELECT id FROM tracks WHERE "
        "recording_id = r.id AND +status = 'ok' AND fingerprint IS NOT NULL ORDER BY id LIMIT 1) "
        "WHERE EXISTS (SELECT 1 FROM analyses a WHERE a.recording_id = r.id) ORDER BY r.id"
    )


def record_body(
    store: Store,
    rec: int,
    fp_duration: float,
    fp: bytes,
    duration: float,
    ids: Mapping[str, str | None],
    models: set[str] | None,
) -> dict[str, Any] | None:
    """One recording as a bundle record body (None when it has none of the asked models)."""
    analyses = []
    for mid, a in sorted(store.analyses(rec).items()):
        if models and mid not in models:
            continue
        if not a.complete:  # a partial decode never stands for the recording, here or elsewhere
            continue
        emb = store.embedding(mid, rec)
        analyses.append(
            {
                "model_id": mid,
                "prefix": a.prefix,
                "provenance": a.provenance,
                "profile": a.profile,
                "windows": a.windows,
                "n_patches": a.n_patches,
                "provider": a.provider,
                "scores": a.scores,
                "embedding": None if emb is None else b64_array(emb, "<f4"),
            }
        )
    if not analyses:
        return None
    values = np.frombuffer(fp, dtype="<u4")
    return {
        "fingerprint": {"alg": FP_ALG, "duration": fp_duration, "values": b64_array(values, "<u4")},
        "duration": duration,
        "ids": {k: v for k, v in ids.items() if v},
        "analyses": analyses,
        "descriptors": record_part(store.descriptors(rec), store.timeline(rec)),
    }


def export_bundle(
    store: Store,
    out: Path,
    key: SigningKey,
    *,
    agent_id: str | None = None,
    models: list[str] | None = None,
    under: list[str] | None = None,
    include_shared: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write every exportable recording of ``store`` to ``out`` (atomically)."""
    bundle_id = str(uuid.uuid4())
    s = ExportSummary(str(out), bundle_id, key.key_id)
    header = {
        "bundle": bundle_id,
        "agent_id": agent_id,
        "nomarr": __version__,
        "created": round(time.time(), 3),
    }
    adopted = store.adopted_recordings() if not include_shared else set()
    roots = [enc_path(r).rstrip(b"/") + b"/" for r in under or []]
    wanted = set(models) if models else None
    w = BundleWriter(out, key, header)
    try:
        for rec, fp_dur, fp, dur, mbid, isrc, path in _export_rows(store).fetchall():
            if roots and not any(bytes(path or b"").startswith(r) for r in roots):
                continue
            if rec in adopted:
                s.skipped_shared += 1
                continue
            if fp is None or not dur:
                s.skipped_no_fingerprint += 1
                continue
            ids = {"musicbrainz_recordingid": mbid, "isrc": isrc}
            body = record_body(store, rec, float(fp_dur or 0.0), fp, float(dur), ids, wanted)
            if body is None:
                continue
            try:  # a fingerprint an importer must refuse (a clip of a few seconds) is not sent
                check_fingerprint(body["fingerprint"], body["duration"])
            except Refused:
                s.skipped_no_fingerprint += 1
                continue
            w.add(body)
            s.records += 1
            s.analyses += len(body["analyses"])
            if body["descriptors"]:
                s.descriptors += 1
                if body["descriptors"]["timeline"] is None and store.timeline(rec) is not None:
                    s.timelines_left_out += 1
                    log.info(
                        "timeline left out of the bundle",
                        extra={"recording": rec, "limit": MAX_TIMELINE_BYTES},
                    )
            if progress:
                progress(s.records)
        w.close()
    except BaseException:
        w.abort()
        raise
    s.bytes = out.stat().st_size
    return s


@dataclass
class ImportSummary:
    """What an import accepted and refused, and why."""

    path: str
    bundle: str
    signer: str
    agent_id: str | None
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: dict[str, int] = field(
        default_factory=lambda: {"signature": 0, "malformed": 0, "foreign": 0}
    )
    analyses_accepted: int = 0
    analyses_foreign: int = 0
    descriptors_accepted: int = 0  # accepted records whose descriptors were kept
    descriptors_foreign: int = 0  # accepted records whose descriptors another build made (dropped)
    without_descriptors: int = 0  # accepted records that carry none (e.g. a version 1 bundle)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def refuse(self, line: int, kind: str, reason: str) -> None:
        """Count one refused record (and list the first few with their reason)."""
        self.refused[kind] = self.refused.get(kind, 0) + 1
        if len(self.refusals) < MAX_REFUSALS_LISTED:
            self.refusals.append({"line": line, "kind": kind, "reason": reason})
        log.info("record refused", extra={"line": line, "kind": kind, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


def import_bundle(
    store: Store,
    path: Path,
    registry: Any,
    *,
    trust: set[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Validate every record of a bundle and keep the accepted ones in the shared pool.

    Raises :class:`BundleError` when the file is not a readable bundle or (with ``trust``) was
    signed by a key not in it; everything else is counted per record in the summary.
    """
    header, lines = open_bundle(path)
    hb = header.body
    if trust is not None and header.signer not in trust:
        raise BundleError(
            f"{path}: signed by key {header.signer}, which is not among the trusted keys"
        )
    s = ImportSummary(str(path), str(hb.get("bundle")), header.signer, hb.get("agent_id"))
    validator = Validator(registry, header.version)
    import_id = 0
    trailer = None
    digests: list[bytes] = []
    store.db.execute("BEGIN IMMEDIATE")
    try:
        import_id = store.begin_import(s.bundle, s.signer, s.agent_id, hb.get("created"))
        for ln in lines:
            if trailer is not None:
                s.warnings.append(f"line {ln.number}: data after the trailer ignored")
                break
            if ln.trailer:
                trailer = ln
                continue
            s.records += 1
            if ln.body is not None:
                digests.append(bytes.fromhex(digest(ln.body)))
            _one(store, s, validator, header.key, ln, import_id)
            if progress:
                progress(s.records)
            if s.records % COMMIT_EVERY == 0:
                store.db.execute("COMMIT")
                store.db.execute("BEGIN IMMEDIATE")
        _check_trailer(s, header.key, trailer, digests)
        _descriptor_warnings(s)
        store.end_import(import_id, s.to_dict())
        store.db.execute("COMMIT")
    except BaseException:
        store.db.execute("ROLLBACK")
        raise
    return s


def _one(
    store: Store, s: ImportSummary, validator: Validator, key: str, ln: Any, import_id: int
) -> None:
    """Judge and store one record line."""
    if ln.error is not None:
        s.refuse(ln.number, "malformed", ln.error)
        return
    if not verify(key, ln.body, ln.sig):
        s.refuse(ln.number, "signature", "signature does not verify: altered after signing")
        return
    d = digest(ln.body)
    if store.has_shared(d):
        s.duplicates += 1
        return
    try:
        ok = validator.record(ln.body)
    except Refused as e:
        s.refuse(ln.number, e.kind, e.reason)
        return
    store.put_shared(
        import_id,
        d,
        ok.fingerprint.duration,
        ok.fingerprint.values,
        ok.fingerprint.keys(),
        ok.duration,
        s.signer,
        ok.analyses,
        None if ok.descriptors is None else ok.descriptors.doc,
        None if ok.descriptors is None else ok.descriptors.timeline,
    )
    s.accepted += 1
    s.analyses_accepted += len(ok.analyses)
    s.analyses_foreign += len(ok.foreign)
    if ok.descriptors is not None:
        s.descriptors_accepted += 1
    elif ok.descriptors_foreign is not None:
        s.descriptors_foreign += 1
        log.info("descriptors dropped", extra={"line": ln.number, "reason": ok.descriptors_foreign})
    else:
        s.without_descriptors += 1


def _descriptor_warnings(s: ImportSummary) -> None:
    """Say when accepted records will not be adopted by a scan that plans descriptors."""
    n = s.without_descriptors + s.descriptors_foreign
    if n:
        s.warnings.append(
            f"{n} accepted records carry no descriptors this agent records "
            f"({s.without_descriptors} without any, {s.descriptors_foreign} of another analyzer "
            "build): a scan that plans descriptors (any model set with an embedder) analyses "
            "their files instead of adopting them; importing a bundle exported with this "
            "agent's descriptors makes them adoptable"
        )


def _check_trailer(s: ImportSummary, key: str, trailer: Any, digests: list[bytes]) -> None:
    """A missing or disagreeing trailer is said (records stand on their own signatures)."""
    import hashlib

    if trailer is None:
        s.warnings.append("no trailer: the bundle is truncated (records read so far were judged)")
        return
    if not verify(key, trailer.body, trailer.sig):
        s.warnings.append("the trailer's signature does not verify")
        return
    h = hashlib.sha256(b"".join(digests)).hexdigest()
    if trailer.body.get("records") != s.records or trailer.body.get("records_sha256") != h:
        s.warnings.append(
            f"the trailer lists {trailer.body.get('records')} records; the bundle holds {s.records} "
            "or they were altered, removed or reordered"
        )


def adopt(store: Store, fp: Fingerprint, want: Mapping[str, str]) -> int | None:
    """A library recording made from an imported record that is this fingerprint's recording and
    carries exactly what a scan would record now: every entry of ``want`` (each model's
    provenance and, where the scan plans descriptors, the descriptors' ``DSP_ID`` provenance)
    present with the same value. None when there is none.

    Runs in the scan's main process (the single writer), in its own transaction: the recording,
    its analyses, embeddings and descriptors appear together or not at all. The match rule is the
    library's own: durations agree and the bit error rate of the best alignment is at most
    :data:`~nomarr.fingerprint.MATCH_MAX_BER`.
    """
    from nomarr_client.tags import is_current

    for rid in store.shared_candidates(fp.keys()):
        r = store.shared_record(rid)
        if r is None or not durations_agree(r.fp_duration, fp.duration):
            continue
        if bit_error_rate(fp.values, r.fingerprint) > MATCH_MAX_BER:
            continue
        if not is_current(r.provenances(), want):
            continue
        with store.tx():
            rec = store.new_recording(fp.duration, fp.keys())
            for a in r.analyses:
                emb = None if a["embedding"] is None else array_b64(a["embedding"], "<f4", 1 << 16)
                store.put_analysis(
                    rec,
                    Analysis(
                        rec,
                        a["model_id"],
                        a["prefix"],
                        a["provenance"],
                        a["profile"],
                        a["windows"],
                        a["n_patches"],
                        a["provider"],
                        a["scores"],
                    ),
                    emb,
                )
            if r.descriptors is not None:
                store.put_descriptors(rec, r.descriptors, r.timeline)
            store.mark_adopted(rid, rec)
        log.info("imported analysis adopted", extra={"record": rid, "recording": rec})
        return rec
    return None


def default_bundle_name(agent_id: str | None) -> str:
    """``nomarr-analyses-<agent>-<date>.jsonl.gz``."""
    tag = (agent_id or "agent")[:8]
    return f"nomarr-analyses-{tag}-{time.strftime('%Y%m%d')}.jsonl.gz"


__all__ = [
    "BundleError",
    "ExportSummary",
    "ImportSummary",
    "adopt",
    "default_bundle_name",
    "export_bundle",
    "import_bundle",
]
