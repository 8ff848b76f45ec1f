"""What every command shares: the user-error type, JSON output, the progress line, the store.

Conventions every command keeps (DESIGN §4): ``--json`` prints exactly one JSON document on stdout;
progress and logs go to stderr; exit status 0 on success, 1 when the input was bad (with a one-line
reason), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def emit_json(doc: Any) -> None:
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


def open_store(args: argparse.Namespace, readonly: bool = True) -> Any:
    """The database of ``--db`` (a StoreError becomes a one-line UserError)."""
    from nomarr.store import Store, StoreError

    try:
        return Store(args.db, readonly=readonly)
    except StoreError as e:
        raise UserError(str(e)) from e


class DeferredParser(argparse.ArgumentParser):
    """An argument parser that adds some of its options only when it is used.

    ``nomarr serve`` derives its setting flags from the settings model, which needs pydantic; every
    other command would pay for that import on each run (a second on a Raspberry Pi) if the flags
    were added when the parser tree is built. Options registered with :meth:`defer` are added
    before this parser parses or prints help, i.e. only when ``serve`` is the command.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Run ``add(self)`` just before this parser is first used."""
        self._deferred.append(add)

    def _complete(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # noqa: D102
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:  # noqa: D102
        self._complete()
        return super().format_help()

    def format_usage(self) -> str:  # noqa: D102
        self._complete()
        return super().format_usage()
