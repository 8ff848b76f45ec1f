"""Storing an ingest's outcome: one transaction that makes (or finds) the recording, puts the
analyses and the vector, and records the stream — so the database holds all of it or none."""

from __future__ import annotations

from typing import Any

import numpy as np
from nomarr.fingerprint import Fingerprint, match_recording
from nomarr.library import recording_reusable
from nomarr.listens.match import norm_isrc, norm_mbid
from nomarr.store import Analysis, Store


def store_ingest(
    store: Store,
    res: dict[str, Any],
    identity: dict[str, Any],
    rate: int,
    channels: int,
    profile: str,
    want: dict[str, str],
) -> tuple[int, int, bool, bool]:
    """Store a worker's :func:`~nomarr.workers.ingest_job` result; (stream id, recording id,
    matched a stored recording, analyses written). The caller holds the agent's write lock."""
    fp_vals = res.get("fp")
    fp = (
        None
        if fp_vals is None
        else Fingerprint(res.get("fp_duration") or 0.0, np.asarray(fp_vals, np.uint32))
    )
    with store.tx():
        rec = res.get("match")
        if rec is not None and not store.recording_exists(rec):
            rec = None
        if rec is None and fp is not None:  # matched by a stream or file stored meanwhile
            rec = match_recording(store, fp)
        matched = rec is not None
        if res.get("kind") == "reuse" and (rec is None or not recording_reusable(store, rec, want)):
            raise RuntimeError(
                "the matched recording changed while this stream was analysed; end again"
            )
        if rec is None:
            rec = store.new_recording(res.get("duration"), fp.keys() if fp is not None else set())
        wrote = False
        if res.get("kind") == "analysed":
            for r in res["results"]:
                a = Analysis(
                    rec,
                    r["model_id"],
                    r["prefix"],
                    r["provenance"],
                    profile,
                    res["windows"],
                    r["n_patches"],
                    r["provider"],
                    r["scores"],
                    complete=bool(res.get("complete", True)),
                    decoded_s=res.get("decoded_s"),
                )
                store.put_analysis(rec, a, r["embedding"])
            if res.get("descriptors") is not None:
                store.put_descriptors(rec, res["descriptors"], res.get("timeline"))
            wrote = True
        sid, _ = store.put_stream(
            rec,
            None if fp is None else fp.values,
            provider=identity.get("provider"),
            provider_id=identity.get("provider_id"),
            mb_recording=norm_mbid(identity.get("mbid")),
            isrc=norm_isrc(identity.get("isrc")),
            title=identity.get("title"),
            artist=identity.get("artist"),
            album=identity.get("album"),
            duration=float(res.get("duration") or 0.0) or identity.get("duration"),
            sample_rate=rate,
            channels=channels,
        )
    return sid, int(rec), matched, wrote
