"""Field checks shared by every parser of peer input: each refuses with a WireError."""

from __future__ import annotations

from typing import Any

from meshsync.core.errors import WireError

_HEX = frozenset("0123456789abcdefABCDEF")


def check_int(data: dict[str, Any], key: str, low: int, high: int) -> int:
    """`data[key]` as an integer in [low, high] (a bool is not an integer here)."""
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise WireError(f"{key} must be an integer in [{low}, {high}]")
    return value


def is_unicode(text: str) -> bool:
    """Whether `text` has no lone surrogate (JSON can spell one; UTF-8 and SQLite cannot)."""
    return text.isascii() or not any("\ud800" <= c <= "\udfff" for c in text)


def check_digest(text: object) -> bytes:
    """A SHA-256 digest given as 64 hex digits."""
    # bytes.fromhex alone would skip whitespace and return a digest shorter than 32 bytes.
    if not isinstance(text, str) or len(text) != 64 or not _HEX.issuperset(text):
        raise WireError("a block hash is 64 hex digits")
    return bytes.fromhex(text)
