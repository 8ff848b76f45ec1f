"""``nomarr export rekordbox OUT.xml``: the library and its playlists for DJ software."""

from __future__ import annotations

import argparse
import sys

from nomarr.cli.common import UserError, emit_json, open_store


def cmd_export_rekordbox(args: argparse.Namespace) -> int:
    """Write the Rekordbox XML document."""
    from nomarr.export.rekordbox import PlaylistSpec, export
    from nomarr.query import QueryError

    try:
        specs = [PlaylistSpec.parse(s) for s in args.playlists or []]
    except ValueError as e:
        raise UserError(str(e)) from e
    store = open_store(args)
    try:
        info = export(store, args.out, specs)
    except QueryError as e:
        raise UserError(str(e)) from e
    except OSError as e:
        raise UserError(f"{args.out}: cannot write ({e.strerror or e})") from e
    if args.json:
        emit_json(info)
    else:
        print(
            f"{info['path']}: {info['tracks']} tracks, {info['playlists']} playlists",
            file=sys.stdout,
        )
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    """The ``export`` command group."""
    ex = sub.add_parser("export", help="export the library to other tools (Rekordbox XML)")
    exs = ex.add_subparsers(dest="export_cmd", metavar="FORMAT", required=True)
    rb = exs.add_parser(
        "rekordbox",
        help="Rekordbox XML: collection with BPM, key, beat grid, moods; nomarr playlists",
        description="Write a Rekordbox XML library (File > Import > rekordbox xml): every "
        "present track with title, artist, album, genre, duration, average BPM, tonality, a "
        "beat-grid anchor, the strongest moods in Comments; one playlist per mood label under "
        "'nomarr moods', and the radio and path playlists asked for. The same library gives a "
        "byte-identical file.",
    )
    rb.add_argument("out", metavar="OUT.xml")
    rb.add_argument(
        "--playlists",
        nargs="*",
        metavar="SPEC",
        help="extra playlists: mood:LABEL, radio:TRACK (file or id), path:FROM,TO",
    )
    rb.add_argument(
        "--db", help="database file (default: $NOMARR_DB or ~/.local/share/nomarr/nomarr.db)"
    )
    rb.add_argument("--json", action="store_true", help="print a JSON summary")
    rb.set_defaults(func=cmd_export_rekordbox)
