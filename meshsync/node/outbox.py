"""Notices on their way to members: a queue per member, sent in order by a task of its own, so
that a slow or stalled member delays neither the others nor the scan whose news it is."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from meshsync.core.wire import Records

log = logging.getLogger("meshsync")

# Records waiting per member (~15 MB). Past that the oldest notices go: a member that far
# behind reads them from our index when it next catches up (every few seconds).
MAX_QUEUED_RECORDS = 20_000

Target = tuple[str, bytes]  # a member's address and key
Send = Callable[[str, bytes, Records], Awaitable[None]]


class Outbox:
    """Notices waiting for each member, each member's sent in the order posted."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._queues: dict[Target, deque[Records]] = {}
        self._queued: dict[Target, int] = {}  # records in each queue
        self.dropped = 0  # notices dropped for want of room, ever

    def post(self, tasks: asyncio.TaskGroup, target: Target, notice: Records) -> None:
        """Queue `notice` for `target`; its sender task (one of `tasks`) starts if idle."""
        queue = self._queues.get(target)
        if queue is None:
            queue = self._queues[target] = deque()
            self._queued[target] = 0
            tasks.create_task(self._drain(target, queue), name=f"notices to {target[0]}")
        queue.append(notice)
        self._queued[target] += len(notice.records)
        while self._queued[target] > MAX_QUEUED_RECORDS and len(queue) > 1:
            dropped = queue.popleft()
            self._queued[target] -= len(dropped.records)
            self.dropped += 1
            log.debug("notices to %s: dropped one of %d records (%d waiting); it catches up "
                      "from our index", target[0], len(dropped.records), self._queued[target])

    def waiting(self, target: Target) -> int:
        """Records queued for `target`, the one being sent aside."""
        return self._queued.get(target, 0)

    async def _drain(self, target: Target, queue: deque[Records]) -> None:
        try:
            while queue:
                notice = queue.popleft()
                self._queued[target] -= len(notice.records)
                try:
                    await self._send(*target, notice)
                except Exception as e:  # unreachable, refused: catch-up is the safety net
                    log.debug("notice to %s failed: %s", target[0], e)
        finally:  # nothing was awaited since the queue was found empty: no post is lost
            del self._queues[target], self._queued[target]
