"""Long block lists on the wire: sent as their digest, or as what changed since a list the
receiver holds, so that a changed byte in a big file costs a few hundred bytes of notice, not
the file's whole list (67 bytes of JSON a block: 550 KB for 1 GiB) to every member, again
with every index page that carries it.

The origin signs the whole record, list and all; the receiver rebuilds the list from what it
holds and checks that signature as for any record. A list it cannot rebuild it asks for whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from meshsync.core.errors import WireError
from meshsync.core.fields import check_digest

LIST_INLINE = 256  # blocks (a 32 MiB file): a longer list may travel as its digest
MAX_PATCHED = 4  # a patch is sent only when at most 1/MAX_PATCHED of the blocks changed


def list_digest(blocks: Sequence[bytes]) -> bytes:
    """What names a block list: the SHA-256 of its hashes, in order."""
    return hashlib.sha256(b"".join(blocks)).digest()


@dataclass(frozen=True, slots=True)
class Patch:
    """A block list as the blocks that differ from another list, its base."""

    base: bytes  # list_digest of the list it changes
    changes: tuple[tuple[int, bytes], ...]  # (index, new hash), by increasing index

    @classmethod
    def between(cls, old: Sequence[bytes], new: Sequence[bytes]) -> Patch | None:
        """`new` as changes to `old`; None when a patch is not worth sending."""
        if min(len(old), len(new)) <= LIST_INLINE:
            return None
        changes = tuple((i, digest) for i, digest in enumerate(new)
                        if i >= len(old) or old[i] != digest)
        return cls(list_digest(old), changes) if len(changes) * MAX_PATCHED <= len(new) else None

    def apply(self, base: Sequence[bytes], count: int) -> tuple[bytes, ...] | None:
        """The list of `count` blocks this patch makes of `base`; None if `base` is not its base
        or the patch leaves a block unnamed (a list grown by more than it names)."""
        if list_digest(base) != self.base:
            return None
        blocks = [*base[:count], *([b""] * (count - len(base)))]
        for index, digest in self.changes:
            if index >= count:
                return None
            blocks[index] = digest
        return None if b"" in blocks else tuple(blocks)

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return {"base": self.base.hex(), "changes": [[i, d.hex()] for i, d in self.changes]}

    @classmethod
    def from_json(cls, data: object, count: int) -> Patch:
        """Parse a patch of a list of `count` blocks; WireError if bad."""
        if not isinstance(data, dict):
            raise WireError("a patch must be an object")
        changes = data.get("changes")
        if not isinstance(changes, list) or len(changes) > count:
            raise WireError("a patch's changes must be a list, at most one per block")
        parsed: list[tuple[int, bytes]] = []
        for change in changes:
            if (not isinstance(change, list) or len(change) != 2 or type(change[0]) is not int
                    or not (parsed[-1][0] if parsed else -1) < change[0] < count):
                raise WireError("a patch's change is [index, hash], by increasing index")
            parsed.append((change[0], check_digest(change[1])))
        return cls(check_digest(data.get("base")), tuple(parsed))


def rebuilt(digest: bytes, patch: Patch | None, count: int,
            held: Iterable[Sequence[bytes]]) -> tuple[bytes, ...] | None:
    """The list named `digest`, of `count` blocks, from the first of the lists `held` that is
    that list or the base of `patch`; None if none is."""
    for blocks in held:
        if len(blocks) == count and list_digest(blocks) == digest:
            return tuple(blocks)
        found = patch.apply(blocks, count) if patch is not None else None
        if found is not None and list_digest(found) == digest:
            return found
    return None
