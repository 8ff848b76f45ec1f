"""The cases a library meets in the wild and no happy-path test tries (docs/reliability.md).

A disk that fills up during a tag write and during a database commit (a real, small tmpfs),
hard-linked files killed mid-write (the in-place journal), a scan run as an unprivileged user
against files it may not read or write, ``nomarr serve`` killed while its watcher and scanner
work, tag writes to M4A, WMA and AIFF, and a thousand idle connections. Every case ends the same
way: each file's audio packets hash as before, ``PRAGMA integrity_check`` is ok, and the next
scan converges (nothing left to analyse or write).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mutagen
import pytest
import taglib
from nomarr import paths, tagio
from nomarr.cli import main
from nomarr.library import desired_tags
from nomarr.store import Store

from .conftest import encode, music_like
from .procs import alive, children

pytestmark = pytest.mark.slow

PREFIX = "nom:onnx_musicnn_msd-1_msd50_1_"


# -- helpers ------------------------------------------------------------------------------------


def make_lib(d: Path, n: int = 3, ext: str = "flac", seconds: float = 8.0) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    return [encode(d / f"t{i}.{ext}", music_like(seconds, seed=900 + i), 44100) for i in range(n)]


def audio(files: list[Path]) -> dict[str, str]:
    return {p.name: tagio.nom_audio_md5(p) for p in files}


def scan(capsys: pytest.CaptureFixture[str], lib: Path, db: Path, *extra: str) -> tuple[int, Any]:
    capsys.readouterr()
    rc = main(["scan", str(lib), "--db", str(db), "--json", "--workers", "0", *extra])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else out.err)


def converged(s: dict[str, Any]) -> bool:
    return s["analysed"] == 0 and s["written"] == 0 and s["reused"] == 0


def assert_sound(db: Path, files: list[Path], before: dict[str, str]) -> None:
    """Audio untouched, database sound, and every ok track's file carries its desired tags."""
    assert audio(files) == before
    with Store(db, readonly=True) as st:
        assert st.integrity_check() == "ok"
        th = st.tier_thresholds()
        for p in files:
            t = st.track_by_path(p)
            if t is None or t.status != "ok" or t.recording_id is None:
                continue
            want, _ = desired_tags(
                st.analyses(t.recording_id).values(), th, False, st.descriptors(t.recording_id)
            )
            if st.last_write(t.id) is not None:
                assert tagio.read_tags(p).nom == want, p


def temps(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob("*") if ".nomarr-tmp" in p.name]


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real size-limited file system (root only; skipped where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def resize(where: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


# -- a full disk --------------------------------------------------------------------------------


def test_disk_full_during_tag_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_lib(tmp_path / "src")
    need = sum(p.stat().st_size for p in src)
    with tmpfs(tmp_path / "fs", f"{need // 1024 + 96}k") as fs:
        lib = fs / "lib"
        lib.mkdir()
        files = [Path(shutil.copy(p, lib / p.name)) for p in src]
        before = audio(files)
        raw = {p: p.read_bytes() for p in files}
        db = tmp_path / "db"
        rc, s = scan(capsys, lib, db)
        assert rc == 0 and s["analysed"] == 3 and s["written"] == 0, s
        assert {f["path"] for f in s["failures"]} == {str(p) for p in files}
        assert all("tag write failed" in f["reason"] for f in s["failures"]), s["failures"]
        assert {p: p.read_bytes() for p in files} == raw  # not a byte changed
        assert temps(fs) == []  # the half-made copies are gone
        assert_sound(db, files, before)
        resize(fs, "64m")  # the user makes room: the next scan writes, the one after is idle
        rc, s = scan(capsys, lib, db)
        assert rc == 0 and (s["analysed"], s["written"], s["failed"]) == (0, 3, 0), s
        rc, s = scan(capsys, lib, db)
        assert rc == 0 and converged(s) and s["skipped"] == 3, s
        assert_sound(db, files, before)


def test_disk_full_during_a_database_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_lib(tmp_path / "lib", n=6)
    before = audio(files)
    with tmpfs(tmp_path / "fs", "1200k") as fs:
        db = fs / "db"
        rc, err = scan(capsys, tmp_path / "lib", db)
        assert rc == 1, err
        assert "cannot write the database" in err and "Traceback" not in err, err
        assert_sound(db, files, before)  # rolled back: no half-stored file, no stray tags
        resize(fs, "64m")
        rc, s = scan(capsys, tmp_path / "lib", db)
        assert rc == 0 and s["failed"] == 0 and s["skipped"] + s["analysed"] + s["reused"] == 6, s
        rc, s = scan(capsys, tmp_path / "lib", db)
        assert rc == 0 and converged(s) and s["skipped"] == 6, s
        assert_sound(db, files, before)


# -- hard links, killed mid-write ---------------------------------------------------------------


def _strip_nom(p: Path) -> None:
    f = mutagen.File(p)
    if f is not None and f.tags is not None:
        for k in [k for k in f.tags.keys() if k.lower().startswith("nom:")]:
            del f.tags[k]
        f.save()


def test_hard_linked_files_killed_mid_write(tmp_path: Path) -> None:
    """Every file has a second link in another folder of the library, so each write goes through
    the in-place journal; the scan is killed (process group, like a power cut) the moment a
    journal record or staged copy exists, again and again."""
    lib = tmp_path / "lib"
    files = make_lib(lib / "a", n=3)
    (lib / "b").mkdir()
    for p in files:
        os.link(p, lib / "b" / p.name)
    everything = files + [lib / "b" / p.name for p in files]
    before = audio(everything)
    db = tmp_path / "db"
    env = {**os.environ}
    journal = paths.data_dir() / "journal"
    cmd = [sys.executable, "-m", "nomarr.cli", "scan", str(lib), "--db", str(db)]
    cmd += ["--workers", "1", "--json"]
    rng = random.Random(7)
    killed = 0
    for _ in range(6):
        for p in files:
            _strip_nom(p)  # another tagger: every file needs writing again
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and any(journal.iterdir()):
                time.sleep(rng.uniform(0.0, 0.02))
                break
            time.sleep(0.002)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(30)
        for p in everything:  # whatever moment it was: the audio is whole
            assert tagio.nom_audio_md5(p) == before[p.name]
    assert killed >= 3
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["failed"] == 0, s
    assert list(journal.iterdir()) == [] and temps(lib, journal) == []
    for p in files:
        assert (lib / "b" / p.name).stat().st_ino == p.stat().st_ino  # still one file, two links
    assert_sound(db, everything, before)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert converged(json.loads(r.stdout))


# -- permission denied ----------------------------------------------------------------------------


def _as_nobody_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
         "import nomarr.cli, onnxruntime"],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0


def test_permission_denied_as_an_unprivileged_user() -> None:
    if not _as_nobody_works():
        pytest.skip("needs root, setpriv and an interpreter the user nobody may run")
    import pwd

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="nomarr-perm-"))
    try:
        base.chmod(0o755)
        lib = base / "lib"
        files = make_lib(lib, n=3)
        sub = lib / "closed"
        hidden = make_lib(sub, n=1)[0]
        readable, mine, secret = files
        os.chown(mine, nobody.pw_uid, nobody.pw_gid)  # the one file nobody may write
        secret.chmod(0)  # may not even read
        sub.chmod(0)  # a folder it may not enter
        home = base / "home"
        home.mkdir()
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        before = audio([readable, mine])
        raw = {p: p.read_bytes() for p in (readable, secret, hidden)}
        env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
        env["XDG_CACHE_HOME"] = str(home / "cache")
        env["XDG_CONFIG_HOME"] = str(home / "config")
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        cmd += [sys.executable, "-m", "nomarr.cli", "scan", str(lib), "--db", str(home / "db")]
        # in-process: which interpreter an unprivileged user may exec for worker processes is
        # the machine's business (here it may not reach the venv's); file access is the point
        cmd += ["--workers", "0", "--json"]

        def run() -> dict[str, Any]:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            return dict(json.loads(r.stdout))

        s = run()
        assert (s["analysed"], s["written"], s["read_only"], s["failed"]) == (2, 1, 1, 1), s
        reasons = {f["path"]: f["reason"] for f in s["failures"]}
        assert "permission denied" in reasons[str(secret)]
        assert any(e["path"] == str(sub) for e in s["walk_errors"]), s["walk_errors"]
        assert PREFIX + "provenance" in tagio.read_tags(mine).nom
        assert {p: p.read_bytes() for p in raw} == raw  # (read as root: nobody cannot)
        assert_sound(home / "db", [readable, mine], before)
        again = run()
        assert (again["analysed"], again["written"], again["failed_unchanged"]) == (0, 0, 1)
        assert again["skipped"] == 1 and again["read_only"] == 1, again
    finally:
        for d in (base / "lib" / "closed",):
            with contextlib.suppress(OSError):
                d.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# -- formats whose tags live elsewhere -------------------------------------------------------------


def test_tag_writes_to_m4a_wma_and_aiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    files = [
        encode(lib / f"t.{ext}", music_like(10.0, seed=950 + i), 44100)
        for i, ext in enumerate(("m4a", "wma", "aiff"))
    ]
    before = audio(files)
    db = tmp_path / "db"
    rc, s = scan(capsys, lib, db)
    assert rc == 0 and (s["analysed"], s["written"], s["failed"]) == (3, 3, 0), s
    key = PREFIX + "provenance"
    for p in files:
        with taglib.File(str(p)) as tf:  # what Navidrome's TagLib sees
            if p.suffix == ".wma":  # custom ASF attributes: TagLib lists them as "unsupported"
                assert key in set(tf.unsupported), (p, tf.unsupported[:5])
            else:
                assert tf.tags.get(key.upper()), (p, list(tf.tags)[:5])
    assert_sound(db, files, before)
    rc, s = scan(capsys, lib, db)
    assert rc == 0 and converged(s) and s["skipped"] == 3, s


# -- nomarr serve killed while it works -------------------------------------------------------------


def _serve(lib: Path, db: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "nomarr.cli", "serve", "--library", str(lib), "--db", str(db)]
    cmd += ["--port", str(port), "--host", "127.0.0.1", "--no-zeroconf", "--workers", "1"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _status(port: int, token: str) -> dict[str, Any] | None:
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/status", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_serve_killed_while_watching_and_scanning(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    src = make_lib(tmp_path / "src", n=6)
    env = {**os.environ}
    for v in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        env[v] = str(tmp_path / v.lower())
    db = tmp_path / "db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _serve(lib, db, env, port)
    kids: set[int] = set()
    try:
        token_file = tmp_path / "xdg_config_home" / "nomarr" / "token"
        deadline = time.monotonic() + 60
        while not (token_file.exists() and _status(port, token_file.read_text().strip())):
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
            time.sleep(0.1)
        token = token_file.read_text().strip()
        for p in src:  # the watcher sees them arrive and queues a scan
            shutil.copy(p, lib / p.name)
        deadline = time.monotonic() + 120
        while True:
            st = _status(port, token) or {}
            if st.get("queue", {}).get("running") and st.get("tracks", {}).get("ok", 0) >= 1:
                break  # mid-scan: some files done, others in flight
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        kids = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [k for k in kids if alive(k)], "orphans after kill -9 of nomarr serve"
        files = sorted(lib.glob("*.flac"))
        before = audio(src)
        assert audio(files) == before
        assert_sound(db, files, before)
        # started again, it finishes the job; a SIGTERM then stops it promptly and cleanly
        proc = _serve(lib, db, env, port)
        deadline = time.monotonic() + 180
        while True:
            st = _status(port, token) or {}
            q = st.get("queue", {})
            if (
                st.get("tracks", {}).get("ok") == 6
                and not q.get("running")
                and q.get("scans_completed")
            ):
                break
            assert time.monotonic() < deadline and proc.poll() is None, st
            time.sleep(0.2)
        kids = children(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0 and time.monotonic() - t0 < 15
        assert temps(lib) == []
        assert_sound(db, files, before)
        with Store(db, readonly=True) as st_:
            assert all(st_.last_write(st_.track_by_path(p).id) for p in files)  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
        for k in kids | children(proc.pid):  # never an orphan left behind, even on failure
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{k}/cmdline").read_bytes()
                if alive(k) and (b"multiprocessing" in cmdline or b"nomarr.cli" in cmdline):
                    os.kill(k, signal.SIGKILL)


# -- a thousand idle connections --------------------------------------------------------------------


def test_a_thousand_idle_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import resource
    import urllib.request

    from nomarr.server import guard

    from tests.server_harness import RunningAgent, config, isolated_dirs

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2300:
        pytest.skip(f"open-files hard limit {hard}: 1,000 connections need both ends here")
    monkeypatch.setattr(guard, "IDLE_TIMEOUT_S", 4.0)
    (tmp_path / "lib").mkdir()
    with isolated_dirs(tmp_path):
        ra = RunningAgent(config([str(tmp_path / "lib")], str(tmp_path / "db"))).start()
        try:
            ra.idle(60)
            fds = len(os.listdir("/proc/self/fd"))
            conns = [socket.create_connection(("127.0.0.1", ra.port)) for _ in range(1000)]
            t0 = time.monotonic()
            for _ in range(20):  # the agent still answers, promptly
                st, body = ra.request("GET", "/status", timeout=10)
                assert st == 200, body
            assert time.monotonic() - t0 < 10
            req = urllib.request.Request(ra.url + "/health")
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
            closed = 0
            deadline = time.monotonic() + 15
            for c in conns:
                c.settimeout(max(0.1, deadline - time.monotonic()))
                with contextlib.suppress(OSError):
                    if c.recv(1) == b"":
                        closed += 1
                c.close()
            assert closed == 1000, f"{1000 - closed} idle connections outlived the idle limit"
            ra.wait_for(
                lambda: len(os.listdir("/proc/self/fd")) <= fds + 5, 10, "descriptors to be freed"
            )
        finally:
            ra.stop()
