"""``nomarr scan`` killed with SIGKILL at random moments, again and again, loses nothing.

A real subprocess (``python -m nomarr.cli scan``) with one real worker process is killed, process
group and all, at seeded random moments that fall in start-up, the walk, analysis and tag
writing. Between kills the library is disturbed the way users disturb it (another tagger strips
the tags, a file is renamed, the database is deleted) so that every run has work to be killed
in, and some runs are let finish. Afterwards every file must still carry its original audio, no
temp file or journal record may be left, the database must pass ``integrity_check``, and one
last scan must agree with the files.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mutagen
import pytest
from nomarr import paths, tagio
from nomarr.library import desired_tags
from nomarr.store import Store

from .conftest import encode
from .test_scan import decode

pytestmark = [pytest.mark.corpus, pytest.mark.slow]

# corpus track -> formats in the library (two recordings in two formats: reuse by chromaprint)
PLAN = {
    5: ["flac"],
    6: ["ogg"],
    7: ["mp3"],
    8: ["flac", "mp3"],
    9: ["ogg"],
    10: ["flac"],
    11: ["m4a"],
    12: ["ogg", "flac"],
}
SECONDS = 45  # of each track: one full scan takes seconds, so 20 kills fit in about two minutes
KILLS = 20


def _nomarr(*args: str) -> list[str]:
    return [sys.executable, "-m", "nomarr.cli", *args]


def _strip_nom(path: Path) -> None:
    """What another tagger might do: remove every nom: key (mutagen, not nomarr)."""
    f = mutagen.File(path)
    if f is None or f.tags is None:
        return
    if hasattr(f.tags, "getall"):  # ID3
        for fr in list(f.tags.getall("TXXX")):
            if fr.desc.lower().startswith("nom:"):
                f.tags.delall("TXXX:" + fr.desc)
    else:
        for k in list(f.tags.keys()):
            name = k.split(":", 2)[-1] if k.startswith("----:") else k  # MP4 freeform
            if name.lower().startswith("nom:"):
                del f.tags[k]
    f.save()


def _temps(*dirs: Path) -> list[Path]:
    return [
        p for d in dirs if d.exists() for p in d.rglob("*") if p.name.endswith(tagio.TMP_SUFFIX)
    ]


def test_sigkill_at_random_moments(corpus: Path, tmp_path: Path) -> None:
    assert subprocess.run(_nomarr("--version"), capture_output=True, timeout=60).returncode == 0

    lib = tmp_path / "lib"
    lib.mkdir()
    for i, exts in PLAN.items():
        sig, sr = decode(corpus / f"sh{i:02d}.ogg")
        for ext in exts:
            encode(lib / f"sh{i:02d}.{ext}", sig[:, : SECONDS * sr].copy(), sr)
    # a second link from outside the library: tagio must write this file in place, under its
    # journal, so kills also land in journalled copy-backs
    outside = tmp_path / "outside"
    outside.mkdir()
    os.link(lib / "sh10.flac", outside / "sh10-hardlink.flac")
    originals = {p.name: tagio.nom_audio_md5(p) for p in lib.iterdir()}
    db = tmp_path / "lib.db"
    journal = paths.data_dir() / "journal"  # where the scanner keeps in-place write journals
    rng = random.Random(int(os.environ.get("NOMARR_CRASH_SEED", "20240611")))
    cmd = _nomarr("scan", str(lib), "--db", str(db), "--workers", "1", "--json")

    landed = completed = interrupted_replaces = interrupted_staging = interrupted_journalled = 0
    linked = (outside / "sh10-hardlink.flac").stat().st_ino
    t_start = time.monotonic()
    for k in range(KILLS):
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if k % 2 == 0:  # a random moment of the whole run: start-up, walk, analysis, writes
            try:
                proc.wait(timeout=rng.uniform(0.05, 3.5))
            except subprocess.TimeoutExpired:
                pass
        else:  # a random moment inside a tag write (the window that matters most, and short):
            # k % 4 == 1 an in-place journalled write (the hardlinked file), else an atomic replace
            extra = rng.uniform(0.0, 0.03)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if (journal.exists() and any(journal.iterdir())) if k % 4 == 1 else _temps(lib):
                    time.sleep(extra)
                    break
                time.sleep(0.002)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the scan and its worker, like a power cut
            proc.wait(timeout=30)
            landed += 1
        else:
            assert proc.returncode == 0, f"scan {k} exited {proc.returncode}"
        pending = journal.exists() and any(journal.glob("*.json"))
        if _temps(lib):
            interrupted_replaces += 1
        if _temps(journal):
            interrupted_staging += 1
        if pending:
            interrupted_journalled += 1

        if k % 5 == 4:  # sometimes a scan runs to the end
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["failed"] == 0, r.stdout
            completed += 1
        if pending:  # a half-done in-place write: nobody else touches the files until a scan
            continue  # has recovered it (tagio finishes it by path)
        # disturb the library so the next run has work to be killed in
        files = sorted(p for p in lib.iterdir() if not p.name.startswith("."))
        for p in rng.sample(files, 4):
            _strip_nom(p)
        if k % 4 == 0:  # the hardlinked file next: the following run writes it in place
            _strip_nom(next(p for p in files if p.stat().st_ino == linked))
        if rng.random() < 0.3:
            victim = rng.choice(files)
            victim.rename(victim.with_name(f"renamed-{k}-{victim.name}"))
        if k % 4 == 3:  # the user deletes the database: everything is analysed again
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)

    # one more scan, to the end
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout)
    elapsed = time.monotonic() - t_start
    print(
        f"\n{KILLS} runs, {landed} killed mid-scan, leaving {interrupted_replaces} temp copies beside "
        f"files, {interrupted_staging} staged in-place copies and {interrupted_journalled} in-place "
        f"journal records to recover; {completed} let finish; {elapsed:.0f} s in all"
    )
    assert final["failed"] == 0 and final["failures"] == [], final
    assert landed >= KILLS // 2  # most kills did land inside a scan

    # nothing left behind
    assert _temps(lib, outside, journal) == []
    assert journal.is_dir() and list(journal.iterdir()) == []  # used, and left clean

    # every file is whole: decodes, same audio packets as before any scan
    files = sorted(lib.iterdir())
    assert len(files) == len(originals)
    for p in files:
        name = p.name
        while name.startswith("renamed-"):
            name = name.split("-", 2)[-1]
        assert tagio.nom_audio_md5(p) == originals[name], p
        sig, sr = decode(p)
        assert sig.shape[1] >= (SECONDS - 1) * sr, p
    assert (outside / "sh10-hardlink.flac").stat().st_ino == next(
        p for p in files if p.name.endswith("sh10.flac")
    ).stat().st_ino

    # the database is sound and agrees with the files
    with Store(db, readonly=True) as store:
        assert store.integrity_check() == "ok"
        thresholds = store.tier_thresholds()
        present = set()
        for p in files:
            t = store.track_by_path(p)
            assert t is not None and t.status == "ok" and t.recording_id is not None, (p, t)
            present.add(t.id)
            want, _ = desired_tags(
                store.analyses(t.recording_id).values(),
                thresholds,
                False,
                store.descriptors(t.recording_id),
            )
            assert want and tagio.read_tags(p).nom == want, p
        ok = {t.id for t in store.tracks(status="ok")}
        assert ok == present  # no file that is gone still counts as present
        assert store.counts()["recordings"] == len(PLAN)
