"""Analyses shared by fingerprint: export → import → a second agent tags a copy of the library
without running a model; tampered, foreign and malformed records are refused one by one; an
import twice adds nothing. Real scans (musicnn), real files, real SQLite."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mutagen
import numpy as np
import pytest
from nomarr import tagio
from nomarr.fingerprint import Fingerprint
from nomarr.library import recording_reusable
from nomarr.share.bundle import canonical, digest, load_or_create_key
from nomarr.share.exchange import adopt
from nomarr.store import DSP_ID, Store

from .conftest import encode, music_like
from .test_scan import cli, expected_tags, scan

SECONDS = (14.0, 16.0, 18.0)


@pytest.fixture(scope="module")
def agent_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Agent A: a small library scanned for real (tags written), and its exported bundle.

    ``lib`` stays untagged (the copies other agents scan get their tags from those agents);
    ``tagged`` is the same files as A tagged them."""
    base = tmp_path_factory.mktemp("agent-a")
    lib = base / "lib"
    lib.mkdir()
    for i, sec in enumerate(SECONDS):
        encode(lib / f"t{i}.flac", music_like(sec, seed=900 + i), 44100)
    tagged = base / "tagged"
    shutil.copytree(lib, tagged)
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in (("NOMARR_DATA_DIR", "data"), ("NOMARR_CONFIG_DIR", "cfg")):
            mp.setenv(var, str(base / sub))
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        from nomarr.cli import main

        assert main(["scan", str(tagged), "--db", str(base / "a.db"), "--workers", "0"]) == 0
        bundle = base / "a.jsonl.gz"
        assert main(["analyses", "export", str(bundle), "--db", str(base / "a.db")]) == 0
        yield {
            "lib": lib,
            "tagged": tagged,
            "db": base / "a.db",
            "bundle": bundle,
            "cfg": base / "cfg",
        }


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
    """Per file name: scores and embedding of every analysis, and the recording's descriptors
    (document and timeline bytes): the numbers a scan stores."""
    out: dict[Any, Any] = {}
    with Store(db, readonly=True) as st:
        for t in st.tracks():
            assert t.recording_id is not None
            for mid, a in st.analyses(t.recording_id).items():
                emb = st.embedding(mid, t.recording_id)
                out[(Path(t.path).name, mid)] = (a.provenance, a.scores, emb.tolist())
            out[(Path(t.path).name, DSP_ID)] = (
                st.descriptors(t.recording_id),
                st.timeline(t.recording_id),
            )
    return out


def file_tags(path: Path) -> list[tuple[str, str]]:
    """Every tag in a FLAC file (Vorbis comments), as mutagen reads them."""
    return sorted((k.lower(), v) for k, v in mutagen.File(path).tags)


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
    assert doc["descriptors_accepted"] == 3 and doc["without_descriptors"] == 0
    with Store(db_b, readonly=True) as st:
        assert st.shared_counts() == {
            "records": 3, "adopted": 0, "imports": 2, "with_descriptors": 3
        }  # fmt: skip
        assert st.counts()["recordings"] == 0  # nothing in the library until a file turns up
    summary = scan(capsys, lib_b, db_b)
    assert (summary["analysed"], summary["reused"], summary["adopted"]) == (0, 3, 3)
    assert summary["written"] == 3 and summary["failed"] == 0
    a_stored = stored(agent_a["db"])
    assert all(a_stored[(f"t{i}.flac", DSP_ID)][1] for i in range(3))  # timelines travelled
    assert stored(db_b) == a_stored  # analyses, embeddings, descriptors and timelines
    # the files carry the nom: tags A's database says they should, and every tag (nom:dsp_*, BPM,
    # key, ReplayGain included) is what A wrote into its own copy
    with Store(agent_a["db"], readonly=True) as st:
        for f in sorted(lib_b.iterdir()):
            got = dict(tagio.read_tags(f).nom)
            assert got == expected_tags(st, agent_a["tagged"] / f.name)
            assert any(k.startswith("nom:dsp_") for k in got)
            tags = file_tags(f)
            assert tags == file_tags(agent_a["tagged"] / f.name)
            assert {"bpm", "initialkey", "replaygain_track_gain"} <= {k for k, _ in tags}
    # the adopted recordings are current: the next scan analyses nothing and rewrites nothing
    again = scan(capsys, lib_b, db_b)
    assert (again["analysed"], again["reused"], again["skipped"], again["written"]) == (0, 0, 3, 0)
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
    # a line nested too deeply for the JSON parser is one malformed record, not a traceback
    deep = b'{"body": {"descriptors": ' + b"[" * 100_000 + b"]" * 100_000 + b'}, "sig": ""}'
    out = tmp_path / "deep.gz"
    with gzip.open(out, "wb") as f:
        f.write(b"\n".join([json.dumps(header).encode(), deep, json.dumps(recs[0]).encode()]))
    rc, doc = cli(capsys, "analyses", "import", out, "--db", tmp_path / "f.db", "--json")
    assert rc == 0 and doc["accepted"] == 1 and doc["refused"]["malformed"] == 1
    assert doc["refusals"][0]["reason"] == "JSON nested too deeply"
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
    v3 = read_lines(agent_a["bundle"])  # a version this nomarr does not know, validly signed
    v3[0] = resign(agent_a, {**v3[0]["body"], "version": 3})
    rc, out = cli(
        capsys, "analyses", "import", write_lines(tmp_path / "v3.gz", v3), "--db", tmp_path / "c.db"
    )
    assert rc == 1


def test_canonical_form_is_stable() -> None:
    assert canonical({"b": 1.5, "a": [1, "é"]}) == b'{"a":[1,"\\u00e9"],"b":1.5}'


# -- descriptors -------------------------------------------------------------------------------


def _timeline_raw(b: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """A record's timeline as (header, value bytes)."""
    raw = zlib.decompress(base64.b64decode(b["descriptors"]["timeline"]))
    n = int.from_bytes(raw[:4], "little")
    return json.loads(raw[4 : 4 + n]), raw[4 + n :]


def _put_timeline(b: dict[str, Any], head: dict[str, Any], values: bytes) -> None:
    hb = json.dumps(head).encode()
    blob = zlib.compress(len(hb).to_bytes(4, "little") + hb + values)
    b["descriptors"]["timeline"] = base64.b64encode(blob).decode()


def _descriptor_mutations() -> dict[str, Any]:
    """name → (function changing a record body's descriptors in place, reason part)."""

    def doc(b: dict[str, Any]) -> dict[str, Any]:
        return b["descriptors"]["doc"]

    def set_(path: str, value: Any) -> Any:
        def f(b: dict[str, Any]) -> None:
            *parents, leaf = path.split(".")
            d = doc(b)
            for p in parents:
                d = d[p]
            d[leaf] = value

        return f

    def key_and_camelot(b: dict[str, Any]) -> None:
        doc(b)["key"]["key"] = "Am" if doc(b)["key"]["key"] != "Am" else "Em"

    def many_regions(b: dict[str, Any]) -> None:
        doc(b)["regions"] = [{"start": 0.0, "end": 1.0}] * 5000

    def region_key(b: dict[str, Any]) -> None:
        doc(b)["regions"] = [{"start": 0.0, "end": 5.0, "key": "Q#", "camelot": None}]

    def bomb(b: dict[str, Any]) -> None:
        blob = zlib.compress(b"\0" * (40 << 20), 9)  # 40 kB that expand to 40 MB
        b["descriptors"]["timeline"] = base64.b64encode(blob).decode()

    def short_values(b: dict[str, Any]) -> None:
        head, values = _timeline_raw(b)
        _put_timeline(b, head, values[:-1])

    def labels(b: dict[str, Any]) -> None:
        head, values = _timeline_raw(b)
        head["models"][0][1][0] = "not-a-label"
        _put_timeline(b, head, values)

    def doc_provenance(b: dict[str, Any]) -> None:
        doc(b)["provenance"] = "0123456789ab"

    def provenance_form(b: dict[str, Any]) -> None:
        b["descriptors"]["provenance"] = "../../etc; rm"
        doc(b)["provenance"] = "../../etc; rm"

    def extra(b: dict[str, Any]) -> None:
        doc(b)["evil"] = 1

    return {
        "bpm out of range": (set_("tempo.bpm", 999.0), "tempo bpm 999"),
        "bpm not finite": (set_("tempo.bpm", float("nan")), "not a finite number"),
        "key notation": (set_("key.key", "H#m"), "ID3v2.4"),
        "key and camelot disagree": (key_and_camelot, "Camelot"),
        "LUFS out of range": (set_("loudness.integrated_lufs", 50.0), "integrated LUFS"),
        "ReplayGain not that of the LUFS": (
            set_("loudness.replaygain_track_gain_db", 40.0),
            "ReplayGain gain",
        ),
        "energy above 1": (set_("energy.energy", 1.5), "energy 1.5"),
        "danceability a string": (set_("energy.danceability", "high"), "danceability"),
        "regions unbounded": (many_regions, "regions must be a list of at most"),
        "region key": (region_key, "region 0 key"),
        "timeline not base64": (lambda b: b["descriptors"].update(timeline="!!!"), "base64"),
        "timeline zlib bomb": (bomb, "expands past"),
        "timeline bytes missing": (short_values, "value bytes"),
        "timeline labels": (labels, "not the model's"),
        "document provenance": (doc_provenance, "document's provenance"),
        "provenance form": (provenance_form, "hex"),
        "unknown field": (extra, "exactly"),
    }


def test_tampered_descriptors_are_refused_record_by_record(agent_a, tmp_path, capsys) -> None:
    """Signed records whose descriptors are wrong are refused one by one with the reason; an
    altered one that was not re-signed fails its signature; descriptors of another analyzer build
    are dropped (the record kept, counted), and such a record is not adopted by a scan that plans
    descriptors: its file is analysed."""
    lines = read_lines(agent_a["bundle"])
    header, recs, trailer = lines[0], lines[1:-1], lines[-1]
    muts = _descriptor_mutations()
    out_lines = [header]
    unsigned = json.loads(json.dumps(recs[0]))
    unsigned["body"]["descriptors"]["doc"]["tempo"]["bpm"] = 174.0
    out_lines.append(unsigned)
    for fn, _ in muts.values():
        body = json.loads(json.dumps(recs[0]["body"]))
        fn(body)
        out_lines.append(resign(agent_a, body))
    other_build = json.loads(json.dumps(recs[1]["body"]))
    other_build["descriptors"]["provenance"] = "0123456789ab"
    other_build["descriptors"]["doc"]["provenance"] = "0123456789ab"
    out_lines += [resign(agent_a, other_build), recs[0]]
    bundle = write_lines(tmp_path / "bad.gz", [*out_lines, trailer])
    db = tmp_path / "b.db"
    rc, doc = cli(capsys, "analyses", "import", bundle, "--db", db, "--json")
    assert rc == 0
    assert doc["accepted"] == 2, json.dumps(doc["refusals"], indent=1)
    assert doc["refused"] == {"signature": 1, "malformed": len(muts), "foreign": 0}
    assert (doc["descriptors_accepted"], doc["descriptors_foreign"]) == (1, 1)
    assert any("another analyzer build" in w for w in doc["warnings"])
    assert doc["refusals"][0]["kind"] == "signature"
    for r, (name, (_, why)) in zip(doc["refusals"][1:], muts.items(), strict=True):
        assert r["kind"] == "malformed" and why in r["reason"], (name, r)
    with Store(db, readonly=True) as st:
        assert st.shared_counts()["with_descriptors"] == 1
    # t0 adopts the intact record; t1's record has no descriptors of this agent's; t2 was not sent
    lib_b = tmp_path / "copy"
    shutil.copytree(agent_a["lib"], lib_b)
    summary = scan(capsys, lib_b, db, "--no-write")
    assert (summary["analysed"], summary["adopted"]) == (2, 1)


def _as_version_1(agent_a: dict[str, Path], lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A's bundle as a version 1 exporter (before descriptors) wrote it: version 1 header,
    records with ``"descriptors": {}``, the trailer over those records; all signed by A."""
    header, recs = lines[0], lines[1:-1]
    bodies = [{**r["body"], "descriptors": {}} for r in recs]
    h = hashlib.sha256(b"".join(bytes.fromhex(digest(b)) for b in bodies)).hexdigest()
    trailer = {"end": True, "records": len(bodies), "records_sha256": h}
    return [
        resign(agent_a, {**header["body"], "version": 1}),
        *(resign(agent_a, b) for b in bodies),
        resign(agent_a, trailer),
    ]


def test_version_1_bundle_imports_and_adopts_only_without_planned_descriptors(
    agent_a, tmp_path, capsys
) -> None:
    """Documented rule (docs/analyses.md): a record adopts only when every planned provenance,
    the descriptors' included, is present. A version 1 record (no descriptors) is imported but a
    scan that plans descriptors analyses its file; where descriptors are not planned it adopts."""
    v1 = _as_version_1(agent_a, read_lines(agent_a["bundle"]))
    bundle = write_lines(tmp_path / "v1.gz", v1)
    db = tmp_path / "b.db"
    rc, doc = cli(capsys, "analyses", "import", bundle, "--db", db, "--json")
    assert rc == 0 and doc["warnings"] != [], doc
    assert (doc["accepted"], doc["without_descriptors"], doc["descriptors_accepted"]) == (3, 3, 0)
    assert "3 accepted records carry no descriptors" in doc["warnings"][0]
    rc, again = cli(capsys, "analyses", "import", bundle, "--db", db, "--json")
    assert (again["accepted"], again["duplicates"]) == (0, 3)  # importing twice adds nothing
    # the rule itself, on the real pool and fingerprint: the planned provenances with the
    # descriptors' entry find nothing to adopt, the same without it adopt the record
    body = v1[1]["body"]
    fp = Fingerprint(
        body["fingerprint"]["duration"],
        np.frombuffer(base64.b64decode(body["fingerprint"]["values"]), "<u4").copy(),
    )
    models = {a["model_id"]: a["provenance"] for a in body["analyses"]}
    dsp = read_lines(agent_a["bundle"])[1]["body"]["descriptors"]["provenance"]
    with Store(db) as st:
        assert adopt(st, fp, {**models, DSP_ID: dsp}) is None
        rec = adopt(st, fp, models)
        assert rec is not None and set(st.analyses(rec)) == set(models)
        assert st.descriptors(rec) is None
        assert not recording_reusable(st, rec, {**models, DSP_ID: dsp})
    # a scan (which plans descriptors) analyses the files rather than adopt their records
    lib_b = tmp_path / "copy"
    shutil.copytree(agent_a["lib"], lib_b)
    rc, _ = cli(capsys, "analyses", "import", bundle, "--db", tmp_path / "e.db")
    assert rc == 0
    summary = scan(capsys, lib_b, tmp_path / "e.db", "--no-write")
    assert (summary["analysed"], summary["adopted"]) == (3, 0)
    # a version 1 record may not carry descriptors (the format had none)
    v1_with = [v1[0], resign(agent_a, read_lines(agent_a["bundle"])[1]["body"]), v1[-1]]
    rc, doc = cli(
        capsys, "analyses", "import", write_lines(tmp_path / "v1d.gz", v1_with), "--db",
        tmp_path / "f.db", "--json",
    )  # fmt: skip
    assert doc["refused"]["malformed"] == 1 and "version 1" in doc["refusals"][0]["reason"]


def test_a_fingerprint_too_short_to_match_is_not_exported(tmp_path, capsys) -> None:
    """A clip of a few seconds has too few fingerprint items for any importer to accept (or any
    copy to be matched by): the exporter leaves it out rather than send a record that is refused."""
    lib = tmp_path / "lib"
    lib.mkdir()
    encode(lib / "clip.flac", music_like(3.0, seed=77), 44100)
    db = tmp_path / "a.db"
    assert scan(capsys, lib, db, "--no-write")["analysed"] == 1
    rc, ex = cli(capsys, "analyses", "export", tmp_path / "a.gz", "--db", db, "--json")
    assert rc == 0 and (ex["records"], ex["skipped_no_fingerprint"]) == (0, 1)
