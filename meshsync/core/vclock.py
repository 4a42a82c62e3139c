"""Version vectors: which version of a file descends from which, and which are concurrent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from meshsync.core.errors import WireError

MAX_ENTRIES = 1024
# Counters a peer may send: half of SQLite's range.
MAX_COUNTER = 2**62
# A node takes no version that names a counter of its own above this: its own bumps then
# stay below MAX_COUNTER for 2**61 edits, so they are always valid for every peer.
MAX_OWN_COUNTER = 2**61
_HEX = frozenset("0123456789abcdef")


class Order(Enum):
    """How two vectors relate."""

    EQUAL = "equal"
    NEWER = "newer"  # the left one descends from the right one
    OLDER = "older"
    CONCURRENT = "concurrent"


@dataclass(frozen=True, slots=True)
class Vector:
    """Counters per node (keyed by `NodeId.key`), sorted by key; absent means zero."""

    counters: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, counters: Mapping[str, int]) -> Vector:
        """A vector from a mapping, dropping zeros."""
        return cls(tuple(sorted((k, v) for k, v in counters.items() if v)))

    def get(self, key: str) -> int:
        """The counter of one node."""
        return dict(self.counters).get(key, 0)

    def bump(self, key: str, floor: int = 0) -> Vector:
        """This vector with `key`'s own counter raised by one, to at least `floor`.

        Nodes pass the Unix time as the floor (Syncthing's rule): a node whose index was wiped,
        keeping its key, then cannot reuse a counter it gave an earlier version. Only the
        node's own counter is looked at, so a peer that writes a huge counter under its own
        key cannot push anyone else's counters towards the end of their range.
        """
        return Vector.of({**dict(self.counters), key: max(self.get(key) + 1, floor)})

    def can_bump(self, key: str) -> bool:
        """Whether `key`'s bump of this vector stays within what every node accepts: its own
        counter at most MAX_OWN_COUNTER, and room for its entry among MAX_ENTRIES."""
        own = self.get(key)
        return own <= MAX_OWN_COUNTER and (own > 0 or len(self.counters) < MAX_ENTRIES)

    def merge(self, other: Vector) -> Vector:
        """The least vector that descends from both."""
        merged = dict(self.counters)
        for k, v in other.counters:
            merged[k] = max(merged.get(k, 0), v)
        return Vector.of(merged)

    def compare(self, other: Vector) -> Order:
        """How this vector relates to `other`."""
        mine, theirs = dict(self.counters), dict(other.counters)
        keys = mine.keys() | theirs.keys()
        ahead = any(mine.get(k, 0) > theirs.get(k, 0) for k in keys)
        behind = any(mine.get(k, 0) < theirs.get(k, 0) for k in keys)
        if ahead and behind:
            return Order.CONCURRENT
        if ahead:
            return Order.NEWER
        return Order.OLDER if behind else Order.EQUAL

    def to_json(self) -> dict[str, int]:
        """The wire form."""
        return dict(self.counters)

    @classmethod
    def from_json(cls, data: object) -> Vector:
        """Parse a peer's vector; WireError if it is not one."""
        if not isinstance(data, dict) or len(data) > MAX_ENTRIES:
            raise WireError("a version vector is an object of at most 1024 counters")
        for k, v in data.items():
            if not (isinstance(k, str) and len(k) == 16 and all(c in _HEX for c in k)):
                raise WireError(f"bad version vector key {str(k)[:20]!r}")
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= MAX_COUNTER:
                raise WireError(f"bad version vector counter for {k}")
        return cls.of(data)
