"""Fixtures: one real agent for the module (six corpus clips, some tagged with MusicBrainz ids and
ISRCs), MA's view of the same files through a different mount point, and a mocked ``mass``."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (HERE / "stubs", HERE.parent, HERE):  # the server stand-in, the provider package, fakes
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from agent_proc import AGENT_BIN, CORPUS, Agent, copy_clip, tag  # noqa: E402
from fakes import FakeMass, FakeMusicProvider, fs_track  # noqa: E402
from music_assistant_models.enums import ExternalID  # noqa: E402
from music_assistant_models.media_items import ProviderMapping, Track  # noqa: E402

FS = "filesystem_local--t1"
SUBSONIC = "opensubsonic--navi"

# (relative path, corpus clip, MusicBrainz recording id?, ISRC?, in MA's catalog?)
LAYOUT = [
    ("a/one.ogg", "sh01.ogg", True, True, True),
    ("a/two.ogg", "sh02.ogg", True, True, True),
    ("a/three.ogg", "sh03.ogg", True, False, True),
    ("b/four.ogg", "sh04.ogg", False, True, True),
    ("b/five.ogg", "sh05.ogg", False, False, True),
    ("b/six.ogg", "sh06.ogg", False, False, False),  # the agent has it, MA does not: dropped
]


def require_agent() -> None:
    if not AGENT_BIN.exists():
        pytest.skip(f"no nomarr agent at {AGENT_BIN} (set NOMARR_AGENT_BIN)")
    if not (CORPUS / "sh01.ogg").exists():
        pytest.skip(f"corpus not found at {CORPUS}")


@dataclass
class Library:
    """The agent's library and what MA knows about the same files."""

    agent: Agent
    agent_root: Path
    ma_root: Path  # the same files as MA's filesystem provider mounts them
    ids: dict[str, tuple[str | None, str | None]]  # rel -> (mbid, isrc)
    agent_ids: dict[str, int]  # rel -> agent track id

    def rel_of(self, agent_path: str) -> str:
        return str(Path(agent_path).relative_to(self.agent_root))


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    require_agent()
    base = tmp_path_factory.mktemp("ma")
    root = base / "agent-music"
    ids: dict[str, tuple[str | None, str | None]] = {}
    for n, (rel, clip, has_mbid, has_isrc, _) in enumerate(LAYOUT, 1):
        dest = copy_clip(clip, root / rel)
        mbid = str(uuid.UUID(int=0xA0000 + n)) if has_mbid else None
        isrc = f"QZNMR26{n:05d}" if has_isrc else None
        fields = {k: v for k, v in (("MUSICBRAINZ_TRACKID", mbid), ("ISRC", isrc)) if v}
        if fields:
            tag(dest, **fields)
        ids[rel] = (mbid, isrc)
    ma_root = base / "ma-media"
    ma_root.symlink_to(root, target_is_directory=True)
    agent = Agent(base / "agent", [root]).wait_ready()
    try:
        agent.wait_idle()
        _, page = agent.request("GET", "/tracks", query="limit=100")
        agent_ids = {str(Path(t["path"]).relative_to(root)): t["id"] for t in page["items"]}
        assert len(agent_ids) == len(LAYOUT), page
        yield Library(agent, root, ma_root, ids, agent_ids)
    finally:
        agent.stop()


def catalog(mass: FakeMass, lib: Library) -> None:
    """MA's side: a filesystem provider (item_id = relative path), an OpenSubsonic provider
    (opaque ids), and library items joining both, with the ids the files' tags carry."""
    mass.providers[FS] = FakeMusicProvider(
        "filesystem_local", FS, "Local files", base_path=str(lib.ma_root)
    )
    mass.providers[SUBSONIC] = FakeMusicProvider("opensubsonic", SUBSONIC, "Navidrome")
    mass.providers["library"] = FakeMusicProvider("library", "library", "Library")
    for n, (rel, _clip, _m, _i, known) in enumerate(LAYOUT, 1):
        if not known:
            continue
        mbid, isrc = lib.ids[rel]
        ext = {(k, v) for k, v in ((ExternalID.MB_RECORDING, mbid), (ExternalID.ISRC, isrc)) if v}
        fs = fs_track(FS, rel, rel, ext)
        so_id = f"so-{n * 7919:x}"
        so = Track(
            item_id=so_id,
            provider=SUBSONIC,
            name=rel,
            external_ids=set(ext),
            provider_mappings={
                ProviderMapping(
                    item_id=so_id, provider_domain="opensubsonic", provider_instance=SUBSONIC
                )
            },
        )
        lib_track = Track(
            item_id=str(n),
            provider="library",
            name=rel,
            external_ids=set(ext),
            provider_mappings=set(fs.provider_mappings) | set(so.provider_mappings),
        )
        for t in (fs, so, lib_track):
            mass.music.tracks.add(t)


@pytest.fixture
async def mass(library: Library) -> AsyncIterator[FakeMass]:
    m = FakeMass()
    catalog(m, library)
    yield m
    for prov in list(m.providers.values()):
        if hasattr(prov, "unload"):
            await prov.unload()
    await m.close()


def subsonic_id(rel: str) -> str:
    n = next(i for i, row in enumerate(LAYOUT, 1) if row[0] == rel)
    return f"so-{n * 7919:x}"
