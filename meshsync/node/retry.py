"""Queued versions whose last attempt failed: per path, when to try again and why.

A version no member can supply, or one the disk refuses, must cost bounded work: each failed
attempt doubles the wait before the next, from RETRY_NEEDS to MAX_BACKOFF.
"""

from __future__ import annotations

import errno
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from meshsync.core.paths import RelPath
from meshsync.core.vclock import Vector
from meshsync.node.place import Place
from meshsync.store.index import Need

log = logging.getLogger("meshsync.folder")

# Why a version waits (`cause` in `meshsync status`).
NOT_HELD = "no member has it"
WRITE_REFUSED = "write refused"
NO_DIRECTORY = "waiting for its directory"
DISK_FULL = "disk full"  # cheap to check again: tried every RETRY_NEEDS, without backoff
CHANGED = "changed on disk"  # the path is rescanned meanwhile
CHEAP = frozenset({DISK_FULL, NO_DIRECTORY, CHANGED})  # causes checked again every RETRY_NEEDS
LOGGED_PER_PASS = 5  # failures logged per pass and cause; `meshsync status` lists them all
RETRY_NEEDS = 2.0  # the wait after a failed attempt at a path, doubled after each one in a row
MAX_BACKOFF = 300.0
JITTER = 0.1  # each wait is cut by up to this share, so retries of many paths spread out


@dataclass(frozen=True, slots=True)
class Lack:
    """What a file's temp still lacked after an attempt, with the index's seq before it."""

    seq: int
    first: tuple[int, ...]  # the first missing block indexes: asked for before opening it again
    missing: int


@dataclass(slots=True)
class _Wait:
    """A queued version whose last attempt failed: why, and when it is tried again."""

    need: tuple[Vector, str, bytes]  # which version (see _identity): another one starts afresh
    cause: str  # what kind of trouble, for people and for `meshsync status` (`cause`)
    reason: str  # one line, for people
    delay: float
    due: float
    lack: Lack | None = None


def _identity(need: Need) -> tuple[Vector, str, bytes]:
    return need.record.version, need.record.origin, need.signature


class Retries:
    """Per path, the backoff of queued versions whose last attempt failed.

    Kept in memory only: a restart tries every path at once.
    """

    def __init__(self) -> None:
        self._waits: dict[RelPath, _Wait] = {}
        self.failed_now: dict[RelPath, str] = {}  # path -> cause, of this pass's failures

    def __len__(self) -> int:
        return len(self._waits)

    def due(self, needs: list[Need], now: float, complete: bool) -> list[Need]:
        """The needs to attempt at `now`; forgets the waits of versions replaced or no longer
        queued (`complete`: `needs` is every queued version, not the first in path order)."""
        queued = {n.record.path: n for n in needs}
        last = None if complete or not needs else needs[-1].record.path

        def stale(path: RelPath, wait: _Wait) -> bool:
            need = queued.get(path)
            if need is None:  # gone, unless it lies beyond the needs read
                return last is None or path <= last
            return _identity(need) != wait.need

        for path in [p for p, w in self._waits.items() if stale(p, w)]:
            del self._waits[path]
        return [n for n in needs if (w := self._waits.get(n.record.path)) is None or w.due <= now]

    def failed(self, need: Need, cause: str, reason: str, now: float,
               lack: Lack | None = None) -> float:
        """Wait longer before trying `need` again (a full disk: as long as the first time);
        returns the seconds until then."""
        path, old = need.record.path, self._waits.get(need.record.path)
        self.failed_now[path] = cause
        delay = RETRY_NEEDS
        if cause not in CHEAP and old is not None and old.need == _identity(need):
            delay = min(max(old.delay * 2, RETRY_NEEDS), MAX_BACKOFF)
        wait = delay * (1 - JITTER * random.random())  # noqa: S311 (spreading, not secrecy)
        self._waits[path] = _Wait(_identity(need), cause, reason, delay, now + wait, lack)
        return wait

    def report(self, place: Place, now: float) -> None:
        """Log this pass's failures: a few per cause, each path at most once per window."""
        failed, self.failed_now = self.failed_now, {}
        logged: dict[str, int] = {}
        unlogged = 0
        for path, cause in sorted(failed.items()):
            wait = self._waits.get(path)
            if wait is None:
                continue
            if logged.get(cause, 0) >= LOGGED_PER_PASS:
                unlogged += 1
            elif place.throttle.allow((path, cause), now):
                logged[cause] = logged.get(cause, 0) + 1
                # %r: a peer chose the path, and it may hold a newline or an escape sequence.
                log.warning("folder %s: %r waits: %s; trying again in %.0f s", place.id, path,
                            wait.reason, max(0.0, wait.due - now))
        if unlogged and place.throttle.allow(("unlogged", "waits"), now):
            log.warning("folder %s: %d more path%s wait%s (meshsync status lists them)",
                        place.id, unlogged, "" if unlogged == 1 else "s",
                        "s" if unlogged == 1 else "")

    def succeeded(self, path: RelPath) -> None:
        """Forget a path written, or whose version is no longer wanted."""
        self._waits.pop(path, None)

    def tried(self, need: Need) -> bool:
        """Whether this version of its path failed before (and waits)."""
        wait = self._waits.get(need.record.path)
        return wait is not None and wait.need == _identity(need)

    def lack(self, need: Need) -> Lack | None:
        """What the temp of this version lacked after its last attempt, if that is known."""
        wait = self._waits.get(need.record.path)
        return wait.lack if wait is not None and wait.need == _identity(need) else None

    def retry_now(self) -> None:
        """Make every path due, its backoff back at the start (what its temp lacks is kept)."""
        for wait in self._waits.values():
            wait.delay, wait.due = 0.0, float("-inf")

    def next_due(self, now: float) -> float | None:
        """Seconds until the first path is due again; None if none waits."""
        return max(0.0, min(w.due for w in self._waits.values()) - now) if self._waits else None

    def listing(self, now: float, limit: int) -> list[dict[str, Any]]:
        """The first `limit` waiting paths in path order, for `meshsync status`."""
        return [{"path": path, "cause": w.cause, "reason": w.reason,
                 "retry_in": round(max(0.0, w.due - now), 1)}
                for path, w in sorted(self._waits.items())[:max(limit, 0)]]


@dataclass(slots=True)
class Asking:
    """The sources of one attempt, and which of them are no longer asked for which file."""

    addresses: list[str]
    barren: set[tuple[str, RelPath]] = field(default_factory=set)  # had none of what was asked
    failed: set[str] = field(default_factory=set)

    def asks(self, address: str, path: RelPath) -> bool:
        """Whether `address` is still asked for blocks of `path`."""
        return address not in self.failed and (address, path) not in self.barren

    def gave_up(self, path: RelPath) -> bool:
        """Whether no source is asked for `path` any more in this attempt."""
        return not any(self.asks(address, path) for address in self.addresses)


def cause_of(error: Exception) -> str:
    """What kind of trouble a failed write is, for status."""
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    return DISK_FULL if full else WRITE_REFUSED
