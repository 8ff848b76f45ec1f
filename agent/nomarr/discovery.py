"""Announce the agent on the local network with mDNS/DNS-SD (DESIGN §6).

Plugins run inside other programs (beets, Music Assistant, Navidrome) on other machines; asking
every user to type an address and port is the step most setups fail at, so the agent advertises
``_nomarr._tcp.local.`` and the plugins find it. The TXT record carries the agent id so a plugin can
pin the agent it was paired with and never silently switch to another one on the same network.

Why the addresses are chosen here rather than left to python-zeroconf: the service must point at
addresses the HTTP server actually listens on. A server bound to one address must not be announced
on the others, a server bound to ``0.0.0.0`` is not reachable over IPv6, and IPv6 link-local
addresses are useless to a client without the interface scope, so they are left out.

Why a periodic refresh: laptops and Pis change addresses (DHCP renewals, Wi-Fi roaming, a VPN coming
up). Without it the announcement keeps pointing at an address the agent no longer has until the
agent restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable, Sequence

import ifaddr
from nomarr_client.models import SERVICE_TYPE
from nomarr_client.txt import txt_properties
from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    NonUniqueNameException,
    ServiceInfo,
    ServiceNameAlreadyRegistered,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

log = logging.getLogger("nomarr.discovery")

# A DNS label is at most 63 bytes; the instance name is one label.
_MAX_LABEL = 63
_NAME_PREFIX = "nomarr on "
# Room kept for the " (NN)" a name conflict appends, so a long hostname never pushes it out.
_SUFFIX_ROOM = 5
_MAX_CONFLICT_TRIES = 50
# How long stop() waits for the goodbye packets before giving up: shutdown must not hang on them.
_GOODBYE_TIMEOUT_S = 2.0
_WILDCARDS = {"": None, "0.0.0.0": 4, "::": 6}
# How long start() listens for agents already using our name. A responder that multicast the
# record within the last second delays its answer until that second is over (RFC 6762 §6), and
# adds up to 120 ms; a little more covers a busy host.
_NAME_SCAN_S = 1.3


def instance_base_name(hostname: str) -> str:
    """``nomarr on <host>``, cut to fit one DNS label with room left for a conflict suffix.

    Only the first label of the hostname is used: ``pi.lan`` and ``pi`` are the same machine to a
    person choosing from a list, and a dot in an instance name confuses some browsers.
    """
    short = hostname.split(".", 1)[0].strip() or "localhost"
    budget = _MAX_LABEL - len(_NAME_PREFIX.encode()) - _SUFFIX_ROOM
    encoded = short.encode()[:budget]
    # cut on a character boundary, never in the middle of a UTF-8 sequence
    return _NAME_PREFIX + encoded.decode(errors="ignore")


def instance_name(base: str, attempt: int) -> str:
    """The name to try on the ``attempt``-th registration: ``base``, then ``base (2)``, …"""
    return base if attempt <= 1 else f"{base} ({attempt})"


def server_name(hostname: str) -> str:
    """The ``<host>.local.`` target of the SRV record.

    Unlike the instance name this is a host name, so it must be letters, digits and hyphens.
    """
    label = re.sub(r"[^A-Za-z0-9-]+", "-", hostname.split(".", 1)[0]).strip("-")[:_MAX_LABEL]
    return f"{label or 'nomarr'}.local."


def _ip_text(ip: str | tuple[str, int, int]) -> str:
    # ifaddr gives IPv4 as a string and IPv6 as (address, flowinfo, scope_id)
    return ip if isinstance(ip, str) else ip[0].split("%", 1)[0]


def _wanted(adapter: ifaddr.Adapter, ip: str, interfaces: Sequence[str] | None) -> bool:
    """Whether ``interfaces`` (names like ``eth0``, or addresses) lets this address through."""
    if not interfaces:
        return True
    return adapter.name in interfaces or adapter.nice_name in interfaces or ip in interfaces


def select_addresses(
    adapters: Iterable[ifaddr.Adapter],
    bind_host: str = "0.0.0.0",
    interfaces: Sequence[str] | None = None,
) -> list[str]:
    """The addresses a client can reach the HTTP server on, IPv4 first.

    A specific ``bind_host`` is the only address the server answers on, so it is the only one
    announced. For a wildcard the family follows the bind: asyncio binds ``0.0.0.0`` IPv4-only and
    ``::`` IPv6-only (it sets IPV6_V6ONLY), ``""`` both. Loopback addresses are announced only when
    there is nothing else (a container or network namespace with just ``lo``): a local client can
    still use them, and announcing nothing would make the agent undiscoverable even to itself.
    """
    if bind_host not in _WILDCARDS:
        return [_resolve_bind_host(bind_host)]
    family = _WILDCARDS[bind_host]
    routable: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    loopback: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for adapter in adapters:
        for ip in adapter.ips:
            text = _ip_text(ip.ip)
            if not _wanted(adapter, text, interfaces):
                continue
            addr = ipaddress.ip_address(text)
            if family is not None and addr.version != family:
                continue
            if addr.is_multicast or addr.is_unspecified:
                continue
            if addr.version == 6 and addr.is_link_local:
                continue  # unusable in a URL without the scope id of the client's interface
            (loopback if addr.is_loopback else routable).append(addr)
    picked = list(dict.fromkeys(routable or loopback))
    picked.sort(key=lambda a: a.version)  # stable: interface order kept within a family
    return [str(a) for a in picked]


def _resolve_bind_host(bind_host: str) -> str:
    """A bind host given as a name (``localhost``) becomes the address it resolves to."""
    try:
        return str(ipaddress.ip_address(bind_host.split("%", 1)[0]))
    except ValueError:
        pass
    infos = socket.getaddrinfo(bind_host, None, type=socket.SOCK_STREAM)
    return str(ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0]))


async def _names_in_use(azc: AsyncZeroconf) -> set[str]:
    """The ``_nomarr._tcp`` instance names already answering on the network, lowercased.

    zeroconf's probe alone misses a conflict with another responder on the same machine: the
    probe asks for a unicast reply to port 5353, which every mDNS process there shares with
    SO_REUSEPORT, so the kernel may hand the reply to the other responder instead of the prober.
    Questions asked QM (multicast replies) reach every process. Probing still follows, for a
    race with an agent starting at the same moment.
    """
    seen: set[str] = set()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            seen.discard(name.lower())
        else:
            seen.add(name.lower())

    browser = AsyncServiceBrowser(
        azc.zeroconf, SERVICE_TYPE, handlers=[on_change], question_type=DNSQuestionType.QM
    )
    try:
        await asyncio.sleep(_NAME_SCAN_S)
    finally:
        await browser.async_cancel()
    return seen


class Announcer:
    """Keeps one ``_nomarr._tcp`` service registered for as long as the agent serves.

    ``start()`` registers (renaming on a conflict) and starts a background task that re-reads the
    machine's addresses every ``check_interval_s``; ``stop()`` sends the goodbye so browsers drop
    the agent at once instead of after the record's TTL. ``interfaces`` (names such as ``eth0`` or
    addresses) limits both what is announced and where mDNS is spoken, for multi-homed machines
    where only one network should see the agent.
    """

    def __init__(
        self,
        *,
        agent_id: str,
        version: str,
        port: int,
        bind_host: str = "0.0.0.0",
        auth: bool = True,
        hostname: str | None = None,
        check_interval_s: float = 30.0,
        interfaces: list[str] | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        self.agent_id = agent_id
        self.version = version
        self.port = port
        self.bind_host = bind_host
        self.auth = auth
        self.hostname = hostname or socket.gethostname()
        self.check_interval_s = check_interval_s
        self.interfaces = list(interfaces) if interfaces else None
        self._azc: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None
        self._addresses: list[str] = []
        self._sockets: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._registered = False

    @property
    def info(self) -> ServiceInfo | None:
        """The ServiceInfo as last announced (name after any conflict rename), None before start."""
        return self._info

    def current_addresses(self) -> list[str]:
        """What would be announced right now; read fresh each call because addresses change."""
        return select_addresses(ifaddr.get_adapters(), self.bind_host, self.interfaces)

    def _zeroconf_interfaces(self) -> InterfaceChoice | list[str]:
        """Where to speak mDNS: only on the networks the announced addresses belong to.

        zeroconf takes addresses, not interface names, so a named interface becomes its IPv4
        addresses. IPv6 is left to the default (mDNS over IPv4 still carries AAAA records).
        """
        if self.bind_host not in _WILDCARDS:
            addr = ipaddress.ip_address(_resolve_bind_host(self.bind_host))
            # a server on 127.0.0.1 is announced on loopback only, never to the LAN
            return [str(addr)] if addr.version == 4 else InterfaceChoice.All
        if not self.interfaces:
            return InterfaceChoice.All
        v4 = []
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if ip.is_IPv4 and _wanted(adapter, _ip_text(ip.ip), self.interfaces):
                    v4.append(_ip_text(ip.ip))
        return v4 or InterfaceChoice.All

    def _build_info(self, name: str, addresses: list[str]) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=self.port,
            properties=txt_properties(agent_id=self.agent_id, version=self.version, auth=self.auth),
            server=server_name(self.hostname),
            parsed_addresses=addresses,
        )

    async def start(self) -> None:
        """Register the service, then keep it current in the background.

        Raises when mDNS cannot be set up at all (no usable interface, port 5353 unavailable):
        the caller decides whether serving without discovery is acceptable.
        """
        if self._azc is not None:
            return
        addresses = self.current_addresses()
        if not addresses:
            raise RuntimeError("no address to announce: no network interface has one")
        if all(ipaddress.ip_address(a).is_loopback for a in addresses):
            log.warning(
                "announcing loopback only; other machines cannot reach this agent",
                extra={"addresses": ",".join(addresses), "bind_host": self.bind_host},
            )
        azc = AsyncZeroconf(interfaces=self._zeroconf_interfaces())
        self._azc = azc
        self._sockets = self._socket_addresses()
        try:
            await self._register(azc, addresses)
        except BaseException:
            self._azc, self._info, self._registered = None, None, False
            with contextlib.suppress(Exception):
                await azc.async_close()
            raise
        if self.check_interval_s > 0:
            self._task = asyncio.create_task(self._watch(), name="nomarr-discovery-refresh")

    async def _register(self, azc: AsyncZeroconf, addresses: list[str]) -> None:
        """Register under the first free name: ``nomarr on host``, ``nomarr on host (2)``, …

        zeroconf's own ``allow_name_change`` would give ``-2``; the parenthesised form is what
        Apple and Avahi use and what a person expects in a chooser.
        """
        base = instance_base_name(self.hostname)
        taken = await _names_in_use(azc)
        for attempt in range(1, _MAX_CONFLICT_TRIES + 1):
            info = self._build_info(instance_name(base, attempt), addresses)
            if info.name.lower() in taken:
                log.info("service name in use, trying another", extra={"service": info.name})
                continue
            try:
                announced = await azc.async_register_service(info, allow_name_change=False)
            except (NonUniqueNameException, ServiceNameAlreadyRegistered):
                log.info("service name taken, trying another", extra={"service": info.name})
                continue
            self._info = info
            self._addresses = addresses
            self._registered = True
            await announced
            log.info(
                "announced",
                extra={
                    "service": info.name,
                    "port": self.port,
                    "addresses": ",".join(addresses),
                    "agent_id": self.agent_id,
                },
            )
            return
        raise RuntimeError(f"no free service name after {_MAX_CONFLICT_TRIES} tries ({base!r} …)")

    async def refresh(self) -> bool:
        """Re-announce if the machine's addresses changed; True when it did.

        The records go out with the cache-flush bit, so browsers replace the old addresses within
        a second rather than keeping them until their TTL runs out.
        """
        async with self._lock:
            azc, info = self._azc, self._info
            if azc is None or info is None or not self._registered:
                raise RuntimeError("refresh() before start()")
            addresses = self.current_addresses()
            if not addresses or addresses == self._addresses:
                return False
            old = self._addresses
            new = self._build_info(info.name.removesuffix(f".{SERVICE_TYPE}"), addresses)
            sockets = self._socket_addresses()
            renew = set(sockets) != set(self._sockets)
            if renew:
                await self._swap(azc, info, new)
            else:
                await (await azc.async_update_service(new))
            self._info, self._addresses, self._sockets = new, addresses, sockets
            log.info(
                "addresses changed, re-announced",
                extra={
                    "service": new.name,
                    "old": ",".join(old),
                    "new": ",".join(addresses),
                    "sockets": "renewed" if renew else "kept",
                },
            )
            return True

    async def _swap(self, old_azc: AsyncZeroconf, old: ServiceInfo, new: ServiceInfo) -> None:
        """The addresses mDNS is sent from changed: re-announce from a fresh AsyncZeroconf.

        zeroconf sends from one socket per IPv4 address, and its multicast membership for an
        interface belongs to the first address it joined with. When that address goes (a DHCP
        renumbering) while the interface keeps another one, ``async_update_interfaces`` can open
        no socket for the survivor (the join fails with EADDRINUSE), so nothing would be sent on
        that network any more; a new address on an interface already joined fails the same way.
        A new instance joins afresh, and it needs no zeroconf newer than the client requires.

        The old instance drops the record from its registry instead of unregistering it: an
        unregister sends a goodbye, and browsers would show the agent vanishing and returning.
        The name is already ours, so the new registration skips probing.
        """
        fresh = AsyncZeroconf(interfaces=self._zeroconf_interfaces())
        old_azc.zeroconf.registry.async_remove(old)
        try:
            announced = await fresh.async_register_service(new, cooperating_responders=True)
        except BaseException:
            old_azc.zeroconf.registry.async_add(old)
            with contextlib.suppress(Exception):
                await fresh.async_close()
            raise
        self._azc = fresh
        await announced
        try:
            await old_azc.async_close()
        except Exception:
            log.warning("closing the previous mDNS sockets failed", exc_info=True)

    def _socket_addresses(self) -> list[str]:
        """The IPv4 addresses zeroconf opens sending sockets on for the current interface choice."""
        choice = self._zeroconf_interfaces()
        if isinstance(choice, list):
            return choice
        return [
            _ip_text(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4
        ]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            try:
                await self.refresh()
            except Exception:
                # a failed check must not end the loop: the next one may succeed
                log.warning("address check failed", exc_info=True)

    async def stop(self) -> None:
        """Withdraw the service with a goodbye and close the sockets.

        Safe to call twice or after a failed start, and it never raises: it runs on the shutdown
        path, where an error would hide the reason the agent is stopping.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # never raises the task's error, still honours our cancel
        async with self._lock:  # not in the middle of a refresh swapping instances
            azc, self._azc = self._azc, None
            if azc is None:
                return
            info = self._info
            if info is not None and self._registered:
                self._registered = False
                try:
                    sent = await azc.async_unregister_service(info)
                    await asyncio.wait_for(sent, _GOODBYE_TIMEOUT_S)
                    log.info("withdrawn", extra={"service": info.name})
                except Exception:
                    log.warning("goodbye not sent", extra={"service": info.name}, exc_info=True)
            try:
                await azc.async_close()
            except Exception:
                log.warning("closing mDNS failed", exc_info=True)
