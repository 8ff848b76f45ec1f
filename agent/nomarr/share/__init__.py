"""Analyses shared between agents by fingerprint (``nomarr analyses export|import``).

:mod:`.bundle` is the file format (versioned, signed record by record), :mod:`.validate` judges one
record against this agent's own models, :mod:`.exchange` exports a library, imports a bundle into
the store's shared pool and adopts an imported record when a scan meets a file of its recording.
docs/analyses.md documents the format for other implementations.
"""

from __future__ import annotations

from nomarr.share.bundle import BundleError, load_or_create_key
from nomarr.share.exchange import ExportSummary, ImportSummary, adopt, export_bundle, import_bundle

__all__ = [
    "BundleError",
    "ExportSummary",
    "ImportSummary",
    "adopt",
    "export_bundle",
    "import_bundle",
    "load_or_create_key",
]
