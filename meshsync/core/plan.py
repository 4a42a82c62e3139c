"""What to do with a remote version: take it, or keep ours. The same verdict on every node.

Version vectors decide: a version that descends from ours replaces ours, one that ours
descends from is ignored. Concurrent versions are settled by a pure rule of the two records
alone, so every node reaches the same winner on its own: a change beats a delete, then the
newer mtime wins, then the lower origin ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from meshsync.core.records import FileRecord
from meshsync.core.vclock import Order


class Action(Enum):
    """The verdict."""

    IGNORE = "ignore"  # ours is the same or newer
    TAKE = "take"  # write theirs to disk and index


@dataclass(frozen=True, slots=True)
class Verdict:
    """The action, and whether ours differed and loses (its content must be kept aside)."""

    action: Action
    conflict: bool = False


def wins(a: FileRecord, b: FileRecord) -> bool:
    """Whether `a` beats the concurrent `b`: a change beats a delete, newer mtime, lower origin."""
    if a.deleted != b.deleted:
        return b.deleted
    if a.mtime_ns != b.mtime_ns:
        return a.mtime_ns > b.mtime_ns
    if a.origin != b.origin:
        return a.origin < b.origin
    # One node can make two concurrent versions (it edits a concurrent winner it took); any
    # fixed order settles them, and concurrent vectors always differ.
    return a.version.counters > b.version.counters


def decide(local: FileRecord | None, remote: FileRecord) -> Verdict:
    """What to do with `remote`, given the version of the same path we hold (if any)."""
    if local is None:
        return Verdict(Action.TAKE)
    match remote.version.compare(local.version):
        case Order.NEWER:
            return Verdict(Action.TAKE)
        case Order.EQUAL | Order.OLDER:
            return Verdict(Action.IGNORE)
    if not wins(remote, local):
        return Verdict(Action.IGNORE)
    # Identical content is never a conflict, whatever the vectors say.
    return Verdict(Action.TAKE, conflict=not (local.deleted or local.same_content(remote)))
