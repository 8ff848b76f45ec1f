"""The whole path a plugin takes, across a real network: ``nomarr serve`` in one network namespace,
the plugins' client in another, joined by a veth pair. The client finds the agent by zeroconf
alone, pins it, queries it over HTTP with the token, and sees it leave when the agent shuts down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, encode, music_like
from tests.test_discovery import Net, net  # noqa: F401  (the namespace-pair fixture)

pytestmark = pytest.mark.slow

CLIENT = """
import json, sys
from nomarr_client import SyncNomarrClient, find_agent
from nomarr_client.discovery import DiscoveryError
import asyncio
mode, token, pin = sys.argv[1], sys.argv[2], sys.argv[3] or None
if mode == "query":
    with SyncNomarrClient.discover(token=token, agent_id=pin, timeout=4.0) as c:
        st = c.status()
        page = c.tracks(limit=10)
        sim = c.similar(track_id=page.items[0].id, limit=2)
        print(json.dumps({"url": c.base_url, "agent_id": st.agent_id, "tracks": page.total,
                          "similar": [h.path for h in sim.items]}))
else:
    try:
        url = asyncio.run(find_agent(None, pin, timeout=3.0))
        print(json.dumps({"found": url}))
    except DiscoveryError as e:
        print(json.dumps({"gone": str(e)}))
"""


def _in_ns(ns: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> dict:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_plugin_finds_pins_and_queries_the_agent_across_namespaces(
    net: Net,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        encode(lib / f"n{i}.flac", music_like(12.0, seed=700 + i), 44100)
    env = dict(os.environ)
    env.update(
        NOMARR_CONFIG_DIR=str(tmp_path / "cfg"),
        NOMARR_DATA_DIR=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        NOMARR_WORKERS="1",
        PYTHONPATH=str(REPO),
    )
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            net.a,
            str(Path(sys.executable).parent / "nomarr"),
            "--log-level",
            "info",
            "serve",
            "--library",
            str(lib),
            "--db",
            str(tmp_path / "db.sqlite"),
            "--port",
            "18765",
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        token_file = tmp_path / "cfg" / "token"
        deadline = time.monotonic() + 60
        while not (token_file.exists() and b"serving" in (tmp_path / "serve.log").read_bytes()):
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
        token = token_file.read_text().strip()
        agent_id = (tmp_path / "data" / "agent-id").read_text().strip()
        # wait for the first scan, then query from the other namespace by discovery only
        deadline = time.monotonic() + 90
        while True:
            got = (
                _in_ns(net.b, sys.executable, "-c", CLIENT, "query", token, agent_id, env=env)
                if b"scan done" in (tmp_path / "serve.log").read_bytes()
                else None
            )
            if got is not None:
                break
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        assert got["url"] == f"http://{net.addr_a}:18765/api/v1"
        assert got["agent_id"] == agent_id and got["tracks"] == 3 and len(got["similar"]) == 2
        # a wrong pin is refused, not silently replaced by the agent that is there
        wrong = _in_ns(
            net.b,
            sys.executable,
            "-c",
            CLIENT,
            "find",
            token,
            "00000000-0000-0000-0000-000000000000",
            env=env,
        )
        assert "gone" in wrong and "00000000" in wrong["gone"]
        # graceful shutdown: SIGTERM, the zeroconf goodbye, then nothing to find
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
        assert b"stopped" in (tmp_path / "serve.log").read_bytes()
        after = _in_ns(net.b, sys.executable, "-c", CLIENT, "find", token, agent_id, env=env)
        assert "gone" in after, after
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
        log.close()
