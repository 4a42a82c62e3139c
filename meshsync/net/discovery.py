"""mDNS discovery: advertise this node on `_meshsync._tcp.local.` and report others found.

An advertisement is only a hint of where a node may be: identity is proven by the signed hello.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from meshsync import PROTOCOL_VERSION

log = logging.getLogger("meshsync.discovery")

SERVICE = "_meshsync._tcp.local."
# A browser stops asking after its first ~14 s, and our own announcement goes out only when
# we register: without a periodic re-announcement, nodes that first meet after a healed
# partition would never learn of each other.
REANNOUNCE_EVERY = 30.0
RESOLVE_TIMEOUT_MS = 3000


@dataclass(frozen=True, slots=True)
class Advert:
    """A node seen on mDNS: where it says it listens, and the ID and name it claims."""

    instance: str
    claimed_id: str
    claimed_name: str
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

    async def run(self, label: str, node_id: str, name: str, port: int) -> None:
        """Advertise and browse until cancelled; the goodbye is sent by `close`."""
        self._info = AsyncServiceInfo(
            SERVICE,
            f"{label}.{SERVICE}",
            port=port,
            properties={"v": str(PROTOCOL_VERSION), "id": node_id, "name": name[:32]},
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
            await asyncio.sleep(REANNOUNCE_EVERY)
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
            self._on_gone(name)
            return
        task = asyncio.get_running_loop().create_task(
            self._resolve(zeroconf, name), name=f"resolve {name}"
        )
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    async def _resolve(self, zeroconf: Zeroconf, name: str) -> None:
        info = AsyncServiceInfo(SERVICE, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
            log.debug("mDNS: %s did not resolve", name)
            return
        props = {
            k.decode(errors="replace"): (v or b"").decode(errors="replace")
            for k, v in info.properties.items()
        }
        addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
        if not addresses or not info.port:
            return
        self._on_found(
            Advert(name, props.get("id", ""), props.get("name", ""), addresses, info.port)
        )


def own_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback."""
    addresses = [
        str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4
    ]
    return [a for a in addresses if not a.startswith("127.")] or addresses
