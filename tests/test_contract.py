"""The shared contract in ``nomarr_client``: written once, used by the agent and every plugin.

Behaviour of the grammar, the vocabulary, the TXT record and the "current" rule, and a check over
the source tree that no other module carries a private copy of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from nomarr_client import tags as grammar
from nomarr_client import vocab
from nomarr_client.discovery import parse_txt
from nomarr_client.txt import MalformedRecord, txt_properties

REPO = Path(__file__).resolve().parents[1]
NS = grammar.Namespace("onnx", "musicnn", "msd-1", "msd50", "1")


def test_keys_round_trip_through_the_parser() -> None:
    for label in ("happy", "female vocalists", "Hip-Hop", "80s"):
        for key in (grammar.score_key(NS, label), grammar.tier_key(NS, label, "medium")):
            p = grammar.parse_key(key)
            assert p.namespace == NS and p.label == grammar.slug(label) and p.key == key
    p = grammar.parse_key(grammar.provenance_key(NS))
    assert p.kind == "provenance" and not p.numeric
    # beets field names parse to the same key
    f = grammar.field_of("nom:onnx_musicnn_msd-1_msd50_1_happy_high")
    assert f == "nom_onnx_musicnn_msd-1_msd50_1_happy_high"
    assert grammar.parse_key(f).key == grammar.key_of(f)
    assert grammar.parse_prefix(NS.prefix()) == NS and NS.family == ("musicnn", "msd50")


def test_label_keys_and_foreign_keys() -> None:
    keys = grammar.label_keys("nom:onnx_musicnn_msd-1_msd50_1_sad_low")
    assert keys == [f"{NS.prefix()}sad"] + [f"{NS.prefix()}sad_{t}" for t in grammar.TIERS]
    assert grammar.label_keys(grammar.provenance_key(NS)) == [grammar.provenance_key(NS)]
    for bad in ("nom:onnx_musicnn_happy", "nom:ONNX_a b_c_d_e_x", "title", "nom_"):
        assert grammar.try_parse_key(bad) is None or bad.startswith("nom:ONNX"), bad
    assert grammar.try_parse_key("nom:a_b_c_d_e_f g") is None


@pytest.mark.parametrize(
    ("have", "want", "current"),
    [
        ({"m": "p1"}, {"m": "p1"}, True),
        ({"m": "p1", "other": "x"}, {"m": "p1"}, True),  # more than asked for is fine
        ({"m": "p0"}, {"m": "p1"}, False),  # a new build or profile
        ({}, {"m": "p1"}, False),
        ({"m": None}, {"m": "p1"}, False),
        ({"m": "p1"}, {"m": "p1", "n": "q"}, False),  # a model added to the selection
        ({"m": "p1"}, {}, False),  # nothing wanted: never "current", never skip by mistake
    ],
)
def test_the_current_rule(have: dict, want: dict, current: bool) -> None:
    assert grammar.is_current(have, want) is current


def test_vocabulary_is_one_consistent_set() -> None:
    assert not vocab.MOODS & vocab.GENRES
    assert set(vocab.CLAP_MOODS) <= vocab.MOODS
    assert vocab.is_mood("easy listening") and vocab.is_mood("happy") and not vocab.is_mood("rock")
    assert vocab.category("rock") == "genre" and vocab.category("guitar") == "tag"
    assert {"energetic", "calm"} <= vocab.MOODS


def test_txt_record_both_halves() -> None:
    props = txt_properties(agent_id="abc", version="1.2.3", auth=True)
    assert parse_txt({k.encode(): v.encode() for k, v in props.items()}) == props
    with pytest.raises(MalformedRecord, match="txtvers"):
        parse_txt({**props, "txtvers": "9"})


# -- written once ---------------------------------------------------------------------------------

CONTRACT = REPO / "plugins" / "client" / "nomarr_client"
# Spellings that only a private copy of the contract would contain.
COPIES = {
    "a key parser": re.compile(r"split\(\s*\"_\"\s*,\s*5\s*\)"),
    "the tier names": re.compile(r"\(\s*\"high\"\s*,\s*\"medium\"\s*,\s*\"low\"\s*\)"),
    "the provenance suffix": re.compile(r"[\"']_provenance[\"']"),
    "a mood set": re.compile(r"\b(MOOD_LABELS|MOODS)\s*=\s*(frozenset|set|\(|\{)"),
    "the TXT version": re.compile(r"\bTXT_VERSION\s*=\s*\d"),
    "a provenance comparison": re.compile(r"\.provenance\s*[!=]=|==\s*p\s+for\s+m,\s*p\s+in"),
}


def _sources() -> list[Path]:
    roots = [REPO / "agent", REPO / "plugins"]
    return [
        p
        for r in roots
        for p in r.rglob("*.py")
        if CONTRACT not in p.parents and "tests" not in p.parts and ".venv" not in str(p)
    ]


def test_no_module_outside_the_client_copies_the_contract() -> None:
    found = [
        f"{p.relative_to(REPO)}: {what}"
        for p in _sources()
        for what, rx in COPIES.items()
        if rx.search(p.read_text(encoding="utf-8"))
    ]
    assert found == []
    for what, rx in COPIES.items():  # and the client itself holds each (the check can see them)
        if what not in ("a provenance comparison", "the provenance suffix"):
            assert any(rx.search(p.read_text()) for p in CONTRACT.glob("*.py")), what


def test_the_contract_imports_without_numpy_or_the_agent() -> None:
    code = (
        "import sys; import nomarr_client.tags, nomarr_client.vocab, nomarr_client.txt; "
        "bad = [m for m in ('numpy', 'onnxruntime', 'nomarr', 'zeroconf') if m in sys.modules]; "
        "sys.exit(', '.join(bad) or None)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
