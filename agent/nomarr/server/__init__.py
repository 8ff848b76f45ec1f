"""``nomarr serve``: the agent (scanner, watcher, zeroconf) behind the HTTP API."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from nomarr.config import ServeConfig

log = logging.getLogger("nomarr.serve")


async def serve(
    cfg: ServeConfig,
    *,
    ready: Callable[[Any, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully. ``ready`` is
    called with the running :class:`~nomarr.server.service.Agent` and the bound port."""
    from nomarr.server.app import create_app
    from nomarr.server.guard import GuardedRunner, raise_fd_limit
    from nomarr.server.service import Agent

    raise_fd_limit()
    agent = Agent(cfg)
    if agent.token_created:
        # shown once: the plugins need it; afterwards it is only in the 0600 file
        from nomarr import paths

        print(
            f"nomarr: created API token {agent.token}\n        (stored in {paths.config_dir() / 'token'}, mode 0600; "
            "plugins send it as 'Authorization: Bearer <token>')",
            file=sys.stderr,
            flush=True,
        )
    if cfg.auth == "none":
        log.warning("authentication is off: anyone who can reach this port can use the API")
    app = create_app(agent)
    # the guarded runner closes connections that send no complete request head in time, and answers
    # protocol errors in the API's JSON shape (nomarr.server.guard)
    runner = GuardedRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    port = cfg.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    try:
        await agent.start()
        await agent.announce(port)
        log.info(
            "serving",
            extra={
                "host": cfg.host,
                "port": port,
                "libraries": len(cfg.libraries),
                "db": agent.db_path,
                "agent_id": agent.agent_id,
                "workers": cfg.worker_count(),
            },
        )
        if ready is not None:
            ready(agent, port)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.shutdown()  # stop accepting; in-flight requests get the shutdown timeout
        await agent.stop()
        await runner.cleanup()
        log.info("stopped")
