"""Members' indexes: reading what each holds that we have not taken yet, and serving ours.

Notices push every change at once; catch-up is the safety net under them: at start, when a
member comes online, and every CATCH_UP_EVERY seconds, a page of each member's index after
the last sequence number taken from it. A member whose hellos say its index ends where we
last read it is not asked (at rest, a mesh asks nothing), so the net costs a request only
when there may be something under it. A notice of a member's own changes that holds the rows
right after those read counts as read (`covered`), and while its notices follow on so, a
round leaves the member to them: a first sync does not read every record twice, once in
notices and again in pages.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from meshsync.core.errors import WireError
from meshsync.core.records import FileRecord
from meshsync.core.throttle import shown
from meshsync.core.wire import (
    BATCH_BUDGET,
    IndexRequest,
    Listless,
    Lists,
    Records,
    Signed,
    first_batch,
    size_bound,
)
from meshsync.node.clock import Clock
from meshsync.node.place import Place
from meshsync.store.index import IndexUnusable

log = logging.getLogger("meshsync.folder")

CATCH_UP_EVERY = 5.0
RETRY_CATCH_UP = 0.25  # doubled after each failed round, up to the interval
MAX_BROUGHT = 64  # runs of a member's rows its notices brought, kept apart from those read
INTERVAL_VARIABLE = "MESHSYNC_CATCH_UP_EVERY"  # seconds; a LAN test of pushes sets it high


class Indexes(Protocol):
    """What catching up needs of the node: the online members, and their index pages."""

    def sources(self, folder: str) -> list[tuple[str, str]]:
        """(node key, address) of the online members sharing `folder`, coordinator first."""

    async def fetch_index(self, address: str, request: IndexRequest) -> Records:
        """An index page from one peer; raises on failure."""

    def advertised_seq(self, folder: str, key: str) -> int | None:
        """The last seq of a member's index for `folder`, by its latest hello; None if unsaid."""


class CatchUp:
    """Catch-up of one folder from its members, and the pages it serves them."""

    def __init__(self, place: Place, mesh: Indexes, epoch: str,
                 take: Callable[[str, Iterable[Signed]], Awaitable[object]],
                 too_large: Callable[[list[FileRecord]], None],
                 rebuild: Callable[[Sequence[Listless]], tuple[list[Signed], int]],
                 clock: Clock, every: float = CATCH_UP_EVERY) -> None:
        self.place = place
        self.mesh = mesh
        self.epoch = epoch
        self._rebuild = rebuild  # records sent without lists, from the lists we hold
        self.wake = asyncio.Event()  # catch up from every member now
        self.every = every
        self._take = take
        self._too_large = too_large
        self._read_to: dict[str, int] = {}  # member key -> its last seq we read, this run
        self.clock = clock
        self._in_step: dict[str, float] = {}  # member key -> when its notices last followed on
        # Member key -> rows of its index (in the epoch we read it in) that its notices brought
        # beyond those read, since -> seq: a page need not bring them again.
        self._brought: dict[str, dict[int, int]] = {}

    async def run(self) -> None:
        """Catch up from every online member, again each interval or when woken; between
        wakes, only from members whose index has moved on since we last read it, unless their
        notices bring it (see _noticed)."""
        place = self.place
        retry = RETRY_CATCH_UP
        woken = True  # at start: from everyone
        while True:
            failed = False
            for key, address in self.mesh.sources(place.id):
                if not woken and (self._read_to.get(key) == self.mesh.advertised_seq(place.id, key)
                                  or self._noticed(key)):
                    continue
                try:
                    await self.catch_up(key, address)
                except IndexUnusable:
                    raise  # the node stops, saying why
                except Exception as e:
                    failed = True
                    if place.throttle.allow((key, "catch-up"), time.time()):
                        log.info("folder %s: catch-up from %s failed: %s", place.id, address,
                                 shown(e, 300))
            # A peer that just came up may refuse us until it has heard back from us: soon again.
            retry = min(retry * 2, self.every) if failed else RETRY_CATCH_UP
            try:
                await asyncio.wait_for(self.wake.wait(), retry if failed else self.every)
                woken = True
            except TimeoutError:
                woken = False
            self.wake.clear()

    async def catch_up(self, key: str, address: str) -> None:
        """Take in what a peer's index holds that we have not taken from it yet."""
        index, folder = self.place.index, self.place.id
        remembered = _epoch_key(folder, key)
        epoch = await asyncio.to_thread(index.get_meta, remembered) or ""
        since = await asyncio.to_thread(index.peer_seq, folder, key, epoch)

        def fetch(after: int, lists: bool = False) -> asyncio.Task[Records]:
            request = IndexRequest(folder, after, lists)
            return asyncio.create_task(self.mesh.fetch_index(address, request))

        # The next page is on its way while this one is judged.
        fetching, whole = fetch(since), False
        try:
            while True:
                page = await fetching
                if page.epoch != epoch:
                    if since:  # not the index we counted in (the peer reset it): from its start
                        since, fetching = 0, fetch(0)
                        continue
                    epoch = page.epoch
                    await asyncio.to_thread(index.set_meta, remembered, epoch)
                    self._brought.pop(key, None)  # rows of another index
                records = list(page.records)
                if page.listless:
                    if whole:
                        raise WireError("an index page asked for with its lists came without")
                    rebuilt, lacking = await asyncio.to_thread(self._rebuild, page.listless)
                    if lacking:  # lists we do not hold: the same page again, lists and all
                        whole, fetching = True, fetch(since, lists=True)
                        continue
                    records += rebuilt
                whole = False
                # Read on to the end, unless its notices bring the rest (a scan under way).
                more = (bool(page.records or page.listless) and page.seq > since
                        and not self._noticed(key))
                if more:  # past the rows its notices brought already
                    fetching = fetch(self._past_brought(key, page.seq))
                await self._take(key, records)
                read = self._past_brought(key, page.seq)
                await asyncio.to_thread(index.set_peer_seq, folder, key, epoch, read)
                if not more:
                    self._read_to[key] = read
                    return
                since = read
        finally:  # the page ahead, when taking one failed: not wanted, nor its error
            if not fetching.done():
                fetching.cancel()
            elif not fetching.cancelled():
                fetching.exception()

    async def covered(self, key: str, epoch: str, since: int, seq: int) -> None:
        """A member's notice held every row of its index (`epoch`) after `since` up to `seq`,
        all taken now: if we had read it up to `since` or past, it is read up to `seq`, and
        catch-up need not ask for those rows again. Only in the epoch we last read it in: a
        member cannot make us keep a row for every epoch it names."""
        index, folder = self.place.index, self.place.id
        if not epoch or epoch != await asyncio.to_thread(index.get_meta, _epoch_key(folder, key)):
            return
        brought = self._brought.setdefault(key, {})
        brought[since] = max(seq, brought.get(since, seq))
        while len(brought) > MAX_BROUGHT:  # a member cannot make us keep a row per notice
            del brought[min(brought)]
        read = await asyncio.to_thread(index.peer_seq, folder, key, epoch)
        if read >= since:  # it follows on from what was read (through what notices brought)
            seq = self._past_brought(key, read)
            if await asyncio.to_thread(index.advance_peer_seq, folder, key, epoch, read, seq):
                self._read_to[key] = seq
                self._in_step[key] = self.clock.now()

    async def read_past(self, key: str, epoch: str, seq: int) -> bool:
        """Whether a member's index (`epoch`) was read up to `seq` already: a notice of its rows
        up to there brings nothing a page did not (a first sync reads pages while the member's
        notices queue up behind our judging)."""
        index, folder = self.place.index, self.place.id

        def read() -> bool:  # one trip to a thread: every notice asks
            return (epoch == index.get_meta(_epoch_key(folder, key))
                    and index.peer_seq(folder, key, epoch) >= seq)

        return bool(epoch) and await asyncio.to_thread(read)

    def _past_brought(self, key: str, seq: int) -> int:
        """How far a member's index is taken when read up to `seq`: on through the rows its
        notices brought that follow on from there."""
        brought = self._brought.get(key, {})
        while (on := max((end for start, end in brought.items() if start <= seq < end),
                         default=None)) is not None:
            seq = on
        return seq

    def _noticed(self, key: str) -> bool:
        """Whether the member's notices followed on from what we read within the interval:
        what its hellos say beyond that is on its way in notices, and a round reading it as
        pages would take every row twice (a big scan's notices queue up behind our judging).
        Any row that is not in one (a version it took from another member, say) stops them
        following on, so the next round reads it."""
        return self.clock.now() - self._in_step.get(key, -math.inf) < self.every

    def answer(self, since: int, lists: bool = False) -> Records:
        """A page of our index after `since`, for a peer catching up; runs in a thread.

        A page holds what fits in one message; a record that fits in none is passed over (and
        said so), so that catch-up goes on past it. Long lists go as their digests (the reader
        mostly holds them already), unless it asks for them whole (`lists`).
        """
        index, folder = self.place.index, self.place.id
        sent = Lists.WHOLE if lists else Lists.DIGESTS
        entries = index.since(folder, since)
        if not entries:
            return Records(folder, (), self.epoch, index.max_seq(folder), sent)
        signed = [Signed(e.record, e.signature) for e in entries]
        page, covered = first_batch(signed)
        self._too_large([s.record for s in signed[:covered] if size_bound(s) > BATCH_BUDGET])
        return Records(folder, page, self.epoch, entries[covered - 1].seq, sent)


def interval_from(environ: Mapping[str, str]) -> float:
    """The safety net's interval: MESHSYNC_CATCH_UP_EVERY seconds (a LAN test of pushes sets
    it high), else CATCH_UP_EVERY; ValueError if it is not a number from 1 to 86400."""
    text = environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return CATCH_UP_EVERY
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1 <= value <= 86400:
        raise ValueError(f"{INTERVAL_VARIABLE} wants seconds from 1 to 86400, not {text[:40]!r}")
    return value


def _epoch_key(folder: str, key: str) -> str:
    """The index meta key under which the epoch we last read member `key` in is kept."""
    return f"epoch {folder} {key}"
