"""How often a folder is rescanned whole: the watcher does the work, the rescan is a safety net."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from meshsync.core.ids import NodeId
from meshsync.core.wire import FolderId
from meshsync.node import folder
from meshsync.node.config import Folder
from meshsync.node.folder import FolderSync, Mesh, rescan_every
from meshsync.store.index import Index


def test_a_watched_folder_is_rescanned_hourly_not_every_minute() -> None:
    assert rescan_every(watching=True, took=0.5) == 3600


def test_a_folder_that_cannot_be_watched_is_rescanned_every_minute() -> None:
    assert rescan_every(watching=False, took=0.5) == 60


def test_a_slow_rescan_takes_at_most_a_hundredth_of_the_time() -> None:
    assert rescan_every(watching=False, took=6.0) == 600
    assert rescan_every(watching=True, took=90.0) == 9000


async def test_a_folder_that_cannot_be_watched_says_so_and_falls_back_to_rescans(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def no_watches(root: Path, ready: object) -> AsyncIterator[set[str]]:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")
        yield set()  # (a generator, as watch is)

    monkeypatch.setattr(folder, "watch", no_watches)
    (tmp_path / "f" / ".meshsync").mkdir(parents=True)
    sync = FolderSync(Folder(FolderId("f"), tmp_path / "f"), Index(tmp_path / "index.db"),
                      cast(Mesh, SimpleNamespace(me=NodeId(b"\x01" * 32),
                                                        tell=lambda kind, **fields: None)), "epoch")
    monkeypatch.setattr(folder, "RESCAN_EVERY", 0.0)  # how long it waits to try again

    await sync._take_events()

    assert "cannot watch" in caplog.text
    assert "rescanning it every 60 s instead" in caplog.text
    assert not sync._watching  # so rescan_every gives a minute
    assert sync._rewatch.is_set(), "the watcher is started again after the wait"
