"""Analyses shared by fingerprint: export → import → a second agent tags a copy of the library
without running a model; tampered, foreign and malformed records are refused one by one; an
import twice adds nothing. Real scans (musicnn), real files, real SQLite."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nomarr import tagio
from nomarr.share.bundle import canonical, load_or_create_key
from nomarr.store import Store

from .conftest import encode, music_like
from .test_scan import cli, expected_tags, scan

SECONDS = (14.0, 16.0, 18.0)


@pytest.fixture(scope="module")
def agent_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Agent A: a small library scanned for real, and its exported bundle."""
    base = tmp_path_factory.mktemp("agent-a")
    lib = base / "lib"
    lib.mkdir()
    for i, sec in enumerate(SECONDS):
        encode(lib / f"t{i}.flac", music_like(sec, seed=900 + i), 44100)
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in (("NOMARR_DATA_DIR", "data"), ("NOMARR_CONFIG_DIR", "cfg")):
            mp.setenv(var, str(base / sub))
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        from nomarr.cli import main

        scan_a = ["scan", str(lib), "--db", str(base / "a.db"), "--workers", "0", "--no-write"]
        assert main(scan_a) == 0  # A's files stay untagged: the copy B scans gets its tags from B
        bundle = base / "a.jsonl.gz"
        assert main(["analyses", "export", str(bundle), "--db", str(base / "a.db")]) == 0
        yield {"lib": lib, "db": base / "a.db", "bundle": bundle, "cfg": base / "cfg"}


def read_lines(bundle: Path) -> list[dict[str, Any]]:
    with gzip.open(bundle, "rb") as f:
        return [json.loads(x) for x in f.read().splitlines()]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    return path


def resign(agent_a: dict[str, Path], body: dict[str, Any]) -> dict[str, Any]:
    """A record body signed with A's own key: passes the signature, so the content is judged."""
    key = load_or_create_key(agent_a["cfg"] / "analyses-key.pem")
    return {"body": body, "sig": key.sign(body)}


def stored(db: Path) -> dict[str, Any]:
    """Per file name: scores and embedding of every analysis (the numbers a scan stores)."""
    out = {}
    with Store(db, readonly=True) as st:
        for t in st.tracks():
            assert t.recording_id is not None
            for mid, a in st.analyses(t.recording_id).items():
                emb = st.embedding(mid, t.recording_id)
                out[(Path(t.path).name, mid)] = (a.provenance, a.scores, emb.tolist())
    return out


def test_second_agent_tags_a_copy_without_analysing(agent_a, tmp_path, capsys) -> None:
    lib_b = tmp_path / "copy"
    shutil.copytree(agent_a["lib"], lib_b)
    db_b = tmp_path / "b.db"
    rc, doc = cli(capsys, "analyses", "import", agent_a["bundle"], "--db", db_b, "--json")
    assert rc == 0, doc
    assert (doc["records"], doc["accepted"], doc["duplicates"]) == (3, 3, 0)
    assert sum(doc["refused"].values()) == 0 and doc["warnings"] == []
    # importing twice adds nothing
    rc, again = cli(capsys, "analyses", "import", agent_a["bundle"], "--db", db_b, "--json")
    assert (again["accepted"], again["duplicates"]) == (0, 3)
    with Store(db_b, readonly=True) as st:
        assert st.shared_counts() == {"records": 3, "adopted": 0, "imports": 2}
        assert st.counts()["recordings"] == 0  # nothing in the library until a file turns up
    summary = scan(capsys, lib_b, db_b)
    assert (summary["analysed"], summary["reused"], summary["adopted"]) == (0, 3, 3)
    assert summary["written"] == 3 and summary["failed"] == 0
    assert stored(db_b) == stored(agent_a["db"])
    # the files carry the nom: tags A's database says they should
    with Store(agent_a["db"], readonly=True) as st:
        for f in sorted(lib_b.iterdir()):
            got = dict(tagio.read_tags(f).nom)
            assert got == expected_tags(st, agent_a["lib"] / f.name)
    # B's own export leaves adopted analyses out (it re-signs only what it computed)
    rc, ex = cli(capsys, "analyses", "export", tmp_path / "b.gz", "--db", db_b, "--json")
    assert (ex["records"], ex["skipped_shared"]) == (0, 3)


def test_tampered_bundle_is_refused_record_by_record(agent_a, tmp_path, capsys) -> None:
    lines = read_lines(agent_a["bundle"])
    header, recs, trailer = lines[0], lines[1:-1], lines[-1]
    assert len(recs) == 3 and trailer["body"]["end"] is True
    # record 1: a score changed after signing
    bad_score = json.loads(json.dumps(recs[0]))
    a = bad_score["body"]["analyses"][0]
    label = next(iter(a["scores"]))
    a["scores"][label] = min(1.0, a["scores"][label] + 0.1)
    # record 2: an embedding value flipped (base64 of the float32 bytes changed)
    bad_emb = json.loads(json.dumps(recs[1]))
    raw = bytearray(base64.b64decode(bad_emb["body"]["analyses"][0]["embedding"]))
    raw[0] ^= 0x01
    bad_emb["body"]["analyses"][0]["embedding"] = base64.b64encode(bytes(raw)).decode()
    out = write_lines(tmp_path / "t.gz", [header, bad_score, bad_emb, recs[2], trailer])
    rc, doc = cli(capsys, "analyses", "import", out, "--db", tmp_path / "b.db", "--json")
    assert rc == 0
    assert doc["accepted"] == 1 and doc["refused"]["signature"] == 2
    assert [r["line"] for r in doc["refusals"]] == [2, 3]
    assert any("trailer" in w for w in doc["warnings"])  # the altered bodies change its hash
    # a record dropped: the trailer says so; the others still stand on their signatures
    out = write_lines(tmp_path / "cut.gz", [header, recs[0], recs[2], trailer])
    rc, doc = cli(capsys, "analyses", "import", out, "--db", tmp_path / "c.db", "--json")
    assert doc["accepted"] == 2 and any("trailer lists 3" in w for w in doc["warnings"])
    # truncated (no trailer)
    out = write_lines(tmp_path / "trunc.gz", [header, recs[0]])
    rc, doc = cli(capsys, "analyses", "import", out, "--db", tmp_path / "d.db", "--json")
    assert doc["accepted"] == 1 and any("truncated" in w for w in doc["warnings"])
    # a forged header (another key, same claims) is not a bundle
    forged = json.loads(json.dumps(header))
    forged["body"]["agent_id"] = "someone-else"
    out = write_lines(tmp_path / "forged.gz", [forged, *recs, trailer])
    rc, _ = cli(capsys, "analyses", "import", out, "--db", tmp_path / "e.db", "--json")
    assert rc == 1


def test_an_import_of_another_profile_is_not_adopted(agent_a, tmp_path, capsys) -> None:
    """Provenance covers the sampling profile: a scan with another profile analyses the files."""
    lib_b = tmp_path / "copy"
    shutil.copytree(agent_a["lib"], lib_b)
    db_b = tmp_path / "b.db"
    rc, _ = cli(capsys, "analyses", "import", agent_a["bundle"], "--db", db_b)
    assert rc == 0
    summary = scan(capsys, lib_b, db_b, "--profile", "fast", "--no-write")
    assert (summary["analysed"], summary["adopted"]) == (3, 0)


def _mutations() -> dict[str, Any]:
    """name → (function changing a record body in place, expected refusal kind, reason part)."""

    def nan_emb(b):
        v = np.frombuffer(base64.b64decode(b["analyses"][0]["embedding"]), "<f4").copy()
        v[3] = np.nan
        b["analyses"][0]["embedding"] = base64.b64encode(v.tobytes()).decode()

    def short_emb(b):
        v = np.frombuffer(base64.b64decode(b["analyses"][0]["embedding"]), "<f4")[:100]
        b["analyses"][0]["embedding"] = base64.b64encode(v.tobytes()).decode()

    def score_range(b):
        s = b["analyses"][0]["scores"]
        s[next(iter(s))] = 1.5

    def label_gone(b):
        s = b["analyses"][0]["scores"]
        s.pop(next(iter(s)))

    def provenance(b):
        b["analyses"][0]["provenance"] = "0123456789ab"

    def model(b):
        b["analyses"][0]["model_id"] = "not-a-model-9"

    def fp_constant(b):
        n = len(base64.b64decode(b["fingerprint"]["values"])) // 4
        b["fingerprint"]["values"] = base64.b64encode(np.zeros(n, "<u4").tobytes()).decode()

    def fp_length(b):
        b["fingerprint"]["duration"] = 110.0  # the values hold ~15 s of audio
        b["duration"] = 200.0

    def duration(b):
        b["duration"] = -3

    def extra_field(b):
        b["evil"] = True

    return {
        "nan embedding": (nan_emb, "malformed", "not finite"),
        "short embedding": (short_emb, "malformed", "100 values"),
        "score out of range": (score_range, "malformed", "outside"),
        "label missing": (label_gone, "malformed", "labels differ"),
        "foreign provenance": (provenance, "foreign", "provenance"),
        "unknown model": (model, "foreign", "unknown here"),
        "constant fingerprint": (fp_constant, "malformed", "constant"),
        "fingerprint length": (fp_length, "malformed", "items"),
        "negative duration": (duration, "malformed", "duration"),
        "unknown field": (extra_field, "malformed", "unknown fields"),
    }


def test_signed_but_bad_records_are_refused_with_reasons(agent_a, tmp_path, capsys) -> None:
    lines = read_lines(agent_a["bundle"])
    header, good, trailer = lines[0], lines[1], lines[-1]
    muts = _mutations()
    out_lines = [header]
    for fn, _, _ in muts.values():
        body = json.loads(json.dumps(good["body"]))
        fn(body)
        out_lines.append(resign(agent_a, body))
    out_lines.append(good)
    out = write_lines(tmp_path / "bad.gz", [*out_lines, trailer])
    rc, doc = cli(capsys, "analyses", "import", out, "--db", tmp_path / "b.db", "--json")
    assert rc == 0
    assert doc["accepted"] == 1, json.dumps(doc["refusals"], indent=1)
    assert doc["refused"]["foreign"] == 2 and doc["refused"]["malformed"] == len(muts) - 2
    for r, (name, (_, kind, why)) in zip(doc["refusals"], muts.items(), strict=True):
        assert r["kind"] == kind and why in r["reason"], (name, r)


def test_trust_pins_the_signer_and_garbage_is_a_clear_error(agent_a, tmp_path, capsys) -> None:
    rc, _ = cli(
        capsys, "analyses", "import", agent_a["bundle"], "--db", tmp_path / "b.db", "--trust", "0"
    )
    assert rc == 1
    key = load_or_create_key(agent_a["cfg"] / "analyses-key.pem")
    rc, doc = cli(
        capsys, "analyses", "import", agent_a["bundle"], "--db", tmp_path / "b.db",
        "--trust", key.key_id, "--json",
    )  # fmt: skip
    assert rc == 0 and doc["accepted"] == 3 and doc["signer"] == key.key_id
    (tmp_path / "junk.gz").write_bytes(b"not gzip at all")
    rc, _ = cli(capsys, "analyses", "import", tmp_path / "junk.gz", "--db", tmp_path / "b.db")
    assert rc == 1
    v2 = read_lines(agent_a["bundle"])
    v2[0]["body"]["version"] = 2
    rc, _ = cli(
        capsys, "analyses", "import", write_lines(tmp_path / "v2.gz", v2), "--db", tmp_path / "c.db"
    )
    assert rc == 1


def test_canonical_form_is_stable() -> None:
    assert canonical({"b": 1.5, "a": [1, "é"]}) == b'{"a":[1,"\\u00e9"],"b":1.5}'
