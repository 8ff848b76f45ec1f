"""What can be checked without an agent: the mapping rules, the import footprint, and that no
coroutine calls anything that blocks MA's event loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from music_assistant_models.enums import ExternalID
from music_assistant_models.media_items import ProviderMapping, Track

from nomarr_ma import mapping

PKG = Path(__file__).resolve().parents[1] / "nomarr_ma"
HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("item_id", "root", "expected"),
    [
        ("Artist/Album/01 Song.flac", "/srv/music", "/srv/music/Artist/Album/01 Song.flac"),
        ("/Artist/x.ogg", "/srv/music/", "/srv/music/Artist/x.ogg"),
        ("a\\b.mp3", "/m", "/m/a/b.mp3"),
        ("./a/./b.mp3", "/m", "/m/a/b.mp3"),
        ("../etc/passwd", "/m", None),
        ("a/../../x", "/m", None),
        ("", "/m", None),
        ("a.mp3", "", None),
    ],
)
def test_agent_path(item_id: str, root: str, expected: str | None) -> None:
    assert mapping.agent_path(item_id, root) == expected


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/srv/music/Artist/x.flac", "/srv/music", "Artist/x.flac"),
        ("/srv/music/Artist/x.flac", "/srv/music/", "Artist/x.flac"),
        ("/srv/musicbox/x.flac", "/srv/music", None),  # a sibling folder sharing a prefix
        ("/elsewhere/x.flac", "/srv/music", None),
        ("/srv/music", "/srv/music", None),
        ("/x/y.ogg", "/", "x/y.ogg"),
    ],
)
def test_provider_item_id(path: str, root: str, expected: str | None) -> None:
    assert mapping.provider_item_id(path, root) == expected


def test_round_trip_for_filesystem_ids() -> None:
    for rel in ("a.flac", "Ünïcode/ä b/c #1.opus", "deep/er/still/x.mp3"):
        assert mapping.provider_item_id(mapping.agent_path(rel, "/srv/music"), "/srv/music") == rel


def test_identity_prefers_the_mapped_provider_and_collects_ids() -> None:
    mbid = "8f3471b5-7e6a-48da-86a9-c1c07a0f47ae"
    t = Track(
        item_id="7",
        provider="library",
        name="x",
        external_ids={
            (ExternalID.MB_RECORDING, mbid),
            (ExternalID.ISRC, "usrc17607839"),
            (ExternalID.MB_ALBUM, "1f3471b5-7e6a-48da-86a9-c1c07a0f47ae"),
        },
        provider_mappings={
            ProviderMapping(
                item_id="a/b.flac",
                provider_domain="filesystem_local",
                provider_instance="filesystem_local--1",
            ),
            ProviderMapping(
                item_id="tr-9", provider_domain="opensubsonic", provider_instance="opensubsonic--2"
            ),
        },
    )
    ident = mapping.identity(t, "filesystem_local--1")
    assert ident == mapping.Identity(("a/b.flac",), (mbid,), ("USRC17607839",))
    assert mapping.identity(t, "opensubsonic--2").paths == ("tr-9",)
    own = Track(
        item_id="c/d.ogg", provider="filesystem_local--1", name="y", provider_mappings=set()
    )
    assert mapping.identity(own, "filesystem_local--1").paths == ("c/d.ogg",)


def test_parse_fpcalc() -> None:
    assert mapping.parse_fpcalc("FILE=x.ogg\nDURATION=90\nFINGERPRINT=AQAAAm\n") == ("AQAAAm", 90.0)
    assert mapping.parse_fpcalc("DURATION=90\n") is None
    assert mapping.parse_fpcalc("DURATION=abc\nFINGERPRINT=AQ\n") is None
    assert mapping.parse_fpcalc("") is None


def test_mood_title() -> None:
    assert mapping.mood_title("easy_listening") == "Easy listening"
    assert mapping.mood_title("happy") == "Happy"


def test_importing_the_provider_pulls_in_no_numpy_or_onnxruntime() -> None:
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import nomarr_ma, nomarr_ma.provider; "
        "bad = [m for m in ('numpy', 'onnxruntime', 'agent', 'av', 'soxr') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(HERE / "stubs"), str(PKG.parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


# Calls that block a thread: fine inside asyncio.to_thread (passed as a reference, not called),
# never called directly in a coroutine.
BLOCKING = {
    "open",
    "time.sleep",
    "shutil.which",
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.check_output",
    "os.path.isfile",
    "os.path.exists",
    "os.path.isdir",
    "os.stat",
    "os.listdir",
    "os.scandir",
    "urllib.request.urlopen",
    "requests.get",
    "requests.post",
    "socket.create_connection",
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def blocking_calls(source: str) -> list[str]:
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and (name := _dotted(node.func)) in BLOCKING:
                    found.append(f"{fn.name}:{node.lineno}: {name}()")
                if isinstance(node, ast.Attribute) and node.attr in (
                    "read_text",
                    "read_bytes",
                    "write_text",
                ):
                    found.append(f"{fn.name}:{node.lineno}: .{node.attr}()")
    return found


def test_the_checker_catches_blocking_calls() -> None:
    bad = "import os\nasync def f(p):\n    return os.path.isfile(p)\n"
    good = "import asyncio, os\nasync def f(p):\n    return await asyncio.to_thread(os.path.isfile, p)\n"
    assert blocking_calls(bad) == ["f:3: os.path.isfile()"] and blocking_calls(good) == []


def test_no_blocking_calls_in_coroutines() -> None:
    for path in sorted(PKG.glob("*.py")):
        assert blocking_calls(path.read_text()) == [], path.name
    for banned in (
        "import numpy",
        "import onnxruntime",
        "import requests",
        "from agent",
        "from nomarr ",  # the agent package (nomarr_client is the shared client, allowed)
        "from nomarr.",
        "import nomarr\n",
    ):
        for path in PKG.glob("*.py"):
            assert banned not in path.read_text(), (path.name, banned)
