"""One synced folder: wires its scanner, judge and puller, and answers peers and status.

The loop of a folder: the watcher (and a rare full rescan, the safety net) finds paths that
differ from the index; the scanner hashes, versions and stores them, and they are announced.
Remote records (notices, and index pages read from members) go to the judge, which queues
what must be written; the puller writes it block by block, reusing blocks found locally and
fetching the rest from members.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from meshsync.control.protocol import ControlError
from meshsync.core import plan
from meshsync.core.errors import MeshsyncError
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, block_count
from meshsync.core.throttle import shown
from meshsync.core.wire import (
    BATCH_BUDGET,
    FolderId,
    Listless,
    Lists,
    Progress,
    Records,
    Signed,
    first_batch,
    size_bound,
)
from meshsync.fs import apply, scan, versions
from meshsync.fs.ignore import IGNORE_FILE, Ignore
from meshsync.fs.watch import stop_early, watch
from meshsync.node import report, transfer
from meshsync.node.catchup import CatchUp, Indexes
from meshsync.node.clock import Clock
from meshsync.node.config import Folder, Keep, MinFree, Mode, mib
from meshsync.node.judge import REVERTED, Judge, Verifier
from meshsync.node.keeper import keep_version
from meshsync.node.place import Place
from meshsync.node.puller import Puller
from meshsync.node.scanner import RACY, Found, Scanner
from meshsync.node.transfer import Rate, Sources
from meshsync.store.index import Index, Need

log = logging.getLogger("meshsync.folder")

# The watcher sees every change, so a full rescan is only the safety net under it: hourly (as
# Syncthing's default with its watcher on), every minute while the folder cannot be watched,
# and never more than 1 % of the time (a scan of 100k files takes seconds).
RESCAN_EVERY = 3600.0
RESCAN_UNWATCHED = 60.0
RESCAN_SHARE = 0.01
UNMOUNTED_CHECK_EVERY = 2.0
RETRY_UNSTABLE = 0.5
WATCHED_WITHIN = 60.0  # seconds a full scan waits for the watches before walking all the same
# Blocks of lists looked through and rebuilt per batch of records sent without their lists
# (16 MiB of hashes to hash); past it, the rest are asked for whole.
REBUILT_PER_BATCH = 1 << 19
OVERRIDDEN_PER_PAGE = 1000  # versions an override stores and announces at a time


class Mesh(Verifier, Sources, Indexes, Protocol):
    """What a folder needs of the node: signing, keys, peers and the network."""

    def sign(self, message: bytes) -> bytes:
        """The signature of a record's bytes by this node."""

    def untrusted_origin(self, origin: str) -> str:
        """One line for people: which node `origin` is, and the command that would trust it."""

    async def publish(self, notice: Records, to: str | None = None) -> None:
        """Send a notice to the coordinator and gossip it to the members sharing its folder;
        `to` one member alone (its vector key)."""

    def tell(self, kind: str, **fields: Any) -> None:
        """Tell those following the node's events; `origin`, a vector key, is told as the
        node's ID and name. From any thread."""



class FolderSync:
    """The sync of one folder."""

    def __init__(self, folder: Folder, index: Index, mesh: Mesh, epoch: str,
                 keep: Keep | None = None, clock: Clock | None = None,
                 min_free: MinFree | None = None, catch_up_every: float = 5.0) -> None:
        self.place = Place(folder, index, tell=mesh.tell)
        self.mesh = mesh
        self.epoch = epoch
        self.node_keep = keep or Keep()  # for a folder without bounds of its own
        self.clock = clock or Clock()  # for retries and rates; tests pass their own
        def sign(record: FileRecord) -> bytes:
            return mesh.sign(record.canonical(folder.id))

        self._sign = sign

        self.scanner = Scanner(self.place, mesh.me.key, sign)
        self.judge = Judge(self.place, mesh)
        self.puller = Puller(self.place, self.judge, mesh, self.clock, self._rescan,
                             min_free or MinFree(), mesh.me.key, sign, self._publish,
                             self._covered)
        self.sent = Rate()
        self.catch_up = CatchUp(self.place, mesh, epoch, self.take, self._too_large,
                                self.rebuild, self.clock, catch_up_every)
        self.mounted = True
        self._prepared = False  # prepare() has looked for the folder
        self.scanned = False  # a full scan has completed since start
        self._dirty: set[RelPath] = set()
        self._force: set[RelPath] = set()
        self._revive: set[RelPath] = set()  # directories to version anew
        self._want_full_scan = True
        self._release = False  # held-back versions to judge again
        self._scan_wake = asyncio.Event()
        self._rewatch = asyncio.Event()
        self._watching = False  # the watcher is up: full rescans are rare
        # The watches are in place, or cannot be: a full scan walks only then, so that what
        # changes behind its walk is reported. Cleared when a new watcher is to start.
        self._watched = threading.Event()

    @property
    def id(self) -> FolderId:
        """The folder ID."""
        return self.place.id

    @property
    def root(self) -> Path:
        """The folder's directory."""
        return self.place.root

    @property
    def ignore(self) -> Ignore:
        """The ignore rules in force."""
        return self.place.ignore

    @property
    def keep(self) -> Keep:
        """How much of what sync replaces in this folder it keeps."""
        return self.place.folder.keep or self.node_keep

    @property
    def mode(self) -> Mode:
        """Which way it syncs."""
        return self.place.folder.mode

    def configure(self, folder: Folder) -> None:
        """Take the folder's settings as changed while it runs."""
        was = self.mode
        self.place.folder = folder
        if was is Mode.RECEIVE_ONLY and folder.mode is not Mode.RECEIVE_ONLY:
            self.place.local = {}  # what changed here is changes to send now: scan it all
            self.place.copies = set()  # sent as any file now
            self._want_full_scan = True
            self._scan_wake.set()
        self.puller.wake.set()  # a folder that was send-only writes what it waits for now

    # -- lifetime ------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Look for the folder, making it (and its marker) the first time ever. The node does
        this before it shows itself on the LAN: a folder that cannot be made stops it there,
        in one line."""
        try:
            self.mounted = await asyncio.to_thread(self._check_marker, True)
        except OSError as e:
            raise MeshsyncError(f"cannot create the folder {self.root}: {e.strerror or e}:"
                                " create it yourself, or sync another") from None
        self._prepared = True

    async def run(self) -> None:
        """Scan, watch, apply and catch up until cancelled."""
        if not self._prepared:
            await self.prepare()
        if self.mounted:
            await self._reload_ignore()
        else:  # its watch from the start would watch the mount point, not what comes there
            await asyncio.to_thread(stop_early, self.root)
        self._scan_wake.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(), name=f"watch {self.id}")
                tg.create_task(self._scans(), name=f"scan {self.id}")
                tg.create_task(self.puller.run(self._writes), name=f"apply {self.id}")
                tg.create_task(self.catch_up.run(), name=f"catch up {self.id}")
        finally:
            self._watched.set()  # a scan waiting for the watches must not hold up the stop

    def _writes(self) -> bool:
        """Whether what the mesh changed is written here now."""
        return self.mounted and self.mode is not Mode.SEND_ONLY

    def _take_stock(self) -> tuple[set[RelPath], bool]:
        """(the paths whose index rows were set aside as damaged, whether the folder is
        there); runs in a thread."""
        return self.place.index.take_damaged(self.id), self._check_marker(False)

    def _check_marker(self, first: bool) -> bool:
        """Whether the folder is there; makes it (and its marker) only the first time ever."""
        marker = self.root / ".meshsync"
        if marker.is_dir():
            return True
        if self.place.index.max_seq(self.id) == 0 and first:
            marker.mkdir(parents=True, exist_ok=True)
            return True
        if self.place.throttle.allow("unmounted", time.time()):
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
        self._watching = True
        self._watched.clear()
        try:
            async for paths in watch(self.root, self._watched.set):
                self._dirty |= paths
                self._scan_wake.set()
        except FileNotFoundError:
            self._watched.set()
            self._scan_wake.set()  # the folder itself went: the marker check will say so
        except OSError as e:  # out of inotify watches, say: the rescans must do its work
            self._watched.set()
            log.warning("folder %s: cannot watch %s for changes (%s); rescanning it every %.0f s"
                        " instead", self.id, self.root, e, RESCAN_UNWATCHED)
            self._watching = False
            await asyncio.sleep(RESCAN_EVERY)
            self._rewatch.set()  # try again: watches may have been freed
        finally:
            self._watching = False

    async def _scans(self) -> None:
        last_full, took = 0.0, 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._scan_wake.wait(), UNMOUNTED_CHECK_EVERY)
            self._scan_wake.clear()
            # One trip to a thread: an idle folder comes here every UNMOUNTED_CHECK_EVERY.
            damaged, mounted = await asyncio.to_thread(self._take_stock)
            if damaged:  # rows the index could not read: what the disk holds, and ask again
                log.warning("folder %s: %d damaged index rows set aside; rescanning them and "
                            "asking peers again", self.id, len(damaged))
                self._dirty |= damaged
                await asyncio.to_thread(self.place.index.forget_peer_seqs, self.id)
                self.catch_up.wake.set()
            was_mounted, self.mounted = self.mounted, mounted
            if self.mounted != was_mounted:
                self._watched.clear()  # before the full scan this comes back to starts
                self._rewatch.set()
            if not self.mounted:
                continue
            if not was_mounted:
                log.info("folder %s is back at %s", self.id, self.root)
                self._want_full_scan = True
            full = (self._want_full_scan
                    or time.monotonic() - last_full > rescan_every(self._watching, took))
            dirty, self._dirty = self._dirty, set()
            self._want_full_scan = False
            if full:
                last_full = time.monotonic()
                await self._prune()
            if full or IGNORE_FILE in dirty:
                full = await self._reload_ignore() or full
            force, self._force = self._force, set()
            revive, self._revive = self._revive, set()
            found, began = Found(), time.monotonic()
            looked = bool(full or dirty or force or revive)
            if looked:
                async with self.place.disk:
                    found = await self._scan(None if full else dirty | force | revive, force,
                                             revive)
            if full and (found.hashed or not self.scanned):
                log.info("folder %s: scanned %d entries in %.1f s; hashed %d file%s (%s)",
                         self.id, found.entries, time.monotonic() - began, found.hashed,
                         "" if found.hashed == 1 else "s", mib(found.hashed_bytes))
            if full:
                took = time.monotonic() - began
                self.scanned = True
                self._release = True  # what is held back may be history by now
            if self._release:
                await self._release_held()
            if found.changes:
                sent = len(found.changes)
                log.info("folder %s: announced %d change%s", self.id, sent,
                         "" if sent == 1 else "s")
            self.place.racy = (self.place.racy - force) | found.racy
            if found.racy:
                asyncio.get_running_loop().call_later(RACY, self._recheck, found.racy)
            if found.temp_dirs - self.puller.temp_dirs:
                # A previous run's, say (a full scan's walk finds them all): swept soon.
                self.puller.temp_dirs |= found.temp_dirs
                self.puller.wake.set()
            if found.unstable:
                self._dirty |= found.unstable
                asyncio.get_running_loop().call_later(RETRY_UNSTABLE, self._scan_wake.set)
            if looked:  # what the puller waits for may be on disk now
                self.puller.wake.set()

    async def _reload_ignore(self) -> bool:
        """Read .meshsyncignore again; True if the rules changed (the caller rescans all).

        Records of ignored paths were passed over, so when the rules differ from those the
        index was last filled under (even across a restart), peers are read from the start.
        """
        ignore = await asyncio.to_thread(Ignore.load, self.root)
        changed, self.place.ignore = ignore.fingerprint != self.place.ignore.fingerprint, ignore
        remembered = f"ignore {self.id}"
        before = await asyncio.to_thread(self.place.index.get_meta, remembered)
        if before != ignore.fingerprint:
            if before is not None:
                log.info("folder %s: %s changed; rescanning, and asking peers again for what "
                         "it no longer ignores", self.id, IGNORE_FILE)
            await asyncio.to_thread(self.place.index.forget_peer_seqs, self.id)
            await asyncio.to_thread(self.place.index.set_meta, remembered, ignore.fingerprint)
            self.catch_up.wake.set()
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


    async def _scan(self, dirty: set[RelPath] | None, force: set[RelPath],
                    revive: set[RelPath]) -> Found:
        """Run the scanner in a thread, announcing what it stores as it goes."""
        stored: asyncio.Queue[tuple[list[Signed], range] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def announce(changes: list[Signed], seqs: range) -> None:  # from the scanning thread
            loop.call_soon_threadsafe(stored.put_nowait, (changes, seqs))

        def scan() -> Found:
            try:
                return self.scanner.find_changes(dirty, force, revive, announce,
                                                 lambda: self._watched.wait(WATCHED_WITHIN))
            finally:
                loop.call_soon_threadsafe(stored.put_nowait, None)

        async def announcing() -> None:
            while (item := await stored.get()) is not None:
                await self._announce(*item)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(announcing(), name=f"announce {self.id}")
            return await asyncio.to_thread(scan)

    async def _announce(self, changes: list[Signed], seqs: range | None = None) -> None:
        """Send changes out, a batch a notice. With `seqs`, the index rows they were stored
        in (then rows of versions held already, under a new inode), each notice says which
        rows it holds: a member that read up to the first need not read them again."""
        at = 0
        while at < len(changes):
            batch, end = first_batch(changes, at)
            if batch and seqs is None:
                await self.mesh.publish(Records(self.id, batch, lists=Lists.PATCHES))
            elif batch and seqs is not None:
                last = seqs[-1] if end == len(changes) else seqs[end - 1]
                await self.mesh.publish(Records(self.id, batch, self.catch_up.epoch, last,
                                                Lists.PATCHES, since=seqs[at] - 1))
            at = end
        self._too_large([s.record for s in changes if size_bound(s) > BATCH_BUDGET])

    async def _covered(self, member: str, seqs: range) -> None:
        """Tell a member that the rows `seqs` of our index hold only versions it sent us, as
        it sent them: a notice of those rows that leaves them all out. It would read them in
        catch-up else, and judge every one history: in a first sync, the sender read back
        every row the receiver wrote (a quarter of the sender's time holding the GIL)."""
        await self.mesh.publish(Records(self.id, (), self.catch_up.epoch, seqs[-1],
                                        since=seqs[0] - 1), to=member)

    async def _publish(self, changes: list[Signed]) -> None:
        """Announce resolutions the puller stored."""
        await self._announce(changes)
        sent = len(changes)
        log.info("folder %s: announced %d resolution%s", self.id, sent, "" if sent == 1 else "s")

    def _too_large(self, records: list[FileRecord]) -> None:
        for record in records:
            if self.place.throttle.allow((record.path, "too large"), time.time()):
                log.warning("folder %s: %s cannot be announced: its record (%d blocks) is over "
                            "what one message carries", self.id, shown(record.path),
                            len(record.blocks))


    # -- remote records ------------------------------------------------------------------------
    async def take(self, source: str, records: Iterable[Signed]) -> list[Signed]:
        """Verify and judge remote records; queue those we must write, and return them."""
        needs = await self.judge.take(source, records)
        if needs:
            self.puller.wake.set()
        return needs

    async def apply_due(self) -> float | None:
        """One pass of the puller (see Puller.apply_due)."""
        return await self.puller.apply_due()

    def retry_now(self) -> None:
        """Try every version waiting for a retry soon (a member came online)."""
        self.puller.retry_now()

    def _rescan(self, changed: set[RelPath], revive: set[RelPath]) -> None:
        """The puller found paths changed meanwhile, or directories to version anew."""
        self._dirty |= changed
        self._revive |= revive
        self._scan_wake.set()

    def trust_changed(self) -> None:
        """Take what was held back for its origin, if that origin is trusted now: soon, by
        the scan loop."""
        self._release = True
        self._scan_wake.set()

    async def _release_held(self) -> None:
        self._release = False
        if await asyncio.to_thread(self.judge.release):
            self.puller.wake.set()
        if self.judge.overflowed:  # what did not fit in the table comes from the members
            self.judge.overflowed = False
            await asyncio.to_thread(self.place.index.forget_peer_seqs, self.id)
            self.catch_up.wake.set()

    def answer_index(self, since: int, lists: bool = False) -> Records:
        """A page of our index after `since`, for a peer catching up, long lists as digests
        unless it asks for them (`lists`); runs in a thread."""
        return self.catch_up.answer(since, lists)

    def rebuild(self, listless: Sequence[Listless]) -> tuple[list[Signed], int]:
        """Records sent without their lists, rebuilt from the lists the index holds for their
        paths (the version on disk, the one queued); and how many could not be. In a thread.

        One per path, and only so many blocks' worth per batch: each costs hashing lists up
        to 4 MiB long, and a peer must not make us hash gigabytes with one message.
        """
        index, rebuilt, budget = self.place.index, [], REBUILT_PER_BATCH
        for record in {r.record.path: r for r in listless}.values():
            path = record.record.path
            held = [e.record.blocks for e in (index.get(self.id, path), index.need(self.id, path))
                    if e is not None]
            budget -= sum(map(len, held)) + block_count(record.record.size)
            if budget < 0:
                break
            if (signed := record.rebuild(held)) is not None:
                rebuilt.append(signed)
        return rebuilt, len(listless) - len(rebuilt)

    def answer_blocks(self, hashes: tuple[bytes, ...]) -> list[bytes | None]:
        """The blocks we hold (the peer checks their hashes); runs in a thread."""
        blocks = transfer.held_blocks(self.place, hashes)
        self.sent.add(sum(len(b) for b in blocks if b is not None), self.clock.now())
        return blocks


    async def override(self) -> int:
        """Make this node's versions win everywhere over the mesh's changes a send-only folder
        did not write: each path waiting for a version is announced anew as it is here (a
        deletion where it is not here), descending from the version waited for. Returns how
        many; ControlError if the folder is not send-only."""
        if self.mode is not Mode.SEND_ONLY:
            raise ControlError(f"folder {self.id} is {self.mode}: only a send-only folder's"
                                " changes from the mesh wait for an override")
        changes: list[Signed] = []
        async with self.place.disk:
            while page := await asyncio.to_thread(self._override):
                changes += page[0]
                await self._announce(*page)
        if changes:
            log.info("folder %s: overrode %d change%s of the mesh with this node's versions",
                     self.id, len(changes), "" if len(changes) == 1 else "s")
        return len(changes)

    def _override(self) -> tuple[list[Signed], range] | None:
        """One page of override's versions, stored: (them, their index rows); None when no
        version waits. In a thread."""
        place, me = self.place, self.mesh.me.key
        needs = place.index.needs(place.id, OVERRIDDEN_PER_PAGE)
        if not needs:
            return None
        entries = place.index.get_all(place.id, [n.record.path for n in needs])
        mine: list[tuple[FileRecord, bytes, int, int]] = []
        for need in needs:
            entry = entries.get(need.record.path)
            ours = entry.record if entry is not None else None
            record = plan.override(ours, need.record, me, int(time.time()))
            if record is None:
                place.index.drop_need(place.id, need.record.path)
                continue
            on_disk = (entry.inode, entry.dev) if entry and not record.deleted else (0, 0)
            mine.append((record, self._sign(record), *on_disk))
        seqs = place.index.put(place.id, mine)
        for need in needs:  # history now, as put finds too: said here, so no page comes twice
            place.index.drop_need(place.id, need.record.path, only=need.record)
        place.changed((record for record, *_ in mine), received=False)
        stored = range(seqs[0], seqs[-1] + 1) if seqs else range(0)
        return [Signed(r, signature) for r, signature, _, _ in mine], stored

    async def revert(self) -> int:
        """Put the mesh's version back over each change made here in a receive-only folder
        (removing what was added here), keeping the change among the versions. Returns how
        many paths; ControlError if the folder is not receive-only."""
        if self.mode is not Mode.RECEIVE_ONLY:
            raise ControlError(f"folder {self.id} is {self.mode}: only a receive-only folder"
                                " keeps changes made here from the mesh")
        async with self.place.disk:
            count = await asyncio.to_thread(self._revert)
        self.puller.wake.set()
        log.info("folder %s: putting the mesh's version back over %d change%s made here",
                 self.id, count, "" if count == 1 else "s")
        return count

    def _revert(self) -> int:
        """Queue the version held of each path changed here; remove what was only added here
        (deepest first). In a thread."""
        place = self.place
        local = sorted(place.local, key=lambda p: p.count("/"), reverse=True)
        entries = place.index.get_all(place.id, local)
        keep = partial(keep_version, place)
        for path in local:
            if path in entries:
                continue
            try:
                apply.remove(place.root, path, scan.seen_now(place.root, path), keep)
                place.local.pop(path, None)
            except apply.Changed:
                pass  # changed again meanwhile, or not empty: the next scan says what is there
            except (apply.UnsafePath, OSError) as e:
                log.warning("folder %s: cannot remove %s, added here: %s", self.id, shown(path),
                            shown(e))
        place.index.add_needs(place.id, [Need(e.record, e.signature, REVERTED)
                                         for e in entries.values()])
        return len(local)

    # -- versions ------------------------------------------------------------------------------
    async def restore(self, rel: RelPath, at: datetime | None) -> versions.Version:
        """Put back the newest version of `rel` kept at or before `at`; it syncs as an edit.

        What is at `rel` now is kept as a version first. RestoreError says why not.
        """
        chosen = versions.pick(await asyncio.to_thread(versions.list_versions, self.root, rel), at)
        if chosen is None:
            raise versions.RestoreError(f"no version of {rel} is kept" + (
                f" from {at:%Y-%m-%d %H:%M:%S} UTC or before" if at else ""))
        async with self.place.disk:
            await asyncio.to_thread(versions.restore, self.root, chosen,
                                    partial(keep_version, self.place))
        self._dirty.add(rel)
        self._scan_wake.set()
        log.info("folder %s: restored %s as kept at %s", self.id, shown(rel), chosen.when)
        return chosen

    # -- status --------------------------------------------------------------------------------
    def counts(self) -> report.Counts:
        """Status's part read from the index, in a thread."""
        return report.counts(self.place)

    def status(self, counts: report.Counts | None = None) -> dict[str, Any]:
        """This folder's line in `meshsync status --json`; on the loop, which owns the
        transfers and retries it lists (`counts` read beforehand, or now)."""
        return report.status(self, counts or self.counts())

    def progress(self) -> Progress:
        """How far this folder is, for our hellos; runs in a thread."""
        return report.progress(self)

    def progress_stamp(self) -> tuple[object, ...]:
        """Changes whenever `progress` may have; on the loop."""
        return report.progress_stamp(self)


def rescan_every(watching: bool, took: float) -> float:
    """Seconds from one full rescan to the next, the last having taken `took` seconds."""
    return max(RESCAN_EVERY if watching else RESCAN_UNWATCHED, took / RESCAN_SHARE)


def new_epoch() -> str:
    """A fresh identity for an index database."""
    return secrets.token_hex(8)
