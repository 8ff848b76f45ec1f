"""``python -m nomarr.server.peaks FILE BUCKETS``: a file's waveform as JSON on stdout.

Run by the agent in a child process (see :mod:`nomarr.server.api_media`): decoding happens outside
the server, and the child's failure or crash is one unanswered waveform, not a dead agent.
Output: ``{"duration": seconds, "peaks": [0..1 per bucket]}``, the loudest sample of each of
``BUCKETS`` equal stretches of the track (decoded to mono at 4 kHz: enough for a picture).
"""

from __future__ import annotations

import json
import sys

import numpy as np

SR = 4000


def peaks(path: str, buckets: int) -> dict[str, object]:
    """Loudest |sample| per bucket, and the duration."""
    from nomarr.audio.decode import stream_mono

    blocks = [np.abs(b) for b in stream_mono(path, sr=SR)]
    x = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    duration = len(x) / SR
    if len(x) == 0:
        return {"duration": 0.0, "peaks": []}
    n = min(buckets, len(x))
    edges = np.linspace(0, len(x), n + 1).astype(np.int64)
    p = np.maximum.reduceat(x, edges[:-1])
    return {"duration": round(duration, 3), "peaks": [round(float(v), 4) for v in np.clip(p, 0, 1)]}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m nomarr.server.peaks FILE BUCKETS", file=sys.stderr)
        return 2
    try:
        doc = peaks(argv[0], max(1, min(int(argv[1]), 10000)))
    except Exception as e:  # the parent reports the last line of stderr
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(doc, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
