"""The only place that reads a clock: monotonic `now` for timers, `wall` for peers and people."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

OFFSET_VARIABLE = "MESHSYNC_CLOCK_OFFSET"
MAX_SHIFT = 10 * 365 * 86400.0  # seconds: a wrong clock to test with, not another century


class Clock:
    """The real clock, its wall time shifted by MESHSYNC_CLOCK_OFFSET seconds (a test seam: a
    LAN test gives one node a wrong clock); tests of the core pass times in directly instead."""

    def __init__(self, offset: float | None = None) -> None:
        """`offset` seconds added to wall time; by default from the environment (ValueError,
        saying what is wrong, if it is not a number of seconds)."""
        self._offset = offset_from(os.environ) if offset is None else offset

    @staticmethod
    def now() -> float:
        """Monotonic seconds, for timeouts and liveness."""
        return time.monotonic()

    def wall(self) -> float:
        """Wall-clock seconds since the epoch, for signatures and `last seen`."""
        return time.time() + self._offset


def offset_from(environ: Mapping[str, str]) -> float:
    """The seconds MESHSYNC_CLOCK_OFFSET asks to add to wall time (0 if unset); ValueError if it
    is not a finite number of seconds within ten years."""
    text = environ.get(OFFSET_VARIABLE, "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not abs(value) <= MAX_SHIFT:  # also NaN
        raise ValueError(f"{OFFSET_VARIABLE}={text[:40]!r} is not a number of seconds within "
                         f"±{MAX_SHIFT:.0f}")
    return value
