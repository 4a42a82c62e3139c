"""Threads for big files' blocks, which the kernel runs after everything else.

A GiB on its way keeps a few threads reading, hashing and writing 8 MiB at a time. At the
priority of the rest, a small file changed meanwhile waited its turn for a core at each of
its steps (judged, opened, fetched, synced): on a 2-core machine sending 1 GiB to two
receivers, it took p50 174 ms and p95 305 ms to arrive, where 30 ms is usual. Lowered, those
threads have a core whenever nothing else wants it and a tenth of one when something does:
over three runs each in one hour, p50 148-173 -> 114-145 ms and p95 290-331 -> 211-285 ms,
with the GiB as fast as before (it waits on the link and the disk as much as on them). The
lowest priority (19) did little better and would leave a GiB crawling beside a busy
compiler. Syncthing lowers all of itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

NICE = 10  # added to the nice value of these threads (19 is the lowest priority)
WORKERS = 2
BIG = 1 << 20  # bytes: blocks this many at once are a big file's

P = ParamSpec("P")
R = TypeVar("R")


def _lowered() -> None:
    # On Linux a thread's own nice value; elsewhere it would lower the whole process.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


_POOL = ThreadPoolExecutor(WORKERS, thread_name_prefix="bulk", initializer=_lowered)


async def in_thread(big: bool, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`work` off the loop: on a lowered thread if `big`."""
    if not big:
        return await asyncio.to_thread(work, *args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, lambda: work(*args, **kwargs))
