"""Remote records in: verified against their origin, judged by `core.plan`, queued, set aside
as losers, or held back while their origin is not trusted here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from enum import Enum
from typing import Protocol

from meshsync.core import plan
from meshsync.core.ids import NodeId
from meshsync.core.records import Kind
from meshsync.core.throttle import shown
from meshsync.core.vclock import Order
from meshsync.core.wire import Signed
from meshsync.node.place import Place
from meshsync.store.index import Entry, Need

log = logging.getLogger("meshsync.folder")

REVIVED = "revived"  # the source of a need for a version taken back from the losers
REVERTED = "reverted"  # the source of a need for the version held, over a change made here
MAX_HELD = 10_000  # versions held back per folder; past that, trust re-reads the peers instead


class Origin(Enum):
    """What a record's signature says of its origin."""

    TRUSTED = "trusted"  # signed by the origin, which this node trusts
    UNTRUSTED = "untrusted"  # signed by the origin, which this node does not trust (yet)
    FORGED = "forged"  # not signed by the key its origin names


class Verifier(Protocol):
    """What judging needs of the node: its key, and who signed a record."""

    @property
    def me(self) -> NodeId:
        """This node's ID."""

    def check_origin(self, origin: str, signature: bytes, message: bytes,
                     trusted: dict[bytes, bool]) -> Origin:
        """Whether `signature` over `message` is by the node whose vector key is `origin`, and
        whether that node is trusted here (asked once per key while `trusted`, which keeps
        the answers, lives: a batch's worth)."""


class Judge:
    """Takes remote records into one folder's queue of versions to write."""

    def __init__(self, place: Place, verifier: Verifier) -> None:
        self.place = place
        self.verifier = verifier
        self.overflowed = False  # versions held back were dropped for want of room
        # One at a time: judging compares with the version already waiting, then replaces it.
        self._lock = asyncio.Lock()

    async def take(self, source: str, records: Iterable[Signed]) -> list[Signed]:
        """Verify and judge remote records; queue those we must write, and return them."""
        async with self._lock:
            return await asyncio.to_thread(self._judge, source, list(records))

    def _judge(self, source: str, records: list[Signed]) -> list[Signed]:
        place, me = self.place, self.verifier.me.key
        queued: list[Need] = []
        held: list[Need] = []
        trusted: dict[bytes, bool] = {}  # keys asked about in this batch
        paths = [s.record.path for s in records]  # what we hold and wait for, read at once
        known = place.index.get_all(place.id, paths), place.index.needs_of(place.id, paths)
        for signed in records:
            record = signed.record
            if place.ignore.match(record.path, record.kind is Kind.DIR):
                continue  # it stays local here
            if not record.version.can_bump(me):
                # Taken, our next edit of it could not be counted: a faulty or forged history.
                if place.throttle.allow((source, "no room"), time.time()):
                    log.warning("folder %s: refused %s from %s: this node could not count its "
                                "next edit of it (its version names %d nodes, and version %d "
                                "of this one)", place.id, shown(record.path), source,
                                len(record.version.counters), record.version.get(me))
                continue
            need = Need(record, signed.signature, source)
            if self.weigh(need, queued, trusted, known) is Origin.UNTRUSTED:
                held.append(need)
        place.index.add_needs(place.id, queued)
        if held:
            self._hold(held)
        patches = {s.record.path: s.patch for s in records if s.patch is not None}
        return [Signed(n.record, n.signature, patches.get(n.record.path)) for n in queued]

    def weigh(self, need: Need, queued: list[Need], verify: dict[bytes, bool] | None = None,
              known: tuple[dict[str, Entry], dict[str, Need]] | None = None, keep: bool = True,
              ) -> plan.Judgement | Origin:
        """Judge one version against ours and the one we wait for (read from the index, or
        from `known` rows a batch read at once); queue it or (if `keep`) set it aside. With
        `verify` (the trust of the keys its batch asked about), only a version signed by its
        trusted origin counts: one that is not is not judged, and its origin's verdict is
        returned instead."""
        place, path = self.place, need.record.path
        if known is None:
            entry, pending = place.index.get(place.id, path), place.index.need(place.id, path)
        else:
            entry, pending = known[0].get(path), known[1].get(path)
        verdict = plan.judge(entry.record if entry else None,
                             pending.record if pending else None, need.record)
        # History changes nothing, so only versions that would count are verified: every
        # member hears each version from several peers, and verifying is most of judging.
        if verify is not None and verdict != plan.Judgement():
            origin = self._origin(need, verify)
            if origin is not Origin.TRUSTED:
                return origin
        if verdict != plan.Judgement() and log.isEnabledFor(logging.DEBUG):
            log.debug("folder %s: %s %s (ours %s, waiting for %s): %s", place.id, shown(path),
                      need.record.brief(), entry.record.brief() if entry else "none",
                      pending.record.brief() if pending else "none", verdict)
        if verdict.queue:
            queued.append(need)
        if verdict.drop_pending:
            place.index.drop_need(place.id, path)
            if known is not None:
                known[1].pop(path, None)
        aside = [n for n, set_aside in ((need, keep and verdict.aside),
                                        (pending, verdict.pending_aside))
                 if set_aside and n is not None]
        self.set_aside(aside)
        return verdict

    def _origin(self, need: Need, trusted: dict[bytes, bool]) -> Origin:
        place, record = self.place, need.record
        origin = self.verifier.check_origin(record.origin, need.signature,
                                            record.canonical(place.id), trusted)
        if origin is Origin.FORGED and place.throttle.allow((need.source, "signature"),
                                                           time.time()):
            log.warning("folder %s: refused %s from %s: not signed by its origin %s",
                        place.id, shown(record.path), need.source, record.origin)
        elif origin is Origin.UNTRUSTED and place.throttle.allow((record.origin, "held"),
                                                                 time.time()):
            log.warning("folder %s: holding back %s from %s: its origin %s is not trusted here "
                        "(meshsync status shows how to trust it)", place.id, shown(record.path),
                        need.source, record.origin)
        return origin

    def _hold(self, held: list[Need]) -> None:
        """Keep versions whose origin is not trusted, to take once it is (up to MAX_HELD)."""
        place = self.place
        room = MAX_HELD - place.index.held_count(place.id)
        if len(held) > room:
            self.overflowed = True
        if len(held) > room and place.throttle.allow(("held", "full"), time.time()):
            log.warning("folder %s: over %d versions held back for untrusted origins; the rest "
                        "are read from the peers again once trust changes", place.id, MAX_HELD)
        place.index.add_held(place.id, held[: max(room, 0)])

    def release(self) -> int:
        """Judge the versions held back again, now that trust changed; runs in a thread.

        Returns how many are queued now. Those of origins still untrusted stay held.
        """
        place = self.place
        queued: list[Need] = []
        trusted: dict[bytes, bool] = {}
        for need in place.index.held(place.id):
            if self.weigh(need, queued, trusted) is not Origin.UNTRUSTED:
                place.index.drop_held(place.id, need.record)
        place.index.add_needs(place.id, queued)
        return len(queued)

    def set_aside(self, losers: list[Need]) -> None:
        """Keep losing versions to judge again, unless a version kept from its origin is newer."""
        if not losers:
            return
        place = self.place
        kept = {(n.record.path, n.record.origin): n.record for n in place.index.losers(place.id)}
        place.index.add_losers(place.id, [n for n in losers if (
            old := kept.get((n.record.path, n.record.origin))) is None
            or n.record.version.compare(old.version) is not Order.OLDER])

    def rejudge(self) -> int:
        """Judge the versions kept aside again, now that ours may have changed; runs in a thread.

        Returns how many are queued now. One that is queued, or is history (of what we hold,
        wait for, or keep aside besides), goes; one that still loses stays as it is. Each is
        judged against what the ones before it queued, so that the rule picks among them.
        """
        place = self.place
        queued = 0
        losers = place.index.losers(place.id)
        for loser in losers:
            superseded = plan.superseded(loser.record, (o.record for o in losers))
            revived: list[Need] = []
            judged = self.weigh(Need(loser.record, loser.signature, REVIVED), revived,
                                keep=False)
            place.index.add_needs(place.id, revived)
            queued += len(revived)
            if superseded or (isinstance(judged, plan.Judgement) and not judged.aside):
                place.index.drop_loser(place.id, loser.record)
        return queued
