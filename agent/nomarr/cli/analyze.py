"""``nomarr analyze`` (one file, no writes) and ``nomarr scan`` (a library, incrementally)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nomarr.cli.common import UserError, emit_json


def cmd_analyze(args: argparse.Namespace) -> int:
    """Run the models on one file and print scores, tiers and embedding size."""
    from nomarr.audio.decode import AudioError
    from nomarr.models.registry import ModelError, Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import get_profile

    try:
        profile = get_profile(args.profile)
    except ValueError as e:
        raise UserError(str(e)) from e
    try:
        models = ModelSet(
            Registry(),
            args.model or ["msd-musicnn-1"],
            threads=args.threads,
            provider=args.provider,
        )
        result = Analyzer(models, profile, batch_size=args.batch).analyze(args.file)
    except (AudioError, ModelError) as e:
        raise UserError(str(e)) from e
    if args.json:
        emit_json(result.to_dict(with_embeddings=args.embedding))
        return 0
    d = result.to_dict()
    dur = f"{d['duration']:.1f} s" if d["duration"] else "unknown length"
    print(
        f"{d['path']}  ({dur}, profile {d['profile']}, windows "
        + ", ".join(
            f"{w['start']:.1f}+{'end' if w['duration'] is None else w['duration']}"
            for w in d["windows"]
        )
        + ")"
    )
    for mid, r in d["models"].items():
        print(
            f"\n{mid}  [{r['provider']}, {r['patches']} patches, provenance {r['provenance']}"
            + (f", embedding {r['embedding_dim']}-d" if r["embedding_dim"] else "")
            + "]"
        )
        ranked = sorted(r["scores"].items(), key=lambda kv: -kv[1])
        for label, s in ranked[: args.top]:
            print(f"  {s:.4f}  {r['tiers'][label]:6s}  {label}")
    t = d["timing"]
    xrt = (t["audio_seconds"] / t["total"]) if t["total"] > 0 and t["audio_seconds"] else 0.0
    print(
        f"\n{t['total']:.2f} s (decode+mel {t['decode_mel']:.2f} s, inference {t['inference']:.2f} s)"
        + (f", {xrt:.0f}x real time" if xrt else "")
    )
    for w in d["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """Analyse a library incrementally, write tags, store vectors."""
    from nomarr.models.registry import ModelError
    from nomarr.pipeline.profiles import get_profile
    from nomarr.scan import Scanner, ScanOptions
    from nomarr.store import StoreError

    for r in args.path:
        if not Path(r).exists():
            raise UserError(f"{r}: no such file or directory")
    try:
        get_profile(args.profile)
        opts = ScanOptions(
            roots=args.path,
            db=args.db,
            write=not args.no_write,
            profile=args.profile,
            models=args.model or ["msd-musicnn-1"],
            workers=args.workers,
            mood_field=args.mood_field,
            retry_failed=args.retry_failed,
            provider=args.provider,
            nice=args.nice,
            scheduler=args.scheduler,
            secrets=args.secrets,
            insecure=args.insecure,
            gpu_only=args.gpu_only,
        )
        scanner = Scanner(opts, progress=None if not args.json else sys.stderr.isatty())
        summary = scanner.run()
    except (ValueError, ModelError, StoreError) as e:
        raise UserError(str(e)) from e
    d = summary.to_dict()
    if args.json:
        emit_json(d)
    else:
        rate = ""
        if summary.analysed and summary.elapsed_s > 0:
            rate = f", {summary.analysed / summary.elapsed_s * 60:.0f} tracks/min, {summary.audio_seconds / summary.elapsed_s:.0f}x real time"
        print(
            f"{summary.files} audio files: {summary.analysed} analysed, {summary.reused} reused, {summary.moved} moved, "
            f"{summary.skipped} unchanged, {summary.failed} failed, {summary.missing} gone; {summary.written} files "
            f"tagged, {summary.tags_current} already current, {summary.read_only} read-only "
            f"({summary.elapsed_s:.1f} s{rate})"
        )
        _print_remote(d.get("remote") or {})
        for f in summary.failures[:50]:
            print(f"  {f['path']}: {f['reason']}", file=sys.stderr)
        if len(summary.failures) > 50:
            print(f"  … and {len(summary.failures) - 50} more (--json lists all)", file=sys.stderr)
    return 0


def _print_remote(r: dict) -> None:
    """Who analysed what, who was refused, what went wrong (with --scheduler)."""
    if not r:
        return
    local = sum(1 for w in (r.get("files") or {}).values() if w == "local")
    parts = [f"{n}: {w['analysed']} analysed" for n, w in (r.get("workers") or {}).items()]
    print(f"remote ({r['scheduler']}): " + ", ".join(parts + [f"local: {local} analysed"]))
    for why in r.get("refused") or []:
        print(f"  refused worker {why}", file=sys.stderr)
    if r.get("down"):
        print(f"  {r['down']}; the scan went on locally", file=sys.stderr)


def add_analyze(sub: argparse._SubParsersAction) -> None:
    """The ``analyze`` subcommand and its options."""
    a = sub.add_parser(
        "analyze",
        help="run the models on one file (no database, no writes)",
        description="Analyse one audio file and print per-label scores, tiers, "
        "embedding size, provenance, the execution provider and timing.",
    )
    a.add_argument("file", help="audio file (mp3, flac, ogg, opus, m4a, wav, aiff, wma, ...)")
    a.add_argument(
        "--profile",
        default="balanced",
        help="sampling profile: full | balanced | club_hifi_150s | fast (default: balanced)",
    )
    a.add_argument(
        "--model",
        action="append",
        metavar="ID",
        help="model id to run (repeatable; default: msd-musicnn-1). See 'nomarr models list'.",
    )
    a.add_argument("--json", action="store_true", help="print one JSON document")
    a.add_argument(
        "--embedding", action="store_true", help="include the embedding vector in --json output"
    )
    a.add_argument("--top", type=int, default=10, help="labels to print per model (text output)")
    a.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    a.add_argument(
        "--batch",
        type=int,
        default=4,
        help="patches per inference batch (default: 4; bench/ shows larger CPU batches are slower)",
    )
    a.add_argument(
        "--provider", help="force an onnxruntime execution provider (skips the golden check)"
    )
    a.set_defaults(func=cmd_analyze)


def add_scan(sub: argparse._SubParsersAction) -> None:
    """The ``scan`` subcommand and its options."""
    sc = sub.add_parser(
        "scan",
        help="analyse a library incrementally: tags into files, vectors into SQLite",
        description="Walk PATHs, analyse new and changed audio files with the models, store "
        "scores and embeddings in the database and write nom: tags into the files. Unchanged "
        "files are skipped; moved, re-tagged or re-encoded files reuse their analysis "
        "(Chromaprint). Safe to interrupt at any moment.",
    )
    sc.add_argument("path", nargs="+", help="library folders or files")
    sc.add_argument(
        "--db", help="database file (default: $NOMARR_DB or ~/.local/share/nomarr/nomarr.db)"
    )
    sc.add_argument(
        "--no-write",
        action="store_true",
        help="keep results in the database only; never touch the files",
    )
    sc.add_argument("--profile", default="balanced", help="sampling profile (default: balanced)")
    sc.add_argument(
        "--model",
        action="append",
        metavar="ID",
        help="model id (repeatable; default: msd-musicnn-1)",
    )
    sc.add_argument(
        "--workers",
        type=int,
        help="analysis processes (default: one per core; 0 = in this process)",
    )
    sc.add_argument(
        "--mood-field",
        action="store_true",
        help="also fill the standard MOOD tag from high-tier mood labels (only when empty or nomarr's)",
    )
    sc.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry files that failed before and have not changed",
    )
    sc.add_argument("--provider", help="force an onnxruntime execution provider")
    sc.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness added to the analysis processes (e.g. 10 on a NAS)",
    )
    sc.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="also analyse on remote 'nomarr worker's joined to this Dask scheduler "
        "(tls://host:8786); this process stays the only writer. docs/remote.md",
    )
    sc.add_argument(
        "--secrets", help="the cluster's secrets folder (default ~/.config/nomarr/remote)"
    )
    sc.add_argument("--insecure", action="store_true", help="allow a plain tcp:// scheduler")
    sc.add_argument("--gpu-only", action="store_true", help="remote work only on GPU workers")
    sc.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    sc.set_defaults(func=cmd_scan)
