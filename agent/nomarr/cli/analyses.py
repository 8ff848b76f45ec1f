"""``nomarr analyses export|import|key``: analyses shared between agents by fingerprint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nomarr.cli.common import UserError, emit_json, open_store


def _counter(label: str, enabled: bool) -> tuple[object, object]:
    """A records-so-far line on stderr (terminal only) and its closer."""
    on = enabled and sys.stderr.isatty()

    def update(n: int) -> None:
        if on and n % 100 == 0:
            sys.stderr.write(f"\r{label}: {n} records")
            sys.stderr.flush()

    def close() -> None:
        if on:
            sys.stderr.write("\n")

    return update, close


def cmd_export(args: argparse.Namespace) -> int:
    """Write the library's analyses to a signed bundle."""
    from nomarr.identity import agent_id
    from nomarr.share import BundleError, export_bundle, load_or_create_key
    from nomarr.share.exchange import default_bundle_name

    store = open_store(args, readonly=True)
    aid = agent_id()
    out = Path(args.out) if args.out else Path(default_bundle_name(aid))
    if out.is_dir():
        out = out / default_bundle_name(aid)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists (--force replaces it)")
    try:
        key = load_or_create_key(Path(args.key) if args.key else None)
    except (BundleError, ValueError, OSError) as e:
        raise UserError(f"signing key: {e}") from e
    update, close = _counter("export", not args.json)
    try:
        s = export_bundle(
            store,
            out,
            key,
            agent_id=aid,
            models=args.model,
            under=args.under,
            include_shared=args.include_shared,
            progress=update,  # type: ignore[arg-type]
        )
    except OSError as e:
        raise UserError(f"{out}: {e.strerror or e}") from e
    finally:
        close()  # type: ignore[operator]
        store.close()
    if args.json:
        emit_json(s.to_dict())
    else:
        print(
            f"{s.path}: {s.records} recordings, {s.analyses} analyses, {s.descriptors} with "
            f"descriptors, {s.bytes / 1e6:.2f} MB, signed by {s.signer}"
            + (
                f"; {s.skipped_no_fingerprint} without a usable fingerprint left out"
                if s.skipped_no_fingerprint
                else ""
            )
            + (f"; {s.skipped_shared} imported ones left out" if s.skipped_shared else "")
            + (
                f"; {s.timelines_left_out} timelines too large to travel"
                if s.timelines_left_out
                else ""
            )
        )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Validate a bundle record by record and keep what this agent can use."""
    from nomarr.models.registry import Registry
    from nomarr.share import BundleError, import_bundle

    store = open_store(args, readonly=False)
    trust = set(args.trust) if args.trust else None
    update, close = _counter("import", not args.json)
    try:
        s = import_bundle(store, Path(args.bundle), Registry(), trust=trust, progress=update)  # type: ignore[arg-type]
    except BundleError as e:
        raise UserError(str(e)) from e
    finally:
        close()  # type: ignore[operator]
        store.close()
    if args.json:
        emit_json(s.to_dict())
    else:
        refused = sum(s.refused.values())
        print(
            f"{s.path}: {s.records} records from agent {s.agent_id or '?'} (key {s.signer}): "
            f"{s.accepted} imported ({s.descriptors_accepted} with descriptors), "
            f"{s.duplicates} already here, {refused} refused "
            f"({', '.join(f'{n} {k}' for k, n in s.refused.items() if n) or 'none'})"
            + (
                f"; {s.analyses_foreign} analyses of models unknown here left out"
                if s.analyses_foreign
                else ""
            )
        )
        for r in s.refusals[:20]:
            print(f"  line {r['line']}: {r['kind']}: {r['reason']}", file=sys.stderr)
        for w in s.warnings:
            print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """Print this agent's signing key id (what another agent trusts with --trust)."""
    from nomarr.share import BundleError, load_or_create_key

    try:
        key = load_or_create_key(Path(args.key) if args.key else None)
    except (BundleError, ValueError, OSError) as e:
        raise UserError(f"signing key: {e}") from e
    if args.json:
        emit_json({"key_id": key.key_id, "public_key": key.public_b64})
    else:
        print(key.key_id)
    return 0


def add_analyses(sub: argparse._SubParsersAction) -> None:
    """The ``analyses`` command group."""
    p = sub.add_parser(
        "analyses",
        help="share analyses with other agents: export / import signed bundles",
        description="Analyses travel between agents as bundles keyed by Chromaprint fingerprint "
        "and provenance (docs/analyses.md). A file whose fingerprint and provenance match an "
        "imported record is tagged by the next scan without running a model.",
    )
    s = p.add_subparsers(dest="analyses_cmd", metavar="ACTION", required=True)
    e = s.add_parser("export", help="write this library's analyses to a signed bundle")
    e.add_argument("out", nargs="?", help="bundle file or folder (default: ./nomarr-analyses-…)")
    e.add_argument("--db", help="database file (default: ~/.local/share/nomarr/nomarr.db)")
    e.add_argument("--model", action="append", metavar="ID", help="only these models (repeatable)")
    e.add_argument("--under", action="append", metavar="DIR", help="only files under DIR")
    e.add_argument(
        "--include-shared",
        action="store_true",
        help="also re-export analyses this agent adopted from imports (signed by this agent)",
    )
    e.add_argument("--key", help="signing key (default: ~/.config/nomarr/analyses-key.pem)")
    e.add_argument("--force", action="store_true", help="replace an existing bundle file")
    e.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    e.set_defaults(func=cmd_export)
    i = s.add_parser(
        "import",
        help="validate a bundle record by record and keep what this agent can use",
        description="Each record must carry a valid signature by the bundle's key, sane numbers, "
        "and a provenance this agent's own model files give; others are refused and counted. "
        "Importing a bundle twice adds nothing.",
    )
    i.add_argument("bundle", help="a bundle written by 'nomarr analyses export'")
    i.add_argument("--db", help="database file (default: ~/.local/share/nomarr/nomarr.db)")
    i.add_argument(
        "--trust",
        action="append",
        metavar="KEY_ID",
        help="accept only bundles signed by this key id (repeatable; see 'nomarr analyses key')",
    )
    i.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    i.set_defaults(func=cmd_import)
    k = s.add_parser("key", help="print this agent's signing key id")
    k.add_argument("--key", help="signing key (default: ~/.config/nomarr/analyses-key.pem)")
    k.add_argument("--json", action="store_true", help="print key id and public key as JSON")
    k.set_defaults(func=cmd_key)
