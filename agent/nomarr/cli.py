"""``nomarr`` command line (DESIGN §4).

Conventions every command keeps: ``--json`` prints exactly one JSON document on stdout; progress and
logs go to stderr; exit status 0 on success, 1 when the input was bad (with a one-line reason), 2 for
usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from nomarr import __version__, logs

log = logging.getLogger("nomarr")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _emit_json(doc: Any) -> None:
    """One JSON document on stdout. File names that are not valid UTF-8 (decoded by Python with
    surrogate escapes) come out as ``\\udcXX`` escapes: the document stays valid UTF-8 JSON and
    ``os.fsencode(json.loads(...))`` gives the original bytes back."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    sys.stdout.write(text + "\n")


class Progress:
    """A dependency-free progress line on stderr (only when stderr is a terminal)."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, done: int, total: int | None) -> None:
        """Redraw at most 10 times a second: done/total, rate and ETA."""
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and (total is None or done < total)):
            return
        self._last = now
        rate = done / max(now - self.t0, 1e-9)
        if total:
            eta = (total - done) / rate if rate > 0 else 0
            bar = "#" * int(30 * done / total)
            line = f"\r{self.label} [{bar:<30}] {done / 1e6:.1f}/{total / 1e6:.1f} MB {rate / 1e6:.1f} MB/s ETA {eta:.0f}s"
        else:
            line = f"\r{self.label} {done / 1e6:.1f} MB {rate / 1e6:.1f} MB/s"
        sys.stderr.write(line)
        sys.stderr.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.enabled:
            sys.stderr.write("\n")


# -- analyze ------------------------------------------------------------------------------------


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
        _emit_json(result.to_dict(with_embeddings=args.embedding))
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


# -- doctor -------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    """Report platform, providers, models and which provider each model uses and why."""
    from nomarr.models.backends import choose_provider
    from nomarr.models.registry import ModelError, Registry
    from nomarr.models.runtime import ProviderSelector, platform_info

    reg = Registry()
    sel = ProviderSelector()
    info: dict[str, Any] = {
        "nomarr": __version__,
        "platform": platform_info(),
        "models": [],
        "problems": [],
    }
    try:
        import ai_edge_litert  # noqa: F401

        info["platform"]["tflite"] = "ai-edge-litert"
    except ImportError:
        info["platform"]["tflite"] = None
    for m in reg.manifests().values():
        entry: dict[str, Any] = {
            "id": m.id,
            "kind": m.kind,
            "builtin": m.builtin,
            "installed": reg.installed(m),
        }
        if entry["installed"]:
            try:
                path = reg.require(m)
                entry["verified"] = True
                if m.kind != "clap-text":  # the 500 MB text tower is checked when it is used
                    sha = reg.verify(m)[0].actual_sha256 or ""
                    choice = choose_provider(m, path, sha, selector=sel)
                    entry.update(
                        provider=choice.provider, reason=choice.reason, checks=choice.tried
                    )
            except ModelError as e:
                entry["verified"] = False
                entry["error"] = str(e)
                info["problems"].append(str(e))
        info["models"].append(entry)
    info["problems"] += reg.errors
    if args.json:
        _emit_json(info)
        return 0 if not info["problems"] else 1
    p = info["platform"]
    print(
        f"nomarr {__version__} on {p['system']} {p['machine']}, Python {p['python']}, {p['cores']} cores"
    )
    print(
        f"onnxruntime {p['onnxruntime']} ({p['ort_device']}); providers: {', '.join(p['providers'])}"
    )
    print(f"TFLite backend: {p['tflite'] or 'not installed (pip install nomarr[tflite])'}")
    print("\nmodels:")
    for e in info["models"]:
        state = "built-in" if e["builtin"] else ("installed" if e["installed"] else "not installed")
        line = f"  {e['id']:40s} {e['kind']:10s} {state}"
        if e.get("provider"):
            line += f"  -> {e['provider']} ({e['reason']})"
        if e.get("error"):
            line += f"  ERROR: {e['error']}"
        print(line)
    for prob in info["problems"]:
        print(f"problem: {prob}")
    return 0 if not info["problems"] else 1


# -- models -------------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    """list | info | verify | pull | import."""
    from nomarr.models.registry import ModelError, Registry

    reg = Registry()
    try:
        if args.models_cmd == "list":
            rows = []
            for m in sorted(reg.manifests().values(), key=lambda m: (m.kind, m.id)):
                rows.append(
                    {
                        "id": m.id,
                        "kind": m.kind,
                        "builtin": m.builtin,
                        "installed": reg.installed(m),
                        "licence": m.licence,
                        "name": m.name,
                    }
                )
            if args.json:
                _emit_json(rows)
            else:
                for r in rows:
                    state = "built-in" if r["builtin"] else ("installed" if r["installed"] else "-")
                    print(
                        f"{r['id']:40s} {r['kind']:10s} {state:10s} {r['licence']:18s} {r['name']}"
                    )
            return 0
        if args.models_cmd == "info":
            m = reg.get(args.id)
            d = m.to_dict()
            d["installed"] = reg.installed(m)
            d["paths"] = {f.name: str(reg.file_path(m, f)) for f in m.files}
            if args.json:
                _emit_json(d)
            else:
                for k in (
                    "id",
                    "kind",
                    "name",
                    "description",
                    "licence",
                    "licence_url",
                    "source_url",
                    "tag_prefix",
                    "installed",
                ):
                    print(f"{k:12s} {d[k]}")
                for f in m.files:
                    print(
                        f"file         {f.name} ({f.role}, {f.size or '?'} bytes) sha256={f.sha256 or 'pinned on download'}"
                    )
                    print(f"             {f.url} -> {d['paths'][f.name]}")
                print(
                    f"labels       {len(m.labels)}: {', '.join(m.labels[:12])}{' …' if len(m.labels) > 12 else ''}"
                )
            return 0
        if args.models_cmd == "verify":
            ids = args.id or [m.id for m in reg.manifests().values() if reg.installed(m)]
            report = []
            bad = 0
            for mid in ids:
                m = reg.get(mid)
                for st in reg.verify(m):
                    status = "ok" if st.ok else ("missing" if not st.present else "MISMATCH")
                    bad += status != "ok"
                    report.append(
                        {
                            "model": mid,
                            "file": st.name,
                            "path": st.path,
                            "status": status,
                            "expected_sha256": st.expected_sha256,
                            "actual_sha256": st.actual_sha256,
                        }
                    )
            if args.json:
                _emit_json(report)
            else:
                for r in report:
                    extra = (
                        ""
                        if r["status"] == "ok"
                        else f" (expected {r['expected_sha256']}, got {r['actual_sha256']})"
                    )
                    print(f"{r['status']:8s} {r['model']}: {r['path']}{extra}")
            return 1 if bad else 0
        if args.models_cmd == "pull":
            results = []
            for mid in args.id:
                m = reg.get(mid)
                prog = Progress(f"pull {mid}")
                sts = reg.pull(m, progress=lambda name, done, total, p=prog: p.update(done, total))
                prog.close()
                results.append(
                    {
                        "model": mid,
                        "files": [
                            {"file": s.name, "path": s.path, "sha256": s.actual_sha256, "ok": s.ok}
                            for s in sts
                        ],
                    }
                )
                if not args.json:
                    print(f"{mid}: installed in {reg.models_dir / mid}")
            if args.json:
                _emit_json(results)
            return 0
        if args.models_cmd == "import":
            m = reg.import_essentia(
                Path(args.json_file), Path(args.file) if args.file else None, args.url
            )
            if args.json:
                _emit_json(m.to_dict())
            else:
                print(f"imported {m.id} ({m.kind}) -> {m.path}")
                if not reg.installed(m):
                    print(f"model file not installed yet: nomarr models pull {m.id}")
            return 0
    except ModelError as e:
        raise UserError(str(e)) from e
    raise UserError(f"unknown models command {args.models_cmd!r}")


# -- scan / tags / similar / playlist --------------------------------------------------------------


def _store(args: argparse.Namespace, readonly: bool = True) -> Any:
    from nomarr.store import Store, StoreError

    try:
        return Store(args.db, readonly=readonly)
    except StoreError as e:
        raise UserError(str(e)) from e


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
        )
        scanner = Scanner(opts, progress=None if not args.json else sys.stderr.isatty())
        summary = scanner.run()
    except (ValueError, ModelError, StoreError) as e:
        raise UserError(str(e)) from e
    d = summary.to_dict()
    if args.json:
        _emit_json(d)
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
        for f in summary.failures[:50]:
            print(f"  {f['path']}: {f['reason']}", file=sys.stderr)
        if len(summary.failures) > 50:
            print(f"  … and {len(summary.failures) - 50} more (--json lists all)", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the agent: HTTP API, watcher, periodic rescans, zeroconf."""
    import asyncio

    from nomarr import config
    from nomarr.models.registry import ModelError
    from nomarr.store import StoreError

    try:
        cfg = config.load(args.config)
        over: dict[str, object] = {
            k: v
            for k, v in (
                ("host", args.host),
                ("port", args.port),
                ("db", args.db),
                ("workers", args.workers),
                ("cpu_share", args.cpu_share),
                ("profile", args.profile),
            )
            if v is not None
        }
        if args.model:
            over["models"] = args.model
        if args.no_write:
            over["write_tags"] = False
        if args.no_zeroconf:
            over["zeroconf"] = False
        if args.no_auth:
            over["auth"] = "none"
        config._apply(cfg, over, "--")
        if args.library:
            cfg.libraries = [
                config._library({"path": p, "watch": args.watch or "event"}, "--library")
                for p in args.library
            ]
        elif args.watch:
            for lib in cfg.libraries:
                lib.watch = args.watch
        for lib in cfg.libraries:
            if not os.path.isdir(lib.path):
                log_missing = f"library {lib.path}: not a directory (yet); it is watched by polling until it appears"
                print(f"nomarr: warning: {log_missing}", file=sys.stderr)
        if not cfg.libraries:
            print(
                "nomarr: warning: no library configured (--library PATH or libraries in the config file); "
                "serving queries and uploads only",
                file=sys.stderr,
            )
        from nomarr.server import serve

        asyncio.run(serve(cfg))
    except (config.ConfigError, ValueError, ModelError, StoreError) as e:
        raise UserError(str(e)) from e
    except OSError as e:  # the port is taken, the config dir is unwritable…
        raise UserError(f"cannot start: {e}") from e
    return 0


def cmd_tags(args: argparse.Namespace) -> int:
    """Show the nom: tags in a file, or migrate legacy essentia: keys."""
    from nomarr import tagio
    from nomarr.tags import parse_key

    if args.file == "migrate":
        if not args.paths:
            raise UserError("tags migrate needs at least one PATH")
        from nomarr import paths
        from nomarr.scan import walk

        w = walk(args.paths)
        report = []
        for path, _ in w.files:
            try:
                tags = tagio.read_tags(path)
                if not tags.legacy:
                    continue
                r = tagio.migrate_legacy(path, journal_dir=paths.data_dir() / "journal")
                report.append(
                    {
                        "path": path,
                        "migrated": r.written,
                        "removed": r.removed,
                        "changed": r.changed,
                    }
                )
            except tagio.TagError as e:
                report.append({"path": path, "error": str(e)})
        if args.json:
            _emit_json(report)
        else:
            for r in report:
                print(
                    f"{r['path']}: "
                    + (
                        r["error"]
                        if "error" in r
                        else f"{len(r['migrated'])} keys migrated, "
                        f"{len(r['removed'])} legacy keys removed"
                    )
                )
            print(f"{len(report)} files with legacy keys")
        return 0
    if args.paths:
        raise UserError("usage: nomarr tags FILE | nomarr tags migrate PATH…")
    try:
        ft = tagio.read_tags(args.file)
    except tagio.TagError as e:
        raise UserError(str(e)) from e
    groups: dict[str, dict[str, Any]] = {}
    invalid = []
    for k, v in sorted(ft.nom.items()):
        try:
            pk = parse_key(k)
        except ValueError:
            invalid.append(k)
            continue
        g = groups.setdefault(
            pk.group,
            {
                "namespace": pk.namespace.__dict__
                if hasattr(pk.namespace, "__dict__")
                else str(pk.namespace),
                "scores": {},
                "tiers": {},
                "provenance": None,
            },
        )
        if pk.kind == "provenance":
            g["provenance"] = v
        elif pk.kind == "tier":
            g["tiers"][pk.label] = pk.tier
        else:
            try:
                g["scores"][pk.label] = float(v)
            except ValueError:
                invalid.append(k)
    doc = {
        "path": args.file,
        "format": ft.format,
        "groups": groups,
        "mood": ft.mood,
        "legacy": ft.legacy,
        "ids": ft.ids,
        "invalid": invalid,
    }
    if args.json:
        _emit_json(doc)
        return 0
    if not groups:
        print(
            f"{args.file}: no nom: tags"
            + (
                f" ({len(ft.legacy)} legacy essentia: keys: nomarr tags migrate)"
                if ft.legacy
                else ""
            )
        )
    for name, g in groups.items():
        print(f"{name}  provenance {g['provenance']}")
        for lab, sc in sorted(g["scores"].items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {sc:.4f}  {g['tiers'].get(lab, '-'):6s}  {lab}")
    if ft.mood:
        print(f"MOOD: {ft.mood}")
    for k in invalid:
        print(f"warning: not a valid nom: key: {k}", file=sys.stderr)
    return 0


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
    return Filters(
        under=args.under,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        min_scores=mins or None,
    )


def _print_hits(hits: list[Any], fmt: str, header: dict[str, Any] | None = None) -> None:
    from nomarr.query import to_m3u

    if fmt == "m3u":
        sys.stdout.write(to_m3u(hits))
    elif fmt == "json":
        _emit_json({**(header or {}), "tracks": [h.to_dict() for h in hits]})
    else:
        for i, h in enumerate(hits, 1):
            extra = " (same recording)" if h.same_recording else ""
            val = (
                f"score {h.score:.4f}"
                if h.score is not None
                else f"similarity {1 - h.distance:.4f}"
            )
            print(f"{i:3d}. {val}  {h.track.path}{extra}")


def cmd_similar(args: argparse.Namespace) -> int:
    """Nearest tracks to a file or track id."""
    from nomarr.query import QueryError, similar

    store = _store(args)
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

    store = _store(args)
    f = _filters(args)
    try:
        if args.mood:
            hits = mood_playlist(
                store, args.mood, args.n, model=args.model, min_score=args.min, filters=f
            )
        elif args.seed:
            hits = radio(store, args.seed, args.n, model=args.model, filters=f)
        elif args.start or args.end:
            if not (args.start and args.end):
                raise UserError("--from and --to go together")
            hits = path_playlist(store, args.start, args.end, args.n, model=args.model, filters=f)
        else:
            hits = text_playlist(store, args.text, args.n, filters=f)
    except QueryError as e:
        raise UserError(str(e)) from e
    fmt = "json" if args.json else args.format
    _print_hits(hits, fmt)
    return 0


# -- parser -------------------------------------------------------------------------------------


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
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="stderr log verbosity (default: warning)",
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

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

    d = sub.add_parser(
        "doctor",
        help="accelerators, execution providers, models and their health",
        description="Report the platform, the execution providers found, every model "
        "and which provider it uses and why. Exit status 1 when a problem is found.",
    )
    d.add_argument("--json", action="store_true", help="print one JSON document")
    d.set_defaults(func=cmd_doctor)

    m = sub.add_parser(
        "models",
        help="list, inspect, verify, download and import models",
        description="Manage model manifests and files (models/manifests, DESIGN §3).",
    )
    ms = m.add_subparsers(dest="models_cmd", metavar="SUBCOMMAND", required=True)
    ml = ms.add_parser("list", help="every known model and whether it is installed")
    ml.add_argument("--json", action="store_true")
    mi = ms.add_parser("info", help="one model's manifest, files and labels")
    mi.add_argument("id")
    mi.add_argument("--json", action="store_true")
    mv = ms.add_parser("verify", help="check installed model files against their sha256")
    mv.add_argument("id", nargs="*", help="model ids (default: every installed model)")
    mv.add_argument("--json", action="store_true")
    mp = ms.add_parser("pull", help="download a model's files (resumable, sha256-checked)")
    mp.add_argument("id", nargs="+")
    mp.add_argument("--json", action="store_true")
    mim = ms.add_parser(
        "import",
        help="create a manifest from an Essentia model .json",
        description="Turn an Essentia model metadata .json into a nomarr manifest; "
        "with --file, install the local .onnx too.",
    )
    mim.add_argument("json_file", metavar="ESSENTIA_JSON")
    mim.add_argument("--file", help="local model file to install with it")
    mim.add_argument("--url", help="download URL to record for the model file")
    mim.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

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
    sc.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    sc.set_defaults(func=cmd_scan)

    sv = sub.add_parser(
        "serve",
        help="run the agent: HTTP API, file watcher, periodic rescans, zeroconf",
        description="Run nomarr as a service: keep the libraries' tags and vectors current "
        "(watching for changes, or polling network mounts), answer the HTTP API (DESIGN §5, "
        "OpenAPI at /api/v1/openapi.json) and announce it on the LAN with zeroconf. Settings "
        "come from the config file, then NOMARR_* environment variables, then these flags. "
        "On first start a bearer token is created (shown once, kept mode 0600 in the config "
        "dir). SIGTERM/Ctrl-C shut down gracefully.",
    )
    sv.add_argument(
        "--config", help="config file (default: ~/.config/nomarr/config.toml if it exists)"
    )
    sv.add_argument(
        "--library",
        action="append",
        metavar="PATH",
        help="library root (repeatable; replaces the config's)",
    )
    sv.add_argument(
        "--watch",
        choices=["off", "event", "poll"],
        help="how changes are noticed: inotify events (local disks), polling (network mounts) or off",
    )
    sv.add_argument(
        "--db", help="database file (default: $NOMARR_DB or ~/.local/share/nomarr/nomarr.db)"
    )
    sv.add_argument("--host", help="address to listen on (default: 0.0.0.0)")
    sv.add_argument("--port", type=int, help="TCP port (default: 8765; 0 = any free port)")
    sv.add_argument("--profile", help="sampling profile for scans (default: balanced)")
    sv.add_argument(
        "--model",
        action="append",
        metavar="ID",
        help="model id (repeatable; default: msd-musicnn-1)",
    )
    sv.add_argument(
        "--workers", type=int, help="analysis processes (default: cpu_share of the cores)"
    )
    sv.add_argument(
        "--cpu-share",
        type=float,
        help="largest share of the cores the analysis may use (default: 0.5)",
    )
    sv.add_argument(
        "--no-write", action="store_true", help="never write tags into files (database only)"
    )
    sv.add_argument(
        "--no-zeroconf", action="store_true", help="do not announce the agent on the LAN"
    )
    sv.add_argument(
        "--no-auth",
        action="store_true",
        help="no bearer token (only on a trusted, private network)",
    )
    sv.set_defaults(func=cmd_serve)

    tg = sub.add_parser(
        "tags",
        help="show the nom: tags in a file, or migrate legacy essentia: keys",
        description="nomarr tags FILE: the nom: tags in a file, parsed by model group. "
        "nomarr tags migrate PATH…: rewrite legacy essentia:* keys as nom: keys.",
    )
    tg.add_argument("file", metavar="FILE|migrate")
    tg.add_argument("paths", nargs="*", metavar="PATH", help="(migrate) files or folders")
    tg.add_argument("--top", type=int, default=50, help="labels to print per group (text output)")
    tg.add_argument("--json", action="store_true", help="print one JSON document")
    tg.set_defaults(func=cmd_tags)

    def query_opts(q: argparse.ArgumentParser) -> None:
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
        q.add_argument("--format", choices=["text", "json", "m3u"], default="text")
        q.add_argument("--json", action="store_true", help="same as --format json")

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
    query_opts(si)
    si.set_defaults(func=cmd_similar)

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
    query_opts(pl)
    pl.set_defaults(func=cmd_playlist, n=25)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nomarr`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # paths in text and m3u output are written back as the bytes they are on disk
        sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        pass
    logs.setup(args.log_level)
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


if __name__ == "__main__":
    raise SystemExit(main())
