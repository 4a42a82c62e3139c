"""Log throttling: a peer cannot flood the log by repeating the same bad request."""

from __future__ import annotations

from collections.abc import Hashable

WINDOW = 60.0
MAX_KEYS = 1024


class Throttle:
    """Allows one report per key per window; forgets everything when too many keys pile up."""

    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        """True if `key` was not reported within the window before `now`."""
        last = self._last.get(key)
        if last is not None and now - last < self._window:
            return False
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[key] = now
        return True
