"""What the node tells those following it (`GET /v1/events`): the latest events, numbered.

Events are kept in a ring: a follower reads on from the last number it saw, so a slow one
costs no memory, and one that fell more than the ring behind is told how many it missed.
`publish` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

KEPT = 1000  # events kept for followers that fall behind, or come back (Last-Event-ID)


class Events:
    """The node's recent events, and a way to follow them."""

    def __init__(self, kept: int = KEPT) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=kept)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()  # publishers on threads, followers on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._news = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake followers on `loop` (the node's, once it runs)."""
        self._loop = loop

    @property
    def last(self) -> int:
        """The number of the latest event, 0 before the first."""
        with self._lock:
            return self._ring[-1]["id"] if self._ring else 0

    def publish(self, kind: str, **fields: Any) -> None:
        """Tell the followers; `fields` must encode as JSON."""
        with self._lock:
            self._ring.append({"id": next(self._numbers), "type": kind, "time": time.time(),
                               **fields})
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake()
        else:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: no one follows now
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._news.set()
        self._news = asyncio.Event()

    def since(self, after: int) -> list[dict[str, Any]]:
        """The events after number `after` still kept, led by a `missed` event if some after
        it are no longer kept."""
        with self._lock:
            found = [e for e in self._ring if e["id"] > after]
        if found and found[0]["id"] > after + 1 and after > 0:
            first = found[0]["id"]
            found.insert(0, {"id": first - 1, "type": "missed", "time": time.time(),
                             "count": first - after - 1})
        return found

    async def follow(self, after: int, idle: float) -> AsyncIterator[list[dict[str, Any]]]:
        """Each new run of events after `after`, as they come; an empty list after `idle`
        seconds without any (to keep the stream alive)."""
        while True:
            news = self._news
            found = self.since(after)
            if found:
                after = found[-1]["id"]
                yield found
                continue
            try:
                await asyncio.wait_for(news.wait(), idle)
            except TimeoutError:
                yield []
