"""Find a nomarr agent on the local network (DESIGN §6), for the plugins.

The order of preference is the contract: a URL the user configured wins and causes no network
traffic at all (it may point through a proxy or across subnets mDNS never reaches); otherwise the
agents answering on ``_nomarr._tcp.local.`` are browsed. Once a plugin is paired it passes the agent
id it pinned, so a second agent appearing on the network (a friend's laptop, a test instance) never
silently takes over; with no pin and several agents it refuses to guess and lists them instead.

Imports only zeroconf and the standard library: this runs inside host programs that must not pull in
numpy or onnxruntime.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from zeroconf import DNSQuestionType, InterfaceChoice, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .models import API_PREFIX, API_VERSION, SERVICE_TYPE
from .txt import MalformedRecord, parse_txt

log = logging.getLogger("nomarr.discovery")

# After the browse window closes, answers still being resolved get this much longer: a record seen
# at the last moment is usually resolved from the cache within milliseconds.
_RESOLVE_GRACE_S = 1.0


class DiscoveryError(Exception):
    """No agent could be chosen; the message says why and what to configure.

    ``agents`` holds what was found, so a UI can offer them for pinning.
    """

    def __init__(self, message: str, agents: Sequence[DiscoveredAgent] = ()) -> None:
        super().__init__(message)
        self.agents = list(agents)


@dataclass(frozen=True)
class DiscoveredAgent:
    """One agent as announced: enough to connect to it and to pin it by id."""

    agent_id: str
    name: str
    host: str
    port: int
    addresses: list[str] = field(default_factory=list)
    version: str = ""
    api: int = API_VERSION
    path: str = API_PREFIX
    auth: bool = True

    @property
    def url(self) -> str:
        """Base URL of the API on the best address (the list is ordered best first)."""
        if not self.addresses:
            raise DiscoveryError(f"agent {self.name!r} ({self.agent_id}) announced no address")
        return _http_url(self.addresses[0], self.port, self.path)

    def describe(self) -> str:
        """One line for a person choosing between agents."""
        return f"{self.name} (id {self.agent_id}, version {self.version or '?'}) at {self.url}"


def _http_url(address: str, port: int, path: str) -> str:
    host = address
    if ":" in address:
        # IPv6 literal; a zone id ("%eth0") is written %25 inside a URL (RFC 6874)
        host = "[" + address.replace("%", "%25", 1) + "]"
    return f"http://{host}:{port}{path}"


def _address_rank(address: str) -> int:
    """Order in which addresses are tried: routable IPv4, routable IPv6, link-local, loopback.

    IPv4 first because home networks route it reliably; loopback last because it only works when
    the plugin happens to run on the agent's machine.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return 9
    if ip.is_loopback:
        return 4
    if ip.is_link_local:
        return 2 if ip.version == 4 else 3
    return 0 if ip.version == 4 else 1


def order_addresses(addresses: Sequence[str]) -> list[str]:
    """Best address first, duplicates dropped; equal ranks keep their given order."""
    unique = list(dict.fromkeys(addresses))
    return sorted(unique, key=_address_rank)


def agent_from_record(
    *,
    name: str,
    server: str | None,
    port: int | None,
    addresses: Sequence[str],
    properties: Mapping[bytes | str, bytes | str | None],
) -> DiscoveredAgent:
    """Validate one resolved service; raises MalformedRecord with the reason to skip it."""
    txt = parse_txt(properties)
    if port is None or not 0 < port < 65536:
        raise MalformedRecord(f"bad port {port!r}")
    ordered = order_addresses(addresses)
    if not ordered:
        raise MalformedRecord("no address records")
    instance = name.removesuffix("." + SERVICE_TYPE).removesuffix(SERVICE_TYPE)
    return DiscoveredAgent(
        agent_id=txt["id"],
        name=instance,
        host=server or "",
        port=port,
        addresses=ordered,
        version=txt["ver"],
        api=int(txt["api"]),
        path=txt["path"].rstrip("/") or "/",
        auth=txt["auth"] == "token",
    )


async def browse(
    timeout: float = 3.0,
    *,
    zc: AsyncZeroconf | None = None,
    interfaces: InterfaceChoice | list[str | int] = InterfaceChoice.All,
) -> list[DiscoveredAgent]:
    """Every usable agent that answers within ``timeout`` seconds, sorted by name.

    Browsing always takes the whole window: mDNS has no "that was everyone", and agents on busy or
    Wi-Fi networks answer late. Records are resolved as they arrive, so the window is not spent
    twice. Pass ``zc`` to reuse a long-lived AsyncZeroconf (a plugin that browses repeatedly);
    otherwise one is opened on ``interfaces`` and closed again.
    """
    own = zc is None
    if zc is not None:
        azc = zc
    else:
        try:
            azc = AsyncZeroconf(interfaces=interfaces)
        except (OSError, RuntimeError) as e:  # zeroconf raises RuntimeError for "no interfaces"
            raise DiscoveryError(
                f"cannot use mDNS here ({e}); configure the nomarr agent's URL instead"
            ) from e
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    resolving: dict[str, asyncio.Task[DiscoveredAgent | None]] = {}
    removed: set[str] = set()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            removed.add(name)
            return
        removed.discard(name)
        previous = resolving.get(name)
        if previous is not None and state_change is ServiceStateChange.Added:
            return  # already being resolved
        if previous is not None and not previous.done():
            previous.cancel()  # an update supersedes the answer still awaited
        remaining = max(deadline - loop.time(), 0.0) + _RESOLVE_GRACE_S
        resolving[name] = loop.create_task(_resolve(azc, name, remaining))

    # QM (multicast replies) rather than zeroconf's default first QU question: a unicast reply
    # to port 5353 can be handed to another mDNS process on this machine (they share the port
    # with SO_REUSEPORT), which is exactly where an agent often runs next to its plugin.
    browser = AsyncServiceBrowser(
        azc.zeroconf, SERVICE_TYPE, handlers=[on_change], question_type=DNSQuestionType.QM
    )
    try:
        await asyncio.sleep(timeout)
        tasks = list(resolving.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=_RESOLVE_GRACE_S)
            for task in pending:
                task.cancel()
    finally:
        # answers that came in during the grace period, or a browse cancelled from outside, must
        # not leave resolutions running on a closed AsyncZeroconf
        for task in resolving.values():
            task.cancel()
        await browser.async_cancel()
        if own:
            await azc.async_close()
    found: dict[str, DiscoveredAgent] = {}
    for name, task in resolving.items():
        if name in removed or not task.done() or task.cancelled():
            continue
        if (exc := task.exception()) is not None:
            log.warning("resolving failed", extra={"service": name, "error": repr(exc)})
            continue
        agent = task.result()
        if agent is not None:
            found[name] = agent
    return sorted(found.values(), key=lambda a: (a.name.lower(), a.agent_id))


async def _resolve(azc: AsyncZeroconf, name: str, timeout_s: float) -> DiscoveredAgent | None:
    info = AsyncServiceInfo(SERVICE_TYPE, name)
    started = time.monotonic()
    if not await info.async_request(azc.zeroconf, timeout_s * 1000, DNSQuestionType.QM):
        log.info("agent did not answer resolution", extra={"service": name})
        return None
    try:
        agent = agent_from_record(
            name=name,
            server=info.server,
            port=info.port,
            addresses=info.parsed_scoped_addresses(),
            properties=info.properties,
        )
    except MalformedRecord as e:
        log.warning("skipping service", extra={"service": name, "reason": str(e)})
        return None
    log.debug(
        "resolved agent",
        extra={
            "service": name,
            "agent_id": agent.agent_id,
            "url": agent.url,
            "ms": round((time.monotonic() - started) * 1000),
        },
    )
    return agent


def choose(agents: Sequence[DiscoveredAgent], pinned_id: str | None = None) -> DiscoveredAgent:
    """The agent to use: the pinned one, else the only one; never a guess between several."""
    if pinned_id:
        wanted = pinned_id.strip().lower()
        for agent in agents:
            if agent.agent_id.lower() == wanted:
                return agent
        seen = "; ".join(a.describe() for a in agents) or "none"
        raise DiscoveryError(
            f"the paired nomarr agent (id {pinned_id}) was not found on the network "
            f"(agents seen: {seen}); is it running, and on this network? "
            "Configure its URL, or unpin to pair with another agent.",
            agents,
        )
    if len(agents) == 1:
        return agents[0]
    if not agents:
        raise DiscoveryError(
            "no nomarr agent found on the local network (mDNS _nomarr._tcp); start one with "
            "`nomarr serve`, or configure the agent's URL if it is on another network",
            agents,
        )
    listing = "; ".join(a.describe() for a in agents)
    raise DiscoveryError(
        f"{len(agents)} nomarr agents found, pin one by id or configure a URL: {listing}",
        agents,
    )


def normalize_url(url: str) -> str:
    """A configured URL as an API base: ``http://pi:8080`` means ``http://pi:8080/api/v1``.

    A URL with a path is kept as written (an agent behind a reverse proxy at ``/nomarr/api/v1``).
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DiscoveryError(f"configured agent URL {url!r} is not an http(s) URL with a host")
    path = parts.path.rstrip("/") or API_PREFIX
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


async def find_agent(
    url: str | None = None, pinned_id: str | None = None, timeout: float = 3.0
) -> str:
    """The API base URL to talk to: the configured ``url`` if any, else the discovered agent."""
    if url:
        return normalize_url(url)
    agents = await browse(timeout)
    agent = choose(agents, pinned_id)
    log.info("using discovered agent", extra={"agent_id": agent.agent_id, "url": agent.url})
    return agent.url
