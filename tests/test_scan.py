"""``nomarr scan`` end to end: real files, real models, real tag writes, the real database.

Most scans run in-process (``--workers 0``) to stay fast; the judged scenario runs real worker
processes (``--workers 2``). Synthetic libraries (``music_like``, 20 s) cover the incremental and
failure paths; the corpus covers the judged multi-format scenario.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import av
import nomarr.library as libmod
import nomarr.scan.scanner as scannermod
import nomarr.walk as walkmod
import numpy as np
import pytest
import taglib
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TXXX
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from nomarr import tagio
from nomarr.cli import main
from nomarr.library import desired_tags
from nomarr.store import Analysis, Store
from nomarr.walk import walk
from nomarr_client.tags import parse_key

from .conftest import encode, music_like

VARIANT_EXTS = ("mp3", "flac", "ogg", "opus", "m4a", "wav")
PREFIX = "nom:onnx_musicnn_msd-1_msd50_1_"


# -- helpers ------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, Any]:
    """Run ``nomarr ARGS`` in-process; returns (exit status, parsed JSON or raw stdout)."""
    capsys.readouterr()
    argv = [os.fspath(a) if isinstance(a, Path) else str(a) for a in args]
    rc = main(argv)
    out = capsys.readouterr().out
    if "--json" in argv and out.strip():
        return rc, json.loads(out)
    return rc, out


def scan(
    capsys: pytest.CaptureFixture[str],
    roots: Path | list[Path],
    db: Path,
    *extra: Any,
    workers: int = 0,
) -> dict[str, Any]:
    paths = roots if isinstance(roots, list) else [roots]
    rc, doc = cli(capsys, "scan", *paths, "--db", db, "--json", "--workers", workers, *extra)
    assert rc == 0
    return doc


def sha256(p: Path | str) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def state(files: list[Path]) -> dict[str, tuple[str, int]]:
    return {str(p): (sha256(p), os.stat(p).st_mtime_ns) for p in files}


def audio_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))


def expected_tags(store: Store, path: Path | str) -> dict[str, str]:
    t = store.track_by_path(path)
    assert t is not None and t.status == "ok" and t.recording_id is not None, (path, t)
    return desired_tags(store.analyses(t.recording_id).values(), store.tier_thresholds(), False)[0]


def similar(
    capsys: pytest.CaptureFixture[str], ref: Any, db: Path, *extra: Any
) -> list[dict[str, Any]]:
    rc, doc = cli(capsys, "similar", ref, "--db", db, "--json", *extra)
    assert rc == 0
    return doc["tracks"]


def decode(path: Path) -> tuple[np.ndarray, int]:
    """A whole file as [2, n] float32 at its own rate."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        sr = s.codec_context.sample_rate
        rs = av.AudioResampler(format="fltp", layout="stereo", rate=sr)
        chunks = [f.to_ndarray() for fr in c.decode(s) for f in rs.resample(fr)]
        chunks += [f.to_ndarray() for f in rs.resample(None)]
    return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32), sr


def ffmpeg_md5(p: Path) -> str:
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(p), "-map", "0:a", "-c", "copy", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return r.stdout.strip()


def check_nom_keys(nom: dict[str, str]) -> None:
    """One model group: every label has a score key, exactly one tier key with the same value, and
    the group has its provenance key."""
    parsed = [parse_key(k) for k in nom]
    groups = {p.group for p in parsed}
    assert groups == {"onnx_musicnn_msd-1_msd50_1"}
    scores = {p.label: nom[p.key] for p in parsed if p.kind == "score"}
    tiers = [(p.label, p.tier, nom[p.key]) for p in parsed if p.kind == "tier"]
    assert len(scores) == 50 and len(tiers) == 50
    assert {lab for lab, _, _ in tiers} == set(scores)
    for lab, _tier, v in tiers:
        assert v == scores[lab] and len(v) == 6 and 0.0 <= float(v) <= 1.0
    assert len(nom[PREFIX + "provenance"]) == 12


# -- libraries ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def variants_src(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sh01..sh04 in six formats: 24 files, 4 recordings (built once per session)."""
    import soxr

    out = tmp_path_factory.mktemp("variants")

    def build(name: str) -> None:
        src = corpus / f"{name}.ogg"
        sig, sr = decode(src)
        for ext in VARIANT_EXTS:
            dst = out / f"{name}.{ext}"
            if ext == "ogg":
                shutil.copyfile(src, dst)  # the corpus file itself is the Ogg Vorbis variant
            elif ext == "opus":
                s48 = sig if sr == 48000 else soxr.resample(sig.T, sr, 48000).T
                encode(dst, np.ascontiguousarray(s48, dtype=np.float32), 48000)
            else:
                encode(dst, sig, sr)

    threads = [threading.Thread(target=build, args=(f"sh{i:02d}",)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(out.iterdir())) == 24
    return out


@pytest.fixture(scope="session")
def synth_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five synthetic 20 s recordings as FLAC, plus r0 again as MP3: 6 files."""
    out = tmp_path_factory.mktemp("synth")
    for i in range(5):
        encode(out / f"r{i}.flac", music_like(20.0, 44100, 2, seed=i + 1), 44100)
    encode(out / "r0.mp3", music_like(20.0, 44100, 2, seed=1), 44100)
    return out


@pytest.fixture
def lib(tmp_path: Path, synth_src: Path) -> Path:
    d = tmp_path / "lib"
    shutil.copytree(synth_src, d)
    return d


# -- 1. the judged scenario ---------------------------------------------------------------------


@pytest.mark.corpus
def test_judged_multiformat_library(variants_src: Path, tmp_path: Path, capsys) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(variants_src, lib)
    db = tmp_path / "lib.db"
    files = audio_files(lib)
    assert len(files) == 24
    md5_before = {p: tagio.nom_audio_md5(p) for p in files}
    ff_before = {p: ffmpeg_md5(p) for p in files} if shutil.which("ffmpeg") else None

    doc = scan(capsys, lib, db, workers=2)
    assert (doc["files"], doc["analysed"], doc["reused"], doc["failed"]) == (24, 4, 20, 0), doc
    assert doc["written"] == 24 and doc["failures"] == [] and doc["walk_errors"] == []

    with Store(db, readonly=True) as store:
        assert store.counts()["recordings"] == 4 and store.counts()["analyses"] == 4
        for p in files:
            ft = tagio.read_tags(p)
            check_nom_keys(ft.nom)
            assert ft.nom == expected_tags(store, p)
            # TagLib (Navidrome's reader) sees the same keys, upper-cased
            with taglib.File(str(p)) as f:
                seen = {k.lower(): v[0] for k, v in f.tags.items() if k.lower().startswith("nom:")}
            assert seen == ft.nom, p
            # the audio is untouched
            assert tagio.nom_audio_md5(p) == md5_before[p], p
            if ff_before is not None:
                assert ffmpeg_md5(p) == ff_before[p], p

    # mutagen directly, one file per format
    prov_key = PREFIX + "provenance"
    happy = PREFIX + "happy"
    want = tagio.read_tags(lib / "sh01.flac").nom
    id3 = {fr.desc: fr.text[0] for fr in ID3(lib / "sh01.mp3").getall("TXXX")}
    assert id3[prov_key] == want[prov_key] and id3[happy] == want[happy]
    wav = {fr.desc: fr.text[0] for fr in WAVE(lib / "sh01.wav").tags.getall("TXXX")}
    assert wav[prov_key] == want[prov_key]
    for cls, ext in ((FLAC, "flac"), (OggVorbis, "ogg"), (OggOpus, "opus")):
        vc = cls(lib / f"sh01.{ext}")
        assert vc[prov_key] == [want[prov_key]] and vc[happy] == [want[happy]]
    mp4 = MP4(lib / "sh01.m4a")
    assert bytes(mp4["----:com.apple.iTunes:" + prov_key][0]).decode() == want[prov_key]
    assert bytes(mp4["----:com.apple.iTunes:" + happy][0]).decode() == want[happy]

    # an unchanged rescan: nothing analysed or written, a small fraction of the time
    before = state(files)
    again = scan(capsys, lib, db, workers=2)
    with capsys.disabled():
        print(f"\nfirst scan {doc['elapsed_s']:.2f} s, rescan {again['elapsed_s']:.3f} s")
    assert (again["analysed"], again["reused"], again["written"], again["skipped"]) == (0, 0, 0, 24)
    assert again["elapsed_s"] < 0.05 * doc["elapsed_s"] and state(files) == before

    # similar: the five other files of the recording first, marked; --distinct drops them
    for p in files:
        stem = p.stem
        siblings = {str(lib / f"{stem}.{e}") for e in VARIANT_EXTS} - {str(p)}
        hits = similar(capsys, p, db, "-n", 10)
        assert {h["path"] for h in hits[:5]} == siblings, p
        assert all(h["same_recording"] for h in hits[:5])
        assert not any(h["same_recording"] for h in hits[5:]) and len(hits) == 10
        assert all(h["path"] != str(p) for h in hits)
        distinct = similar(capsys, p, db, "-n", 10, "--distinct")
        assert len(distinct) == 3 and not {h["path"] for h in distinct} & siblings
        assert len({Path(h["path"]).stem for h in distinct}) == 3


# -- 2. incremental rescans -----------------------------------------------------------------------


def test_rescan_moves_copies_and_deletes(lib: Path, tmp_path: Path, capsys) -> None:
    db = tmp_path / "lib.db"
    first = scan(capsys, lib, db)
    assert (first["analysed"], first["reused"], first["written"], first["failed"]) == (5, 1, 6, 0)

    files = audio_files(lib)
    before = state(files)
    again = scan(capsys, lib, db)
    assert (again["analysed"], again["reused"], again["written"], again["skipped"]) == (0, 0, 0, 6)
    assert state(files) == before  # nothing written
    assert first["analysed"] > 0 and again["elapsed_s"] < 0.05 * first["elapsed_s"], (again, first)

    # move + rename into a new subfolder: identity by inode, no analysis, no fingerprint
    (lib / "moved" / "deeper").mkdir(parents=True)
    moved = {}
    for p in files:
        dst = lib / "moved" / "deeper" / f"renamed-{p.stem}{p.suffix}"
        os.rename(p, dst)
        moved[p] = dst
    s = scan(capsys, lib, db)
    assert (s["moved"], s["analysed"], s["reused"], s["missing"], s["failed"]) == (6, 0, 0, 0, 0)
    assert state(list(moved.values())) == {str(moved[Path(k)]): v for k, v in before.items()}
    new_r1 = moved[lib / "r1.flac"]
    hits = similar(capsys, new_r1, db, "-n", 10)
    assert {h["path"] for h in hits} == {str(v) for v in moved.values()} - {str(new_r1)}
    rc, _ = cli(capsys, "similar", lib / "r1.flac", "--db", db)
    assert rc == 1  # the old path is no longer in the library

    # a copy with a changed TITLE: same recording by chromaprint, reused
    copy = lib / "copy.flac"
    shutil.copy2(moved[lib / "r2.flac"], copy)
    f = FLAC(copy)
    f["title"] = "A different title"
    f.save()
    s = scan(capsys, lib, db)
    assert (s["reused"], s["analysed"], s["skipped"]) == (1, 0, 6), s
    with Store(db, readonly=True) as store:
        t = store.track_by_path(copy)
        assert t is not None and t.title == "A different title"
        assert t.recording_id == store.track_by_path(moved[lib / "r2.flac"]).recording_id
        assert tagio.read_tags(copy).nom == expected_tags(store, copy)

    # a deleted file leaves every answer
    gone = moved[lib / "r3.flac"]
    os.remove(gone)
    s = scan(capsys, lib, db)
    assert (s["missing"], s["analysed"]) == (1, 0)
    hits = similar(capsys, copy, db, "-n", 20)
    assert str(gone) not in {h["path"] for h in hits} and len(hits) == 5
    with Store(db, readonly=True) as store:
        assert store.track_by_path(gone).status == "missing"


def test_single_file_root_is_incremental(lib: Path, tmp_path: Path, capsys) -> None:
    db = tmp_path / "lib.db"
    one = lib / "r2.flac"
    s = scan(capsys, one, db)
    assert (s["files"], s["analysed"], s["written"]) == (1, 1, 1)
    s = scan(capsys, one, db)  # a file given as the root is known, not re-identified
    assert (s["files"], s["skipped"], s["reused"], s["analysed"]) == (1, 1, 0, 0)
    s = scan(capsys, lib, db)  # and the library around it reuses what that scan stored
    assert (s["analysed"], s["reused"], s["skipped"]) == (4, 1, 1)


def test_stray_temp_files_removed(lib: Path, tmp_path: Path, capsys) -> None:
    """A tag write killed before its rename leaves ``.NAME.nomarr-tmp``: the walk skips it and a
    writing scan removes it; ``--no-write`` touches nothing."""
    stray = lib / ".r1.flac.nomarr-tmp"
    shutil.copy(lib / "r1.flac", stray)
    db = tmp_path / "lib.db"
    s = scan(capsys, lib, db, "--no-write")
    assert s["files"] == 6 and stray.exists()
    s = scan(capsys, lib, db)
    assert s["files"] == 6 and s["written"] == 6 and not stray.exists()
    shutil.copy(lib / "r1.flac", stray)
    s = scan(capsys, lib, db)
    assert s["skipped"] == 6 and not stray.exists()


# -- 3. --no-write ------------------------------------------------------------------------------


def test_no_write_leaves_files_byte_identical(lib: Path, tmp_path: Path, capsys) -> None:
    db = tmp_path / "lib.db"
    files = audio_files(lib)
    before = {p: sha256(p) for p in files}
    s = scan(capsys, lib, db, "--no-write")
    assert (s["analysed"], s["reused"], s["written"], s["failed"]) == (5, 1, 0, 0)
    assert {p: sha256(p) for p in files} == before
    assert all(tagio.read_tags(p).nom == {} for p in files)
    hits = similar(capsys, lib / "r1.flac", db, "-n", 3)
    assert len(hits) == 3
    # and a later scan with writing on only writes tags, analysing nothing
    s = scan(capsys, lib, db)
    assert (s["analysed"], s["written"]) == (0, 6)


# -- 4. stale keys --------------------------------------------------------------------------------


def test_stale_nom_keys_removed_custom_tags_kept(lib: Path, tmp_path: Path, capsys) -> None:
    stale = "nom:onnx_old_1_old_1_happy"
    f = FLAC(lib / "r1.flac")
    f[stale] = "0.9000"
    f["MYCUSTOM"] = "keep me"
    f.save()
    mp3 = MP3(lib / "r0.mp3")
    if mp3.tags is None:
        mp3.add_tags()
    mp3.tags.add(TXXX(encoding=3, desc=stale, text=["0.9000"]))
    mp3.tags.add(TXXX(encoding=3, desc="MYCUSTOM", text=["keep me too"]))
    mp3.save()
    assert stale in tagio.read_tags(lib / "r1.flac").nom

    s = scan(capsys, lib, tmp_path / "lib.db")
    assert s["failed"] == 0 and s["written"] == 6
    for p in (lib / "r1.flac", lib / "r0.mp3"):
        nom = tagio.read_tags(p).nom
        assert stale not in nom and PREFIX + "provenance" in nom
    assert FLAC(lib / "r1.flac")["MYCUSTOM"] == ["keep me"]
    assert {fr.desc: fr.text[0] for fr in ID3(lib / "r0.mp3").getall("TXXX")}[
        "MYCUSTOM"
    ] == "keep me too"


# -- 5. read-only files -------------------------------------------------------------------------


def test_read_only_file_reported_and_analysis_kept(lib: Path, tmp_path: Path, capsys) -> None:
    ro = lib / "r2.flac"
    os.chmod(ro, 0o444)  # tagio treats a file without write bits as read-only, even for root
    before = sha256(ro)
    db = tmp_path / "lib.db"
    s = scan(capsys, lib, db)
    assert s["read_only"] == 1 and s["failed"] == 0 and s["written"] == 5
    reasons = [f["reason"] for f in s["failures"] if f["path"] == str(ro)]
    assert len(reasons) == 1 and reasons[0].startswith("read-only")
    assert sha256(ro) == before
    with Store(db, readonly=True) as store:
        t = store.track_by_path(ro)
        assert t.status == "ok" and store.analyses(t.recording_id)
    assert len(similar(capsys, ro, db, "-n", 2)) == 2


def test_read_only_reported_when_writer_refuses(
    lib: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The same path when the refusal comes from the file system (a read-only mount)."""
    target = str(lib / "r3.flac")
    real = tagio.write_tags

    def refusing(path: Any, *a: Any, **kw: Any) -> tagio.WriteResult:
        if os.fspath(path) == target:
            raise tagio.TagError(path, "read-only", "file system is mounted read-only")
        return real(path, *a, **kw)

    monkeypatch.setattr(tagio, "write_tags", refusing)
    db = tmp_path / "lib.db"
    rc, s = cli(capsys, "scan", lib, "--db", db, "--json", "--workers", 0)
    assert rc == 0 and s["read_only"] == 1 and s["failed"] == 0
    assert [f["reason"][:9] for f in s["failures"] if f["path"] == target] == ["read-only"]
    with Store(db, readonly=True) as store:
        assert store.analyses(store.track_by_path(target).recording_id)


# -- 6. bad input ---------------------------------------------------------------------------------


def test_bad_files_fail_alone_and_are_not_retried(lib: Path, tmp_path: Path, capsys) -> None:
    m4a = encode(tmp_path / "whole.m4a", music_like(10.0, 44100, 2, seed=9), 44100)
    (lib / "truncated.m4a").write_bytes(m4a.read_bytes()[: m4a.stat().st_size // 2])
    (lib / "notes.flac").write_text("this is not audio\n" * 50)
    (lib / "empty.mp3").write_bytes(b"")
    bad = {str(lib / n) for n in ("truncated.m4a", "notes.flac", "empty.mp3")}
    db = tmp_path / "lib.db"

    s = scan(capsys, lib, db)
    assert (s["failed"], s["analysed"], s["reused"], s["written"]) == (3, 5, 1, 6), s
    assert {f["path"] for f in s["failures"]} == bad
    assert all(f["reason"] for f in s["failures"])

    s = scan(capsys, lib, db)
    assert (s["failed"], s["failed_unchanged"], s["analysed"], s["skipped"]) == (0, 3, 0, 6)
    assert {f["path"] for f in s["failures"]} == bad

    s = scan(capsys, lib, db, "--retry-failed")
    assert (s["failed"], s["failed_unchanged"], s["analysed"]) == (3, 0, 0)


def test_file_vanishing_mid_scan(lib: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    victim = lib / "r4.flac"
    real_walk = walkmod.walk

    def walk_then_delete(*a: Any, **kw: Any) -> walkmod.WalkResult:
        res = real_walk(*a, **kw)
        victim.unlink()
        return res

    monkeypatch.setattr(scannermod, "walk", walk_then_delete)
    db = tmp_path / "lib.db"
    s = scan(capsys, lib, db)
    assert s["files"] == 6 and s["failed"] == 1 and s["analysed"] == 4 and s["written"] == 5
    [f] = s["failures"]
    assert f["path"] == str(victim) and "vanished" in f["reason"]
    with Store(db, readonly=True) as store:
        assert store.track_by_path(victim) is None
        assert store.counts()["ok"] == 5


def test_unreadable_directory(lib: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    (lib / "a").mkdir()
    (lib / "b").mkdir()
    os.rename(lib / "r1.flac", lib / "a" / "r1.flac")
    os.rename(lib / "r2.flac", lib / "b" / "r2.flac")
    db = tmp_path / "lib.db"
    assert scan(capsys, lib, db)["analysed"] == 5
    shutil.copy2(lib / "r3.flac", lib / "a" / "r3-copy.flac")  # new work elsewhere

    hidden = lib / "b"
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) == str(hidden):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    with monkeypatch.context() as m:
        if os.geteuid() == 0:  # root reads through chmod 000: fail the way it would for a user
            m.setattr(os, "scandir", scandir)
        else:
            os.chmod(hidden, 0)
        try:
            s = scan(capsys, lib, db)
        finally:
            os.chmod(hidden, 0o755)
    assert [e["path"] for e in s["walk_errors"]] == [str(hidden)]
    assert "permission denied" in s["walk_errors"][0]["reason"]
    assert (s["missing"], s["reused"], s["analysed"], s["failed"]) == (0, 1, 0, 0)
    with Store(db, readonly=True) as store:
        assert store.track_by_path(hidden / "r2.flac").status == "ok"


def test_symlink_loop_walked_once(lib: Path, tmp_path: Path, capsys) -> None:
    (lib / "sub").mkdir()
    os.rename(lib / "r1.flac", lib / "sub" / "r1.flac")
    os.symlink("..", lib / "sub" / "loop")
    result: list[walkmod.WalkResult] = []
    t = threading.Thread(target=lambda: result.append(walk([str(lib)])), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "walk did not finish: symlink loop"
    assert len(result[0].files) == 6
    assert len({p for p, _ in result[0].files}) == 6
    s = scan(capsys, lib, tmp_path / "lib.db")
    assert (s["files"], s["analysed"], s["reused"], s["failed"]) == (6, 5, 1, 0)


def test_non_utf8_file_name(lib: Path, tmp_path: Path, capsys) -> None:
    name = os.fsdecode(b"caf\xe9.flac")
    odd = lib / name
    os.rename(lib / "r1.flac", odd)
    db = tmp_path / "lib.db"
    s = scan(capsys, lib, db)
    assert (s["analysed"], s["failed"], s["written"]) == (5, 0, 6)
    assert PREFIX + "provenance" in tagio.read_tags(odd).nom
    with Store(db, readonly=True) as store:
        t = store.track_by_path(odd)
        assert t is not None and os.fsencode(t.path) == os.fsencode(str(odd))
        assert tagio.read_tags(odd).nom == expected_tags(store, odd)
    rc, doc = cli(capsys, "similar", t.id, "--db", db, "--json", "-n", 3)
    assert rc == 0 and os.fsencode(doc["seed"]["path"]) == os.fsencode(str(odd))
    assert len(doc["tracks"]) == 3
    # and the other way round: the odd file shows up in another file's answers, bytes intact
    hits = similar(capsys, lib / "r2.flac", db, "-n", 10)
    assert os.fsencode(str(odd)) in {os.fsencode(h["path"]) for h in hits}


def _pool_workers() -> list[int]:
    """PIDs of this process's multiprocessing spawn workers (not its resource tracker)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"spawn_main" in cmd:
            out.append(int(d.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")
def test_worker_killed_mid_scan_blames_no_file(lib: Path, tmp_path: Path, capsys) -> None:
    """The OOM killer takes a worker: every file it had in flight is retried, none marked failed."""
    for i in range(5, 9):
        encode(lib / f"r{i}.flac", music_like(20.0, 44100, 2, seed=i + 1), 44100)
    db = tmp_path / "lib.db"
    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:
        # the store's own driver: a second copy of SQLite in one process (the stdlib's beside
        # sqlean's) breaks POSIX lock bookkeeping and fails the scan's writes with "disk I/O error"
        from nomarr.store import sqlite3

        while not done.is_set():  # wait for the first stored analysis: others are in flight
            if db.exists():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                        n = c.execute("SELECT count(*) FROM analyses").fetchone()[0]
                except sqlite3.Error:
                    n = 0
                if n:
                    pids = _pool_workers()
                    if pids:
                        os.kill(pids[0], signal.SIGKILL)
                        killed.append(pids[0])
                        return
            time.sleep(0.01)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        s = scan(capsys, lib, db, workers=2)
    finally:
        done.set()
        t.join(5)
    assert killed and s["worker_crashes"] == 1, s
    assert (s["failed"], s["failures"], s["analysed"], s["reused"]) == (0, [], 9, 1), s
    with Store(db, readonly=True) as store:
        assert store.counts().get("failed", 0) == 0 and store.counts()["ok"] == 10
    again = scan(capsys, lib, db)
    assert (again["skipped"], again["failed_unchanged"]) == (10, 0)


# -- 7. walking a big, mostly non-audio tree -----------------------------------------------------


@pytest.mark.slow
def test_walk_100k_files_is_fast(tmp_path: Path, synth_src: Path) -> None:
    root = tmp_path / "big"
    t0 = time.perf_counter()
    flags = os.O_CREAT | os.O_WRONLY
    for d in range(1000):
        sub = root / f"d{d // 100:02d}" / f"d{d:04d}"
        sub.mkdir(parents=True)
        base = str(sub)
        for i in range(100):
            os.close(os.open(f"{base}/f{i:03d}.{'txt' if i % 2 else 'jpg'}", flags, 0o644))
    for d in (3, 333, 999):
        shutil.copy(synth_src / "r1.flac", root / f"d{d // 100:02d}" / f"d{d:04d}" / "song.flac")
    created = time.perf_counter() - t0

    t0 = time.perf_counter()
    w = walk([str(root)])
    took = time.perf_counter() - t0
    print(f"\ncreated 100,000 files in {created:.1f} s; walked in {took:.2f} s")
    assert len(w.files) == 3 and w.errors == []
    assert w.entries == 100_000 + 3 + 1000 + 10
    assert took < 10.0
    assert created < 60.0


# -- 8. tier calibration --------------------------------------------------------------------------


def _fill(store: Store, tmp: Path, n: int, rng: np.random.Generator, start: int = 0) -> None:
    st = os.stat(tmp)
    with store.tx():
        for i in range(start, start + n):
            rid = store.new_recording(90.0, [])
            store.upsert_track(tmp / f"t{i:04d}.mp3", st, recording_id=rid, status="ok")
            scores = {
                "happy": float(rng.beta(2, 5)),
                "rock": float(rng.beta(5, 2)),
                "hip-hop": float(rng.uniform(0.0, 0.04)),
                "female vocalists": float(rng.uniform()),
            }
            store.put_analysis(
                rid,
                Analysis(
                    rid,
                    "msd-musicnn-1",
                    PREFIX,
                    "p" * 12,
                    "balanced",
                    [{"start": 0.0, "duration": None}],
                    3,
                    "CPU",
                    scores,
                ),
                None,
            )


def test_calibration_quantiles_floors_and_growth(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    with Store(tmp_path / "cal.db") as store:
        _fill(store, tmp_path, 99, rng)
        out = libmod.calibrate(store)
        assert out["msd-musicnn-1"]["changed"] is False and store.tier_thresholds() == {}
        a = next(iter(store.analyses(1).values()))
        tags, _ = desired_tags([a], store.tier_thresholds(), False)
        for lab, s in a.scores.items():  # fixed thresholds below 100 recordings
            k = PREFIX + lab.replace(" ", "_")
            tier = "high" if s >= 0.5 else "medium" if s >= 0.25 else "low"
            assert tags[k] == f"{s:.4f}" and tags[f"{k}_{tier}"] == f"{s:.4f}"

        _fill(store, tmp_path, 1, rng, start=99)
        out = libmod.calibrate(store)
        assert out["msd-musicnn-1"] == {"recordings": 100, "calibrated_at": 100, "changed": True}
        assert store.meta("tier_epoch") == "1"

        def expect() -> dict[str, tuple[float, float]]:
            labels, mat, _ = store.label_scores("msd-musicnn-1")
            res = {}
            for j, lab in enumerate(labels):
                col = mat[:, j].astype(np.float64)
                hi = max(float(np.quantile(col, 0.90)), 0.10)
                med = min(max(float(np.quantile(col, 0.70)), 0.05), hi)
                res[lab] = (hi, med)
            return res

        th = store.tier_thresholds()["msd-musicnn-1"]
        for lab, (hi, med) in expect().items():
            assert th[lab] == pytest.approx((hi, med), abs=1e-4), lab
        assert th["hip-hop"] == (0.10, 0.05)  # floors: nothing in this library is hip-hop
        assert th["rock"][0] > 0.5 and th["happy"][0] < 0.5  # per-label, not fixed

        # the tier keys follow the calibrated bounds
        for rid in (1, 50, 100):
            a = next(iter(store.analyses(rid).values()))
            tags, _ = desired_tags([a], store.tier_thresholds(), True)
            for lab, s in a.scores.items():
                hi, med = th[lab]
                tier = "high" if s >= hi else "medium" if s >= med else "low"
                assert f"{PREFIX}{lab.replace(' ', '_')}_{tier}" in tags
            assert len(tags) == 2 * len(a.scores) + 1

        # growth below 10 % keeps the calibration; reaching 10 % recalibrates
        _fill(store, tmp_path, 9, rng, start=100)
        assert libmod.calibrate(store)["msd-musicnn-1"]["changed"] is False
        assert store.meta("tier_epoch") == "1"
        _fill(store, tmp_path, 1, rng, start=109)
        assert libmod.calibrate(store)["msd-musicnn-1"] == {
            "recordings": 110,
            "calibrated_at": 110,
            "changed": True,
        }
        assert store.meta("tier_epoch") == "2"
        th = store.tier_thresholds()["msd-musicnn-1"]
        for lab, (hi, med) in expect().items():
            assert th[lab] == pytest.approx((hi, med), abs=1e-4), lab


def test_recalibration_rewrites_only_changed_files(
    lib: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(libmod, "CALIBRATE_MIN_TRACKS", 4)
    db = tmp_path / "lib.db"
    held = tmp_path / "held"
    held.mkdir()
    for n in ("r3.flac", "r4.flac"):
        os.rename(lib / n, held / n)

    s = scan(capsys, lib, db)  # 3 recordings: fixed thresholds
    assert s["analysed"] == 3 and s["calibration"]["msd-musicnn-1"]["changed"] is False

    def step(add: str | None) -> dict[str, Any]:
        files = audio_files(lib)
        before_tags = {p: tagio.read_tags(p).nom for p in files}
        before = state(files)
        if add:
            os.rename(held / add, lib / add)
        s = scan(capsys, lib, db)
        with Store(db, readonly=True) as store:
            for p in files:
                want = expected_tags(store, p)
                assert tagio.read_tags(p).nom == want
                changed = before_tags[p] != want
                assert (state([p]) != {str(p): before[str(p)]}) == changed, p
        return s

    s = step("r3.flac")  # 4 recordings: first calibration
    assert s["calibration"]["msd-musicnn-1"]["changed"] is True and s["analysed"] == 1
    assert s["retiered"] > 0

    s = step(None)  # no growth: nothing recalibrated, nothing written
    assert s["calibration"]["msd-musicnn-1"]["changed"] is False
    assert (s["written"], s["retiered"]) == (0, 0)

    s = step("r4.flac")  # +25 %: recalibrated; exactly the files whose tier moved are rewritten
    assert s["calibration"]["msd-musicnn-1"]["changed"] is True

    monkeypatch.setattr(libmod, "CALIBRATE_GROWTH", 0.0)  # recalibrate on identical data
    with Store(db, readonly=True) as store:
        epoch = store.meta("tier_epoch")
    s = step(None)
    assert s["calibration"]["msd-musicnn-1"]["changed"] is True
    assert (s["written"], s["retiered"]) == (0, 0)  # no tier moved: no file opened for writing
    with Store(db, readonly=True) as store:
        assert int(store.meta("tier_epoch")) == int(epoch) + 1
    monkeypatch.setattr(libmod, "CALIBRATE_GROWTH", 0.10)
    s = scan(capsys, lib, db)
    assert (s["written"], s["skipped"], s["analysed"]) == (0, 6, 0)


# -- 9. tags / playlists --------------------------------------------------------------------------


def test_tags_and_playlists(lib: Path, tmp_path: Path, capsys) -> None:
    db = tmp_path / "lib.db"
    scan(capsys, lib, db)
    rc, doc = cli(capsys, "tags", lib / "r1.flac", "--json")
    assert rc == 0 and doc["format"] == "vorbis" and doc["invalid"] == []
    g = doc["groups"]["onnx_musicnn_msd-1_msd50_1"]
    assert len(g["scores"]) == 50 and len(g["tiers"]) == 50 and len(g["provenance"]) == 12
    assert set(g["tiers"].values()) <= {"high", "medium", "low"}
    nom = tagio.read_tags(lib / "r1.flac").nom
    assert g["scores"]["happy"] == float(nom[PREFIX + "happy"])

    rc, out = cli(capsys, "playlist", "--mood", "happy", "--format", "m3u", "--db", db, "-n", 10)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "#EXTM3U" and len(lines) == 1 + 2 * 5  # one file per recording
    for info, path in zip(lines[1::2], lines[2::2], strict=True):
        assert info.startswith("#EXTINF:") and int(info[8:].split(",", 1)[0]) == 20
        assert os.path.isabs(path) and os.path.exists(path)
    with Store(db, readonly=True) as store:  # best first
        scores = [float(expected_tags(store, p)[PREFIX + "happy"]) for p in lines[2::2]]
    assert scores == sorted(scores, reverse=True)

    a, b = lib / "r1.flac", lib / "r4.flac"
    rc, doc = cli(capsys, "playlist", "--from", a, "--to", b, "-n", 4, "--db", db, "--json")
    assert rc == 0
    paths = [t["path"] for t in doc["tracks"]]
    assert len(paths) == 4 and len(set(paths)) == 4
    assert paths[0] == str(a) and paths[-1] == str(b)
    assert len({t["recording_id"] for t in doc["tracks"]}) == 4


def test_mood_playlist_looks_past_filtered_tracks(tmp_path: Path) -> None:
    """The best-scoring recordings all lie outside --under: the playlist still fills up."""
    from nomarr.query import Filters, mood_playlist

    st = os.stat(tmp_path)
    with Store(tmp_path / "m.db") as store:
        with store.tx():
            for i in range(100):
                rid = store.new_recording(90.0, [])
                folder = "a" if i < 80 else "b"
                store.upsert_track(
                    tmp_path / folder / f"t{i:03d}.mp3", st, recording_id=rid, status="ok"
                )
                store.put_analysis(
                    rid,
                    Analysis(
                        rid,
                        "msd-musicnn-1",
                        PREFIX,
                        "p" * 12,
                        "balanced",
                        [],
                        1,
                        "CPU",
                        {"happy": 1.0 - i / 100},
                    ),
                    None,
                )
        hits = mood_playlist(store, "happy", 5, filters=Filters(under=[str(tmp_path / "b")]))
        assert [Path(h.track.path).name for h in hits] == [f"t{i:03d}.mp3" for i in range(80, 85)]
        assert [round(h.score, 2) for h in hits] == [0.2, 0.19, 0.18, 0.17, 0.16]
