#!/usr/bin/env python3
"""A long fuzzing campaign against the HTTP API (DESIGN §5), beyond what CI can afford.

``tests/test_api_fuzz.py`` runs the same campaign with a few dozen examples per operation on
every CI run; this script runs it with hundreds (or with a fresh random seed) and prints what was
sent and what came back, so a rare failure gets a chance to show up before a user finds it:

* every operation of the served OpenAPI document, positive and negative generation, checked for
  5xx, schema and status-code conformance, JSON content type and paths outside the roots;
* every operation without the token or with a wrong one (401 everywhere but /health), plus URL
  path tricks around /health;
* every path argument with hostile values (``..``, outside paths, symlinks out, NUL, encodings,
  look-alike unicode, long paths), and upload names that try to be paths.

By default it builds the same small library as the test (generated audio, plus a folder outside
it and symlinks pointing there) and starts a private agent in this process, with its own XDG
folders in a temp dir. ``--url``/``--token`` fuzz a running agent instead (read-only apart from
queued rescans and analyses of uploads; the symlink cases and the analysis spy need a local
agent and are left out).

    .venv/bin/python bench/fuzz_api.py                      # 500 examples per operation and mode
    .venv/bin/python bench/fuzz_api.py --examples 2000 --seed 7
    .venv/bin/python bench/fuzz_api.py --url http://127.0.0.1:8765/api/v1 --token "$(cat ~/.config/nomarr/token)"

Exit status 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real imports wait for sys.path (below) and the private XDG folders
    from tests.test_api_fuzz import FuzzStats, Target

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def private_dirs() -> Iterator[Path]:
    """A temp dir with its own XDG folders, so the agent never touches the user's real ones."""
    with tempfile.TemporaryDirectory(prefix="nomarr-fuzz-") as d:
        base = Path(d)
        saved = {
            k: os.environ.get(k)
            for k in (
                "XDG_DATA_HOME",
                "XDG_CONFIG_HOME",
                "XDG_CACHE_HOME",
                "NOMARR_DATA_DIR",
                "NOMARR_CONFIG_DIR",
                "NOMARR_MODELS_DIR",
                "NOMARR_DB",
            )
        }
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
            os.environ[var] = str(base / var.lower())
        for var in ("NOMARR_DATA_DIR", "NOMARR_CONFIG_DIR", "NOMARR_MODELS_DIR", "NOMARR_DB"):
            os.environ.pop(var, None)
        try:
            yield base
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _first_lines(e: BaseException, n: int = 25) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n      ".join(lines[:n])


def campaign(
    target: Target, args: argparse.Namespace, stats: FuzzStats, seen: list[str] | None
) -> None:
    """Everything, in the order the test runs it; failures are collected, never raised."""
    import schemathesis

    from tests import test_api_fuzz as fz

    path_examples = args.path_examples if args.path_examples is not None else args.examples
    ctx = fz.path_context(target)
    links = fz.late_links(target.lib) if target.lib is not None else contextlib.nullcontext()
    before = fz.snapshot(target.lib.outside) if target.lib is not None else set()
    t0 = time.perf_counter()
    with links:
        for field_ in fz.PATH_FIELDS:
            try:
                problems = fz.fuzz_path_field(
                    field_, target, ctx, path_examples, stats, seed=args.seed
                )
            except (
                Exception,
                BaseExceptionGroup,
            ) as e:  # a transport error, hypothesis' own complaints
                problems = [f"{field_.name}: {_first_lines(e)}"]
            stats.failures += [f"path {p}" for p in problems]
    stats.failures += [f"upload {p}" for p in fz.probe_upload_names(target, stats)]
    if target.lib is not None and fz.snapshot(target.lib.outside) != before:
        stats.failures.append("something was written into the folder outside the library")
    print(f"  path arguments: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    schema = fz.load_schema(target)
    ops = fz.operations(schema)
    modes = [schemathesis.GenerationMode(m) for m in args.modes]
    t0 = time.perf_counter()
    for label, op in sorted(ops.items()):
        if args.only and not any(o in label for o in args.only):
            continue
        for mode in modes:
            try:
                fz.fuzz_operation(op, target, mode, args.examples, stats, seed=args.seed)
            except (
                Exception,
                BaseExceptionGroup,
            ) as e:  # the shrunk failure (schemathesis' FailureGroup too)
                stats.failures.append(f"{label} [{mode.value}]: {_first_lines(e)}")
        try:
            fz.fuzz_auth(op, target, max(10, args.examples // 10), stats, seed=args.seed)
        except (Exception, BaseExceptionGroup) as e:
            stats.failures.append(f"{label} [auth]: {_first_lines(e)}")
    print(f"  generated requests: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    stats.failures += [f"auth {p}" for p in fz.probe_auth_paths(target, stats)]
    if seen is not None:
        stats.failures += [
            f"analysed outside the roots: {p}" for p in fz.analysed_outside(seen, target)
        ]
    if target.uploads is not None and list(target.uploads.glob("*")):
        stats.failures.append(f"uploads left behind in {target.uploads}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--examples",
        type=int,
        default=500,
        help="generated requests per operation and mode (default 500)",
    )
    ap.add_argument(
        "--path-examples",
        type=int,
        default=None,
        help="generated hostile values per path field (default: --examples)",
    )
    ap.add_argument(
        "--seed", type=int, default=None, help="random seed (default: derandomised, as in CI)"
    )
    ap.add_argument(
        "--modes", nargs="+", default=["positive", "negative"], choices=["positive", "negative"]
    )
    ap.add_argument(
        "--only", nargs="+", default=None, help="only operations whose label contains one of these"
    )
    ap.add_argument(
        "--url", help="fuzz a running agent at this API URL (…/api/v1) instead of a fresh one"
    )
    ap.add_argument("--token", help="its bearer token (with --url)")
    ap.add_argument(
        "--by-status", action="store_true", help="also print the status codes per operation"
    )
    args = ap.parse_args()
    if bool(args.url) != bool(args.token):
        ap.error("--url and --token go together")

    from tests import test_api_fuzz as fz

    stats = fz.FuzzStats()
    t0 = time.perf_counter()
    if args.url:
        target = fz.target_for(args.url.rstrip("/"), args.token)
        print(f"fuzzing {target.url} (roots: {', '.join(target.roots)})", file=sys.stderr)
        campaign(target, args, stats, None)
    else:
        # the agent runs in this process: /similar's float32 cast of 1e39s warns before refusing them
        warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
        with private_dirs() as base:
            lib = fz.build_library(base)
            with fz.analysis_spy() as seen:
                ra = fz.start_agent(lib)
                try:
                    target = fz.target_for(ra.url, ra.token, lib, ra.agent.uploads)
                    print(f"fuzzing a fresh agent at {target.url} over {lib.root}", file=sys.stderr)
                    campaign(target, args, stats, seen)
                finally:
                    ra.stop()
    print(
        f"\nnomarr API fuzz: {args.examples} examples per operation and mode, seed "
        f"{'derandomised' if args.seed is None else args.seed}, {time.perf_counter() - t0:.0f} s"
    )
    print(stats.summary())
    if args.by_status:
        for (label, probe, status), n in sorted(stats.by_status.items()):
            print(f"  {status}  {n:6d}  {label}  ({probe})")
    return 1 if stats.failures else 0


if __name__ == "__main__":  # the agent's worker processes re-import this module: keep the guard
    sys.exit(main())
