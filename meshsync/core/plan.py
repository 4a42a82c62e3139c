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


@dataclass(frozen=True, slots=True)
class Judgement:
    """What to do with a remote version given ours on disk and the one we wait for.

    queue: wait for it (it replaces the waiting one). drop_pending: the waiting version is
    history (this one descends from it) and lost to ours, so wait for nothing. aside: it
    lost to a concurrent version; keep it to judge again when ours changes, since a later
    change of ours (a deletion, an older mtime) may lose to it. The waiting version, when
    replaced by a concurrent winner, is set aside the same way (pending_aside).
    """

    queue: bool = False
    drop_pending: bool = False
    aside: bool = False
    pending_aside: bool = False


def judge(local: FileRecord | None, pending: FileRecord | None, remote: FileRecord) -> Judgement:
    """Judge `remote` against both versions; the same verdict whatever the arrival order."""
    if local is not None and remote.version.compare(local.version) in (Order.OLDER, Order.EQUAL):
        return Judgement()  # history of what we hold
    against_pending = pending and remote.version.compare(pending.version)
    if against_pending in (Order.OLDER, Order.EQUAL):
        return Judgement()  # history of what we wait for
    beats_local = decide(local, remote).action is Action.TAKE
    concurrent = against_pending is Order.CONCURRENT
    beats_pending = not concurrent or (pending is not None and wins(remote, pending))
    if beats_local and beats_pending:
        return Judgement(queue=True, pending_aside=concurrent and not _alike(pending, remote))
    # Identical content is never a conflict: such a loser is as good as the winner.
    beaten_by = local if not beats_local else pending
    return Judgement(drop_pending=against_pending is Order.NEWER,
                     aside=not _alike(beaten_by, remote))


def _alike(a: FileRecord | None, b: FileRecord) -> bool:
    return a is not None and a.deleted == b.deleted and a.same_content(b)


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
