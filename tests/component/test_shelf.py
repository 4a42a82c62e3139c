"""The node's folder list as it starts: what start names, and what was added before."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from meshsync.control.protocol import ControlError
from meshsync.core.ids import NodeId
from meshsync.core.wire import FolderId
from meshsync.node.config import FOLDERS_FILE, Folder, Keep, Mode
from meshsync.node.folder import FolderSync
from meshsync.node.peers import Peers
from meshsync.node.shelf import Shelf


def shelf(state: Path, named: tuple[Folder, ...]) -> Shelf:
    def make(folder: Folder) -> FolderSync:
        place = SimpleNamespace(folder=folder)
        return cast(FolderSync, SimpleNamespace(
            id=folder.id, place=place, configure=lambda f: setattr(place, "folder", f)))

    peers = cast(Peers, SimpleNamespace(reshare=lambda folder_ids, shares: None, describe=str))
    return Shelf(state, named, peers, {}, make, {}, asyncio.Event())


def saved(state: Path) -> Any:
    return json.loads((state / FOLDERS_FILE).read_text())


def test_a_folder_added_before_that_clashes_with_start_is_said_and_kept_in_the_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FOLDERS_FILE).write_text(json.dumps({"added": [
        {"id": "Docs", "path": "/a/Docs"}, {"id": "Sync", "path": "/home/me/Sync"}],
        "paused": []}))
    named = (Folder(FolderId("Docs"), Path("/b/Docs")), Folder(FolderId("Sync"),
                                                              Path("/home/me/Sync")))
    with caplog.at_level(logging.WARNING):
        found = shelf(tmp_path, named)
    assert [(f.id, str(f.path)) for f in found.all] == [("Docs", "/b/Docs"),
                                                         ("Sync", "/home/me/Sync")]
    # Said for the folder that clashes; nothing for the one start names as it was added.
    assert [r.getMessage() for r in caplog.records] == [
        "not syncing folder Docs at /a/Docs, added earlier: a folder with the ID Docs is synced"
        " already, at /b/Docs: give this one another with --as"]
    asyncio.run(found.pause(["Sync"]))
    assert saved(tmp_path) == {"added": [{"id": "Docs", "path": "/a/Docs"},
                                         {"id": "Sync", "path": "/home/me/Sync"}],
                               "paused": ["Sync"], "settings": {}}


def test_the_settings_of_a_folder_start_names_are_kept_by_its_id_for_the_next_start(
        tmp_path: Path) -> None:
    node = NodeId(bytes(range(32)))
    sync = (Folder(FolderId("Sync"), Path("/home/me/Sync")),)
    shelf(tmp_path, sync).set("Sync", mode=Mode.SEND_ONLY, share=frozenset({node}))
    said = {"Sync": {"mode": "send-only", "share_with": [str(node)]}}
    assert saved(tmp_path)["settings"] == said
    [again] = shelf(tmp_path, sync).all
    assert (again.mode, again.share, again.keep) == (Mode.SEND_ONLY, frozenset({node}), None)
    # Started for another folder, the node keeps Sync's settings for when it is named again.
    docs = shelf(tmp_path, (Folder(FolderId("Docs"), Path("/home/me/Docs")),))
    asyncio.run(docs.pause(["Docs"]))
    docs.set("Docs", keep=Keep(86400, 1 << 20))
    assert saved(tmp_path)["settings"] == {"Docs": {"keep_days": 1, "keep_size": 1 << 20},
                                           **said}
    [docs_again] = shelf(tmp_path, (Folder(FolderId("Docs"), Path("/home/me/Docs")),)).all
    assert docs_again.keep == Keep(86400, 1 << 20)


def test_settings_that_cannot_be_remembered_are_refused_and_left_as_they_were(
        tmp_path: Path) -> None:
    found = shelf(tmp_path, (Folder(FolderId("Sync"), Path("/home/me/Sync")),))
    (tmp_path / FOLDERS_FILE).mkdir()  # a directory where the file goes: no rename over it
    with pytest.raises(ControlError, match=r"^cannot remember the folders in .*folders\.json"):
        found.set("Sync", mode=Mode.SEND_ONLY)
    [folder] = found.all
    assert folder.mode is Mode.SEND_RECEIVE
