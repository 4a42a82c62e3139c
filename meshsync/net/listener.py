"""The peer port's front door: TLS 1.3 connections, accepted within limits, strangers shown out.

OpenSSH's MaxStartups and LoginGraceTime are the model. Connections are counted per source
address and in total, below the open-file limit; one that has not proven a trusted key
(a signed request from a key we trust) within `prove_within` seconds of being accepted is
closed, TLS handshake included; when too many are unproven at once, the oldest from an
address where no trusted member is known goes first, so a flood of half-open connections
cannot keep members out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from meshsync.core.throttle import Throttle

log = logging.getLogger("meshsync.listener")

ACCEPT_PAUSE = 0.1  # after the system refused us a descriptor: let connections close first


@dataclass(frozen=True, slots=True)
class Limits:
    """How many connections the peer port holds, and how long a stranger may stay."""

    connections: int = 512
    per_address: int = 16
    unproven: int = 64
    unproven_per_address: int = 8  # our own client opens up to 8 to a peer at once
    prove_within: float = 5.0

    @classmethod
    def for_open_files(cls, soft_limit: int) -> Limits:
        """Limits that leave three quarters of the open-file limit to files, SQLite and mDNS."""
        default = cls()
        total = max(16, min(default.connections, soft_limit // 4))
        return cls(connections=total, unproven=max(4, min(default.unproven, total // 4)))


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft


def server_context(certificate: str) -> ssl.SSLContext:
    """TLS 1.3 only, with the node's key and certificate (one PEM file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certificate)
    return context


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol inside, the listener's bookkeeping around."""

    def __init__(self, listener: Listener, address: str) -> None:
        self.listener = listener
        self.address = address
        self.proven = False
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.handshake: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner = self.listener.protocol()
        self.listener.opened(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.forget(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def abort(self) -> None:
        """Drop the connection now, whatever stage it is at."""
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]
        elif self.handshake is not None:
            self.handshake.cancel()


class Listener:
    """Accepts peer connections on a bound socket until closed; `prove` marks a member's."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, limits: Limits,
                 known: Callable[[str], bool] = lambda address: False) -> None:
        self.protocol: Callable[[], asyncio.Protocol] = asyncio.Protocol
        self._known = known  # whether a trusted member is at this IP address
        self._sock = sock
        self._context = context
        self._limits = limits
        self._open: dict[_Connection, None] = {}  # in the order accepted: oldest first
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}
        self._throttle = Throttle()

    @property
    def limits(self) -> Limits:
        """The limits in force."""
        return self._limits

    def count(self) -> tuple[int, int]:
        """(open connections, of which not yet proven)."""
        return len(self._open), sum(not c.proven for c in self._open)

    async def run(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        """Accept connections for `protocol` (aiohttp's server) until cancelled; every
        connection is closed on the way out."""
        self.protocol = protocol
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    sock, peer = await loop.sock_accept(self._sock)
                except OSError as e:  # out of descriptors or buffers for now: not fatal
                    self._report("accept", "", f"cannot accept connections: {e.strerror}")
                    await asyncio.sleep(ACCEPT_PAUSE)
                    continue
                address = str(peer[0])
                if not self._admit(address):
                    sock.close()
                    continue
                connection = _Connection(self, address)
                self._open[connection] = None
                connection.deadline = loop.call_later(
                    self._limits.prove_within, self._expire, connection)
                connection.handshake = loop.create_task(
                    self._handshake(connection, sock), name=f"TLS from {address}")
                connection.handshake.add_done_callback(
                    functools.partial(self._handshake_done, connection, sock))
        finally:
            for connection in list(self._open):
                connection.abort()
                self.forget(connection)

    async def _handshake(self, connection: _Connection, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(
            lambda: connection, sock, ssl=self._context,
            ssl_handshake_timeout=self._limits.prove_within)

    def _handshake_done(
        self, connection: _Connection, sock: socket.socket, task: asyncio.Task[None]
    ) -> None:
        # A callback, not a `finally`: a task cancelled before it first ran never enters its
        # coroutine, and its socket would be left open.
        connection.handshake = None
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():  # a stranger's broken, slow or non-TLS client
                log.debug("TLS handshake with %s failed: %s", connection.address,
                          task.exception())
            if connection.transport is not None:
                # Cancelled in the turn its handshake finished: the transport owns the socket.
                connection.transport.abort()  # type: ignore[attr-defined]
            else:
                sock.close()  # asyncio has let go of it (or never took it)
            self.forget(connection)

    def opened(self, connection: _Connection) -> None:
        """The TLS handshake is done; the connection now carries requests."""
        if connection.transport is not None:
            self._by_transport[connection.transport] = connection

    def prove(self, transport: asyncio.BaseTransport | None) -> None:
        """A request on this connection was signed by a trusted key: it may stay."""
        connection = self._by_transport.get(transport) if transport is not None else None
        if connection is not None and not connection.proven:
            connection.proven = True
            if connection.deadline is not None:
                connection.deadline.cancel()

    def forget(self, connection: _Connection) -> None:
        """Stop counting a connection (closed, failed or shown out); safe to call twice."""
        self._open.pop(connection, None)
        if connection.transport is not None:
            self._by_transport.pop(connection.transport, None)
        if connection.deadline is not None:
            connection.deadline.cancel()

    def _expire(self, connection: _Connection) -> None:
        if not connection.proven and connection in self._open:
            connection.abort()
            self.forget(connection)

    def _admit(self, address: str) -> bool:
        limits = self._limits
        if len(self._open) >= limits.connections:
            self._report("total", "", f"refusing connections: {limits.connections} are open, "
                                      "the most this node holds")
            return False
        mine = [c for c in self._open if c.address == address]
        if len(mine) >= limits.per_address:
            self._report("address", address, f"refusing connections from {address}: "
                                              f"{limits.per_address} are open from there")
            return False
        if sum(not c.proven for c in mine) >= limits.unproven_per_address:
            return False  # a stranger's handshakes in a row: nothing worth a line
        unproven = [c for c in self._open if not c.proven]
        if len(unproven) >= limits.unproven:
            # A stranger's goes first: a member's next connection (its pooled ones idle out)
            # must live through a flood long enough to prove itself.
            oldest = next((c for c in unproven if not self._known(c.address)), unproven[0])
            oldest.abort()
            self.forget(oldest)
        return True

    def _report(self, cause: str, address: str, message: str) -> None:
        if self._throttle.allow((address, cause), asyncio.get_running_loop().time()):
            log.warning("%s", message)
