"""``nomarr serve``: the agent (HTTP API, watcher, scheduler, zeroconf), flags over the config."""

from __future__ import annotations

import argparse
import os
import sys

from nomarr.cli.common import UserError


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the agent: HTTP API, watcher, periodic rescans, zeroconf."""
    import asyncio

    from nomarr import config
    from nomarr.models.registry import ModelError
    from nomarr.store import StoreError

    try:
        cfg = config.load(args.config)
        over: dict[str, object] = {
            k: v
            for k, v in (
                ("host", args.host),
                ("port", args.port),
                ("db", args.db),
                ("workers", args.workers),
                ("cpu_share", args.cpu_share),
                ("profile", args.profile),
            )
            if v is not None
        }
        if args.model:
            over["models"] = args.model
        if args.no_write:
            over["write_tags"] = False
        if args.no_zeroconf:
            over["zeroconf"] = False
        if args.no_auth:
            over["auth"] = "none"
        config._apply(cfg, over, "--")
        if args.library:
            cfg.libraries = [
                config._library({"path": p, "watch": args.watch or "event"}, "--library")
                for p in args.library
            ]
        elif args.watch:
            for lib in cfg.libraries:
                lib.watch = args.watch
        for lib in cfg.libraries:
            if not os.path.isdir(lib.path):
                log_missing = f"library {lib.path}: not a directory (yet); it is watched by polling until it appears"
                print(f"nomarr: warning: {log_missing}", file=sys.stderr)
        if not cfg.libraries:
            print(
                "nomarr: warning: no library configured (--library PATH or libraries in the config file); "
                "serving queries and uploads only",
                file=sys.stderr,
            )
        from nomarr.server import serve

        asyncio.run(serve(cfg))
    except (config.ConfigError, ValueError, ModelError, StoreError) as e:
        raise UserError(str(e)) from e
    except OSError as e:  # the port is taken, the config dir is unwritable…
        raise UserError(f"cannot start: {e}") from e
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    """The ``serve`` subcommand and its options."""
    sv = sub.add_parser(
        "serve",
        help="run the agent: HTTP API, file watcher, periodic rescans, zeroconf",
        description="Run nomarr as a service: keep the libraries' tags and vectors current "
        "(watching for changes, or polling network mounts), answer the HTTP API (DESIGN §5, "
        "OpenAPI at /api/v1/openapi.json) and announce it on the LAN with zeroconf. Settings "
        "come from the config file, then NOMARR_* environment variables, then these flags. "
        "On first start a bearer token is created (shown once, kept mode 0600 in the config "
        "dir). SIGTERM/Ctrl-C shut down gracefully.",
    )
    sv.add_argument(
        "--config", help="config file (default: ~/.config/nomarr/config.toml if it exists)"
    )
    sv.add_argument(
        "--library",
        action="append",
        metavar="PATH",
        help="library root (repeatable; replaces the config's)",
    )
    sv.add_argument(
        "--watch",
        choices=["off", "event", "poll"],
        help="how changes are noticed: inotify events (local disks), polling (network mounts) or off",
    )
    sv.add_argument(
        "--db", help="database file (default: $NOMARR_DB or ~/.local/share/nomarr/nomarr.db)"
    )
    sv.add_argument("--host", help="address to listen on (default: 0.0.0.0)")
    sv.add_argument("--port", type=int, help="TCP port (default: 8765; 0 = any free port)")
    sv.add_argument("--profile", help="sampling profile for scans (default: balanced)")
    sv.add_argument(
        "--model",
        action="append",
        metavar="ID",
        help="model id (repeatable; default: msd-musicnn-1)",
    )
    sv.add_argument(
        "--workers", type=int, help="analysis processes (default: cpu_share of the cores)"
    )
    sv.add_argument(
        "--cpu-share",
        type=float,
        help="largest share of the cores the analysis may use (default: 0.5)",
    )
    sv.add_argument(
        "--no-write", action="store_true", help="never write tags into files (database only)"
    )
    sv.add_argument(
        "--no-zeroconf", action="store_true", help="do not announce the agent on the LAN"
    )
    sv.add_argument(
        "--no-auth",
        action="store_true",
        help="no bearer token (only on a trusted, private network)",
    )
    sv.set_defaults(func=cmd_serve)
