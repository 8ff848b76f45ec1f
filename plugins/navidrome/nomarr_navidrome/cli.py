"""``nomarr-navidrome``: the Navidrome side of nomarr, as one command.

Settings come from flags, then the environment (``NOMARR_URL``, ``NOMARR_TOKEN``,
``NOMARR_AGENT_ID``, ``NAVIDROME_URL``, ``NAVIDROME_USER``, ``NAVIDROME_PASSWORD``), then
``$XDG_CONFIG_HOME/nomarr/navidrome.toml`` (``[agent] url/token/agent_id``, ``[navidrome]
url/user/password``), so a password can stay out of shell history. With no agent URL the agent is
discovered on the LAN (DESIGN §6); with no token the local agent's token file is used, which is
right when both run on one machine.

Every failure is one line on stderr and exit status 1 (2 for usage errors); nothing is half-written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nomarr_client import NomarrClient, NomarrError
from nomarr_client import models as api

from . import nsp, tagconfig
from .listens import sync_listens
from .push import PushError, display_title, push, report
from .subsonic import Subsonic, SubsonicError


class UsageError(Exception):
    """A missing or contradictory setting."""


def _config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "nomarr"


def load_settings(path: str | None) -> dict[str, dict[str, Any]]:
    p = Path(path) if path else _config_dir() / "navidrome.toml"
    if not p.exists():
        if path:
            raise UsageError(f"settings file {p} does not exist")
        return {}
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read settings file {p}: {e}") from e
    return {k: v for k, v in doc.items() if isinstance(v, dict)}


def _pick(
    flag: str | None, env: str, settings: dict[str, dict[str, Any]], section: str, key: str
) -> str | None:
    for v in (flag, os.environ.get(env), settings.get(section, {}).get(key)):
        if v not in (None, ""):
            return str(v)
    return None


async def connect_agent(
    args: argparse.Namespace, settings: dict[str, dict[str, Any]]
) -> NomarrClient:
    url = _pick(args.url, "NOMARR_URL", settings, "agent", "url")
    tok = _pick(args.token, "NOMARR_TOKEN", settings, "agent", "token")
    pin = _pick(args.agent_id, "NOMARR_AGENT_ID", settings, "agent", "agent_id")
    if tok is None:
        f = _config_dir() / "token"
        if f.is_file():
            tok = f.read_text(encoding="utf-8").strip() or None
    client = await NomarrClient.discover(
        url=url, token=tok, agent_id=pin, timeout=args.discovery_timeout
    )
    try:
        st = await client.verify()
    except BaseException:
        await client.close()
        raise
    if url is None and pin is None:
        print(
            f"nomarr-navidrome: using agent {st.agent_id} at {client.base_url}; pin it with agent_id = "
            f'"{st.agent_id}" under [agent] in {_config_dir() / "navidrome.toml"}',
            file=sys.stderr,
        )
    return client


def navidrome(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> Subsonic:
    url = _pick(args.navidrome, "NAVIDROME_URL", settings, "navidrome", "url")
    user = _pick(args.user, "NAVIDROME_USER", settings, "navidrome", "user")
    pw = _pick(args.password, "NAVIDROME_PASSWORD", settings, "navidrome", "password")
    if not url:
        raise UsageError(
            "no Navidrome URL: give --navidrome URL, set NAVIDROME_URL, or url under [navidrome] "
            "in navidrome.toml"
        )
    if not user or not pw:
        raise UsageError(
            "no Navidrome user/password: give --user/--password, set NAVIDROME_USER/NAVIDROME_PASSWORD, "
            "or user/password under [navidrome] in navidrome.toml"
        )
    return Subsonic(url, user, pw)


# -- commands -----------------------------------------------------------------------------------


async def cmd_config(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> int:
    async with await connect_agent(args, settings) as c:
        keys = (await c.tag_keys()).items
    tags = tagconfig.build_tags(keys)
    if not tags.tags:
        raise UsageError(
            "the agent has written no nom: tags yet (is write_tags on, and has a scan finished?)"
        )
    if not args.out:
        sys.stdout.write(tagconfig.render(tags))
        return 0
    out = Path(args.out)
    existing = out.read_text(encoding="utf-8") if out.exists() else ""
    merged = tagconfig.merge(existing, tags, str(out))
    if merged == existing:
        print(f"{out}: unchanged ({len(tags.tags)} nom_ tags)", file=sys.stderr)
        return 0
    tmp = out.with_name(f".{out.name}.nomarr-tmp")
    tmp.write_text(merged, encoding="utf-8")
    if out.exists():
        os.chmod(tmp, out.stat().st_mode & 0o7777)
    os.replace(tmp, out)
    print(
        f"{out}: wrote {len(tags.tags)} nom_ tags; restart Navidrome and run a full rescan so it reads them",
        file=sys.stderr,
    )
    return 0


async def cmd_playlists(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> int:
    async with await connect_agent(args, settings) as c:
        keys = (await c.tag_keys()).items
    tags = tagconfig.build_tags(keys)
    if args.navidrome_config:
        # only tags Navidrome already knows: a rule on an undeclared tag makes it reject the file
        known = tagconfig.declared(Path(args.navidrome_config).read_text(encoding="utf-8"))
        missing = [n for n, t in tags.tags.items() if not t.aliases <= set(known.get(n, ()))]
        for n in missing:
            del tags.tags[n]
        if missing:
            print(
                f"nomarr-navidrome: {len(missing)} tags are not (fully) declared in {args.navidrome_config}; "
                "run `nomarr-navidrome config --out` on it and restart Navidrome for the rest",
                file=sys.stderr,
            )
    cat = nsp.Catalogue(tags, limit=args.limit).build()
    rep = nsp.write(cat, Path(args.out))
    print(
        f"{args.out}: {len(rep.written)} written, {len(rep.unchanged)} unchanged, {len(rep.removed)} removed "
        f"({len(cat)} playlists)"
    )
    for n in rep.written:
        print(f"  + {n}")
    for n in rep.removed:
        print(f"  - {n}")
    return 0


def _seed(s: str) -> dict[str, Any]:
    return {"track_id": int(s)} if s.isdigit() else {"path": s}


async def cmd_push(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> int:
    nd = navidrome(args, settings)
    async with await connect_agent(args, settings) as c:
        tracks: list[api.Track]
        if args.kind == "similar":
            seed = _seed(args.track)
            hits = await c.similar(**seed, limit=args.limit, distinct=True)
            if hits.seed is None:
                raise UsageError(f"the agent did not resolve the seed track {args.track!r}")
            tracks = [hits.seed, *hits.items]
            name, what = (
                f"Similar to {display_title(hits.seed)}",
                f"Tracks similar to {display_title(hits.seed)}",
            )
        elif args.kind == "radio":
            pl = await c.radio(**_seed(args.track), limit=args.limit)
            tracks = list(pl.items)
            first = display_title(tracks[0]) if tracks else args.track
            name, what = f"Radio: {first}", f"A radio walk from {first}"
        elif args.kind == "path":
            pl = await c.path_playlist(
                _seed(args.start).popitem()[1], _seed(args.end).popitem()[1], limit=args.limit
            )
            tracks = list(pl.items)
            a, b = (
                (display_title(tracks[0]), display_title(tracks[-1]))
                if tracks
                else (args.start, args.end)
            )
            name, what = f"Path: {a} → {b}", f"A song path from {a} to {b}"
        elif args.kind in TASTE_KINDS:
            who = args.listener or nd.user
            mode, title, blurb = TASTE_KINDS[args.kind]
            recs = await c.recommendations(who, mode, args.limit, filters={"files_only": True})
            tracks = list(recs.items)
            name, what = f"{title} ({who})", f"{blurb} {who}'s listening"
        else:
            pl = await c.mood_playlist(args.label, limit=args.limit)
            tracks = list(pl.items)
            name, what = f"Mood radio: {args.label}", f"The tracks scoring highest for {args.label}"
    async with nd:
        res = await push(
            nd,
            args.name or name,
            tracks,
            what,
            dry_run=args.dry_run,
            public=True if args.public else None,
        )
    report(res, verbose=args.verbose)
    return 0


TASTE_KINDS = {
    "for-you": ("for_you", "For you", "Near the taste of"),
    "rediscover": ("rediscover", "Rediscover", "Liked long ago, not played lately, from"),
    "discovery": ("discovery", "Discovery", "Never played, near the taste of"),
}


async def cmd_listens(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> int:
    """Send the Navidrome user's play counts and stars to the agent (once, or every N s)."""
    nd = navidrome(args, settings)
    who = args.listener or nd.user
    source = f"subsonic:{urlsplit(nd.base).netloc}"
    async with await connect_agent(args, settings) as c:
        while True:
            async with nd:
                rep = await sync_listens(nd, c, who, source)
            print(f"{who}: {rep.summary()}", flush=True)
            if not args.every:
                return 0
            await asyncio.sleep(args.every)


# -- argument parsing ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nomarr-navidrome",
        description="Navidrome smart playlists and pushed playlists from a nomarr agent.",
    )
    p.add_argument(
        "--settings", help="settings file (default: $XDG_CONFIG_HOME/nomarr/navidrome.toml)"
    )
    g = p.add_argument_group("agent (default: discovered on the LAN)")
    g.add_argument("--url", help="agent URL, e.g. http://host:8765 (env NOMARR_URL)")
    g.add_argument(
        "--token", help="agent token (env NOMARR_TOKEN; default: the local agent's token file)"
    )
    g.add_argument("--agent-id", help="only accept the agent with this id (env NOMARR_AGENT_ID)")
    g.add_argument(
        "--discovery-timeout", type=float, default=3.0, help="seconds to browse for agents"
    )
    n = p.add_argument_group("Navidrome (push and listens)")
    n.add_argument(
        "--navidrome",
        metavar="URL",
        help="Navidrome URL, e.g. http://host:4533 (env NAVIDROME_URL)",
    )
    n.add_argument("--user", help="Navidrome user (env NAVIDROME_USER)")
    n.add_argument("--password", help="Navidrome password (env NAVIDROME_PASSWORD)")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser(
        "config", help="the navidrome.toml [Tags] sections for the nom: keys the agent wrote"
    )
    c.add_argument(
        "--out", metavar="FILE", help="merge into this navidrome.toml (default: print the sections)"
    )
    c.set_defaults(run=cmd_config)

    pl = sub.add_parser("playlists", help="write the .nsp smart-playlist catalogue into a folder")
    pl.add_argument(
        "--out", metavar="DIR", required=True, help="a folder Navidrome's PlaylistsPath covers"
    )
    pl.add_argument(
        "--limit",
        type=int,
        default=nsp.DEFAULT_LIMIT,
        help="songs per playlist (default %(default)s)",
    )
    pl.add_argument(
        "--navidrome-config", metavar="FILE", help="only use tags declared in this navidrome.toml"
    )
    pl.set_defaults(run=cmd_playlists)

    pu = sub.add_parser(
        "push", help="create or update a static playlist in Navidrome from the agent"
    )
    kinds = pu.add_subparsers(dest="kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", help="playlist name (default: from the seed)")
    common.add_argument("-n", "--limit", type=int, default=25, help="tracks (default %(default)s)")
    common.add_argument(
        "--dry-run", action="store_true", help="show what would change, change nothing"
    )
    common.add_argument("--public", action="store_true", help="make the playlist public")
    common.add_argument("-v", "--verbose", action="store_true", help="list the songs")
    s = kinds.add_parser(
        "similar", parents=[common], help="a track and the tracks most similar to it"
    )
    s.add_argument("--track", required=True, help="agent track id or library path")
    r = kinds.add_parser("radio", parents=[common], help="a smooth walk from a seed track")
    r.add_argument("--track", required=True, help="agent track id or library path")
    pa = kinds.add_parser("path", parents=[common], help="a song path from one track to another")
    pa.add_argument("--from", dest="start", required=True, help="agent track id or library path")
    pa.add_argument("--to", dest="end", required=True, help="agent track id or library path")
    m = kinds.add_parser(
        "mood", parents=[common], help="mood radio: the tracks scoring highest for a label"
    )
    m.add_argument("--label", required=True, help="a label from the agent's /moods, e.g. happy")
    for kind, (_, title, blurb) in TASTE_KINDS.items():
        t = kinds.add_parser(
            kind,
            parents=[common],
            help=f'"{title}" from a listener\'s taste ({blurb.lower()} them)',
        )
        t.add_argument(
            "--for",
            dest="listener",
            metavar="USER",
            help="the agent's user whose listens to use (default: the Navidrome user)",
        )
    pu.set_defaults(run=cmd_push)

    li = sub.add_parser(
        "listens",
        help="send the Navidrome user's play counts and stars to the agent (rises become listens)",
    )
    li.add_argument(
        "--as",
        dest="listener",
        metavar="USER",
        help="the agent's user id for these listens (default: the Navidrome user)",
    )
    li.add_argument(
        "--every", type=float, default=0.0, metavar="SECONDS", help="keep polling this often"
    )
    li.set_defaults(run=cmd_listens)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "limit", 1) < 1:
        print("nomarr-navidrome: error: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.settings)
        return asyncio.run(args.run(args, settings))
    except UsageError as e:
        print(f"nomarr-navidrome: error: {e}", file=sys.stderr)
        return 2
    except (
        NomarrError,
        SubsonicError,
        PushError,
        tagconfig.ConfigError,
        FileExistsError,
        OSError,
    ) as e:
        print(f"nomarr-navidrome: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
