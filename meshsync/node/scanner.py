"""Local changes: what in the folder differs from the index becomes signed, stored versions."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from meshsync.core import plan
from meshsync.core.lists import Patch
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind
from meshsync.core.throttle import shown
from meshsync.core.vclock import Vector
from meshsync.core.wire import Signed
from meshsync.fs import scan
from meshsync.node.place import Place
from meshsync.store.index import Entry

log = logging.getLogger("meshsync.folder")

# File systems stamp mtimes in coarse ticks, so a file rewritten in place with the same size
# in the tick it was hashed in can look unchanged. One whose hashing began that soon after its
# mtime is hashed again once it is older (git calls these entries racy). The tick is a clock
# tick (1 to 10 ms) where mtimes have a fraction of a second (ext4, XFS, btrfs, exFAT), up to
# 2 s where they are whole seconds (FAT, HFS+, ext3): a window for each, with room to spare.
# Fresh by the old rule (2 s from the scan's start, for every file), each new big file was
# hashed twice, and the second hash held up the small files changed after it.
RACY = 2.0
RACY_FINE = 0.1
WAIT_OUT = 8 << 20  # bytes: a file this big waits out a fine tick, not hashed twice
# A long scan stores and announces what it found so far this often: peers start fetching a
# big tree's first files while the rest is hashed, and a crash loses little work. Each store
# is a transaction that rewrites every index page it touches, and the keys of the index of
# block hashes are random: a store of n versions touches some n of its pages, up to all of
# them. So the stores grow, the first small (files flow at once) and each next one twice as
# big: a first index of 100k files wrote 447 MB through 100 stores, 161 MB through a few.
STORE_FIRST = 1000  # new versions
STORE_MOST = 64_000
STORE_WITHIN = 2.0  # seconds

# Paths are looked at in chunks of consecutive paths (a directory's files share an open
# directory). Reading and hashing let go of the GIL, so a chunk with much to hash goes to a pool
# of threads, a few chunks ahead of the storing, in order. The rest is Python holding the GIL:
# a chunk of small files is looked at in the scanning thread, as threads fighting for the GIL
# made 30k small files take 13.9 s where one thread takes 7.0.
CHUNK = 64
WORKERS = min(4, os.cpu_count() or 1)
POOLED = 16 << 20  # bytes to hash in a chunk for it to go to the pool: 256 KiB a file
AHEAD = 4  # chunks walked ahead of the one being looked at, their small files read ahead
READ_AHEAD = 256 << 10  # bytes: files up to this size are asked of the disk ahead
KEEP_OPEN = (AHEAD + 1) * CHUNK  # fds of files read ahead, held until they are hashed

_Done = tuple[FileRecord, bytes, int, int]  # an index item: record, signature, inode, dev
# New versions just stored, and the index seqs of the rows stored with them (theirs first).
Announce = Callable[[list[Signed], range], None]


class _State(Enum):
    SAME = "unchanged"
    UNSTABLE = "still being written"
    HELD = "the version held, its inode moved"
    NEW = "a new version"
    FRESH = "a new version, hashed so soon after its mtime that it is hashed again later"


_Looked = tuple[scan.Seen, _State, _Done | None]
_Chunk = tuple[list[scan.Seen], set[RelPath]]  # consecutive paths, and those that may differ


@dataclass(slots=True)
class Progress:
    """How far the scan under way has come: entries and file bytes looked at, of those found.

    Written by the scanning thread, read by status on the loop: each field is one int.
    """

    entries_found: int = 0
    bytes_found: int = 0
    entries_done: int = 0
    bytes_done: int = 0
    walking: bool = True  # still finding what is there

    def to_json(self) -> dict[str, Any]:
        """Status's `scan` field; what is done read first, so it is never past what was found
        (another thread counts both)."""
        done, done_bytes, walking = self.entries_done, self.bytes_done, self.walking
        return {"entries_found": self.entries_found, "entries_done": done,
                "bytes_found": self.bytes_found, "bytes_done": done_bytes, "walking": walking}


@dataclass(slots=True)
class Found:
    """What one scan produced: new versions (stored already), paths still being written, and
    paths hashed while their mtime was fresh (to hash again)."""

    changes: list[Signed] = field(default_factory=list)
    unstable: set[RelPath] = field(default_factory=set)
    racy: set[RelPath] = field(default_factory=set)
    entries: int = 0  # looked at
    hashed: int = 0  # files read and hashed
    hashed_bytes: int = 0
    temp_dirs: set[str] = field(default_factory=set)  # directories holding our temporary files


@dataclass(slots=True)
class Scanner:
    """Turns the disk into signed records: hashes what differs from the index and versions it."""

    place: Place
    me: str  # this node's vector key
    sign: Callable[[FileRecord], bytes]
    progress: Progress | None = None  # the full scan under way, if any

    def find_changes(self, dirty: set[RelPath] | None, force: set[RelPath],
                     revive: set[RelPath],
                     announce: Announce = lambda _changes, _seqs: None,
                     watched: Callable[[], object] = lambda: None) -> Found:
        """Hash what differs from the index under `dirty` (None: everywhere), or is in `force`;
        version it and store it, handing each stored batch to `announce` with the index seqs
        it was stored at. Runs in a thread.

        Paths in `revive` get a new version even when unchanged: a directory whose deletion
        lost to a change inside it. A full scan walks once `watched()` returns: the watcher's
        walk to place its watches goes on meanwhile, and the index is read.
        """
        place, me = self.place, self.me
        now_ns = time.time_ns()
        found = Found()
        if dirty is not None:  # the watcher reporting what sync wrote: nothing to scan there
            dirty = dirty - place.written.echoes(place.root, dirty - force - revive)
            if not dirty:
                return found
        ignore = place.ignore
        tops = None if dirty is None else _tops(dirty)  # each subtree once, not per path in it
        # A receive-only folder's changes made here, found by this scan: kept out of the index.
        kept_here: dict[RelPath, str] | None = {} if place.receive_only else None
        progress = Progress() if tops is None else None
        self.progress = progress
        ahead = scan.Directories(place.root)  # where files are read ahead
        opened: dict[str, int] = {}  # fds of files read ahead, by path, until looked at
        try:
            # Stamps, not entries: a path whose stamp matches the disk needs nothing more, and
            # most of a restart's paths are such. An entry is read only where they differ.
            stamps = place.index.stamps(place.id) if tops is None else {
                path: s for top in tops for path, s in place.index.stamps(place.id, top).items()}
            before: dict[str, Entry] = {}  # the entries read, of paths that differ
            # Losers kept aside, which a new version made here may descend from (plan.local_change).
            kept: dict[RelPath, list[FileRecord]] = {}
            for loser in place.index.losers(place.id):
                kept.setdefault(loser.record.path, []).append(loser.record)
            mine: list[_Done] = []  # new versions made here: stored and announced
            held: list[_Done] = []  # versions we hold already, whose inode moved
            present: set[str] = set()
            stored, stored_at = 0, time.monotonic()  # of mine, those stored and announced
            store_at = STORE_FIRST  # new versions that make the next store

            def differing(seen: list[scan.Seen]) -> _Chunk:
                return seen, {s.path for s in seen if s.path in force or s.path in revive
                              or s.stamp != stamps.get(s.path)}

            def look(chunk: _Chunk) -> list[_Looked]:
                seen, differ = chunk
                if not differ:  # a restart's every chunk, nearly
                    return [(s, _State.SAME, None) for s in seen]
                entries = place.index.get_all(place.id, differ)
                before.update(entries)
                dirs = scan.Directories(place.root)
                looked: list[_Looked] = []
                try:
                    for s in seen:
                        fd = opened.pop(s.path, None)
                        try:
                            looked.append((s, *self._look(
                                s, entries.get(s.path), s.path in force, s.path in revive,
                                kept.get(s.path, []), now_ns, dirs, fd))
                                if s.path in differ else (s, _State.SAME, None))
                        finally:
                            if fd is not None:
                                os.close(fd)
                    return looked
                finally:
                    dirs.close()

            def heavy(chunk: _Chunk) -> bool:
                seen, differ = chunk
                return sum(s.size for s in seen
                           if s.kind is Kind.FILE and s.path in differ) >= POOLED

            def read_ahead(chunk: _Chunk) -> None:
                seen, differ = chunk
                for s in seen:
                    if s.kind is Kind.FILE and 0 < s.size <= READ_AHEAD and s.path in differ:
                        fd = scan.read_ahead(ahead, s)
                        if fd is not None and len(opened) < KEEP_OPEN:
                            opened[s.path] = fd  # hashed through it: one open, not two
                        elif fd is not None:
                            os.close(fd)

            # The walk goes on while what it found is hashed, stored and announced.
            if tops is None:
                watched()
            walked = self._walk(tops, progress, found.temp_dirs)
            chunks = _in_order(look, heavy, read_ahead, map(differing, _chunks(walked)))
            for s, state, item in chunks:
                found.entries += 1
                present.add(s.path)
                if progress is not None:
                    progress.entries_done += 1
                    progress.bytes_done += s.size
                if state is _State.UNSTABLE:
                    found.unstable.add(s.path)
                elif item is not None:
                    (held if state is _State.HELD else mine).append(item)
                    if state in (_State.NEW, _State.FRESH) and s.kind is Kind.FILE:
                        found.hashed += 1
                        found.hashed_bytes += s.size
                    if state is _State.FRESH:
                        found.racy.add(s.path)
                if len(mine) - stored >= store_at or (
                        len(mine) > stored and time.monotonic() - stored_at > STORE_WITHIN):
                    store_at = min(store_at * 2, STORE_MOST)
                    self._store(mine[stored:], held, announce, before, kept_here)
                    stored, stored_at, held = len(mine), time.monotonic(), []
            # An ignored path stays as it was for the peers: ignoring a file deletes nothing.
            gone = [path for path, s in stamps.items() if s is not None and path not in present
                    and not ignore.match(path, s[0] is Kind.DIR)]
            entries = place.index.get_all(place.id, gone)
            for entry in (entries[path] for path in gone if path in entries):
                if not entry.record.deleted:
                    record = plan.local_change(
                        entry.record, entry.record.tombstone(Vector(), me),
                        kept.get(entry.record.path, []), me, now_ns // 10**9)
                    mine.append((record, b"" if kept_here is not None else self.sign(record),
                                 0, 0))
            self._store(mine[stored:], held, announce, before, kept_here)
        finally:
            self.progress = None
            ahead.close()
            for fd in opened.values():
                os.close(fd)
        if kept_here is not None:  # what this scan looked at is as it found it
            place.local = {p: c for p, c in place.local.items()
                           if tops is not None and not _below(p, tops)} | kept_here
            place.copies -= {p for p in place.copies  # gone before a scan found them
                             if p not in present and (tops is None or _below(p, tops))}
            mine = [done for done in mine if done[0].path not in kept_here]
        if mine and log.isEnabledFor(logging.DEBUG):
            log.debug("folder %s: new versions of %s", place.id,
                      ", ".join(f"{shown(r.path)} {r.brief()}" for r, *_ in mine[:20]))
        found.changes = [Signed(record, signature) for record, signature, _, _ in mine]
        return found

    def _store(self, mine: list[_Done], held: list[_Done], announce: Announce,
               before: dict[str, Entry], kept_here: dict[RelPath, str] | None) -> None:
        """Store new versions and those whose inode moved; announce the new ones, each long
        list as a patch of the version before (taken from `before`) where that is shorter.
        With `kept_here` (a receive-only folder), the new versions go there instead, as what
        changed here, all but those sync made (see _look)."""
        if kept_here is not None:
            sent = []
            for done in mine:
                record = done[0]
                if done[1]:  # made by sync, not here (see _look)
                    sent.append(done)
                    self.place.copies.discard(record.path)
                    continue
                entry = before.get(record.path)
                kept_here[record.path] = "deleted" if record.deleted else "changed" if (
                    entry is not None and not entry.record.deleted) else "added"
            mine = sent
        seqs = self.place.index.put(self.place.id, [*mine, *held])
        if mine:
            self.place.changed((record for record, *_ in mine), received=False)
            announce([Signed(record, signature, _patch(before.pop(record.path, None), record))
                      for record, signature, _, _ in mine], range(seqs[0], seqs[-1] + 1))

    def _look(self, s: scan.Seen, entry: Entry | None, force: bool, revive: bool,
              kept: list[FileRecord], now_ns: int, dirs: scan.Directories,
              fd: int | None = None) -> tuple[_State, _Done | None]:
        """What the scan makes of one path: a new version, the one held with its new inode,
        nothing (unchanged), or nothing yet (still being written). `kept`: the losers of its
        path kept aside, which a new version descends from if alike; `fd`: the file's, if it
        was read ahead. Runs in a pool thread."""
        if (entry is not None and not force and not revive
                and not scan.differs(s, entry.record, entry.inode)):
            return _State.SAME, None
        size, blocks, fresh = 0, tuple[bytes, ...](), False
        if s.kind is Kind.FILE:
            fresh = racy(s.mtime_ns, opened := time.time_ns())
            left = _window(s.mtime_ns) - (opened - s.mtime_ns) / 1e9
            if fresh and s.size >= WAIT_OUT and 0 < left <= RACY_FINE:
                # Hashing a big file twice costs more than waiting out its tick (0.1 s at
                # most, where mtimes are fine-grained), and the second hash would hold up the
                # small files behind it.
                time.sleep(left)
                fresh = racy(s.mtime_ns, time.time_ns())
            hashed = scan.stable_hash(dirs, s, fd)
            if hashed is None:
                return _State.UNSTABLE, None
            size, blocks = hashed
        seen = FileRecord(s.path, s.kind, Vector(), self.me, False, size, s.mode, s.mtime_ns,
                          blocks, s.target)
        record = plan.local_change(entry.record if entry else None, seen,
                                   kept, self.me, now_ns // 10**9)
        if (entry is not None and not entry.record.deleted and not revive
                and _alike(record, entry.record)):
            # Only the inode moved (an editor's copy-and-rename, a directory made again):
            # the same version.
            return _State.HELD, (entry.record, entry.signature, s.inode, s.dev)
        # A receive-only folder signs (and sends) only the conflict copies sync made here. Not
        # a revived directory: what kept it may be a change made here, which stays here.
        place = self.place
        sent = not place.receive_only or s.path in place.copies
        signature = self.sign(record) if sent else b""
        return _State.FRESH if fresh else _State.NEW, (record, signature, s.inode, s.dev)

    def _walk(self, tops: list[RelPath] | None, progress: Progress | None,
              temps: set[str]) -> Iterator[scan.Seen]:
        """What a walk sees everywhere (None), or under each of `tops`, none below another;
        the directories holding temporary files go in `temps`."""
        place = self.place
        if tops is None:
            walked = scan.walk(place.root, place.ignore, temps)
        else:
            walked = (s for top in tops
                      for s in scan.walk_under(place.root, top, place.ignore, temps))
        for s in walked:
            if progress is not None:
                progress.entries_found += 1
                progress.bytes_found += s.size
            yield s
        if progress is not None:
            progress.walking = False


def racy(mtime_ns: int, opened_ns: int) -> bool:
    """Whether a file opened for hashing at `opened_ns` may still be rewritten within its mtime
    `mtime_ns`'s tick, unseen (a future mtime too: a clock that moved)."""
    return opened_ns - mtime_ns < _window(mtime_ns) * 1e9


def _window(mtime_ns: int) -> float:
    """Seconds a file's mtime may stay the same while it is written: its tick, with room."""
    return RACY if mtime_ns % 10**9 == 0 else RACY_FINE


def _patch(before: Entry | None, record: FileRecord) -> Patch | None:
    """The change of a long list from the version before, when it is worth sending as one."""
    if before is None or before.record.deleted or record.deleted:
        return None
    return Patch.between(before.record.blocks, record.blocks)


def _chunks(seen: Iterator[scan.Seen]) -> Iterator[list[scan.Seen]]:
    """Consecutive paths, CHUNK at a time, as the walk finds them."""
    while chunk := list(itertools.islice(seen, CHUNK)):
        yield chunk


def _in_order(look: Callable[[_Chunk], list[_Looked]], heavy: Callable[[_Chunk], bool],
              read_ahead: Callable[[_Chunk], None],
              chunks: Iterator[_Chunk]) -> Iterator[_Looked]:
    """Each chunk's results, in order: a heavy chunk looked at by a pool (started at the first),
    the others in the calling thread when their turn comes, their small files read ahead:
    from a cold cache, reading one file after another waits on the disk for each."""
    pool: ThreadPoolExecutor | None = None
    pending: deque[Future[list[_Looked]] | _Chunk] = deque()
    try:
        for chunk in chunks:
            if heavy(chunk):
                pool = pool or ThreadPoolExecutor(WORKERS, thread_name_prefix="scan")
                pending.append(pool.submit(look, chunk))
            else:
                read_ahead(chunk)
                pending.append(chunk)
            while len(pending) > max(AHEAD, 2 * WORKERS):
                yield from _looked(look, pending.popleft())
        while pending:
            yield from _looked(look, pending.popleft())
    finally:
        for waiting in pending:
            if isinstance(waiting, Future):
                waiting.cancel()
        if pool is not None:
            pool.shutdown()


def _looked(look: Callable[[_Chunk], list[_Looked]],
            waiting: Future[list[_Looked]] | _Chunk) -> list[_Looked]:
    return waiting.result() if isinstance(waiting, Future) else look(waiting)


def _alike(found: FileRecord, held: FileRecord) -> bool:
    """Whether what a scan found is the version held, on disk as it was (a directory's mtime
    moves with every entry, so only its mode counts, as in scan.differs)."""
    if found.kind is Kind.DIR:
        return held.kind is Kind.DIR and found.mode == held.mode
    return found.same_metadata(held)


def _below(path: RelPath, tops: list[RelPath]) -> bool:
    """Whether `path` is one of `tops` or below one."""
    return any(path == top or path.startswith(top + "/") for top in tops)


def _tops(paths: Iterable[RelPath]) -> list[RelPath]:
    """The paths that are not below another of them."""
    tops: set[RelPath] = set()
    for path in sorted(paths, key=lambda p: p.count("/")):  # ancestors come first
        parts = path.split("/")
        if not any("/".join(parts[:n]) in tops for n in range(1, len(parts))):
            tops.add(path)
    return sorted(tops)
