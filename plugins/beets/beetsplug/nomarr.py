"""nomarr for beets: mood/genre scores from a nomarr agent as typed beets fields and ``nom:`` tags.

The analysis runs in the agent (any machine on the LAN, any accelerator); this plugin only talks
HTTP through the thin ``nomarr_client``, so beets never loads numpy or onnxruntime.

Keys follow DESIGN §2: the file key ``nom:<prefix><tag>`` is the beets field ``nom_<prefix><tag>``
(beets field names cannot hold ``:``). Score and tier fields are floats, so range queries such as
``beet ls 'nom_onnx_musicnn_msd-1_msd50_1_happy:0.7..1'`` work; the provenance field says which
model build and settings produced the numbers, and an item carrying the agent's current provenance
is skipped unless ``-f``.

Field names depend on which models the agent runs, so they are learnt from the agent's answers and
remembered in ``nomarr.json`` beside beets' config; every name there is registered as a typed flexible
field and as a media field at start-up (``beet update`` reads them back, ``beet write`` writes them).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import beets
import mediafile
from beets import ui, util
from beets.dbcore import types
from beets.dbcore.query import AndQuery, MatchQuery, PathQuery
from beets.plugins import BeetsPlugin
from mediafile import MediaField, MediaFile
from mediafile.storage import (
    ASFStorageStyle,
    MP3DescStorageStyle,
    MP4StorageStyle,
    StorageStyle,
)
from nomarr_client import (
    AgentUnavailable,
    BadRequest,
    Forbidden,
    NomarrError,
    NotFound,
    SyncNomarrClient,
    Unauthorized,
)
from nomarr_client import models as api
from nomarr_client import tags as grammar
from nomarr_client.tags import FIELD_PREFIX, field_of, key_of

if TYPE_CHECKING:
    import optparse

    from beets.importer import ImportSession, ImportTask
    from beets.library import Item, Library

STATE_FILE = "nomarr.json"
UPLOAD_MODES = ("auto", "yes", "no")
# scores print with the 4 decimals the files carry (beets' default float shows one), and an absent
# score stays absent instead of becoming 0.0
SCORE = types.NullFloat(4)


def group_of(key_or_field: str) -> str | None:
    """The model build a key or field belongs to, or None when it is not a well-formed key."""
    parsed = grammar.try_parse_key(key_or_field)
    return parsed.group if parsed else None


def is_numeric(key_or_field: str) -> bool:
    """Scores and tier keys hold numbers; the provenance key (or anything foreign) holds text."""
    parsed = grammar.try_parse_key(key_or_field)
    return parsed is not None and parsed.numeric


class NomMediaField(MediaField):
    """One ``nom:`` key in every tag format nomarr writes (ID3 TXXX, Vorbis comment, MP4 freeform,
    ASF attribute), 4 decimals for numbers like the agent's writer. Unlike mediafile's fields, an
    absent tag reads as None rather than 0.0, so ``beet update`` never invents a score."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.numeric = is_numeric(key)
        super().__init__(
            MP3DescStorageStyle(key, float_places=4),
            MP4StorageStyle("----:com.apple.iTunes:" + key, float_places=4),
            StorageStyle(key, float_places=4),
            ASFStorageStyle(key, float_places=4),
            out_type=float if self.numeric else str,
        )

    def __get__(self, mf: MediaFile | None, owner: type | None = None) -> Any:
        if mf is None:
            return self
        for style in self.styles(mf.mgfile):
            raw = style.get(mf.mgfile)
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            if raw is not None and str(raw).strip() != "":
                break
        else:
            return None
        if not self.numeric:
            return str(raw).strip()
        try:
            return float(str(raw).strip())
        except ValueError:  # a hand-edited tag: unreadable is absent, never a made-up 0.0
            return None


@dataclass
class Summary:
    """What one run did, for the closing line."""

    total: int = 0
    by_path: int = 0
    uploaded: int = 0
    current: int = 0
    failed: int = 0
    written: int = 0
    write_failed: int = 0
    reasons: list[str] = field(default_factory=list)

    def line(self) -> str:
        analysed = self.by_path + self.uploaded
        parts = [
            f"{self.total} items: {analysed} analysed ({self.by_path} by path, {self.uploaded} uploaded)",
            f"{self.current} already current",
            f"{self.failed} failed",
        ]
        out = ", ".join(parts)
        if self.written or self.write_failed:
            out += f"; {self.written} files written" + (
                f", {self.write_failed} not writable" if self.write_failed else ""
            )
        return out


class NomarrPlugin(BeetsPlugin):
    """``beet nomarr``, ``beet nomarr-similar``, ``beet nomarr-playlist`` and analysis on import."""

    def __init__(self) -> None:
        super().__init__()
        self.config.add(
            {
                "url": "",  # empty: find the agent with zeroconf (DESIGN §6)
                "token": "",
                "agent_id": "",  # pin an agent; empty: pinned on first discovery (stored in nomarr.json)
                "auto": True,
                "write": True,
                "force": False,
                "models": [],  # empty: the agent's own default models
                "upload": "auto",  # auto: send the audio when the agent cannot see the same path
                "path_map": {},  # agent path prefix → this machine's prefix, for shared libraries
                "workers": 2,  # files in flight at once (the agent has its own worker cap)
                "timeout": 600,  # seconds for one analysis
                "discovery_timeout": 3,
                "limit": 20,  # default -n for similar and playlists
                "scan_imports": True,  # ask the agent to index imported files that lie in its roots
                "user": "",  # the agent's user id for nomarr-listens / nomarr-foryou (default: login)
            }
        )
        self.config["token"].redact = True
        self._client: SyncNomarrClient | None = None
        self._client_lock = threading.Lock()
        self._unavailable: str | None = None  # the one-line reason, once; the import goes on
        self._roots: list[str] | None = None
        self._groups: dict[str, str] | None = None  # tag prefix → current provenance
        self._state = self._load_state()
        self._fields: set[str] = set()
        self._register_fields(self._state.get("fields", []), persist=False)
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]
            self.register_listener("import_task_files", self.import_task_files)
        self.register_listener("write", self.on_write)
        self.register_listener("cli_exit", self._close)

    # -- typed fields ---------------------------------------------------------------------------

    @property
    def item_types(self) -> dict[str, types.Type]:  # type: ignore[override]
        """Floats for scores and tiers (range queries), strings for provenance."""
        return {f: (SCORE if is_numeric(f) else types.STRING) for f in sorted(self._fields)}

    def _register_fields(self, names: Iterable[str], persist: bool = True) -> None:
        """Make names typed flexible fields and media fields; remember new ones across runs."""
        from beets.library import Item

        new = []
        for name in names:
            if not name.startswith(FIELD_PREFIX) or group_of(name) is None:
                continue
            for variant in grammar.label_keys(key_of(name)):
                f = field_of(variant)
                if f in self._fields:
                    continue
                self._fields.add(f)
                new.append(f)
                if f not in MediaFile.__dict__:  # guarded: a plugin reload must not register twice
                    self.add_media_field(f, NomMediaField(variant))
        if not new:
            return
        try:  # Item._types is computed once per process; this process learnt the names late
            typed = Item._types
            for f in new:
                typed.setdefault(f, SCORE if is_numeric(f) else types.STRING)
        except Exception as e:  # beets internals moved: queries in this process see them as text
            self._log.debug("could not type new fields now: {}", e)
        if persist:
            self._state["fields"] = sorted(self._fields)
            self._save_state()

    # -- state ------------------------------------------------------------------------------------

    def _state_path(self) -> str:
        return os.path.join(beets.config.config_dir(), STATE_FILE)

    def _load_state(self) -> dict[str, Any]:
        try:
            with open(self._state_path(), encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self._log.warning("ignoring unreadable {}: {}", self._state_path(), e)
            return {}

    def _save_state(self) -> None:
        path = self._state_path()
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._state, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as e:
            self._log.warning("could not save {}: {}", path, e)

    # -- the agent ----------------------------------------------------------------------------------

    def client(self) -> SyncNomarrClient:
        """The agent's client, connected on first use (configured URL, else zeroconf + pin).

        Raises NomarrError with a one-line message when the agent is unreachable or refuses us.
        """
        with self._client_lock:
            if self._client is not None:
                return self._client
            if self._unavailable:
                raise AgentUnavailable(None, "unavailable", self._unavailable)
            url = self.config["url"].as_str().strip() or None
            token = self.config["token"].as_str().strip() or None
            pin = self.config["agent_id"].as_str().strip() or self._state.get("agent_id") or None
            try:
                c = SyncNomarrClient.discover(
                    url=url,
                    token=token,
                    agent_id=pin,
                    timeout=float(self.config["discovery_timeout"].get(float)),
                    long_timeout=float(self.config["timeout"].get(float)),
                )
                try:
                    st = c.verify()  # the token, and the pin when one is set
                except BaseException:
                    c.close()
                    raise
            except NomarrError as e:
                self._log.debug("agent unavailable: {!r}", e)
                self._unavailable = _one_line(e, url)
                raise AgentUnavailable(None, e.code, self._unavailable) from e
            if (
                not url
                and not self.config["agent_id"].as_str().strip()
                and self._state.get("agent_id") != st.agent_id
            ):
                self._state["agent_id"] = st.agent_id  # paired: later runs ignore other agents
                self._save_state()
                self._log.info("paired with agent {} at {}", st.agent_id, c.base_url)
            self._roots = [r.path for r in st.roots]
            self._client = c
            return c

    def _close(self, **_: Any) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def groups(self) -> dict[str, str]:
        """tag prefix → the provenance the agent would record now, for the models we ask for."""
        if self._groups is None:
            wanted = self._models()
            ml = self.client().models()
            known = {m.id: m for m in ml.items}
            missing = [m for m in wanted if m not in known or not known[m].installed]
            if missing:
                raise BadRequest(
                    None,
                    "model-missing",
                    f"the agent has no installed model {', '.join(missing)} "
                    "(`nomarr models pull ID` on the agent's machine, or fix nomarr.models)",
                )
            use = [known[m] for m in wanted] if wanted else [m for m in ml.items if m.default]
            self._groups = {
                m.tag_prefix: m.provenance for m in use if m.tag_prefix and m.provenance
            }
        return self._groups

    def _models(self) -> list[str]:
        return [str(m) for m in self.config["models"].as_str_seq()]

    def _path_map(self) -> list[tuple[str, str]]:
        raw = self.config["path_map"].get(dict) or {}
        pairs = [(os.path.normpath(str(a)), os.path.normpath(str(b))) for a, b in raw.items()]
        return sorted(pairs, key=lambda p: -len(p[1]))

    def to_agent(self, local: str) -> str:
        """This machine's path → the agent's, through ``path_map`` (identity when unmapped)."""
        for agent_prefix, local_prefix in self._path_map():
            if _under(local, local_prefix):
                return agent_prefix + local[len(local_prefix) :]
        return local

    def to_local(self, agent_path: str) -> str:
        """The agent's path → this machine's."""
        for agent_prefix, local_prefix in sorted(self._path_map(), key=lambda p: -len(p[0])):
            if _under(agent_path, agent_prefix):
                return local_prefix + agent_path[len(agent_prefix) :]
        return agent_path

    def agent_sees(self, local: str) -> str | None:
        """The agent's path for a local file when it lies inside one of the agent's roots."""
        self.client()
        p = self.to_agent(local)
        return p if any(_under(p, r) for r in self._roots or ()) else None

    # -- analysis -----------------------------------------------------------------------------

    def analyze_file(self, local: str) -> tuple[api.AnalyzeResponse, str]:
        """Ask the agent about one file: by path when it shares the file, else by upload.

        Takes the path, not the item: it runs in worker threads, and beets resolves stored
        (library-relative) paths through a context variable only the calling thread has.
        """
        c = self.client()
        mode = self.config["upload"].as_choice(UPLOAD_MODES)
        models = self._models() or None
        agent_path = self.agent_sees(local) if mode != "yes" else None
        if agent_path is not None:
            try:
                return c.analyze(agent_path, models=models), "path"
            except (
                Forbidden,
                NotFound,
                BadRequest,
            ) as e:  # another file under that name, or not visible
                if mode == "no" or e.code == "model-missing":
                    raise
                self._log.debug("{}: agent cannot use the path ({}); uploading", local, e)
        elif mode == "no":
            raise NotFound(
                None,
                "not-found",
                f"the agent's roots do not hold {local} and upload is off (nomarr.upload)",
            )
        return c.analyze_file(local, models=models), "upload"

    def apply(self, item: Item, resp: api.AnalyzeResponse) -> bool:
        """Store the agent's tags on the item as typed fields; True when something changed.

        A model group's fields that the new answer lacks (a tier that moved) are removed, so the
        item says exactly what the file will say once written.
        """
        groups = self.groups()
        dsp = grammar.PREFIX + grammar.DSP_FRAMEWORK + "_"
        tags = {
            k.lower(): v
            for k, v in resp.tags.items()
            if any(k.lower().startswith(p) for p in groups) or k.lower().startswith(dsp)
        }
        if not tags:
            return False
        self._register_fields([field_of(k) for k in tags])
        answered = {group_of(k) for k in tags}
        want = {field_of(k): (_float(v) if is_numeric(k) else v) for k, v in tags.items()}
        changed = False
        for f in [f for f in item.keys() if f.startswith(FIELD_PREFIX)]:
            if group_of(f) in answered and f not in want:
                del item[f]
                changed = True
        for f, v in want.items():
            if item.get(f) != v:
                item[f] = v
                changed = True
        return self._standard_fields(item, tags) or changed

    @staticmethod
    def _standard_fields(item: Item, tags: dict[str, str]) -> bool:
        """beets' own typed ``bpm`` and ``initial_key`` from the tempo and key descriptors, only
        where the item has none (a value the user or another plugin set is never replaced)."""
        changed = False
        bpm = tags.get(grammar.descriptor_key("tempo", "bpm"))
        if bpm and not item.get("bpm"):
            item["bpm"] = int(round(_float(bpm)))
            changed = True
        key = tags.get(grammar.descriptor_key("key", "key"))
        if key and not item.get("initial_key"):
            item["initial_key"] = key
            changed = True
        return changed

    def is_current(self, item: Item) -> bool:
        """The item carries the provenance the agent would record now for every model we ask for."""
        want = self.groups()
        have = {
            p: item.get(field_of(grammar.provenance_key(grammar.parse_prefix(p)))) for p in want
        }
        return grammar.is_current(have, want)

    def run(
        self, items: Sequence[Item], *, write: bool, force: bool, progress: bool = True
    ) -> Summary:
        """Analyse items (several in flight), store the fields, write the files when asked."""
        s = Summary(total=len(items))
        todo = []
        for item in items:
            if not force and self.is_current(item):
                s.current += 1
            else:
                todo.append(item)
        if not todo:
            return s
        workers = max(1, int(self.config["workers"].get(int)))
        shown = _Progress(len(todo), show=progress)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nomarr") as pool:
            futures: list[tuple[Item, Future[tuple[api.AnalyzeResponse, str]]]] = [
                (item, pool.submit(self.analyze_file, os.fsdecode(item.path))) for item in todo
            ]
            try:
                for item, fut in futures:
                    self._finish(item, fut, s, write)
                    shown.step()
            except AgentUnavailable:
                for _, f in futures:
                    f.cancel()
                raise
        return s

    def _finish(
        self, item: Item, fut: Future[tuple[api.AnalyzeResponse, str]], s: Summary, write: bool
    ) -> None:
        try:
            resp, how = fut.result()
        except (AgentUnavailable, Unauthorized):
            raise
        except (NomarrError, OSError) as e:
            s.failed += 1
            reason = f"{util.displayable_path(item.path)}: {_msg(e)}"
            s.reasons.append(reason)
            self._log.warning("{}", reason)
            return
        if how == "path":
            s.by_path += 1
        else:
            s.uploaded += 1
        if self.apply(item, resp):
            item.store()
        if write:
            ok = self.write_item(item)
            if ok is True:
                s.written += 1
            elif ok is False:
                s.write_failed += 1

    # -- files --------------------------------------------------------------------------------

    def nom_tags(self, item: Item) -> dict[str, Any]:
        """The nom: media fields to write for an item: its values, and None (delete) for every
        other registered field of the model builds it carries."""
        have = {
            f: item.get(f) for f in item.keys() if f.startswith(FIELD_PREFIX) and f in self._fields
        }
        groups = {group_of(f) for f in have}
        out: dict[str, Any] = {f: None for f in self._fields if group_of(f) in groups}
        out.update(have)
        return out

    def write_item(self, item: Item) -> bool | None:
        """Write only the item's nom: keys into its file (other tags untouched). None: nothing to
        write or already there; False: the file could not be written (reported, DB keeps values)."""
        tags = self.nom_tags(item)
        if not tags:
            return None
        path = util.syspath(item.path)
        try:
            mf = MediaFile(path)
            if all(_same(getattr(mf, f), v) for f, v in tags.items()):
                return None  # already written (by beets' own import write, or the agent)
            mf.update(tags)
            mf.save()
        except (mediafile.UnreadableFileError, OSError) as e:
            self._log.warning(
                "could not write nom: tags into {}: {}", util.displayable_path(item.path), e
            )
            return False
        item.mtime = item.current_mtime()
        item.store()
        return True

    def on_write(self, item: Item, path: bytes, tags: dict[str, Any]) -> None:
        """``beet write`` / ``modify``: drop stale nom: keys of the builds the item carries.

        Only edits the tag dict beets is about to write; it never writes itself (calling
        ``try_write`` from here crashes the importer, beets issue #1467).
        """
        for f, v in self.nom_tags(item).items():
            tags.setdefault(f, v)

    # -- import -------------------------------------------------------------------------------

    def imported(self, session: ImportSession, task: ImportTask) -> None:
        """Import stage: analysis into the database only. The files may still be at their source
        (copy mode): tags are written later, at their library path (``import_task_files``)."""
        items = list(task.imported_items())
        if not items or self._unavailable:
            return
        try:
            s = self.run(
                items, write=False, force=bool(self.config["force"].get(bool)), progress=False
            )
        except NomarrError as e:  # the agent as a whole cannot help (per-file failures are counted)
            self._unavailable = self._unavailable or _msg(e)
            self._log.error(
                "{}", _msg(e).removeprefix("nomarr: ")
            )  # once: later tasks skip quietly
            return
        self._log.info("{}", s.line())

    def import_task_files(self, session: ImportSession, task: ImportTask) -> None:
        """The files are at their library path now: write the nom: keys there."""
        items = list(task.imported_items())
        if self.config["write"].get(bool):
            for item in items:
                if any(f.startswith(FIELD_PREFIX) for f in item.keys()):
                    self.write_item(item)
        if (
            self.config["scan_imports"].get(bool)
            and not self._unavailable
            and self._client is not None
        ):
            # files that landed inside the agent's roots join its index now (similarity, playlists),
            # even where it only polls that folder
            try:
                seen = [p for p in (self.agent_sees(os.fsdecode(it.path)) for it in items) if p]
                if seen:
                    self._client.scan(seen)
            except NomarrError as e:
                self._log.debug("could not queue a scan of the imported files: {}", e)

    # -- commands -----------------------------------------------------------------------------

    def commands(self) -> list[ui.Subcommand]:
        analyse = ui.Subcommand(
            "nomarr", help="score items with the nomarr agent (moods, genres) into nom_* fields"
        )
        analyse.parser.add_option(
            "-f",
            "--force",
            action="store_true",
            default=None,
            help="re-analyse items that already carry the current provenance",
        )
        analyse.parser.add_option(
            "-w",
            "--write",
            action="store_true",
            default=None,
            help="write the nom: keys into the files (default: nomarr.write)",
        )
        analyse.parser.add_option(
            "-W",
            "--nowrite",
            action="store_false",
            dest="write",
            help="database only, leave the files alone",
        )
        analyse.func = self._cmd_analyse

        similar = ui.Subcommand(
            "nomarr-similar", help="items that sound like the (first) matching item"
        )
        similar.parser.add_option(
            "-n", "--number", type="int", default=None, help="how many (default: nomarr.limit)"
        )
        similar.parser.add_option(
            "--distinct",
            action="store_true",
            default=False,
            help="leave out other copies of the same recording",
        )
        similar.parser.add_format_option()
        similar.func = self._cmd_similar

        playlist = ui.Subcommand("nomarr-playlist", help="the items scoring highest for a mood")
        playlist.parser.add_option("--mood", help="a label the agent scores (see --list)")
        playlist.parser.add_option(
            "--list", action="store_true", default=False, help="list the moods the agent knows"
        )
        playlist.parser.add_option(
            "-n", "--number", type="int", default=None, help="how many (default: nomarr.limit)"
        )
        playlist.parser.add_option("-o", "--output", help="write an M3U playlist to this file")
        playlist.parser.add_format_option()
        playlist.func = self._cmd_playlist
        from beetsplug._nomarr_listening import foryou_command, listens_command

        return [analyse, similar, playlist, listens_command(self), foryou_command(self)]

    def _cmd_analyse(self, lib: Library, opts: optparse.Values, args: list[str]) -> None:
        write = self.config["write"].get(bool) if opts.write is None else opts.write
        force = bool(opts.force) or bool(self.config["force"].get(bool))
        items = list(lib.items(args))
        try:
            s = self.run(items, write=write, force=force)
        except NomarrError as e:
            raise ui.UserError(_msg(e)) from None
        ui.print_(f"nomarr: {s.line()}")
        for r in s.reasons[:20]:
            ui.print_(f"  failed: {r}")

    def _cmd_similar(self, lib: Library, opts: optparse.Values, args: list[str]) -> None:
        seeds = list(lib.items(args))
        if not seeds:
            raise ui.UserError("no item matches the query")
        seed = seeds[0]
        if len(seeds) > 1:
            self._log.info("{} items match; using {}", len(seeds), seed)
        n = opts.number or int(self.config["limit"].get(int))
        try:
            hits = self.similar_hits(seed, n, opts.distinct)
        except NomarrError as e:
            raise ui.UserError(_msg(e)) from None
        # seeded by an upload, the agent does not know the seed: its own copy comes back first
        self._print_mapped(
            lib, hits.items, opts.format, score=lambda h: f"{h.similarity:.3f}", exclude={seed.id}
        )

    def similar_hits(self, seed: Item, n: int, distinct: bool) -> api.HitList:
        """The agent's neighbours of a beets item: by the agent's own track when it has one
        (path, then MusicBrainz recording, then ISRC), else by the embedding of an upload."""
        c = self.client()
        tid = self.agent_track(seed)
        if tid is not None:
            return c.similar(track_id=tid, limit=n, distinct=distinct)
        local = os.fsdecode(seed.path)
        resp = c.analyze_file(local, models=self._models() or None, embedding=True)
        for mid, r in resp.models.items():
            if r.embedding:
                return c.similar(vector=r.embedding, model=mid, limit=n)
        raise NotFound(None, "not-found", "the agent gave no embedding for this item")

    def agent_track(self, item: Item) -> int | None:
        """The agent's track id for an item: same file, else same MusicBrainz recording or ISRC,
        else the same Chromaprint fingerprint (beets' chroma plugin stores it)."""
        c = self.client()
        p = self.agent_sees(os.fsdecode(item.path))
        tries: list[dict[str, Any]] = []
        if p is not None:
            tries.append({"path": p})
        if item.get("mb_trackid"):
            tries.append({"mbid": item["mb_trackid"]})
        if item.get("isrc"):
            tries.append({"isrc": item["isrc"]})
        if item.get("acoustid_fingerprint"):
            tries.append(
                {
                    "fingerprint": item["acoustid_fingerprint"],
                    "duration": item.get("length") or None,
                }
            )
        for q in tries:
            try:
                found = c.lookup(**q)
            except (NotFound, BadRequest, Forbidden):
                continue
            if found.items:
                return found.items[0].id
        return None

    def _cmd_playlist(self, lib: Library, opts: optparse.Values, args: list[str]) -> None:
        try:
            if opts.list:
                for m in self.client().moods().items:
                    ui.print_(m.label)
                return
            if not opts.mood:
                raise ui.UserError("--mood LABEL is required (--list shows the labels)")
            n = opts.number or int(self.config["limit"].get(int))
            pl = self.client().mood_playlist(opts.mood, limit=n)
        except NomarrError as e:
            raise ui.UserError(_msg(e)) from None
        if opts.output:
            items = [it for _, it in self.map_hits(lib, pl.items)]
            _write_m3u(opts.output, items)
            ui.print_(f"nomarr: {len(items)} items written to {opts.output}")
            return
        self._print_mapped(lib, pl.items, opts.format, score=lambda h: f"{(h.score or 0.0):.3f}")

    def map_hits(self, lib: Library, hits: Sequence[api.Hit]) -> list[tuple[api.Hit, Item]]:
        """Agent tracks → beets items (same path, else MusicBrainz recording, else artist + title
        with a duration within 2 s); tracks this library does not hold are dropped."""
        out = []
        for h in hits:
            it = self.local_item(lib, h)
            if it is not None:
                out.append((h, it))
        return out

    def local_item(self, lib: Library, t: api.Track) -> Item | None:
        local = self.to_local(t.path)
        found = lib.items(PathQuery("path", util.bytestring_path(local)))
        it = found.get()
        if it is not None:
            return it
        if t.mb_recording:
            it = lib.items(MatchQuery("mb_trackid", t.mb_recording)).get()
            if it is not None:
                return it
        if t.title and t.artist:
            for cand in lib.items(
                AndQuery([MatchQuery("title", t.title), MatchQuery("artist", t.artist)])
            ):
                if t.duration is None or abs((cand.length or 0.0) - t.duration) <= 2.0:
                    return cand
        return None

    def _print_mapped(
        self,
        lib: Library,
        hits: Sequence[api.Hit],
        fmt: str | None,
        score: Callable[[api.Hit], str],
        exclude: Collection[int] = (),
    ) -> None:
        mapped = self.map_hits(lib, hits)
        for h, it in mapped:
            if it.id in exclude:
                continue
            ui.print_(f"{score(h)}  {format(it, fmt or '')}")
        missing = len(hits) - len(mapped)
        if missing:
            self._log.info("{} of the agent's answers are not in this beets library", missing)


# -- helpers ------------------------------------------------------------------------------------


def _under(path: str, root: str) -> bool:
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root + os.sep) or root == os.sep


def _float(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < 5e-5  # 4 decimals in the file
    return a == b


def _msg(e: BaseException) -> str:
    """One line for people: the agent's sentence without the client's code suffix."""
    text = e.message if isinstance(e, NomarrError) else str(e)
    text = (text.strip().splitlines() or [type(e).__name__])[0]
    return text if text.startswith("nomarr: ") else f"nomarr: {text}"


def _one_line(e: NomarrError, url: str | None) -> str:
    """What to tell a beets user whose agent cannot be used, and what to do about it."""
    if isinstance(e, Unauthorized):
        return (
            "nomarr: the agent refused the token: set nomarr.token to the agent's token "
            "(~/.config/nomarr/token on its machine)"
        )
    if e.code == "wrong-agent":
        return f"{_msg(e)} (set nomarr.agent_id, or delete the pin in nomarr.json beside beets' config)"
    if isinstance(e, AgentUnavailable) and url:
        return (
            f"nomarr: no agent reachable at {url}: start it with `nomarr serve`, or fix nomarr.url"
        )
    if isinstance(e, AgentUnavailable):
        found = getattr(e, "agents", None) or []
        if len(found) > 1:
            return f"nomarr: {len(found)} agents on the network and none pinned: set nomarr.url or nomarr.agent_id"
        return "nomarr: no agent found on the local network (zeroconf): start `nomarr serve`, or set nomarr.url"
    return _msg(e)


def _write_m3u(path: str, items: Sequence[Item]) -> None:
    lines = ["#EXTM3U"]
    for it in items:
        lines.append(f"#EXTINF:{round(it.length or 0)},{it.artist} - {it.title}")
        lines.append(os.fsdecode(it.path))
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


class _Progress:
    """A progress line on stderr every couple of seconds for long runs (rate and ETA); stdout keeps
    only the summary, for scripts."""

    def __init__(self, total: int, show: bool = True) -> None:
        self.total, self.done_n, self.t0, self.last, self.show = (
            total,
            0,
            time.monotonic(),
            0.0,
            show,
        )

    def step(self) -> None:
        self.done_n += 1
        now = time.monotonic()
        if self.show and self.total > 1 and (now - self.last >= 2.0 or self.done_n == self.total):
            self.last = now
            rate = self.done_n / max(now - self.t0, 1e-9)
            eta = (self.total - self.done_n) / rate if rate > 0 else 0
            print(
                f"nomarr: {self.done_n}/{self.total} ({100 * self.done_n // self.total}%) "
                f"{rate:.1f} items/s, ETA {int(eta) // 60}:{int(eta) % 60:02d}",
                file=sys.stderr,
                flush=True,
            )
