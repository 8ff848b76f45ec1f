"""Discovery (DESIGN §6): the TXT contract, the choice between agents, and real mDNS traffic.

The unit tests pin the contract both sides rely on. The slow tests run real python-zeroconf traffic
between Linux network namespaces joined by a veth pair, because the failures that matter in
discovery (wrong address announced, no goodbye, a name conflict on the wire) never show up with
mocks. Each process under test runs as a child of this module (``_child_main``), one per namespace,
and talks JSON lines over stdout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from nomarr import discovery as agent_discovery
from nomarr_client import discovery as client
from nomarr_client.discovery import DiscoveredAgent, DiscoveryError, choose
from nomarr_client.models import API_PREFIX, SERVICE_TYPE

REPO = Path(__file__).resolve().parents[1]
AGENT_ID = "6f1c2a5e-8f7b-4c1e-9a3d-2b7e0c4d5f60"


def _props(**over: str | None) -> dict[bytes, bytes | None]:
    base = agent_discovery.txt_properties(agent_id=AGENT_ID, version="0.1.0", auth=True)
    base.update({k: v for k, v in over.items() if v is not None})
    for k in [k for k, v in over.items() if v is None]:
        base.pop(k, None)
    return {k.encode(): v.encode() for k, v in base.items()}


def _agent(agent_id: str = AGENT_ID, name: str = "nomarr on pi", **kw: object) -> DiscoveredAgent:
    fields: dict[str, object] = {
        "agent_id": agent_id,
        "name": name,
        "host": "pi.local.",
        "port": 8080,
        "addresses": ["192.168.1.20"],
        "version": "0.1.0",
        "api": 1,
        "path": API_PREFIX,
        "auth": True,
    }
    fields.update(kw)
    return DiscoveredAgent(**fields)  # type: ignore[arg-type]


# -- TXT contract (no network) ------------------------------------------------------------------


def test_agent_txt_round_trips_through_client_parser() -> None:
    """What the agent announces is exactly what the plugins accept."""
    ann = agent_discovery.Announcer(
        agent_id=AGENT_ID, version="1.2.3", port=8123, auth=False, hostname="pi"
    )
    info = ann._build_info("nomarr on pi", ["192.168.1.20", "fd00::20"])
    agent = client.agent_from_record(
        name=info.name,
        server=info.server,
        port=info.port,
        addresses=info.parsed_addresses(),
        properties=info.properties,
    )
    assert agent == DiscoveredAgent(
        agent_id=AGENT_ID,
        name="nomarr on pi",
        host="pi.local.",
        port=8123,
        addresses=["192.168.1.20", "fd00::20"],
        version="1.2.3",
        api=1,
        path="/api/v1",
        auth=False,
    )
    assert info.type == SERVICE_TYPE
    assert info.decoded_properties == {
        "txtvers": "1",
        "id": AGENT_ID,
        "ver": "1.2.3",
        "api": "1",
        "path": "/api/v1",
        "auth": "none",
    }


def test_parse_txt_keys_are_case_insensitive() -> None:
    props = {k.upper(): v for k, v in _props().items()}
    assert client.parse_txt(props)["id"] == AGENT_ID


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"txtvers": "2"}, "txtvers"),
        ({"txtvers": None}, "txtvers"),
        ({"api": "2"}, "api=2"),
        ({"api": "one"}, "not a number"),
        ({"id": ""}, "id is empty"),
        ({"id": None}, "'id'"),
        ({"path": "api/v1"}, "path"),
        ({"auth": "maybe"}, "auth"),
        ({"ver": None}, "'ver'"),
    ],
)
def test_parse_txt_rejects_what_the_contract_forbids(
    over: dict[str, str | None], reason: str
) -> None:
    with pytest.raises(client.MalformedRecord, match=reason):
        client.parse_txt(_props(**over))


def test_parse_txt_rejects_valueless_and_non_utf8() -> None:
    props = _props()
    props[b"auth"] = None
    with pytest.raises(client.MalformedRecord, match="no value"):
        client.parse_txt(props)
    props = _props()
    props[b"id"] = b"\xff\xfe"
    with pytest.raises(client.MalformedRecord, match="UTF-8"):
        client.parse_txt(props)


def test_record_without_address_or_port_is_skipped() -> None:
    kw = {"name": "x." + SERVICE_TYPE, "server": "x.local.", "properties": _props()}
    with pytest.raises(client.MalformedRecord, match="address"):
        client.agent_from_record(port=8080, addresses=[], **kw)  # type: ignore[arg-type]
    with pytest.raises(client.MalformedRecord, match="port"):
        client.agent_from_record(port=0, addresses=["10.0.0.1"], **kw)  # type: ignore[arg-type]


def test_addresses_are_ordered_routable_ipv4_first() -> None:
    got = client.order_addresses(
        ["::1", "fe80::1%2", "fd00::5", "169.254.3.4", "10.0.0.5", "10.0.0.5"]
    )
    assert got == ["10.0.0.5", "fd00::5", "169.254.3.4", "fe80::1%2", "::1"]


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("192.168.1.20", "http://192.168.1.20:8080/api/v1"),
        ("fd00::20", "http://[fd00::20]:8080/api/v1"),
        ("fe80::1%eth0", "http://[fe80::1%25eth0]:8080/api/v1"),
    ],
)
def test_url_uses_first_address_and_brackets_ipv6(address: str, url: str) -> None:
    assert _agent(addresses=[address, "10.9.9.9"]).url == url


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("http://pi:8080", "http://pi:8080/api/v1"),
        ("http://pi:8080/", "http://pi:8080/api/v1"),
        ("https://proxy.example/nomarr/api/v1/", "https://proxy.example/nomarr/api/v1"),
        ("http://[fd00::1]:8080/api/v1", "http://[fd00::1]:8080/api/v1"),
    ],
)
def test_configured_url_is_normalised_to_the_api_base(configured: str, expected: str) -> None:
    assert client.normalize_url(configured) == expected


def test_configured_url_wins_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*a: object, **kw: object) -> None:
        raise AssertionError("a configured URL must not start mDNS")

    monkeypatch.setattr(client, "AsyncZeroconf", no_network)
    monkeypatch.setattr(client, "browse", no_network)
    url = asyncio.run(client.find_agent("http://pi:8080", pinned_id="someone-else"))
    assert url == "http://pi:8080/api/v1"
    with pytest.raises(DiscoveryError, match="not an http"):
        asyncio.run(client.find_agent("pi:8080"))


def test_find_agent_browses_and_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    async def fake_browse(timeout: float = 3.0, **kw: object) -> list[DiscoveredAgent]:
        seen.append(timeout)
        return [_agent(), _agent("other", name="nomarr on nas", addresses=["10.0.0.9"])]

    monkeypatch.setattr(client, "browse", fake_browse)
    url = asyncio.run(client.find_agent(pinned_id="other", timeout=0.5))
    assert url == "http://10.0.0.9:8080/api/v1"
    assert seen == [0.5]
    with pytest.raises(DiscoveryError, match="2 nomarr agents"):
        asyncio.run(client.find_agent())


def test_browse_without_usable_mdns_says_to_configure_a_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*a: object, **kw: object) -> None:
        raise OSError(99, "Cannot assign requested address")

    monkeypatch.setattr(client, "AsyncZeroconf", broken)
    with pytest.raises(DiscoveryError, match="configure the nomarr agent's URL"):
        asyncio.run(client.find_agent())


def test_client_discovery_stays_light() -> None:
    """Plugins import this inside beets or Music Assistant: no numpy, onnxruntime or agent."""
    code = (
        "import sys, nomarr_client.discovery\n"
        "heavy = {'numpy', 'onnxruntime', 'agent', 'av'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/", timeout=60)


# -- choose -------------------------------------------------------------------------------------


def test_choose_prefers_the_pinned_agent() -> None:
    a, b = _agent("aaa", name="nomarr on a"), _agent("BBB", name="nomarr on b")
    assert choose([a, b], pinned_id="bbb") is b  # ids compare case-insensitively
    assert choose([a], pinned_id=None) is a


def test_choose_refuses_to_guess_between_several() -> None:
    a, b = _agent("aaa", name="nomarr on a"), _agent("bbb", name="nomarr on b")
    with pytest.raises(DiscoveryError) as err:
        choose([a, b])
    assert "aaa" in str(err.value) and "bbb" in str(err.value) and "pin" in str(err.value)
    assert err.value.agents == [a, b]


def test_choose_explains_a_missing_agent() -> None:
    with pytest.raises(DiscoveryError, match="no nomarr agent found"):
        choose([])
    with pytest.raises(DiscoveryError, match="id 1234.*not found.*nomarr on a"):
        choose([_agent("aaa", name="nomarr on a")], pinned_id="1234")


# -- agent-side naming and address selection (no network) ---------------------------------------


def test_instance_names_fit_one_dns_label() -> None:
    assert agent_discovery.instance_base_name("pi.lan") == "nomarr on pi"
    long = agent_discovery.instance_base_name("ü" * 80)
    assert long.startswith("nomarr on ü")
    assert len(agent_discovery.instance_name(long, 99).encode()) <= 63
    assert agent_discovery.instance_name("nomarr on pi", 1) == "nomarr on pi"
    assert agent_discovery.instance_name("nomarr on pi", 3) == "nomarr on pi (3)"
    assert agent_discovery.server_name("My Pi_4.lan") == "My-Pi-4.local."
    assert agent_discovery.server_name("__") == "nomarr.local."


def _adapter(name: str, *ips: str | tuple[str, int, int]) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        nice_name=name,
        ips=[SimpleNamespace(ip=ip, is_IPv4=isinstance(ip, str)) for ip in ips],
    )


ADAPTERS = [
    _adapter("lo", "127.0.0.1", ("::1", 0, 0)),
    _adapter("eth0", "192.168.1.20", ("fd00::20", 0, 0), ("fe80::20", 0, 2)),
    _adapter("wg0", "10.8.0.2"),
]


@pytest.mark.parametrize(
    ("bind", "interfaces", "expected"),
    [
        ("0.0.0.0", None, ["192.168.1.20", "10.8.0.2"]),
        ("::", None, ["fd00::20"]),
        ("", None, ["192.168.1.20", "10.8.0.2", "fd00::20"]),
        ("0.0.0.0", ["eth0"], ["192.168.1.20"]),
        ("", ["eth0"], ["192.168.1.20", "fd00::20"]),
        ("", ["10.8.0.2"], ["10.8.0.2"]),
        ("10.8.0.2", None, ["10.8.0.2"]),
        ("127.0.0.1", None, ["127.0.0.1"]),
    ],
)
def test_select_addresses(bind: str, interfaces: list[str] | None, expected: list[str]) -> None:
    assert agent_discovery.select_addresses(ADAPTERS, bind, interfaces) == expected  # type: ignore[arg-type]


def test_select_addresses_falls_back_to_loopback_only_when_alone() -> None:
    only_lo = [ADAPTERS[0]]
    assert agent_discovery.select_addresses(only_lo, "0.0.0.0") == ["127.0.0.1"]  # type: ignore[arg-type]
    assert agent_discovery.select_addresses(only_lo, "") == ["127.0.0.1", "::1"]  # type: ignore[arg-type]


def test_stop_before_start_is_harmless() -> None:
    ann = agent_discovery.Announcer(agent_id=AGENT_ID, version="0", port=1)
    asyncio.run(ann.stop())
    asyncio.run(ann.stop())
    assert ann.info is None
    with pytest.raises(RuntimeError, match="before start"):
        asyncio.run(ann.refresh())


# -- real mDNS between network namespaces --------------------------------------------------------

_ids = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


@dataclasses.dataclass
class Net:
    """Two namespaces joined by a veth pair: ``a`` (the agent's side) and ``b`` (the plugin's)."""

    a: str
    b: str
    veth_a: str
    veth_b: str
    subnet: str  # "10.X.Y", the /24 both ends sit in

    @property
    def addr_a(self) -> str:
        return f"{self.subnet}.1"


def _require_netns() -> None:
    if sys.platform != "linux":
        pytest.skip("network namespaces are Linux-only")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` tool (iproute2) is not installed")


def _new_ns(name: str, made: list[str]) -> None:
    res = _ip("netns", "add", name, check=False)
    if res.returncode != 0:
        pytest.skip(f"`ip netns add` failed: {res.stderr.strip()}")
    made.append(name)
    _ip("-n", name, "link", "set", "lo", "up")


@pytest.fixture
def net() -> Iterator[Net]:
    """A fresh namespace pair per test, removed even when the test fails."""
    _require_netns()
    n = next(_ids)
    tag = f"{os.getpid() % 100000}x{n}"
    made: list[str] = []
    try:
        a, b = f"nomarr-t{tag}-a", f"nomarr-t{tag}-b"
        _new_ns(a, made)
        _new_ns(b, made)
        va, vb = f"nm{tag}a", f"nm{tag}b"
        veth = f"link add {va} netns {a} type veth peer name {vb} netns {b}".split()
        res = _ip(*veth, check=False)
        if res.returncode != 0:
            pytest.skip(f"cannot create a veth pair: {res.stderr.strip()}")
        subnet = f"10.{100 + os.getpid() % 100}.{n % 250}"
        for ns, dev, host in ((a, va, 1), (b, vb, 2)):
            _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            # zeroconf sets IP_MULTICAST_IF on each socket, so this route is only a fallback
            # for the kernel's choice; an existing one is fine
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev, check=False)
        yield Net(a, b, va, vb, subnet)
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)


@pytest.fixture
def lo_only_ns() -> Iterator[str]:
    """A namespace whose only interface is loopback: a container with no network."""
    _require_netns()
    made: list[str] = []
    try:
        name = f"nomarr-t{os.getpid() % 100000}x{next(_ids)}-lo"
        _new_ns(name, made)
        yield name
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)


class Child:
    """A child process in a namespace, reporting JSON events on stdout, commanded on stdin."""

    def __init__(self, ns: str, *args: str, log_dir: Path) -> None:
        self.label = f"{args[0]}@{ns}"
        self.stderr_path = log_dir / f"{args[0]}-{next(_ids)}.stderr"
        code = "import sys; from tests.test_discovery import _child_main; _child_main(sys.argv[1:])"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        with self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.events: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.events.put(json.loads(line))

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(
        self, event: str, timeout: float, where: Callable[[dict], bool] = lambda e: True
    ) -> dict:
        """The next ``event`` that satisfies ``where``; others are skipped."""
        deadline = time.monotonic() + timeout
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.events.get(timeout=left)
            except queue.Empty:
                break
            if got.get("event") == event and where(got):
                return got
            seen.append(got)
        raise AssertionError(
            f"{self.label}: no {event!r} within {timeout}s; saw {seen}\n"
            f"stderr:\n{self.stderr_path.read_text()[-3000:]}"
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(ns: str, *args: str) -> Child:
        child = Child(ns, *args, log_dir=tmp_path)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def _announce(spawn: Callable[..., Child], ns: str, **config: object) -> Child:
    cfg = {"agent_id": AGENT_ID, "version": "9.8.7", "port": 8123, "check_interval_s": 0, **config}
    return spawn(ns, "announce", json.dumps(cfg))


@pytest.mark.slow
def test_agent_is_found_across_namespaces_and_goodbye_removes_it(net: Net, spawn) -> None:
    watcher = spawn(net.b, "watch")
    watcher.expect("watching", 5)
    agent = _announce(spawn, net.a, auth=False, hostname="studio")
    ready = agent.expect("ready", 8)
    assert ready["addresses"] == [net.addr_a]

    # a one-shot browse, the way find_agent does it, sees exactly this agent
    found = spawn(net.b, "find", "1.5", AGENT_ID).expect("found", 8)
    assert found["url"] == f"http://{net.addr_a}:8123/api/v1"
    assert found["agents"] == [
        {
            "agent_id": AGENT_ID,
            "name": "nomarr on studio",
            "host": "studio.local.",
            "port": 8123,
            "addresses": [net.addr_a],
            "version": "9.8.7",
            "api": 1,
            "path": "/api/v1",
            "auth": False,
        }
    ]
    added = watcher.expect("added", 5)
    assert added["agent"]["agent_id"] == AGENT_ID

    agent.send("stop")
    agent.expect("stopped", 5)
    # the goodbye (TTL 0) removes it at once; without it browsers keep it for the 75 min PTR TTL
    removed = watcher.expect("removed", 3)
    assert removed["name"] == f"nomarr on studio.{SERVICE_TYPE}"


@pytest.mark.slow
def test_refresh_follows_added_and_removed_addresses(net: Net, spawn) -> None:
    watcher = spawn(net.b, "watch")
    watcher.expect("watching", 5)
    # bind "" (both families) so an IPv6 address counts too
    agent = _announce(spawn, net.a, hostname="roamer", bind_host="")
    assert agent.expect("ready", 8)["addresses"] == [net.addr_a]  # link-local IPv6 left out
    watcher.expect("added", 5)

    agent.send("refresh")
    assert agent.expect("refreshed", 5)["changed"] is False

    # an IPv6 address: the IPv4 sockets mDNS speaks on are unchanged, so the record is updated
    # in place (async_update_service)
    v6 = f"fd7a:{os.getpid() % 0xFFFF:x}::1"
    _ip("-n", net.a, "addr", "add", f"{v6}/64", "dev", net.veth_a, "nodad")
    agent.send("refresh")
    refreshed = agent.expect("refreshed", 5)
    assert refreshed["changed"] is True
    assert refreshed["addresses"] == [net.addr_a, v6]
    watcher.expect("updated", 5, lambda e: v6 in e["agent"]["addresses"])
    assert "sockets=kept" in agent.stderr_path.read_text()

    # a second IPv4 address on the same interface: re-announced from fresh sockets
    second = f"{net.subnet}.11"
    # /32, not /24: Linux deletes secondary addresses of a prefix along with its primary
    _ip("-n", net.a, "addr", "add", f"{second}/32", "dev", net.veth_a)
    agent.send("refresh")
    assert agent.expect("refreshed", 5)["addresses"] == [net.addr_a, second, v6]
    watcher.expect("updated", 5, lambda e: second in e["agent"]["addresses"])
    assert "sockets=renewed" in agent.stderr_path.read_text()

    # The first address goes away, and with it the socket mDNS was sent from. The cache-flush bit
    # makes the browser drop the old address (rather than keep it for the two-minute TTL), but
    # only records received over a second before the flushing one (RFC 6762 §10.2), so leave
    # that second after the last announcement of it.
    time.sleep(1.2)
    _ip("-n", net.a, "addr", "del", f"{net.addr_a}/24", "dev", net.veth_a)
    agent.send("refresh")
    assert agent.expect("refreshed", 5)["addresses"] == [second, v6]
    time.sleep(1.2)  # the flushed record expires one second after the flush
    watcher.send("resolve")
    assert watcher.expect("resolved", 5)["agent"]["addresses"] == [second, v6]


@pytest.mark.slow
def test_background_check_follows_address_changes(net: Net, spawn) -> None:
    watcher = spawn(net.b, "watch")
    watcher.expect("watching", 5)
    _announce(spawn, net.a, hostname="roamer", check_interval_s=0.5).expect("ready", 8)
    watcher.expect("added", 5)
    second = f"{net.subnet}.12"
    _ip("-n", net.a, "addr", "add", f"{second}/24", "dev", net.veth_a)
    watcher.expect("updated", 5, lambda e: second in e["agent"]["addresses"])


@pytest.mark.slow
def test_same_hostname_twice_gets_distinct_names(net: Net, spawn) -> None:
    first = _announce(spawn, net.a, hostname="twin")
    assert first.expect("ready", 8)["name"] == f"nomarr on twin.{SERVICE_TYPE}"
    second = _announce(spawn, net.a, hostname="twin", agent_id="second-agent", port=8124)
    assert second.expect("ready", 10)["name"] == f"nomarr on twin (2).{SERVICE_TYPE}"
    found = spawn(net.b, "find", "1.5").expect("found", 8)
    assert sorted((a["name"], a["agent_id"], a["port"]) for a in found["agents"]) == [
        ("nomarr on twin", AGENT_ID, 8123),
        ("nomarr on twin (2)", "second-agent", 8124),
    ]
    # with two agents and no pin the plugin must not guess
    assert "2 nomarr agents" in found["error"]


@pytest.mark.slow
def test_loopback_only_namespace_announces_loopback(lo_only_ns: str, spawn) -> None:
    agent = _announce(spawn, lo_only_ns, hostname="boxed")
    assert agent.expect("ready", 8)["addresses"] == ["127.0.0.1"]
    found = spawn(lo_only_ns, "find", "1.5").expect("found", 8)
    assert found["url"] == "http://127.0.0.1:8123/api/v1"


# -- the child processes ------------------------------------------------------------------------


def _emit(event: str, **data: object) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


async def _stdin_lines() -> asyncio.Queue[str | None]:
    """stdin as an asyncio queue; None when the parent closes it or dies."""
    q: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(q.put_nowait, line.strip())
        loop.call_soon_threadsafe(q.put_nowait, None)

    threading.Thread(target=pump, daemon=True).start()
    return q


async def _child_announce(config: str) -> None:
    ann = agent_discovery.Announcer(**json.loads(config))
    await ann.start()
    assert ann.info is not None
    _emit("ready", name=ann.info.name, addresses=ann.info.parsed_addresses())
    commands = await _stdin_lines()
    while (cmd := await commands.get()) not in (None, "stop"):
        if cmd == "refresh":
            changed = await ann.refresh()
            _emit("refreshed", changed=changed, addresses=ann.info.parsed_addresses())
    await ann.stop()
    await ann.stop()  # idempotent
    _emit("stopped")


async def _child_watch() -> None:
    """A long-lived browser, like a plugin that keeps watching: reports adds, updates, removes."""
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    azc = AsyncZeroconf()
    tasks: set[asyncio.Task[None]] = set()
    known: dict[str, None] = {}  # an ordered set of the names currently present

    async def report(event: str, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if await info.async_request(azc.zeroconf, 3000):
            agent = client.agent_from_record(
                name=name,
                server=info.server,
                port=info.port,
                addresses=info.parsed_scoped_addresses(),
                properties=info.properties,
            )
            _emit(event, name=name, agent=dataclasses.asdict(agent))

    def on_change(zeroconf: object, service_type: str, name: str, state_change: object) -> None:
        if state_change is ServiceStateChange.Removed:
            known.pop(name, None)
            _emit("removed", name=name)
            return
        known[name] = None
        event = "added" if state_change is ServiceStateChange.Added else "updated"
        task = asyncio.get_running_loop().create_task(report(event, name))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    _emit("watching")
    commands = await _stdin_lines()
    while (cmd := await commands.get()) is not None:
        if cmd == "resolve":
            # what a fresh lookup answers now: from the cache the announcements left behind
            for name in list(known):
                await report("resolved", name)
    await browser.async_cancel()
    await azc.async_close()


async def _child_find(timeout: str, pinned: str | None = None) -> None:
    agents = await client.browse(float(timeout))
    result: dict[str, object] = {"agents": [dataclasses.asdict(a) for a in agents]}
    try:
        result["url"] = client.choose(agents, pinned).url
    except DiscoveryError as e:
        result["error"] = str(e)
    _emit("found", **result)


def _child_main(argv: list[str]) -> None:
    """Entry point of the processes the slow tests start inside namespaces."""
    import logging

    from nomarr.logs import KeyValueFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    role, *args = argv
    runner = {"announce": _child_announce, "watch": _child_watch, "find": _child_find}[role]
    asyncio.run(runner(*args))
