"""The ``nom:`` tag grammar (DESIGN §2), written once for the agent and every host plugin.

Keys are the contract with every consumer (Navidrome smart playlists, beets queries, other players),
so building, parsing and classifying them lives here and nowhere else: the agent writes with these
functions, the beets plugin maps them to field names, the Navidrome plugin groups them into families.
The module is pure Python (no numpy, no agent code) so any host process may import it.

Grammar: ``nom:<framework>_<embedder>_<embedder_id>_<model>_<model_id>_<tag>``, lowercase ASCII,
five fixed components of ``[a-z0-9-]+`` and a free ``[a-z0-9_-]+`` tag part. A key whose tag ends
in ``_high|_medium|_low`` is a tier key; ``_provenance`` is the model group's provenance key; any
other tag is a score — except under the ``dsp`` framework, whose keys are descriptors (see below).

DSP descriptors (tempo, key, loudness, energy; docs/tags.md) use the same grammar with framework
``dsp``, embedder ``nomarr``, embedder id the analyzers' version, model the analyzer and model id
its revision: ``nom:dsp_nomarr_1_tempo_1_bpm = 128.00``. Their values are plain numbers in the
unit the tag names (BPM, LUFS, dB, 0…1) or, for the key tags, text (``Am``, ``8A``, ``1m``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

TAG_SCHEMA_VERSION = 1  # part of every provenance hash: changing the grammar re-tags a library
PREFIX = "nom:"
LEGACY_PREFIX = "essentia:"
FIELD_PREFIX = "nom_"  # beets field names cannot hold ':' (DESIGN §2)
COMPONENT_RE = re.compile(r"^[a-z0-9-]+$")
TAG_RE = re.compile(r"^[a-z0-9_-]+$")
TIERS = ("high", "medium", "low")
DSP_FRAMEWORK = "dsp"
DSP_EMBEDDER = "nomarr"
DSP_VERSION = "1"  # the analyzers' version: a change that moves their numbers bumps it
DSP_TEXT_TAGS = frozenset({"key", "camelot", "open_key"})  # descriptor values that are not numbers
PROVENANCE = "provenance"

# Provisional fixed thresholds, used until a library is large enough to calibrate per label
# (docs/tiers.md). Scores are the track-level mean of per-patch sigmoid outputs.
DEFAULT_TIER_THRESHOLDS = (0.5, 0.25)  # high >= 0.5 > medium >= 0.25 > low


@dataclass(frozen=True)
class Namespace:
    """The five fixed components of a ``nom:`` key: one build of one model."""

    framework: str
    embedder: str
    embedder_id: str
    model: str
    model_id: str

    def prefix(self) -> str:
        """``nom:<framework>_<embedder>_<embedder_id>_<model>_<model_id>_``."""
        return PREFIX + self.group + "_"

    @property
    def group(self) -> str:
        """The five components joined by ``_``: identifies one model build."""
        return f"{self.framework}_{self.embedder}_{self.embedder_id}_{self.model}_{self.model_id}"

    @property
    def family(self) -> tuple[str, str]:
        """``(embedder, model)``: the model regardless of build (an onnx and a tflite export of
        musicnn MSD are one family), which is how hosts give two builds one readable name."""
        return (self.embedder, self.model)


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
    return ns.prefix() + PROVENANCE


def dsp_namespace(analyzer: str) -> Namespace:
    """The namespace of one DSP analyzer's keys: ``dsp_nomarr_<version>_<analyzer>_1``."""
    return Namespace(DSP_FRAMEWORK, DSP_EMBEDDER, DSP_VERSION, component(analyzer), "1")


def descriptor_key(analyzer: str, name: str) -> str:
    """``nom:dsp_nomarr_1_<analyzer>_1_<name>`` (``descriptor_key("tempo", "bpm")``)."""
    return dsp_namespace(analyzer).prefix() + slug(name)


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
    kind: str  # score | tier | provenance | descriptor
    label: str  # tag without the tier suffix
    tier: str | None = None

    @property
    def group(self) -> str:
        """The five components joined: identifies one model build."""
        return self.namespace.group

    @property
    def numeric(self) -> bool:
        """Scores, tier keys and numeric descriptors hold numbers; provenance holds a hash, the
        key descriptors (``key``, ``camelot``, ``open_key``) hold text."""
        if self.kind == "descriptor":
            return self.tag not in DSP_TEXT_TAGS
        return self.kind != "provenance"


def parse_key(key: str) -> ParsedKey:
    """Split a key on the first five ``_`` after ``nom:``; raises ValueError if it is not one.

    Accepts any case on input (TagLib and some taggers upper-case Vorbis field names) but the
    parsed result is lowercase. Legacy ``essentia:`` keys are not parsed here (see ``tags migrate``).
    A beets field name (``nom_…``) is accepted too, so hosts need no second parser.
    """
    k = key.strip()
    low = k.lower()
    if low.startswith(PREFIX):
        body = low[len(PREFIX) :]
    elif low.startswith(FIELD_PREFIX):
        body = low[len(FIELD_PREFIX) :]
    else:
        raise ValueError(f"{key!r} does not start with {PREFIX}")
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
    full = PREFIX + body
    if tag == PROVENANCE:
        return ParsedKey(full, ns, tag, "provenance", tag)
    if ns.framework == DSP_FRAMEWORK:
        return ParsedKey(full, ns, tag, "descriptor", tag)
    for t in TIERS:
        if tag.endswith("_" + t):
            return ParsedKey(full, ns, tag, "tier", tag[: -len(t) - 1], t)
    return ParsedKey(full, ns, tag, "score", tag)


def try_parse_key(key: str) -> ParsedKey | None:
    """:func:`parse_key`, or None for anything that is not a well-formed key (foreign tags)."""
    try:
        return parse_key(key)
    except ValueError:
        return None


def parse_prefix(prefix: str) -> Namespace:
    """``nom:<five components>_`` (a model's ``tag_prefix`` in ``GET /models``) → its namespace."""
    parsed = parse_key(prefix.rstrip("_") + "_" + PROVENANCE)
    return parsed.namespace


def label_keys(key: str) -> list[str]:
    """Every key one label can be written under: its score key and its three tier keys.

    Writers keep only the current tier's key; a host editing fields must clear the other two, so it
    asks for the whole set. The provenance key is a set of one.
    """
    p = parse_key(key)
    if p.kind == "provenance":
        return [p.key]
    base = p.namespace.prefix() + p.label
    return [base] + [f"{base}_{t}" for t in TIERS]


def field_of(key: str) -> str:
    """``nom:onnx_…`` → ``nom_onnx_…`` (the beets spelling of a key, DESIGN §2)."""
    k = key.strip().lower()
    if not k.startswith(PREFIX):
        raise ValueError(f"{key!r} is not a nom: key")
    return FIELD_PREFIX + k[len(PREFIX) :]


def key_of(field: str) -> str:
    """``nom_onnx_…`` → ``nom:onnx_…``."""
    if not field.startswith(FIELD_PREFIX):
        raise ValueError(f"{field!r} is not a nomarr field")
    return PREFIX + field[len(FIELD_PREFIX) :]


def is_current(have: Mapping[str, str | None], want: Mapping[str, str]) -> bool:
    """Whether an analysis is current: every wanted model has a result with the wanted provenance.

    ``have`` maps model id (or tag prefix) to the provenance recorded for one track or file (None or
    absent: never analysed by it); ``want`` maps the same ids to the provenance an analysis would
    record now. Extra models in ``have`` do not matter: a file may carry more than is asked for.
    An empty ``want`` is never current, so a misconfigured caller re-analyses rather than skipping.
    This is the one rule behind every skip: the scanner, ``POST /analyze`` and the host plugins.
    """
    return bool(want) and all(have.get(m) == p for m, p in want.items())
