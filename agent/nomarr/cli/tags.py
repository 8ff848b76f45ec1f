"""``nomarr tags FILE`` (the nom: tags in a file, parsed) and ``nomarr tags migrate PATH…``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nomarr.cli.common import UserError, emit_json


def _tags_migrate(args: argparse.Namespace) -> int:
    """Rewrite legacy essentia: keys as nom: keys in every audio file under the PATHs."""
    from nomarr import paths, tagio
    from nomarr.walk import walk

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
        emit_json(report)
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


def _tag_groups(nom: dict[str, str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The nom: keys of a file grouped by model build, and the keys that do not parse."""
    from nomarr_client.tags import parse_key

    groups: dict[str, dict[str, Any]] = {}
    invalid = []
    for k, v in sorted(nom.items()):
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
        elif pk.kind == "descriptor":  # tempo, key, loudness, energy (docs/descriptors.md)
            try:
                g.setdefault("descriptors", {})[pk.label] = float(v) if pk.numeric else v
            except ValueError:
                invalid.append(k)
        else:
            try:
                g["scores"][pk.label] = float(v)
            except ValueError:
                invalid.append(k)
    return groups, invalid


def cmd_tags(args: argparse.Namespace) -> int:
    """Show the nom: tags in a file, or migrate legacy essentia: keys."""
    from nomarr import tagio

    if args.file == "migrate":
        if not args.paths:
            raise UserError("tags migrate needs at least one PATH")
        return _tags_migrate(args)
    if args.paths:
        raise UserError("usage: nomarr tags FILE | nomarr tags migrate PATH…")
    try:
        ft = tagio.read_tags(args.file)
    except tagio.TagError as e:
        raise UserError(str(e)) from e
    groups, invalid = _tag_groups(ft.nom)
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
        emit_json(doc)
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
        for lab, val in (g.get("descriptors") or {}).items():
            print(f"  {val!s:>7}  {lab}")
    if ft.mood:
        print(f"MOOD: {ft.mood}")
    for k in invalid:
        print(f"warning: not a valid nom: key: {k}", file=sys.stderr)
    return 0


def add_tags(sub: argparse._SubParsersAction) -> None:
    """The ``tags`` subcommand and its options."""
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
