"""Blocks from members: which to ask, in shared requests, each block checked against its hash."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord
from meshsync.core.throttle import shown
from meshsync.core.wire import MAX_BLOCKS_PER_REQUEST, BlockRequest, Data
from meshsync.fs import apply, scan
from meshsync.fs.scan import Seen
from meshsync.node import background
from meshsync.node.clock import Clock
from meshsync.node.place import Place
from meshsync.node.retry import Asking, Lack

log = logging.getLogger("meshsync.folder")

LOCAL_NEWS = 1000  # index rows looked through for blocks that may fill a waiting file
RATE_WINDOW = 5.0  # seconds a transfer rate is measured over
IN_FLIGHT = 4  # block requests under way at once per group of files (each up to 8 MiB)
T = TypeVar("T")
Wanted = tuple[apply.Incoming, int, bytes]  # a file, one of its block indexes, that block's hash


class Sources(Protocol):
    """What fetching needs of the node: who is online, and their blocks."""

    def sources(self, folder: str) -> list[tuple[str, str]]:
        """(node key, address) of the online members sharing `folder`, coordinator first."""

    async def fetch_blocks(self, address: str, request: BlockRequest) -> Sequence[Data | None]:
        """Blocks from one peer; raises on failure."""

    def members(self, folder: str) -> int:
        """How many members share `folder`, online or not: those that could hold a version."""


@dataclass(slots=True)
class Progress:
    """A transfer in flight, for `meshsync status`."""

    path: str
    size: int
    done: int = 0


@dataclass(slots=True)
class Rate:
    """Bytes a second over the last RATE_WINDOW seconds."""

    _seconds: dict[int, int] = field(default_factory=dict)  # whole second -> bytes in it

    def add(self, size: int, now: float) -> None:
        """Count `size` bytes moved at `now`."""
        second = int(now)
        self._seconds[second] = self._seconds.get(second, 0) + size
        for old in [s for s in self._seconds if s <= now - RATE_WINDOW - 1]:
            del self._seconds[old]

    def per_second(self, now: float) -> int:
        """The rate at `now`."""
        moved = sum(size for second, size in self._seconds.items()
                    if second > now - RATE_WINDOW - 1)
        return int(moved / RATE_WINDOW)


class Fetcher:
    """Fills files being written: from blocks this folder holds, then from online members."""

    def __init__(self, place: Place, mesh: Sources, clock: Clock) -> None:
        self.place = place
        self.mesh = mesh
        self.clock = clock
        self.transfers: dict[str, Progress] = {}
        self.received = Rate()

    def nothing_new_here(self, known: dict[RelPath, tuple[FileRecord, Lack]],
                          seq: int) -> dict[RelPath, Lack]:
        """Of the files whose temp lacked blocks, those that no block put in the index since
        can fill, each with its lack brought up to `seq`; runs in a thread."""
        if not known:
            return {}
        oldest = min(lack.seq for _, lack in known.values())
        news = self.place.index.since(self.place.id, oldest, LOCAL_NEWS) if oldest < seq else []
        if len(news) == LOCAL_NEWS:  # too much changed to look through: all look again
            return {path: lack for path, (_, lack) in known.items() if lack.seq == seq}
        put_at = {digest: e.seq for e in news for digest in e.record.blocks}  # the last put
        return {path: replace(lack, seq=seq) for path, (record, lack) in known.items()
                if all(put_at.get(digest, 0) <= lack.seq for digest in record.blocks)}

    async def probe(self, lacking: list[tuple[FileRecord, Lack]], source: str) -> set[RelPath]:
        """Of files known to lack blocks, those no source has any of the first missing ones of."""
        asking = self.asking(source)
        supplied: set[RelPath] = set()
        wanted = [(r.path, r.blocks[i]) for r, lack in lacking for i in lack.first]
        for part in _parts(wanted, lambda path: path in supplied or asking.gave_up(path)):
            got = await self._fetch(part, asking)
            supplied.update(path for path, digest in part if digest in got)
        return {r.path for r, _ in lacking} - supplied

    async def fetch_all(self, wanted: list[Wanted], source: str,
                         skip: set[RelPath]) -> dict[RelPath, Exception]:
        """Fetch the blocks wanted and write them; returns the files a write failed for.

        Up to IN_FLIGHT requests at once, so that the link, the peer's reads and our checks
        and writes overlap; each starts with the next member in turn (`source` first), so that
        every member holding a big file serves a share of it. The window opens as requests
        come back whole and shuts to one at the first that does not: what no member has
        still costs one request per member, not one per request in flight.
        """
        asking = self.asking(source)
        failed: dict[RelPath, Exception] = {}
        blocks = [(w[0].record.path, w) for w in wanted]

        async def fetch(part: list[tuple[RelPath, Wanted]], turn: int) -> bool:
            got = await self._fetch([(path, w[2]) for path, w in part], asking, turn)
            found = [(w, got[w[2]]) for _, w in part if w[2] in got]
            big = _size(d for _, d in found) >= background.BIG
            failed.update(await background.in_thread(big, _write_all, found))
            for (incoming, _, _), data in found:
                self.received.add(len(data), self.clock.now())
                if progress := self.transfers.get(incoming.record.path):
                    progress.done += len(data)
            return len(found) == len(part)

        window, flying = 1, set[asyncio.Task[bool]]()
        try:
            for turn, part in enumerate(_parts(blocks, lambda path: path in skip
                                               or path in failed or asking.gave_up(path))):
                while len(flying) >= window:
                    done, flying = await asyncio.wait(flying, return_when=FIRST_COMPLETED)
                    for task in done:
                        window = min(window * 2, IN_FLIGHT) if task.result() else 1
                flying.add(asyncio.create_task(fetch(part, turn)))
            if flying:
                await asyncio.gather(*flying)
        finally:
            for task in flying:
                task.cancel()
        return failed

    def fill_locally(self, incoming: apply.Incoming, record: FileRecord,
                     expected: Seen | None, held: tuple[bytes, ...]) -> list[int]:
        """Write the blocks we already hold anywhere in the folder; return the rest.

        Those the file it replaces (stamped `expected`, holding `held` by the index) has at the
        same places are copied unread, as a scan trusts an unchanged stamp: a one-byte change
        in a GiB costs a copy in the kernel, not a GiB read and hashed. Not while the file
        waits to be hashed again (a scan hashed it within its mtime's tick).
        """
        have = incoming.have()
        if expected is not None and held and record.path not in self.place.racy:
            have |= incoming.copy_unchanged(expected, (
                i for i, (old, new) in enumerate(zip(held, record.blocks, strict=False))
                if old == new and i not in have))
        todo = [i for i in range(len(record.blocks)) if i not in have]
        missing = []
        for at in range(0, len(todo), MAX_BLOCKS_PER_REQUEST):
            part = todo[at : at + MAX_BLOCKS_PER_REQUEST]
            found = local_blocks(self.place, tuple(record.blocks[i] for i in part))
            for i in part:
                data = found.get(record.blocks[i])
                if data is None:
                    missing.append(i)
                else:
                    incoming.write_block(i, data, hashed=True)  # local_blocks checked its hash
        return missing

    def asking(self, source: str) -> Asking:
        """The online members to ask for blocks in one attempt, `source` first."""
        sources = sorted(self.mesh.sources(self.place.id), key=lambda s: s[0] != source)
        return Asking([address for _, address in sources])

    async def _fetch(self, part: list[tuple[RelPath, bytes]], asking: Asking,
                     turn: int = 0) -> dict[bytes, Data]:
        """The blocks (of the files named) that some member has, asking each in turn from the
        `turn`th.

        A member that has none of a file's blocks asked for is not asked for that file again
        in this attempt, nor one that fails for anything: what no member can supply costs a
        request per member, not one per 64 blocks of it.
        """
        got: dict[bytes, Data] = {}
        first = turn % max(1, len(asking.addresses))
        for address in asking.addresses[first:] + asking.addresses[:first]:
            ask = [(p, d) for p, d in part if d not in got and asking.asks(address, p)]
            wanted = tuple(dict.fromkeys(d for _, d in ask))
            if not wanted:
                continue
            try:
                answer = await self.mesh.fetch_blocks(address, BlockRequest(self.place.id, wanted))
            except Exception as e:
                log.debug("folder %s: blocks from %s failed: %s", self.place.id, address,
                          shown(e, 300))
                asking.failed.add(address)
                continue
            # Off the loop: 8 MiB of hashing is milliseconds the loop could serve peers in.
            verified = await background.in_thread(_size(answer) >= background.BIG,
                                                  _verified, wanted, answer)
            got.update(verified)
            had = set(verified)
            asking.barren |= {(address, p) for p, _ in ask} - {(address, p) for p, d in ask
                                                               if d in had}
        return got


def local_blocks(place: Place, hashes: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The blocks this folder holds, read from the files the index places them in, each
    checked against its hash: a file may have changed since it was indexed."""
    held = held_blocks(place, hashes)
    return {digest: data for digest, data in zip(hashes, held, strict=True)
            if data is not None and _sha256(data) == digest}


def held_blocks(place: Place, hashes: tuple[bytes, ...]) -> list[bytes | None]:
    """The blocks asked for, as the files the index places them in hold them now, None for
    those it does not; read a file at a time.

    Not checked against their hashes: the peer checks every block it receives, and one that
    a file changed since it was indexed no longer holds is set aside there as a block we lack.
    Checking here too would hash every byte served once more per receiver.
    """
    places = place.index.find_blocks(place.id, hashes)
    wanted: dict[str, set[int]] = {}
    for path, index in places.values():
        wanted.setdefault(path, set()).add(index)
    # A directory's files one after another, each directory opened once: a request for 64
    # small files walked from the root 64 times (a tenth of a first sync's sender).
    with scan.Directories(place.root) as dirs:
        read = {path: _readable(place, dirs, RelPath(path), wanted[path])
                for path in sorted(wanted, key=lambda p: p.rpartition("/")[0])}
    return [read[found[0]].get(found[1]) if (found := places.get(h)) else None for h in hashes]


def _readable(place: Place, dirs: scan.Directories, path: RelPath,
              indexes: set[int]) -> dict[int, bytes]:
    """The blocks of `path` that can be read now: none of a file that cannot (the peer asks
    another member for them)."""
    try:
        return apply.read_blocks(dirs, path, indexes)
    except (OSError, apply.UnsafePath) as e:
        log.debug("folder %s: cannot serve %r: %s", place.id, path, e)
        return {}


def lack(incoming: apply.Incoming, seq: int) -> Lack | None:
    """What a temp still lacks (None: nothing), with the index's seq before it was filled."""
    have = incoming.have()
    missing = len(incoming.record.blocks) - len(have)
    if not missing:
        return None
    absent = (i for i in range(len(incoming.record.blocks)) if i not in have)
    return Lack(seq, tuple(itertools.islice(absent, MAX_BLOCKS_PER_REQUEST)), missing)


def _verified(hashes: tuple[bytes, ...], blocks: Sequence[Data | None]) -> dict[bytes, Data]:
    """The blocks of an answer that match the hash they were asked for by."""
    return {digest: data for digest, data in zip(hashes, blocks, strict=True)
            if data is not None and _sha256(data) == digest}


def _write_all(found: list[tuple[Wanted, Data]]) -> dict[RelPath, Exception]:
    """Write the blocks found; returns the files a write failed for (the rest of each skipped)."""
    failed: dict[RelPath, Exception] = {}
    for (incoming, i, _), data in found:
        if incoming.record.path not in failed:
            try:
                incoming.write_block(i, data, hashed=True)  # _fetch took only blocks that match
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


def _size(blocks: Iterable[Data | None]) -> int:
    return sum(len(b) for b in blocks if b is not None)


def _sha256(data: Data) -> bytes:
    return hashlib.sha256(data).digest()
