"""SSH wire encoding: the uint32/string/mpint framing of RFC 4251 section 5."""

from __future__ import annotations

import struct


def put_u32(n: int) -> bytes:
    """Encode n as a big-endian uint32."""
    return struct.pack(">I", n)


def put_string(b: bytes) -> bytes:
    """Encode b as an SSH string (uint32 length, then the bytes)."""
    return put_u32(len(b)) + b


def put_mpint(n: int) -> bytes:
    """Encode a non-negative integer as a minimal SSH mpint."""
    if n < 0:
        raise ValueError("negative mpint")
    # One byte beyond bit_length/8 keeps the sign bit clear, as two's complement requires.
    return put_string(n.to_bytes((n.bit_length() + 8) // 8, "big") if n else b"")


class Reader:
    """Bounds-checked cursor over untrusted SSH wire bytes; malformed input raises ValueError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, n: int, what: str) -> bytes:
        left = len(self._data) - self._pos
        if n > left:
            raise ValueError(f"truncated {what}: needs {n} bytes, only {left} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u32(self) -> int:
        """Read a big-endian uint32."""
        return int.from_bytes(self._take(4, "uint32"), "big")

    def string(self) -> bytes:
        """Read an SSH string; its length may not exceed the remaining bytes."""
        return self._take(self.u32(), "string")

    def mpint(self) -> int:
        """Read a non-negative SSH mpint."""
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise ValueError("negative mpint")
        return int.from_bytes(raw, "big")

    def done(self) -> bool:
        """True when every byte has been consumed."""
        return self._pos == len(self._data)
