#!/usr/bin/env python3
"""What a shared-analyses bundle saves a second agent, on real music, in one run, printed.

    flock /tmp/nomarr-heavy.lock .venv/bin/python bench/bench_share.py            # ~2 min, 2 cores
    flock /tmp/nomarr-heavy.lock .venv/bin/python bench/bench_share.py --repeat 3

Agent A scans a copy of ``../shared/corpus`` (the real musicnn analysis, tags written) and exports
a bundle; agent B (its own database and key) imports it and scans another copy of the same files.
Printed, per repeat and as medians:

- the bundle's size per record, and how much of it the DSP descriptors (document and timeline)
  are: the bundle as written against the same records with ``"descriptors": {}`` (gzip, same
  settings);
- import time per record;
- B's scan of the copy (adopting, nothing analysed) against A's analysing scan of the same files:
  the ratio is what sharing saves;
- checks that make the figures mean something: B analysed nothing, adopted every record, and
  every tag in B's files (``nom:*``, ``nom:dsp_*``, BPM, key, ReplayGain) equals A's.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


def _cli(*args: object) -> tuple[dict, float]:
    """``nomarr ARGS --json`` in-process: (parsed output, seconds)."""
    from nomarr.cli import main

    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main([os.fspath(a) for a in args] + ["--json"])
    dt = time.perf_counter() - t
    if rc != 0:
        raise SystemExit(f"nomarr {' '.join(map(str, args))} failed ({rc})")
    return json.loads(buf.getvalue()), dt


def _gz_size(lines: list[dict]) -> int:
    b = io.BytesIO()
    with gzip.GzipFile(fileobj=b, mode="wb", mtime=0) as g:
        g.write(b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in lines))
    return len(b.getvalue())


def _all_tags(path: Path) -> list[tuple[str, str]]:
    import mutagen

    f = mutagen.File(path)
    return sorted((str(k).lower(), str(v)) for k, v in (f.tags.items() if f.tags else []))


def one_run(corpus: Path, base: Path, profile: str) -> dict:
    """A scans and exports, B imports and scans a copy; the figures of one repeat."""
    os.environ["NOMARR_CONFIG_DIR"] = str(base / "cfg-a")
    lib_a, lib_b = base / "a", base / "b"
    for d in (lib_a, lib_b):
        shutil.copytree(corpus, d, ignore=shutil.ignore_patterns("*.md", "*.csv", "licenses"))
        for p in d.iterdir():
            p.chmod(0o644)
    scan_a, t_a = _cli("scan", lib_a, "--db", base / "a.db", "--profile", profile)
    bundle = base / "a.jsonl.gz"
    exp, _ = _cli("analyses", "export", bundle, "--db", base / "a.db")
    os.environ["NOMARR_CONFIG_DIR"] = str(base / "cfg-b")
    imp, t_imp = _cli("analyses", "import", bundle, "--db", base / "b.db")
    scan_b, t_b = _cli("scan", lib_b, "--db", base / "b.db", "--profile", profile)
    lines = [json.loads(x) for x in gzip.open(bundle).read().splitlines()]
    recs = lines[1:-1]
    bare = [{"body": {**r["body"], "descriptors": {}}, "sig": r["sig"]} for r in recs]
    n = len(recs)
    same = sum(_all_tags(lib_a / p.name) == _all_tags(p) for p in sorted(lib_b.iterdir()))
    return {
        "files": scan_a["files"],
        "records": n,
        "with_descriptors": exp["descriptors"],
        "bundle_B_per_record": _gz_size(recs) / n,
        "without_descriptors_B_per_record": _gz_size(bare) / n,
        "import_ms_per_record": 1000 * t_imp / n,
        "refused": sum(imp["refused"].values()),
        "scan_a_s": t_a,
        "scan_b_s": t_b,
        "b_analysed": scan_b["analysed"],
        "b_adopted": scan_b["adopted"],
        "files_with_equal_tags": same,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--profile", default="balanced")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if not (args.corpus / "sh01.ogg").exists():
        raise SystemExit(f"no corpus at {args.corpus}")
    sys.path.insert(0, str(ROOT / "agent"))
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix=f"nomarr-share-{os.getpid()}-") as tmp:
            base = Path(tmp)
            os.environ["NOMARR_DATA_DIR"] = str(base / "data")  # the cache (provider checks)
            # stays the user's: measured once, it would otherwise be charged to A's scan alone
            r = one_run(args.corpus, base, args.profile)
        runs.append(r)
        print(f"run {i + 1}: " + json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)

    def med(k: str) -> float:
        return statistics.median(r[k] for r in runs)

    r = runs[-1]
    print(
        f"\n{r['files']} corpus files, profile {args.profile}, {args.repeat} run(s), medians:\n"
        f"  bundle: {med('bundle_B_per_record'):.0f} B/record with descriptors vs "
        f"{med('without_descriptors_B_per_record'):.0f} B/record without "
        f"(ratio {med('bundle_B_per_record') / med('without_descriptors_B_per_record'):.2f}); "
        f"{r['with_descriptors']}/{r['records']} records carry descriptors\n"
        f"  import: {med('import_ms_per_record'):.2f} ms/record, {r['refused']} refused\n"
        f"  second agent's scan of a copy {med('scan_b_s'):.2f} s vs first agent's analysing "
        f"scan {med('scan_a_s'):.2f} s: ratio {med('scan_b_s') / med('scan_a_s'):.3f}\n"
        f"  checks: B analysed {r['b_analysed']}, adopted {r['b_adopted']}/{r['records']}, "
        f"files with every tag equal to A's: {r['files_with_equal_tags']}/{r['files']}"
    )
    ok = all(
        x["b_analysed"] == 0
        and x["b_adopted"] == x["records"] == x["files"]
        and x["files_with_equal_tags"] == x["files"]
        for x in runs
    )
    print("checks " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
