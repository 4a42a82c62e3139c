"""mDNS discovery: advertise this node on `_meshsync._tcp.local.` and report others found.

An advertisement is only a hint of where a node may be: identity is proven by the signed hello.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from meshsync import PROTOCOL_VERSION
from meshsync.core.ids import NodeId
from meshsync.core.throttle import shown

log = logging.getLogger("meshsync.discovery")

SERVICE = "_meshsync._tcp.local."
# A browser stops asking after its first ~14 s, and our own announcement goes out only when
# we register: without a periodic re-announcement, nodes that first meet after a healed
# partition would never learn of each other. Every node's announcement (three packets) reaches
# every node, so each announces less often the more nodes it hears: the LAN carries one about
# every ten seconds whatever its size, and what a node receives does not grow with the mesh.
REANNOUNCE_EVERY = 30.0  # seconds, among three nodes
REANNOUNCE_AMONG = 3
REANNOUNCE_MOST = 300.0  # however many nodes (or forged adverts) it hears
MAX_HEARD = 4096  # advertised names remembered, to count them
RESOLVE_TIMEOUT_MS = 3000
MAX_RESOLVING = 16  # adverts looked up at once; anyone on the LAN can announce thousands


@dataclass(frozen=True, slots=True)
class Advert:
    """A node seen on mDNS: where it says it listens, and the ID it claims (a valid one)."""

    instance: str
    claimed_id: str
    addresses: tuple[str, ...]
    port: int


class Discovery:
    """Registers our service, browses for others and reports adverts and goodbyes."""

    def __init__(self, on_found: Callable[[Advert], None], on_gone: Callable[[str], None]) -> None:
        self._info: AsyncServiceInfo | None = None
        self._on_found = on_found
        self._on_gone = on_gone
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._resolving: set[asyncio.Task[None]] = set()
        self._heard: set[str] = set()  # the names other nodes advertise now

    async def run(self, label: str, node_id: str, port: int) -> None:
        """Advertise and browse until cancelled; the goodbye is sent by `close`."""
        # The TXT record says no more than the protocol and the ID: names and folders are for
        # the nodes we trust, told over TLS.
        self._info = AsyncServiceInfo(
            SERVICE,
            f"{label}.{SERVICE}",
            port=port,
            properties={"v": str(PROTOCOL_VERSION), "id": node_id},
            server=f"{label}.local.",
            addresses=[socket.inet_aton(a) for a in own_addresses()],
        )
        self._azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        # The node ID is in the instance name, so names are unique by construction and the
        # ~1.2 s of probing for a conflict can be skipped.
        await (await self._azc.async_register_service(self._info, cooperating_responders=True))
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, SERVICE, handlers=[self._on_change]
        )
        while True:
            jitter = random.random()  # noqa: S311 (a spread in time, not a secret)
            await asyncio.sleep(reannounce_after(len(self._heard), jitter))
            await (await self._azc.async_update_service(self._info))

    async def close(self) -> None:
        """Say goodbye on mDNS and stop."""
        for task in self._resolving:
            task.cancel()
        if self._azc is None:
            return
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._info is not None:
            with contextlib.suppress(Exception):  # a goodbye is best effort on the way out
                await (await self._azc.async_unregister_service(self._info))
        await self._azc.async_close()

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if self._info is not None and name == self._info.name:
            return
        if state_change is ServiceStateChange.Removed:
            self._heard.discard(name)
            self._on_gone(name)
            return
        if len(self._heard) < MAX_HEARD:
            self._heard.add(name)
        if len(self._resolving) >= MAX_RESOLVING:
            return  # the browser reports it again when it is re-announced
        # The name is the advertiser's to choose: it is not put into the task's name, which
        # asyncio would print.
        task = asyncio.get_running_loop().create_task(
            self._resolve(zeroconf, name), name="resolve an mDNS advert"
        )
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    async def _resolve(self, zeroconf: Zeroconf, name: str) -> None:
        try:
            info = AsyncServiceInfo(SERVICE, name)
            resolved = await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS)
        except Exception as e:  # zeroconf refuses names with control characters, and so on
            log.debug("mDNS: cannot resolve %s: %s", shown(name), shown(e))
            return
        if not resolved:
            log.debug("mDNS: %s did not resolve", shown(name))
            return
        props = {
            k.decode(errors="replace"): (v or b"").decode(errors="replace")
            for k, v in info.properties.items()
        }
        addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
        claimed = props.get("id", "")
        try:
            NodeId.parse(claimed)
        except ValueError:
            log.debug("mDNS: %s advertises no valid node ID", shown(name))
            return
        if addresses and info.port and props.get("v") == str(PROTOCOL_VERSION):
            self._on_found(Advert(name, claimed, addresses, info.port))


def reannounce_after(heard: int, jitter: float) -> float:
    """Seconds to our next re-announcement, hearing `heard` other nodes; `jitter` in [0, 1)
    spreads nodes started together, which would otherwise announce in one burst."""
    every = REANNOUNCE_EVERY * max(1.0, (heard + 1) / REANNOUNCE_AMONG)
    return min(REANNOUNCE_MOST, every) * (0.75 + jitter / 2)


def own_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback."""
    addresses = [
        str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4
    ]
    return [a for a in addresses if not a.startswith("127.")] or addresses


def own_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this host is on: where an mDNS advert may sensibly point."""
    return [ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4]
