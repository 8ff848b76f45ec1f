"""Tag key grammar (DESIGN §2) and sampling profiles (DESIGN §7)."""

from __future__ import annotations

import pytest
from nomarr.pipeline.profiles import PROFILES, Window, first_strong_onset, get_profile, plan_windows
from nomarr_client.tags import (
    Namespace,
    component,
    fmt_score,
    parse_key,
    provenance_key,
    score_key,
    slug,
    tier_key,
    tier_of,
)

NS = Namespace("onnx", "musicnn", "msd-1", "msd50", "1")


def test_design_example_key() -> None:
    assert score_key(NS, "happy") == "nom:onnx_musicnn_msd-1_msd50_1_happy"
    assert fmt_score(0.734) == "0.7340"


@pytest.mark.parametrize(
    "label, expected",
    [
        ("female vocalists", "female_vocalists"),
        ("Hip-Hop", "hip-hop"),
        ("00s", "00s"),
        ("Progressive rock", "progressive_rock"),
        ("Folk, World, & Country", "folk-_world-_-_country"),
        ("Electronic---House", "electronic---house"),
        ("Café", "caf-"),
    ],
)
def test_slug(label: str, expected: str) -> None:
    assert slug(label) == expected


def test_component_versions() -> None:
    assert component("1.2.3") == "1-2-3" and component("MSD_1") == "msd-1"


def test_parse_round_trip_with_underscored_tag() -> None:
    k = tier_key(NS, "female vocalists", "high")
    p = parse_key(k)
    assert (
        p.namespace == NS
        and p.kind == "tier"
        and p.tier == "high"
        and p.label == "female_vocalists"
    )
    s = parse_key(score_key(NS, "female vocalists"))
    assert s.kind == "score" and s.tag == "female_vocalists"
    assert parse_key(provenance_key(NS)).kind == "provenance"
    assert (
        parse_key("NOM:ONNX_MUSICNN_MSD-1_MSD50_1_HAPPY").key
        == "nom:onnx_musicnn_msd-1_msd50_1_happy"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "essentia:happy",
        "nom:onnx_musicnn_happy",
        "nom:onnx_mus.icnn_msd-1_msd50_1_x",
        "nom:onnx_musicnn_msd-1_msd50_1_hap py",
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_key(bad)


def test_tiers() -> None:
    assert tier_of(0.9) == "high" and tier_of(0.3) == "medium" and tier_of(0.01) == "low"
    assert tier_of(0.3, (0.2, 0.1)) == "high"
    assert fmt_score(1.7) == "1.0000" and fmt_score(-0.1) == "0.0000"


def test_full_and_short_tracks_use_one_window() -> None:
    assert plan_windows(get_profile("full"), 300.0) == [Window(0.0, None)]
    for name in ("balanced", "club_hifi_150s", "fast"):
        assert plan_windows(get_profile(name), 30.0) == [Window(0.0, None)]
        assert plan_windows(get_profile(name), None) == [Window(0.0, None)]


def test_balanced_windows_are_deterministic_and_inside_the_track() -> None:
    finder = lambda start, length: 2.5  # noqa: E731
    w = plan_windows(get_profile("balanced"), 240.0, finder)
    assert w == plan_windows(get_profile("balanced"), 240.0, finder)
    assert w[0] == Window(12.5, 90.0)
    assert len(w) == 3 and all(x.duration == 15.0 for x in w[1:])
    assert all(x.start >= 240.0 * 0.7 - 1e-9 and x.start + x.duration <= 240.0 for x in w[1:])
    c = plan_windows(get_profile("club_hifi_150s"), 400.0, lambda s, n: None)
    assert c[0] == Window(10.0, 90.0) and [x.duration for x in c[1:]] == [30.0, 30.0]
    assert plan_windows(get_profile("fast"), 200.0, lambda s, n: 0.0) == [Window(10.0, 30.0)]


def test_tail_windows_never_overlap_main_near_minimum_length() -> None:
    p = get_profile("balanced")
    for dur in (p.min_duration, p.min_duration + 1, p.min_duration + 20):
        w = plan_windows(p, dur, lambda s, n: n)
        assert w[1].start >= w[0].start + w[0].duration - 1e-9, (dur, w)


def test_onset_detector_finds_the_first_hit() -> None:
    import numpy as np

    mel = np.zeros((200, 96), np.float32)
    mel[120:] = 2.0  # a strong onset at frame 120
    assert first_strong_onset(mel, 62.5) == pytest.approx(120 / 62.5)
    assert first_strong_onset(np.zeros((50, 96)), 62.5) is None


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="balanced"):
        get_profile("nope")
    assert set(PROFILES) == {"full", "balanced", "club_hifi_150s", "fast"}
