"""Silence and regions: where the sound is, and the parts a long file is analysed in.

A 16 ms frame is silent when its RMS is below ``SILENCE_DB`` (−60 dBFS: below the noise floor of any mastered recording, above dither and tape hiss between
tracks). Leading and trailing silence are the silent runs at the ends, any length. An internal
silent run of at least ``MIN_GAP`` seconds (2 s: longer than any musical rest or fermata in a
song, shorter than the gap between two tracks of a concatenated file or the pauses of a field
recording) splits the file into regions. Regions longer than ``MAX_REGION`` (15 min: no song, so a
DJ mix or a live set played without gaps) are cut into equal parts of at most ``CHUNK`` (10 min),
so every region gets descriptors and scores of its own. Regions shorter than 0.5 s are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nomarr.analyzers.frontend import FPS

SILENCE_DB = -60.0
MIN_GAP = 2.0
MAX_REGION = 15 * 60.0
CHUNK = 10 * 60.0
MIN_REGION = 0.5


@dataclass
class Region:
    """One stretch of sound, its descriptors and (filled later) the models' mean scores."""

    start: float
    end: float
    descriptors: dict[str, object] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        d: dict[str, object] = {"start": round(self.start, 3), "end": round(self.end, 3)}
        d.update(self.descriptors)
        if self.scores:
            d["scores"] = {
                m: {k: round(v, 4) for k, v in s.items()} for m, s in self.scores.items()
            }
        return d


def voiced_frames(rms: np.ndarray) -> np.ndarray:
    """Boolean per 16 ms frame: not silent (RMS at or above ``SILENCE_DB``). Short dips are
    harmless: only silent runs of ``MIN_GAP`` seconds split regions."""
    return rms.astype(np.float64) >= 10 ** (SILENCE_DB / 20)


def split(voiced: np.ndarray, t0: float, total: float) -> tuple[float, float, list[Region]]:
    """(leading silence, trailing silence, regions) of one contiguous stretch starting at ``t0``
    and ``total`` seconds long; times are seconds into the file."""
    if voiced.size == 0 or not voiced.any():
        return total, total, []
    idx = np.nonzero(voiced)[0]
    lead = idx[0] / FPS
    trail = max(0.0, total - (idx[-1] + 1) / FPS)
    # runs of sound separated by silent runs ≥ MIN_GAP
    gaps = np.nonzero(np.diff(idx) > MIN_GAP * FPS)[0]
    starts = np.concatenate([[idx[0]], idx[gaps + 1]])
    ends = np.concatenate([idx[gaps] + 1, [idx[-1] + 1]])
    regions: list[Region] = []
    for s, e in zip(starts / FPS, ends / FPS, strict=True):
        if e - s < MIN_REGION:
            continue
        if e - s > MAX_REGION:
            k = int(np.ceil((e - s) / CHUNK))
            edges = np.linspace(s, e, k + 1)
            regions += [Region(t0 + a, t0 + b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        else:
            regions.append(Region(t0 + s, t0 + e))
    return lead, trail, regions
