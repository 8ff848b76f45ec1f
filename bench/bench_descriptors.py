#!/usr/bin/env python3
"""Accuracy and cost of the DSP descriptors (issue 16), in one run, printed.

    .venv/bin/python bench/bench_descriptors.py            # everything (~8 min on 2 cores)
    .venv/bin/python bench/bench_descriptors.py --quick    # fewer songs/tracks, no cost run

1. Synthetic music with known truth, generated here (tests/synth.py): drum patterns under chord
   progressions, five timbres, tempi 60–180 BPM, all 24 keys (two songs each): tempo within 2 %
   (target ≥ 98 %) and key exact (target ≥ 95 %); octave errors counted apart.
2. Truth-free checks on ../shared/corpus: copies time-stretched ×0.9 and ×1.1 (FFmpeg atempo
   through PyAV) must scale the BPM by the same factor (within 2 %); copies pitch-shifted by ±1, ±2,
   ±3 semitones (asetrate + atempo + aresample) must move the key by the same interval.
3. Agreement with Essentia (AGPL, bench-only oracle: RhythmExtractor2013 multifeature,
   KeyExtractor defaults) on the corpus: BPM within 4 % allowing octave errors (×2, ×½), and
   exact; key exact.
4. Loudness against FFmpeg's ebur128 filter (through PyAV) and pyloudnorm: integrated within
   0.1 LU, true peak within 0.2 dB, on every corpus track.
5. Cost: the real musicnn analysis of the corpus at the default profile with and without the
   descriptors, interleaved per file, as a ratio (target ≤ 10 %); and the analyzers' own time
   (``timing["descriptors"]``) as a share of each file's analysis. Plus the timeline's stored
   size per track.
6. The level-invariant option (``<profile>+level``): the largest per-label difference between a
   corpus track and its −6 dB copy, default profile vs the option (target ≤ 0.01 with it on), and
   how far the option moves scores from the faithful default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nomarr.analyzers import DescriptorRun  # noqa: E402
from nomarr.analyzers.key import key_name, parse_key  # noqa: E402

from tests.synth import PATTERNS, TIMBRES, song  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"


def describe(x: np.ndarray, sr: int, loudness: bool = False):
    """The analyzers on [channels, n] float32 PCM, fed as the pipeline feeds them."""
    m16 = soxr.resample(x.mean(axis=0).astype(np.float32), sr, 16000, quality="HQ")
    run = DescriptorRun(loudness=loudness)
    for i in range(0, m16.size, 24000):
        run.feed(m16[i : i + 24000], 16000, i / 16000)
    if loudness:
        for i in range(0, x.shape[1], 65536):
            run.feed_native(x[:, i : i + 65536], sr)
    return run.finish(x.shape[1] / sr, True)


def decode(path: Path, filters: str | None = None) -> tuple[np.ndarray, int]:
    """[channels, n] float32 of a file, optionally through an FFmpeg filter chain."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        sr = s.codec_context.sample_rate
        out = []
        graph = None
        if filters:
            graph = av.filter.Graph()
            src = graph.add_abuffer(template=s)
            prev = src
            for spec in filters.split(","):
                name, _, args = spec.partition("=")
                node = graph.add(name, args or None)
                prev.link_to(node)
                prev = node
            fmt = graph.add("aformat", f"sample_fmts=fltp:sample_rates={sr}")
            prev.link_to(fmt)
            sink = graph.add("abuffersink")
            fmt.link_to(sink)
            graph.configure()

        def drain() -> None:
            while True:
                try:
                    f = graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    return
                out.append(f.to_ndarray().astype(np.float32))

        for frame in c.decode(s):
            if graph is None:
                arr = frame.to_ndarray()
                if not frame.format.is_planar:
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                out.append(arr.astype(np.float32))
            else:
                graph.push(frame)
                drain()
        if graph is not None:
            graph.push(None)
            drain()
    return np.concatenate(out, axis=1), sr


def ebur128(path: Path) -> tuple[float, float]:
    """FFmpeg's integrated loudness (LUFS) and true peak (dBTP) of a file."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        g = av.filter.Graph()
        src = g.add_abuffer(template=s)
        e = g.add("ebur128", "metadata=1:peak=true")
        sink = g.add("abuffersink")
        src.link_to(e)
        e.link_to(sink)
        g.configure()
        meta = {}
        for frame in c.decode(s):
            g.push(frame)
            while True:
                try:
                    meta = g.pull().metadata or meta
                except (av.BlockingIOError, av.EOFError):
                    break
        g.push(None)
        while True:
            try:
                meta = g.pull().metadata or meta
            except (av.BlockingIOError, av.EOFError):
                break
    return float(meta["lavfi.r128.I"]), 20 * np.log10(float(meta["lavfi.r128.true_peak"]))


def pct(a: int, n: int) -> str:
    return f"{a}/{n} = {100.0 * a / max(n, 1):.1f} %"


def octave_ok(a: float, b: float, tol: float) -> bool:
    return any(abs(a * r / b - 1) <= tol for r in (1.0, 2.0, 0.5))


# ------------------------------------------------------------------------------------------


def synthetic(n_per_key: int) -> None:
    print("\n1. synthetic music with known truth (20 s songs, 60–180 BPM, all 24 keys)")
    rng = np.random.default_rng(2024)
    t_ok = t_oct = k_ok = n = 0
    misses = []
    for tonic in range(12):
        for mode in ("major", "minor"):
            for j in range(n_per_key):
                bpm = float(rng.uniform(60, 180))
                timbre = TIMBRES[(n + j) % len(TIMBRES)]
                pattern = PATTERNS[(n // len(TIMBRES)) % len(PATTERNS)]
                x = song(
                    bpm,
                    tonic,
                    mode,
                    timbre=timbre,
                    pattern=pattern,
                    seconds=20,
                    seed=n,
                    progression=n,
                )
                d = describe(x, 44100)
                got = d.tempo.bpm
                good_t = got is not None and abs(got / bpm - 1) <= 0.02
                t_ok += good_t
                t_oct += got is not None and octave_ok(got, bpm, 0.02)
                good_k = d.key.key == key_name(tonic, mode)
                k_ok += good_k
                if not (good_t and good_k):
                    misses.append(
                        f"{bpm:.1f} {key_name(tonic, mode)} {timbre}/{pattern} -> {got and round(got, 1)} {d.key.key}"
                    )
                n += 1
    print(
        f"   tempo within 2 %: {pct(t_ok, n)} (target >= 98 %); allowing octave errors {pct(t_oct, n)}"
    )
    print(f"   key exact:        {pct(k_ok, n)} (target >= 95 %)")
    for m in misses[:12]:
        print("     miss:", m)


def transformations(paths: list[Path]) -> dict[Path, object]:
    print("\n2. truth-free checks on the corpus (FFmpeg atempo / asetrate through PyAV)")
    base = {}
    stretch_ok = stretch_n = pitch_ok = pitch_n = 0
    for p in paths:
        x, sr = decode(p)
        d = describe(x, sr)
        base[p] = d
        if d.tempo.bpm is not None:
            for f in (0.9, 1.1):
                y, _ = decode(p, f"atempo={f}")
                dy = describe(y, sr)
                stretch_n += 1
                stretch_ok += (
                    dy.tempo.bpm is not None and abs(dy.tempo.bpm / (d.tempo.bpm * f) - 1) <= 0.02
                )
        if d.key.key is not None:
            k0 = parse_key(d.key.key)
            for semis in (-3, -2, -1, 1, 2, 3):
                r = 2 ** (semis / 12)
                y, _ = decode(p, f"asetrate={sr * r:.4f},atempo={1 / r:.6f},aresample={sr}")
                dy = describe(y, sr)
                pitch_n += 1
                k1 = parse_key(dy.key.key) if dy.key.key else None
                pitch_ok += k1 is not None and k1[1] == k0[1] and (k1[0] - k0[0]) % 12 == semis % 12
    print(f"   time-stretch x0.9/x1.1, BPM scales within 2 %: {pct(stretch_ok, stretch_n)}")
    print(f"   pitch-shift ±1…3 semitones, key moves by the interval: {pct(pitch_ok, pitch_n)}")
    return base


def essentia_agreement(paths: list[Path], base: dict) -> None:
    print("\n3. agreement with Essentia (RhythmExtractor2013 multifeature, KeyExtractor)")
    try:
        import essentia.standard as es
    except ImportError:
        print("   essentia not installed (pip install essentia): skipped")
        return
    b_oct = b_exact = k_ok = n = 0
    rows = []
    for p in paths:
        audio = es.MonoLoader(filename=str(p), sampleRate=44100)()
        bpm = float(es.RhythmExtractor2013(method="multifeature")(audio)[0])
        key, scale, _ = es.KeyExtractor()(audio)
        ess_key = key_name(parse_key(key)[0], "minor" if scale == "minor" else "major")
        d = base[p]
        ours = d.tempo.bpm
        n += 1
        b_exact += ours is not None and abs(ours / bpm - 1) <= 0.04
        b_oct += ours is not None and octave_ok(ours, bpm, 0.04)
        k_ok += d.key.key == ess_key
        rows.append(
            f"{p.name}: {ours and round(ours, 1)} vs {bpm:.1f} BPM, {d.key.key} vs {ess_key}"
        )
    print(f"   BPM within 4 % allowing octave errors: {pct(b_oct, n)}; without: {pct(b_exact, n)}")
    print(f"   key exact: {pct(k_ok, n)}")
    for r in rows:
        print("     ", r)


def loudness(paths: list[Path]) -> None:
    print("\n4. loudness vs FFmpeg ebur128 and pyloudnorm (every corpus track)")
    try:
        import pyloudnorm as pyln
    except ImportError:
        pyln = None
    di, dt, dp = [], [], []
    for p in paths:
        x, sr = decode(p)
        d = describe(x, sr, loudness=True)
        i_ff, tp_ff = ebur128(p)
        di.append(abs(d.loudness.integrated - i_ff))
        dt.append(abs(d.loudness.true_peak - tp_ff))
        if pyln is not None:
            dp.append(
                abs(
                    d.loudness.integrated
                    - pyln.Meter(sr).integrated_loudness(x.T.astype(np.float64))
                )
            )
    print(
        f"   integrated vs ebur128: max |diff| {max(di):.3f} LU, within 0.1 LU on {pct(sum(v <= 0.1 for v in di), len(di))}"
    )
    print(
        f"   true peak vs ebur128:  max |diff| {max(dt):.3f} dB, within 0.2 dB on {pct(sum(v <= 0.2 for v in dt), len(dt))}"
    )
    if dp:
        print(f"   integrated vs pyloudnorm: max |diff| {max(dp):.3f} LU")


def cost(paths: list[Path]) -> None:
    print("\n5. cost: musicnn analysis at the default profile, descriptors on vs off (same run)")
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import DEFAULT_PROFILE, get_profile

    ms = ModelSet(Registry(), ["msd-musicnn-1"], threads=1)
    prof = get_profile(DEFAULT_PROFILE)
    on, off = Analyzer(ms, prof, batch_size=1), Analyzer(ms, prof, batch_size=1, descriptors=False)
    on.analyze(paths[0])  # warm-up

    def pair(f: Path):
        """(extra time with descriptors as a share of the time without, analyzers' share, the
        analysis with descriptors), the two runs back to back."""
        t0 = time.perf_counter()
        fa = on.analyze(f)
        t1 = time.perf_counter()
        off.analyze(f)
        t2 = time.perf_counter()
        return (t1 - t0) / (t2 - t1) - 1.0, fa.timing["descriptors"] / fa.timing["total"], fa

    ratios, shares, sizes = [], [], []
    for p in paths:
        r, sh, fa = pair(p)
        ratios.append(r)
        shares.append(sh)
        sizes.append(len(fa.descriptors.timeline.encode()))
    print(
        f"   extra time with descriptors (loudness on: corpus tracks are analysed whole): median {100 * statistics.median(ratios):+.1f} % of the analysis without (target <= 10 %)"
    )
    print(
        f"   analyzers' own time, share of each analysis: median {100 * statistics.median(shares):.1f} %"
    )
    print(f"   timeline stored per track (90 s): median {statistics.median(sizes):.0f} bytes")
    # a 4-minute track under the default profile: windows, no loudness
    import tempfile

    from tests.conftest import encode

    with tempfile.TemporaryDirectory() as td:
        f = encode(Path(td) / "long.flac", song(122, 5, "minor", seconds=240, seed=9), 44100)
        rr, sh = [], []
        for _ in range(3):
            r, s_, fa = pair(f)
            rr.append(r)
            sh.append(s_)
        print(
            f"   4-minute track ({len(fa.windows)} windows, no loudness): extra time median {100 * statistics.median(rr):+.1f} %, analyzers' share {100 * statistics.median(sh):.1f} %, timeline {len(fa.descriptors.timeline.encode())} bytes"
        )


def level_invariance(paths: list[Path]) -> None:
    print("\n6. level-invariant option: a track and its -6 dB copy (FLAC), musicnn MSD label means")
    import tempfile

    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import DEFAULT_PROFILE, get_profile

    from tests.conftest import encode

    ms = ModelSet(Registry(), ["msd-musicnn-1"], threads=1)
    names = (DEFAULT_PROFILE, DEFAULT_PROFILE + "+level")
    worst = {n: [] for n in names}
    drift = []
    with tempfile.TemporaryDirectory() as td:
        for p in paths:
            x, sr = decode(p)
            x = np.clip(x, -1.0, 1.0)
            a = encode(Path(td) / "a.flac", x, sr)
            b = encode(Path(td) / "b.flac", x * 10 ** (-6 / 20), sr)
            res = {}
            for n in names:
                an = Analyzer(ms, get_profile(n), batch_size=1, descriptors=False)
                ra, rb = (an.analyze(f).results["msd-musicnn-1"].scores for f in (a, b))
                worst[n].append(max(abs(ra[k] - rb[k]) for k in ra))
                res[n] = ra
            drift.append(max(abs(res[names[0]][k] - res[names[1]][k]) for k in res[names[0]]))
    for n in names:
        w = worst[n]
        print(
            f"   {n:>16}: max |label difference| median {statistics.median(w):.4f}, worst {max(w):.4f}, <= 0.01 on {pct(sum(v <= 0.01 for v in w), len(w))}"
        )
    print(
        f"   {names[1]} vs {names[0]} on the same file: max |label difference| median {statistics.median(drift):.4f}, worst {max(drift):.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer songs and tracks, no cost run")
    ap.add_argument(
        "--sections", default="1,2,3,4,5,6", help="which sections to run (default: all)"
    )
    args = ap.parse_args()
    want = set(args.sections.split(","))
    av.logging.set_level(av.logging.PANIC)
    t0 = time.time()
    if "1" in want:
        synthetic(1 if args.quick else 2)
    paths = sorted(CORPUS.glob("*.ogg"))
    if not paths:
        print(f"\n(no corpus at {CORPUS}: corpus checks skipped)")
        return
    if args.quick:
        paths = paths[:6]
    if want & {"2", "3"}:
        base = transformations(paths)
        if "3" in want:
            essentia_agreement(paths, base)
    if "4" in want:
        loudness(paths)
    if "6" in want:
        level_invariance(paths[:4] if args.quick else paths)
    if "5" in want and not args.quick:
        cost(paths)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
