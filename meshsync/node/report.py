"""What `meshsync status` says of a folder: its state, what it needs, what waits and why,
the scan under way, and the transfer rates; and the shorter progress our hellos carry.

The states, in order of precedence: `unmounted` (the folder marker is missing), `scanning`
(a full scan is under way, or none has finished since start), `syncing` (versions to write
that are not waiting for a retry), `held back` (what is left waits for a cause listed in
`held_back`: a retry, an untrusted origin, a send-only folder's override, or a receive-only
folder's changes made here), `in sync`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshsync.core import conflicts
from meshsync.core.wire import FolderId, Progress
from meshsync.node.clock import Clock
from meshsync.node.config import Folder, Keep, Mode
from meshsync.node.place import Place
from meshsync.node.puller import Puller
from meshsync.node.scanner import Scanner
from meshsync.node.transfer import Rate
from meshsync.store.index import Need

SHOWN = 100  # paths listed by `meshsync status` (held back, waiting)


class Origins(Protocol):
    """What status asks of the node: how to trust a record's origin."""

    def untrusted_origin(self, origin: str) -> str: ...


class Sync(Protocol):
    """The folder as status reads it (node.folder.FolderSync)."""

    place: Place
    clock: Clock
    puller: Puller
    scanner: Scanner
    sent: Rate
    mounted: bool
    scanned: bool

    @property
    def keep(self) -> Keep: ...

    @property
    def id(self) -> FolderId: ...

    @property
    def root(self) -> Path: ...

    @property
    def mesh(self) -> Origins: ...


@dataclass(frozen=True, slots=True)
class Counts:
    """Status's part read from the index: versions to write and their bytes, conflict copies,
    versions held back for their origin (and the first of them)."""

    files: int
    size: int
    copies: int
    held_count: int
    held: list[Need]
    unwritten: list[Need]  # the first versions to write, in a send-only folder


def counts(place: Place) -> Counts:
    """Status's part read from the index; runs in a thread."""
    index = place.index
    files, size = index.need_totals(place.id)
    copies = sum(conflicts.is_copy(e.record.path) for e in index.conflict_copies(place.id))
    unwritten = index.needs(place.id, SHOWN) if place.folder.mode is Mode.SEND_ONLY else []
    return Counts(files, size, copies, index.held_count(place.id), index.held(place.id, SHOWN),
                  unwritten)


def status(sync: Sync, counts: Counts) -> dict[str, Any]:
    """The folder's line in `meshsync status --json` (documented in the README)."""
    now = sync.clock.now()
    puller = sync.puller
    retries = puller.retries
    waiting = _waiting(sync, counts.files)
    held = [{"path": n.record.path, "cause": "untrusted origin",
             "reason": sync.mesh.untrusted_origin(n.record.origin)} for n in counts.held]
    held += [{"path": n.record.path, "cause": "send-only folder",
              "reason": f"changed in the mesh, not written here: `meshsync override {sync.id}`"
                        " makes this node's version win"} for n in counts.unwritten]
    local = sync.place.local
    held += [{"path": path, "cause": "receive-only folder",
              "reason": f"{change} here, not sent: `meshsync revert {sync.id}` puts the mesh's"
                        " version back"} for path, change in sorted(local.items())[:SHOWN]]
    held_back = [*held, *retries.listing(now, SHOWN - len(held))] if waiting else held
    unwritten = counts.files if counts.unwritten else 0
    progress = sync.scanner.progress
    return {
        "id": sync.id,
        "path": str(sync.root),
        "state": _state(sync, counts.files, counts.held_count, waiting),
        "need_files": counts.files,
        "need_bytes": counts.size,
        "conflicts": counts.copies,
        "transfers": [{"path": p.path, "size": p.size, "done": p.done}
                      for p in puller.fetcher.transfers.values()],
        "waiting": retries.listing(now, SHOWN) if waiting else [],
        "waiting_count": waiting,
        "held_back": held_back[:SHOWN],
        "held_back_count": counts.held_count + waiting + unwritten + len(local),
        "scan": progress.to_json() if progress is not None else None,
        "rate": {"in": puller.fetcher.received.per_second(now), "out": sync.sent.per_second(now)},
        **settings_json(sync.place.folder, sync.keep),
    }


def paused(folder: Folder, keep: Keep) -> dict[str, Any]:
    """A paused folder's line in `meshsync status --json`: the shape of `status`, and the
    members' part, all empty."""
    return {"id": folder.id, "path": str(folder.path), "state": "paused", "need_files": 0,
            "need_bytes": 0, "conflicts": 0, "transfers": [], "waiting": [], "waiting_count": 0,
            "held_back": [], "held_back_count": 0, "scan": None, "rate": {"in": 0, "out": 0},
            **settings_json(folder, keep), "members": [], "completion": []}


def settings_json(folder: Folder, keep: Keep) -> dict[str, Any]:
    """A folder's settings, for status and `set`: which way it syncs, whom it is shared with
    (None: every trusted node that has it), and what it keeps (`keep`, its own or the
    node's)."""
    return {"mode": str(folder.mode), "share_with": None if folder.share is None else sorted(
        map(str, folder.share)), "keep": keep_json(keep)}


def keep_json(keep: Keep) -> dict[str, float]:
    """How much of what sync replaces a folder keeps, for status."""
    return {"days": keep.max_age / 86400, "bytes": keep.max_bytes}


def progress(sync: Sync) -> Progress:
    """How far the folder is, for our hellos; runs in a thread."""
    index, folder = sync.place.index, sync.id
    files, size = index.need_totals(folder)
    state = _state(sync, files, index.held_count(folder), _waiting(sync, files))
    return Progress(folder, state, files, size, index.counts(folder)[1], index.max_seq(folder))


def progress_stamp(sync: Sync) -> tuple[object, ...]:
    """What `progress` depends on, read without a query: while it stays, so does the progress."""
    return (sync.place.index.writes, sync.mounted, sync.scanned, sync.scanner.progress is None,
            len(sync.puller.retries), len(sync.place.local))


def _waiting(sync: Sync, files: int) -> int:
    """Versions waiting for a retry (none when nothing is queued: the waits of versions no
    longer wanted are forgotten at the next pass)."""
    return len(sync.puller.retries) if files else 0


def _state(sync: Sync, files: int, held: int, waiting: int) -> str:
    if not sync.mounted:
        return "unmounted"
    if sync.scanner.progress is not None or not sync.scanned:
        return "scanning"
    if files and sync.place.folder.mode is Mode.SEND_ONLY:
        return "held back"
    if files > waiting:
        return "syncing"
    return "held back" if held or waiting or sync.place.local else "in sync"
