"""``nomarr`` command line (DESIGN §4).

Conventions every command keeps: ``--json`` prints exactly one JSON document on stdout; progress and
logs go to stderr; exit status 0 on success, 1 when the input was bad (with a one-line reason), 2 for
usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from agent import __version__, logs

log = logging.getLogger("nomarr")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


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
    from agent.audio.decode import AudioError
    from agent.models.registry import ModelError, Registry
    from agent.pipeline.analyze import Analyzer, ModelSet
    from agent.pipeline.profiles import get_profile

    try:
        profile = get_profile(args.profile)
    except ValueError as e:
        raise UserError(str(e)) from e
    try:
        models = ModelSet(Registry(), args.model or ["msd-musicnn-1"], threads=args.threads, provider=args.provider)
        result = Analyzer(models, profile, batch_size=args.batch).analyze(args.file)
    except (AudioError, ModelError) as e:
        raise UserError(str(e)) from e
    if args.json:
        _emit_json(result.to_dict(with_embeddings=args.embedding))
        return 0
    d = result.to_dict()
    dur = f"{d['duration']:.1f} s" if d["duration"] else "unknown length"
    print(f"{d['path']}  ({dur}, profile {d['profile']}, windows "
          + ", ".join(f"{w['start']:.1f}+{'end' if w['duration'] is None else w['duration']}" for w in d["windows"]) + ")")  # fmt: skip
    for mid, r in d["models"].items():
        print(f"\n{mid}  [{r['provider']}, {r['patches']} patches, provenance {r['provenance']}"
              + (f", embedding {r['embedding_dim']}-d" if r["embedding_dim"] else "") + "]")  # fmt: skip
        ranked = sorted(r["scores"].items(), key=lambda kv: -kv[1])
        for label, s in ranked[: args.top]:
            print(f"  {s:.4f}  {r['tiers'][label]:6s}  {label}")
    t = d["timing"]
    xrt = (t["audio_seconds"] / t["total"]) if t["total"] > 0 and t["audio_seconds"] else 0.0
    print(f"\n{t['total']:.2f} s (decode+mel {t['decode_mel']:.2f} s, inference {t['inference']:.2f} s)"
          + (f", {xrt:.0f}x real time" if xrt else ""))  # fmt: skip
    for w in d["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


# -- doctor -------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    """Report platform, providers, models and which provider each model uses and why."""
    from agent.models.registry import ModelError, Registry
    from agent.models.runtime import ProviderSelector, platform_info

    reg = Registry()
    sel = ProviderSelector()
    info: dict[str, Any] = {"nomarr": __version__, "platform": platform_info(), "models": [], "problems": []}
    try:
        import ai_edge_litert  # noqa: F401

        info["platform"]["tflite"] = "ai-edge-litert"
    except ImportError:
        info["platform"]["tflite"] = None
    for m in reg.manifests().values():
        entry: dict[str, Any] = {"id": m.id, "kind": m.kind, "builtin": m.builtin, "installed": reg.installed(m)}
        if entry["installed"]:
            try:
                path = reg.require(m)
                entry["verified"] = True
                if m.backend == "onnx" and m.kind != "clap-text":
                    choice = sel.choose(str(path), reg.verify(m)[0].actual_sha256 or "")
                    entry.update(provider=choice.provider, reason=choice.reason, checks=choice.tried)
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
    print(f"nomarr {__version__} on {p['system']} {p['machine']}, Python {p['python']}, {p['cores']} cores")
    print(f"onnxruntime {p['onnxruntime']} ({p['ort_device']}); providers: {', '.join(p['providers'])}")
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
    from agent.models.registry import ModelError, Registry

    reg = Registry()
    try:
        if args.models_cmd == "list":
            rows = []
            for m in sorted(reg.manifests().values(), key=lambda m: (m.kind, m.id)):
                rows.append({"id": m.id, "kind": m.kind, "builtin": m.builtin, "installed": reg.installed(m),
                             "licence": m.licence, "name": m.name})  # fmt: skip
            if args.json:
                _emit_json(rows)
            else:
                for r in rows:
                    state = "built-in" if r["builtin"] else ("installed" if r["installed"] else "-")
                    print(f"{r['id']:40s} {r['kind']:10s} {state:10s} {r['licence']:18s} {r['name']}")
            return 0
        if args.models_cmd == "info":
            m = reg.get(args.id)
            d = m.to_dict()
            d["installed"] = reg.installed(m)
            d["paths"] = {f.name: str(reg.file_path(m, f)) for f in m.files}
            if args.json:
                _emit_json(d)
            else:
                for k in ("id", "kind", "name", "description", "licence", "licence_url", "source_url", "tag_prefix", "installed"):
                    print(f"{k:12s} {d[k]}")
                for f in m.files:
                    print(f"file         {f.name} ({f.role}, {f.size or '?'} bytes) sha256={f.sha256 or 'pinned on download'}")
                    print(f"             {f.url} -> {d['paths'][f.name]}")
                print(f"labels       {len(m.labels)}: {', '.join(m.labels[:12])}{' …' if len(m.labels) > 12 else ''}")
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
                    report.append({"model": mid, "file": st.name, "path": st.path, "status": status,
                                   "expected_sha256": st.expected_sha256, "actual_sha256": st.actual_sha256})  # fmt: skip
            if args.json:
                _emit_json(report)
            else:
                for r in report:
                    extra = "" if r["status"] == "ok" else f" (expected {r['expected_sha256']}, got {r['actual_sha256']})"
                    print(f"{r['status']:8s} {r['model']}: {r['path']}{extra}")
            return 1 if bad else 0
        if args.models_cmd == "pull":
            results = []
            for mid in args.id:
                m = reg.get(mid)
                prog = Progress(f"pull {mid}")
                sts = reg.pull(m, progress=lambda name, done, total, p=prog: p.update(done, total))
                prog.close()
                results.append({"model": mid, "files": [{"file": s.name, "path": s.path, "sha256": s.actual_sha256,
                                                         "ok": s.ok} for s in sts]})  # fmt: skip
                if not args.json:
                    print(f"{mid}: installed in {reg.models_dir / mid}")
            if args.json:
                _emit_json(results)
            return 0
        if args.models_cmd == "import":
            m = reg.import_essentia(Path(args.json_file), Path(args.file) if args.file else None, args.url)
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


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in docs)."""
    p = argparse.ArgumentParser(
        prog="nomarr",
        description="Local music analysis: mood/genre tags into your files, embeddings into SQLite.",
        epilog="Run 'nomarr COMMAND --help' for a command's options. Docs: README.md",
    )
    p.add_argument("--version", action="version", version=f"nomarr {__version__}")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="stderr log verbosity (default: warning)")  # fmt: skip
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    a = sub.add_parser("analyze", help="run the models on one file (no database, no writes)",
                       description="Analyse one audio file and print per-label scores, tiers, "
                       "embedding size, provenance, the execution provider and timing.")  # fmt: skip
    a.add_argument("file", help="audio file (mp3, flac, ogg, opus, m4a, wav, aiff, wma, ...)")
    a.add_argument("--profile", default="balanced",
                   help="sampling profile: full | balanced | club_hifi_150s | fast (default: balanced)")  # fmt: skip
    a.add_argument("--model", action="append", metavar="ID",
                   help="model id to run (repeatable; default: msd-musicnn-1). See 'nomarr models list'.")  # fmt: skip
    a.add_argument("--json", action="store_true", help="print one JSON document")
    a.add_argument("--embedding", action="store_true", help="include the embedding vector in --json output")
    a.add_argument("--top", type=int, default=10, help="labels to print per model (text output)")
    a.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    a.add_argument("--batch", type=int, default=4, help="patches per inference batch (default: 4; bench/ shows larger CPU batches are slower)")
    a.add_argument("--provider", help="force an onnxruntime execution provider (skips the golden check)")
    a.set_defaults(func=cmd_analyze)

    d = sub.add_parser("doctor", help="accelerators, execution providers, models and their health",
                       description="Report the platform, the execution providers found, every model "
                       "and which provider it uses and why. Exit status 1 when a problem is found.")  # fmt: skip
    d.add_argument("--json", action="store_true", help="print one JSON document")
    d.set_defaults(func=cmd_doctor)

    m = sub.add_parser("models", help="list, inspect, verify, download and import models",
                       description="Manage model manifests and files (models/manifests, DESIGN §3).")  # fmt: skip
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
    mim = ms.add_parser("import", help="create a manifest from an Essentia model .json",
                        description="Turn an Essentia model metadata .json into a nomarr manifest; "
                        "with --file, install the local .onnx too.")  # fmt: skip
    mim.add_argument("json_file", metavar="ESSENTIA_JSON")
    mim.add_argument("--file", help="local model file to install with it")
    mim.add_argument("--url", help="download URL to record for the model file")
    mim.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nomarr`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
