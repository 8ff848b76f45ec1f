"""``nomarr`` command line (DESIGN §4).

Conventions every command keeps: ``--json`` prints exactly one JSON document on stdout; progress and
logs go to stderr; exit status 0 on success, 1 when the input was bad (with a one-line reason), 2 for
usage errors.

One module per command group, each holding its commands and their parsers: :mod:`.analyze`
(analyze, scan), :mod:`.models` (models, doctor), :mod:`.serve`, :mod:`.tags`, :mod:`.query`
(similar, playlist), :mod:`.analyses` (export/import of shared analyses), :mod:`.remote` (worker, scheduler); :mod:`.common` has what they share. Heavy imports (onnxruntime, numpy, the
store) happen inside the commands, so ``--help`` and usage errors stay fast.
"""

from __future__ import annotations

import argparse
import sys

from nomarr import __version__, logs
from nomarr.cli import analyses, analyze, models, query, remote, serve, tags
from nomarr.cli.common import DeferredParser, UserError

__all__ = ["UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in docs)."""
    p = argparse.ArgumentParser(
        prog="nomarr",
        description="Local music analysis: mood/genre tags into your files, embeddings into SQLite.",
        epilog="Run 'nomarr COMMAND --help' for a command's options. Docs: README.md",
    )
    p.add_argument("--version", action="version", version=f"nomarr {__version__}")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="stderr log verbosity (default: warning; for serve, its log_level setting: info)",
    )
    sub = p.add_subparsers(
        dest="cmd", metavar="COMMAND", required=True, parser_class=DeferredParser
    )

    # The order here is the order of --help.
    analyze.add_analyze(sub)
    models.add_doctor(sub)
    models.add_models(sub)
    analyze.add_scan(sub)
    serve.add_serve(sub)
    tags.add_tags(sub)
    query.add_similar(sub)
    query.add_playlist(sub)
    analyses.add_analyses(sub)
    remote.add_worker(sub)
    remote.add_scheduler(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nomarr`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # paths in text and m3u output are written back as the bytes they are on disk
        sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        pass
    logs.setup(args.log_level or "warning")
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"nomarr: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nomarr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
