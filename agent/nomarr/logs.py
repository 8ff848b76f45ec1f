"""Structured log lines on stderr: ``ts level logger msg key=value …``.

Why not JSON by default: people read these on a Pi over SSH; key=value stays greppable and
machine-parsable. ``NOMARR_LOG_FORMAT=json`` switches to one JSON object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class KeyValueFormatter(logging.Formatter):
    """Formats a record and its ``extra`` fields as key=value pairs (or JSON)."""

    def __init__(self, as_json: bool = False) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        """One line per record; extras appended in insertion order."""
        extras = {k: v for k, v in vars(record).items() if k not in _STD}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        msg = record.getMessage()
        if record.exc_info:
            extras["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        if self.as_json:
            return json.dumps(
                {
                    "ts": ts,
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "msg": msg,
                    **{k: _plain(v) for k, v in extras.items()},
                }
            )
        kv = " ".join(f"{k}={_quote(v)}" for k, v in extras.items())
        return f"{ts} {record.levelname.lower():7s} {record.name} {msg}" + (f" {kv}" if kv else "")


def _plain(v: object) -> object:
    return v if isinstance(v, str | int | float | bool | type(None)) else str(v)


def _quote(v: object) -> str:
    s = str(v)
    return json.dumps(s) if (not s or any(c in s for c in ' "=\n')) else s


def setup(level: str = "warning") -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_nomarr", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(os.environ.get("NOMARR_LOG_FORMAT", "") == "json"))
    handler._nomarr = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.WARNING))
    # libraries that narrate every batch at INFO ("3 changes detected", "Added job"): our own
    # nomarr.watch / nomarr.serve lines say what matters, once
    for noisy in ("watchfiles", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
