"""The beets plugin driven by real beets (the ``beet`` command from PyPI's beets, in a subprocess)
against a real agent on a temporary library: import with analysis, typed range queries, file tags
read back with mutagen, ``beet update``/``beet write`` round trips, similarity, and the agent being
down or refusing the token."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mutagen
import pytest
from nomarr.config import Library

from tests.server_harness import RunningAgent, config, isolated_dirs

pytest.importorskip("beets")
pytest.importorskip("beetsplug.nomarr")

BEET = Path(sys.executable).with_name("beet")
CLIPS = ["sh01.ogg", "sh03.ogg", "sh05.ogg", "sh08.ogg"]
PREFIX = "nom:onnx_musicnn_msd-1_msd50_1_"
FPREFIX = "nom_onnx_musicnn_msd-1_msd50_1_"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _nom(path: Path) -> dict[str, str]:
    """The nom: keys of a file, read with mutagen (not with the plugin's own code)."""
    f = mutagen.File(path)
    return {k.lower(): v for k, v in f.tags if k.lower().startswith("nom:")}


class Beets:
    """A private beets setup (BEETSDIR, config, library) and a way to run ``beet``."""

    def __init__(self, base: Path, url: str, token: str, music: Path, **nomarr: Any) -> None:
        self.dir = base / "beetsdir"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.music = music
        self.config = self.dir / "config.yaml"
        opts = {"url": url, "token": token, **nomarr}
        lines = [
            f"directory: {music}",
            f"library: {self.dir / 'library.db'}",
            "plugins: nomarr",
            "import:",
            "  copy: yes",
            "  write: no",
            "  quiet: yes",
            "  log: " + str(self.dir / "import.log"),
            "nomarr:",
        ] + [f"  {k}: {v}" for k, v in opts.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BEETSDIR": str(self.dir), "HOME": str(self.dir)}
        r = subprocess.run(
            [str(BEET), "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"beet {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
            )
        return r

    def paths(self, *query: str) -> set[Path]:
        out = self.run("ls", "-p", *query).stdout
        return {Path(line) for line in out.splitlines() if line.strip()}

    def field(self, field: str, path: Path) -> str:
        out = self.run("ls", "-f", "${" + field + "}", f"path:{path}").stdout
        return out.strip()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Any:
    base = tmp_path_factory.mktemp("beets")
    with isolated_dirs(base):
        src = base / "incoming"
        src.mkdir()
        for name in CLIPS:
            shutil.copy(corpus / name, src / name)
            (src / name).chmod(0o644)
        before = {p.name: _sha(p) for p in src.iterdir()}
        music = base / "music"
        music.mkdir()
        # the agent watches nothing and writes nothing itself: every tag in the files is the plugin's
        cfg = config([str(music)], str(base / "agent.db"), write_tags=False)
        cfg.libraries = [Library(path=str(music), watch="off")]
        ra = RunningAgent(cfg).start()
        try:
            beets = Beets(base, ra.url, ra.token, music)
            r = beets.run("import", "-A", str(src))
            ra.idle(300)  # the plugin queued the imported files for the agent's index
            yield ra, beets, src, before, r
        finally:
            ra.stop()


def test_import_stores_typed_scores_and_writes_only_library_files(setup: Any) -> None:
    ra, beets, src, before, imp = setup
    lib_files = beets.paths()
    assert len(lib_files) == len(CLIPS), imp.stderr
    assert all(beets.music in p.parents for p in lib_files)
    # copy mode: the sources are byte-identical (analysis never wrote there)
    assert {p.name: _sha(p) for p in src.iterdir()} == before
    assert all(not _nom(src / n) for n in CLIPS)
    # the library files carry the agent's keys: every score, one tier per label, the provenance
    for p in lib_files:
        tags = _nom(p)
        scores = {
            k
            for k in tags
            if k.startswith(PREFIX) and not k.endswith(("_high", "_medium", "_low", "provenance"))
        }
        assert len(scores) == 50, p
        tiers = [k for k in tags if k.startswith(PREFIX + "happy_")]
        assert len(tiers) == 1 and tags[tiers[0]] == tags[PREFIX + "happy"]
        assert all(len(v.split(".")[1]) == 4 for k, v in tags.items() if k in scores)
        assert tags[PREFIX + "provenance"]


def test_scores_are_the_agents_and_range_queries_select_the_right_items(setup: Any) -> None:
    ra, beets, src, _, _ = setup
    # the numbers are the agent's own analysis of each file (an upload: the agent does not store it)
    for p in beets.paths():
        st, body = ra.request(
            "POST",
            "/analyze?filename=x.ogg",
            raw=p.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert st == 200, body
        want = body["models"]["msd-musicnn-1"]["scores"]
        assert abs(float(beets.field(FPREFIX + "happy", p)) - want["happy"]) < 1e-4
        assert abs(float(_nom(p)[PREFIX + "rock"]) - want["rock"]) < 1e-4
    # pick a label and threshold that split these files, from the files themselves
    files = sorted(beets.paths())
    by_label: dict[str, list[float]] = {}
    for p in files:
        for k, v in _nom(p).items():
            lab = k[len(PREFIX) :]
            if k.startswith(PREFIX) and "_" not in lab and lab != "provenance":
                by_label.setdefault(lab, []).append(float(v))
    label = max(by_label, key=lambda lab: sorted(by_label[lab])[2] - sorted(by_label[lab])[1])
    vals = sorted(by_label[label])
    lo = round((vals[1] + vals[2]) / 2, 4)
    expected = {p for p in files if float(_nom(p)[PREFIX + label]) >= lo}
    assert 0 < len(expected) < len(files)
    got = beets.paths(f"{FPREFIX}{label}:{lo}..1")
    assert got == expected
    # numeric, not text: a text match on "0.5" would find other items
    assert beets.paths(f"{FPREFIX}{label}:..{lo}") == set(files) - expected


def test_update_and_write_round_trip(setup: Any) -> None:
    _, beets, _, _, _ = setup
    p = sorted(beets.paths())[0]
    # a value changed in the file is read back by `beet update`
    f = mutagen.File(p)
    f[PREFIX + "sad"] = "0.1234"
    f.save()
    beets.run(
        "update", "-M"
    )  # -M: the file's other tags would make beets move it; not what is tested
    assert beets.field(FPREFIX + "sad", p) == "0.1234"
    # a value changed in beets is written by `beet write`, in the agent's 4-decimal form; when the
    # tier moves, the stale tier key leaves the file
    old_tier = [k for k in _nom(p) if k.startswith(PREFIX + "sad_")][0]
    new_tier = PREFIX + ("sad_low" if not old_tier.endswith("_low") else "sad_high")
    beets.run(
        "modify",
        "-y",
        "-W",
        "-M",
        f"path:{p}",
        f"{FPREFIX}sad=0.9",
        f"{old_tier.replace('nom:', 'nom_')}!",
        f"{new_tier.replace('nom:', 'nom_')}=0.9",
    )
    beets.run("write", f"path:{p}")
    tags = _nom(p)
    assert tags[PREFIX + "sad"] == "0.9000"
    assert tags.get(new_tier) == "0.9000" and old_tier not in tags
    assert len([k for k in tags if k.startswith(PREFIX + "sad_")]) == 1


def test_similar_and_mood_playlist_answer_with_beets_items(setup: Any, tmp_path: Path) -> None:
    ra, beets, _, _, _ = setup
    files = sorted(beets.paths())
    st, body = ra.request("GET", "/status")
    assert body["tracks"].get("ok") == len(CLIPS)  # the plugin had the agent index the imports
    seed = files[0]
    r = beets.run("nomarr-similar", f"path:{seed}", "-n", "3", "-f", "$path")
    lines = [ln.split("  ", 1) for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 3, r.stdout + r.stderr
    got = [Path(p) for _, p in lines]
    assert seed not in got and set(got) <= set(files)
    sims = [float(s) for s, _ in lines]
    assert sims == sorted(sims, reverse=True)
    # the order is the agent's
    st, body = ra.request("POST", "/similar", {"path": str(seed), "limit": 3})
    assert [Path(h["path"]) for h in body["items"]] == got
    m3u = tmp_path / "rock.m3u"
    r = beets.run("nomarr-playlist", "--mood", "rock", "-n", "4", "-o", str(m3u))
    text = m3u.read_text().splitlines()
    assert text[0] == "#EXTM3U" and {Path(x) for x in text if not x.startswith("#")} == set(files)


def test_similar_for_a_library_the_agent_cannot_see(setup: Any, tmp_path: Path) -> None:
    """A second beets library outside the agent's roots: the seed is uploaded and its embedding
    queried; answers map back by artist + title + duration, and the seed's twin is left out."""
    ra, beets, src, _, _ = setup
    music = tmp_path / "elsewhere"
    music.mkdir()
    other = Beets(tmp_path / "other", ra.url, ra.token, music, auto="no")
    other.run("import", "-A", str(src))
    files = sorted(other.paths())
    assert len(files) == len(CLIPS) and all(not _nom(p) for p in files)
    seed = files[0]
    r = other.run("nomarr-similar", f"path:{seed}", "-n", str(len(CLIPS)), "-f", "$path")
    got = [Path(ln.split("  ", 1)[1]) for ln in r.stdout.splitlines() if ln.strip()]
    assert len(got) == len(CLIPS) - 1 and seed not in got and set(got) <= set(files), (
        r.stdout + r.stderr
    )


def test_rerun_skips_current_items_and_force_goes_by_path(setup: Any) -> None:
    _, beets, _, _, _ = setup
    r = beets.run("nomarr")
    assert f"{len(CLIPS)} already current" in r.stdout, r.stdout
    r = beets.run("nomarr", "-f", "-W")
    assert f"{len(CLIPS)} analysed ({len(CLIPS)} by path, 0 uploaded)" in r.stdout, r.stdout


def test_agent_down_or_wrong_token_is_one_line_and_import_goes_on(
    setup: Any, tmp_path: Path
) -> None:
    _, beets, src, _, _ = setup
    music = tmp_path / "music2"
    music.mkdir()
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Beets(tmp_path / "down", f"http://127.0.0.1:{port}", "x", music)
    r = down.run("import", "-A", str(src))
    assert len(down.paths()) == len(CLIPS)  # imported all the same
    errors = [ln for ln in r.stderr.splitlines() if "nomarr" in ln]
    assert len(errors) == 1 and "no agent reachable" in errors[0], r.stderr
    assert all(not _nom(p) for p in down.paths())
    r = down.run("nomarr", check=False)
    assert r.returncode != 0 and "no agent reachable" in r.stderr and "Traceback" not in r.stderr
    music3 = tmp_path / "music3"
    music3.mkdir()
    wrong = Beets(
        tmp_path / "wrong",
        beets.config.read_text().split("url: ")[1].split()[0],
        "not-the-token",
        music3,
    )
    r = wrong.run("import", "-A", str(src))
    errors = [ln for ln in r.stderr.splitlines() if "nomarr" in ln]
    assert (
        len(wrong.paths()) == len(CLIPS) and len(errors) == 1 and "refused the token" in errors[0]
    ), r.stderr
    r = wrong.run("nomarr", check=False)
    assert r.returncode != 0 and "refused the token" in r.stderr and "Traceback" not in r.stderr
    # a model the agent does not have: one line naming it, the import goes on
    music4 = tmp_path / "music4"
    music4.mkdir()
    url, token = (
        beets.config.read_text().split("url: ")[1].split()[0],
        beets.config.read_text().split("token: ")[1].split()[0],
    )
    nomodel = Beets(tmp_path / "nomodel", url, token, music4, models="[discogs-effnet-bsdynamic-1]")
    r = nomodel.run("import", "-A", str(src))
    errors = [ln for ln in r.stderr.splitlines() if "nomarr" in ln]
    assert len(nomodel.paths()) == len(CLIPS) and len(errors) == 1, r.stderr
    assert "discogs-effnet-bsdynamic-1" in errors[0] and "nomarr models pull" in errors[0]


def test_plugin_loads_no_numpy_or_onnxruntime() -> None:
    code = (
        "import sys, beets.ui, beetsplug.nomarr; "
        "bad = [m for m in ('numpy', 'onnxruntime', 'agent', 'av') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_play_counts_become_listens_and_for_you_answers_with_items(setup: Any) -> None:
    """mpdstats' play_count/skip_count/last_played go to the agent; the recommendations come back
    as beets items with their reasons."""
    ra, beets, _, _, _ = setup
    files = sorted(beets.paths())
    liked, skipped = files[0], files[1]
    beets.run("modify", "-y", f"path:{liked}", "play_count=4", "last_played=1700000000")
    beets.run("modify", "-y", f"path:{skipped}", "skip_count=3", "last_played=1700000100")
    out = beets.run("nomarr-listens", "--user", "bea").stdout
    assert "2 items with counts: 7 new listens for bea (7 matched" in out, out
    out = beets.run("nomarr-listens", "--user", "bea").stdout
    assert "0 new listens" in out
    from nomarr_client import SyncNomarrClient

    with SyncNomarrClient(ra.url, ra.token) as c:
        outcomes = sorted(x.outcome for x in c.listens("bea").items)
        assert outcomes == ["completed"] * 4 + ["skipped"] * 3
    r = beets.run("nomarr-foryou", "--user", "bea", "--mode", "discovery", "-f", "$path")
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == len(files) - 2  # every item never played, nothing else
    assert all("because you played" in x for x in lines)
    assert not any(str(liked) in x or str(skipped) in x for x in lines)
    r = beets.run("nomarr-foryou", "--user", "nobody", check=False)
    assert r.returncode != 0 and "no listens stored" in r.stderr
