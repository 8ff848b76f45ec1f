"""``nomarr worker`` (analyse for an agent, on another machine) and ``nomarr scheduler`` (the Dask
scheduler agents and workers meet at), both with the cluster's TLS and shared secret."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path

from nomarr.cli.common import UserError, emit_json

log = logging.getLogger("nomarr.remote")


def _require() -> None:
    from nomarr.remote import RemoteUnavailable, require

    try:
        require()
    except RemoteUnavailable as e:
        raise UserError(str(e)) from e


def _security(address: str, folder: Path, insecure: bool) -> tuple[object, bytes | None]:
    """(Dask Security or None, shared secret or None) for an address, TLS unless told."""
    from nomarr.remote.secrets import SecretsError, security, shared_secret

    try:
        if address.startswith("tls://"):
            return security(folder), shared_secret(folder)
        if not insecure:
            raise UserError(
                f"{address}: TLS only (tls://HOST:PORT); plain tcp:// needs --insecure "
                "(a trusted network only)"
            )
        return None, shared_secret(folder) if (folder / "secret").exists() else None
    except SecretsError as e:
        raise UserError(str(e)) from e


def cmd_init_secrets(args: argparse.Namespace) -> int:
    """Write the CA, node certificate and shared secret."""
    from nomarr.remote.secrets import SecretsError, default_dir, init_secrets

    folder = Path(args.secrets) if args.secrets else default_dir()
    try:
        files = init_secrets(folder, force=args.force)
    except SecretsError as e:
        raise UserError(str(e)) from e
    if args.json:
        emit_json({"dir": str(folder), "files": files})
    else:
        print(
            f"wrote {folder} (CA, node certificate, shared secret). Copy this folder to every "
            "machine of the cluster (the agent, the scheduler, each worker), keeping it 0700."
        )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Load the models, join the scheduler, analyse until stopped."""
    if args.init_secrets:
        return cmd_init_secrets(args)
    if not args.scheduler:
        raise UserError("give the scheduler's address, e.g. nomarr worker tls://nas:8786")
    _require()
    from nomarr.remote import worker as rw
    from nomarr.remote.secrets import default_dir

    folder = Path(args.secrets) if args.secrets else default_dir()
    sec, secret = _security(args.scheduler, folder, args.insecure)
    try:
        pmap = rw.parse_path_map(args.path_map or [])
    except ValueError as e:
        raise UserError(str(e)) from e
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    facts = rw.load(
        args.model or ["msd-musicnn-1"],
        args.profile,
        args.threads,
        args.provider,
        args.batch,
        pmap,
        secret,
        name,
    )
    resources = {"nomarr": float(args.nthreads)}
    if facts["gpu"]:
        resources["gpu"] = float(args.nthreads)
    print(
        f"nomarr worker {name}: models {', '.join(args.model or ['msd-musicnn-1'])}"
        f"{' (GPU)' if facts['gpu'] else ''}; joining {args.scheduler}",
        file=sys.stderr,
        flush=True,
    )
    return asyncio.run(_run_worker(args, sec, name, resources))


async def _run_worker(args: argparse.Namespace, sec: object, name: str, resources: dict) -> int:
    from distributed import Worker

    w = Worker(
        args.scheduler,
        security=sec,
        nthreads=args.nthreads,
        name=name,
        resources=resources,
        host=args.listen,
        dashboard=False,
        dashboard_address="127.0.0.1:0",  # Dask's HTTP routes (no auth): loopback only
        memory_limit=0,
        death_timeout=args.death_timeout,
    )
    await w
    print(f"nomarr worker {name}: ready at {w.address}", file=sys.stderr, flush=True)
    await w.finished()
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Run a Dask scheduler with the cluster's security."""
    _require()
    from nomarr.remote.secrets import default_dir

    folder = Path(args.secrets) if args.secrets else default_dir()
    sec, _ = _security(args.listen, folder, args.insecure)
    return asyncio.run(_run_scheduler(args.listen, sec))


async def _run_scheduler(listen: str, sec: object) -> int:
    from distributed import Scheduler

    proto, _, rest = listen.partition("://")
    host, _, port = rest.rpartition(":")
    if not proto or not host or not port.isdigit():
        raise UserError(f"--listen {listen!r}: expected tls://HOST:PORT")
    s = Scheduler(
        protocol=proto,
        host=host.strip("[]"),
        port=int(port),
        security=sec,
        dashboard=False,
        dashboard_address="127.0.0.1:0",  # Dask's HTTP routes (no auth): loopback only
        worker_ttl="30s",  # a worker cut off without a closed socket is noticed in 30 s
    )
    await s
    print(f"nomarr scheduler: listening at {s.address}", file=sys.stderr, flush=True)
    await s.finished()
    return 0


def add_worker(sub: argparse._SubParsersAction) -> None:
    """The ``worker`` subcommand."""
    w = sub.add_parser(
        "worker",
        help="analyse for an agent on this machine (Dask worker with nomarr's models)",
        description="Join a Dask scheduler and analyse files for nomarr agents: models are "
        "loaded once, provenance and accelerators are announced, and the agent refuses a worker "
        "whose provenance differs from its own. Needs 'pip install nomarr[distributed]' and the "
        "cluster's secrets folder (--init-secrets on one machine, then copy it). See docs/remote.md.",
    )
    w.add_argument("scheduler", nargs="?", help="scheduler address, e.g. tls://nas:8786")
    w.add_argument(
        "--init-secrets",
        action="store_true",
        help="create the cluster's CA, node certificate and shared secret, then exit",
    )
    w.add_argument("--force", action="store_true", help="with --init-secrets: replace them")
    w.add_argument("--secrets", help="secrets folder (default: ~/.config/nomarr/remote)")
    w.add_argument("--insecure", action="store_true", help="allow a plain tcp:// scheduler")
    w.add_argument("--model", action="append", metavar="ID", help="models to load (repeatable)")
    w.add_argument("--profile", default="balanced", help="profile to prepare (default: balanced)")
    w.add_argument("--nthreads", type=int, default=1, help="files analysed at once (default: 1)")
    w.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    w.add_argument("--batch", type=int, default=4, help="patches per inference batch")
    w.add_argument("--provider", help="force an onnxruntime execution provider")
    w.add_argument("--name", help="worker name in scan summaries (default: host-pid)")
    w.add_argument(
        "--path-map",
        action="append",
        metavar="AGENT=LOCAL",
        help="read the agent's files under AGENT from LOCAL (same mount); else the agent sends bytes",
    )
    w.add_argument("--listen", help="host or interface address to listen on for the scheduler")
    w.add_argument(
        "--death-timeout",
        type=float,
        default=None,
        help="exit after this many seconds without a scheduler (default: keep trying)",
    )
    w.add_argument("--json", action="store_true", help="with --init-secrets: print JSON")
    w.set_defaults(func=cmd_worker)


def add_scheduler(sub: argparse._SubParsersAction) -> None:
    """The ``scheduler`` subcommand."""
    s = sub.add_parser(
        "scheduler",
        help="run the Dask scheduler that agents and workers meet at",
        description="A Dask scheduler with the cluster's TLS certificates. It listens on "
        "loopback unless told otherwise: --listen tls://0.0.0.0:8786 to accept workers on the LAN.",
    )
    s.add_argument(
        "--listen",
        default="tls://127.0.0.1:8786",
        help="address to listen on (default: tls://127.0.0.1:8786)",
    )
    s.add_argument("--secrets", help="secrets folder (default: ~/.config/nomarr/remote)")
    s.add_argument("--insecure", action="store_true", help="allow plain tcp://")
    s.set_defaults(func=cmd_scheduler)
