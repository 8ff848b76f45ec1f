"""Hostile libraries (docs/reliability.md): symlinks out of the roots, damaged and partial copies
of one recording, silence, truncation, a huge embedded picture, and the scan's worker processes
when their parent is killed. Every case runs a real scan on real encoded files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nomarr import tagio
from nomarr.cli import main
from nomarr.store import Store

from .conftest import encode, music_like
from .procs import alive, children

PREFIX = "nom:onnx_musicnn_msd-1_msd50_1_"


def scan(capsys: pytest.CaptureFixture[str], *roots: Path, db: Path, workers: int = 0) -> Any:
    capsys.readouterr()
    rc = main(["scan", *map(str, roots), "--db", str(db), "--json", "--workers", str(workers)])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def fingerprint_of(p: Path) -> tuple[str, int]:
    """Content hash and mtime: proof a file was neither written nor replaced."""
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns


# -- symlinks -----------------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> dict[str, Path]:
    """A library with one real file, and outside it a file and a folder of files."""
    lib, out = tmp_path / "lib", tmp_path / "outside"
    (lib / "a" / "b").mkdir(parents=True)
    (out / "dir" / "deeper").mkdir(parents=True)
    encode(lib / "a" / "real.flac", music_like(12.0, seed=1), 44100)
    encode(out / "secret.flac", music_like(12.0, seed=2), 44100)
    encode(out / "dir" / "one.flac", music_like(12.0, seed=3), 44100)
    encode(out / "dir" / "deeper" / "two.mp3", music_like(12.0, seed=4), 44100)
    return {"lib": lib, "out": out}


def test_symlinks_out_of_the_roots_are_never_read_or_written(
    linked: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib, out = linked["lib"], linked["out"]
    (lib / "file-link.flac").symlink_to(out / "secret.flac")  # a file link
    (lib / "a" / "dir-link").symlink_to(out / "dir", target_is_directory=True)  # a folder link
    (lib / "a" / "b" / "rel").symlink_to(Path("../../..") / "outside" / "dir" / "deeper")
    (lib / "inside-link.flac").symlink_to(lib / "a" / "real.flac")  # stays inside: followed
    before = {p: fingerprint_of(p) for p in out.rglob("*") if p.is_file()}
    db = tmp_path / "db.sqlite"
    s = scan(capsys, lib, db=db)
    assert {p: fingerprint_of(p) for p in before} == before, "a file outside the roots changed"
    assert s["files"] == 2 and s["failed"] == 0, s  # real.flac and the link to it
    skipped = {e["path"] for e in s["walk_errors"] if "outside the library roots" in e["reason"]}
    assert skipped == {
        str(lib / "file-link.flac"),
        str(lib / "a" / "dir-link"),
        str(lib / "a" / "b" / "rel"),
    }
    with Store(db, readonly=True) as st:
        paths = {t.path for t in st.tracks()}
    assert paths == {str(lib / "a" / "real.flac"), str(lib / "inside-link.flac")}
    assert PREFIX + "provenance" in tagio.read_tags(lib / "a" / "real.flac").nom
    assert (lib / "inside-link.flac").is_symlink()  # written through, not replaced by a copy


def test_a_root_that_is_a_symlink_and_a_link_scanned_as_its_own_root(
    linked: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule is about the roots one asked for: a root reached through a link is scanned (its
    real location is the library); an explicit root is trusted whatever links lead to it."""
    lib = linked["lib"]
    alias = tmp_path / "alias"
    alias.symlink_to(lib, target_is_directory=True)
    s = scan(capsys, alias, db=tmp_path / "db.sqlite")
    assert (s["files"], s["failed"]) == (1, 0), s
    s = scan(capsys, linked["out"] / "dir", db=tmp_path / "db2.sqlite")
    assert (s["files"], s["failed"]) == (2, 0), s


def test_writer_refuses_a_link_retargeted_out_of_the_roots(
    linked: dict[str, Path], tmp_path: Path
) -> None:
    """Between the walk and the write a link may be pointed elsewhere: the writer checks again."""
    lib, out = linked["lib"], linked["out"]
    link = lib / "late.flac"
    link.symlink_to(out / "secret.flac")
    before = fingerprint_of(out / "secret.flac")
    nom = {PREFIX + "provenance": "abcdef012345"}
    with pytest.raises(tagio.TagError) as e:
        tagio.write_tags(link, nom, within=[str(lib)])
    assert e.value.reason == "outside-roots"
    assert fingerprint_of(out / "secret.flac") == before
    tagio.write_tags(lib / "a" / "real.flac", nom, within=[str(lib)])  # inside: written
    assert tagio.read_tags(lib / "a" / "real.flac").nom == nom


# -- workers die with their parent ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("command", ["scan", "serve"])
def test_workers_and_resource_tracker_die_with_a_killed_parent(
    tmp_path: Path, command: str
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(6):
        encode(lib / f"t{i}.flac", music_like(20.0, seed=40 + i), 44100)
    env = {
        **os.environ,
        **{
            v: str(tmp_path / v.lower())
            for v in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
        },
    }
    args = {
        "scan": ["scan", str(lib), "--db", str(tmp_path / "db"), "--workers", "2"],
        "serve": [
            "serve",
            "--library",
            str(lib),
            "--db",
            str(tmp_path / "db"),
            "--workers",
            "2",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--no-zeroconf",
        ],
    }[command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomarr.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            kids = children(proc.pid)
            workers = [k for k in kids if b"spawn_main" in _cmdline(k)]
            if len(workers) >= 2 and any(b"resource_tracker" in _cmdline(k) for k in kids):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{command} never had its two workers running ({kids})")
        time.sleep(1.0)  # mid-analysis
        kids = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(k) for k in kids):
            time.sleep(0.1)
        left = {k: _cmdline(k)[:80] for k in kids if alive(k)}
        assert not left, f"orphans after kill -9 of nomarr {command}: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for k in kids | children(proc.pid):  # never leave an orphan behind, even on failure
            if alive(k) and b"multiprocessing" in _cmdline(k):
                with contextlib.suppress(OSError):
                    os.kill(k, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# -- damaged, partial and silent files ----------------------------------------------------------


def _splice_garbage(src: Path, dst: Path, n: int = 200_000) -> Path:
    """A copy with ``n`` random bytes spliced into the middle: decodes only up to them."""
    import numpy as np

    raw = src.read_bytes()
    mid = len(raw) // 2
    junk = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    dst.write_bytes(raw[:mid] + junk + raw[mid:])
    return dst


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("damaged-src")
    intact = encode(d / "intact.ogg", music_like(45.0, seed=21), 44100)
    mp3 = encode(d / "whole.mp3", music_like(45.0, seed=22), 44100)
    trunc = d / "trunc.mp3"
    trunc.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    silent = encode(d / "silent.flac", music_like(20.0, seed=23) * 0.0, 44100)
    return {
        "intact": intact,
        "damaged": _splice_garbage(intact, d / "damaged.ogg"),
        "trunc": trunc,
        "silent": silent,
    }


def _alone(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[dict[str, str], Any]:
    """The tags a file gets in a library of its own, and its stored analysis."""
    d = tmp_path / f"alone-{src.stem}"
    d.mkdir()
    shutil.copy(src, d / src.name)
    scan(capsys, d, db=tmp_path / f"alone-{src.stem}.db")
    with Store(tmp_path / f"alone-{src.stem}.db", readonly=True) as st:
        t = st.track_by_path(d / src.name)
        assert t is not None and t.recording_id is not None
        a = st.analyses(t.recording_id)["msd-musicnn-1"]
    return tagio.read_tags(d / src.name).nom, a


@pytest.mark.slow
@pytest.mark.parametrize(
    ("names", "workers", "split"),
    [
        (("a.ogg", "b.ogg"), 0, False),  # damaged met first
        (("b.ogg", "a.ogg"), 0, False),  # intact met first
        (("a.ogg", "b.ogg"), 2, False),  # both in flight at once
        (("a.ogg", "b.ogg"), 0, True),  # the damaged one alone first, the intact one a scan later
    ],
)
def test_a_damaged_copy_never_stands_for_the_intact_recording(
    recordings: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    names: tuple[str, str],
    workers: int,
    split: bool,
) -> None:
    """The issue's case: an Ogg with 200 KB of garbage in the middle decodes to half its length;
    whichever copy the scan meets first, the recording is represented by the intact one."""
    intact_tags, intact_a = _alone(recordings["intact"], tmp_path, capsys)
    _, damaged_a = _alone(recordings["damaged"], tmp_path, capsys)
    assert intact_a.complete and not damaged_a.complete
    assert damaged_a.n_patches < intact_a.n_patches and damaged_a.scores != intact_a.scores
    lib = tmp_path / "lib"
    lib.mkdir()
    damaged, intact = lib / names[0], lib / names[1]
    shutil.copy(recordings["damaged"], damaged)
    db = tmp_path / "lib.db"
    if split:
        scan(capsys, lib, db=db, workers=workers)
        with Store(db, readonly=True) as st:
            t = st.track_by_path(damaged)
            assert t is not None and t.recording_id is not None
            partial = st.analyses(t.recording_id)["msd-musicnn-1"]
            assert not partial.complete
            assert partial.scores == pytest.approx(damaged_a.scores, abs=1e-5)
    shutil.copy(recordings["intact"], intact)
    s = scan(capsys, lib, db=db, workers=workers)
    assert tagio.read_tags(intact).nom == intact_tags
    # the damaged copy's audio cannot be read to its end, so no write can be verified as leaving
    # it intact: it is refused once (and remembered), the file keeps no nomarr tags
    assert [f["path"] for f in s["failures"]] in ([], [str(damaged)]), s["failures"]
    assert tagio.read_tags(damaged).nom in ({}, intact_tags)
    with Store(db, readonly=True) as st:
        t = st.track_by_path(intact)
        assert t is not None and t.recording_id is not None
        assert st.track_by_path(damaged).recording_id == t.recording_id  # type: ignore[union-attr]
        a = st.analyses(t.recording_id)["msd-musicnn-1"]
        assert a.complete and a.n_patches == intact_a.n_patches
        assert a.scores == pytest.approx(intact_a.scores, abs=1e-5)  # batch sizes differ by 1e-8
    again = scan(capsys, lib, db=db, workers=workers)
    assert (again["analysed"], again["written"], again["failed"]) == (0, 0, 0), again
    assert again["skipped"] + again["unwritable_unchanged"] == 2, again


def test_partial_and_silent_files_alone(
    recordings: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated file is tagged from what it holds, flagged partial, with its real length; a
    silent file is not tagged at all; a second scan changes nothing."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for k in ("trunc", "silent"):
        shutil.copy(recordings[k], lib / recordings[k].name)
    db = tmp_path / "db"
    s = scan(capsys, lib, db=db)
    assert (s["analysed"], s["failed"]) == (1, 1), s
    assert [f["reason"] for f in s["failures"]] == [
        "digital silence: nothing to analyse (not tagged)"
    ]
    assert tagio.read_tags(lib / "silent.flac").nom == {}
    assert PREFIX + "provenance" in tagio.read_tags(lib / "trunc.mp3").nom
    with Store(db, readonly=True) as st:
        t = st.track_by_path(lib / "trunc.mp3")
        assert t is not None and t.recording_id is not None
        assert t.duration is not None and 20.0 < t.duration < 25.0, (
            t.duration
        )  # not the header's 45
        a = st.analyses(t.recording_id)["msd-musicnn-1"]
        assert not a.complete and 20.0 < (a.decoded_s or 0) < 25.0
    again = scan(capsys, lib, db=db)
    assert (again["skipped"], again["failed_unchanged"], again["written"]) == (1, 1, 0), again
    capsys.readouterr()
    assert main(["analyze", str(lib / "trunc.mp3"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["complete"] is False and doc["duration"] < 25.0
    assert any("partial decode" in w for w in doc["warnings"])
    assert main(["analyze", str(lib / "silent.flac"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["silent"] is True and doc["tags"] == {}


@pytest.mark.slow
def test_worker_log_lines_share_the_agents_format(
    recordings: dict[str, Path], tmp_path: Path
) -> None:
    """A damaged file makes the decoder warn inside a worker process: that line must have the
    same structured format as the parent's (not logging's default ``WARNING:name:msg``), and
    nothing else may reach stderr."""
    import re

    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(recordings["damaged"], lib / "damaged.ogg")
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    p = subprocess.run(
        [sys.executable, "-m", "nomarr.cli", "scan", str(lib), "--db", str(tmp_path / "db")]
        + ["--workers", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert any("nomarr.audio.decode" in x for x in lines), lines  # a worker's line is there
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (debug|info|warning|error) nomarr\.\S+ ")
    assert all(line.match(x) for x in lines), lines
