"""Heartbeat links: each member's WebSocket to its coordinator, a beat each way every second.

Liveness is a star, so that it does not grow with the square of the mesh (see
`core.election`): a member keeps one link, to its coordinator, and the coordinator's beats name
the members it hears itself. A beat is a few dozen bytes on a connection both ends have
proven (the member's signed request opened it, on TLS pinned to the coordinator's key), so it
carries no signature. A link that closes says its peer may be gone: the peer gets a hello at
once, and a closed port (kill -9, a crash) is known in milliseconds, not after DOWN_AFTER.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from meshsync.core import election as el
from meshsync.core.errors import WireError
from meshsync.core.ids import NodeId
from meshsync.core.throttle import shown
from meshsync.core.wire import Beat
from meshsync.net.client import PeerClient, PeerError
from meshsync.net.socket import LinkSocket
from meshsync.node.addressbook import host_of
from meshsync.node.hello import Greeter
from meshsync.node.peers import Peers

log = logging.getLogger("meshsync")

BEAT_EVERY = 1.0
OPEN_WITHIN = 1.5  # seconds to open a link
SILENT = 3 * el.DOWN_AFTER  # a link silent this long is closed (a peer gone without a word)
RETRY_AFTER = (0.25, 8.0)  # first and longest wait before opening a failed link again
MAX_FRAMES_PER_SECOND = 20  # beats come one a second, and at once after a change of view

@dataclass(eq=False, slots=True)
class _Link:
    peer: NodeId
    address: str
    socket: LinkSocket
    ours: bool  # we opened it: to the node we follow as coordinator
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent_up: tuple[NodeId, ...] = ()  # the members our last beat on it named
    relayed: tuple[NodeId, ...] = ()  # the members its coordinator's last beat named
    closed: bool = False  # by us, on purpose


class Links:
    """The links this node holds: the one it opened to its coordinator, and those its members
    opened to it."""

    def __init__(self, peers: Peers, greeter: Greeter, stop: asyncio.Event,
                 feed: Callable[[el.Event], None], probe: Callable[[NodeId], None]) -> None:
        self._peers = peers
        self._greeter = greeter
        self._stop = stop
        self._feed = feed
        self._probe = probe
        self._links: dict[NodeId, _Link] = {}
        self._opening: NodeId | None = None
        self._closing: set[asyncio.Task[None]] = set()  # held till done
        # The node a link last failed to open to, and when to try it again: a coordinator
        # that died, say, which must not hold up the link to the next one.
        self._failed: NodeId | None = None
        self._retry = RETRY_AFTER[0]
        self._next_try = 0.0

    def maintain(self, client: PeerClient, tg: asyncio.TaskGroup) -> None:
        """Hold one link, to the coordinator we follow: open it if need be, close any other
        link we opened. Called every heartbeat and whenever the view changes."""
        peers = self._peers
        target = peers.election.coordinator
        for link in list(self._links.values()):
            if link.ours and link.peer != target:
                self._close(link)
        if (target is None or target == peers.me or target in self._links
                or self._opening is not None or self._stop.is_set()
                or (target == self._failed and peers.clock.now() < self._next_try)):
            return
        peer = peers.roster.get(target)
        if peer is None or not peer.address or not peer.trusted:
            return  # it is greeted first; the link follows at the next heartbeat
        self._opening = target
        tg.create_task(self._open(client, target, peer.key, peer.address),
                       name=f"link {peer.address}")

    def linked(self, peer: NodeId) -> bool:
        """Whether a link with `peer` is open."""
        return peer in self._links

    def beat_now(self) -> None:
        """Our view changed: say so on every link, not at the next beat."""
        for link in self._links.values():
            link.wake.set()

    def close_all(self) -> None:
        """On our way out: every link closes (members that probe find our port closed)."""
        for link in list(self._links.values()):
            self._close(link)

    async def _open(self, client: PeerClient, peer: NodeId, key: bytes, address: str) -> None:
        try:
            socket = await client.open_link(address, key, OPEN_WITHIN)
        except PeerError as e:
            if peer != self._failed:
                self._failed, self._retry = peer, RETRY_AFTER[0]
            self._next_try = self._peers.clock.now() + self._retry
            self._retry = min(self._retry * 2, RETRY_AFTER[1])
            log.debug("link to %s not opened: %s", peer, shown(e, 300))
            return
        finally:
            self._opening = None
        self._failed, self._retry = None, RETRY_AFTER[0]
        await self._run(_Link(peer, address, socket, ours=True))

    async def handle_link(self, key: bytes, socket: LinkSocket, remote: str) -> None:
        """A link a member opened to us (the middleware proved its key); held until it closes."""
        peers = self._peers
        peer = peers.roster.get(NodeId.of_key(key))
        if peer is None or not peer.address or not peer.is_member(peers.folder_ids):
            return  # a member is greeted first: its hello tells what it shares, and where
        if self._stop.is_set():
            return
        await self._run(_Link(peer.id, peer.address, socket, ours=False))

    async def _run(self, link: _Link) -> None:
        old = self._links.get(link.peer)
        if old is not None:
            self._close(old)
        if self._stop.is_set():
            await link.socket.close()
            return
        self._links[link.peer] = link
        sending = asyncio.create_task(self._send(link))
        receiving = asyncio.create_task(self._receive(link))
        try:
            await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, receiving):
                task.cancel()
            for outcome in await asyncio.gather(sending, receiving, return_exceptions=True):
                if isinstance(outcome, Exception):  # the connection broke under a send
                    log.debug("link with %s closed: %s", link.peer, shown(outcome, 300))
            if self._links.get(link.peer) is link:
                del self._links[link.peer]
            await link.socket.close()
            if not link.closed and not self._stop.is_set() and self._peers.election.is_up(
                    link.peer):
                self._probe(link.peer)  # gone, or only its link: its port tells which

    async def _send(self, link: _Link) -> None:
        election, clock = self._peers.election, self._peers.clock
        while True:
            link.wake.clear()
            now = clock.now()
            up = election.heard_directly(now) if election.coordinator == self._peers.me else ()
            beat = Beat(election.term, election.coordinator,
                        election.hears_coordinator(self._peers.me, now),
                        up if up != link.sent_up else None,
                        self._greeter.gist_for(link.peer))
            await link.socket.send(beat.to_json())
            link.sent_up = up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.wake.wait(), BEAT_EVERY)

    async def _receive(self, link: _Link) -> None:
        peers = self._peers
        second, frames = 0.0, 0
        while not link.socket.closed:
            try:
                text = await link.socket.receive(SILENT)
            except TimeoutError:
                peers.log_peer_input(link.address, "silent link",
                                     f"sent nothing on its link for {SILENT:.0f} s: closed")
                return
            if text is None:
                return  # closed, or a frame no node sends
            now = peers.clock.now()
            if now - second >= 1.0:
                second, frames = now, 0
            frames += 1
            if frames > MAX_FRAMES_PER_SECOND:
                peers.log_peer_input(link.address, "beats", f"sent over {MAX_FRAMES_PER_SECOND} "
                                     "beats in a second: link closed")
                return
            try:
                beat = Beat.from_json(text)
            except WireError as e:
                peers.log_peer_input(link.address, "bad beat", f"sent a bad beat: {e}")
                return
            self._take(link, beat)

    def _take(self, link: _Link, beat: Beat) -> None:
        peers = self._peers
        peer = peers.roster.get(link.peer)
        if peer is None or not peers.trust.is_trusted(peer.key, host_of(link.address)):
            self._close(link)  # trust withdrawn since the link opened: its word counts no more
            return
        if beat.up is not None:
            link.relayed = beat.up
        if not self._greeter.plausible(beat.term, link.address):
            return
        self._feed(self._greeter.view_of(link.peer, beat.term, beat.coordinator,
                                         beat.hears_coordinator))
        if link.relayed:
            self._feed(el.PeersRelayed(link.peer, link.relayed, self._peers.clock.now()))
        if self._greeter.missed(link.peer, beat.said):
            self._probe(link.peer)  # our side of the port may be crowded, not its side

    def _close(self, link: _Link) -> None:
        """Close a link on purpose (nothing to probe): its receiver wakes to the close."""
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
        link.closed = True
        task = asyncio.create_task(link.socket.close())  # never raises
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
