"""A receive-only folder's scans: what changed here is listed, never stored, signed or sent."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord
from meshsync.core.wire import FolderId
from meshsync.node.config import Folder, Mode
from meshsync.node.place import Place
from meshsync.node.scanner import Scanner
from meshsync.store.index import Index

ME = "0123456789abcdef"


def test_a_receive_only_scan_lists_what_changed_here_and_stores_nothing(tmp_path: Path) -> None:
    root = tmp_path / "f"
    (root / ".meshsync").mkdir(parents=True)
    index = Index(tmp_path / "index.db")
    place = Place(Folder(FolderId("f"), root), index)
    signed: list[FileRecord] = []

    def sign(record: FileRecord) -> bytes:
        signed.append(record)
        return b"signature"

    scanner = Scanner(place, ME, sign)
    (root / "a.txt").write_text("first")
    (root / "d").mkdir()
    assert len(scanner.find_changes(None, set(), set()).changes) == 2  # send-receive: sent
    place.folder = replace(place.folder, mode=Mode.RECEIVE_ONLY)
    stored = index.max_seq(place.id)

    (root / "a.txt").write_text("edited here")
    (root / "b.txt").write_text("made here")
    (root / "d").rmdir()
    assert scanner.find_changes(None, set(), set()).changes == []
    assert place.local == {"a.txt": "changed", "b.txt": "added", "d": "deleted"}
    # The watcher's paths alone: what they are now replaces what was said of them.
    (root / "b.txt").unlink()
    (root / "d").mkdir()
    assert scanner.find_changes({RelPath("b.txt"), RelPath("d")}, set(), set()).changes == []
    assert place.local == {"a.txt": "changed"}
    (root / "a.txt").write_text("first")  # as the index holds it: nothing changed here
    held = index.get(place.id, "a.txt")
    assert held is not None
    os.utime(root / "a.txt", ns=(held.record.mtime_ns, held.record.mtime_ns))
    scanner.find_changes({RelPath("a.txt")}, set(), set())
    assert place.local == {}
    assert index.max_seq(place.id) == stored  # no version stored
    assert len(signed) == 2  # nor signed since send-receive
    index.close()


def test_a_receive_only_scan_sends_the_conflict_copies_sync_made_and_lists_nothing(
        tmp_path: Path) -> None:
    root = tmp_path / "f"
    (root / ".meshsync").mkdir(parents=True)
    index = Index(tmp_path / "index.db")
    place = Place(Folder(FolderId("f"), root, mode=Mode.RECEIVE_ONLY), index)
    scanner = Scanner(place, ME, lambda record: b"signature")
    copy = RelPath("a.sync-conflict-20260101-000000-abcdefgh.txt")
    (root / copy).write_text("the version that lost")
    (root / "mine.txt").write_text("made here")
    place.copies.add(copy)  # as keeper.keeper notes the copy it makes

    found = scanner.find_changes({copy, RelPath("mine.txt")}, set(), set())
    assert [(c.record.path, c.signature) for c in found.changes] == [(copy, b"signature")]
    assert place.local == {"mine.txt": "added"}
    assert place.copies == set()
    stored = index.get(place.id, copy)
    assert stored is not None
    assert stored.record.size == len("the version that lost")
    # Once sent it is the mesh's: deleting it here is a change made here, kept here.
    (root / copy).unlink()
    assert scanner.find_changes({copy}, set(), set()).changes == []
    assert place.local == {"mine.txt": "added", copy: "deleted"}
    # One gone before a scan found it is forgotten: a file made there later stays here.
    place.copies.add(RelPath("gone.txt"))
    scanner.find_changes(None, set(), set())
    assert place.copies == set()
    (root / "gone.txt").write_text("made here later")
    assert scanner.find_changes({RelPath("gone.txt")}, set(), set()).changes == []
    index.close()
