"""``nomarr models …`` (manifests, files, downloads, imports) and ``nomarr doctor``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nomarr import __version__
from nomarr.cli.common import Progress, UserError, emit_json

if TYPE_CHECKING:
    from nomarr.models.registry import Registry


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
    from nomarr.models import openvino as ovb

    ov = ovb.runtime()
    info["platform"]["openvino"] = (
        f"{ov.__version__} ({', '.join(ovb.precisions())})" if ov is not None else None
    )
    info["platform"]["precision"] = ovb.policy()
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
                        provider=choice.provider,
                        reason=choice.reason,
                        checks=choice.tried,
                        speedup=choice.speedup,
                        drift=choice.drift,
                    )
            except ModelError as e:
                entry["verified"] = False
                entry["error"] = str(e)
                info["problems"].append(str(e))
        info["models"].append(entry)
    info["problems"] += reg.errors
    if args.json:
        emit_json(info)
        return 0 if not info["problems"] else 1
    p = info["platform"]
    print(
        f"nomarr {__version__} on {p['system']} {p['machine']}, Python {p['python']}, {p['cores']} cores"
    )
    print(
        f"onnxruntime {p['onnxruntime']} ({p['ort_device']}); providers: {', '.join(p['providers'])}"
    )
    print(f"TFLite backend: {p['tflite'] or 'not installed (pip install nomarr[tflite])'}")
    print(
        f"OpenVINO CPU builds: {p['openvino'] or 'not installed (pip install nomarr[openvino])'}; "
        f"precision policy {p['precision']}"
    )
    print("\nmodels:")
    for e in info["models"]:
        state = "built-in" if e["builtin"] else ("installed" if e["installed"] else "not installed")
        line = f"  {e['id']:40s} {e['kind']:10s} {state}"
        if e.get("provider"):
            line += f"  -> {e['provider']} ({e['reason']})"
        if e.get("error"):
            line += f"  ERROR: {e['error']}"
        print(line)
        for c in e.get("checks") or []:
            if "speedup" in c:  # a CPU build measured on this machine
                verdict = (
                    "used"
                    if c["provider"] == e.get("provider")
                    else (c.get("why_not") or "not used")
                )
                print(
                    f"      {c['provider']}: {c['speedup']:.2f}x ONNX Runtime fp32 per patch "
                    f"({c['ms_per_patch']:.1f} vs {c['ms_per_patch_ort']:.1f} ms), track-level "
                    f"drift {c['drift']:.1e}: {verdict}"
                )
    for prob in info["problems"]:
        print(f"problem: {prob}")
    return 0 if not info["problems"] else 1


def _models_list(args: argparse.Namespace, reg: Registry) -> int:
    """Every known model: kind, built-in or installed, licence."""
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
        emit_json(rows)
    else:
        for r in rows:
            state = "built-in" if r["builtin"] else ("installed" if r["installed"] else "-")
            print(f"{r['id']:40s} {r['kind']:10s} {state:10s} {r['licence']:18s} {r['name']}")
    return 0


def _models_info(args: argparse.Namespace, reg: Registry) -> int:
    """One model's manifest, files (with local paths) and labels."""
    m = reg.get(args.id)
    d = m.to_dict()
    d["installed"] = reg.installed(m)
    d["paths"] = {f.name: str(reg.file_path(m, f)) for f in m.files}
    if args.json:
        emit_json(d)
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


def _models_verify(args: argparse.Namespace, reg: Registry) -> int:
    """sha256 of installed files against their manifests; exit 1 on any mismatch."""
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
        emit_json(report)
    else:
        for r in report:
            extra = (
                ""
                if r["status"] == "ok"
                else f" (expected {r['expected_sha256']}, got {r['actual_sha256']})"
            )
            print(f"{r['status']:8s} {r['model']}: {r['path']}{extra}")
    return 1 if bad else 0


def _models_pull(args: argparse.Namespace, reg: Registry) -> int:
    """Download models' files (resumable, sha256-checked) with a progress line."""
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
        emit_json(results)
    return 0


def _models_import_(args: argparse.Namespace, reg: Registry) -> int:
    """Write a manifest from an Essentia metadata .json (and install a local model file)."""
    m = reg.import_essentia(Path(args.json_file), Path(args.file) if args.file else None, args.url)
    if args.json:
        emit_json(m.to_dict())
    else:
        print(f"imported {m.id} ({m.kind}) -> {m.path}")
        if not reg.installed(m):
            print(f"model file not installed yet: nomarr models pull {m.id}")
    return 0


_MODELS_COMMANDS: dict[str, Callable[[argparse.Namespace, Registry], int]] = {
    "list": _models_list,
    "info": _models_info,
    "verify": _models_verify,
    "pull": _models_pull,
    "import": _models_import_,
}


def cmd_models(args: argparse.Namespace) -> int:
    """list | info | verify | pull | import."""
    from nomarr.models.registry import ModelError, Registry

    reg = Registry()
    run = _MODELS_COMMANDS.get(args.models_cmd)
    if run is None:
        raise UserError(f"unknown models command {args.models_cmd!r}")
    try:
        return run(args, reg)
    except ModelError as e:
        raise UserError(str(e)) from e


def add_doctor(sub: argparse._SubParsersAction) -> None:
    """The ``doctor`` subcommand."""
    d = sub.add_parser(
        "doctor",
        help="accelerators, execution providers, models and their health",
        description="Report the platform, the execution providers found, every model "
        "and which provider it uses and why. Exit status 1 when a problem is found.",
    )
    d.add_argument("--json", action="store_true", help="print one JSON document")
    d.set_defaults(func=cmd_doctor)


def add_models(sub: argparse._SubParsersAction) -> None:
    """The ``models`` subcommand and its subcommands."""
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
