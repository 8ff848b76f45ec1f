"""ListenBrainz: a user's export file, and their listens fetched from the API.

**Export** (Settings → Export on listenbrainz.org): a zip holding ``user.json``
(``{"user_id", "username"}``), ``listens/<year>/<month>.jsonl`` (one listen per line:
``listened_at``, ``inserted_at``, ``recording_msid``, ``track_metadata`` with ``artist_name``,
``track_name``, ``release_name``, ``additional_info`` as submitted and ``mbid_mapping`` as
ListenBrainz mapped it), ``feedback.jsonl`` (``recording_msid``, ``recording_mbid``, ``score`` +1
love / -1 hate, ``created``) and ``pinned_recording.jsonl``. Older exports were one JSON array of
listens; both are read, as is a bare ``.jsonl`` of listens.

**API**: ``GET /1/user/{user}/listens?max_ts=&count=`` answers ``{"payload": {"count", "listens",
"latest_listen_ts", "user_id"}}`` newest first, ``max_ts``/``min_ts`` exclusive, at most 1000 per
call; every answer carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset-In`` (seconds) and
``-Reset``, and a caller over the limit gets 429. We page backwards from now with ``max_ts`` until
we reach the newest listen the last sync stored (the cursor), sleeping as the headers ask.

A listen's identity is ``lb:<listened_at>:<recording_msid>`` (ListenBrainz's own key), so an export
and an API sync of the same listens, or either twice, store each listen once. ListenBrainz only
accepts a listen after half the track or 4 minutes, so its listens are ``completed``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nomarr.listens.record import ImportSummary, ListenIn

log = logging.getLogger("nomarr.listens")

SOURCE = "listenbrainz"
API_URL = "https://api.listenbrainz.org"
PAGE = 1000  # the API's MAX_ITEMS_PER_GET
MAX_ZIP_MEMBERS = 5000
MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_WAIT_S = 120.0  # never sleep longer than this for one rate-limit window


class ListenBrainzError(Exception):
    """The file or the API answer cannot be used; the message says why."""


@dataclass
class Export:
    """What an export file holds, as nomarr reads it."""

    username: str | None
    listens: list[ListenIn]
    feedback: list[tuple[str, int, float, dict[str, Any]]]  # (key, score, since, ids)
    summary: ImportSummary = field(default_factory=ImportSummary)


def listen_of(d: Any) -> ListenIn:
    """One ListenBrainz listen (export line or API item) → :class:`ListenIn`; raises ValueError."""
    if not isinstance(d, dict):
        raise ValueError("a listen must be a JSON object")
    ts = d.get("listened_at")
    if isinstance(ts, str) and ts.strip().replace(".", "", 1).isdigit():
        ts = float(ts)
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise ValueError("listen without a numeric listened_at")
    tm = d.get("track_metadata")
    if not isinstance(tm, dict):
        raise ValueError("listen without track_metadata")
    ai = tm.get("additional_info") if isinstance(tm.get("additional_info"), dict) else {}
    mm = tm.get("mbid_mapping") if isinstance(tm.get("mbid_mapping"), dict) else {}
    dur = None
    if isinstance(ai.get("duration_ms"), int | float) and ai["duration_ms"] > 0:
        dur = float(ai["duration_ms"]) / 1000.0
    elif isinstance(ai.get("duration"), int | float) and ai["duration"] > 0:
        dur = float(ai["duration"])
    ids = {
        "artist": tm.get("artist_name"),
        "title": tm.get("track_name"),
        "album": tm.get("release_name"),
        # what the submitting player knew first, ListenBrainz's own mapping second
        "mb_recording": ai.get("recording_mbid") or mm.get("recording_mbid"),
        "isrc": ai.get("isrc"),
        "duration": dur,
    }
    msid = d.get("recording_msid") or ai.get("recording_msid")
    dedup = f"lb:{int(ts)}:{msid}" if isinstance(msid, str) and msid else None
    return ListenIn(ts=float(ts), source=SOURCE, outcome="completed", ids=ids, dedup=dedup)


def _lines(raw: bytes, where: str, out: Export) -> Iterator[Any]:
    """JSON objects, one per non-empty line; a broken line is counted, not fatal."""
    for n, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError as e:
            out.summary.bad(f"{where}:{n}: not JSON ({e})")


def _add_listens(items: Iterator[Any], where: str, out: Export) -> None:
    for i, d in enumerate(items, 1):
        try:
            out.listens.append(listen_of(d))
        except ValueError as e:
            out.summary.bad(f"{where} #{i}: {e}")


def _feedback(items: Iterator[Any], out: Export) -> None:
    """Loved/hated recordings; matched by their MBID, or by the artist and title of a listen of the
    same ``recording_msid`` in this export (feedback lines carry no names)."""
    by_msid: dict[str, dict[str, Any]] = {}
    for x in out.listens:
        if x.dedup:
            by_msid.setdefault(x.dedup.split(":", 2)[2], x.ids)
    for d in items:
        if not isinstance(d, dict) or d.get("score") not in (1, -1):
            continue
        msid, mbid = d.get("recording_msid"), d.get("recording_mbid")
        key = mbid or msid
        if not isinstance(key, str) or not key:
            continue
        ids = dict(by_msid.get(msid or "", {}))
        if mbid:
            ids["mb_recording"] = mbid
        created = d.get("created")
        ts = float(created) if isinstance(created, int | float) else time.time()
        out.feedback.append((key, int(d["score"]), ts, ids))


def parse_export(data: bytes) -> Export:
    """Read an export (zip, JSON array or JSON lines); raises :class:`ListenBrainzError` when the
    bytes are none of those. Lines that cannot be read are counted in ``summary``."""
    out = Export(None, [], [])
    if data[:4] == b"PK\x03\x04":
        _parse_zip(data, out)
        return out
    text = data.lstrip()
    if text[:1] not in (b"[", b"{"):
        raise ListenBrainzError(
            "not a ListenBrainz export: expected the zip from listenbrainz.org, a JSON array of "
            "listens or JSON lines"
        )
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    except RecursionError:
        raise ListenBrainzError("JSON nested too deeply") from None
    if isinstance(doc, list):
        _add_listens(iter(doc), "listens", out)
    elif isinstance(doc, dict) and isinstance((doc.get("payload") or {}).get("listens"), list):
        _add_listens(iter(doc["payload"]["listens"]), "payload.listens", out)
    elif isinstance(doc, dict) and "listened_at" in doc:
        _add_listens(iter([doc]), "listen", out)
    else:
        _add_listens(_lines(data, "line", out), "line", out)
    return out


def _parse_zip(data: bytes, out: Export) -> None:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ListenBrainzError(f"not a readable zip file ({e})") from None
    if len(names) > MAX_ZIP_MEMBERS:
        raise ListenBrainzError(f"zip has {len(names)} members; an export has a few hundred")

    def read(name: str) -> bytes:
        info = z.getinfo(name)
        if info.file_size > MAX_MEMBER_BYTES:
            raise ListenBrainzError(f"{name}: {info.file_size} bytes is too large")
        try:
            return z.read(name)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise ListenBrainzError(f"{name}: cannot be read from the zip ({e})") from None

    listen_files = sorted(
        n for n in names if n.endswith(".jsonl") and n.split("/")[-2:-1] != [] and "listens" in n
    )
    if not listen_files and not any(n.endswith("user.json") for n in names):
        raise ListenBrainzError(
            "zip holds no listens/<year>/<month>.jsonl and no user.json: not a ListenBrainz export"
        )
    for name in names:
        if name.rsplit("/", 1)[-1] == "user.json":
            try:
                u = json.loads(read(name))
                out.username = str(u.get("username")) if isinstance(u, dict) else None
            except ValueError:
                out.summary.bad(f"{name}: not JSON")
    for name in listen_files:
        _add_listens(_lines(read(name), name, out), name, out)
    fb = [n for n in names if n.rsplit("/", 1)[-1] == "feedback.jsonl"]
    for name in fb:
        _feedback(_lines(read(name), name, out), out)


# -- the API --------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    """What one API sync did."""

    pages: int = 0
    fetched: int = 0
    waited_s: float = 0.0
    cursor: float | None = None
    complete: bool = True
    summary: ImportSummary = field(default_factory=ImportSummary)


Fetch = Callable[
    [str, dict[str, str], dict[str, str]], Awaitable[tuple[int, dict[str, str], bytes]]
]
StorePage = Callable[[list[ListenIn]], Awaitable[ImportSummary]]


def _wait_hint(headers: dict[str, str]) -> float:
    """Seconds the rate-limit headers ask us to wait before the next call (0: go on)."""
    low = {k.lower(): v for k, v in headers.items()}
    try:
        remaining = int(low.get("x-ratelimit-remaining", "1"))
    except ValueError:
        remaining = 1
    if remaining > 0:
        return 0.0
    for key in ("x-ratelimit-reset-in", "retry-after"):
        try:
            return min(MAX_WAIT_S, max(0.0, float(low[key])))
        except (KeyError, ValueError):
            continue
    return 1.0


async def sync(
    fetch: Fetch,
    store_page: StorePage,
    *,
    api_url: str,
    lb_user: str,
    token: str | None,
    cursor: float | None,
    max_pages: int = 1000,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> SyncResult:
    """Fetch the listens newer than ``cursor`` (all, without one), newest first, a page at a time,
    storing each page as it arrives. ``fetch(url, params, headers)`` → (status, headers, body)."""
    from urllib.parse import quote

    url = f"{api_url.rstrip('/')}/1/user/{quote(lb_user, safe='')}/listens"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    res = SyncResult(cursor=cursor)
    max_ts: int | None = None
    newest: float | None = None
    retries = 0
    while res.pages < max_pages:
        params = {"count": str(PAGE)}
        if max_ts is not None:
            params["max_ts"] = str(max_ts)
        status, hdrs, body = await fetch(url, params, headers)
        if status == 429:
            retries += 1
            if retries > 5:
                res.complete = False
                break
            wait = _wait_hint({**hdrs, "X-RateLimit-Remaining": "0"})
            res.waited_s += wait
            await sleep(wait)
            continue
        if status == 401:
            raise ListenBrainzError("ListenBrainz refused the token (401): check the user token")
        if status == 404:
            raise ListenBrainzError(f"ListenBrainz has no user {lb_user!r} (404)")
        if status != 200:
            raise ListenBrainzError(f"ListenBrainz answered HTTP {status}")
        retries = 0
        try:
            payload = json.loads(body)["payload"]
            items = payload["listens"]
            if not isinstance(items, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ListenBrainzError(
                "ListenBrainz answered with something that is not a listens page"
            ) from None
        res.pages += 1
        page: list[ListenIn] = []
        oldest: float | None = None
        for i, d in enumerate(items):
            try:
                x = listen_of(d)
            except ValueError as e:
                res.summary.bad(f"page {res.pages} #{i + 1}: {e}")
                continue
            oldest = x.ts if oldest is None else min(oldest, x.ts)
            newest = x.ts if newest is None else max(newest, x.ts)
            if cursor is None or x.ts >= cursor:
                page.append(x)
        res.fetched += len(items)
        if page:
            res.summary.merge(await store_page(page))
        if not items or oldest is None or (cursor is not None and oldest < cursor):
            break
        nxt = int(oldest)
        if max_ts is not None and nxt >= max_ts:  # a page of one second: step past it
            nxt = max_ts - 1
        max_ts = nxt
        wait = _wait_hint(hdrs)
        if wait:
            res.waited_s += wait
            await sleep(wait)
    else:
        res.complete = False
    if res.complete and newest is not None:
        res.cursor = max(newest, cursor or 0.0)
    return res
