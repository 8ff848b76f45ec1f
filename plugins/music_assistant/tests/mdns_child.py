"""Run inside the "MA" network namespace by test_discovery.py: Music Assistant's side of discovery.

Feeds real zeroconf announcements to the providers exactly as MA's server does (a browser on MA's
AsyncZeroconf for the manifest's mdns types; each change resolved into an AsyncServiceInfo, then
``on_mdns_service_state_change(name, state_change, info)``), and prints one JSON line of results.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "stubs"), str(HERE.parent), str(HERE)]

from fakes import FakeMass, FakeMusicProvider, create_provider, fs_track, load_provider  # noqa: E402
from zeroconf import ServiceStateChange, Zeroconf  # noqa: E402
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf  # noqa: E402

SERVICE = "_nomarr._tcp.local."
FS = "filesystem_local--t1"


async def main(token: str, rels: list[str]) -> dict[str, object]:
    mass = FakeMass()
    mass.providers[FS] = FakeMusicProvider(
        "filesystem_local", FS, "Local files", base_path="/nonexistent"
    )
    for rel in rels:
        mass.music.tracks.add(fs_track(FS, rel, rel))
    mass.aiozc = AsyncZeroconf()
    values = {"agent_url": "", "agent_token": token, "media_provider": FS}
    follower = await create_provider(mass, values, "nomarr")
    stranger = await create_provider(
        mass, {**values, "agent_id": "00000000-0000-0000-0000-000000000000"}, "other"
    )
    out: dict[str, object] = {"before": follower.agent_url}
    pending: list[asyncio.Task[None]] = []

    async def deliver(name: str, change: ServiceStateChange) -> None:
        info = AsyncServiceInfo(SERVICE, name)
        await info.async_request(mass.aiozc.zeroconf, 3000)
        for prov in (follower, stranger):
            await prov.on_mdns_service_state_change(name, change, info)

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        pending.append(asyncio.get_running_loop().create_task(deliver(name, state_change)))

    browser = AsyncServiceBrowser(mass.aiozc.zeroconf, [SERVICE], handlers=[on_change])
    try:
        for _ in range(150):
            if follower.agent_url:
                break
            await asyncio.sleep(0.1)
        await asyncio.gather(*pending, *mass.tasks)
        out.update(
            filled=follower.agent_url,
            pinned=mass.config.raw.get(("nomarr", "agent_id")),
            stranger=stranger.agent_url,
            stranger_pinned=mass.config.raw.get(("other", "agent_id")),
        )
        seed = mass.music.tracks.items[(FS, rels[0])]
        out["similar"] = [t.item_id for t in await follower.get_similar_tracks(seed, 5)]
        # a provider loaded with no URL finds the agent itself at start-up (MA's own zeroconf)
        fresh = await load_provider(mass, values, "fresh")
        out["setup_url"] = fresh.agent_url
    finally:
        await browser.async_cancel()
        for prov in (follower, stranger, *mass.providers.values()):
            if hasattr(prov, "unload"):
                await prov.unload()
        await mass.close()
        await mass.aiozc.async_close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))))
