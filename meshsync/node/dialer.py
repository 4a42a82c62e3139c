"""Dialling: whom to greet each heartbeat, learning who is at an address before anything of
ours is sent, and what a hello's answer (or its failure) tells of the node there."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from meshsync.core import election as el
from meshsync.core.errors import WireError
from meshsync.core.ids import NodeId
from meshsync.core.membership import Peer
from meshsync.core.throttle import shown
from meshsync.core.wire import Hello
from meshsync.net.client import (
    PeerClient,
    PeerClockOffset,
    PeerClosed,
    PeerError,
    PeerMismatch,
    Reply,
)
from meshsync.node.addressbook import MAX_HINTS, AddressBook, host_of
from meshsync.node.hello import Greeter, Moment
from meshsync.node.peers import Peers

log = logging.getLogger("meshsync")

HELLO_TIMEOUT = 1.0
HINTS_DIALLED_AT_ONCE = 16
STRANGER_EVERY = 10.0  # how often an untrusted node is checked again (trust may have changed)


class Dialer:
    """Sends our hellos, and takes in what comes back."""

    def __init__(self, peers: Peers, book: AddressBook, greeter: Greeter,
                 feed: Callable[[el.Event], None]) -> None:
        self._peers = peers
        self._book = book
        self._greeter = greeter
        self._feed = feed
        self._inflight: set[str] = set()
        # Addresses due a hello while one was under way: that one may say less than we know
        # now (a claim made a moment after the hello that opened its election), so another
        # follows as soon as it ends, not a heartbeat later.
        self._again: set[str] = set()
        self.linked: Callable[[NodeId], bool] = lambda peer: False  # a heartbeat link is open
        self._stranger_checked: dict[str, float] = {}

    def dial(self, client: PeerClient, tg: asyncio.TaskGroup, now: float) -> None:
        """Start a hello to every address due now, each a task of `tg`."""
        for address in self.addresses_to_contact(now):
            self._greet(client, tg, address, "hello")

    def _greet(self, client: PeerClient, tg: asyncio.TaskGroup, address: str, why: str) -> None:
        if address in self._inflight:
            self._again.add(address)
        else:
            self._inflight.add(address)
            tg.create_task(self.contact(client, address), name=f"{why} {address}")

    def addresses_to_contact(self, now: float) -> list[str]:
        """The addresses to greet now; a trusted peer's even while a hello to it is under way
        (it is greeted again when that ends)."""
        # Trusted peers when there is something to tell or learn (see `_due`); strangers now
        # and then, as trust may have been added.
        hints = self._book.hints
        everyone = self._peers.election.needs_hellos(now)
        moment = self._greeter.moment()
        known = {p.address for p in self._peers.roster if p.address and (
            self._due(p, everyone, moment) if p.trusted else p.address not in self._inflight
            and now - self._stranger_checked.get(p.address, -STRANGER_EVERY) >= STRANGER_EVERY)}
        room = HINTS_DIALLED_AT_ONCE - sum(a in hints for a in self._inflight)
        due = sorted((a for a, h in hints.items()
                      if h.next_try <= now and a not in known and a not in self._inflight),
                     key=lambda a: hints[a].next_try)
        return sorted(known | set(due[: max(room, 0)]))

    def _due(self, peer: Peer, everyone: bool, moment: Moment) -> bool:
        """Whether a trusted peer gets a hello this heartbeat: as the election says (every one
        while we ask around, one not up, one whose beats stopped), our coordinator while no
        link to it is open (a closed link is how a crash is noticed at once), one whose trust
        in us is not known, or one our hello would tell something new. In the steady state
        that is none: liveness is the beats' (see `node.link`)."""
        election = self._peers.election
        return (election.greets(peer.id, self._peers.clock.now(), everyone)
                or (peer.id == election.coordinator and not self.linked(peer.id))
                or peer.trusts_us is not True or self._greeter.news_for(peer.id, moment))

    def probe(self, client: PeerClient, tg: asyncio.TaskGroup, peer_id: NodeId) -> None:
        """A hello to a member now: its link closed (it may be gone, and a closed port says so
        at once), a member does not hear it, or its beat says a hello of its missed us."""
        peer = self._peers.roster.get(peer_id)
        if peer is not None and peer.address:
            self._greet(client, tg, peer.address, "probe")

    async def contact(self, client: PeerClient, address: str) -> None:
        """Learn who is at `address`, and if we trust it, send our hello and take its answer;
        again while another was asked for meanwhile.

        Nothing of ours is sent before the TLS certificate there has shown whose key it is,
        and only a node we trust gets our hello (our name, folders and view of the mesh).
        """
        try:
            await self._contact_once(client, address)
            while address in self._again and self._still_due(address):
                self._again.discard(address)
                await self._contact_once(client, address)
        finally:
            self._inflight.discard(address)
            self._again.discard(address)

    def _still_due(self, address: str) -> bool:
        """Whether the trusted peer at `address` is due a hello now: the one just taken may
        have told it all."""
        peer = self._peers.roster.at(address)
        now = self._peers.clock.now()
        return peer is not None and peer.trusted and self._due(
            peer, self._peers.election.needs_hellos(now), self._greeter.moment())

    async def _contact_once(self, client: PeerClient, address: str) -> None:
        peers = self._peers
        try:
            peer = peers.roster.at(address)
            key = peer.key if peer is not None and peer.trusted else None
            if key is None:
                who = await client.identify(address, HELLO_TIMEOUT)
                key = who.key
                if not self._worth_a_hello(address, key, who.name):
                    return
            hello = self._greeter.hello(NodeId.of_key(key))
            reply = await client.send_hello(address, key, hello, HELLO_TIMEOUT)
        except PeerClosed:
            self._unreachable(address, closed=True)
        except PeerClockOffset as e:  # its signed refusal: a trusted node, our clocks apart
            peers.clock_refused(e.key, e.offset, address, address=address, trusted=True,
                                last_seen=peers.clock.wall())
            self._unreachable(address, closed=False)
        except PeerMismatch as e:
            peers.log_peer_input(address, "mismatch",
                                 f"refused: {e} (another node, or a man in the middle)")
            self._unreachable(address, closed=False)
            if (peer := peers.roster.at(address)) is not None:
                peers.roster.update(peer.key, address=None)  # it may tell us where it is now
            self._book.add(address)  # who is there now is learned afresh, and proven
        except PeerError as e:  # unreachable, or anything else it chose to answer
            if peers.roster.at(address) is None:  # never proven: tell the user once a minute
                peers.log_peer_input(address, "no answer",
                                     f"does not answer as a meshsync node ({e})")
            self._unreachable(address, closed=False)
        else:
            if self._take_reply(address, reply):
                self._greeter.told(NodeId.of_key(reply.key), hello)
            peers.roster.measured(reply.key, reply.clock_offset)

    def _worth_a_hello(self, address: str, key: bytes, name: str | None) -> bool:
        """Whether the node whose key `identify` found at `address` (claiming `name`) gets
        our hello."""
        peers, hints = self._peers, self._book.hints
        peer_id = NodeId.of_key(key)
        hint = hints.get(address)
        if peer_id == peers.me:
            hints.pop(address, None)  # our own advertisement, or --peer naming ourselves
            return False
        if hint is not None and hint.claimed_id and hint.claimed_id != str(peer_id):
            peers.log_peer_input(address, "advert",
                                 f"advertised ID {shown(hint.claimed_id)} but its certificate "
                                 f"is vouched for by {peer_id}")
        known = peers.roster.get(peer_id)
        if (known is not None and known.address not in (None, address)
                and peers.election.is_up(peer_id)):
            # A member up at its own address, advertised at another: a relay, or a stale advert.
            # Dialling it there would hand the member's address to whoever advertised it.
            if hint is not None and not hint.static:
                del hints[address]
            return False
        if peers.trust.is_trusted(key, host_of(address)):
            return True
        if peers.not_from_there(key, address):
            self._unreachable(address, closed=False)
            return False
        if len(self._stranger_checked) >= MAX_HINTS:  # keep only strangers still listed
            listed = {p.address for p in peers.roster if not p.trusted}
            self._stranger_checked = {a: t for a, t in self._stranger_checked.items()
                                      if a in listed}
        self._stranger_checked[address] = peers.clock.now()
        peers.remember_stranger(key, address, address=address,
                                **({} if name is None else {"name": name}))
        self._unreachable(address, closed=False)  # a hint backs off; a stranger is not dialled
        return False

    def _unreachable(self, address: str, closed: bool) -> None:
        self._book.back_off(address)
        peer = self._peers.roster.at(address)
        if closed and peer is not None and self._peers.election.is_up(peer.id):
            self._feed(el.PeerLeft(peer.id, self._peers.clock.now()))

    def _take_reply(self, address: str, reply: Reply) -> bool:
        """Take in a hello's answer; True if it was the trusted peer's hello."""
        peers = self._peers
        peer_id = NodeId.of_key(reply.key)
        self._book.answered(address)
        trusted = peers.trust.is_trusted(reply.key, host_of(address))
        if not trusted and peers.not_from_there(reply.key, address):
            return False
        if reply.status == 403:
            before = peers.roster.get(peer_id)
            peers.roster.update(reply.key, trusted=trusted, trusts_us=False, address=address,
                                last_seen=peers.clock.wall())
            if trusted and (before is None or before.trusts_us is not False):
                peers.log_untrusted_by(peer_id, address)
            elif before is None:
                peers.log_untrusted(peer_id, address)
            if peers.election.is_up(peer_id):
                self._feed(el.PeerLeft(peer_id, peers.clock.now()))
            return False
        if not trusted:
            peers.remember_stranger(reply.key, address, address=address)
            return False
        if reply.status != 200:
            peers.log_peer_input(address, "status",
                                 f"answered HTTP {reply.status}: {shown(reply.body)}")
            return False
        try:
            hello = Hello.from_json(reply.body)
        except WireError as e:
            peers.log_peer_input(address, "bad hello", f"sent a bad hello: {e}")
            return False
        self._greeter.heard(reply.key, hello, address, trusts_us=True)
        return True

    async def say_goodbye(self, client: PeerClient) -> None:
        """Tell every peer up that we are leaving."""
        await asyncio.gather(*(client.send_hello(p.address, p.key, self._greeter.hello(p.id), 0.5)
                               for p in self._peers.roster
                               if p.address and self._peers.election.is_up(p.id)),
                             return_exceptions=True)
