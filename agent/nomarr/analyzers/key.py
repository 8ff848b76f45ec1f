"""Key and mode from the front end's pitch-class profile.

Method: fold the 36-bin harmonic pitch-class profile into 12 pitch classes around the estimated
tuning, sum it over the audio (each second weighted by its loudness rank, so a quiet intro does
not outvote the song), and correlate the result with a major and a minor key profile rotated to
all 12 tonics (Krumhansl's method). The best correlation names the key; its value is the
strength, and the gap to the best key of the other mode tells how sure the mode is.

Profiles: Krumhansl–Kessler's probe-tone profiles by default. On the bench's synthetic songs
Temperley's corpus profiles do as well (48/48 both), but on real music they lean to the relative
major where Essentia (and, on listening, the music) hears minor: agreement with Essentia's
KeyExtractor on the corpus was 13/20 with Krumhansl–Kessler, 6/20 with Temperley
(``bench/bench_descriptors.py`` reports the current figure).

Notation: ID3v2.4 TKEY (``C``, ``F#``, ``Bbm``… we use sharps for black-key majors except Bb, Eb
and Ab and their minors, the spellings DJ software writes), Camelot (``8A`` = A minor) and Open
Key (``1m`` = A minor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nomarr.analyzers.frontend import CHROMA_BINS

PROFILES = {
    # Krumhansl & Kessler (1982) probe-tone ratings
    "krumhansl": (
        (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
        (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
    ),
    # Temperley (2001), "The Cognition of Basic Musical Structures"
    "temperley": (
        (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0),
        (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0),
    ),
}
DEFAULT_PROFILE = "krumhansl"
MIN_STRENGTH = 0.35  # below this correlation the audio has no clear key
MIN_TONAL_SECONDS = 3.0

# pitch class (C = 0) → ID3 spelling for a major tonic, a minor tonic
_MAJOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm")
# Camelot numbers: majors (B) and minors (A) around the circle of fifths
_CAMELOT_MAJOR = (8, 3, 10, 5, 12, 7, 2, 9, 4, 11, 6, 1)
_CAMELOT_MINOR = (5, 12, 7, 2, 9, 4, 11, 6, 1, 8, 3, 10)


@dataclass(frozen=True)
class KeyResult:
    """A key estimate (``key`` None: no key, with ``reason``)."""

    key: str | None  # ID3v2.4 TKEY notation: "Am", "F#"
    tonic: int | None  # pitch class, C = 0
    mode: str | None  # major | minor
    strength: float  # correlation with the winning profile, 0…1
    mode_margin: float  # winning correlation minus the best of the other mode
    camelot: str | None
    open_key: str | None
    tuning_cents: float
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "key": self.key,
            "mode": self.mode,
            "strength": round(self.strength, 4),
            "mode_margin": round(self.mode_margin, 4),
            "camelot": self.camelot,
            "open_key": self.open_key,
            "tuning_cents": round(self.tuning_cents, 1),
            "reason": self.reason,
        }


def camelot_of(tonic: int, mode: str) -> str:
    """``8A`` style (A = minor, B = major)."""
    if mode == "minor":
        return f"{_CAMELOT_MINOR[tonic]}A"
    return f"{_CAMELOT_MAJOR[tonic]}B"


def open_key_of(tonic: int, mode: str) -> str:
    """Open Key notation (``1d`` = C major, ``1m`` = A minor): Camelot shifted by 7 hours."""
    n = int(camelot_of(tonic, mode)[:-1])
    return f"{(n + 4) % 12 + 1}{'m' if mode == 'minor' else 'd'}"


def parse_key(text: str) -> tuple[int, str] | None:
    """``Am`` / ``F#`` / ``Bbm`` / ``8A`` / ``1m`` / ``A minor`` → (tonic, mode); None if unreadable."""
    s = text.strip().replace("♯", "#").replace("♭", "b")
    if not s:
        return None
    low = s.lower()
    if low[:-1].isdigit() and low[-1] in "ab":
        n = int(low[:-1])
        table = _CAMELOT_MINOR if low[-1] == "a" else _CAMELOT_MAJOR
        if n in table:
            return table.index(n), "minor" if low[-1] == "a" else "major"
        return None
    if low[:-1].isdigit() and low[-1] in "dm":
        n = int(low[:-1])
        if 1 <= n <= 12:
            cam = (n + 6) % 12 + 1
            return parse_key(f"{cam}{'A' if low[-1] == 'm' else 'B'}")
        return None
    names = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
    if low[0] not in names:
        return None
    pc, rest = names[low[0]], low[1:]
    if rest.startswith("#"):
        pc, rest = pc + 1, rest[1:]
    elif rest.startswith("b") and not rest.startswith("b "):
        pc, rest = pc - 1, rest[1:]
    rest = rest.strip()
    if rest in ("", "maj", "major", "dur"):
        return pc % 12, "major"
    if rest in ("m", "min", "minor", "moll"):
        return pc % 12, "minor"
    return None


def key_name(tonic: int, mode: str) -> str:
    """ID3v2.4 TKEY spelling."""
    return (_MINOR_NAMES if mode == "minor" else _MAJOR_NAMES)[tonic % 12]


def fold_chroma(chroma36: np.ndarray, tuning: float) -> np.ndarray:
    """[..., 36] → [..., 12]: each pitch class reads the 36-bin profile at 3·pc + 3·tuning with a
    triangular kernel one semitone wide, so energy a little sharp or flat still counts."""
    pos = (np.arange(12) * 3.0 + 3.0 * tuning)[:, None] + np.arange(-1.5, 1.51, 0.5)[None, :]
    w = 1.0 - np.abs(np.arange(-1.5, 1.51, 0.5)) / 2.0  # triangle over ±1.5 bins
    base = np.floor(pos).astype(int)
    f = pos - base
    idx0, idx1 = base % CHROMA_BINS, (base + 1) % CHROMA_BINS
    c = np.asarray(chroma36, dtype=np.float64)
    vals = c[..., idx0] * (1 - f) + c[..., idx1] * f  # [..., 12, 7]
    return (vals * w).sum(axis=-1)


def estimate_key(
    chroma36: np.ndarray, weights: np.ndarray, tuning: float, profile: str = DEFAULT_PROFILE
) -> KeyResult:
    """The key of the seconds in ``chroma36`` [n, 36] weighted by ``weights`` [n]."""
    cents = tuning * 100.0
    if chroma36.shape[0] == 0 or float(np.sum(weights > 0)) < MIN_TONAL_SECONDS:
        return _none("too little tonal audio", cents)
    c12 = fold_chroma(chroma36, tuning)
    norm = c12.max(axis=1, keepdims=True)
    c12 = np.where(norm > 0, c12 / np.where(norm > 0, norm, 1), 0.0)
    total = (c12 * weights[:, None]).sum(axis=0)
    if total.sum() <= 0 or np.ptp(total) < 1e-6 * total.max():
        return _none("no pitched content", cents)
    major, minor = (np.asarray(p, dtype=np.float64) for p in PROFILES[profile])
    x = (total - total.mean()) / (total.std() + 1e-12)
    scores = np.zeros((2, 12))
    for m, prof in enumerate((major, minor)):
        for t in range(12):
            p = np.roll(prof, t)
            p = (p - p.mean()) / p.std()
            scores[m, t] = float(np.mean(x * p))
    m, t = np.unravel_index(int(np.argmax(scores)), scores.shape)
    best = float(scores[m, t])
    margin = best - float(scores[1 - m].max())
    if best < MIN_STRENGTH:
        return _none(f"no clear key (best correlation {best:.2f})", cents, best)
    mode = "major" if m == 0 else "minor"
    return KeyResult(
        key_name(int(t), mode),
        int(t),
        mode,
        best,
        margin,
        camelot_of(int(t), mode),
        open_key_of(int(t), mode),
        cents,
    )


def _none(reason: str, cents: float, strength: float = 0.0) -> KeyResult:
    return KeyResult(None, None, None, max(0.0, strength), 0.0, None, None, cents, reason)


def compatible(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Harmonic mixing rule on the Camelot wheel: same key, ±1 hour in the same mode, or the
    relative major/minor (same hour, other letter)."""
    ca, cb = camelot_of(*a), camelot_of(*b)
    na, la, nb, lb = int(ca[:-1]), ca[-1], int(cb[:-1]), cb[-1]
    if la == lb:
        return (na - nb) % 12 in (0, 1, 11)
    return na == nb
