"""Log lines caused by peers: rate-limited per cause and per peer, and peer text shown printable.

A peer cannot flood the log by repeating a bad request, nor by varying it (a fresh key or
address per request is still one cause), nor forge a line by putting a newline or a terminal
escape into a name, a path or an error it makes us print.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

WINDOW = 60.0
PER_CAUSE = 10  # lines per cause per window, whichever peers they are about
MAX_KEYS = 1024
SHOWN = 120  # characters of peer-chosen text a line shows


class Throttle:
    """Allows one line per key per window, and at most `per_cause` lines per cause per window.

    A key is a tuple whose last item names the cause (`(peer, "bad hello")`), or a cause alone.
    Safe to share between threads (a folder judges records in one and reports on the loop).
    """

    def __init__(self, window: float = WINDOW, per_cause: int = PER_CAUSE) -> None:
        self._window = window
        self._per_cause = per_cause
        self._last: dict[Hashable, float] = {}
        self._causes: dict[Hashable, tuple[float, int]] = {}  # cause -> (window start, lines)
        self._lock = threading.Lock()

    def allow(self, key: Hashable, now: float) -> bool:
        """True if a line for `key` may be logged at `now`; the caller then logs exactly one."""
        with self._lock:
            return self._allow(key, now)

    def _allow(self, key: Hashable, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self._window:
            return False
        cause = key[-1] if isinstance(key, tuple) and key else key
        start, lines = self._causes.get(cause, (now, 0))
        if now - start >= self._window:
            start, lines = now, 0
        if lines >= self._per_cause:
            return False
        if len(self._last) >= MAX_KEYS and not self._forget(now):
            return False  # a flood of distinct keys: its causes' budgets are spent anyway
        if len(self._causes) >= MAX_KEYS and cause not in self._causes:
            return False
        self._causes[cause] = (start, lines + 1)
        self._last[key] = now
        return True

    def _forget(self, now: float) -> bool:
        """Drop keys whose window has passed; True if there is room for a new one."""
        self._last = {k: t for k, t in self._last.items() if now - t < self._window}
        self._causes = {c: v for c, v in self._causes.items() if now - v[0] < self._window}
        return len(self._last) < MAX_KEYS


def shown(text: object, limit: int | None = SHOWN) -> str:
    """`text` fit for one log line: at most `limit` characters (None: all), anything
    unprintable escaped."""
    value = str(text)
    cut = value if limit is None else value[:limit]
    if not cut.isprintable():
        # repr escapes newlines, escape sequences, bidi overrides and lone surrogates alike.
        cut = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return cut + "…" if len(cut) < len(value) else cut
