"""What the parts of one folder's sync share: where it is, its index, its rules and locks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from meshsync.core.paths import RelPath
from meshsync.core.throttle import Throttle
from meshsync.core.wire import FolderId
from meshsync.fs.ignore import Ignore
from meshsync.node.config import Folder
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

    @property
    def id(self) -> FolderId:
        """The folder ID."""
        return self.folder.id

    @property
    def root(self) -> Path:
        """The folder's directory."""
        return self.folder.path
