"""The level-invariant option (profiles ``<name>+level``): the models see the analysed audio
scaled to a reference level.

musicnn's log-mel front end is not gain-invariant, so a copy of a track 6 dB quieter scores
differently. With this option the level is measured on the very audio a window analyses — the
gated RMS of the 16 kHz mono input: mean squares per 100 ms, blocks below −70 dBFS dropped, then
blocks more than 10 dB below the mean of the rest (BS.1770's gating, unweighted) — and the gain
that brings it to the reference is applied to the power mel *before* the log compression, which is
exactly what scaling the samples would do, with no second decode. The power mel of a stretch is
held until its level is known; a stretch is one window, or 5 minutes of a longer one (bounded
memory: 5 min of 96-band mel is 11 MB).
"""

from __future__ import annotations

import numpy as np

from nomarr.audio.mel import MelSpec


class LevelScaler:
    """Power-mel frames in, log-mel frames out once their stretch's level is measured."""

    CHUNK_S = 300.0

    def __init__(self, spec: MelSpec, reference: float) -> None:
        self.spec = spec
        self.reference = reference
        self._ms: list[float] = []  # mean square per 100 ms block
        self._acc = 0.0
        self._n = 0
        self._pending: list[np.ndarray] = []
        self._frames = 0
        self._limit = int(self.CHUNK_S * spec.sr / spec.hop)

    def measure(self, sig: np.ndarray) -> None:
        """Add samples to the level measurement (100 ms blocks)."""
        block = self.spec.sr // 10
        x = sig.astype(np.float64)
        i = 0
        while i < x.shape[0]:
            take = min(block - self._n, x.shape[0] - i)
            self._acc += float(np.dot(x[i : i + take], x[i : i + take]))
            self._n += take
            i += take
            if self._n == block:
                self._ms.append(self._acc / block)
                self._acc, self._n = 0.0, 0

    def _gain(self) -> float:
        ms = np.asarray(self._ms)
        self._ms = []
        ms = ms[ms > 1e-7]  # −70 dBFS
        if ms.size == 0:
            return 1.0
        ms = ms[ms > ms.mean() * 0.1]  # −10 dB relative gate
        level = 10 * np.log10(ms.mean())
        return float(10 ** ((self.reference - level) / 10))  # a power gain

    def push(self, power: np.ndarray) -> list[np.ndarray]:
        """Hold power-mel frames; a full stretch comes back as log-mel frames."""
        if power.shape[0]:
            self._pending.append(power)
            self._frames += power.shape[0]
        return self.flush() if self._frames >= self._limit else []

    def flush(self) -> list[np.ndarray]:
        """The held frames as log-mel, scaled by their stretch's gain (the window ended)."""
        if not self._pending:
            return []
        g = self._gain()
        out = [self.spec.log_compress(b * g) for b in self._pending]
        self._pending, self._frames = [], 0
        return out
