"""Remote versions out to disk: in order, from local blocks and members' blocks, atomically,
keeping what they replace; a version that cannot be written waits, with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import shutil
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from meshsync.core import plan
from meshsync.core.paths import RelPath, parent
from meshsync.core.plan import Action, decide
from meshsync.core.records import FileRecord, Kind, stamp
from meshsync.core.throttle import shown
from meshsync.core.wire import Signed
from meshsync.fs import apply, scan
from meshsync.node import transfer
from meshsync.node.attempt import Batch, Done, NoRoom, attempt, done
from meshsync.node.clock import Clock
from meshsync.node.config import MinFree, mib
from meshsync.node.judge import REVERTED, REVIVED, Judge
from meshsync.node.keeper import keeper
from meshsync.node.place import Place
from meshsync.node.retry import (
    DISK_FULL,
    NO_DIRECTORY,
    NOT_HELD,
    RETRY_NEEDS,
    WRITE_REFUSED,
    Lack,
    Retries,
    cause_of,
)
from meshsync.node.transfer import Fetcher, Progress, Sources, Wanted
from meshsync.store.index import Entry, Need

log = logging.getLogger("meshsync.folder")

NEEDS_PER_PASS = 10000  # versions attempted per pass, besides those waiting for their retry
# Files written per group: each group costs its round trips, an index transaction that
# rewrites the pages it touches, and two syncs of the file system. A group holds two fds per
# file, so an open-file limit smaller than ours shrinks it.
FILES_PER_GROUP = 1024
BULK = 8 << 20  # bytes: a bigger file is written in a lane of its own, beside the small ones

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Write:
    """A file whose content must be written, and what the disk must hold until then."""

    need: Need
    expected: scan.Seen | None
    loser: FileRecord | None  # our concurrent version it beats, to keep as a conflict copy
    ours: FileRecord | None  # our concurrent version it beats: then we publish a resolution
    held: tuple[bytes, ...] = ()  # the blocks the index says the file it replaces holds


_Opened = tuple[_Write, apply.Incoming]


class Puller:
    """Writes one folder's queued versions; `wake` asks for a pass."""

    def __init__(self, place: Place, judge: Judge, mesh: Sources, clock: Clock,
                 rescan: Callable[[set[RelPath], set[RelPath]], None], min_free: MinFree,
                 me: str, sign: Callable[[FileRecord], bytes],
                 announce: Callable[[list[Signed]], Awaitable[None]],
                 covered: Callable[[str, range], Awaitable[None]]) -> None:
        self.place = place
        self.judge = judge
        self.clock = clock
        self.fetcher = Fetcher(place, mesh, clock)
        self.group = files_per_group(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.retries = Retries()
        self.wake = asyncio.Event()
        self._rescan = rescan  # (paths changed meanwhile, directories to version anew)
        # Directories that may hold temporary files of versions no longer wanted ("": the root).
        self.temp_dirs: set[str] = set()
        self.min_free = min_free
        self.me, self.sign = me, sign
        self._announce = announce  # resolutions this node published
        self._covered = covered  # (member, seqs): rows that hold only what it sent us
        self._room = 0  # bytes the group being opened may still take
        self._after_deletions: list[Need] = []
        self._resolved: list[Signed] = []  # resolutions stored this pass, announced at its end
        # Files over BULK go in a lane of their own while the puller runs (see _write_bulk).
        self._lane: asyncio.TaskGroup | None = None
        self._bulk: deque[_Write] = deque()
        self._in_bulk: set[RelPath] = set()  # paths queued or being written there

    async def run(self, mounted: Callable[[], bool]) -> None:
        """Write what is queued whenever woken, and when a waiting version is due again."""
        wait: float | None = None  # the one timer: until the first path waiting is due again
        async with asyncio.TaskGroup() as lane:
            self._lane = lane
            try:
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), wait)
                    self.wake.clear()
                    wait = await self.apply_due() if mounted() else None
            finally:
                self._lane = None

    async def apply_due(self) -> float | None:
        """Write the queued versions not waiting for a retry; returns the seconds until one is
        due again (None: none is)."""
        loaded = NEEDS_PER_PASS + len(self.retries)
        needs = await asyncio.to_thread(self.place.index.needs, self.place.id, loaded)
        complete = len(needs) < loaded
        due = [n for n in self.retries.due(needs, self.clock.now(), complete)
               if n.record.path not in self._in_bulk]
        creates, deletes = _ordered(due)
        writes = await self._in_thread(self._apply_locally, creates)
        if self._lane is not None:
            self._write_bulk([w for w in writes if w.need.record.size > BULK])
            writes = [w for w in writes if w.need.record.size <= BULK]
        # File contents go in groups, so a thousand small files cost a few round trips.
        for at in range(0, len(writes), self.group):
            await self._write_files(writes[at : at + self.group])
        # Deletions last: a renamed file's new path takes its blocks from the old one. One whose
        # blocks a big file waiting in its lane may take waits for the lane (which wakes us).
        wanted = {digest for write in self._bulk for digest in write.need.record.blocks}
        deletes = await asyncio.to_thread(self._not_wanted, deletes, wanted)
        await self._in_thread(self._apply_locally, deletes)
        await self._replace_directories()
        resolved, self._resolved = self._resolved, []
        if resolved:
            await self._announce(resolved)
        self.retries.report(self.place, self.clock.now())
        if await asyncio.to_thread(self.judge.rejudge):
            self.wake.set()
        if self.temp_dirs:
            async with self.place.disk:
                await asyncio.to_thread(self._sweep_temps)
        if not complete:  # the rest next time (a path waiting among them may be due already)
            return RETRY_NEEDS
        wait = self.retries.next_due(self.clock.now())
        if due and not self.wake.is_set():
            # Left without a retry of its own (the disk changed under it, say): soon again.
            files, _ = await asyncio.to_thread(self.place.index.need_totals, self.place.id)
            if files > len(self.retries):
                wait = RETRY_NEEDS if wait is None else min(wait, RETRY_NEEDS)
        return wait

    def _not_wanted(self, deletes: list[Need], wanted: set[bytes]) -> list[Need]:
        """The deletions of files holding none of the `wanted` blocks; runs in a thread."""
        if not wanted:
            return deletes
        place = self.place
        return [n for n in deletes if (entry := place.index.get(place.id, n.record.path)) is None
                or wanted.isdisjoint(entry.record.blocks)]

    def _write_bulk(self, writes: list[_Write]) -> None:
        """Write big files one after another in a task of their own: a small file that comes
        while a 1 GiB one is fetched is written at once, not after it. The passes meanwhile
        leave their paths alone."""
        if not writes or self._lane is None:
            return
        idle = not self._bulk
        self._bulk.extend(writes)
        self._in_bulk |= {w.need.record.path for w in writes}
        if idle:
            self._lane.create_task(self._drain_bulk(), name=f"big files {self.place.id}")

    async def _drain_bulk(self) -> None:
        while self._bulk:
            write = self._bulk[0]
            try:
                await self._write_files([write])
            finally:
                self._bulk.popleft()
                self._in_bulk.discard(write.need.record.path)
                self.wake.set()  # a pass takes what follows: retries, a newer version

    async def _replace_directories(self) -> None:
        """Write the files and links that replace a directory, now that this pass's deletions
        have emptied it; one still not empty waits."""
        later, self._after_deletions = self._after_deletions, []
        if not later:
            return
        writes = await self._in_thread(self._apply_locally, later)
        for at in range(0, len(writes), self.group):
            await self._write_files(writes[at : at + self.group])
        stuck, self._after_deletions = self._after_deletions, []
        for need in stuck:
            self._fail(need, WRITE_REFUSED, "the directory it replaces still holds files")

    def retry_now(self) -> None:
        """Try every version waiting for a retry soon, from the start of its backoff (a member
        came online: it may hold what they lack)."""
        self.retries.retry_now()
        self.wake.set()

    def _forsaken(self, needs: list[Need]) -> None:
        for need in needs:
            if self.place.throttle.allow((need.record.path, "forsaken"), self.clock.now()):
                log.info("folder %s: no longer waiting for %r from %s: no member holds it any "
                         "more", self.place.id, need.record.path, need.record.origin)

    def _fail(self, need: Need, cause: str, reason: str, lack: Lack | None = None) -> None:
        self.retries.failed(need, cause, reason, self.clock.now(), lack)

    async def _in_thread(self, work: Callable[[Batch, T], R], arg: T) -> R:
        """Run a batch of disk work in a thread; paths it found changed are rescanned, and
        versions it wrote or could not write update their retries."""
        batch = Batch()
        try:
            async with self.place.disk:
                result = await asyncio.to_thread(work, batch, arg)
        finally:
            if batch.changed or batch.revive:
                self._rescan(batch.changed, batch.revive)
            for need, cause, reason in batch.failed:
                self._fail(need, cause, reason)
            self._after_deletions += batch.after_deletions
            self._resolved += batch.resolved
            for source, seqs in batch.covered:
                await self._covered(source, seqs)
        debug = log.isEnabledFor(logging.DEBUG)
        for record, *_ in batch.done:  # in the index now
            self.retries.succeeded(record.path)
            if debug:
                log.debug("folder %s: received %s: %s", self.place.id, shown(record.path),
                          record.brief())
        return result

    def _apply_locally(self, batch: Batch, needs: list[Need]) -> list[_Write]:
        """Apply what needs no transfer, in one index transaction; return files to write."""
        writes: list[_Write] = []
        # Read at once: nothing is stored before the end, and each path comes once.
        entries = self.place.index.get_all(self.place.id, [n.record.path for n in needs])
        present: set[RelPath] = set()  # directories found there in this batch
        for need in needs:
            step = partial(self._apply_one, batch, need, entries.get(need.record.path), writes,
                           present)
            attempt(batch, need, step, self.place, self.retries)
        self._put(batch)
        return writes

    def _apply_one(self, batch: Batch, need: Need, entry: Entry | None, writes: list[_Write],
                   present: set[RelPath]) -> Done | None:
        record = need.record
        verdict = decide(entry.record if entry else None, record)
        reverted = need.source == REVERTED  # the version held, over a change made here
        if (verdict.action is Action.IGNORE and not reverted) or self.place.ignore.match(
                record.path, record.kind is Kind.DIR):
            log.debug("folder %s: %s no longer wanted: %s", self.place.id, shown(record.path),
                      record.brief())
            self.place.index.drop_need(self.place.id, record.path)
            return None
        # A receive-only folder's change made here gives way, kept among the versions.
        local = reverted or record.path in self.place.local
        expected = scan.seen_now(self.place.root, record.path) if local else _expected(entry)
        # Beaten by a concurrent version: what we store and announce is its resolution. Not
        # where a change made here stands in for our version: its maker must see the conflict
        # and keep it as a copy, which we cannot (what is on disk is not that version).
        ours = (entry.record if verdict.resolve and entry is not None
                and not (local and verdict.conflict) else None)
        if record.deleted:
            try:
                keep = keeper(self.place, batch.changed, None)
                apply.remove(self.place.root, record.path, expected, keep)
            except apply.NotEmpty:
                # What is left in it was kept (a concurrent change beat its deletion), unless
                # a deletion of it is still to come: then the directory stays as a new version.
                if not self.place.index.deletions_under(self.place.id, record.path):
                    batch.revive.add(record.path)
                raise
            return self._stored(batch, need, None, ours)
        loser = entry.record if verdict.conflict and entry is not None and not local else None
        if not self._parent_present(record.path, present):
            # Its directory's own record has not come yet. Writing now would make the
            # directory, and the next scan would take it for a local creation (an echo).
            batch.failed.append((need, NO_DIRECTORY, "its directory has not come yet"))
            return None
        if record.kind is Kind.DIR:
            # A file or link it replaces goes to versions, or beside it if it lost to it.
            keep = keeper(self.place, batch.changed, loser)
            seen = apply.make_dir(self.place.root, record, expected, keep)
            return self._stored(batch, need, seen, ours)
        if record.kind is Kind.SYMLINK:
            keep = keeper(self.place, batch.changed, loser)
            seen = apply.make_symlink(self.place.root, record, expected, keep)
            return self._stored(batch, need, seen, ours)
        if (entry is not None and not entry.record.deleted and entry.record.same_content(record)
                and not local):
            seen = apply.set_metadata(self.place.root, record, expected)
            return self._stored(batch, need, seen, ours)
        held = (entry.record.blocks if entry and expected and expected.kind is Kind.FILE
                and not local else ())
        writes.append(_Write(need, expected, loser, ours, held))
        return None

    def _parent_present(self, path: RelPath, present: set[RelPath]) -> bool:
        """False only while the parent is absent: a link or file there is the writer's to refuse.
        One found there is remembered in `present` (a batch's files share a few directories)."""
        above = parent(path)
        if above is None or above in present:
            return True
        root = self.place.root
        if (root / above).is_symlink() or (root / above).exists():
            present.add(above)
            return True
        return False

    async def _write_files(self, writes: list[_Write]) -> None:
        """Write a group of files: local blocks first, then the rest in shared requests.

        A file that lacked blocks at its last attempt is not opened again unless a source has
        some of its first missing blocks now, or the index holds new blocks that may fill it.
        """
        seq = await asyncio.to_thread(self.place.index.max_seq, self.place.id)
        known = {w.need.record.path: (w.need.record, lack) for w in writes
                 if (lack := self.retries.lack(w.need)) is not None}
        # Every member that could hold a version is online, and so is asked for it.
        members = self.fetcher.mesh.members(self.place.id)
        everyone = 0 < members == len(self.fetcher.mesh.sources(self.place.id))
        settled = await asyncio.to_thread(self.fetcher.nothing_new_here, known, seq)
        source = writes[0].need.source if writes else ""
        unsupplied = await self.fetcher.probe(
            [(known[path][0], lack) for path, lack in settled.items()], source)
        lacks = {path: settled[path] for path in unsupplied}
        trying = [w for w in writes if w.need.record.path not in unsupplied]
        opened: list[_Opened] = []
        try:
            wanted, spoiled = await self._in_thread(self._open_all, (trying, opened, set(settled)))
            for write, _ in opened:
                record = write.need.record
                self.fetcher.transfers[record.path] = Progress(record.path, record.size)
            failed = await self.fetcher.fetch_all(wanted, source, spoiled)
            spoiled |= set(failed)
            lacks |= {w.need.record.path: lack for w, incoming in opened
                      if w.need.record.path not in spoiled
                      and (lack := transfer.lack(incoming, seq)) is not None}
            # A version is only worth the wait while someone still holds it. One set aside and
            # queued again that no online member can supply was replaced everywhere; any other
            # that no member at all had any block of, twice running, was replaced where it was
            # held (what replaced it comes on its own, by notice or catch-up).
            gone = [w.need for w in writes if (lack := lacks.get(w.need.record.path)) and (
                w.need.source == REVIVED or (everyone and _nothing_of(w.need, lack)
                                             and w.need.record.path in known))]
            self._forsaken([n for n in gone if n.source != REVIVED])
            for need in gone:  # unless a newer version was queued meanwhile
                log.debug("folder %s: %s given up: %s", self.place.id, shown(need.record.path),
                          need.record.brief())
                await asyncio.to_thread(self.place.index.drop_need, self.place.id, need.record.path,
                                        need.record)
                self.retries.succeeded(need.record.path)
            for write in writes:
                need = write.need
                if (lack := lacks.get(need.record.path)) is not None and need not in gone:
                    self._fail(need, NOT_HELD, f"no member has all of its blocks ({lack.missing}"
                               f" of {len(need.record.blocks)} missing)", lack)
                elif need.record.path in failed:
                    error = failed[need.record.path]
                    self._fail(need, cause_of(error), f"cannot write: {shown(error)}")
            # A file lacking a block waits (its temp kept); the others go into place now.
            await self._in_thread(self._commit_all, [
                (w, i) for w, i in opened
                if w.need.record.path not in lacks and w.need.record.path not in spoiled])
        except OSError as e:  # syncing the folder failed (a full disk, say): all wait
            for write in writes:
                if write.need.record.path not in lacks | self.retries.failed_now.keys():
                    self._fail(write.need, cause_of(e), f"cannot write: {shown(e)}")
        finally:
            # A temp that ran out of room goes: a full disk must not stay full because of it.
            for write, incoming in opened:
                if (self.retries.failed_now.get(write.need.record.path) == DISK_FULL
                        and not incoming.closed):
                    await asyncio.to_thread(incoming.abort)
            # A temp file left behind is resumed later, unless its version is no longer wanted
            # by then (see _sweep_temps); only its handles go now.
            self.temp_dirs |= {w.need.record.path.rpartition("/")[0]
                                for w, incoming in opened if not incoming.closed}
            await asyncio.to_thread(_close_all, opened)
            for write, _ in opened:
                self.fetcher.transfers.pop(write.need.record.path, None)


    def _open_all(
        self, batch: Batch, group: tuple[list[_Write], list[_Opened], set[RelPath]]
    ) -> tuple[list[Wanted], set[RelPath]]:
        """Open each file's temp and fill it from local blocks (but those in the set, which the
        index holds nothing new for); return the blocks still wanted and the files that failed."""
        writes, opened, settled = group
        wanted: list[Wanted] = []
        usage = shutil.disk_usage(self.place.root)
        self._room = usage.free - self.min_free.of(usage.total)
        # A group's files mostly share directories: each is walked to from the root once.
        with scan.Directories(self.place.root) as dirs:
            for write in writes:
                look = write.need.record.path not in settled
                step = partial(self._open_one, write, opened, wanted, look, dirs)
                attempt(batch, write.need, step, self.place, self.retries)
        return wanted, {need.record.path for need, _, _ in batch.failed}

    def _open_one(self, write: _Write, opened: list[_Opened], wanted: list[Wanted],
                  look: bool, dirs: scan.Directories) -> None:
        record = write.need.record
        incoming = apply.Incoming.open(self.place.root, record, dirs)
        # What its temp lacks: a sparse temp takes its blocks' room as they come.
        needed = record.size - sum(incoming.length(i) for i in incoming.have())
        if needed > self._room:
            incoming.abort()  # nothing of it stays behind to fill the disk
            raise NoRoom(f"disk full: it needs {mib(needed)} more, and "
                         f"{mib(max(self._room, 0))} are free above the {self.min_free} kept "
                         "free (--min-free)")
        self._room -= needed
        opened.append((write, incoming))
        if look:
            missing = self.fetcher.fill_locally(incoming, record, write.expected, write.held)
        else:
            have = incoming.have()
            missing = [i for i in range(len(record.blocks)) if i not in have]
        wanted.extend((incoming, i, record.blocks[i]) for i in missing)

    def _sweep_temps(self) -> None:
        """Delete the temporary files of versions we no longer wait for (replaced, dropped, or
        beaten by a local edit); those of waiting versions stay, to be resumed."""
        wanted: dict[str, set[str]] = {}
        for need in self.place.index.needs(self.place.id):
            head = need.record.path.rpartition("/")[0]
            wanted.setdefault(head, set()).add(apply.temp_name(need.record))
        for directory in list(self.temp_dirs):
            if not apply.remove_temps(self.place.root, directory, wanted.get(directory, set())):
                self.temp_dirs.discard(directory)

    def _commit_all(self, batch: Batch, opened: list[_Opened]) -> None:
        """Move every finished file into place, then record them in one transaction.

        Contents are made durable before any name points at them, and names before the index
        records them, with one sync for the group each time (see apply.Incoming.seal).
        """
        for write, incoming in opened:
            attempt(batch, write.need, incoming.seal, self.place, self.retries)
        sealed = [(write, incoming) for write, incoming in opened if incoming.sealed]
        if not sealed:
            return
        apply.sync(self.place.root)
        for write, incoming in sealed:
            step = partial(self._commit_one, batch, write, incoming)
            attempt(batch, write.need, step, self.place, self.retries)
        apply.sync(self.place.root)
        self._put(batch)

    def _put(self, batch: Batch) -> None:
        """Record what was written in the index, and remember it for telling the watcher's
        reports of it from edits (see place.Written). Rows that hold only versions one member
        sent us, as it sent them, are noted for telling it (see FolderSync._covered)."""
        written = batch.done
        seqs = self.place.index.put(self.place.id, written)
        for record, *_ in written:  # a change made here, replaced
            self.place.local.pop(record.path, None)
        self.place.changed((r for r, *_ in written), received=True)
        if seqs and len(batch.sources) == 1 and (
                source := next(iter(batch.sources))) not in ("", REVIVED, REVERTED):
            batch.covered.append((source, range(seqs[0], seqs[-1] + 1)))
        self.place.written.add(
            (r.path, None if r.deleted else stamp(r.kind, r.size, r.mode, r.mtime_ns, r.target,
                                                   inode))
            for r, _, inode, _ in written if r.deleted or r.kind is not Kind.DIR)

    def _commit_one(self, batch: Batch, write: _Write, incoming: apply.Incoming) -> Done:
        keep = keeper(self.place, batch.changed, write.loser)
        seen = incoming.commit(write.expected, keep)
        return self._stored(batch, write.need, seen, write.ours)

    def _stored(self, batch: Batch, need: Need, seen: scan.Seen | None,
                ours: FileRecord | None) -> Done:
        """What the index records for a version written: the version itself or, when it beat
        `ours` (concurrent), the resolution we publish: it descends from both."""
        if ours is None:
            return done(need, seen)
        record = plan.resolution(need.record, ours, self.me)
        signature = self.sign(record)
        batch.resolved.append(Signed(record, signature))
        return done(Need(record, signature, need.source), seen)


def files_per_group(open_files: int) -> int:
    """Files written per group under an open-file limit: their fds take an eighth of it at
    most (the connections take a quarter; see listener.Limits)."""
    if open_files == resource.RLIM_INFINITY:
        return FILES_PER_GROUP
    return max(8, min(FILES_PER_GROUP, open_files // 16))


def _nothing_of(need: Need, lack: Lack) -> bool:
    """Whether an attempt found none of a version's blocks, anywhere."""
    return lack.missing == len(need.record.blocks) > 0


def _expected(entry: Entry | None) -> scan.Seen | None:
    """What the index says is on disk, for the stat-before-overwrite check."""
    if entry is None or entry.record.deleted:
        return None
    r = entry.record
    return scan.Seen(r.path, r.kind, r.size, r.mode, r.mtime_ns, entry.inode, entry.dev, r.target)


def _ordered(needs: list[Need]) -> tuple[list[Need], list[Need]]:
    """Creations (directories parent-first, then files and links), and deletions child-first."""
    def depth(n: Need) -> int:
        return n.record.path.count("/")

    def is_dir(n: Need) -> bool:
        return n.record.kind is Kind.DIR

    creates = sorted((n for n in needs if not n.record.deleted),
                     key=lambda n: (not is_dir(n), depth(n) if is_dir(n) else 0))
    deletes = sorted((n for n in needs if n.record.deleted), key=depth, reverse=True)
    return creates, deletes


def _close_all(opened: list[_Opened]) -> None:
    for _, incoming in opened:
        incoming.close()
