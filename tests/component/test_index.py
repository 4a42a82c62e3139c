"""The SQLite index for real: rows, sequence numbers, blocks, needs and marks in tmp_path files."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import cache
from importlib.resources import files
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsync.core import signing
from meshsync.core.errors import MeshsyncError
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import Vector
from meshsync.crypto import runkey
from meshsync.crypto.keys import KeySigner
from meshsync.fs.scan import Seen, differs
from meshsync.store import database
from meshsync.store.index import FIND_BLOCK, LOGGED_ROWS, PAGE, Entry, Index, IndexUnusable, Need

A = "00000000000000aa"
B = "00000000000000bb"
FOLDER = "photos"
ROOT = Path(__file__).resolve().parents[2]


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def file(path: str, *blocks: str, counter: int = 1, node: str = A) -> FileRecord:
    return FileRecord(RelPath(path), Kind.FILE, Vector.of({node: counter}), node,
                      size=len(blocks) * 100, mode=0o640, mtime_ns=1_700_000_000_123_456_789,
                      blocks=tuple(digest(b) for b in blocks))


def item(record: FileRecord, inode: int = 7) -> tuple[FileRecord, bytes, int, int]:
    return record, b"sig:" + record.path.encode(), inode, 42


def sql(path: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA ignore_check_constraints = ON")  # to damage rows as a disk might
        return db.execute(query, args).fetchall()
    finally:
        db.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "index.db"


@pytest.fixture
def index(db_path: Path) -> Iterator[Index]:
    index = Index(db_path)
    yield index
    index.close()


def test_every_field_round_trips_for_files_dirs_links_and_tombstones(index: Index) -> None:
    live = file("a/b.txt", "x", "y", counter=3)
    directory = FileRecord(RelPath("a"), Kind.DIR, Vector.of({A: 1, B: 2}), B, mode=0o755,
                           mtime_ns=-5)
    link = FileRecord(RelPath("a/link"), Kind.SYMLINK, Vector.of({B: 9}), B, mode=0o777,
                      target="../elsewhere/ü")
    tomb = file("gone.txt", "z").tombstone(Vector.of({A: 2, B: 1}), B)
    items = [(live, b"s1", 11, 3), (directory, b"s2", 12, 3), (link, b"", 13, 3),
             (tomb, b"s4", 0, 0)]
    seqs = index.put(FOLDER, items)
    for (record, signature, inode, dev), seq in zip(items, seqs, strict=True):
        assert index.get(FOLDER, record.path) == Entry(record, signature, seq, inode, dev)
    assert index.get(FOLDER, "missing") is None
    assert index.get("other", "a/b.txt") is None


def test_inode_and_device_numbers_with_the_top_bit_set_round_trip(index: Index) -> None:
    record = file("big-inode", "x")
    index.put(FOLDER, [(record, b"s", 2**64 - 1, 2**63)])
    entry = index.get(FOLDER, "big-inode")
    assert entry is not None
    assert (entry.inode, entry.dev) == (2**64 - 1, 2**63)


# -- stamps: what a scan compares with the disk, without decoding entries -------------------------
SEEN = st.builds(
    Seen, st.just(RelPath("p")), st.sampled_from(Kind), st.integers(0, 2**40),
    st.sampled_from([0o644, 0o755, 0o777]), st.integers(-(2**62), 2**62),
    st.integers(1, 2**64 - 1), st.just(1), st.sampled_from(["", "there", "ü/../x"]))
CHANGE = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(Kind), "size": st.integers(0, 2), "mode": st.sampled_from([0o600]),
    "mtime_ns": st.integers(0, 2), "inode": st.sampled_from([5, 2**64 - 5]), "dev": st.just(2),
    "target": st.sampled_from(["elsewhere"])})


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(SEEN, CHANGE, st.booleans())
def test_a_stamp_read_back_differs_from_the_disk_exactly_when_the_entry_does(
        index: Index, scanned: Seen, change: dict[str, object], deleted: bool) -> None:
    # What a restart's scan passes over by stamp is what the entry itself would pass over.
    record = FileRecord(scanned.path, scanned.kind, Vector.of({A: 1}), A,
                        size=scanned.size if scanned.kind is Kind.FILE else 0, mode=scanned.mode,
                        mtime_ns=scanned.mtime_ns, target=scanned.target)
    if deleted:
        record = record.tombstone(Vector.of({A: 2}), A)
    index.put(FOLDER, [(record, b"s", scanned.inode, 1)])
    on_disk = scanned._replace(**change)  # type: ignore[arg-type]

    stamps = index.stamps(FOLDER)
    assert (on_disk.stamp != stamps["p"]) is differs(on_disk, record, scanned.inode)
    assert (stamps["p"] is None) is deleted


def test_stamps_under_a_path_are_its_own_and_those_below(index: Index) -> None:
    paths = ["a", "a/b", "a/b/c", "a b", "a-z", "a.txt", "a0", "ab", "b"]
    index.put(FOLDER, [item(file(p, p)) for p in paths])
    index.put("other", [item(file("a/x", "x"))])
    assert list(index.stamps(FOLDER, "a")) == ["a", "a/b", "a/b/c"]
    assert list(index.stamps(FOLDER, "a/b")) == ["a/b", "a/b/c"]
    assert list(index.stamps(FOLDER, "a/b/c")) == ["a/b/c"]
    assert index.stamps(FOLDER, "nothing") == {}
    assert list(index.stamps(FOLDER)) == sorted(paths)


def test_stamps_read_past_a_page(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("meshsync.store.index.STAMP_PAGE", 3)
    paths = [f"f{i:02d}" for i in range(10)]
    index.put(FOLDER, [item(file(p, p)) for p in paths])
    assert list(index.stamps(FOLDER)) == paths


def test_a_damaged_stamp_matches_nothing_and_its_entry_is_set_aside(
        index: Index, db_path: Path) -> None:
    record = file("d/bad", "x")
    index.put(FOLDER, [item(record, inode=9)])
    seen = Seen(record.path, Kind.FILE, record.size, record.mode, record.mtime_ns, 9, 42, "")
    assert index.stamps(FOLDER)["d/bad"] == seen.stamp
    damage(db_path, "files", "d/bad", "mode = 'rw-'")
    assert index.stamps(FOLDER)["d/bad"] != seen.stamp  # so the scan reads the entry:
    assert index.get_all(FOLDER, ["d/bad"]) == {}
    assert index.take_damaged(FOLDER) == {"d/bad"}


def test_seq_strictly_increases_across_puts_replacements_and_a_restart(db_path: Path) -> None:
    index = Index(db_path)
    assert index.max_seq(FOLDER) == 0
    first = index.put(FOLDER, [item(file("a", "1")), item(file("b", "1"))])
    second = index.put(FOLDER, [item(file("a", "2", counter=2))])
    other_folder = index.put("other", [item(file("a", "1"))])
    index.close()
    index = Index(db_path)
    try:
        third = index.put(FOLDER, [item(file("a", "3", counter=3))])
        assert first + second + third == [1, 2, 3, 4]
        assert other_folder == [1]
        assert index.max_seq(FOLDER) == 4
        entry = index.get(FOLDER, "a")
        assert entry is not None
        assert entry.seq == 4
    finally:
        index.close()


def test_a_replaced_top_row_does_not_give_its_seq_out_again(index: Index) -> None:
    index.put(FOLDER, [item(file("a", "1")), item(file("b", "1"))])
    index.put(FOLDER, [item(file("b", "2", counter=2)), item(file("b", "3", counter=3))])
    assert index.put(FOLDER, [item(file("c", "1"))]) == [5]


def test_the_last_item_for_a_path_in_one_put_wins(index: Index) -> None:
    seqs = index.put(FOLDER, [item(file("a", "old")), item(file("a", "new", counter=2))])
    assert seqs == [1, 2]
    entry = index.get(FOLDER, "a")
    assert entry is not None
    assert (entry.record, entry.seq) == (file("a", "new", counter=2), 2)
    assert index.find_blocks(FOLDER, [digest("old")]).get(digest("old")) is None
    assert index.find_blocks(FOLDER, [digest("new")]).get(digest("new")) == ("a", 0)


def test_since_pages_through_rows_in_seq_order_showing_replaced_rows_once(index: Index) -> None:
    index.put(FOLDER, [item(file(f"f{i}", str(i))) for i in range(10)])
    index.put(FOLDER, [item(file("f3", "again", counter=2))])
    pages, seq = [], 0
    while page := index.since(FOLDER, seq, limit=4):
        pages.append([e.record.path for e in page])
        seq = page[-1].seq
    assert pages == [["f0", "f1", "f2", "f4"], ["f5", "f6", "f7", "f8"], ["f9", "f3"]]
    assert seq == index.max_seq(FOLDER) == 11
    assert index.since("other", 0) == []


def test_entries_stream_every_row_of_the_folder_in_path_order(index: Index) -> None:
    paths = [f"d{i % 7}/f{i:05d}" for i in range(2 * PAGE + 3)] + ["z", "Z", "é", "a b"]
    index.put(FOLDER, [item(file(p)) for p in paths])
    index.put("other", [item(file("d0/zzz"))])
    assert [e.record.path for e in index.entries(FOLDER)] == sorted(paths)
    assert list(index.entries("empty")) == []


def test_blocks_are_found_where_a_live_file_holds_them(index: Index) -> None:
    index.put(FOLDER, [item(file("one", "x", "y", "x")),
                       item(FileRecord(RelPath("dir"), Kind.DIR, Vector.of({A: 1}), A))])
    assert index.find_blocks(FOLDER, [digest("y")]).get(digest("y")) == ("one", 1)
    assert index.find_blocks(FOLDER, [digest("x")]).get(digest("x")) in {("one", 0), ("one", 2)}
    assert index.find_blocks(FOLDER, [digest("nowhere")]).get(digest("nowhere")) is None
    assert index.find_blocks("other", [digest("y")]).get(digest("y")) is None


def test_blocks_whose_hashes_begin_alike_are_told_apart(index: Index) -> None:
    # The index of block hashes keys on their first 8 bytes (a smaller index, fewer pages
    # rewritten per transaction); the whole hash decides.
    one, two, absent = (b"\x07" * 8 + bytes([n]) * 24 for n in (1, 2, 3))
    index.put(FOLDER, [item(replace(file("one", "x"), blocks=(one,))),
                       item(replace(file("two", "x", "x"), blocks=(one, two)))])
    found = index.find_blocks(FOLDER, [two, absent, one])
    assert found.keys() == {one, two}
    assert found[two] == ("two", 1)
    assert found[one] in {("one", 0), ("two", 0)}


def test_the_rows_and_needs_of_a_batchs_paths_are_read_together(index: Index) -> None:
    paths = [f"d/{n:04}" for n in range(1200)]  # more than one query's worth
    index.put(FOLDER, [item(file(p, p)) for p in paths[::2]])
    index.add_needs(FOLDER, [Need(file(p, "new", counter=2), b"s", B) for p in paths[::3]])
    asked = [*paths, "nowhere", paths[0]]
    rows, needs = index.get_all(FOLDER, asked), index.needs_of(FOLDER, asked)
    assert rows == {p: index.get(FOLDER, p) for p in paths[::2]}
    assert needs == {p: index.need(FOLDER, p) for p in paths[::3]}
    assert index.get_all("other", asked) == index.needs_of("other", asked) == {}


def test_the_blocks_of_one_request_are_found_in_one_look_up(index: Index) -> None:
    index.put(FOLDER, [item(file("one", "x", "y", "x")), item(file("two", "z"))])
    asked = [digest("z"), digest("nowhere"), digest("x"), digest("z")]
    found = index.find_blocks(FOLDER, asked)
    assert found.keys() == {digest("z"), digest("x")}
    assert found[digest("z")] == ("two", 0)
    assert found[digest("x")] in {("one", 0), ("one", 2)}
    assert index.find_blocks("other", asked) == {}


def test_a_file_replaced_by_a_tombstone_no_longer_offers_its_blocks(index: Index) -> None:
    record = file("doomed", "x")
    index.put(FOLDER, [item(record)])
    index.put(FOLDER, [(record.tombstone(Vector.of({A: 2}), A), b"s", 0, 0)])
    assert index.find_blocks(FOLDER, [digest("x")]).get(digest("x")) is None


def test_a_renamed_file_offers_its_blocks_at_the_new_path(index: Index) -> None:
    old = file("old/name", "x", "y")
    index.put(FOLDER, [item(old)])
    index.put(FOLDER, [item(file("new/name", "x", "y")),
                       (old.tombstone(Vector.of({A: 2}), A), b"s", 0, 0)])
    assert index.find_blocks(FOLDER, [digest("x")]).get(digest("x")) == ("new/name", 0)
    assert index.find_blocks(FOLDER, [digest("y")]).get(digest("y")) == ("new/name", 1)


def test_changed_content_replaces_the_blocks_of_a_path(index: Index) -> None:
    index.put(FOLDER, [item(file("f", "x", "y"))])
    index.put(FOLDER, [item(file("f", "y", counter=2))])
    assert index.find_blocks(FOLDER, [digest("x")]).get(digest("x")) is None
    assert index.find_blocks(FOLDER, [digest("y")]).get(digest("y")) == ("f", 0)


def test_listing_conflict_copies_reads_them_not_the_whole_folder(index: Index) -> None:
    # `status` lists them on every call: in a 100k-file folder, a read of every row held the
    # index's lock for tens of milliseconds each time.
    copies = ["a.sync-conflict-20261203-101500-ABCDEF.txt",
              "d/b.sync-conflict-20261203-101501-ABCDEF"]

    def steps() -> int:
        done = [0]

        def count() -> int:
            done[0] += 1
            return 0

        index._db.set_progress_handler(count, 10)
        try:
            assert [e.record.path for e in index.conflict_copies(FOLDER)] == copies
        finally:
            index._db.set_progress_handler(None, 10)
        return done[0]

    index.put(FOLDER, [item(file(path, path)) for path in copies])
    few = steps()
    index.put(FOLDER, [item(file(f"bulk/{n:05}", "x")) for n in range(5000)])
    assert steps() < few + 5


def test_block_lookup_by_hash_is_indexed(index: Index, db_path: Path) -> None:
    plan = sql(db_path, f"EXPLAIN QUERY PLAN {FIND_BLOCK}", digest("x")[:8], digest("x"), FOLDER)
    assert any("USING INDEX blocks_by_hash" in row[-1] for row in plan), plan  # not a scan


def test_a_newer_need_replaces_the_older_and_needs_list_in_path_order(index: Index) -> None:
    index.add_needs(FOLDER, [Need(file("b", "1"), b"s1", B), Need(file("a", "1"), b"s2", B)])
    newer = Need(file("b", "2", counter=2, node=B), b"s3", A)
    index.add_needs(FOLDER, [newer])
    assert index.needs(FOLDER) == [Need(file("a", "1"), b"s2", B), newer]
    assert index.need(FOLDER, "b") == newer
    assert index.need(FOLDER, "c") is None
    assert index.needs(FOLDER, limit=1) == [Need(file("a", "1"), b"s2", B)]
    assert index.needs("other") == []


def test_dropping_a_given_need_keeps_a_newer_one_queued_since(index: Index) -> None:
    older, newer = Need(file("b", "1"), b"s1", B), Need(file("b", "2", counter=2), b"s2", B)
    index.add_needs(FOLDER, [newer])
    index.drop_need(FOLDER, "b", older.record)
    assert index.need(FOLDER, "b") == newer
    index.drop_need(FOLDER, "b", newer.record)
    assert index.need(FOLDER, "b") is None
    index.drop_need(FOLDER, "b", newer.record)  # nothing queued: nothing to do


def test_putting_the_needed_version_or_a_newer_one_drops_the_need(index: Index) -> None:
    index.add_needs(FOLDER, [Need(file(p, "1", counter=2), b"s", B) for p in "abcd"])
    index.put(FOLDER, [
        item(file("a", "1", counter=2)),  # the needed version itself
        item(file("b", "9", counter=3)),  # newer
        item(file("c", "0", counter=1)),  # older: still needed
        item(file("d", "0", node=B)),  # concurrent: still needed
    ])
    assert [n.record.path for n in index.needs(FOLDER)] == ["c", "d"]


def test_drop_need_and_need_totals(index: Index) -> None:
    tomb = file("t", "x").tombstone(Vector.of({A: 2}), A)
    index.add_needs(FOLDER, [Need(file("a", "1", "2"), b"s", B), Need(file("b", "1"), b"s", B),
                             Need(tomb, b"s", B)])
    assert index.need_totals(FOLDER) == (3, 300)
    index.drop_need(FOLDER, "a")
    index.drop_need(FOLDER, "never-needed")
    assert index.need_totals(FOLDER) == (2, 100)
    assert index.need_totals("other") == (0, 0)


def test_peer_seq_is_kept_per_peer_and_epoch_across_a_restart(db_path: Path) -> None:
    index = Index(db_path)
    assert index.peer_seq(FOLDER, B, "e1") == 0
    index.set_peer_seq(FOLDER, B, "e1", 10)
    index.set_peer_seq(FOLDER, B, "e1", 12)
    index.set_peer_seq(FOLDER, B, "e1", 11)  # a page judged after a notice took it further
    index.set_peer_seq(FOLDER, B, "e2", 3)
    index.close()
    index = Index(db_path)
    try:
        assert index.peer_seq(FOLDER, B, "e1") == 12
        assert index.peer_seq(FOLDER, B, "e2") == 3
        assert index.peer_seq(FOLDER, A, "e1") == 0
        assert index.peer_seq("other", B, "e1") == 0
    finally:
        index.close()


def test_a_notice_moves_a_peer_seq_only_from_where_what_it_holds_follows_on(
        index: Index) -> None:
    index.set_peer_seq(FOLDER, B, "e1", 10)
    assert not index.advance_peer_seq(FOLDER, B, "e1", 11, 20)  # row 11 was in none
    assert index.advance_peer_seq(FOLDER, B, "e1", 8, 20)  # rows 9 and 10 read twice
    assert not index.advance_peer_seq(FOLDER, B, "e1", 15, 18)  # read already
    assert index.advance_peer_seq(FOLDER, A, "e1", 0, 4)  # the start of A's index
    assert [index.peer_seq(FOLDER, p, "e1") for p in (B, A)] == [20, 4]
    with sqlite3.connect(index.path) as db:  # damaged: read from the start again
        db.execute("UPDATE peer_seq SET seq = 'x' WHERE peer = ?", (B,))
    assert not index.advance_peer_seq(FOLDER, B, "e1", 20, 30)
    index.set_peer_seq(FOLDER, B, "e1", 5)
    assert index.peer_seq(FOLDER, B, "e1") == 5


def test_meta_values_are_stored_and_replaced(index: Index) -> None:
    assert index.get_meta("epoch") is None
    index.set_meta("epoch", "one")
    index.set_meta("epoch", "two")
    assert index.get_meta("epoch") == "two"


def test_counts_exclude_tombstones(index: Index) -> None:
    index.put(FOLDER, [
        item(file("a", "1", "2")),
        item(FileRecord(RelPath("d"), Kind.DIR, Vector.of({A: 1}), A)),
        item(file("gone", "1").tombstone(Vector.of({A: 2}), A)),
    ])
    assert index.counts(FOLDER) == (2, 200)
    assert index.counts("other") == (0, 0)



def test_counts_follow_every_put_and_every_row_set_aside(index: Index) -> None:
    index.put(FOLDER, [item(file("a", "1", "2"))])
    assert index.counts(FOLDER) == (1, 200)
    index.put(FOLDER, [item(file("b", "1"))])
    assert index.counts(FOLDER) == (2, 300)
    index._db.execute("UPDATE files SET mode = 'rw-' WHERE path = 'b'")
    assert index.get(FOLDER, "b") is None  # read, found damaged, set aside
    assert index.counts(FOLDER) == (1, 200)


def counted(db_path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """The totals counted from the rows themselves, as status counted them before."""
    found = sql(db_path, "SELECT folder, 'files', count(*), sum(size) FROM files WHERE NOT deleted"
                " GROUP BY folder UNION ALL SELECT folder, 'need', count(*), sum(size) FROM need"
                " GROUP BY folder")
    return {(str(f), str(of)): (int(str(n)), int(str(b))) for f, of, n, b in found}


def totals(index: Index, folders: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
    return {key: value for folder in folders
            for key, value in [((folder, "files"), index.counts(folder)),
                               ((folder, "need"), index.need_totals(folder))] if value[0]}


OPS = st.lists(st.tuples(
    st.sampled_from(["file", "dir", "tombstone", "need", "need-deletion", "drop", "damage"]),
    st.sampled_from([FOLDER, "other"]), st.sampled_from("abc"), st.integers(0, 3)),
    max_size=25)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(OPS)
def test_status_totals_equal_a_count_of_the_rows_after_any_changes(
        tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, str, int]]) -> None:
    # Kept by triggers (a count read every row: 40 MB per status at 100k files), they must
    # follow every way a row comes, changes and goes: puts, tombstones, needs replaced,
    # needs dropped, damaged rows set aside.
    db_path = tmp_path_factory.mktemp("totals") / "index.db"
    index = Index(db_path)
    try:
        for op, folder, path, n in ops:
            record = file(path, *["x"] * n, counter=n + 1)
            if op == "file":
                index.put(folder, [item(record)])
            elif op == "dir":
                index.put(folder, [item(FileRecord(RelPath(path), Kind.DIR,
                                                   Vector.of({A: n + 1}), A))])
            elif op == "tombstone":
                index.put(folder, [item(record.tombstone(Vector.of({A: n + 9}), A))])
            elif op.startswith("need"):
                deleted = op == "need-deletion"
                needed = record.tombstone(Vector.of({B: n + 1}), B) if deleted else record
                index.add_needs(folder, [Need(needed, b"s", B)])
            elif op == "drop":
                index.drop_need(folder, path)
            else:
                for table in ("files", "need"):
                    damage(db_path, table, path, DAMAGE["bad-kind"])
                index.get_all(folder, [path])
                index.needs_of(folder, [path])
            assert totals(index, [FOLDER, "other"]) == counted(db_path)
    finally:
        index.close()


def test_totals_are_counted_again_when_the_file_was_not_closed_sound(db_path: Path) -> None:
    index = Index(db_path)
    index.put(FOLDER, [item(file("a", "1", "2")), item(file("b", "1"))])
    index.add_needs(FOLDER, [Need(file("c", "1", node=B), b"s", B)])
    index.close()
    sql(db_path, "UPDATE totals SET paths = 99, bytes = 1")  # changed from outside: no note
    index = Index(db_path)
    try:
        assert index.counts(FOLDER) == (2, 300)
        assert index.need_totals(FOLDER) == (1, 100)
    finally:
        index.close()


def test_an_index_from_before_the_totals_gets_them_counted(db_path: Path) -> None:
    index = Index(db_path)
    index.put(FOLDER, [item(file("a", "1", "2")), item(file("gone", "1").tombstone(
        Vector.of({A: 2}), A))])
    index.add_needs(FOLDER, [Need(file("c", "1", node=B), b"s", B)])
    index.close()
    for name in ("files_added", "files_removed", "files_changed", "need_added", "need_removed",
                 "need_changed"):
        sql(db_path, f"DROP TRIGGER {name}")
    sql(db_path, "DROP TABLE totals")
    sql(db_path, "DROP TABLE sig_heads")  # and what the later schema files add
    for table in ("files", "need", "losers", "held"):
        sql(db_path, f"ALTER TABLE {table} DROP COLUMN sig_head")
    sql(db_path, "PRAGMA user_version = 5")
    index = Index(db_path)
    try:
        assert index.counts(FOLDER) == (1, 200)
        assert index.need_totals(FOLDER) == (1, 100)
        index.put(FOLDER, [item(file("b", "1"))])
        assert index.counts(FOLDER) == (2, 300)
    finally:
        index.close()


def test_the_database_is_in_wal_mode(index: Index, db_path: Path) -> None:
    assert sql(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_schema_version_is_recorded_and_reopening_does_not_rerun_migrations(
    db_path: Path,
) -> None:
    latest = max(int(s.name[:3]) for s in files("meshsync.store").joinpath("schema").iterdir()
                 if s.name.endswith(".sql"))
    index = Index(db_path)
    index.put(FOLDER, [item(file("kept", "x"))])
    index.close()
    assert sql(db_path, "PRAGMA user_version") == [(latest,)]
    sql(db_path, "DROP TABLE meta")  # a re-run migration would bring it back
    Index(db_path).close()
    assert sql(db_path, "SELECT name FROM sqlite_master WHERE name = 'meta'") == []
    assert sql(db_path, "SELECT path FROM files") == [("kept",)]


def test_a_database_from_a_newer_meshsync_is_refused(db_path: Path) -> None:
    Index(db_path).close()
    sql(db_path, "PRAGMA user_version = 999")
    with pytest.raises(MeshsyncError, match="newer meshsync"):
        Index(db_path)


# -- damaged rows are set aside ----------------------------------------------------------------
DAMAGE = {
    "bad-kind": "kind = 'socket'",
    "bad-vector": "version = '{\"00000000000000aa\": '",
    "short-blocks": "blocks = X'0102'",
    "bytes-origin": "origin = X'05'",
}


def damage(db_path: Path, table: str, path: str, change: str) -> None:
    # The changes above are constants of this file, never input.
    sql(db_path, f"UPDATE {table} SET {change} WHERE path = ?", path)  # noqa: S608


def test_damaged_file_rows_are_set_aside_while_the_good_rows_still_read(
    index: Index, db_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    index.put(FOLDER, [item(file(p, p)) for p in ["a", *DAMAGE, "z"]])
    for path, change in DAMAGE.items():
        damage(db_path, "files", path, change)
    with caplog.at_level(logging.WARNING, logger="meshsync.index"):
        assert [e.record.path for e in index.entries(FOLDER)] == ["a", "z"]
    assert index.take_damaged(FOLDER) == set(DAMAGE)
    assert index.take_damaged(FOLDER) == set()  # handed over once
    assert [e.record.path for e in index.entries(FOLDER)] == ["a", "z"]
    assert index.take_damaged(FOLDER) == set()
    assert sql(db_path, "SELECT path FROM files ORDER BY path") == [("a",), ("z",)]
    assert sql(db_path, "SELECT count(*) FROM blocks") == [(2,)]  # theirs went with them
    assert index.find_blocks(FOLDER, [digest("bad-kind")]).get(digest("bad-kind")) is None
    assert sorted(r.getMessage() for r in caplog.records) == [
        "index: set aside a damaged files row of folder 'photos', path 'bad-kind' (kind 'socket'"
        " is none of file, dir, symlink); it is rebuilt from the folder and its peers",
        "index: set aside a damaged files row of folder 'photos', path 'bad-vector' (version is"
        " not a version vector: Expecting value: line 1 column 22 (char 21)); it is rebuilt from"
        " the folder and its peers",
        "index: set aside a damaged files row of folder 'photos', path 'bytes-origin' (origin is"
        " bytes, not str); it is rebuilt from the folder and its peers",
        "index: set aside a damaged files row of folder 'photos', path 'short-blocks' (blocks"
        " hold 2 bytes, not whole 32-byte digests); it is rebuilt from the folder and its peers",
    ]


def test_every_reader_skips_a_damaged_row(index: Index, db_path: Path) -> None:
    index.put(FOLDER, [item(file(p, p)) for p in ["d/good", "d/bad"]])
    damage(db_path, "files", "d/bad", DAMAGE["bad-kind"])
    assert index.get(FOLDER, "d/bad") is None
    damage(db_path, "files", "d/good", DAMAGE["bad-vector"])
    assert index.get_all(FOLDER, ["d/good", "d/bad"]) == {}
    assert index.take_damaged(FOLDER) == {"d/bad", "d/good"}
    index.put(FOLDER, [item(file("e", "e"))])
    damage(db_path, "files", "e", DAMAGE["short-blocks"])
    assert index.since(FOLDER, 0) == []
    assert index.conflict_copies(FOLDER) == []
    assert index.take_damaged(FOLDER) == {"e"}
    assert index.counts(FOLDER) == (0, 0)


def test_damaged_needs_and_losers_are_set_aside_too(index: Index, db_path: Path) -> None:
    needs = [Need(file(p, p, node=B), b"s", B) for p in ["n1", "n2", "n3"]]
    index.add_needs(FOLDER, needs)
    index.add_losers(FOLDER, [Need(file(p, p, node=B), b"s", B) for p in ["l1", "l2"]])
    damage(db_path, "need", "n1", DAMAGE["bad-kind"])
    damage(db_path, "need", "n2", DAMAGE["bytes-origin"])
    damage(db_path, "losers", "l1", DAMAGE["short-blocks"])
    assert index.need(FOLDER, "n1") is None
    assert index.needs(FOLDER) == [needs[2]]
    assert [n.record.path for n in index.losers(FOLDER)] == ["l2"]
    assert index.take_damaged(FOLDER) == {"n1", "n2", "l1"}
    assert index.need_totals(FOLDER) == (1, 100)
    assert sql(db_path, "SELECT path FROM losers") == [("l2",)]


def test_a_damaged_need_read_inside_a_write_is_set_aside(index: Index, db_path: Path) -> None:
    index.add_needs(FOLDER, [Need(file(p, p, node=B), b"s", B) for p in ["a", "b"]])
    damage(db_path, "need", "a", DAMAGE["bad-vector"])
    damage(db_path, "need", "b", DAMAGE["bad-kind"])
    assert index.put(FOLDER, [item(file("a", "a"))]) == [1]  # reads a's need to drop it
    index.drop_need(FOLDER, "b", file("b", "b", node=B))  # reads b's to compare it
    assert index.take_damaged(FOLDER) == {"a", "b"}
    assert sql(db_path, "SELECT count(*) FROM need") == [(0,)]
    assert index.get(FOLDER, "a") is not None


def test_a_page_wholly_damaged_does_not_end_a_read(index: Index, db_path: Path) -> None:
    index.put(FOLDER, [item(file(f"f{i:02d}")) for i in range(10)])
    sql(db_path, "UPDATE files SET kind = 'socket' WHERE seq <= 4")
    assert [e.seq for e in index.since(FOLDER, 0, limit=4)] == [5, 6, 7, 8]
    sql(db_path, "UPDATE files SET kind = 'socket' WHERE seq IN (5, 6, 7, 8)")
    assert [e.record.path for e in index.entries(FOLDER)] == ["f08", "f09"]
    assert index.take_damaged(FOLDER) == {f"f{i:02d}" for i in range(8)}


def test_entries_stream_past_whole_pages_of_damaged_rows(index: Index, db_path: Path) -> None:
    index.put(FOLDER, [item(file(f"{i:05d}")) for i in range(2 * PAGE + 5)])
    sql(db_path, "UPDATE files SET kind = 'socket' WHERE seq <= ?", PAGE + 3)
    assert sum(1 for _ in index.entries(FOLDER)) == PAGE + 2
    assert len(index.take_damaged(FOLDER)) == PAGE + 3


def test_a_damaged_row_is_logged_with_its_path_escaped_and_the_log_is_bounded(
    index: Index, db_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    index.put(FOLDER, [item(file("evil\x1b[2J\nname"))])
    index.put(FOLDER, [item(file(f"many/{i}")) for i in range(100)])
    sql(db_path, "UPDATE files SET kind = 'socket'")
    with caplog.at_level(logging.WARNING, logger="meshsync.index"):
        assert list(index.entries(FOLDER)) == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == LOGGED_ROWS + 1
    assert "path 'evil\\x1b[2J\\nname'" in lines[0]
    assert not any("\x1b" in x or "\n" in x for x in lines)
    assert lines[-1] == (f"index: set aside {101 - LOGGED_ROWS} more damaged files rows of"
                         " folder 'photos'")
    assert len(index.take_damaged(FOLDER)) == 101


def test_a_damaged_path_no_folder_can_hold_is_removed_but_not_handed_on(
    index: Index, db_path: Path,
) -> None:
    index.put(FOLDER, [item(file("x")), item(file("y"))])
    sql(db_path, "UPDATE files SET path = '../escape', kind = 'socket' WHERE path = 'x'")
    sql(db_path, "UPDATE files SET path = X'00ff' WHERE path = 'y'")
    assert list(index.entries(FOLDER)) == []
    assert index.take_damaged(FOLDER) == set()
    assert sql(db_path, "SELECT count(*) FROM files") == [(0,)]


def test_threads_reading_the_same_damaged_rows_set_each_aside_once(
    index: Index, db_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    index.put(FOLDER, [item(file(f"f{i:03d}", str(i))) for i in range(300)])
    sql(db_path, "UPDATE files SET version = 'x' WHERE seq % 3 = 0")
    start = threading.Barrier(8)

    def read(_: int) -> int:
        start.wait()
        return sum(1 for _ in index.entries(FOLDER))

    with caplog.at_level(logging.WARNING, logger="meshsync.index"), ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(read, range(8)))
    assert counts == [200] * 8
    assert len(index.take_damaged(FOLDER)) == 100
    one_by_one = [r for r in caplog.records if "more damaged" not in r.getMessage()]
    assert len(one_by_one) == LOGGED_ROWS


# -- a damaged file is set aside ---------------------------------------------------------------
def test_a_file_that_is_not_a_database_is_moved_aside_for_a_fresh_index(
    tmp_path: Path, db_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    db_path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    Path(f"{db_path}-wal").write_bytes(b"nor is this a log")
    with caplog.at_level(logging.WARNING, logger="meshsync.index"):
        index = Index(db_path)
    try:
        index.put(FOLDER, [item(file("a", "x"))])
        assert [e.record.path for e in index.entries(FOLDER)] == ["a"]
    finally:
        index.close()
    (aside,) = tmp_path.glob("index.db.damaged-*[0-9]")
    assert aside.read_bytes().startswith(b"these are not the pages")
    assert Path(f"{aside}-wal").read_bytes() == b"nor is this a log"
    assert len(aside.name) == len("index.db.damaged-20261125-101500")
    assert [r.getMessage() for r in caplog.records] == [
        f"the index {db_path} is damaged (file is not a database): moved it to {aside.name};"
        " a new index is built from the folders and their peers"]


def test_a_database_failing_its_check_is_moved_aside(tmp_path: Path, db_path: Path) -> None:
    index = Index(db_path)
    index.put(FOLDER, [item(file(f"bulk/{i:05d}", str(i))) for i in range(3000)])
    index.close()
    page = sql(db_path, "PRAGMA page_size")[0][0]
    assert isinstance(page, int)
    with db_path.open("r+b") as f:  # scribble over pages in the middle, not the header
        f.seek(page * 10)
        f.write(b"\xa5" * page * 5)
    index = Index(db_path)
    try:
        assert list(index.entries(FOLDER)) == []
        assert index.max_seq(FOLDER) == 0
    finally:
        index.close()
    assert len(list(tmp_path.glob("index.db.damaged-*"))) == 1
    assert sql(db_path, "PRAGMA quick_check") == [("ok",)]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files whose whole check runs, each time it does."""
    checked: list[Path] = []
    check = database._check_file

    def counted(db: sqlite3.Connection, path: Path) -> None:
        checked.append(path)
        check(db, path)

    monkeypatch.setattr(database, "_check_file", counted)
    return checked


def test_an_index_closed_after_a_sound_run_opens_without_reading_it_whole(
        db_path: Path, checks: list[Path]) -> None:
    index = Index(db_path)
    index.put(FOLDER, [item(file("a", "x"))])
    index.close()
    checks.clear()
    index = Index(db_path)
    try:
        assert index.get(FOLDER, "a") is not None
    finally:
        index.close()
    assert checks == []


def test_an_index_is_checked_whole_after_a_crash_a_failed_run_or_a_write_since(
        db_path: Path, checks: list[Path]) -> None:
    Index(db_path).close()
    crashed = Index(db_path)  # never closed: as after kill -9 or a power cut
    crashed.put(FOLDER, [item(file("a", "x"))])
    Index(db_path).close()
    assert checks == [db_path] * 2, "the first open, and the one after the crash"
    crashed.close()

    failed = Index(db_path)
    with pytest.raises(sqlite3.Error):
        failed._rows("SELECT no_such_column FROM files", ())
    failed.close()
    Index(db_path).close()
    assert checks == [db_path] * 3, "not the failed run's open (crashed closed it sound), the next"

    other = sqlite3.connect(db_path)  # another program writes to it meanwhile
    with other:
        other.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    other.close()
    Index(db_path).close()
    assert checks == [db_path] * 4


# -- an index that cannot be written ------------------------------------------------------------
def in_private_mount(mount: Path, size: str, script: str) -> str:
    """Run `script` (given `mount` as argv[1]) with a tmpfs of `size` mounted there for it alone."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a private tmpfs needs root and unshare(1)")
    mount.mkdir()
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2'
         ' && exec "$@"', "sh", size, str(mount), sys.executable, "-c", script, str(mount)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60, check=False)
    if done.returncode and "Traceback" not in done.stderr:  # unshare or mount refused
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return done.stdout


READ_ONLY = """
import subprocess, sys
from pathlib import Path
from meshsync.store.index import Index, IndexUnusable
db = Path(sys.argv[1]) / "index.db"
Index(db).close()
subprocess.run(["mount", "-o", "remount,ro", sys.argv[1]], check=True)
try:
    Index(db).close()
except IndexUnusable as e:
    print(e)
"""


def test_a_read_only_index_is_refused_in_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # modes do not stop root: make the file system read-only instead
        mount = tmp_path / "ro"
        message = in_private_mount(mount, "1m", READ_ONLY)
        assert message == (f"the index {mount}/index.db is on a read-only file system: mount it"
                           " read-write, or set MESHSYNC_HOME to a writable directory\n")
    else:
        db = tmp_path / "index.db"
        Index(db).close()
        db.chmod(0o444)
        with pytest.raises(IndexUnusable) as refused:
            Index(db)
        assert str(refused.value) == (
            f"the index {db} is read-only: make index.db writable by this user"
            f" (chmod u+rw {db}) or remove the index to rebuild it")


DISK_FULL = """
import hashlib, sys
from pathlib import Path
from meshsync.core.paths import RelPath
from meshsync.core import signing
from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import Vector
from meshsync.store.index import Index, IndexUnusable
index = Index(Path(sys.argv[1]) / "index.db")
try:
    for n in range(10_000):
        blocks = tuple(hashlib.sha256(f"{n}.{i}".encode()).digest() for i in range(50))
        record = FileRecord(RelPath(f"f{n}"), Kind.FILE, Vector.of({"00000000000000aa": 1}),
                            "00000000000000aa", size=50 * 131072, blocks=blocks)
        index.put("photos", [(record, b"s" * 300, n, 1)])
except IndexUnusable as e:
    print(e)
    print(index.get("photos", "f0") is not None)  # what was stored still reads
index.close()
"""


def test_a_full_disk_mid_run_is_refused_in_one_line(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    output = in_private_mount(mount, "256k", DISK_FULL)
    assert output == (f"the disk holding the index {mount}/index.db is full: free some space and"
                      " start again\nTrue\n")


class ReadOnlyNow:
    """The index's connection once its disk refuses writes, which no test can do for real:
    a file system with files open for writing cannot be remounted read-only."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, statement: str, *args: object) -> sqlite3.Cursor:
        if statement.startswith("BEGIN"):
            error = sqlite3.OperationalError("attempt to write a readonly database")
            error.sqlite_errorcode = 8  # SQLITE_READONLY
            raise error
        return self._db.execute(statement, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_write_refused_mid_run_raises_index_unusable(
    index: Index, db_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    index.put(FOLDER, [item(file("a"))])
    monkeypatch.setattr(index, "_db", ReadOnlyNow(index._db))
    with pytest.raises(IndexUnusable) as refused:
        index.put(FOLDER, [item(file("b"))])
    assert str(refused.value) == (
        f"the index {db_path} is read-only (attempt to write a readonly database): make it"
        f" writable by this user (chmod u+rw {db_path}) or remove it to rebuild it")
    assert index.get(FOLDER, "a") is not None  # reading goes on


def test_an_index_in_a_missing_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "index.db"
    with pytest.raises(IndexUnusable) as refused:
        Index(db)
    assert str(refused.value) == (f"cannot open the index {db}: the directory {db.parent} does"
                                  " not exist")


def test_index_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        index = Index(tmp_path / "index.db")
        try:
            index.put(FOLDER, [item(file("a", "x"))])
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        finally:
            index.close()
    finally:
        os.umask(old)
    assert modes == {"index.db": 0o600, "index.db-wal": 0o600, "index.db-shm": 0o600}


def test_concurrent_puts_through_one_index_are_serialised(index: Index, db_path: Path) -> None:
    def work(n: int) -> list[int]:
        return [seq for i in range(25)
                for seq in index.put(FOLDER, [item(file(f"t{n}/{i}/{j}", f"{n}.{i}.{j}"))
                                              for j in range(8)])]

    with ThreadPoolExecutor(8) as pool:
        seqs = [seq for result in pool.map(work, range(8)) for seq in result]
    assert sorted(seqs) == list(range(1, 8 * 25 * 8 + 1))
    assert index.max_seq(FOLDER) == len(seqs)
    assert sum(1 for _ in index.entries(FOLDER)) == len(seqs)
    assert index.find_blocks(FOLDER, [digest("7.24.7")]).get(digest("7.24.7")) == ("t7/24/7", 0)
    assert sql(db_path, "PRAGMA integrity_check") == [("ok",)]


def test_two_indexes_on_one_new_file_from_two_threads_do_not_corrupt(db_path: Path) -> None:
    start = threading.Barrier(2)

    def work(n: int) -> list[int]:
        start.wait()
        index = Index(db_path)  # both create the schema at once
        try:
            return [seq for i in range(50)
                    for seq in index.put(FOLDER, [item(file(f"{n}/{i}", f"{n}.{i}"))])]
        finally:
            index.close()

    with ThreadPoolExecutor(2) as pool:
        seqs = [seq for result in pool.map(work, range(2)) for seq in result]
    assert sorted(seqs) == list(range(1, 101))
    assert sql(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert sql(db_path, "SELECT count(*) FROM files") == [(100,)]


def test_two_connections_opening_new_files_at_once_never_report_locked(tmp_path: Path) -> None:
    # Switching a new file to WAL races: SQLite answers "locked" at once to one side in about
    # one try in a hundred, so try often enough that the race shows.
    def race(db: Path) -> None:
        start = threading.Barrier(2)

        def open_close(_: int) -> None:
            start.wait()
            Index(db).close()

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(open_close, range(2)))
        assert sql(db, "PRAGMA journal_mode") == [("wal",)]

    for n in range(300):
        race(tmp_path / f"{n}.db")


def test_a_put_of_ten_thousand_records_stores_them_all(index: Index) -> None:
    records = [file(f"bulk/{i:05d}", f"{i}a", f"{i}b") for i in range(10_000)]
    assert index.put(FOLDER, [item(r, inode=i) for i, r in enumerate(records)]) == list(
        range(1, 10_001))
    assert index.counts(FOLDER) == (10_000, 2_000_000)
    assert [e.record for e in index.entries(FOLDER)] == records
    assert index.find_blocks(FOLDER, [digest("9999b")]).get(digest("9999b")) == ("bulk/09999", 1)
    assert [e.seq for e in index.since(FOLDER, 9_990)] == list(range(9_991, 10_001))


def run_signature(signer: runkey.RunSigner, record: FileRecord) -> bytes:
    return signer.sign(record.path.encode())


@cache
def slow_key() -> KeySigner:
    return KeySigner(rsa.generate_private_key(65537, 2048))


@cache
def run_signers() -> tuple[runkey.RunSigner, ...]:
    """Two runs of a node whose key is slow (RSA): each vouches for a key of its own."""
    return runkey.RunSigner(slow_key()), runkey.RunSigner(slow_key())


def test_vouched_signatures_keep_one_copy_of_their_head_and_read_back_whole(
    index: Index, db_path: Path,
) -> None:
    first, second = run_signers()
    records = [file(f"f{i:02}", str(i)) for i in range(50)]
    signed = [(r, run_signature(first if i % 2 else second, r)) for i, r in enumerate(records)]
    index.put(FOLDER, [(r, s, 7, 42) for r, s in signed])
    theirs = [Need(file(f"n{i:02}", str(i), node=B), sig, B) for i, (_, sig) in enumerate(signed)]
    index.add_needs(FOLDER, theirs)
    index.add_losers(FOLDER, theirs[:3])
    index.add_held(FOLDER, theirs[:3])
    assert [(e.record, e.signature) for e in index.entries(FOLDER)] == signed
    assert index.needs(FOLDER) == theirs
    assert index.losers(FOLDER) == index.held(FOLDER) == theirs[:3]
    for entry in index.entries(FOLDER):
        assert runkey.verify(entry.signature, entry.record.path.encode()) == slow_key().public_blob
    assert sql(db_path, "SELECT count(*) FROM sig_heads") == [(2,)]
    stored = sql(db_path, "SELECT sum(length(signature)) FROM files")[0][0]
    assert stored == 50 * signing.VOUCHED_TAIL
    # An SSHSIG, and anything else a peer sent as a signature, is kept as it came.
    plain = [item(file("plain", "p")), (file("odd", "o"), runkey.MAGIC + b"short", 7, 42)]
    index.put(FOLDER, plain)
    assert [(e.record, e.signature) for e in index.entries(FOLDER)][-2:] == [
        (r, s) for r, s, _, _ in reversed(plain)]


def test_a_row_whose_signature_head_is_gone_is_set_aside(index: Index, db_path: Path) -> None:
    signer = run_signers()[0]
    index.put(FOLDER, [(r, run_signature(signer, r), 7, 42) for r in (file("a"), file("b"))])
    sql(db_path, "UPDATE files SET sig_head = ? WHERE path = 'b'", digest("nothing"))
    assert [e.record.path for e in index.entries(FOLDER)] == ["a"]
    assert index.take_damaged(FOLDER) == {"b"}


def test_heads_no_row_uses_are_swept_once_many_have_come(
    index: Index, db_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A peer can send a new head with every version: the ones replaced must not pile up.
    monkeypatch.setattr("meshsync.store.index.HEADS_SWEPT", 4)
    index = Index(db_path)  # reads the bound when it opens
    try:
        kept = file("kept")
        index.put(FOLDER, [(kept, runkey.MAGIC + b"kept".ljust(80), 7, 42), item(file("plain"))])
        for n in range(12):
            sig = runkey.MAGIC + f"head {n}".encode().ljust(80)
            index.add_needs(FOLDER, [Need(file("churn", node=B), sig, B)])
            assert sql(db_path, "SELECT count(*) <= 2 + 4 FROM sig_heads") == [(1,)]
        assert index.get(FOLDER, "kept") == Entry(kept, runkey.MAGIC + b"kept".ljust(80),
                                                  1, 7, 42)
        assert index.need(FOLDER, "churn") == Need(file("churn", node=B),
                                                   runkey.MAGIC + b"head 11".ljust(80), B)
    finally:
        index.close()


def test_latest_lists_the_newest_times_first_below_a_path_if_asked(index: Index) -> None:
    def at(path: str, seconds: int) -> tuple[FileRecord, bytes, int, int]:
        return item(replace(file(path, path), mtime_ns=seconds * 10**9))

    index.put(FOLDER, [at("a", 4), at("d/x", 1), at("d/y", 3), at("e", 2)])
    index.put(FOLDER, [at("d/x", 5)])
    assert [e.record.path for e in index.latest(FOLDER, 10)] == ["d/x", "a", "d/y", "e"]
    assert [e.record.path for e in index.latest(FOLDER, 2)] == ["d/x", "a"]
    assert [e.record.path for e in index.latest(FOLDER, 10, "d")] == ["d/x", "d/y"]
