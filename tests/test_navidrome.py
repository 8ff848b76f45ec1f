"""The Navidrome plugin (``plugins/navidrome``, ``nomarr-navidrome``) against a real agent.

Navidrome cannot run here, so its behaviour is reproduced from its source where the plugin's
output meets it, and written in this file independently of the plugin:

* tags: TagLib (pytaglib, the library Navidrome reads files with) reads the files the agent wrote;
  keys are lowercased and fed through the generated ``[Tags]`` aliases the way Navidrome's
  ``model/metadata`` does (aliases in order, ``float`` values that do not parse dropped), and stored
  as Navidrome's ``media_file.tags`` JSON (``{"name": [{"id": …, "value": …}]}``);
* ``.nsp`` files: comments stripped, JSON parsed, checked against Navidrome's criteria field list
  and operators, then translated to SQL the way ``persistence/criteria_sql.go`` does for the parts
  used (``exists (select 1 from json_tree(media_file.tags, '$.tag') where key='value' and
  CAST(value AS REAL) > ?)``, tag sort on ``[0].value``), run in SQLite, and the selected tracks
  compared with what the agent's own stored scores and tiers say;
* ``push``: a Subsonic stand-in served over HTTP with the spec's token auth and error codes, whose
  songs are the same files read back with TagLib (ids of its own, as Navidrome has).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import sqlite3
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import taglib
from aiohttp import web
from nomarr_client import SyncNomarrClient
from nomarr_navidrome import cli, subsonic, tagconfig
from nomarr_navidrome.push import OWN_MARK

from tests.server_harness import RunningAgent, config, isolated_dirs

pytestmark = [pytest.mark.slow, pytest.mark.corpus]

CLIPS = ["sh01", "sh03", "sh04", "sh09", "sh14", "sh15", "sh16", "sh19"]
BUILDS = [
    "msd-musicnn-1",
    "msd-musicnn-1-tflite",
]  # two builds of one model: onnx_ and tflite_ keys

# Navidrome's criteria fields (model/criteria/fields.go) plus the default-mapping tags used here.
ND_FIELDS = {
    "title",
    "album",
    "hascoverart",
    "tracknumber",
    "discnumber",
    "year",
    "date",
    "originalyear",
    "originaldate",
    "releaseyear",
    "releasedate",
    "size",
    "compilation",
    "missing",
    "explicitstatus",
    "dateadded",
    "datemodified",
    "discsubtitle",
    "comment",
    "lyrics",
    "sorttitle",
    "sortalbum",
    "sortartist",
    "sortalbumartist",
    "albumcomment",
    "catalognumber",
    "filepath",
    "filetype",
    "codec",
    "duration",
    "bitrate",
    "bitdepth",
    "samplerate",
    "bpm",
    "channels",
    "loved",
    "dateloved",
    "lastplayed",
    "daterated",
    "playcount",
    "rating",
    "averagerating",
    "albumrating",
    "albumloved",
    "albumplaycount",
    "albumlastplayed",
    "mbz_album_id",
    "mbz_artist_id",
    "mbz_recording_id",
    "library_id",
    "albumtype",
    "random",
    "genre",
    "mood",
}
ND_OPERATORS = {
    "is",
    "isnot",
    "gt",
    "lt",
    "contains",
    "notcontains",
    "startswith",
    "endswith",
    "intherange",
    "before",
    "after",
    "inthelast",
    "notinthelast",
    "inplaylist",
    "notinplaylist",
    "ismissing",
    "ispresent",
}
ND_COLUMNS = {
    "duration": "media_file.duration",
    "title": "media_file.title",
    "filepath": "media_file.path",
    "bpm": "media_file.bpm",  # Navidrome's own column, read from the file's BPM tag
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("navidrome")
    with isolated_dirs(base):
        yield base


@pytest.fixture(scope="module")
def agent(env: Path, corpus: Path) -> Any:
    lib = env / "music"
    lib.mkdir()
    for c in CLIPS:
        dst = lib / ("openclonk" if c in ("sh01", "sh04", "sh16") else "misc") / f"{c}.ogg"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(corpus / f"{c}.ogg", dst)
        dst.chmod(0o644)
    ra = RunningAgent(config([str(lib)], str(env / "db.sqlite"), models=BUILDS, workers=2)).start()
    try:
        ra.idle(400)
        yield ra, lib
    finally:
        ra.stop()


def nd(ra: RunningAgent, *args: str) -> int:
    return cli.main(["--url", ra.url, "--token", ra.token, *args])


def taglib_keys(path: Path) -> dict[str, list[str]]:
    with taglib.File(str(path)) as f:
        return {k.lower(): list(v) for k, v in f.tags.items()}


def agent_view(ra: RunningAgent) -> dict[str, dict[str, Any]]:
    """path → {"duration", "values": full key → score} from the agent's stored analyses (not from
    the files): score keys for every label, tier keys for the tier the agent assigned."""
    out: dict[str, dict[str, Any]] = {}
    with SyncNomarrClient(ra.url, ra.token) as c:
        for t in c.iter_tracks():
            d = c.track(t.id)
            vals: dict[str, float] = {}
            for a in d.analyses:
                for label, score in a.scores.items():
                    vals[a.tag_prefix + label] = round(score, 4)
                    if label in a.tiers:
                        vals[f"{a.tag_prefix}{label}_{a.tiers[label]}"] = round(score, 4)
            tiers = {
                lab: {a.tiers[lab] for a in d.analyses if lab in a.tiers}
                for a0 in d.analyses
                for lab in a0.tiers
            }
            out[t.path] = {
                "duration": t.duration,
                "values": vals,
                "tiers": tiers,
                # descriptors: BPM as the file's BPM tag holds it (Navidrome's bpm column, 0 when
                # unset), the Camelot code of the key
                "bpm": int(round(t.bpm)) if t.bpm else 0,
                "camelot": t.camelot,
            }
    return out


# -- Navidrome's side, reproduced ---------------------------------------------------------------


def strip_json_comments(text: str) -> str:
    """// and /* */ comments outside strings removed (what jsoncommentstrip does)."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def navidrome_db(files: list[Path], declared: dict[str, list[str]]) -> sqlite3.Connection:
    """media_file rows as Navidrome stores them: tags JSON keyed by declared tag name."""
    db = sqlite3.connect(":memory:")
    db.execute(
        "create table media_file (id integer primary key, path text, title text, duration real, "
        "bpm integer, tags text)"
    )
    for i, p in enumerate(files, 1):
        raw = taglib_keys(p)
        with taglib.File(str(p)) as f:
            length = float(f.length)
        tags: dict[str, list[dict[str, str]]] = {}
        for name, aliases in declared.items():
            vals: list[str] = []
            for a in aliases:
                for v in raw.get(a, []):
                    try:
                        float(v)
                    except ValueError:  # sanitize(): a float tag that does not parse is dropped
                        if not name.startswith("nom_dsp_"):  # (key descriptors are string tags)
                            continue
                    vals.append(v)
            if vals:
                tags[name] = [
                    {"id": hashlib.md5(f"{name}{v}".encode()).hexdigest(), "value": v} for v in vals
                ]
        if raw.get("genre"):
            tags["genre"] = [{"id": "g", "value": v} for v in raw["genre"]]
        bpm = raw.get("bpm") or raw.get("tbpm") or []
        db.execute(
            "insert into media_file values (?, ?, ?, ?, ?, ?)",
            (
                i,
                str(p),
                (raw.get("title") or [p.stem])[0],
                length,
                int(float(bpm[0])) if bpm else 0,
                json.dumps(tags),
            ),
        )
    return db


def to_sql(e: dict[str, Any], declared: set[str], args: list[Any]) -> str:
    ((op, val),) = e.items()
    o = op.lower()
    if o in ("all", "any"):
        return (
            "("
            + (" AND " if o == "all" else " OR ").join(to_sql(x, declared, args) for x in val)
            + ")"
        )
    ((field, value),) = val.items()
    cmp = {"gt": ">", "lt": "<", "is": "="}[o]
    args.append(value)
    if field in declared:  # a float tag (a string one when compared with text)
        cast = "value" if isinstance(value, str) else "CAST(value AS REAL)"
        return (
            f"exists (select 1 from json_tree(media_file.tags, '$.{field}') where key='value' "
            f"and {cast} {cmp} ?)"
        )
    return f"{ND_COLUMNS[field]} {cmp} ?"


def run_nsp(db: sqlite3.Connection, doc: dict[str, Any], declared: set[str]) -> list[str]:
    args: list[Any] = []
    conj = "all" if "all" in doc else "any"
    where = to_sql({conj: doc[conj]}, declared, args)
    sort = doc.get("sort", "title")
    if sort in declared:
        order = f"CAST(COALESCE(json_extract(media_file.tags, '$.{sort}[0].value'), '') AS REAL)"
    else:
        order = "random()" if sort == "random" else ND_COLUMNS[sort]
    sql = f"select path from media_file where {where} order by {order} {doc.get('order', 'asc')}"
    if doc.get("limit"):
        sql += f" limit {int(doc['limit'])}"
    return [r[0] for r in db.execute(sql, args)]


def check_nsp(doc: dict[str, Any], declared: set[str]) -> None:
    assert ("all" in doc) != ("any" in doc), "exactly one of all/any"

    def walk(e: Any) -> None:
        assert isinstance(e, dict) and len(e) == 1, e
        ((op, val),) = e.items()
        if op.lower() in ("all", "any"):
            assert isinstance(val, list) and val
            for x in val:
                walk(x)
            return
        assert op.lower() in ND_OPERATORS, op
        assert isinstance(val, dict) and len(val) == 1, val
        ((field, value),) = val.items()
        assert field.lower() in ND_FIELDS or field.lower() in declared, field
        if field in declared:
            assert op.lower() != "intherange"
            if field.endswith("_camelot"):  # a string tag: compared with "is" only
                assert op.lower() == "is" and isinstance(value, str), (op, value)
            else:
                assert isinstance(value, int | float) and not isinstance(value, bool)

    for e in doc["all" if "all" in doc else "any"]:
        walk(e)
    assert doc.get("sort", "title") in ND_FIELDS | declared
    assert doc.get("order", "asc") in ("asc", "desc")
    assert isinstance(doc["name"], str) and doc["name"] and isinstance(doc.get("comment", ""), str)


def expected(
    doc: dict[str, Any], declared: dict[str, list[str]], view: dict[str, dict[str, Any]]
) -> set[str]:
    """The playlist by the agent's stored scores and tiers."""

    def holds(e: dict[str, Any], tr: dict[str, Any]) -> bool:
        ((op, val),) = e.items()
        if op in ("all", "any"):
            res = [holds(x, tr) for x in val]
            return all(res) if op == "all" else any(res)
        ((field, value),) = val.items()
        if op == "is":  # the key playlists: a text tag equal to a Camelot code
            assert field.endswith("_camelot"), field
            return tr["camelot"] == value
        if field in declared:
            got = [tr["values"][a] for a in declared[field] if a in tr["values"]]
        else:
            assert field in ("duration", "bpm"), field
            got = [tr[field]]
        return any(v > value if op == "gt" else v < value for v in got)

    conj = "all" if "all" in doc else "any"
    return {p for p, tr in view.items() if holds({conj: doc[conj]}, tr)}


# -- config -------------------------------------------------------------------------------------


USER_TOML = """# my Navidrome
MusicFolder = "/music"
PlaylistsPath = "playlists"
EnableSharing = true

[Tags.genre]
Split = [";"]

[Scanner]
Schedule = "@every 1h"
"""


def test_config_aliases_are_what_taglib_reads(agent, tmp_path, capsys):
    ra, lib = agent
    files = sorted(lib.rglob("*.ogg"))
    out = tmp_path / "navidrome.toml"
    out.write_text(USER_TOML)
    assert nd(ra, "config", "--out", str(out)) == 0
    text = out.read_text()
    doc = tomllib.loads(text)
    # the user's settings survive, untouched and in place
    assert text.startswith(USER_TOML.rstrip())
    assert doc["MusicFolder"] == "/music" and doc["Scanner"] == {"Schedule": "@every 1h"}
    assert doc["Tags"]["genre"] == {"Split": [";"]}
    ours = {k: v for k, v in doc["Tags"].items() if k.startswith("nom_")}
    assert len(ours) > 50
    in_files: set[str] = set()
    for p in files:
        in_files |= {k for k in taglib_keys(p) if k.startswith("nom:")}
    aliases = {a for v in ours.values() for a in v["Aliases"]}
    assert aliases <= in_files, sorted(aliases - in_files)[:5]
    # every score and tier key in the files is declared (provenance is a hash, not a float)
    assert {k for k in in_files if not k.endswith("_provenance")} == aliases
    for name, conf in ours.items():
        # floats, except the key descriptors (Camelot and ID3 key names are text)
        assert re.fullmatch(r"nom_[a-z0-9_]+", name)
        assert conf["Type"] == "float" or (conf["Type"] == "string" and name.startswith("nom_dsp_"))
    # one name per meaning across builds: the onnx and the tflite key of a label share a tag
    happy = ours["nom_mood_happy"]["Aliases"]
    assert sorted(k.split("_", 1)[0] for k in happy) == ["nom:onnx", "nom:tflite"]
    assert all(k.endswith("_msd50_1_happy") for k in happy)
    # idempotent: a second run leaves the bytes alone, stdout output equals the merged block
    assert nd(ra, "config", "--out", str(out)) == 0
    assert out.read_text() == text
    capsys.readouterr()
    assert nd(ra, "config") == 0
    printed = capsys.readouterr().out
    assert printed in text and tomllib.loads(printed)["Tags"] == ours


def test_config_refuses_a_broken_file_and_keeps_it(agent, tmp_path, capsys):
    ra, _ = agent
    out = tmp_path / "navidrome.toml"
    out.write_text("MusicFolder = \n")
    assert nd(ra, "config", "--out", str(out)) == 1
    assert "not valid TOML" in capsys.readouterr().err
    assert out.read_text() == "MusicFolder = \n"
    # a hand-written inline nom_ tag cannot be rewritten safely: refused, file untouched
    bad = 'Tags = { nom_mood_happy = { Aliases = ["x"] } }\n'
    out.write_text(bad)
    assert nd(ra, "config", "--out", str(out)) == 1
    assert "cannot rewrite" in capsys.readouterr().err and out.read_text() == bad


# -- smart playlists ----------------------------------------------------------------------------


def test_nsp_rules_select_what_the_agent_says(agent, tmp_path, capsys):
    ra, lib = agent
    conf = tmp_path / "navidrome.toml"
    assert nd(ra, "config", "--out", str(conf)) == 0
    declared = {
        n.lower(): [a.lower() for a in c["Aliases"]]
        for n, c in tomllib.loads(conf.read_text())["Tags"].items()
    }
    pls = tmp_path / "playlists"
    (pls).mkdir()
    (pls / "mine.nsp").write_text('{"name": "Mine", "all": [{"is": {"loved": true}}]}')
    assert nd(ra, "playlists", "--out", str(pls), "--navidrome-config", str(conf)) == 0
    files = sorted(pls.glob("nomarr-*.nsp"))
    names = {p.name for p in files}
    assert {
        "nomarr-energetic.nsp",
        "nomarr-calm.nsp",
        "nomarr-focus.nsp",
        "nomarr-party.nsp",
    } <= names
    assert any(n.startswith("nomarr-genre-") for n in names)  # per label, high tier
    assert any(
        n.count("-") == 2 and not n.startswith("nomarr-genre-") for n in names
    )  # genre × mood
    db = navidrome_db(sorted(lib.rglob("*.ogg")), declared)
    view = agent_view(ra)
    assert len(view) == len(CLIPS)
    sizes = []
    for p in files:
        doc = json.loads(strip_json_comments(p.read_text()))
        check_nsp(doc, set(declared))
        got = run_nsp(db, doc, set(declared))
        want = expected(doc, declared, view)
        assert set(got) == want, (p.name, got, want)
        sizes.append(len(got))
        m = re.fullmatch(r"nomarr-(?:mood|genre)-(.+)\.nsp", p.name)
        if (
            m
        ):  # per label: exactly the tracks the agent put in the high tier, whatever the config says
            label = m.group(1).replace("-", "_")
            assert set(got) == {
                q for q, tr in view.items() if "high" in tr["tiers"].get(label, ())
            }, p.name
        if doc.get("sort") in declared and len(got) > 1:  # ordered by the agent's score, best first
            keys = declared[doc["sort"]]
            scores = [
                next(view[g]["values"][a] for a in keys if a in view[g]["values"]) for g in got
            ]
            assert scores == sorted(scores, reverse=True), p.name
    # the rules discriminate: something selected, and not everything everywhere
    assert max(sizes) > 0 and min(sizes) < len(CLIPS)
    # a re-run changes nothing; the user's own .nsp is never touched
    capsys.readouterr()
    assert nd(ra, "playlists", "--out", str(pls), "--navidrome-config", str(conf)) == 0
    assert f"0 written, {len(files)} unchanged, 0 removed" in capsys.readouterr().out
    assert (pls / "mine.nsp").read_text().startswith('{"name": "Mine"')


def test_playlists_drop_tags_navidrome_does_not_know_and_remove_stale_files(agent, tmp_path):
    ra, _ = agent
    conf = tmp_path / "navidrome.toml"
    conf.write_text('MusicFolder = "/music"\n')  # nothing declared yet: no tag can be used
    pls = tmp_path / "pl"
    assert nd(ra, "playlists", "--out", str(pls)) == 0
    before = {p.name for p in pls.glob("*.nsp")}
    assert before
    assert nd(ra, "playlists", "--out", str(pls), "--navidrome-config", str(conf)) == 0
    assert not list(pls.glob("*.nsp"))  # every generated file needed an undeclared tag: removed


# -- push over Subsonic -------------------------------------------------------------------------


class SubsonicStandIn:
    """The Subsonic endpoints ``push`` uses, with the spec's auth and error codes, over the files of
    the library (read with TagLib) plus a decoy that shares a title but not a duration."""

    def __init__(self, lib: Path, users: dict[str, str], real_paths: bool = True) -> None:
        self.users = users
        self.songs: dict[str, dict[str, Any]] = {}
        self.by_id_path: dict[str, Path] = {}
        for p in sorted(lib.rglob("*.ogg")):
            with taglib.File(str(p)) as f:
                t = {k.lower(): v for k, v in f.tags.items()}
                dur = int(round(f.length))
            sid = "mf" + hashlib.sha1(str(p).encode()).hexdigest()[:10]
            title = (t.get("title") or [p.stem])[0]
            artist = (t.get("artist") or ["[Unknown Artist]"])[0]
            album = (t.get("album") or ["[Unknown Album]"])[0]
            path = str(p.relative_to(lib)) if real_paths else f"{artist}/{album}/{title}.ogg"
            self.songs[sid] = {
                "id": sid,
                "title": title,
                "artist": artist,
                "album": album,
                "duration": dur,
                "path": path,
                "suffix": "ogg",
                "isDir": False,
            }
            self.by_id_path[sid] = p
            if p.stem == "sh01":  # same title and artist, another length: must never be matched
                self.songs["decoy"] = {
                    **self.songs[sid],
                    "id": "decoy",
                    "duration": dur + 110,
                    "path": "Live/Island Dreams (live).mp3",
                    "album": "OpenClonk",
                }
        self.playlists: dict[str, dict[str, Any]] = {}
        self.plays: dict[str, tuple[int, str]] = {}  # song id -> (playCount, played)
        self.starred: set[str] = set()
        self.calls: list[str] = []
        self._next = 1
        self.url = ""

    def _fail(self, code: int, message: str) -> web.Response:
        return web.json_response(
            {
                "subsonic-response": {
                    "status": "failed",
                    "version": "1.16.1",
                    "error": {"code": code, "message": message},
                }
            }
        )

    def _ok(self, **body: Any) -> web.Response:
        return web.json_response(
            {"subsonic-response": {"status": "ok", "version": "1.16.1", **body}}
        )

    def _song(self, sid: str) -> dict[str, Any]:
        """A song with the user's play count, last play and star, as Navidrome reports them."""
        out = dict(self.songs[sid])
        if sid in self.plays:
            out["playCount"], out["played"] = self.plays[sid]
        if sid in self.starred:
            out["starred"] = "2024-05-01T10:00:00Z"
        return out

    def _pl(self, pl: dict[str, Any], entries: bool = False) -> dict[str, Any]:
        d = {k: pl[k] for k in ("id", "name", "comment", "owner", "public")}
        d["songCount"] = len(pl["songs"])
        if entries:
            d["entry"] = [self.songs[s] for s in pl["songs"]]
        return d

    async def handle(self, request: web.Request) -> web.Response:
        q = request.rel_url.query.copy()
        if request.method == "POST":
            q.extend(await request.post())
        endpoint = request.match_info["endpoint"].removesuffix(".view")
        self.calls.append(endpoint)
        for req in ("u", "v", "c"):
            if req not in q:
                return self._fail(10, f"Required parameter '{req}' is missing")
        user = q["u"]
        if "t" in q and "s" in q:
            ok = (
                user in self.users
                and hashlib.md5((self.users[user] + q["s"]).encode()).hexdigest() == q["t"]
            )
        elif "p" in q:
            ok = self.users.get(user) == q["p"]
        else:
            return self._fail(10, "Required parameter 't' and 's', or 'p', is missing")
        if not ok:
            return self._fail(40, "Wrong username or password")
        if endpoint == "ping":
            return self._ok()
        if endpoint == "getStarred2":
            return self._ok(starred2={"song": [self._song(s) for s in self.starred]})
        if endpoint == "search3":
            words = re.findall(r"\w+", q.get("query", "").casefold())
            if not words:  # Navidrome: an empty query pages through the whole library
                off, n = int(q.get("songOffset", 0)), int(q.get("songCount", 20))
                every = [self._song(s) for s in sorted(self.songs)]
                return self._ok(searchResult3={"song": every[off : off + n]})
            hits = []
            for s in self.songs.values():
                text = " " + " ".join(
                    re.findall(r"\w+", f"{s['title']} {s['artist']} {s['album']}".casefold())
                )
                if all(f" {w}" in text for w in words):
                    hits.append(s)
            return self._ok(searchResult3={"song": hits[: int(q.get("songCount", 20))]})
        if endpoint == "getPlaylists":
            mine = [
                self._pl(p) for p in self.playlists.values() if p["owner"] == user or p["public"]
            ]
            return self._ok(playlists={"playlist": mine})
        if endpoint == "getPlaylist":
            pl = self.playlists.get(q.get("id", ""))
            if pl is None:
                return self._fail(70, "playlist not found")
            return self._ok(playlist=self._pl(pl, True))
        if endpoint == "createPlaylist":
            songs = q.getall("songId", [])
            if any(s not in self.songs for s in songs):
                return self._fail(70, "song not found")
            if "playlistId" in q:
                pl = self.playlists.get(q["playlistId"])
                if pl is None:
                    return self._fail(70, "playlist not found")
                if pl["owner"] != user:
                    return self._fail(50, "not the owner")
                pl["songs"] = songs
            elif "name" in q:
                pl = {
                    "id": f"pl{self._next}",
                    "name": q["name"],
                    "comment": "",
                    "owner": user,
                    "public": False,
                    "songs": songs,
                }
                self._next += 1
                self.playlists[pl["id"]] = pl
            else:
                return self._fail(10, "Required parameter 'name' is missing")
            return self._ok(playlist=self._pl(pl, True))
        if endpoint == "updatePlaylist":
            if "playlistId" not in q:
                return self._fail(10, "Required parameter 'playlistId' is missing")
            pl = self.playlists.get(q["playlistId"])
            if pl is None:
                return self._fail(70, "playlist not found")
            if pl["owner"] != user:
                return self._fail(50, "not the owner")
            if "comment" in q:
                pl["comment"] = q["comment"]
            if "public" in q:
                pl["public"] = q["public"] == "true"
            return self._ok()
        return web.json_response({"error": "not found"}, status=404)

    def writes(self) -> list[str]:
        return [
            c for c in self.calls if c in ("createPlaylist", "updatePlaylist", "deletePlaylist")
        ]


@pytest.fixture
def subsonic_server(agent) -> Any:
    _, lib = agent
    server = SubsonicStandIn(lib, {"alice": "s3cret pass", "bob": "other"})
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/rest/{endpoint}", server.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
            state["stop"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"].wait()
            await runner.cleanup()

        asyncio.run(main())

    th = threading.Thread(target=run, daemon=True)
    th.start()
    assert ready.wait(10)
    yield server
    state["loop"].call_soon_threadsafe(state["stop"].set)
    th.join(10)


def test_token_is_the_spec_md5():
    # the worked example in the Subsonic API documentation
    assert subsonic.token("sesame", "c19b2d") == "26719a1196d2a940705a59634eb18eab"


def test_push_similar_creates_then_updates_in_place(agent, subsonic_server, capsys, monkeypatch):
    ra, lib = agent
    srv = subsonic_server
    monkeypatch.setenv("NAVIDROME_URL", srv.url)
    monkeypatch.setenv("NAVIDROME_USER", "alice")
    monkeypatch.setenv("NAVIDROME_PASSWORD", "s3cret pass")
    seed = str(lib / "openclonk" / "sh01.ogg")
    # dry run: everything resolved, nothing written
    assert nd(ra, "push", "similar", "--track", seed, "-n", "7", "--dry-run") == 0
    assert "would create" in capsys.readouterr().out and not srv.writes() and not srv.playlists
    assert nd(ra, "push", "similar", "--track", seed, "-n", "7") == 0
    assert "created" in capsys.readouterr().out
    (pl,) = srv.playlists.values()
    assert (
        pl["name"] == "Similar to Island Dreams"
        and pl["owner"] == "alice"
        and OWN_MARK in pl["comment"]
    )
    # every song is the agent's track, found by path, in the agent's order, seed first, no decoy
    with SyncNomarrClient(ra.url, ra.token) as c:
        hits = c.similar(path=seed, limit=7, distinct=True)
    want = [seed] + [h.path for h in hits.items]
    assert [str(srv.by_id_path[s]) for s in pl["songs"]] == want
    assert "decoy" not in pl["songs"]
    # a second push with the same answer is a no-op: read calls only
    srv.calls.clear()
    assert nd(ra, "push", "similar", "--track", seed, "-n", "7") == 0
    assert "unchanged" in capsys.readouterr().out and not srv.writes()
    # a different answer replaces the songs of the same playlist (no second playlist)
    assert nd(ra, "push", "similar", "--track", seed, "-n", "3") == 0
    assert "updated" in capsys.readouterr().out
    assert len(srv.playlists) == 1 and len(pl["songs"]) == 4 and srv.writes() == ["createPlaylist"]


def test_push_maps_by_tags_and_duration_when_paths_are_fake(agent, subsonic_server, capsys):
    ra, lib = agent
    srv = subsonic_server
    for s in srv.songs.values():  # Navidrome's default: a made-up "Artist/Album/Title.ext" path
        s["path"] = f"{s['artist']}/{s['album']}/{s['title']}.{s['suffix']}"
    args = ["--navidrome", srv.url, "--user", "alice", "--password", "s3cret pass"]
    assert (
        nd(ra, *args, "push", "mood", "--label", "electronic", "-n", "8", "--name", "Electro") == 0
    )
    out = capsys.readouterr().out
    (pl,) = srv.playlists.values()
    with SyncNomarrClient(ra.url, ra.token) as c:
        want = [h.path for h in c.mood_playlist("electronic", limit=8).items]
    assert [
        str(srv.by_id_path[s]) for s in pl["songs"]
    ] == want  # title-less files matched by file name
    assert "decoy" not in pl["songs"] and "8 songs" in out


def test_push_leaves_foreign_playlists_alone_and_reports_auth_errors(
    agent, subsonic_server, capsys
):
    ra, lib = agent
    srv = subsonic_server
    srv.playlists["x"] = {
        "id": "x",
        "name": "Radio: Island Dreams",
        "comment": "hand made",
        "owner": "alice",
        "public": False,
        "songs": ["decoy"],
    }
    args = ["--navidrome", srv.url, "--user", "alice", "--password", "s3cret pass"]
    seed = str(lib / "openclonk" / "sh01.ogg")
    assert nd(ra, *args, "push", "radio", "--track", seed, "-n", "5") == 1
    err = capsys.readouterr().err
    assert "not made by nomarr-navidrome" in err and err.count("\n") == 1
    assert srv.playlists["x"]["songs"] == ["decoy"] and not srv.writes()
    bad = ["--navidrome", srv.url, "--user", "alice", "--password", "wrong"]
    assert nd(ra, *bad, "push", "radio", "--track", seed) == 1
    err = capsys.readouterr().err
    assert "Subsonic error 40" in err and "wrong" in err and "wrong Navidrome user" in err
    assert (
        nd(
            ra,
            "--navidrome",
            "ftp://x",
            "--user",
            "a",
            "--password",
            "b",
            "push",
            "radio",
            "--track",
            seed,
        )
        == 1
    )
    assert "not an http(s) URL" in capsys.readouterr().err


def test_unreachable_agent_is_one_line(tmp_path, capsys):
    assert cli.main(["--url", "http://127.0.0.1:9", "--token", "x" * 20, "config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nomarr-navidrome: error: ") and err.count("\n") == 1


def test_merge_keeps_unrelated_tables_and_drops_stale_nom_tables():
    keys = [tagconfig.Family.of("nom:onnx_musicnn_msd-1_msd50_1_")]
    assert keys[0] == tagconfig.Family("musicnn", "msd50")
    existing = (
        USER_TOML + '\n[Tags.nom_mood_gone]\nAliases = ["nom:old_x_y_z_1_gone"]\nType = "float"\n'
    )
    empty = tagconfig.TagSet({})
    merged = tagconfig.merge(existing, empty)
    doc = tomllib.loads(merged)
    assert "nom_mood_gone" not in doc["Tags"] and doc["Tags"]["genre"] == {"Split": [";"]}
    assert tagconfig.merge(merged, empty) == merged


# -- listens and the taste playlists ------------------------------------------------------------


def test_listens_become_the_agents_and_for_you_is_pushed(
    agent, subsonic_server, capsys, monkeypatch
):
    ra, lib = agent
    srv = subsonic_server
    monkeypatch.setenv("NAVIDROME_URL", srv.url)
    monkeypatch.setenv("NAVIDROME_USER", "alice")
    monkeypatch.setenv("NAVIDROME_PASSWORD", "s3cret pass")
    ids = {p.stem: sid for sid, p in srv.by_id_path.items()}
    srv.plays = {
        ids["sh01"]: (3, "2024-05-01T20:00:00Z"),
        ids["sh04"]: (1, "2024-05-02T08:30:00+02:00"),
    }
    srv.plays["decoy"] = (2, "2024-05-03T00:00:00Z")  # a song the agent has no file of
    srv.starred = {ids["sh16"]}
    assert nd(ra, "listens") == 0
    out = capsys.readouterr().out
    assert (
        "6 new listens (4 matched to the agent's library, 2 not)" in out
        and "1 starred (1 matched)" in out
    )
    with SyncNomarrClient(ra.url, ra.token) as c:
        page = c.listens("alice", limit=10)
        by_title = {x.title for x in page.items if x.recording_id}
        assert by_title == {"Island Dreams", "The Skylands"}
        # the same counts again: nothing new; two more plays of sh01: two listens, the newest exact
        assert nd(ra, "listens") == 0
        assert "0 new listens" in capsys.readouterr().out
        srv.plays[ids["sh01"]] = (5, "2024-06-01T12:00:00Z")
        assert nd(ra, "listens", "--as", "alice") == 0
        assert "2 new listens" in capsys.readouterr().out
        newest = c.listens("alice", limit=1).items[0]
        assert newest.ts == 1717243200.0 and not newest.estimated
        assert c.taste("alice").liked == 3  # sh01, sh04, and the starred sh16
    # "For you": the agent's recommendations, mapped to Navidrome songs, as a playlist
    assert nd(ra, "push", "for-you", "-n", "4", "--dry-run") == 0
    assert "would create" in capsys.readouterr().out and not srv.writes()
    # "Rediscover": liked (five plays; a star) and not played for 90 days: sh01 and sh16
    assert nd(ra, "push", "rediscover", "--for", "alice") == 0
    (red,) = [p for p in srv.playlists.values() if p["name"] == "Rediscover (alice)"]
    assert set(red["songs"]) == {ids["sh01"], ids["sh16"]}
    assert nd(ra, "push", "for-you", "-n", "4") == 0
    (pl,) = [p for p in srv.playlists.values() if p["name"] == "For you (alice)"]
    assert len(pl["songs"]) == 4 and "decoy" not in pl["songs"]
    heard = {ids["sh01"], ids["sh04"]}  # played in May 2024: long ago, so allowed back in
    assert set(pl["songs"]) - heard
