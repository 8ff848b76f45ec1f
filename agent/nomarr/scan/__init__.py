"""``nomarr scan``: walk a library, analyse what changed, store vectors, write ``nom:`` tags.

The shape, and why:
- **Decide cheaply first.** One walk (``os.scandir``, stat only for audio suffixes) and three
  queries tell, for every file, whether it is unchanged (size + mtime), whether its recording's
  analyses carry the current provenance, and whether the tags in it are current. An unchanged
  library costs a walk and those queries, and no model is loaded.
- **Identity before analysis.** A file that is new at its path is first matched by inode (a move
  within one filesystem keeps it) and then by Chromaprint fingerprint (a copy, a re-tag or a
  re-encode), in which case the stored analysis is reused and only the tags are written.
- **Keep every core busy.** Fingerprinting and analysis run in worker processes (one ONNX Runtime
  thread each: on small CPUs two single-threaded sessions out-run one two-threaded session, and the
  next file's decode overlaps the other worker's inference); the main process only does SQLite and
  tag writes.
- **Crash-safe.** Each file's database change is one transaction; tag writes are atomic replaces
  (see :mod:`nomarr.tagio`), and the write is recorded only after it happened, so a kill at any
  moment leaves at worst a file whose tags are re-checked (and found current) by the next scan.

The package follows the data: :mod:`~nomarr.scan.plan` decides per file (unchanged, moved, new,
stale), :mod:`~nomarr.scan.dispatch` keeps the workers fed (one analysis per recording in flight,
crash retries), :mod:`~nomarr.scan.apply` stores results and writes tags, and
:class:`~nomarr.scan.scanner.Scanner` runs the three in order.
"""

from __future__ import annotations

from nomarr.scan.options import Progress, ScanOptions, ScanSummary
from nomarr.scan.scanner import Scanner

__all__ = ["Progress", "ScanOptions", "ScanSummary", "Scanner"]
