"""The only place that reads a clock: monotonic `now` for timers, `wall` for peers and people."""

from __future__ import annotations

import time


class Clock:
    """The real clock; tests of the core pass times in directly instead."""

    @staticmethod
    def now() -> float:
        """Monotonic seconds, for timeouts and liveness."""
        return time.monotonic()

    @staticmethod
    def wall() -> float:
        """Wall-clock seconds since the epoch, for signatures and `last seen`."""
        return time.time()
