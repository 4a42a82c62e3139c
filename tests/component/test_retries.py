"""Versions that cannot be written yet: real SQLite and files, a mesh in the test, a fake clock.

What no member can supply, or what the disk refuses, is tried again after a wait that doubles
up to a cap; one attempt costs a request per member however many blocks are missing; status
lists each waiting path with why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from meshsync.core import conflicts, wire
from meshsync.core.ids import NodeId
from meshsync.core.lists import LIST_INLINE
from meshsync.core.paths import RelPath
from meshsync.core.records import BLOCK_SIZE, FileRecord, Kind
from meshsync.core.vclock import Vector
from meshsync.core.wire import (
    MAX_BLOCKS_PER_REQUEST,
    BlockRequest,
    FolderId,
    IndexRequest,
    Listless,
    Lists,
    Records,
    Signed,
)
from meshsync.fs import apply, scan
from meshsync.node import background, folder, puller, scanner, transfer
from meshsync.node.config import Folder
from meshsync.node.folder import FolderSync
from meshsync.node.judge import Origin
from meshsync.node.place import ECHOES_KEPT, Written
from meshsync.node.retry import JITTER, MAX_BACKOFF, RETRY_NEEDS
from meshsync.store.index import Index, Need
from tests.clock import FakeClock

ORIGIN = "0123456789abcdef"
FOLDER = FolderId("photos")


class Members:
    """The Mesh a folder sees: online members that hold `blocks` (none, unless a test adds)."""

    def __init__(self, count: int = 1, offline: int = 1) -> None:
        self.addresses = [f"10.0.0.{n + 1}:7777" for n in range(count)]
        self.offline = offline  # members that could hold a version, not online to ask
        self.blocks: dict[bytes, bytes] = {}
        self.requests: list[tuple[str, int]] = []  # (address, hashes asked)
        self.told: list[tuple[str, dict[str, object]]] = []  # events the folder told

    @property
    def me(self) -> NodeId:
        return NodeId(b"\x01" * 32)

    def tell(self, kind: str, **fields: object) -> None:
        self.told.append((kind, fields))

    def sign(self, message: bytes) -> bytes:
        return b"signed"

    def check_origin(self, origin: str, signature: bytes, message: bytes,
                     trusted: dict[bytes, bool]) -> Origin:
        return Origin.TRUSTED

    def untrusted_origin(self, origin: str) -> str:
        return f"made by {origin}"

    def members(self, folder: str) -> int:
        return len(self.addresses) + self.offline

    def sources(self, folder: str) -> list[tuple[str, str]]:
        return [(f"key{n}", address) for n, address in enumerate(self.addresses)]

    async def publish(self, notice: Records, to: str | None = None) -> None:
        pass

    async def fetch_blocks(self, address: str, request: BlockRequest) -> list[bytes | None]:
        assert 0 < len(request.hashes) <= MAX_BLOCKS_PER_REQUEST
        self.requests.append((address, len(request.hashes)))
        return [self.blocks.get(h) for h in request.hashes]

    async def fetch_index(self, address: str, request: IndexRequest) -> Records:
        raise ConnectionError("not in these tests")

    def advertised_seq(self, folder: str, key: str) -> int | None:
        return None  # as a member that says nothing of its index: asked every round

    def taken(self) -> list[tuple[str, int]]:
        """The requests made since the last call."""
        taken, self.requests = self.requests, []
        return taken


def content(label: str, blocks: int) -> list[bytes]:
    return [hashlib.sha256(f"{label} {n}".encode()).digest() * (BLOCK_SIZE // 32)
            for n in range(blocks)]


def record(path: str, data: list[bytes], counter: int = 1) -> FileRecord:
    return FileRecord(RelPath(path), Kind.FILE, Vector.of({ORIGIN: counter}), ORIGIN,
                      size=sum(map(len, data)), mode=0o644, mtime_ns=1_700_000_000 * 10**9,
                      blocks=tuple(hashlib.sha256(b).digest() for b in data))


def unheld(path: str, blocks: int, counter: int = 1) -> FileRecord:
    """A file of `blocks` blocks whose contents nobody has (only their hashes are made)."""
    hashes = tuple(hashlib.sha256(f"{path} {counter} {n}".encode()).digest()
                   for n in range(blocks))
    return FileRecord(RelPath(path), Kind.FILE, Vector.of({ORIGIN: counter}), ORIGIN,
                      size=blocks * BLOCK_SIZE, mode=0o644, mtime_ns=1_700_000_000 * 10**9,
                      blocks=hashes)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    opened = Index(tmp_path / "index.db")
    yield opened
    opened.close()


def folder_sync(tmp_path: Path, index: Index, mesh: Members, clock: FakeClock) -> FolderSync:
    root = tmp_path / "photos"
    (root / ".meshsync").mkdir(parents=True)
    sync = FolderSync(Folder(FOLDER, root), index, mesh, "epoch", clock=clock)
    sync.scanned = True  # as after the first scan, which these tests do not run
    return sync


def queue(index: Index, *records: FileRecord) -> None:
    index.add_needs(FOLDER, [Need(r, b"sig:" + r.path.encode(), "key0") for r in records])


def doubled(attempts: int) -> float:
    return min(RETRY_NEEDS * 2.0 ** (attempts - 1), MAX_BACKOFF)


async def test_a_version_no_member_can_supply_waits_twice_as_long_after_each_attempt_up_to_a_cap(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, unheld("film.mkv", 5))
    waits = []
    for _ in range(10):
        wait = await sync.apply_due()
        assert wait is not None
        assert mesh.taken(), "each attempt asks again"
        # Before it is due, a pass (the scanner wakes the loop every few seconds) asks nothing.
        clock.t += wait / 2
        assert await sync.apply_due() == pytest.approx(wait / 2)
        assert not mesh.taken()
        clock.wait_out(wait / 2)
        waits.append(wait)
    for attempt, wait in enumerate(waits, 1):
        assert doubled(attempt) * (1 - JITTER) <= wait <= doubled(attempt)
    assert doubled(10) == MAX_BACKOFF, "ten attempts reach the cap"
    assert not (tmp_path / "photos" / "film.mkv").exists()


async def test_an_attempt_at_a_100000_block_version_no_member_has_asks_each_member_once(
        tmp_path: Path, index: Index, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = Members(count=3)
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, unheld("disk.img", 100_000))
    opened: list[str] = []
    real_open = apply.Incoming.open

    def counted_open(root: Path, r: FileRecord,
                     dirs: scan.Directories | None = None) -> apply.Incoming:
        opened.append(r.path)
        return real_open(root, r, dirs)

    monkeypatch.setattr(apply.Incoming, "open", counted_open)

    wait = await sync.apply_due()
    assert sorted(address for address, _ in mesh.taken()) == sorted(mesh.addresses)
    assert opened == ["disk.img"]
    for _ in range(3):
        assert wait is not None
        clock.wait_out(wait)
        wait = await sync.apply_due()
        requests = mesh.taken()
        assert sorted(address for address, _ in requests) == sorted(mesh.addresses)
        assert all(hashes <= MAX_BLOCKS_PER_REQUEST for _, hashes in requests)
    assert opened == ["disk.img"], "nothing changed here: its temp file is not read again"
    assert sync.status()["waiting"][0]["reason"] == (
        "no member has all of its blocks (100000 of 100000 missing)")


async def test_a_waiting_version_is_opened_again_once_a_member_has_some_of_what_it_lacks(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members(count=2)
    sync = folder_sync(tmp_path, index, mesh, clock)
    data = content("song", 200)
    queue(index, record("song.flac", data))
    wait = await sync.apply_due()
    assert wait is not None
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in data}
    clock.wait_out(wait)
    assert await sync.apply_due() is None
    assert (tmp_path / "photos" / "song.flac").read_bytes() == b"".join(data)
    assert sync.status()["waiting"] == []


async def test_a_member_with_only_the_first_blocks_is_not_asked_for_the_rest_again_and_again(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    data = content("tape", 1000)
    queue(index, record("tape.tar", data))
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in data[:MAX_BLOCKS_PER_REQUEST]}
    await sync.apply_due()
    # What it had, then the requests under way when it ran out (the window had opened to two
    # after the first came back whole): not one per request's worth of the other 936 blocks.
    assert len(mesh.taken()) == 3
    assert sync.status()["waiting"][0]["reason"] == (
        f"no member has all of its blocks ({1000 - MAX_BLOCKS_PER_REQUEST} of 1000 missing)")


async def test_a_big_file_held_by_every_member_is_fetched_from_all_of_them_in_turn(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members(count=3)
    sync = folder_sync(tmp_path, index, mesh, clock)
    data = content("video", 12 * MAX_BLOCKS_PER_REQUEST)
    queue(index, record("video.mkv", data))
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in data}
    await sync.apply_due()
    assert (tmp_path / "photos" / "video.mkv").read_bytes() == b"".join(data)
    served = Counter(address for address, _ in mesh.taken())
    assert served == {address: 4 for address in mesh.addresses}


async def test_blocks_a_member_no_longer_holds_as_hashed_are_set_aside_and_fetched_elsewhere(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # A member serves its blocks as its files hold them now, unchecked: one edited since it
    # was indexed answers with other bytes, which must never reach the file written here.
    data = content("db", 3 * MAX_BLOCKS_PER_REQUEST)

    class Edited(Members):
        async def fetch_blocks(self, address: str, request: BlockRequest) -> list[bytes | None]:
            got = await super().fetch_blocks(address, request)
            if address != self.addresses[0]:
                return got
            return [b and bytes(reversed(b)) for b in got]  # same lengths, other bytes

    mesh = Edited(count=2)
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in data}
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, record("app.db", data))
    await sync.apply_due()
    assert (tmp_path / "photos" / "app.db").read_bytes() == b"".join(data)
    assert {address for address, _ in mesh.taken()} == set(mesh.addresses)


async def test_status_lists_a_waiting_path_with_its_reason_and_the_folder_says_held_back(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    data = content("doc", 5)
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in data[:2]}
    queue(index, record("doc.pdf", data), *(unheld(f"more/{n:03}.bin", 1) for n in range(120)))
    (tmp_path / "photos" / "more").mkdir()
    wait = await sync.apply_due()
    assert wait is not None
    clock.t += 1.0

    status = sync.status()
    assert status["state"] == "held back", "nothing it needs can be written now"
    assert status["waiting_count"] == 121
    assert status["held_back_count"] == 121
    assert len(status["held_back"]) == 100
    assert status["held_back"][0]["cause"] == "no member has it"
    assert len(status["waiting"]) == 100
    first = status["waiting"][0]
    assert first["path"] == "doc.pdf"
    assert first["reason"] == "no member has all of its blocks (3 of 5 missing)"
    assert RETRY_NEEDS * (1 - JITTER) - 1.0 <= first["retry_in"] <= RETRY_NEEDS - 1.0


async def test_a_new_version_of_a_waiting_path_is_tried_at_once_and_its_wait_starts_afresh(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, unheld("clip.mov", 3))
    waits = []
    for _ in range(4):
        wait = await sync.apply_due()
        assert wait is not None
        waits.append(wait)
        clock.wait_out(wait)
    assert waits[-1] >= doubled(4) * (1 - JITTER)
    mesh.taken()

    clock.t -= 1.0  # the old version is not due yet; the new one is
    queue(index, unheld("clip.mov", 3, counter=2))
    wait = await sync.apply_due()
    assert mesh.taken()
    assert wait is not None
    assert wait <= RETRY_NEEDS


async def test_retry_now_tries_every_waiting_path_at_once_and_starts_their_waits_afresh(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, unheld("a.bin", 2), unheld("b.bin", 70))
    for attempt in range(1, 6):
        await sync.apply_due()
        if attempt < 5:
            clock.t += doubled(attempt)  # both are due by then, whatever their jitter
    assert all(w["retry_in"] >= doubled(5) * (1 - JITTER) for w in sync.status()["waiting"])
    mesh.taken()

    sync.retry_now()
    wait = await sync.apply_due()
    assert len(mesh.taken()) == 1, "both probed in one request"
    assert wait is not None
    assert wait <= RETRY_NEEDS
    assert all(w["retry_in"] <= RETRY_NEEDS for w in sync.status()["waiting"])


async def test_a_write_the_disk_refuses_waits_and_says_why_then_goes_through(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    data = content("note", 2)
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in data}
    blocker = tmp_path / "photos" / "notes"
    blocker.write_text("a file where the directory should be")
    queue(index, record("notes/today.txt", data))

    waits = []
    for _ in range(3):
        wait = await sync.apply_due()
        assert wait is not None
        waits.append(wait)
        clock.wait_out(wait)
    assert waits[2] >= doubled(3) * (1 - JITTER)
    [waiting] = sync.status()["waiting"]
    assert waiting["path"] == "notes/today.txt"
    assert waiting["reason"].startswith("cannot write: ")

    blocker.unlink()
    blocker.mkdir()
    assert await sync.apply_due() is None
    assert (blocker / "today.txt").read_bytes() == b"".join(data)
    assert sync.status()["state"] == "in sync"
    assert sync.status()["waiting_count"] == 0


async def test_a_waiting_path_is_logged_once_per_window_with_anything_unprintable_escaped(
        tmp_path: Path, index: Index, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    evil = "evil\n2026-01-01 node: \x1b[31mforged.bin"
    queue(index, unheld(evil, 1))
    with caplog.at_level(logging.WARNING, logger=folder.log.name):
        for _ in range(4):  # 2 + 4 + 8 + 16 s: within one window
            wait = await sync.apply_due()
            assert wait is not None
            clock.wait_out(wait)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert repr(evil) in lines[0]
    assert "\n" not in lines[0]
    assert "\x1b" not in lines[0]


async def test_a_version_no_member_holds_any_more_is_given_up_once_every_member_was_asked(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members(count=2, offline=0)
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, unheld("gone.bin", 3), record("kept.txt", content("kept", 1)))
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in content("kept", 1)}
    wait = await sync.apply_due()
    assert wait is not None, "the first attempt waits: a member may have been writing it"
    clock.wait_out(wait)
    assert await sync.apply_due() is None
    assert index.need(FOLDER, RelPath("gone.bin")) is None
    assert sync.status()["state"] == "in sync"
    assert (tmp_path / "photos" / "kept.txt").exists()


async def test_a_version_an_offline_member_may_hold_is_waited_for(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Members(count=2, offline=1)
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, unheld("maybe.bin", 3))
    for _ in range(3):
        wait = await sync.apply_due()
        assert wait is not None
        clock.wait_out(wait)
    assert index.need(FOLDER, RelPath("maybe.bin")) is not None
    assert sync.status()["state"] == "held back"


class Publishing(Members):
    """Members that keep what the folder publishes: its records, and each notice with the
    member it was for (None: every member)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[FileRecord] = []
        self.notices: list[tuple[str | None, Records]] = []

    async def publish(self, notice: Records, to: str | None = None) -> None:
        self.published += [s.record for s in notice.records]
        self.notices.append((to, notice))


async def test_a_deletion_that_beats_ours_under_a_path_now_a_file_is_stored_as_a_resolution(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # Two concurrent deletions of a/f, and a file where the directory a was. Taking the
    # winner without merging the loser's vector would let a version the loser descends from
    # (an edit it deleted) beat ours on a node that never heard of the loser.
    mesh = Publishing()
    sync = folder_sync(tmp_path, index, mesh, clock)
    me = mesh.me.key
    (sync.root / "a").write_text("a file where the directory was")
    ours = FileRecord(RelPath("a/f"), Kind.FILE, Vector.of({me: 2, ORIGIN: 1}), me,
                      deleted=True, mtime_ns=1)
    index.put(FOLDER, [(ours, b"sig", 0, 0)])
    theirs = FileRecord(RelPath("a/f"), Kind.FILE, Vector.of({ORIGIN: 3}), ORIGIN,
                        deleted=True, mtime_ns=2)  # the newer deletion: it wins

    await sync.take("key0", [Signed(theirs, b"sig")])
    await sync.apply_due()

    entry = index.get(FOLDER, RelPath("a/f"))
    assert entry is not None
    assert (entry.record.deleted, entry.record.origin) == (True, me)
    assert entry.record.version == theirs.version.merge(ours.version)
    assert entry.record in mesh.published
    assert (sync.root / "a").read_text() == "a file where the directory was"


async def test_a_directory_made_again_is_no_new_version_and_takes_remote_changes(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # mv d elsewhere; mkdir d between two scans: the same version on a new inode. Were the
    # index to keep the old inode, every write to d would find "d changed on disk" for ever.
    sync = folder_sync(tmp_path, index, Members(), clock)
    (sync.root / "d").mkdir(mode=0o755)
    first = sync.scanner.find_changes(None, set(), set())
    assert [s.record.path for s in first.changes] == ["d"]
    (sync.root / "d").rename(tmp_path / "elsewhere")  # (its inode stays taken)
    (sync.root / "d").mkdir(mode=0o755)
    os.utime(sync.root / "d", ns=(10**18, 10**18))  # and another mtime: it moves with entries

    again = sync.scanner.find_changes(None, set(), set())

    assert again.changes == []
    entry = index.get(FOLDER, RelPath("d"))
    assert entry is not None
    assert entry.inode == (sync.root / "d").stat().st_ino
    ours = entry.record
    newer = FileRecord(ours.path, Kind.DIR, ours.version.bump(ORIGIN), ORIGIN, mode=0o700,
                       mtime_ns=ours.mtime_ns)
    queue(index, newer)
    assert await sync.apply_due() is None  # nothing waits: written at the first attempt
    assert (sync.root / "d").stat().st_mode & 0o777 == 0o700


async def test_a_copy_losing_to_another_version_of_itself_goes_to_its_tagged_name(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # Nodes that saw two losers of one node and second in different orders gave the plain
    # copy name to different contents: the one losing there keeps its tagged name.
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    plain = conflicts.copy_path(RelPath("f.txt"), 1_700_000_000 * 10**9, ORIGIN)
    (sync.root / plain).write_bytes(b"the first loser")
    sync.scanner.find_changes(None, set(), set())
    theirs = [b"the second loser"]
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in theirs}
    winner = record(plain, theirs)  # concurrent with ours, and newer
    queue(index, replace(winner, mtime_ns=(sync.root / plain).stat().st_mtime_ns + 10**9))

    assert await sync.apply_due() is None

    tag = hashlib.sha256(hashlib.sha256(b"the first loser").digest()).hexdigest()[:8]
    tagged = conflicts.copy_path(RelPath("f.txt"), 1_700_000_000 * 10**9, ORIGIN, tag)
    assert (sync.root / plain).read_bytes() == b"the second loser"
    assert (sync.root / tagged).read_bytes() == b"the first loser"


async def test_catching_up_reads_every_page_in_order_asking_for_the_next_while_judging_one(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    pages = {0: (["a", "b"], 2), 2: (["c"], 3), 3: ([], 3)}  # since -> (paths, its last seq)
    events: list[str] = []
    asked = asyncio.Event()

    class Paged(Members):
        async def fetch_index(self, address: str, request: IndexRequest) -> Records:
            events.append(f"ask after {request.since}")
            asked.set()
            paths, seq = pages[request.since]
            return Records(FOLDER, tuple(Signed(record(p, content(p, 1)), b"sig")
                                         for p in paths), "their epoch", seq)

    sync = folder_sync(tmp_path, index, Paged(), clock)

    async def take(source: str, records: Iterable[Signed]) -> list[Signed]:
        paths = [s.record.path for s in records]
        events.append("take " + ",".join(paths))
        if paths:  # judging takes a while: the next page is asked for meanwhile
            asked.clear()
            await asyncio.wait_for(asked.wait(), 5)
        return []

    sync.catch_up._take = take
    await sync.catch_up.catch_up("key0", "10.0.0.1:7777")

    # Each page is asked for before the one before it is judged to the end.
    assert events == ["ask after 0", "take a,b", "ask after 2", "take c", "ask after 3",
                      "take "]
    assert index.peer_seq(FOLDER, "key0", "their epoch") == 3


@pytest.mark.parametrize("held", ["the same list", "the list before"])
async def test_a_page_sent_without_a_long_list_we_lack_is_asked_for_again_with_its_lists(
        tmp_path: Path, index: Index, clock: FakeClock, held: str) -> None:
    # Pages send long lists as their digests: a reader mostly holds them already (it wrote
    # the version, or heard of it in a notice). One it does not hold, it asks for whole.
    before = unheld("disk.img", LIST_INLINE + 44)
    after = replace(unheld("disk.img", LIST_INLINE + 44, counter=2),
                    blocks=(*before.blocks[:-1], b"\x07" * 32))
    index.put(FOLDER, [(after if held == "the same list" else before, b"sig", 7, 42)])
    asked: list[tuple[int, bool]] = []

    class Paged(Members):
        async def fetch_index(self, address: str, request: IndexRequest) -> Records:
            asked.append((request.since, request.lists))
            page = Records(FOLDER, (Signed(after, b"sig"),) if request.since == 0 else (),
                           "their epoch", 1, Lists.WHOLE if request.lists else Lists.DIGESTS)
            return Records.from_json(page.to_json())  # as it comes off the wire

    sync = folder_sync(tmp_path, index, Paged(), clock)
    taken: list[Signed] = []

    async def take(source: str, records: Iterable[Signed]) -> list[Signed]:
        taken.extend(records)
        return []

    sync.catch_up._take = take
    await sync.catch_up.catch_up("key0", "10.0.0.1:7777")

    assert taken == [Signed(after, b"sig")]
    assert asked == ([(0, False), (1, False)] if held == "the same list" else
                     [(0, False), (0, True), (1, False)])


def test_records_without_lists_cost_a_bounded_rebuild_however_many_a_batch_names(
        tmp_path: Path, index: Index, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # Rebuilding hashes the lists held for each path: a batch naming one path 2000 times, or
    # more paths than the budget covers, must not make us hash gigabytes.
    count = LIST_INLINE + 1
    monkeypatch.setattr(folder, "REBUILT_PER_BATCH", 8 * count)  # four paths' worth
    held = [unheld(f"big/{n}", count) for n in range(8)]
    index.put(FOLDER, [(r, b"sig", 7, 42) for r in held])
    sync = folder_sync(tmp_path, index, Members(), clock)

    def sent(records: list[FileRecord]) -> tuple[Listless, ...]:
        page = Records(FOLDER, tuple(Signed(r, b"sig") for r in records), lists=Lists.DIGESTS)
        return Records.from_json(page.to_json()).listless

    rebuilt, lacking = sync.rebuild(sent([held[0]] * 2000))
    assert (rebuilt, lacking) == ([Signed(held[0], b"sig")], 1999)
    rebuilt, lacking = sync.rebuild(sent(held))
    assert len(rebuilt) == len(held) // 2  # each costs its held list and the one sent
    assert lacking == len(held) - len(rebuilt)


def test_a_file_is_hashed_again_only_if_it_could_change_unseen_in_its_mtimes_tick(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    sync = folder_sync(tmp_path, index, Members(), clock)
    root, now = tmp_path / "photos", time.time_ns()
    ages = {"a-second-ago": 10**9 + 123_456_789,  # fine-grained mtimes: a tick of a few ms
            # A file system that keeps seconds (FAT): the whole second nearest to 1 s ago, so
            # 0.5 s or more of its 2 s window is left for the scan to get to it.
            "whole-second": now - round((now - 10**9) / 10**9) * 10**9,
            "ahead": -(60 * 10**9) + 5}  # a clock that moved, or a peer's
    for name, age in ages.items():
        (root / name).write_bytes(name.encode())
        os.utime(root / name, ns=(now - age, now - age))
    (root / "big.img").write_bytes(bytes(scanner.WAIT_OUT))  # waits out its tick: hashed once
    found = sync.scanner.find_changes(None, set(), set())
    assert found.racy == {"whole-second", "ahead"}
    assert {s.record.path for s in found.changes} == {*ages, "big.img"}
    # Hashed again, the same content: no new version, nothing left to look at again.
    again = sync.scanner.find_changes(None, set(found.racy), set())
    assert (again.changes, again.racy) == ([], set())


def test_the_racy_window_is_the_mtimes_tick_with_room() -> None:
    fine, whole = 1_700_000_000_123_456_789, 1_700_000_000 * 10**9
    assert scanner.racy(fine, fine + 50_000_000)
    assert not scanner.racy(fine, fine + 150_000_000)
    assert scanner.racy(whole, whole + 1_900_000_000)
    assert not scanner.racy(whole, whole + 2_100_000_000)
    assert scanner.racy(fine, fine - 1)  # opened "before" its mtime: a clock moved


class Resting(Members):
    """A member whose index ends at `last`, and says so in its hellos; it counts the catch-up
    rounds (each asks who the sources are) and keeps the seq each page was asked after."""

    def __init__(self) -> None:
        super().__init__()
        self.last = 3
        self.asked: list[int] = []
        self.rounds = 0

    def sources(self, folder: str) -> list[tuple[str, str]]:
        self.rounds += 1
        return super().sources(folder)

    def advertised_seq(self, folder: str, key: str) -> int | None:
        return self.last

    async def fetch_index(self, address: str, request: IndexRequest) -> Records:
        self.asked.append(request.since)
        return Records(FOLDER, (), "their epoch", self.last)

    async def rounds_pass(self, count: int) -> None:
        until = self.rounds + count
        async with asyncio.timeout(10):
            while self.rounds < until:  # noqa: ASYNC110 (rounds are counted, not signalled)
                await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def catching_up(sync: FolderSync) -> AsyncIterator[None]:
    """The folder's catch-up running, a round every 10 ms, while the body runs."""
    sync.catch_up.every = 0.01
    running = asyncio.create_task(sync.catch_up.run())
    try:
        yield
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_catch_up_asks_a_member_again_only_once_its_hellos_say_its_index_moved_on(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Resting()
    sync = folder_sync(tmp_path, index, mesh, clock)
    async with catching_up(sync):
        await mesh.rounds_pass(5)
        assert mesh.asked == [0]  # at start; then its index has not moved: not asked again
        mesh.last = 7  # a change whose notice was lost: its next hello says seq 7
        await mesh.rounds_pass(5)
        assert mesh.asked == [0, 3]
        sync.catch_up.wake.set()  # it came online again: asked whatever its hellos say
        await mesh.rounds_pass(3)
        assert mesh.asked == [0, 3, 7]


async def test_a_small_file_is_written_while_a_big_one_is_still_being_fetched(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    big = content("video", 80)  # 10 MiB: over puller.BULK, so in a lane of its own
    small = content("note", 1)
    assert len(big) * BLOCK_SIZE > puller.BULK
    big_hashes = {hashlib.sha256(b).digest() for b in big}
    asked, go = asyncio.Event(), asyncio.Event()

    class Slow(Members):
        """Serves every block, those of the big file only once `go` is set."""

        async def fetch_blocks(self, address: str, request: BlockRequest) -> list[bytes | None]:
            if request.hashes[0] in big_hashes:
                asked.set()
                await go.wait()
            return await super().fetch_blocks(address, request)

    mesh = Slow()
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in [*big, *small]}
    sync = folder_sync(tmp_path, index, mesh, clock)
    root = tmp_path / "photos"

    async def until(path: Path) -> None:
        while not path.exists():  # noqa: ASYNC110, ASYNC240 (a file, not an event, is awaited)
            await asyncio.sleep(0.01)

    running = asyncio.create_task(sync.puller.run(lambda: True))
    queue(index, record("big.mkv", big))
    sync.puller.wake.set()
    async with asyncio.timeout(10):
        await asked.wait()
        queue(index, record("note.txt", small))
        sync.puller.wake.set()
        await until(root / "note.txt")
        assert not (root / "big.mkv").exists(), "the big file is still on its way"
        go.set()
        await until(root / "big.mkv")
    assert (root / "big.mkv").read_bytes() == b"".join(big)
    running.cancel()


async def test_a_big_files_blocks_are_written_on_threads_the_kernel_runs_after_the_rest(
        tmp_path: Path, index: Index, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # So that a small file changed while a GiB arrives is not kept waiting for a core.
    priority: dict[str, set[int]] = {}
    write_all = transfer._write_all

    def noted(found: list[tuple[transfer.Wanted, bytes]]) -> dict[RelPath, Exception]:
        for (incoming, _, _), _ in found:
            priority.setdefault(incoming.record.path, set()).add(
                os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return write_all(found)

    monkeypatch.setattr(transfer, "_write_all", noted)
    mesh = Members()
    big, small = content("video", 2 * MAX_BLOCKS_PER_REQUEST), content("note", 1)
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in [*big, *small]}
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, record("big.mkv", big), record("note.txt", small))
    await sync.apply_due()
    assert (tmp_path / "photos" / "big.mkv").read_bytes() == b"".join(big)
    assert (tmp_path / "photos" / "note.txt").read_bytes() == small[0]
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert priority == {"big.mkv": {min(19, ours + background.NICE)}, "note.txt": {ours}}


def test_blocks_asked_of_files_across_directories_come_each_from_its_own_file(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # Served a directory at a time: files of one directory, and of the ones around it, in any
    # order asked, one of them gone and one block unknown.
    sync = folder_sync(tmp_path, index, Members(), clock)
    root = tmp_path / "photos"
    files = {path: f"{path}\n".encode() * (1 + n * 5000) for n, path in enumerate(
        ["a/b.txt", "a/b/c.txt", "a/c.txt", "a/b/d/e.txt", "z.txt", "a/gone.txt"])}
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    sync.scanner.find_changes(None, set(), set())
    (root / "a" / "gone.txt").unlink()
    blocks = {(path, i): block for path, data in files.items()
              for i, block in enumerate(data[at : at + BLOCK_SIZE]
                                        for at in range(0, len(data), BLOCK_SIZE))}
    asked = sorted(blocks, key=lambda pb: hashlib.sha256(repr(pb).encode()).digest())

    served = sync.answer_blocks((*(hashlib.sha256(blocks[pb]).digest() for pb in asked),
                                 hashlib.sha256(b"nobody's").digest()))

    assert served == [None if path == "a/gone.txt" else blocks[path, i]
                      for path, i in asked] + [None]


async def test_a_big_file_renamed_elsewhere_is_copied_from_here_not_fetched(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # Renamed on another node: its new path's record and its old path's deletion come in one
    # pass. The big file waits in its lane; the deletion must wait for it, or its blocks go.
    mesh = Members()  # holds no block at all
    sync = folder_sync(tmp_path, index, mesh, clock)
    root = tmp_path / "photos"
    data = content("film", 80)
    (root / "old.mkv").write_bytes(b"".join(data))
    [old] = [s.record for s in sync.scanner.find_changes(None, set(), set()).changes]
    moved = replace(old, path=RelPath("new.mkv"), version=Vector.of({ORIGIN: 1}), origin=ORIGIN)
    queue(index, moved, old.tombstone(old.version.merge(Vector.of({ORIGIN: 2})), ORIGIN))

    running = asyncio.create_task(sync.puller.run(lambda: True))
    sync.puller.wake.set()
    async with asyncio.timeout(10):
        while sorted(p.name for p in root.iterdir()) != [".meshsync", "new.mkv"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    running.cancel()
    assert (root / "new.mkv").read_bytes() == b"".join(data)
    assert mesh.taken() == [], "every block came from the old file"


@pytest.mark.parametrize("racy", [False, True])
async def test_a_big_file_changed_in_one_block_fetches_that_block_and_copies_the_rest(
        tmp_path: Path, index: Index, clock: FakeClock, racy: bool) -> None:
    mesh = Members()
    sync = folder_sync(tmp_path, index, mesh, clock)
    path = tmp_path / "photos" / "disk.img"
    data = content("disk", 24)
    path.write_bytes(b"".join(data))
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    [ours] = [s.record for s in sync.scanner.find_changes(None, set(), set()).changes]
    changed = [*data[:5], content("edit", 1)[0], *data[6:]]
    theirs = replace(record("disk.img", changed), version=ours.version.merge(
        Vector.of({ORIGIN: 1})))
    mesh.blocks = {hashlib.sha256(b).digest(): b for b in changed}
    # Block 2 rewritten in the tick the scan hashed it in: size, mtime and inode stay.
    with path.open("r+b") as f:
        f.seek(2 * BLOCK_SIZE)
        f.write(bytes(BLOCK_SIZE))
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    if racy:  # as the scan says of a file it hashed in its tick, until it hashes it again
        sync.place.racy = frozenset({RelPath("disk.img")})
    queue(index, theirs)
    await sync.puller.apply_due()

    written = path.read_bytes()
    assert written[5 * BLOCK_SIZE : 6 * BLOCK_SIZE] == changed[5]
    if racy:  # read and checked, as any local block: the rewritten one is fetched
        assert written == b"".join(changed)
        assert sum(n for _, n in mesh.taken()) == 2
    else:  # copied unread on the stamp's word, as a scan takes it: only the new block came
        assert written[2 * BLOCK_SIZE : 3 * BLOCK_SIZE] == bytes(BLOCK_SIZE)
        assert written[:2 * BLOCK_SIZE] + written[3 * BLOCK_SIZE:] == b"".join(
            changed[:2] + changed[3:])
        assert sum(n for _, n in mesh.taken()) == 1


async def test_a_member_is_told_which_rows_hold_only_what_it_sent_so_its_catch_up_skips_them(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Publishing()
    told = mesh.notices
    files = {f"f{n}": content(f"f{n}", 1) for n in range(4)}
    mesh.blocks = {hashlib.sha256(b).digest(): b for data in files.values() for b in data}
    sync = folder_sync(tmp_path, index, mesh, clock)
    queue(index, *(record(path, files[path]) for path in ("f0", "f1")))  # from key0
    await sync.puller.apply_due()
    # Its rows 1 and 2 hold what key0 sent, as it sent it: a notice of them that leaves them
    # out, to key0 alone. Read in catch-up, key0 would judge each history.
    assert told == [("key0", Records(FOLDER, (), sync.catch_up.epoch, 2, since=0))]
    assert [e.record for e in index.since(FOLDER, 0)] == [record(p, files[p]) for p in ("f0", "f1")]

    # Rows that also hold another member's version, or a resolution, are news to key0: none.
    told.clear()
    queue(index, record("f2", files["f2"]))
    index.add_needs(FOLDER, [Need(record("f3", files["f3"]), b"sig:f3", "key1")])
    await sync.puller.apply_due()
    assert told == []
    assert [e.record.path for e in index.since(FOLDER, 2)] == ["f2", "f3"]


async def test_the_watcher_reporting_what_sync_wrote_costs_no_scan_but_an_edit_since_is_found(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # A first sync of 100k files would otherwise scan each file again as the watcher reports it.
    mesh = Members()
    files = {f"f{n}": content(f"f{n}", 1) for n in range(3)}
    mesh.blocks = {hashlib.sha256(b).digest(): b for data in files.values() for b in data}
    sync = folder_sync(tmp_path, index, mesh, clock)
    root = tmp_path / "photos"
    made = FileRecord(RelPath("d"), Kind.DIR, Vector.of({ORIGIN: 1}), ORIGIN, mode=0o755,
                      mtime_ns=1_700_000_000 * 10**9)
    queue(index, made, *(record(path, data) for path, data in files.items()))
    await sync.puller.apply_due()
    assert sorted(p.name for p in root.iterdir()) == [".meshsync", "d", "f0", "f1", "f2"]
    (root / "f1").write_bytes(b"edited before the watcher said anything")
    # A directory sync made may be filled before the watcher watches it: it is scanned whole.
    (root / "d" / "new").write_bytes(b"made in it at once")

    found = sync.scanner.find_changes({RelPath(p) for p in ("f0", "f1", "f2", "d")}, set(), set())
    assert sorted(s.record.path for s in found.changes) == ["d/new", "f1"]
    assert found.entries == 3, "f1, d and d/new looked at; f0 and f2 are as sync left them"
    again = sync.scanner.find_changes({RelPath("f0")}, set(), set())
    assert (again.changes, again.entries) == ([], 1), "an echo is taken once, then scanned"


def test_what_sync_wrote_is_remembered_for_the_watcher_up_to_a_bound(tmp_path: Path) -> None:
    written = Written()
    written.add((RelPath(f"gone{n}"), None) for n in range(ECHOES_KEPT + 1))
    written.add([(RelPath("last"), None)])  # past the bound: the rest are forgotten
    assert len(written.left) == 1
    assert written.echoes(tmp_path, [RelPath("gone0"), RelPath("last")]) == {"last"}


async def test_a_scans_notices_say_which_rows_of_its_index_each_holds(
        tmp_path: Path, index: Index, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = Publishing()
    index.put(FOLDER, [(record(p, content(p, 1)), b"sig", 0, 0) for p in ("old1", "old2")])
    monkeypatch.setattr(wire, "MAX_BATCH_RECORDS", 2)  # three changes: two notices
    sync = folder_sync(tmp_path, index, mesh, clock)
    root = tmp_path / "photos"
    for name in ("a", "b", "c"):
        (root / name).write_bytes(name.encode())
    await sync._scan({RelPath("a"), RelPath("b"), RelPath("c")}, set(), set())

    sent = [notice for _, notice in mesh.notices]
    assert [(n.epoch, n.since, n.seq) for n in sent] == [(sync.catch_up.epoch, 2, 4),
                                                        (sync.catch_up.epoch, 4, 5)]
    for notice in sent:  # exactly the rows a page after `since` up to `seq` would hold
        rows = [e.record for e in index.since(FOLDER, notice.since) if e.seq <= notice.seq]
        assert [s.record for s in notice.records] == rows


async def test_a_long_scan_stores_and_announces_in_stores_that_grow(
        tmp_path: Path, index: Index, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = Publishing()
    monkeypatch.setattr(scanner, "STORE_FIRST", 2)
    monkeypatch.setattr(scanner, "STORE_MOST", 8)
    monkeypatch.setattr(scanner, "STORE_WITHIN", 3600.0)  # by count alone
    sync = folder_sync(tmp_path, index, mesh, clock)
    names = [f"f{n:02}" for n in range(30)]
    for name in names:
        (tmp_path / "photos" / name).write_bytes(name.encode())
    await sync._scan({RelPath(n) for n in names}, set(), set())

    sent = [notice for _, notice in mesh.notices]
    # The first peers hear of is small, so they start at once; each next twice as big, up to
    # the most, so a scan of many files costs few transactions (and writes) in the index.
    assert [len(n.records) for n in sent] == [2, 4, 8, 8, 8]
    assert sorted(s.record.path for n in sent for s in n.records) == names
    assert [(n.since, n.seq) for n in sent] == [(0, 2), (2, 6), (6, 14), (14, 22), (22, 30)]


async def test_a_notice_holding_the_rows_after_those_read_spares_catch_up_asking_for_them(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    mesh = Resting()
    sync = folder_sync(tmp_path, index, mesh, clock)
    async with catching_up(sync):
        await mesh.rounds_pass(3)
        assert mesh.asked == [0]
        # Its notice held rows 4 to 7, right after the 3 read, and its hellos say 9: the rest
        # is on its way in notices, as long as they keep following on.
        await sync.catch_up.covered("key0", "their epoch", 3, 7)
        mesh.last = 9
        await mesh.rounds_pass(5)
        assert mesh.asked == [0]
        clock.wait_out(sync.catch_up.every)  # none followed on since: read from 7
        await mesh.rounds_pass(3)
        assert mesh.asked == [0, 7]
        # One holding 11 and 12 (row 10 came in none: a notice lost) is not read past: asked.
        await sync.catch_up.covered("key0", "their epoch", 10, 12)
        mesh.last = 12
        await mesh.rounds_pass(3)
        assert mesh.asked == [0, 7, 9]
        # A notice of an index we did not read it in keeps nothing, however it names it.
        for epoch in ("another epoch", ""):
            await sync.catch_up.covered("key0", epoch, 0, 20)
            assert index.peer_seq(FOLDER, "key0", epoch) == 0
        assert index.peer_seq(FOLDER, "key0", "their epoch") == 12


class Growing(Members):
    """A member whose index pages are `pages` (since -> the paths of the page after it, its
    rows one a path), noting each `since` asked for."""

    def __init__(self, pages: dict[int, list[str]]) -> None:
        super().__init__()
        self.pages = pages
        self.asked: list[int] = []

    async def fetch_index(self, address: str, request: IndexRequest) -> Records:
        self.asked.append(request.since)
        paths = self.pages[request.since]
        return Records(FOLDER, tuple(Signed(record(p, content(p, 1)), b"sig") for p in paths),
                       "their epoch", request.since + len(paths))


async def test_catching_up_stops_reading_pages_once_the_members_notices_bring_the_rest(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # A member scanning a big tree: its index grows as fast as we read it, and every page
    # would hold what its notices bring too.
    member = Growing({0: ["a", "b"], 2: ["c"], 3: ["d"], 4: ["e"], 5: []})
    sync = folder_sync(tmp_path, index, member, clock)

    async def take(source: str, records: Iterable[Signed]) -> list[Signed]:
        if [s.record.path for s in records] == ["c"]:  # meanwhile, a notice of rows 3 to 5
            await sync.catch_up.covered("key0", "their epoch", 2, 5)
        return []

    sync.catch_up._take = take
    await sync.catch_up.catch_up("key0", "10.0.0.1:7777")

    assert member.asked == [0, 2, 3], "the page after 3 was on its way; none after it was asked for"
    assert index.peer_seq(FOLDER, "key0", "their epoch") == 5


async def test_catching_up_asks_past_the_rows_notices_brought_though_they_did_not_follow_on(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    # A first sync: pages are read from the start while the member's notices of its newest
    # rows queue up behind our judging. Rows a notice brought are not asked for again.
    member = Growing({0: ["a", "b"], 2: ["c", "d"], 8: ["i"], 9: []})
    sync = folder_sync(tmp_path, index, member, clock)

    async def take(source: str, records: Iterable[Signed]) -> list[Signed]:
        if [s.record.path for s in records] == ["a", "b"]:  # a notice of rows 5 to 8 was taken
            await sync.catch_up.covered("key0", "their epoch", 4, 8)
        return []

    sync.catch_up._take = take
    await sync.catch_up.catch_up("key0", "10.0.0.1:7777")

    assert member.asked == [0, 2, 8, 9], "rows 5 to 8 came in the notice"
    assert index.peer_seq(FOLDER, "key0", "their epoch") == 9
    # A notice of rows read already brings nothing: the exchange leaves it unjudged.
    assert await sync.catch_up.read_past("key0", "their epoch", 9)
    assert not await sync.catch_up.read_past("key0", "their epoch", 10)
    assert not await sync.catch_up.read_past("key0", "another epoch", 3)


def test_a_scan_that_reads_files_ahead_hashes_each_as_it_is_and_leaves_no_file_open(
        tmp_path: Path, index: Index, clock: FakeClock) -> None:
    sync = folder_sync(tmp_path, index, Members(), clock)
    for n in range(700):  # chunks enough to be read ahead, and more than are held open
        (sync.root / f"f{n:03d}").write_text(f"first {n}")
    open_before = len(list(Path("/proc/self/fd").iterdir()))
    first = sync.scanner.find_changes(None, set(), set())
    for n in range(0, 700, 7):  # changed while the index says otherwise
        (sync.root / f"f{n:03d}").write_text(f"second {n}")
    again = sync.scanner.find_changes(None, set(), set())

    assert len(first.changes) == 700
    assert {s.record.path: s.record.blocks for s in again.changes} == {
        f"f{n:03d}": (hashlib.sha256(f"second {n}".encode()).digest(),)
        for n in range(0, 700, 7)}
    assert len(list(Path("/proc/self/fd").iterdir())) == open_before
