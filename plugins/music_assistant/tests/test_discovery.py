"""Discovery through a real zeroconf announcement: a real ``nomarr serve`` in one network namespace,
Music Assistant's side (mdns_child.py) in another, joined by a veth pair, so no multicast leaves
this machine. Needs root and iproute2; skipped otherwise."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_proc import Agent, copy_clip
from conftest import require_agent

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
_ids = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str, str]]:
    """(agent namespace, MA namespace, the agent's address)."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need Linux, root and iproute2")
    tag = f"{os.getpid() % 100000}m{next(_ids)}"
    a, b = f"nomarr-ma{tag}-a", f"nomarr-ma{tag}-b"
    made: list[str] = []
    try:
        for ns in (a, b):
            if _ip("netns", "add", ns, check=False).returncode != 0:
                pytest.skip("`ip netns add` is not permitted here")
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        va, vb = f"nma{tag}a", f"nma{tag}b"
        if _ip(
            "link",
            "add",
            va,
            "netns",
            a,
            "type",
            "veth",
            "peer",
            "name",
            vb,
            "netns",
            b,
            check=False,
        ).returncode:
            pytest.skip("cannot create a veth pair here")
        subnet = f"10.{200 + os.getpid() % 50}.{next(_ids) % 250}"
        for ns, dev, host in ((a, va, 1), (b, vb, 2)):
            _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev, check=False)
        yield a, b, f"{subnet}.1"
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)


def test_provider_follows_a_real_announcement(
    netns_pair: tuple[str, str, str], tmp_path: Path
) -> None:
    require_agent()
    ns_agent, ns_ma, addr = netns_pair
    root = tmp_path / "music"
    rels = ["x/one.ogg", "x/two.ogg", "y/three.ogg"]
    for rel, clip in zip(rels, ("sh07.ogg", "sh08.ogg", "sh09.ogg"), strict=True):
        copy_clip(clip, root / rel)
    port = 20000 + os.getpid() % 20000
    agent = Agent(
        tmp_path / "agent", [root], host="0.0.0.0", port=port, zeroconf=True, netns=ns_agent
    )
    try:
        agent.wait_ready()
        deadline = time.monotonic() + 180
        while b"scan done" not in agent.log_path.read_bytes():
            assert time.monotonic() < deadline and agent.proc.poll() is None, agent.log()
            time.sleep(0.2)
        res = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns_ma,
                sys.executable,
                str(HERE / "mdns_child.py"),
                agent.token,
                json.dumps(rels),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr[-4000:]
        got = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        agent.stop()
    url = f"http://{addr}:{port}/api/v1"
    assert got["before"] is None
    assert got["filled"] == url  # filled from the AsyncServiceInfo of the real announcement
    assert got["pinned"] == agent.agent_id  # and paired with that agent
    # a provider paired with another agent ignores this one
    assert got["stranger"] is None and got["stranger_pinned"] is None
    # the discovered agent answers: similar tracks mapped back to MA's tracks by path
    assert sorted(got["similar"]) == ["x/two.ogg", "y/three.ogg"]
    assert got["setup_url"] == url
