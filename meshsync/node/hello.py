"""The hello: what ours tells a trusted peer (folders, term, coordinator, progress, where the
members listen, the keys we vouch for), and how a peer's is taken in, whichever way it came."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from meshsync.core import election as el
from meshsync.core.errors import WireError
from meshsync.core.ids import NodeId
from meshsync.core.keyblob import MAX_KEY_BYTES
from meshsync.core.membership import Peer
from meshsync.core.signing import MAX_OFFSET
from meshsync.core.throttle import shown
from meshsync.core.wire import (
    MAX_MEMBER_ADDRESSES,
    MAX_MEMBER_KEYS,
    FolderId,
    Hello,
    MemberAddress,
    Progress,
    check_address,
)
from meshsync.node.addressbook import AddressBook, host_of
from meshsync.node.peers import Peers

log = logging.getLogger("meshsync")

# Seconds after start before our hellos name members' keys: a list made before we have heard
# them all would withdraw the others from each node that made us its introducer.
KEYS_AFTER = 10.0


class Greeter:
    """Makes our hellos and takes in those of trusted peers."""

    def __init__(self, peers: Peers, book: AddressBook, stop: asyncio.Event,
                 wake: asyncio.Event, feed: Callable[[el.Event], None],
                 trust_changed: Callable[[], None],
                 doubted: Callable[[NodeId], None]) -> None:
        self._peers = peers
        self._book = book
        self._stop = stop
        self._wake = wake
        self._feed = feed
        self._trust_changed = trust_changed
        self._doubted = doubted  # told of a coordinator a member does not hear: probe it
        self.progress: dict[FolderId, Progress] = {}  # ours, told in hellos
        self._told: dict[NodeId, str] = {}  # the gist of the last hello each peer took
        self._heard: dict[NodeId, str] = {}  # the gist of the last hello each peer gave
        self._gists: dict[NodeId, tuple[Hello, str]] = {}  # our last hello to each, its gist

    async def handle_hello(self, key: bytes, hello: Hello, remote: str) -> Hello:
        """A trusted peer's hello (a heartbeat); the answer is ours."""
        peer = self.heard(key, hello, f"{remote}:{hello.port}", trusts_us=None)
        if peer.trusts_us is None:
            self._wake.set()  # say hello back at once: its answer tells whether it trusts us
        answer = self.hello(peer.id)
        self.told(peer.id, answer)
        return answer

    def heard(self, key: bytes, hello: Hello, address: str, trusts_us: bool | None) -> Peer:
        """Take in a trusted peer's hello, whichever way it came."""
        peers = self._peers
        changes: dict[str, Any] = {"trusts_us": trusts_us} if trusts_us is not None else {}
        shared = hello.folders & peers.folders_for(NodeId.of_key(key))
        peer, new = peers.roster.update(
            key, name=hello.name, address=address, trusted=True, folders=shared,
            offers=hello.folders, last_seen=peers.clock.wall(), progress=hello.progress, **changes,
        )
        if new:
            log.info("peer found: %s (%s) at %s, trusted", peer.id, shown(peer.name), address)
        self._heard[peer.id] = hello.gist
        if hello.member_keys is not None:
            self._take_introductions(key, hello.member_keys)
        if not self.plausible(hello.term, address):
            pass
        elif hello.leaving:
            self._feed(el.PeerLeft(peer.id, peers.clock.now()))
        elif peer.is_member(peers.folder_ids):
            self._feed(self.view_of(peer.id, hello.term, hello.coordinator,
                                    hello.hears_coordinator))
            self._book.learn(hello.members)
            coordinator = peers.election.coordinator
            if (hello.coordinator == coordinator and not hello.hears_coordinator
                    and coordinator not in (None, peers.me, peer.id)
                    and peers.election.is_up(coordinator)):
                self._doubted(coordinator)  # a member does not hear it: is it gone?
        elif not peer.folders and peers.throttle.allow(
            (peer.id, "no folder"), peers.clock.wall()
        ):
            log.info("peer %s (%s) shares no folder with this node", peer.id, shown(peer.name))
        return peer

    def plausible(self, term: int, address: str) -> bool:
        """Whether a member's word at `term` is heard at all: not on our way out (we take no
        part in elections then, or we could win one and vanish), nor past the term ceiling (a
        member that insists goes down, and the others stay together)."""
        if self._stop.is_set():
            return False
        if term > el.term_ceiling(self._peers.clock.wall()):
            self._peers.log_peer_input(address, "term", f"claims term {term}, more elections than "
                                       "any mesh can have held by now: ignored")
            return False
        return True

    def view_of(self, peer: NodeId, term: int, coordinator: NodeId | None,
                hears: bool) -> el.PeerHeard:
        """What a plausible member's word tells the election."""
        peers = self._peers
        if term > el.term_ceiling(peers.clock.wall() - MAX_OFFSET):
            # Heard, but its claim is not taken until a node whose clock is as far behind ours
            # as we accept would take it too: one pushed to our ceiling must not split us.
            term, coordinator, hears = 0, None, False
        return el.PeerHeard(peer, term, coordinator, peers.clock.now(), hears)

    def told(self, peer: NodeId, hello: Hello) -> None:
        """`peer` took this hello of ours (as our hello, or as the answer to its own)."""
        self._told[peer] = self._gist(peer, hello)

    def forget(self, peer: NodeId) -> None:
        """`peer` may have lost what we told it (it went down): tell it again."""
        self._told.pop(peer, None)
        self._gists.pop(peer, None)

    def news_for(self, peer: NodeId, moment: Moment | None = None) -> bool:
        """Whether our hello to `peer` now says more than the last one it took (`moment`:
        shared by the questions asked of every peer at once)."""
        return self._told.get(peer) != self.gist_for(peer, moment)

    def gist_for(self, peer: NodeId, moment: Moment | None = None) -> str:
        """The gist of our hello to `peer` now, as our beats on its link say."""
        return self._gist(peer, self.hello(peer, moment))

    def moment(self) -> Moment:
        """What our hellos to several peers share now."""
        return Moment(self._peers)

    def _gist(self, peer: NodeId, hello: Hello) -> str:
        # Asked of every member's hello every heartbeat and every beat, and the hello is
        # nearly always the last one again: its JSON and digest are made once.
        last = self._gists.get(peer)
        if last is None or last[0] != hello:
            last = self._gists[peer] = (hello, hello.gist)
        return last[1]

    def missed(self, peer: NodeId, said: str) -> bool:
        """Whether `peer`'s hello to us now (its gist `said`, as its beat tells) is not the last
        one we took from it: one of its hellos did not reach us."""
        return bool(said) and self._heard.get(peer) != said

    def _take_introductions(self, key: bytes, announced: tuple[bytes, ...]) -> None:
        """Trust what a peer we marked introducer announces, and only while it announces it."""
        peers = self._peers
        changed = peers.trust.introduce(key, announced)
        if not changed:
            return  # the steady state, and anything a peer not marked introducer announces
        for peer in peers.roster:
            if peer.key in changed:
                trusted = (peers.trust.is_trusted(peer.key, host_of(peer.address))
                           if peer.address else peers.trust.knows(peer.key))
                peers.roster.update(peer.key, trusted=trusted)
        peer = peers.roster.get(NodeId.of_key(key))
        if peer is not None and peers.throttle.allow((peer.id, "introduces"), peers.clock.wall()):
            added = len(changed & set(announced))
            log.info("introducer %s (%s) announces %d keys more, %d fewer", peer.id,
                     shown(peer.name), added, len(changed) - added)
        self._trust_changed()
        self._wake.set()

    def hello(self, to: NodeId, moment: Moment | None = None) -> Hello:
        """Our hello to a peer: the folders we share with it and, unless we are leaving, where
        the members it may sync with listen."""
        peers = self._peers
        leaving = self._stop.is_set()
        members: tuple[MemberAddress, ...] = ()
        member_keys: tuple[bytes, ...] | None = None
        progress: tuple[Progress, ...] = ()
        if not leaving:
            moment = moment or Moment(peers)
            members = self._member_addresses(to, moment)
            member_keys = self._member_keys(to, moment)
            progress = self._progress_for(to)
        return Hello(
            name=peers.name,
            port=peers.port,
            folders=peers.folders_for(to),
            term=peers.election.term,
            coordinator=peers.election.coordinator,
            leaving=leaving,
            hears_coordinator=peers.election.hears_coordinator(peers.me, peers.clock.now()),
            members=members,
            member_keys=member_keys,
            progress=progress,
        )

    def _progress_for(self, to: NodeId) -> tuple[Progress, ...]:
        """How far we are with the folders we share with `to`."""
        peer = self._peers.roster.get(to)
        shared = peer.folders if peer is not None else frozenset()
        return tuple(p for folder, p in sorted(self.progress.items()) if folder in shared)

    def _member_addresses(self, to: NodeId, moment: Moment) -> tuple[MemberAddress, ...]:
        """Where our online members listen that share a folder with `to` (never `to` itself,
        nor a peer we do not trust), the most recently heard first."""
        peers = self._peers
        recipient = peers.roster.get(to)
        if recipient is None:
            return ()
        found: list[MemberAddress] = []
        for peer in moment.by_seen:
            if (peer.id == to or not peer.address or not peer.folders & recipient.folders
                    or not peer.is_member(peers.folder_ids)
                    or not peers.election.is_up(peer.id)):
                continue
            if not _passed_on(peer.address):
                continue
            found.append(MemberAddress(peer.id, peer.address))
            if len(found) == MAX_MEMBER_ADDRESSES:
                break
        return tuple(found)

    def _member_keys(self, to: NodeId, moment: Moment) -> tuple[bytes, ...] | None:
        """The keys of members sharing a folder with `to` that we trust on our own word (never
        on an introducer's: introductions go one hop), by ID: trusted by `to` too if it made
        us its introducer. Public keys only, and only to a peer we trust; None (no word on
        keys) for KEYS_AFTER after start."""
        peers = self._peers
        recipient = peers.roster.get(to)
        if peers.clock.now() - peers.election.started < KEYS_AFTER:
            return None
        if recipient is None:
            return ()
        shared = recipient.folders & peers.folder_ids
        found = [p for p in moment.by_id
                 if p.id != to and p.folders & shared and p.is_member(peers.folder_ids)
                 and len(p.key) <= MAX_KEY_BYTES]
        if not found:
            return ()
        return tuple(p.key for p in found if p.key in moment.listed)[:MAX_MEMBER_KEYS]


class Moment:
    """What our hellos to several peers at once share, worked out once: the roster in the two
    orders hellos tell it in, and (when first asked) the keys our own lines trust. Every member
    asks this of every other each heartbeat: among ten nodes, nine hellos a second."""

    def __init__(self, peers: Peers) -> None:
        roster = list(peers.roster)
        self.by_seen = sorted(roster, key=lambda p: p.last_seen or 0.0, reverse=True)
        self.by_id = sorted(roster, key=lambda p: p.id)
        self._trust = peers.trust
        self._listed: set[bytes] | None = None

    @property
    def listed(self) -> set[bytes]:
        """The keys an unexpired line of our own trusts."""
        if self._listed is None:
            self._listed = set(self._trust.known_keys(introduced=False))
        return self._listed


@functools.lru_cache(maxsize=1024)
def _passed_on(address: str) -> bool:
    """Whether a member's address goes in our hellos: the one we reached it at, not a --peer
    host name. Asked for every member in every hello: parsing each address anew was a fifth of
    an idle coordinator's time among ten nodes."""
    try:
        check_address(address)
    except WireError:
        return False
    return True
