"""The ``nom:`` tag grammar (DESIGN §2): building and parsing keys, tiers, value formatting.

Keys are the contract with every consumer (Navidrome smart playlists, beets queries, other players),
so the grammar lives in exactly one place and is strict: lowercase ASCII, five fixed components of
``[a-z0-9-]+`` and a free ``[a-z0-9_-]+`` tag part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nomarr.models.manifest import Namespace

TAG_SCHEMA_VERSION = 1
PREFIX = "nom:"
LEGACY_PREFIX = "essentia:"
COMPONENT_RE = re.compile(r"^[a-z0-9-]+$")
TAG_RE = re.compile(r"^[a-z0-9_-]+$")
TIERS = ("high", "medium", "low")

# Provisional fixed thresholds, used until a library is large enough to calibrate per label
# (docs/tiers.md). Scores are the track-level mean of per-patch sigmoid outputs.
DEFAULT_TIER_THRESHOLDS = (0.5, 0.25)  # high >= 0.5 > medium >= 0.25 > low


def slug(label: str) -> str:
    """Label → tag part: lowercase, spaces → ``_``, any other character outside [a-z0-9_-] → ``-``.

    ``"female vocalists"`` → ``female_vocalists``, ``"Hip-Hop"`` → ``hip-hop``,
    ``"Folk, World, & Country"`` → ``folk-_world-_-_country``.
    """
    s = label.strip().lower().replace(" ", "_")
    s = re.sub(r"[^a-z0-9_-]", "-", s.encode("ascii", "replace").decode().replace("?", "-"))
    return s or "unnamed"


def component(value: str) -> str:
    """A fixed key component: lowercase, ``.``/``_``/spaces → ``-`` (``1.2.3`` → ``1-2-3``)."""
    s = re.sub(r"[^a-z0-9-]", "-", value.strip().lower())
    s = re.sub(r"-{2,}", "-", s).strip("-")
    if not s:
        raise ValueError(f"empty key component from {value!r}")
    return s


def score_key(ns: Namespace, label: str) -> str:
    """``nom:<ns>_<label slug>``."""
    return ns.prefix() + slug(label)


def tier_key(ns: Namespace, label: str, tier: str) -> str:
    """``nom:<ns>_<label slug>_<tier>``."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, not {tier!r}")
    return f"{ns.prefix()}{slug(label)}_{tier}"


def provenance_key(ns: Namespace) -> str:
    """``nom:<ns>_provenance``."""
    return ns.prefix() + "provenance"


def fmt_score(x: float) -> str:
    """Scores are written with exactly 4 decimals, clamped to [0, 1]."""
    return f"{min(1.0, max(0.0, float(x))):.4f}"


def tier_of(score: float, thresholds: tuple[float, float] = DEFAULT_TIER_THRESHOLDS) -> str:
    """high / medium / low for a score given (high, medium) lower bounds."""
    hi, med = thresholds
    return "high" if score >= hi else "medium" if score >= med else "low"


@dataclass(frozen=True)
class ParsedKey:
    """A ``nom:`` key split into its parts."""

    key: str
    namespace: Namespace
    tag: str
    kind: str  # score | tier | provenance
    label: str  # tag without the tier suffix
    tier: str | None = None

    @property
    def group(self) -> str:
        """The five components joined: identifies one model build."""
        n = self.namespace
        return f"{n.framework}_{n.embedder}_{n.embedder_id}_{n.model}_{n.model_id}"


def parse_key(key: str) -> ParsedKey:
    """Split a key on the first five ``_`` after ``nom:``; raises ValueError if it is not one.

    Accepts any case on input (TagLib and some taggers upper-case Vorbis field names) but the
    parsed result is lowercase. Legacy ``essentia:`` keys are not parsed here (see ``tags migrate``).
    """
    k = key.strip()
    if not k.lower().startswith(PREFIX):
        raise ValueError(f"{key!r} does not start with {PREFIX}")
    body = k[len(PREFIX) :].lower()
    parts = body.split("_", 5)
    if len(parts) != 6:
        raise ValueError(f"{key!r}: expected 5 components and a tag after {PREFIX}")
    *comps, tag = parts
    for c in comps:
        if not COMPONENT_RE.match(c):
            raise ValueError(f"{key!r}: component {c!r} must match [a-z0-9-]+")
    if not TAG_RE.match(tag):
        raise ValueError(f"{key!r}: tag {tag!r} must match [a-z0-9_-]+")
    ns = Namespace(*comps)
    if tag == "provenance":
        return ParsedKey(PREFIX + body, ns, tag, "provenance", tag)
    for t in TIERS:
        if tag.endswith("_" + t):
            return ParsedKey(PREFIX + body, ns, tag, "tier", tag[: -len(t) - 1], t)
    return ParsedKey(PREFIX + body, ns, tag, "score", tag)
