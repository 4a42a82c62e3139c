"""What to do with a remote version: take it, keep ours, or resolve. The same verdict on every node.

Version vectors decide: a version that descends from ours replaces ours, one that ours
descends from is ignored. Concurrent versions are settled by a pure rule of what each holds
(a change beats a delete, then the newer mtime, the lower author), so every node picks the
same winner on its own. A node that replaces its own version by a concurrent winner publishes
a resolution: the winner under the merged vector, which descends from both. The loser is then
history everywhere, whatever order versions arrive in. The vector is not bumped: every node
that resolves one conflict publishes the same vector and content, so resolutions never
conflict with each other, and a change made knowing both sides descends from all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum

from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import Order, Vector


class Action(Enum):
    """The verdict."""

    IGNORE = "ignore"  # ours is the same or newer
    TAKE = "take"  # write theirs to disk and index


@dataclass(frozen=True, slots=True)
class Verdict:
    """The action; whether ours is live, of other content, and loses (keep it as a conflict
    copy); whether ours loses to a concurrent version (then publish a resolution)."""

    action: Action
    conflict: bool = False
    resolve: bool = False


def alike(a: FileRecord | None, b: FileRecord) -> bool:
    """Whether both hold the same thing: the same content, or both a deletion."""
    return a is not None and ((a.deleted and b.deleted) or a.same_content(b))


def same_version(a: FileRecord, b: FileRecord) -> bool:
    """Whether both are one version, whoever published it: both deletions, or the same content,
    metadata and author (the resolutions of one conflict by several nodes)."""
    return (a.deleted and b.deleted) or (a.same_metadata(b) and a.made_by == b.made_by)


def compare(a: FileRecord, b: FileRecord) -> Order:
    """How `a` relates to `b`. Equal vectors holding other versions count as concurrent: two
    resolutions of different conflicts can share a vector, and the rule must pick one."""
    order = a.version.compare(b.version)
    return Order.CONCURRENT if order is Order.EQUAL and not same_version(a, b) else order


def wins(a: FileRecord, b: FileRecord) -> bool:
    """Whether `a` beats the concurrent `b`: a change beats a delete, then a directory beats a
    file or link (what it holds stays where it is; the loser becomes a conflict copy), then
    the newer mtime, the lower author, then (one content, one author) the mode, the lower
    origin.

    What a version holds decides, not who published it: a resolution wins and loses as the
    version whose content it carries, so no node's verdict depends on which it heard first.
    """
    return _rank(a) > _rank(b)


def _rank(r: FileRecord) -> tuple[object, ...]:
    # One author's two contents of one mtime are told apart by the content itself; one node's
    # two concurrent versions of one content by their counters (concurrent vectors differ).
    content = () if r.deleted else (r.kind.value, r.size, r.blocks, r.target)
    return (not r.deleted, r.kind is Kind.DIR and not r.deleted, r.mtime_ns, -int(r.made_by, 16),
            content, r.mode, -int(r.origin, 16), r.version.counters)


def decide(local: FileRecord | None, remote: FileRecord) -> Verdict:
    """What to do with `remote`, given the version of the same path we hold (if any)."""
    if local is None:
        return Verdict(Action.TAKE)
    match compare(remote, local):
        case Order.NEWER:
            return Verdict(Action.TAKE)
        case Order.EQUAL | Order.OLDER:
            return Verdict(Action.IGNORE)
    if not wins(remote, local):
        return Verdict(Action.IGNORE)
    # Identical content is never a conflict. A loser alike to its winner is resolved all the
    # same: left concurrent, a version descending from it could beat the winner, and every
    # node would have to keep every loser for ever to agree on the end of such a cycle.
    return Verdict(Action.TAKE, conflict=not (local.deleted or local.same_content(remote)),
                   resolve=remote.version != local.version)


def resolution(winner: FileRecord, ours: FileRecord, me: str) -> FileRecord:
    """The version `me` publishes on taking `winner` over its concurrent `ours`: the winner's
    content and metadata, its author kept, under the merged vector."""
    author = winner.made_by
    return replace(winner, version=winner.version.merge(ours.version), origin=me,
                   author="" if author == me else author)


def local_change(ours: FileRecord | None, found: FileRecord, kept: Iterable[FileRecord],
                 me: str, floor: int = 0) -> FileRecord:
    """`found` (the path as a scan found it, or a tombstone) as the next version made here.

    It descends from ours and from every kept loser alike to ours, since the user saw that
    content whoever's version it was: else a deletion would be concurrent with such a loser,
    and a change beats a delete (a conflict copy made by two nodes, deleted, would come back).
    """
    version = Vector() if ours is None else ours.version
    for loser in kept:
        if alike(ours, loser):
            version = version.merge(loser.version)
    return replace(found, version=version.bump(me, floor), origin=me, author="")


def override(ours: FileRecord | None, theirs: FileRecord, me: str,
             floor: int = 0) -> FileRecord | None:
    """What a send-only folder announces to make its version of a path win over `theirs`, a
    version it did not write: ours (None: not here, so a deletion) as the next version made
    here, descending from theirs. None if there is nothing to say (neither has the path), or
    no room in the vector to count it."""
    if ours is None:
        if theirs.deleted:
            return None
        ours = theirs.tombstone(Vector(), me)
    version = ours.version.merge(theirs.version)
    if not version.can_bump(me):
        return None
    return replace(ours, version=version.bump(me, floor), origin=me, author="")


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
    if local is not None and compare(remote, local) in (Order.OLDER, Order.EQUAL):
        return Judgement()  # history of what we hold
    against_pending = pending and compare(remote, pending)
    if against_pending in (Order.OLDER, Order.EQUAL):
        return Judgement()  # history of what we wait for
    beats_local = decide(local, remote).action is Action.TAKE
    concurrent = against_pending is Order.CONCURRENT
    beats_pending = not concurrent or (pending is not None and wins(remote, pending))
    if beats_local and beats_pending:
        return Judgement(queue=True, pending_aside=concurrent)
    # Kept even when alike to what beat it: its vector matters to where the path ends.
    return Judgement(drop_pending=against_pending is Order.NEWER, aside=True)


def forsaken(version: FileRecord, answers: Mapping[str, FileRecord | None],
             members: Iterable[str]) -> bool:
    """Whether no member holds `version` any more: every member that could hold it has
    announced the version of the path it holds (None: none), and none announced this one.

    A version waited for that is forsaken is given up: whatever replaced it where it was held
    comes on its own. A loser kept aside that is forsaken is pruned, for the same reason.
    The node's puller learns the answers by blocks: a version that every member, all online,
    had no block of at two attempts running is forsaken (Puller._write_files).
    """
    return all(m in answers and not _holds(answers[m], version) for m in members)


def _holds(held: FileRecord | None, version: FileRecord) -> bool:
    return held is not None and compare(held, version) is Order.EQUAL


def pruned(loser: FileRecord, kept: Iterable[FileRecord],
           answers: Mapping[str, FileRecord | None], members: Iterable[str]) -> bool:
    """Whether a loser that judging again keeps aside can go: another kept version of its path
    descends from it, or no member holds it any more (were it queued instead, it would wait
    for nothing; history of ours, judging drops it)."""
    return superseded(loser, kept) or forsaken(loser, answers, members)


def superseded(loser: FileRecord, kept: Iterable[FileRecord]) -> bool:
    """Whether another kept version of a loser's path descends from it: judging that one
    covers it. (The node prunes by this alone: it keeps no answers per member; a loser no
    member holds any more, if ever queued, is given up like any forsaken version.)"""
    return any(k.path == loser.path and compare(loser, k) is Order.OLDER for k in kept)
