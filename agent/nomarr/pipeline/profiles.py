"""Sampling profiles (DESIGN §7): which parts of a track are analysed.

Analysing every 3 s patch of a 4-minute track costs 80 model runs; a well-placed 2 minutes gives
nearly the same track-level tags at half the cost. Windows are a pure function of the file's
duration and (for aligned profiles) of its audio, so the same file always gets the same windows, and
they are stored with the analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Window:
    """A stretch of the track to analyse; ``duration=None`` means to the end."""

    start: float
    duration: float | None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-friendly form, rounded to milliseconds."""
        return {
            "start": round(self.start, 3),
            "duration": None if self.duration is None else round(self.duration, 3),
        }


@dataclass(frozen=True)
class Profile:
    """A named sampling recipe."""

    name: str
    main: float | None  # main window length in s (None: whole track)
    tail_windows: int = 0
    tail_length: float = 0.0
    onset_after: float = 10.0  # main window starts at the first strong onset after this time
    tail_region: float = 0.3  # tail windows come from the last 30 % of the track
    description: str = ""
    # level-invariant option ("<profile>+level"): the models' input scaled so that the analysed
    # audio's gated RMS is this many dBFS (docs/descriptors.md); None: as decoded (upstream)
    level_norm: float | None = None

    def params(self) -> dict[str, object]:
        """Everything that changes the numbers (goes into the provenance hash). ``level_norm`` is
        left out while off, so the faithful profiles keep the provenance they always had."""
        d = asdict(self)
        if d["level_norm"] is None:
            del d["level_norm"]
        return d

    @property
    def min_duration(self) -> float:
        """Shorter tracks are analysed in full (cheaper, and there is nothing to choose)."""
        if self.main is None:
            return 0.0
        return self.onset_after + self.main + self.tail_windows * self.tail_length + 5.0


PROFILES: dict[str, Profile] = {
    "full": Profile("full", None, description="every non-overlapping 3 s patch of the track"),
    "balanced": Profile(
        "balanced",
        90.0,
        2,
        15.0,
        description="90 s from the first strong onset after 10 s, plus two 15 s windows from the last 30 %",
    ),
    "club_hifi_150s": Profile(
        "club_hifi_150s",
        90.0,
        2,
        30.0,
        description="90 s from the first strong onset after 10 s, plus two 30 s windows from the last 30 %",
    ),
    "fast": Profile("fast", 30.0, description="30 s from the first strong onset after 10 s"),
}
DEFAULT_PROFILE = "balanced"
LEVEL_SUFFIX = "+level"
LEVEL_REFERENCE_DB = -18.0  # gated RMS of the models' 16 kHz mono input with "+level"


def get_profile(name: str) -> Profile:
    """Profile by name, with the list of valid names in the error. ``<name>+level`` is the
    profile with the level-invariant option on: the models' input is scaled to a reference level
    measured on the very audio the profile analyses, so a quieter copy of a track scores the
    same (musicnn's log front end is not gain-invariant)."""
    base, plus, rest = name.partition(LEVEL_SUFFIX)
    if plus and not rest and base in PROFILES:
        p = PROFILES[base]
        return replace(
            p,
            name=base + LEVEL_SUFFIX,
            level_norm=LEVEL_REFERENCE_DB,
            description=p.description + f"; input scaled to {LEVEL_REFERENCE_DB:g} dBFS RMS",
        )
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose from {', '.join(PROFILES)} "
            f"(each also as <name>{LEVEL_SUFFIX}, level-invariant)"
        ) from None


def first_strong_onset(logmel: np.ndarray, frame_rate: float) -> float | None:
    """Seconds from the start of ``logmel`` to its first strong onset, or None.

    Onset strength is the positive spectral flux of the log-mel (summed rise over bands). "Strong"
    means above mean + 2 standard deviations of the excerpt, so quiet intros with small fluctuations
    do not count but the first beat or chord after them does.
    """
    if logmel.shape[0] < 3:
        return None
    flux = np.maximum(0.0, np.diff(logmel.astype(np.float64), axis=0)).sum(axis=1)
    thr = flux.mean() + 2.0 * flux.std()
    if thr <= 0:
        return None
    hits = np.nonzero(flux > thr)[0]
    return None if hits.size == 0 else float((hits[0] + 1) / frame_rate)


def plan_windows(
    profile: Profile,
    duration: float | None,
    onset_finder: Callable[[float, float], float | None] | None = None,
) -> list[Window]:
    """Windows for a track of ``duration`` seconds.

    ``onset_finder(start, length)`` returns the offset of the first strong onset within that
    excerpt (seconds from ``start``) or None; it is only called for aligned profiles.
    """
    if profile.main is None or duration is None or duration < profile.min_duration:
        return [Window(0.0, None)]
    start = profile.onset_after
    if onset_finder is not None:
        search = min(20.0, duration - profile.min_duration + 5.0)
        off = onset_finder(profile.onset_after, max(search, 1.0))
        if off is not None:
            start = profile.onset_after + off
    start = round(start, 2)
    windows = [Window(start, profile.main)]
    main_end = start + profile.main
    if profile.tail_windows:
        region_start = max(main_end, duration * (1.0 - profile.tail_region))
        last_start = duration - profile.tail_length - 0.5  # keep clear of the final fade/edge
        k = profile.tail_windows
        if last_start < region_start:
            region_start = last_start
        step = (last_start - region_start) / (k - 1) if k > 1 else 0.0
        windows += [
            Window(round(region_start + i * step, 2), profile.tail_length) for i in range(k)
        ]
    return windows
