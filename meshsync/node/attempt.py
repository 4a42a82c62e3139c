"""One version's attempt at the disk, and what each way of failing means: the version waits
with a cause (see retry.py), is tried again after this pass's deletions, or makes a path be
scanned again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord
from meshsync.core.throttle import shown
from meshsync.core.wire import Signed
from meshsync.fs import apply, scan
from meshsync.node.place import Place
from meshsync.node.retry import (
    CHANGED,
    DISK_FULL,
    NO_DIRECTORY,
    WRITE_REFUSED,
    Retries,
    cause_of,
)
from meshsync.store.index import Need

Done = tuple[FileRecord, bytes, int, int]  # an index item: record, signature, inode, dev


@dataclass(slots=True)
class Batch:
    """What a batch of disk work produced: index items, paths to scan again (the user changed
    them meanwhile, or sync made a conflict copy there), directories to keep, and versions
    that could not be written (with a cause and a reason), and versions to try again once this
    pass's deletions are done (a file or link replacing a directory that still holds files)."""

    done: list[Done] = field(default_factory=list)
    changed: set[RelPath] = field(default_factory=set)
    revive: set[RelPath] = field(default_factory=set)
    failed: list[tuple[Need, str, str]] = field(default_factory=list)
    after_deletions: list[Need] = field(default_factory=list)  # replace a directory emptied
    resolved: list[Signed] = field(default_factory=list)  # resolutions stored, to announce
    # Where each version done came from (its need's source), "" for one stored otherwise
    # than it came (a resolution): a member whose versions alone a put stores is told so.
    sources: set[str] = field(default_factory=set)
    covered: list[tuple[str, range]] = field(default_factory=list)  # (member, seqs) to tell


class NoRoom(Exception):
    """A file would take the disk's free space below what --min-free keeps."""


def done(need: Need, seen: scan.Seen | None) -> Done:
    """The index item of a version now on disk as `seen` (None: deleted)."""
    inode, dev = (seen.inode, seen.dev) if seen else (0, 0)
    return (need.record, need.signature, inode, dev)


def attempt(batch: Batch, need: Need, step: Callable[[], Done | None], place: Place,
            retries: Retries) -> None:
    """Run one path's step; the disk having changed or a write failing spoils only it."""
    try:
        finished = step()
    except apply.NotEmpty as e:
        # A file or link replacing a directory: once the deletions of what it holds are
        # done, later in this pass. Held by files of ours that no deletion names, it waits.
        if need.record.deleted:
            batch.changed.add(need.record.path)
            batch.failed.append((need, CHANGED, f"cannot delete: {shown(e)}"))
        elif place.index.deletions_under(place.id, need.record.path):
            batch.after_deletions.append(need)
        elif retries.tried(need):
            # Still, a while later: it holds files no deletion names (made here meanwhile).
            # The directory gets a version of its own, concurrent with this one, which it
            # beats (plan.wins: a directory beats a file or link): nothing is lost.
            batch.revive.add(need.record.path)
            batch.failed.append((need, NO_DIRECTORY, "the directory it replaces holds "
                                 "files made meanwhile"))
        else:
            batch.failed.append((need, WRITE_REFUSED, f"cannot write: {shown(e)}"))
        return
    except apply.Changed as e:
        # Rescanned, then tried again; listed meanwhile, so that a path that keeps
        # changing (or never matches what the index says) shows, and costs a try per 2 s.
        batch.changed.add(need.record.path)
        batch.failed.append((need, CHANGED, f"{shown(e)}; rescanning it"))
        return
    except apply.ParentNotDir as e:
        # (Never for a deletion: apply.remove finds nothing to delete there, and the version
        # is stored like any other, as a resolution if it beat ours.)
        if place.index.get(place.id, e.path) is not None:
            # A synced file or link, which a version on its way (queued, or still to come:
            # a directory beats a file) makes a directory.
            batch.failed.append((need, NO_DIRECTORY, f"{shown(e.path)} is not a directory "
                                 "yet"))
        else:
            batch.failed.append((need, WRITE_REFUSED, f"cannot write: {shown(e)}"))
        return
    except NoRoom as e:
        batch.failed.append((need, DISK_FULL, str(e)))
        return
    except (apply.UnsafePath, apply.BadBlock, OSError, ValueError) as e:
        batch.failed.append((need, cause_of(e), f"cannot write: {shown(e)}"))
        return
    if finished is not None:
        batch.done.append(finished)
        batch.sources.add(need.source if finished[0] is need.record else "")
