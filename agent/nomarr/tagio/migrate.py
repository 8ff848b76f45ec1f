"""Rewriting the previous project's ``essentia:`` keys as ``nom:`` keys (``nomarr tags migrate``).

Migration is a normal write (same safety, same verification); only the choice of keys is its own.
"""

from __future__ import annotations

import contextlib
import logging
import os

from nomarr_client.tags import LEGACY_PREFIX, PREFIX, fmt_score, parse_key

from nomarr.tagio.edit import _Request
from nomarr.tagio.files import read_tags
from nomarr.tagio.writer import WriteResult, _write

log = logging.getLogger("nomarr.tagio")  # one logger name for all of tag I/O


def _legacy_target(key: str, mapping: dict[str, str]) -> str | None:
    body = key[len(LEGACY_PREFIX) :]
    try:
        return parse_key(PREFIX + body).key
    except ValueError:
        pass
    target = mapping.get(key)
    if target is None:
        return None
    return parse_key(target).key  # a bad mapping is the caller's bug: ValueError


def migrate_legacy(
    path: str | os.PathLike,
    *,
    mapping: dict[str, str] | None = None,
    journal_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> WriteResult:
    """Rewrite legacy ``essentia:`` keys as ``nom:`` keys, best effort, through the safe writer.

    Rule per legacy key: if ``nom:`` + its body is a valid nom key, use that; else use
    ``mapping[legacy_key]``; else leave it and report it in ``unmapped``. Existing ``nom:`` keys
    are kept and win over a migrated value for the same key. Numeric score/tier values are
    normalised to 4 decimals. Migrated legacy keys are removed; MOOD is not touched.
    """
    src = os.fspath(path)
    current = read_tags(src)
    mapping = {k.lower(): v for k, v in (mapping or {}).items()}
    nom = dict(current.nom)
    migrate: set[str] = set()
    unmapped: list[str] = []
    for key, value in sorted(current.legacy.items()):
        target = _legacy_target(key, mapping)
        if target is None:
            unmapped.append(key)
            continue
        migrate.add(key)
        if parse_key(target).kind != "provenance":
            with contextlib.suppress(ValueError):
                value = fmt_score(float(value))
        nom.setdefault(target, value)
    if unmapped:
        log.warning("legacy keys left unmigrated", extra={"path": src, "keys": ",".join(unmapped)})
    req = _Request(nom, None, None, migrate)
    result = _write(src, req, journal_dir, verify)
    result.unmapped = unmapped
    return result
