"""The folders a running node syncs, changed while it runs: `meshsync add`, `remove`, `pause`,
`resume` and `set`.

A node syncs the folders `start` names and those added since, which it remembers in the
state directory (`folders.json`, with which folders are paused and each folder's settings)
across restarts. A paused folder is neither scanned nor written, and not offered to peers
until it is resumed; a removed one is forgotten, its files left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshsync.control.protocol import ControlError
from meshsync.core.errors import MeshsyncError
from meshsync.core.ids import NodeId
from meshsync.core.wire import FolderId
from meshsync.crypto.keys import replace_private
from meshsync.node.config import (
    FOLDERS_FILE,
    Folder,
    folders_from,
    nested,
    remembered_folders,
)
from meshsync.node.folder import FolderSync
from meshsync.node.peers import Peers

log = logging.getLogger("meshsync")

class Shelf:
    """The node's folders: running (in `folders`, shared with the parts that serve them) or
    paused, as started or changed since."""

    def __init__(self, state: Path, named: tuple[Folder, ...], peers: Peers,
                 folders: dict[str, FolderSync], make: Callable[[Folder], FolderSync],
                 keep_out: Mapping[str, Path], wake: asyncio.Event) -> None:
        self._state = state
        self._named = {f.id for f in named}  # from the command line: not remembered
        self._peers = peers
        self.folders = folders
        self._make = make
        self._keep_out = keep_out
        self._wake = wake
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        remembered = remembered_folders(state)
        self._added: dict[str, Folder] = {}
        self._aside: list[Folder] = []  # added earlier, clashing with `named`: kept in the file
        # Settings of folders `start` names, kept for when it names them again.
        self._settings = {i: s for i, s in remembered.settings.items() if i not in self._named}
        self.paused: dict[str, Folder] = {}
        named = tuple(f.with_settings(remembered.settings.get(f.id, {})) for f in named)
        for folder in (*named, *remembered.added):
            try:
                self._check(folder)
            except ControlError as e:
                self._aside.append(folder)
                if (folder.id, folder.path) not in {(f.id, f.path) for f in self.all}:
                    log.warning("not syncing folder %s at %s, added earlier: %s", folder.id,
                                folder.path, e)
                continue
            if folder.id not in self._named:
                self._added[folder.id] = folder
            if folder.id in remembered.paused:
                self.paused[folder.id] = folder
            else:
                self.folders[folder.id] = make(folder)
        self._share()

    @property
    def all(self) -> list[Folder]:
        """Every folder, running or paused, by ID."""
        return sorted([*(s.place.folder for s in self.folders.values()),
                       *self.paused.values()], key=lambda f: f.id)

    async def prepare(self) -> None:
        """Look for each running folder (making it the first time ever)."""
        for sync in list(self.folders.values()):
            await sync.prepare()

    def run(self, tg: asyncio.TaskGroup) -> None:
        """Run each folder in `tg`, and those added or resumed later."""
        self._tg = tg
        for sync in self.folders.values():
            self._start(sync)

    def stop(self) -> None:
        """Cancel every folder's task (the node is stopping)."""
        self._tg = None
        for task in self._tasks.values():
            task.cancel()

    async def add(self, path: str, alias: str | None, **settings: Any) -> Folder:
        """Sync one more folder from now on, and after a restart, with these `settings` (see
        config.Folder)."""
        try:
            [folder] = folders_from([path], alias, self._keep_out)
        except ValueError as e:
            raise ControlError(str(e)) from None
        folder = replace(folder, **settings)
        self._check(folder)
        sync = self._make(folder)
        await _prepared(sync)
        self._added[folder.id] = folder
        self._save()
        self.folders[folder.id] = sync
        self._start(sync)
        self._changed(f"added folder {folder.id} at {folder.path}")
        return folder

    async def remove(self, folder_id: str) -> tuple[Folder, bool]:
        """Stop syncing a folder for good (its files stay as they are); the folder, and whether
        `start` named it (then it is synced again when `start` names it again)."""
        folder = self.find(folder_id)
        await self._halt(folder_id)
        self.paused.pop(folder_id, None)
        self._added.pop(folder_id, None)
        self._save()
        self._changed(f"removed folder {folder_id} ({folder.path}); its files stay")
        return folder, folder_id in self._named

    async def pause(self, ids: list[str]) -> list[str]:
        """Stop syncing these folders (all, if none given) until resumed; those paused now."""
        done = []
        for folder_id in ids or sorted(self.folders):
            folder = self.find(folder_id)
            if folder_id in self.paused:
                continue
            await self._halt(folder_id)
            self.paused[folder_id] = folder
            done.append(folder_id)
        self._save()
        if done:
            self._changed(f"paused {', '.join(done)}")
        return done

    async def resume(self, ids: list[str]) -> list[str]:
        """Sync these paused folders again (all, if none given); those resumed now."""
        done = []
        for folder_id in ids or sorted(self.paused):
            self.find(folder_id)
            folder = self.paused.get(folder_id)
            if folder is None:
                continue
            sync = self._make(folder)
            await _prepared(sync)
            del self.paused[folder_id]
            self.folders[folder_id] = sync
            self._start(sync)
            done.append(folder_id)
        self._save()
        if done:
            self._changed(f"resumed {', '.join(done)}")
        return done

    def set(self, folder_id: str, **settings: Any) -> Folder:
        """Change a folder's settings (see config.Folder), now and after a restart; as they
        were if they cannot be remembered (ControlError)."""
        before = self.find(folder_id)
        folder = replace(before, **settings)
        self._take(folder)
        try:
            self._save()
        except ControlError:
            self._take(before)
            raise
        shared = ("every trusted node that has it" if folder.share is None
                  else ", ".join(sorted(map(self._peers.describe, folder.share))))
        self._changed(f"folder {folder_id} is now {folder.mode}, shared with {shared}"
                      + ("" if folder.keep is None else f", keeping what sync replaces"
                         f" {folder.keep.max_age / 86400:g} days, at most"
                         f" {folder.keep.max_bytes >> 20} MiB"))
        return folder

    def _take(self, folder: Folder) -> None:
        """Hold `folder` (its settings changed) where it is: added, paused or running."""
        if folder.id in self._added:
            self._added[folder.id] = folder
        if folder.id in self.paused:
            self.paused[folder.id] = folder
        else:
            self.folders[folder.id].configure(folder)

    def find(self, folder_id: str) -> Folder:
        """The folder of this ID, running or paused; ControlError if there is none."""
        for folder in self.all:
            if folder.id == folder_id:
                return folder
        known = ", ".join(f.id for f in self.all) or "none"
        raise ControlError(f"no folder has the ID {folder_id!r} (this node's: {known})")

    def _check(self, new: Folder) -> None:
        """ControlError if `new` clashes with a folder of this node: same ID, or one inside
        the other."""
        for folder in self.all:
            if folder.id == new.id:
                raise ControlError(f"a folder with the ID {new.id} is synced already, at"
                                   f" {folder.path}: give this one another with --as")
            if why := nested(new, folder):
                raise ControlError(why)

    def _start(self, sync: FolderSync) -> None:
        if self._tg is not None:
            self._tasks[sync.id] = self._tg.create_task(sync.run(), name=f"folder {sync.id}")

    async def _halt(self, folder_id: str) -> None:
        """Stop a running folder's task and take it out of the running ones."""
        self.folders.pop(folder_id, None)
        task = self._tasks.pop(folder_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _changed(self, what: str) -> None:
        """Offer peers the folders as they are now (the next hello says so)."""
        self._share()
        log.info("%s", what)
        self._wake.set()

    def _share(self) -> None:
        shares: dict[FolderId, frozenset[NodeId]] = {
            s.id: s.place.folder.share for s in self.folders.values()
            if s.place.folder.share is not None}
        self._peers.reshare(frozenset(s.id for s in self.folders.values()), shares)

    def _save(self) -> None:
        """Remember the added folders and which are paused, in one rename; ControlError if
        the state directory cannot be written."""
        try:
            self._write()
        except OSError as e:
            raise ControlError(f"cannot remember the folders in {self._state / FOLDERS_FILE}:"
                               f" {e.strerror or e}") from None

    def _write(self) -> None:
        named = {f.id: f.settings() for f in self.all if f.id in self._named}
        data: dict[str, Any] = {
            "added": [{"id": f.id, "path": str(f.path), **f.settings()}
                      for f in (*self._added.values(), *self._aside)],
            "paused": sorted(self.paused),
            "settings": {i: s for i, s in sorted((self._settings | named).items()) if s},
        }
        replace_private(self._state / FOLDERS_FILE, json.dumps(data, indent=1).encode())


async def _prepared(sync: FolderSync) -> None:
    """The folder looked for (and made the first time); ControlError if it cannot be."""
    try:
        await sync.prepare()
    except MeshsyncError as e:
        raise ControlError(str(e)) from None
