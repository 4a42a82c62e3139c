"""Who we know: every peer's proven identity, trust in both directions and where it listens."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from meshsync.core.ids import NodeId
from meshsync.core.signing import MAX_OFFSET
from meshsync.core.wire import FolderId, Progress

MAX_STRANGERS = 64  # untrusted peers remembered for `meshsync peers`; oldest forgotten first


@dataclass(frozen=True, slots=True)
class Peer:
    """What we know of one node that proved its key to us."""

    id: NodeId
    key: bytes
    name: str = "?"
    address: str | None = None
    trusted: bool = False
    trusts_us: bool | None = None  # None until one of our hellos has been answered
    folders: frozenset[FolderId] = frozenset()  # those it offers that we share with it
    offers: frozenset[FolderId] = frozenset()  # the folders its latest hello named
    last_seen: float | None = None  # wall-clock seconds
    clock_offset: float | None = None  # its clock minus ours, in seconds, as last measured
    progress: tuple[Progress, ...] = ()  # how far it is with the folders it shares with us

    @property
    def clock_refused(self) -> bool:
        """Whether its clock was last found too far from ours for either of us to accept."""
        return self.clock_offset is not None and abs(self.clock_offset) > MAX_OFFSET

    def is_member(self, ours: frozenset[FolderId]) -> bool:
        """Trusted both ways and sharing a folder: a member of our mesh."""
        return self.trusted and self.trusts_us is True and bool(self.folders & ours)

    def state(self, up: bool) -> str:
        """`untrusted` (we do not trust it), `refused` (it does not trust us, or our clocks
        differ too much), `online`, `down`."""
        if not self.trusted:
            return "untrusted"
        if self.trusts_us is False or self.clock_refused:
            return "refused"
        return "online" if up else "down"


class Roster:
    """The peers we know, by ID and by the address they were last reached at."""

    def __init__(self) -> None:
        self._peers: dict[NodeId, Peer] = {}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._peers.values()))

    def get(self, peer: NodeId) -> Peer | None:
        """The peer with this ID, if known."""
        return self._peers.get(peer)

    def at(self, address: str) -> Peer | None:
        """The peer last reached at `address`, if any."""
        return next((p for p in self._peers.values() if p.address == address), None)

    def find(self, text: str) -> Peer | None:
        """The peer whose full or short ID is `text`; None if none or several match."""
        found = [p for p in self._peers.values() if p.id.known_as(text)]
        return found[0] if len(found) == 1 else None

    def update(self, key: bytes, **changes: object) -> tuple[Peer, bool]:
        """Record what we learned of the node holding `key`; returns it and whether it is new."""
        peer_id = NodeId.of_key(key)
        old = self._peers.get(peer_id)
        peer = dataclasses.replace(old or Peer(peer_id, key), **changes)  # type: ignore[arg-type]
        if old is None and not peer.trusted:
            self._forget_strangers()
        if peer.address is not None:
            # One address, one node: whoever answered there last holds it now.
            for other in self._peers.values():
                if other.id != peer_id and other.address == peer.address:
                    self._peers[other.id] = dataclasses.replace(other, address=None)
        self._peers[peer_id] = peer
        return peer, old is None

    def measured(self, key: bytes, clock_offset: float) -> None:
        """Record how far a known peer's clock is from ours; nothing for an unknown peer."""
        peer = self._peers.get(NodeId.of_key(key))
        if peer is not None:
            self._peers[peer.id] = dataclasses.replace(peer, clock_offset=clock_offset)

    def _forget_strangers(self) -> None:
        strangers = [p for p in self._peers.values() if not p.trusted]
        if len(strangers) >= MAX_STRANGERS:
            oldest = min(strangers, key=lambda p: p.last_seen or 0.0)
            del self._peers[oldest.id]


def clock_fix(offset: float) -> str:
    """What to tell the user of a peer whose clock is `offset` seconds from ours."""
    size = abs(offset)
    amount = (f"{size:.0f} s" if size < 120 else f"{size / 60:.0f} min" if size < 7200
              else f"{size / 3600:.0f} h" if size < 172_800 else f"{size / 86400:.0f} days")
    return f"the clocks differ by {amount}: set both to network time (timedatectl set-ntp true)"
