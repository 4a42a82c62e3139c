"""The peers this node knows: the roster, whether each is up, and what is said of them in the log.

One place for what every part of the node reads of the mesh (who we are, the roster, the
election's view of who is up, whom the user trusts) and for the log lines peers drive, each
rate-limited so that a peer cannot flood the log.
"""

from __future__ import annotations

import logging
from typing import Any

from meshsync.core import election as el
from meshsync.core.ids import NodeId
from meshsync.core.membership import Roster, clock_fix
from meshsync.core.signing import MAX_OFFSET
from meshsync.core.throttle import Throttle, shown
from meshsync.core.wire import FolderId
from meshsync.crypto.trust import TrustStore
from meshsync.node.clock import Clock

log = logging.getLogger("meshsync")


class Peers:
    """This node, the peers it has met, and the election's view of them."""

    def __init__(self, me: NodeId, name: str, folder_ids: frozenset[FolderId],
                 trust: TrustStore, clock: Clock, election: el.Election) -> None:
        self.me = me
        self.name = name
        self.folder_ids = folder_ids
        self.shares: dict[FolderId, frozenset[NodeId]] = {}  # folders shared with these only
        self.port = 0  # where we listen, once bound
        self.trust = trust
        self.clock = clock
        self.election = election
        self.roster = Roster()
        self.throttle = Throttle()

    def folders_for(self, peer_id: NodeId) -> frozenset[FolderId]:
        """The folders we share with `peer_id`: ours, but those shared with others only."""
        return frozenset(f for f in self.folder_ids
                         if f not in self.shares or peer_id in self.shares[f])

    def reshare(self, folder_ids: frozenset[FolderId],
                shares: dict[FolderId, frozenset[NodeId]]) -> None:
        """Our folders and whom each is shared with, changed: each peer's folders (what it
        offers that we share with it) follow at once."""
        self.folder_ids, self.shares = folder_ids, shares
        for peer in self.roster:
            self.roster.update(peer.key, folders=peer.offers & self.folders_for(peer.id))

    def reached(self, peer_id: NodeId) -> bool:
        """Whether a member is up here at an address we know."""
        peer = self.roster.get(peer_id)
        return peer is not None and peer.address is not None and self.election.is_up(peer_id)

    def member_at(self, host: str) -> bool:
        """Whether a trusted member was last reached at IP address `host`."""
        return any(p.trusted and p.address and p.address.rpartition(":")[0].strip("[]") == host
                   for p in self.roster)

    def describe(self, peer_id: NodeId) -> str:
        """A peer's name and short ID (as `peers` shows it), for the log."""
        if peer_id == self.me:
            return f"{shown(self.name, 40)} ({peer_id.short}, this node)"
        name = self.name_of(peer_id)
        if name in (None, "?"):  # known by our coordinator's word alone, so far
            return f"node {peer_id.short}"
        return f"{shown(name, 40)} ({peer_id.short})"

    def name_of(self, peer_id: NodeId) -> str | None:
        """The name a node gave (ours for this node); None if never heard."""
        if peer_id == self.me:
            return self.name
        peer = self.roster.get(peer_id)
        return peer.name if peer else None

    def remember_stranger(self, key: bytes, seen_at: str, **known: Any) -> None:
        """List a node that proved its key but is not trusted; said once a minute."""
        _, new = self.roster.update(key, trusted=False, last_seen=self.clock.wall(), **known)
        if new:
            self.log_untrusted(NodeId.of_key(key), seen_at)

    def not_from_there(self, key: bytes, address: str) -> bool:
        """True (and said once) if the user trusts `key`, but not from `address` (from=)."""
        if not self.trust.knows(key):
            return False
        peer_id = NodeId.of_key(key)
        if self.throttle.allow((peer_id, "not from there"), self.clock.wall()):
            log.warning("refused %s at %s: its key is trusted, but not from there (from= in "
                        "authorized_keys)", peer_id, shown(address))
        return True

    def clock_refused(self, key: bytes, offset: float, seen_at: str, **known: Any) -> None:
        """Record, and say once a minute, that our clocks are too far apart to talk."""
        peer, _ = self.roster.update(key, clock_offset=offset, **known)
        if self.throttle.allow((peer.id, "clock"), self.clock.wall()):
            log.warning("peer %s at %s: clock differs by %+.0f s (more than %.0f s), so neither "
                        "of us accepts the other; %s", peer.id, shown(seen_at), offset,
                        MAX_OFFSET, clock_fix(offset))

    def log_untrusted(self, peer_id: NodeId, address: str) -> None:
        """Say once a minute that a peer is not trusted, and how to trust it."""
        # One cause whatever the key: a stranger with a fresh key per request is one flood.
        if self.throttle.allow((peer_id, "untrusted"), self.clock.wall()):
            log.warning("untrusted peer %s at %s: nothing it sends is accepted; to trust it, "
                        "run: meshsync trust %s", peer_id, address, peer_id)

    def log_untrusted_by(self, peer_id: NodeId, address: str) -> None:
        """Say once a minute that a peer does not trust us, and how it would."""
        if self.throttle.allow((peer_id, "refused"), self.clock.wall()):
            log.warning("peer %s at %s does not trust this node; on that machine run: "
                        "meshsync trust %s", peer_id, address, self.me)

    def log_peer_input(self, address: str, cause: str, what: str) -> None:
        """Say once a minute, printably, what a peer at `address` did wrong."""
        if self.throttle.allow((address, cause), self.clock.wall()):
            log.warning("peer at %s %s", shown(address), shown(what, 300))
