"""Queries of the library database: ``nomarr similar`` and ``nomarr playlist``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nomarr.cli.common import UserError, emit_json, open_store


def _filters(args: argparse.Namespace) -> Any:
    from nomarr.query import Filters

    mins = {}
    for spec in args.min_score or []:
        if "=" not in spec:
            raise UserError(f"--min-score wants LABEL=SCORE, not {spec!r}")
        lab, val = spec.split("=", 1)
        try:
            mins[lab.strip().lower().replace(" ", "_")] = float(val)
        except ValueError as e:
            raise UserError(f"--min-score {spec!r}: {val!r} is not a number") from e
    lo = hi = None
    if args.bpm:
        a, _, b = args.bpm.partition("-")
        try:
            lo, hi = float(a), float(b or a)
        except ValueError as e:
            raise UserError(f"--bpm wants MIN-MAX (e.g. 120-128), not {args.bpm!r}") from e
    keys = None
    if args.key:
        from nomarr.analyzers.key import camelot_of, parse_key

        keys = []
        for k in args.key:
            p = parse_key(k)
            if p is None:
                raise UserError(f"--key {k!r}: not a key (Am, F#, 8A, 1m)")
            keys.append(camelot_of(*p))
    return Filters(
        under=args.under,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        min_scores=mins or None,
        min_bpm=lo,
        max_bpm=hi,
        keys=keys,
        min_energy=args.min_energy,
        max_energy=args.max_energy,
    )


def _print_hits(hits: list[Any], fmt: str, header: dict[str, Any] | None = None) -> None:
    from nomarr.query import to_m3u

    if fmt == "m3u":
        sys.stdout.write(to_m3u(hits))
    elif fmt == "json":
        emit_json({**(header or {}), "tracks": [h.to_dict() for h in hits]})
    else:
        for i, h in enumerate(hits, 1):
            extra = " (same recording)" if h.same_recording else ""
            val = (
                f"score {h.score:.4f}"
                if h.score is not None
                else f"similarity {1 - h.distance:.4f}"
            )
            d = h.desc or {}
            dj = ""
            if d.get("bpm") or d.get("key"):
                bpm = f"{d['bpm']:.1f} BPM" if d.get("bpm") else "- BPM"
                dj = f"  [{bpm} {d.get('key') or '-'} {d.get('camelot') or ''}]"
            print(f"{i:3d}. {val}  {h.track.path}{extra}{dj}")


def cmd_similar(args: argparse.Namespace) -> int:
    """Nearest tracks to a file or track id."""
    from nomarr.query import QueryError, similar

    store = open_store(args)
    try:
        seed, hits = similar(
            store,
            args.track,
            args.n,
            model=args.model,
            filters=_filters(args),
            distinct=args.distinct,
        )
    except QueryError as e:
        raise UserError(str(e)) from e
    fmt = "json" if args.json else args.format
    _print_hits(hits, fmt, {"seed": seed.to_dict()})
    return 0


def cmd_playlist(args: argparse.Namespace) -> int:
    """Mood, seed radio, song path or text playlists."""
    from nomarr.query import QueryError, mood_playlist, path_playlist, radio, text_playlist

    store = open_store(args)
    f = _filters(args)
    try:
        if args.mood:
            hits = mood_playlist(
                store, args.mood, args.n, model=args.model, min_score=args.min, filters=f
            )
        elif args.seed:
            hits = radio(
                store, args.seed, args.n, model=args.model, filters=f, harmonic=args.harmonic
            )
        elif args.start or args.end:
            if not (args.start and args.end):
                raise UserError("--from and --to go together")
            hits = path_playlist(
                store,
                args.start,
                args.end,
                args.n,
                model=args.model,
                filters=f,
                harmonic=args.harmonic,
            )
        else:
            hits = text_playlist(store, args.text, args.n, filters=f)
    except QueryError as e:
        raise UserError(str(e)) from e
    fmt = "json" if args.json else args.format
    _print_hits(hits, fmt)
    return 0


def _query_opts(q: argparse.ArgumentParser) -> None:
    q.add_argument("-n", type=int, default=10, help="how many tracks (default: 10)")
    q.add_argument(
        "--db", help="database file (default: $NOMARR_DB or ~/.local/share/nomarr/nomarr.db)"
    )
    q.add_argument(
        "--model", help="embedding space / scoring model (default: the best the library has)"
    )
    q.add_argument(
        "--under",
        action="append",
        metavar="DIR",
        help="only tracks under this folder (repeatable)",
    )
    q.add_argument("--min-duration", type=float, metavar="S")
    q.add_argument("--max-duration", type=float, metavar="S")
    q.add_argument(
        "--min-score",
        action="append",
        metavar="LABEL=X",
        help="only tracks scoring at least X for LABEL",
    )
    q.add_argument("--bpm", metavar="MIN-MAX", help="only tracks in this tempo range (120-128)")
    q.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help="only tracks in this key (Am, F#, 8A, 1m; repeatable)",
    )
    q.add_argument("--min-energy", type=float, metavar="X", help="only tracks with energy >= X")
    q.add_argument("--max-energy", type=float, metavar="X", help="only tracks with energy <= X")
    q.add_argument("--format", choices=["text", "json", "m3u"], default="text")
    q.add_argument("--json", action="store_true", help="same as --format json")


def add_similar(sub: argparse._SubParsersAction) -> None:
    """The ``similar`` subcommand and its options."""
    si = sub.add_parser(
        "similar",
        help="tracks most similar to a file or track id (cosine KNN)",
        description="Nearest tracks in embedding space. The seed is never listed; other "
        "files of the same recording come first, marked; --distinct drops them and "
        "lists one file per recording.",
    )
    si.add_argument("track", metavar="FILE|TRACK_ID")
    si.add_argument(
        "--distinct",
        action="store_true",
        help="exclude the seed's duplicates; one file per recording",
    )
    _query_opts(si)
    si.set_defaults(func=cmd_similar)


def add_playlist(sub: argparse._SubParsersAction) -> None:
    """The ``playlist`` subcommand and its options."""
    pl = sub.add_parser(
        "playlist",
        help="mood, seed-radio, song-path or text playlists",
        description="Build a playlist from the library database: --mood LABEL (highest "
        "scores), --seed FILE (a smooth walk through the seed's neighbourhood), --from A --to B "
        '(a path through embedding space), --text "…" (CLAP models only).',
    )
    g = pl.add_mutually_exclusive_group(required=True)
    g.add_argument("--mood", metavar="LABEL")
    g.add_argument("--seed", metavar="FILE|TRACK_ID")
    g.add_argument("--from", dest="start", metavar="FILE|TRACK_ID")
    g.add_argument("--text", metavar="TEXT")
    pl.add_argument("--to", dest="end", metavar="FILE|TRACK_ID")
    pl.add_argument("--min", type=float, default=0.0, help="(--mood) minimum score")
    pl.add_argument(
        "--harmonic",
        action="store_true",
        help="(--seed, --from/--to) DJ mode: each next track within ±6 %% BPM (or half/double) "
        "and in a compatible Camelot key",
    )
    _query_opts(pl)
    pl.set_defaults(func=cmd_playlist, n=25)
