"""What the parts of one folder's sync share: where it is, its index, its rules and locks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind, Stamp
from meshsync.core.throttle import Throttle
from meshsync.core.wire import FolderId
from meshsync.fs import scan
from meshsync.fs.ignore import Ignore
from meshsync.node.config import Folder, Mode
from meshsync.store.index import Index


@dataclass(slots=True)
class Place:
    """One synced folder as its scanner, judge and puller see it."""

    folder: Folder
    index: Index
    ignore: Ignore = field(default_factory=Ignore)  # replaced when .meshsyncignore changes
    throttle: Throttle = field(default_factory=Throttle)  # log lines of this folder
    # Held by a scan, and by every write to the folder until the index records it: a scan
    # in between would take a file we just wrote for a local edit (an echo).
    disk: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Files a scan hashed within their mtime's tick, until they are hashed again: till then
    # an unchanged stamp does not vouch for what they hold (their blocks are read, not copied).
    racy: frozenset[RelPath] = frozenset()
    # What sync left at the paths it wrote, until the watcher reports them (see Written).
    written: Written = field(default_factory=lambda: Written())
    # Changes made here that a receive-only folder does not store nor send, as the last scan
    # of each path found them: `added`, `changed` or `deleted`. Replaced by what sync writes.
    local: dict[RelPath, str] = field(default_factory=dict)
    # Conflict copies sync made in a receive-only folder, until a scan finds them: the losing
    # version is the mesh's, not a change made here, so the copy is stored and sent as any
    # node sends the copies it makes (else the mesh never sees it while its maker is away).
    copies: set[RelPath] = field(default_factory=set)
    # Tells those following the node's events (`meshsync status --watch`, the API); from any
    # thread.
    tell: Callable[..., None] = field(default=lambda kind, **fields: None)

    def changed(self, records: Iterable[FileRecord], received: bool) -> None:
        """Tell of versions stored: made here, or received (an event per node that made
        them)."""
        by: dict[str, list[RelPath]] = {}
        for r in records:
            by.setdefault(r.made_by if received else "", []).append(r.path)
        for key, paths in by.items():
            self.tell("changed", folder=self.id, origin=key or None, count=len(paths),
                      paths=paths[:CHANGED_PATHS])

    @property
    def receive_only(self) -> bool:
        """Whether changes made here stay here (see config.Mode)."""
        return self.folder.mode is Mode.RECEIVE_ONLY

    @property
    def id(self) -> FolderId:
        """The folder ID."""
        return self.folder.id

    @property
    def root(self) -> Path:
        """The folder's directory."""
        return self.folder.path


CHANGED_PATHS = 50  # paths named in an event of changes; the count says how many in all
ECHOES_KEPT = 10_000  # paths remembered before all are forgotten (the watcher reports each
# within a second; past this many it is not reporting)


@dataclass(slots=True)
class Written:
    """What sync last left at each path it wrote or deleted, until the watcher reports the
    path. A report of a path still so is our own write coming back (an echo): a first sync
    of 100k files would otherwise rescan every one of them. Directories are never taken for
    echoes: one sync made may be filled by the user before the watcher watches it."""

    left: dict[RelPath, Stamp | None] = field(default_factory=dict)  # None: nothing there

    def add(self, items: Iterable[tuple[RelPath, Stamp | None]]) -> None:
        """Remember what sync left at these paths (files and links; None where it deleted)."""
        if len(self.left) > ECHOES_KEPT:  # the watcher is not reporting: forget them all
            self.left.clear()
        self.left.update(items)

    def echoes(self, root: Path, paths: Iterable[RelPath]) -> set[RelPath]:
        """Those of `paths` still as sync left them; each is forgotten once asked about."""
        found: set[RelPath] = set()
        with scan.Directories(root) as dirs:
            for path in sorted(p for p in paths if p in self.left):
                left = self.left.pop(path)
                try:
                    dir_fd, name = dirs.parent(path)
                    seen = scan.seen_at(path, name, dir_fd)
                except FileNotFoundError:
                    seen = None  # its directory is gone too
                except (OSError, scan.UnsafePath):
                    continue  # the scan says what it is
                if (left is None and seen is None) or (
                        seen is not None and seen.kind is not Kind.DIR and seen.stamp == left):
                    found.add(path)
        return found
