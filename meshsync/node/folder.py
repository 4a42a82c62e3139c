"""One synced folder: local changes become signed records, remote records become files.

The loop of a folder: the watcher (and a periodic rescan, the safety net) finds paths that
differ from the index; they are hashed, given a new version and announced. Remote records
are verified against their origin's key, judged by `core.plan`, queued as needs, and
written block by block, reusing blocks found locally and fetching the rest from members.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from meshsync.core import conflicts, plan
from meshsync.core.ids import NodeId
from meshsync.core.paths import RelPath, parent
from meshsync.core.plan import Action, decide
from meshsync.core.records import FileRecord, Kind
from meshsync.core.throttle import Throttle, shown
from meshsync.core.vclock import Order, Vector
from meshsync.core.wire import (
    BATCH_BUDGET,
    MAX_BLOCKS_PER_REQUEST,
    BlockRequest,
    IndexRequest,
    Records,
    Signed,
    batches,
    first_batch,
    size_bound,
)
from meshsync.fs import apply, scan, versions
from meshsync.fs.ignore import IGNORE_FILE, Ignore
from meshsync.fs.watch import watch
from meshsync.node.clock import Clock
from meshsync.node.config import Folder, Keep
from meshsync.node.retry import RETRY_NEEDS, Asking, Lack, Retries
from meshsync.store.index import Entry, Index, IndexUnusable, Need

log = logging.getLogger("meshsync.folder")

RESCAN_EVERY = 60.0
CATCH_UP_EVERY = 5.0  # the safety net under notices: an index page per member, if anything changed
REVIVED = "revived"  # the source of a need for a version taken back from the losers
RETRY_CATCH_UP = 0.25  # doubled after each failed round, up to CATCH_UP_EVERY
UNMOUNTED_CHECK_EVERY = 2.0
RETRY_UNSTABLE = 0.5
# File systems stamp mtimes in coarse ticks (ext4: a few ms), so a file rewritten in place
# with the same size right after we hashed it can look unchanged. One hashed while its mtime
# was this fresh is hashed again once it is older (git calls these entries racy).
RACY = 2.0
NEEDS_PER_PASS = 10000  # versions attempted per pass, besides those waiting for their retry
FILES_PER_GROUP = 256
LOCAL_NEWS = 1000  # index rows looked through for blocks that may fill a waiting file
WAITING_SHOWN = 100  # paths listed by `meshsync status`
LOGGED_PER_PASS = 5  # failures logged per pass and cause; `meshsync status` lists them all


class Mesh(Protocol):
    """What a folder needs of the node: signing, keys, peers and the network."""

    @property
    def me(self) -> NodeId:
        """This node's ID."""

    def sign(self, message: bytes) -> bytes:
        """SSHSIG by this node."""

    def origin_key(self, origin: str, signature: bytes, message: bytes) -> bool:
        """Whether `signature` over `message` is by the trusted node whose vector key is origin."""

    def sources(self, folder: str) -> list[tuple[str, str]]:
        """(node key, address) of the online members sharing `folder`, coordinator first."""

    async def publish(self, notice: Records) -> None:
        """Send a notice to the coordinator and gossip it to the members sharing its folder."""

    async def fetch_blocks(self, address: str, request: BlockRequest) -> list[bytes | None]:
        """Blocks from one peer; raises on failure."""

    async def fetch_index(self, address: str, request: IndexRequest) -> Records:
        """An index page from one peer; raises on failure."""


_Done = tuple[FileRecord, bytes, int, int]  # an index item: record, signature, inode, dev
T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Batch:
    """What a batch of disk work produced: index items, paths to scan again (the user changed
    them meanwhile, or sync made a conflict copy there), directories to keep, and versions
    that could not be written (with a cause and a reason)."""

    done: list[_Done] = field(default_factory=list)
    changed: set[RelPath] = field(default_factory=set)
    revive: set[RelPath] = field(default_factory=set)
    failed: list[tuple[Need, str, str]] = field(default_factory=list)


def _done(need: Need, seen: scan.Seen | None) -> _Done:
    inode, dev = (seen.inode, seen.dev) if seen else (0, 0)
    return (need.record, need.signature, inode, dev)


@dataclass(frozen=True, slots=True)
class _Write:
    """A file whose content must be written, and what the disk must hold until then."""

    need: Need
    expected: scan.Seen | None
    loser: FileRecord | None  # our concurrent version it beats, to keep as a conflict copy


_Opened = tuple[_Write, apply.Incoming]
_Wanted = tuple[apply.Incoming, int, bytes]  # a file, one of its block indexes, that block's hash


@dataclass(slots=True)
class _Progress:
    """A transfer in flight, for `meshsync status`."""

    path: str
    size: int
    done: int = 0


@dataclass(slots=True)
class FolderSync:
    """The sync of one folder."""

    folder: Folder
    index: Index
    mesh: Mesh
    epoch: str
    keep: Keep = field(default_factory=Keep)
    clock: Clock = field(default_factory=Clock)  # for retries; tests pass their own
    _dirty: set[RelPath] = field(default_factory=set)
    _want_full_scan: bool = True
    _scan_wake: asyncio.Event = field(default_factory=asyncio.Event)
    _need_wake: asyncio.Event = field(default_factory=asyncio.Event)
    _throttle: Throttle = field(default_factory=Throttle)
    _transfers: dict[str, _Progress] = field(default_factory=dict)
    _retries: Retries = field(default_factory=Retries)
    _failures: dict[RelPath, tuple[str, str, float]] = field(default_factory=dict)  # this pass's
    catch_up_wake: asyncio.Event = field(default_factory=asyncio.Event)
    _rewatch: asyncio.Event = field(default_factory=asyncio.Event)
    # Held by a scan, and by every write to the folder until the index records it: a scan
    # in between would take a file we just wrote for a local edit (an echo).
    _disk: asyncio.Lock = field(default_factory=asyncio.Lock)
    _judging: asyncio.Lock = field(default_factory=asyncio.Lock)
    _force: set[RelPath] = field(default_factory=set)
    _revive: set[RelPath] = field(default_factory=set)  # directories to version anew
    ignore: Ignore = field(default_factory=Ignore)
    # Directories that may hold temporary files of versions no longer wanted ("": the root).
    _temp_dirs: set[str] = field(default_factory=set)
    mounted: bool = True

    @property
    def id(self) -> str:
        """The folder ID."""
        return self.folder.id

    @property
    def root(self) -> Path:
        """The folder's directory."""
        return self.folder.path

    # -- lifetime ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Scan, watch, apply and catch up until cancelled."""
        self.mounted = await asyncio.to_thread(self._check_marker, True)
        if self.mounted:
            await self._reload_ignore()
            # A previous run may have left temporary files anywhere: look in every directory once.
            self._temp_dirs = {"", *await asyncio.to_thread(self._directories)}
            self._need_wake.set()
        self._scan_wake.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(), name=f"watch {self.id}")
            tg.create_task(self._scans(), name=f"scan {self.id}")
            tg.create_task(self._applies(), name=f"apply {self.id}")
            tg.create_task(self._catch_ups(), name=f"catch up {self.id}")

    def _check_marker(self, first: bool) -> bool:
        """Whether the folder is there; makes it (and its marker) only the first time ever."""
        marker = self.root / ".meshsync"
        if marker.is_dir():
            return True
        if self.index.max_seq(self.id) == 0 and first:
            marker.mkdir(parents=True, exist_ok=True)
            return True
        if self._throttle.allow("unmounted", time.time()):
            log.warning("folder %s: %s has no .meshsync marker: treating it as unmounted, "
                        "nothing there is scanned or written until it comes back", self.id, marker)
        return False

    async def _watch(self) -> None:
        # inotify follows a directory's inode: when the folder goes and comes back (a disk
        # unmounted and mounted again), the old watch sees nothing, so start a new one.
        while True:
            self._rewatch.clear()
            if not self.mounted:
                await self._rewatch.wait()  # set by the scan loop when the marker is back
                continue
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(self._take_events(), name=f"events {self.id}")
                await self._rewatch.wait()
                watcher.cancel()

    async def _take_events(self) -> None:
        try:
            async for paths in watch(self.root):
                self._dirty |= paths
                self._scan_wake.set()
        except FileNotFoundError:
            self._scan_wake.set()  # the folder itself went: the marker check will say so

    async def _scans(self) -> None:
        last_full = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._scan_wake.wait(), UNMOUNTED_CHECK_EVERY)
            self._scan_wake.clear()
            damaged = await asyncio.to_thread(self.index.take_damaged, self.id)
            if damaged:  # rows the index could not read: what the disk holds, and ask again
                log.warning("folder %s: %d damaged index rows set aside; rescanning them and "
                            "asking peers again", self.id, len(damaged))
                self._dirty |= damaged
                await asyncio.to_thread(self.index.forget_peer_seqs, self.id)
                self.catch_up_wake.set()
            was_mounted = self.mounted
            self.mounted = await asyncio.to_thread(self._check_marker, False)
            if self.mounted != was_mounted:
                self._rewatch.set()
            if not self.mounted:
                continue
            if not was_mounted:
                log.info("folder %s is back at %s", self.id, self.root)
                self._want_full_scan = True
            full = self._want_full_scan or time.monotonic() - last_full > RESCAN_EVERY
            dirty, self._dirty = self._dirty, set()
            self._want_full_scan = False
            if full:
                last_full = time.monotonic()
                await self._prune()
            if full or IGNORE_FILE in dirty:
                full = await self._reload_ignore() or full
            force, self._force = self._force, set()
            revive, self._revive = self._revive, set()
            async with self._disk:
                changes, unstable, racy = await asyncio.to_thread(
                    self._find_changes, None if full else dirty | force | revive, force, revive)
            if changes:
                await self._announce(changes)
            if racy:
                asyncio.get_running_loop().call_later(RACY, self._recheck, racy)
            if unstable:
                self._dirty |= unstable
                asyncio.get_running_loop().call_later(RETRY_UNSTABLE, self._scan_wake.set)
            self._need_wake.set()

    async def _reload_ignore(self) -> bool:
        """Read .meshsyncignore again; True if the rules changed (the caller rescans all).

        Records of ignored paths were passed over, so when the rules differ from those the
        index was last filled under (even across a restart), peers are read from the start.
        """
        ignore = await asyncio.to_thread(Ignore.load, self.root)
        changed, self.ignore = ignore.fingerprint != self.ignore.fingerprint, ignore
        remembered = f"ignore {self.id}"
        before = await asyncio.to_thread(self.index.get_meta, remembered)
        if before != ignore.fingerprint:
            if before is not None:
                log.info("folder %s: %s changed; rescanning, and asking peers again for what "
                         "it no longer ignores", self.id, IGNORE_FILE)
            await asyncio.to_thread(self.index.forget_peer_seqs, self.id)
            await asyncio.to_thread(self.index.set_meta, remembered, ignore.fingerprint)
            self.catch_up_wake.set()
        return changed

    async def _prune(self) -> None:
        removed = await asyncio.to_thread(versions.prune, self.root, self.keep.max_age,
                                          self.keep.max_bytes, datetime.now(UTC))
        if removed:
            log.info("folder %s: removed %d kept version%s (older than %.0f days, or over "
                     "%d MiB in all)", self.id, len(removed), "" if len(removed) == 1 else "s",
                     self.keep.max_age / 86400, self.keep.max_bytes >> 20)

    def _recheck(self, paths: set[RelPath]) -> None:
        self._force |= paths
        self._scan_wake.set()

    # -- local changes -------------------------------------------------------------------------
    def _find_changes(
        self, dirty: set[RelPath] | None, force: set[RelPath], revive: set[RelPath]
    ) -> tuple[list[Signed], set[RelPath], set[RelPath]]:
        """Hash what differs from the index (or is in `force`), version it and store it.

        Paths in `revive` get a new version even when unchanged: a directory whose deletion
        lost to a change inside it. Runs in a thread. Returns the new versions, the paths
        still being written, and the paths hashed while their mtime was fresh (to hash again).
        """
        me = self.mesh.me.key
        now_ns = time.time_ns()
        racy: set[RelPath] = set()
        ignore = self.ignore
        tops = None if dirty is None else _tops(dirty)  # each subtree once, not per path in it
        seen = list(scan.walk(self.root, ignore)) if tops is None else self._seen_under(tops)
        known = {e.record.path: e for e in self.index.entries(self.id)} if tops is None else {
            e.record.path: e for p in tops for e in self.index.entries_under(self.id, p)}
        mine: list[_Done] = []  # new versions made here: stored and announced
        held: list[_Done] = []  # versions we hold already, whose inode moved
        unstable: set[RelPath] = set()
        present: set[str] = set()
        for s in seen:
            present.add(s.path)
            entry = known.get(s.path)
            if (entry is not None and s.path not in force and s.path not in revive
                    and not scan.differs(s, entry.record, entry.inode)):
                continue
            size, blocks = 0, tuple[bytes, ...]()
            if s.kind is Kind.FILE:
                hashed = scan.stable_hash(self.root, s)
                if hashed is None:
                    unstable.add(s.path)
                    continue
                size, blocks = hashed
                if 0 <= now_ns - s.mtime_ns < RACY * 1e9:
                    racy.add(s.path)
            old = entry.record if entry else None
            version = (old.version if old else Vector()).bump(me, now_ns // 10**9)
            record = FileRecord(s.path, s.kind, version, me,
                                False, size, s.mode, s.mtime_ns, blocks, s.target)
            if (entry is not None and not entry.record.deleted and s.path not in revive
                    and record.same_metadata(entry.record)):
                # Only the inode moved (an editor's copy-and-rename, say): same version.
                held.append((entry.record, entry.signature, s.inode, s.dev))
                continue
            mine.append((record, self._sign(record), s.inode, s.dev))
        for path, entry in known.items():
            # An ignored path stays as it was for the peers: ignoring a file deletes nothing.
            if (path not in present and not entry.record.deleted
                    and not ignore.match(path, entry.record.kind is Kind.DIR)):
                version = entry.record.version.bump(me, now_ns // 10**9)
                record = entry.record.tombstone(version, me)
                mine.append((record, self._sign(record), 0, 0))
        self.index.put(self.id, [*mine, *held])
        if mine and log.isEnabledFor(logging.DEBUG):
            log.debug("folder %s: new versions of %s", self.id,
                      ", ".join(f"{shown(r.path)} ({r.kind}{', deleted' if r.deleted else ''})"
                                for r, *_ in mine[:20]))
        return [Signed(record, signature) for record, signature, _, _ in mine], unstable, racy

    def _seen_under(self, tops: list[RelPath]) -> list[scan.Seen]:
        """What a walk sees under each of `tops`, none of which is below another."""
        return [s for top in tops for s in scan.walk_under(self.root, top, self.ignore)]

    def _directories(self) -> list[str]:
        return [e.record.path for e in self.index.entries(self.id)
                if e.record.kind is Kind.DIR and not e.record.deleted]

    def _sign(self, record: FileRecord) -> bytes:
        return self.mesh.sign(record.canonical(self.id))

    async def _announce(self, changes: list[Signed]) -> None:
        sent = 0
        for batch in batches(changes):
            await self.mesh.publish(Records(self.folder.id, batch))
            sent += len(batch)
        log.info("folder %s: announced %d change%s", self.id, sent, "" if sent == 1 else "s")
        self._too_large([s.record for s in changes if size_bound(s) > BATCH_BUDGET])

    def _too_large(self, records: list[FileRecord]) -> None:
        for record in records:
            if self._throttle.allow((record.path, "too large"), time.time()):
                log.warning("folder %s: %s cannot be announced: its record (%d blocks) is over "
                            "what one message carries", self.id, shown(record.path),
                            len(record.blocks))

    # -- remote records ------------------------------------------------------------------------
    async def take(self, source: str, records: Iterable[Signed]) -> list[Signed]:
        """Verify and judge remote records; queue those we must write, and return them."""
        # One at a time: judging compares with the version already waiting, then replaces it.
        async with self._judging:
            needs = await asyncio.to_thread(self._judge, source, list(records))
        if needs:
            self._need_wake.set()
        return needs

    def _judge(self, source: str, records: list[Signed]) -> list[Signed]:
        queued: list[Need] = []
        me = self.mesh.me.key
        for signed in records:
            record = signed.record
            if self.ignore.match(record.path, record.kind is Kind.DIR):
                continue  # it stays local here
            if not record.version.can_bump(me):
                # Taken, our next edit of it could not be counted: a faulty or forged history.
                if self._throttle.allow((source, "no room"), time.time()):
                    log.warning("folder %s: refused %s from %s: this node could not count its "
                                "next edit of it (its version names %d nodes, and version %d "
                                "of this one)", self.id, shown(record.path), source,
                                len(record.version.counters), record.version.get(me))
                continue
            self._weigh(Need(record, signed.signature, source), queued, verify=True)
        self.index.add_needs(self.id, queued)
        return [Signed(n.record, n.signature) for n in queued]

    def _weigh(self, need: Need, queued: list[Need], keep: bool = True,
               verify: bool = False) -> plan.Judgement:
        """Judge one version against ours and the one we wait for; queue it or (if `keep`)
        set it aside. With `verify`, only a version signed by its origin counts."""
        path = need.record.path
        entry, pending = self.index.get(self.id, path), self.index.need(self.id, path)
        verdict = plan.judge(entry.record if entry else None,
                             pending.record if pending else None, need.record)
        # History changes nothing, so only versions that would count are verified: every
        # member hears each version from several peers, and verifying is most of judging.
        if verify and verdict != plan.Judgement() and not self._signed(need):
            return plan.Judgement()
        if verdict.queue:
            queued.append(need)
        if verdict.drop_pending:
            self.index.drop_need(self.id, path)
        aside = [n for n, set_aside in ((need, keep and verdict.aside),
                                        (pending, verdict.pending_aside))
                 if set_aside and n is not None]
        self._set_aside(aside)
        return verdict

    def _signed(self, need: Need) -> bool:
        record = need.record
        if self.mesh.origin_key(record.origin, need.signature, record.canonical(self.id)):
            return True
        if self._throttle.allow((need.source, "signature"), time.time()):
            log.warning("folder %s: refused %s from %s: not signed by its origin %s",
                        self.id, shown(record.path), need.source, record.origin)
        return False

    def _set_aside(self, losers: list[Need]) -> None:
        """Keep losing versions to judge again, unless a version kept from its origin is newer."""
        if not losers:
            return
        kept = {(n.record.path, n.record.origin): n.record for n in self.index.losers(self.id)}
        self.index.add_losers(self.id, [n for n in losers if (
            old := kept.get((n.record.path, n.record.origin))) is None
            or n.record.version.compare(old.version) is not Order.OLDER])

    def _rejudge(self) -> int:
        """Judge the versions kept aside again, now that ours may have changed; runs in a thread.

        Returns how many are queued now. One that is queued, or is history (of what we hold,
        wait for, or keep aside besides), goes; one that still loses stays as it is.
        """
        queued: list[Need] = []
        losers = self.index.losers(self.id)
        for loser in losers:
            version = loser.record.version
            superseded = any(o.record.path == loser.record.path
                             and version.compare(o.record.version) is Order.OLDER for o in losers)
            revived = Need(loser.record, loser.signature, REVIVED)
            if superseded or not self._weigh(revived, queued, keep=False).aside:
                self.index.drop_loser(self.id, loser.record)
        self.index.add_needs(self.id, queued)
        return len(queued)

    async def _catch_ups(self) -> None:
        retry = RETRY_CATCH_UP
        while True:
            failed = False
            for key, address in self.mesh.sources(self.id):
                try:
                    await self.catch_up(key, address)
                except IndexUnusable:
                    raise  # the node stops, saying why
                except Exception as e:
                    failed = True
                    if self._throttle.allow((key, "catch-up"), time.time()):
                        log.info("folder %s: catch-up from %s failed: %s", self.id, address,
                                 shown(e, 300))
            # A peer that just came up may refuse us until it has heard back from us: soon again.
            retry = min(retry * 2, CATCH_UP_EVERY) if failed else RETRY_CATCH_UP
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.catch_up_wake.wait(),
                                       retry if failed else CATCH_UP_EVERY)
            self.catch_up_wake.clear()

    async def catch_up(self, key: str, address: str) -> None:
        """Take in what a peer's index holds that we have not taken from it yet."""
        remembered = f"epoch {self.id} {key}"
        epoch = await asyncio.to_thread(self.index.get_meta, remembered) or ""
        since = await asyncio.to_thread(self.index.peer_seq, self.id, key, epoch)
        while True:
            page = await self.mesh.fetch_index(address, IndexRequest(self.folder.id, since))
            if page.epoch != epoch:
                if since:  # not the index we counted in (the peer reset it): from its start
                    since = 0
                    continue
                epoch = page.epoch
                await asyncio.to_thread(self.index.set_meta, remembered, epoch)
            await self.take(key, page.records)
            await asyncio.to_thread(self.index.set_peer_seq, self.id, key, epoch, page.seq)
            if not page.records or page.seq <= since:
                return
            since = page.seq

    def answer_index(self, since: int) -> Records:
        """A page of our index after `since`, for a peer catching up; runs in a thread.

        A page holds what fits in one message; a record that fits in none is passed over (and
        said so), so that catch-up goes on past it.
        """
        entries = self.index.since(self.id, since)
        if not entries:
            return Records(self.folder.id, (), self.epoch, self.index.max_seq(self.id))
        signed = [Signed(e.record, e.signature) for e in entries]
        page, covered = first_batch(signed)
        self._too_large([s.record for s in signed[:covered] if size_bound(s) > BATCH_BUDGET])
        return Records(self.folder.id, page, self.epoch, entries[covered - 1].seq)

    def answer_blocks(self, hashes: tuple[bytes, ...]) -> list[bytes | None]:
        """The blocks we hold, verified against their hash; runs in a thread."""
        return [self._local_block(h) for h in hashes]

    def _local_block(self, digest: bytes) -> bytes | None:
        found = self.index.find_block(self.id, digest)
        if found is None:
            return None
        data = apply.read_block(self.root, RelPath(found[0]), found[1])
        return data if data is not None and _sha256(data) == digest else None

    # -- writing -------------------------------------------------------------------------------
    async def _applies(self) -> None:
        wait: float | None = None  # the one timer: until the first path waiting is due again
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._need_wake.wait(), wait)
            self._need_wake.clear()
            wait = await self.apply_due() if self.mounted else None

    async def apply_due(self) -> float | None:
        """Write the queued versions not waiting for a retry; returns the seconds until one is
        due again (None: none is)."""
        loaded = NEEDS_PER_PASS + len(self._retries)
        needs = await asyncio.to_thread(self.index.needs, self.id, loaded)
        complete = len(needs) < loaded
        due = self._retries.due(needs, self.clock.now(), complete)
        creates, deletes = _ordered(due)
        writes = await self._in_thread(self._apply_locally, creates)
        # File contents go in groups, so a thousand small files cost a few round trips.
        for at in range(0, len(writes), FILES_PER_GROUP):
            await self._write_files(writes[at : at + FILES_PER_GROUP])
        # Deletions last: a renamed file's new path takes its blocks from the old one.
        await self._in_thread(self._apply_locally, deletes)
        self._report()
        if await asyncio.to_thread(self._rejudge):
            self._need_wake.set()
        if self._temp_dirs:
            async with self._disk:
                await asyncio.to_thread(self._sweep_temps)
        if not complete:  # the rest next time (a path waiting among them may be due already)
            return RETRY_NEEDS
        wait = self._retries.next_due(self.clock.now())
        if due and not self._need_wake.is_set():
            # Left without a retry of its own (the disk changed under it, say): soon again.
            files, _ = await asyncio.to_thread(self.index.need_totals, self.id)
            if files > len(self._retries):
                wait = RETRY_NEEDS if wait is None else min(wait, RETRY_NEEDS)
        return wait

    def retry_now(self) -> None:
        """Try every version waiting for a retry soon, from the start of its backoff (a member
        came online: it may hold what they lack)."""
        self._retries.retry_now()
        self._need_wake.set()

    def _fail(self, need: Need, cause: str, reason: str, lack: Lack | None = None) -> None:
        wait = self._retries.failed(need, reason, self.clock.now(), lack)
        self._failures[need.record.path] = (cause, reason, wait)

    def _report(self) -> None:
        """Log this pass's failures: a few per cause, each path at most once per window."""
        failures, self._failures = self._failures, {}
        now, logged, unlogged = self.clock.now(), dict[str, int](), 0
        for path, (cause, reason, wait) in sorted(failures.items()):
            if logged.get(cause, 0) >= LOGGED_PER_PASS:
                unlogged += 1
            elif self._throttle.allow((path, cause), now):
                logged[cause] = logged.get(cause, 0) + 1
                # %r: a peer chose the path, and it may hold a newline or an escape sequence.
                log.warning("folder %s: %r waits: %s; trying again in %.0f s", self.id, path,
                            reason, wait)
        if unlogged and self._throttle.allow(("unlogged", "waits"), now):
            log.warning("folder %s: %d more path%s wait%s (meshsync status lists them)", self.id,
                        unlogged, "" if unlogged == 1 else "s", "s" if unlogged == 1 else "")

    async def _in_thread(self, work: Callable[[_Batch, T], R], arg: T) -> R:
        """Run a batch of disk work in a thread; paths it found changed are rescanned, and
        versions it wrote or could not write update their retries."""
        batch = _Batch()
        try:
            async with self._disk:
                result = await asyncio.to_thread(work, batch, arg)
        finally:
            self._revive |= batch.revive
            if batch.changed or batch.revive:
                self._dirty |= batch.changed
                self._scan_wake.set()
            for need, cause, reason in batch.failed:
                self._fail(need, cause, reason)
        for record, *_ in batch.done:  # in the index now
            self._retries.succeeded(record.path)
        return result

    def _attempt(self, batch: _Batch, need: Need, step: Callable[[], _Done | None]) -> None:
        """Run one path's step; the disk having changed or a write failing spoils only it."""
        try:
            done = step()
        except apply.Changed:
            batch.changed.add(need.record.path)
            return
        except (apply.UnsafePath, apply.BadBlock, OSError, ValueError) as e:
            batch.failed.append((need, "write", f"cannot write: {shown(e)}"))
            return
        if done is not None:
            batch.done.append(done)

    def _apply_locally(self, batch: _Batch, needs: list[Need]) -> list[_Write]:
        """Apply what needs no transfer, in one index transaction; return files to write."""
        writes: list[_Write] = []
        for need in needs:
            self._attempt(batch, need, partial(self._apply_one, batch, need, writes))
        self.index.put(self.id, batch.done)
        return writes

    def _apply_one(self, batch: _Batch, need: Need, writes: list[_Write]) -> _Done | None:
        record = need.record
        entry = self.index.get(self.id, record.path)
        verdict = decide(entry.record if entry else None, record)
        if verdict.action is Action.IGNORE or self.ignore.match(
                record.path, record.kind is Kind.DIR):
            self.index.drop_need(self.id, record.path)
            return None
        expected = _expected(entry)
        if (entry is not None and not entry.record.deleted and not record.same_content(entry.record)
                and record.version.compare(entry.record.version) is Order.CONCURRENT):
            # Ours loses now, but may win again should what replaces it change (see _rejudge).
            self._set_aside([Need(entry.record, entry.signature, "")])
        if record.deleted:
            try:
                apply.remove(self.root, record.path, expected, self._keeper(batch, None))
            except apply.NotEmpty:
                # What is left in it was kept (a concurrent change beat its deletion), unless
                # a deletion of it is still to come: then the directory stays as a new version.
                if not self.index.deletions_under(self.id, record.path):
                    batch.revive.add(record.path)
                raise
            return _done(need, None)
        loser = entry.record if verdict.conflict and entry is not None else None
        if not self._parent_present(record.path):
            # Its directory's own record has not come yet. Writing now would make the
            # directory, and the next scan would take it for a local creation (an echo).
            batch.failed.append((need, "directory", "its directory has not come yet"))
            return None
        if record.kind is Kind.DIR:
            return _done(need, apply.make_dir(self.root, record, expected))
        if record.kind is Kind.SYMLINK:
            keep = self._keeper(batch, loser)
            return _done(need, apply.make_symlink(self.root, record, expected, keep))
        if entry is not None and not entry.record.deleted and entry.record.same_content(record):
            return _done(need, apply.set_metadata(self.root, record, expected))
        writes.append(_Write(need, expected, loser))
        return None

    def _parent_present(self, path: RelPath) -> bool:
        """False only while the parent is absent: a link or file there is the writer's to refuse."""
        above = parent(path)
        return above is None or (self.root / above).is_symlink() or (self.root / above).exists()

    async def _write_files(self, writes: list[_Write]) -> None:
        """Write a group of files: local blocks first, then the rest in shared requests.

        A file that lacked blocks at its last attempt is not opened again unless a source has
        some of its first missing blocks now, or the index holds new blocks that may fill it.
        """
        seq = await asyncio.to_thread(self.index.max_seq, self.id)
        known = {w.need.record.path: (w.need.record, lack) for w in writes
                 if (lack := self._retries.lack(w.need)) is not None}
        settled = await asyncio.to_thread(self._nothing_new_here, known, seq)
        source = writes[0].need.source if writes else ""
        unsupplied = await self._probe([(known[path][0], lack) for path, lack in settled.items()],
                                       source)
        lacks = {path: settled[path] for path in unsupplied}
        trying = [w for w in writes if w.need.record.path not in unsupplied]
        opened: list[_Opened] = []
        try:
            wanted, spoiled = await self._in_thread(self._open_all, (trying, opened, set(settled)))
            for write, _ in opened:
                record = write.need.record
                self._transfers[record.path] = _Progress(record.path, record.size)
            failed = await self._fetch_all(wanted, source, spoiled)
            spoiled |= set(failed)
            lacks |= {w.need.record.path: lack for w, incoming in opened
                      if w.need.record.path not in spoiled
                      and (lack := _lack(incoming, seq)) is not None}
            # A version set aside and queued again is only worth the wait while someone still
            # holds it: if no member can supply it, it was replaced everywhere.
            gone = [w.need for w in writes
                    if w.need.record.path in lacks and w.need.source == REVIVED]
            for need in gone:  # unless a newer version was queued meanwhile
                await asyncio.to_thread(self.index.drop_need, self.id, need.record.path,
                                        need.record)
                self._retries.succeeded(need.record.path)
            for write in writes:
                need = write.need
                if (lack := lacks.get(need.record.path)) is not None and need not in gone:
                    self._fail(need, "blocks", f"no member has all of its blocks ({lack.missing}"
                               f" of {len(need.record.blocks)} missing)", lack)
                elif need.record.path in failed:
                    self._fail(need, "write",
                               f"cannot write: {shown(failed[need.record.path])}")
            # A file lacking a block waits (its temp kept); the others go into place now.
            await self._in_thread(self._commit_all, [
                (w, i) for w, i in opened
                if w.need.record.path not in lacks and w.need.record.path not in spoiled])
        except OSError as e:  # syncing the folder failed (a full disk, say): all wait
            for write in writes:
                if write.need.record.path not in lacks | self._failures.keys():
                    self._fail(write.need, "write", f"cannot write: {shown(e)}")
        finally:
            # A temp file left behind is resumed later, unless its version is no longer wanted
            # by then (see _sweep_temps); only its handles go now.
            self._temp_dirs |= {w.need.record.path.rpartition("/")[0]
                                for w, incoming in opened if not incoming.closed}
            await asyncio.to_thread(_close_all, opened)
            for write, _ in opened:
                self._transfers.pop(write.need.record.path, None)

    def _nothing_new_here(self, known: dict[RelPath, tuple[FileRecord, Lack]],
                          seq: int) -> dict[RelPath, Lack]:
        """Of the files whose temp lacked blocks, those that no block put in the index since
        can fill, each with its lack brought up to `seq`; runs in a thread."""
        if not known:
            return {}
        oldest = min(lack.seq for _, lack in known.values())
        news = self.index.since(self.id, oldest, LOCAL_NEWS) if oldest < seq else []
        if len(news) == LOCAL_NEWS:  # too much changed to look through: all look again
            return {path: lack for path, (_, lack) in known.items() if lack.seq == seq}
        put_at = {digest: e.seq for e in news for digest in e.record.blocks}  # the last put
        return {path: replace(lack, seq=seq) for path, (record, lack) in known.items()
                if all(put_at.get(digest, 0) <= lack.seq for digest in record.blocks)}

    async def _probe(self, lacking: list[tuple[FileRecord, Lack]], source: str) -> set[RelPath]:
        """Of files known to lack blocks, those no source has any of the first missing ones of."""
        asking = self._asking(source)
        supplied: set[RelPath] = set()
        wanted = [(r.path, r.blocks[i]) for r, lack in lacking for i in lack.first]
        for part in _parts(wanted, lambda path: path in supplied or asking.gave_up(path)):
            got = await self._fetch(part, asking)
            supplied.update(path for path, digest in part if digest in got)
        return {r.path for r, _ in lacking} - supplied

    async def _fetch_all(self, wanted: list[_Wanted], source: str,
                         skip: set[RelPath]) -> dict[RelPath, Exception]:
        """Fetch the blocks wanted and write them; returns the files a write failed for."""
        asking = self._asking(source)
        failed: dict[RelPath, Exception] = {}
        blocks = [(w[0].record.path, w) for w in wanted]
        for part in _parts(blocks, lambda path: path in skip or path in failed
                           or asking.gave_up(path)):
            got = await self._fetch([(path, w[2]) for path, w in part], asking)
            found = [(w, got[w[2]]) for _, w in part if w[2] in got]
            failed.update(await asyncio.to_thread(_write_all, found))
            for (incoming, _, _), data in found:
                if progress := self._transfers.get(incoming.record.path):
                    progress.done += len(data)
        return failed

    def _open_all(
        self, batch: _Batch, group: tuple[list[_Write], list[_Opened], set[RelPath]]
    ) -> tuple[list[_Wanted], set[RelPath]]:
        """Open each file's temp and fill it from local blocks (but those in the set, which the
        index holds nothing new for); return the blocks still wanted and the files that failed."""
        writes, opened, settled = group
        wanted: list[_Wanted] = []
        for write in writes:
            look = write.need.record.path not in settled
            self._attempt(batch, write.need, partial(self._open_one, write, opened, wanted, look))
        return wanted, {need.record.path for need, _, _ in batch.failed}

    def _open_one(self, write: _Write, opened: list[_Opened], wanted: list[_Wanted],
                  look: bool) -> None:
        record = write.need.record
        incoming = apply.Incoming.open(self.root, record)
        opened.append((write, incoming))
        if look:
            missing = self._fill_locally(incoming, record)
        else:
            have = incoming.have()
            missing = [i for i in range(len(record.blocks)) if i not in have]
        wanted.extend((incoming, i, record.blocks[i]) for i in missing)

    def _sweep_temps(self) -> None:
        """Delete the temporary files of versions we no longer wait for (replaced, dropped, or
        beaten by a local edit); those of waiting versions stay, to be resumed."""
        wanted: dict[str, set[str]] = {}
        for need in self.index.needs(self.id):
            head = need.record.path.rpartition("/")[0]
            wanted.setdefault(head, set()).add(apply.temp_name(need.record))
        for directory in list(self._temp_dirs):
            if not apply.remove_temps(self.root, directory, wanted.get(directory, set())):
                self._temp_dirs.discard(directory)

    def _commit_all(self, batch: _Batch, opened: list[_Opened]) -> None:
        """Move every finished file into place, then record them in one transaction.

        Contents are made durable before any name points at them, and names before the index
        records them, with one sync for the group each time (see apply.Incoming.seal).
        """
        for write, incoming in opened:
            self._attempt(batch, write.need, incoming.seal)
        sealed = [(write, incoming) for write, incoming in opened if incoming.sealed]
        if not sealed:
            return
        apply.sync(self.root)
        for write, incoming in sealed:
            self._attempt(batch, write.need, partial(self._commit_one, batch, write, incoming))
        apply.sync(self.root)
        self.index.put(self.id, batch.done)

    def _commit_one(self, batch: _Batch, write: _Write, incoming: apply.Incoming) -> _Done:
        keep = self._keeper(batch, write.loser)
        return _done(write.need, incoming.commit(write.expected, keep))

    def _fill_locally(self, incoming: apply.Incoming, record: FileRecord) -> list[int]:
        """Write the blocks we already hold anywhere in the folder; return the rest."""
        have = incoming.have()
        missing = []
        for i, digest in enumerate(record.blocks):
            if i in have:
                continue
            data = self._local_block(digest)
            if data is None:
                missing.append(i)
            else:
                incoming.write_block(i, data)
        return missing

    def _asking(self, source: str) -> Asking:
        """The online members to ask for blocks in one attempt, `source` first."""
        sources = sorted(self.mesh.sources(self.id), key=lambda s: s[0] != source)
        return Asking([address for _, address in sources])

    async def _fetch(self, part: list[tuple[RelPath, bytes]],
                     asking: Asking) -> dict[bytes, bytes]:
        """The blocks (of the files named) that some member has, asking each in turn.

        A member that has none of a file's blocks asked for is not asked for that file again
        in this attempt, nor one that fails for anything: what no member can supply costs a
        request per member, not one per 64 blocks of it.
        """
        got: dict[bytes, bytes] = {}
        for address in asking.addresses:
            ask = [(p, d) for p, d in part if d not in got and asking.asks(address, p)]
            wanted = tuple(dict.fromkeys(d for _, d in ask))
            if not wanted:
                continue
            try:
                answer = await self.mesh.fetch_blocks(address, BlockRequest(self.folder.id, wanted))
            except Exception as e:
                log.debug("folder %s: blocks from %s failed: %s", self.id, address,
                          shown(e, 300))
                asking.failed.add(address)
                continue
            # Off the loop: 8 MiB of hashing is milliseconds the loop could serve peers in.
            verified = await asyncio.to_thread(_verified, wanted, answer)
            got.update(verified)
            had = set(verified)
            asking.barren |= {(address, p) for p, _ in ask} - {(address, p) for p, d in ask
                                                               if d in had}
        return got

    def _keeper(self, batch: _Batch, loser: FileRecord | None) -> apply.KeepOld:
        """How to keep what sync replaces: a losing concurrent edit as a conflict copy beside
        the winner (scanned and synced like any file), anything else under versions/."""
        def keep(dir_fd: int, name: str, rel: RelPath) -> None:
            if loser is not None and loser.kind is Kind.FILE and not conflicts.is_copy(rel):
                copy = conflicts.copy_path(rel, loser.mtime_ns, loser.origin)
                if apply.keep_beside(dir_fd, name, copy.rpartition("/")[2]):
                    log.info("folder %s: conflict on %s: the other version is kept as %s",
                             self.id, shown(rel), shown(copy))
                    batch.changed.add(copy)
                    return
            # A copy of that version is there already (made by a peer), or it is not an edit.
            self._keep_version(dir_fd, name, rel)
        return keep

    def _keep_version(self, dir_fd: int, name: str, rel: RelPath) -> None:
        apply.move_to_versions(self.root, dir_fd, name, rel, time.time_ns())

    # -- versions ------------------------------------------------------------------------------
    def versions_of(self, rel: RelPath | None) -> list[versions.Version]:
        """The kept versions of a path and of all below it (None: the whole folder), oldest
        first; runs in a thread."""
        return [v for v in versions.all_versions(self.root)
                if rel is None or v.path == rel or v.path.startswith(rel + "/")]

    async def restore(self, rel: RelPath, at: datetime | None) -> versions.Version:
        """Put back the newest version of `rel` kept at or before `at`; it syncs as an edit.

        What is at `rel` now is kept as a version first. RestoreError says why not.
        """
        chosen = versions.pick(await asyncio.to_thread(versions.list_versions, self.root, rel), at)
        if chosen is None:
            raise versions.RestoreError(f"no version of {rel} is kept" + (
                f" from {at:%Y-%m-%d %H:%M:%S} UTC or before" if at else ""))
        async with self._disk:
            await asyncio.to_thread(versions.restore, self.root, chosen, self._keep_version)
        self._dirty.add(rel)
        self._scan_wake.set()
        log.info("folder %s: restored %s as kept at %s", self.id, shown(rel), chosen.when)
        return chosen

    # -- status --------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int, int]:
        """(versions to write, their bytes, conflict copies): status's part read from the index,
        in a thread."""
        files, size = self.index.need_totals(self.id)
        copies = sum(conflicts.is_copy(e.record.path) for e in self.index.conflict_copies(self.id))
        return files, size, copies

    def status(self, counts: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """This folder's line in `meshsync status --json`; on the loop, which owns the
        transfers and retries it lists (`counts` read beforehand, or now)."""
        files, size, copies = counts or self.counts()
        waiting = len(self._retries) if files else 0  # the waits of dropped needs go next pass
        return {
            "id": self.id,
            "path": str(self.root),
            "state": "unmounted" if not self.mounted else "syncing" if files else "in sync",
            "need_files": files,
            "need_bytes": size,
            "conflicts": copies,
            "transfers": [{"path": p.path, "size": p.size, "done": p.done}
                          for p in self._transfers.values()],
            "waiting": self._retries.listing(self.clock.now(), WAITING_SHOWN) if waiting else [],
            "waiting_count": waiting,
        }


    def conflicts(self) -> list[dict[str, Any]]:
        """The conflict copies in the folder: what each name says, and the version it lost to."""
        found = []
        for entry in self.index.conflict_copies(self.id):
            copy = conflicts.parse(entry.record.path)
            if copy is None:
                continue
            current = self.index.get(self.id, copy.original)
            found.append({
                "folder": self.id, "path": copy.path, "original": copy.original,
                "copy": {"origin": copy.origin, "time": _iso(copy.when.timestamp())},
                "current": None if current is None or current.record.deleted else {
                    "origin": current.record.origin,
                    "time": _iso(current.record.mtime_ns / 1e9)},
            })
        return found


def _iso(seconds: float) -> str:
    """A time as `2026-11-25T10:15:00Z`."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_epoch() -> str:
    """A fresh identity for an index database."""
    return secrets.token_hex(8)


def _expected(entry: Entry | None) -> scan.Seen | None:
    """What the index says is on disk, for the stat-before-overwrite check."""
    if entry is None or entry.record.deleted:
        return None
    r = entry.record
    return scan.Seen(r.path, r.kind, r.size, r.mode, r.mtime_ns, entry.inode, entry.dev, r.target)


def _tops(paths: Iterable[RelPath]) -> list[RelPath]:
    """The paths that are not below another of them."""
    tops: set[RelPath] = set()
    for path in sorted(paths, key=lambda p: p.count("/")):  # ancestors come first
        parts = path.split("/")
        if not any("/".join(parts[:n]) in tops for n in range(1, len(parts))):
            tops.add(path)
    return sorted(tops)


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


def _verified(hashes: tuple[bytes, ...], blocks: list[bytes | None]) -> dict[bytes, bytes]:
    """The blocks of an answer that match the hash they were asked for by."""
    return {digest: data for digest, data in zip(hashes, blocks, strict=True)
            if data is not None and _sha256(data) == digest}


def _write_all(found: list[tuple[_Wanted, bytes]]) -> dict[RelPath, Exception]:
    """Write the blocks found; returns the files a write failed for (the rest of each skipped)."""
    failed: dict[RelPath, Exception] = {}
    for (incoming, i, _), data in found:
        if incoming.record.path not in failed:
            try:
                incoming.write_block(i, data)
            except (OSError, apply.BadBlock) as e:
                failed[incoming.record.path] = e
    return failed


def _parts(items: list[tuple[RelPath, T]], skip: Callable[[RelPath], bool],
           ) -> Iterator[list[tuple[RelPath, T]]]:
    """Items (each of a file) a request's worth at a time, leaving out the files `skip` names
    by the time their items come: a generator, so what earlier requests found counts."""
    part: list[tuple[RelPath, T]] = []
    for item in items:
        if skip(item[0]):
            continue
        part.append(item)
        if len(part) == MAX_BLOCKS_PER_REQUEST:
            yield part
            part = []
    if part:
        yield part


def _lack(incoming: apply.Incoming, seq: int) -> Lack | None:
    """What a temp still lacks (None: nothing), with the index's seq before it was filled."""
    have = incoming.have()
    missing = len(incoming.record.blocks) - len(have)
    if not missing:
        return None
    absent = (i for i in range(len(incoming.record.blocks)) if i not in have)
    return Lack(seq, tuple(itertools.islice(absent, MAX_BLOCKS_PER_REQUEST)), missing)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
