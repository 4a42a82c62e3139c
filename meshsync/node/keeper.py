"""What sync replaces is kept: a losing concurrent edit as a conflict copy beside the winner
(scanned and synced like any file), anything else under .meshsync/versions on this machine;
and the listings of both."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from meshsync.core import conflicts
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind
from meshsync.core.throttle import shown
from meshsync.fs import apply, versions
from meshsync.node.place import Place

log = logging.getLogger("meshsync.folder")


def keeper(place: Place, changed: set[RelPath], loser: FileRecord | None) -> apply.KeepOld:
    """How to keep what a write replaces; a conflict copy made is added to `changed` (to scan)."""
    def keep(dir_fd: int, name: str, rel: RelPath) -> None:
        if loser is not None and loser.kind is Kind.FILE:
            tag = hashlib.sha256(b"".join(loser.blocks)).hexdigest()[:8]
            for copy in conflicts.names_for(rel, loser.mtime_ns, loser.made_by, tag):
                leaf = copy.rpartition("/")[2]
                if apply.keep_beside(dir_fd, name, leaf):
                    log.info("folder %s: conflict on %s: the other version is kept as %s",
                             place.id, shown(rel), shown(copy))
                    place.tell("conflict", folder=place.id, path=rel, copy=copy,
                               origin=loser.made_by)
                    changed.add(copy)
                    if place.receive_only:
                        place.copies.add(copy)
                    return
                if apply.same_bytes(dir_fd, name, leaf):
                    break  # that copy is there already (made by a peer)
        # A copy of that version is there already, or it is not an edit.
        keep_version(place, dir_fd, name, rel)
    return keep


def keep_version(place: Place, dir_fd: int, name: str, rel: RelPath) -> None:
    """Move what is at `name` (in `dir_fd`, at `rel`) to the folder's versions."""
    apply.move_to_versions(place.root, dir_fd, name, rel, time.time_ns())


def versions_of(place: Place, rel: RelPath | None) -> list[versions.Version]:
    """The kept versions of a path and of all below it (None: the whole folder), oldest first;
    runs in a thread."""
    return [v for v in versions.all_versions(place.root)
            if rel is None or v.path == rel or v.path.startswith(rel + "/")]


def conflict_copies(place: Place) -> list[dict[str, Any]]:
    """The conflict copies in the folder: what each name says, and the version it lost to;
    runs in a thread."""
    found = []
    for entry in place.index.conflict_copies(place.id):
        copy = conflicts.parse(entry.record.path)
        if copy is None:
            continue
        current = place.index.get(place.id, copy.original)
        found.append({
            "folder": place.id, "path": copy.path, "original": copy.original,
            "copy": {"origin": copy.origin, "time": iso(copy.when.timestamp())},
            "current": None if current is None or current.record.deleted else {
                "origin": current.record.made_by, "time": iso(current.record.mtime_ns / 1e9)},
        })
    return found


def iso(seconds: float) -> str:
    """A time as `2026-11-25T10:15:00Z`."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
