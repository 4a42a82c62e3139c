"""Trusted peer keys: authorized_keys-style files, re-read whenever the user edits them."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from meshsync.crypto.keys import KEY_TYPES, parse_public_line, public_key_line

# One authorized_keys options field: unquoted chars or "quoted strings" (with \" escapes).
# Single-char alternatives keep the match linear on hostile input.
_OPTIONS = re.compile(r'(?:[^\s"]|"(?:[^"\\]|\\.)*")+\s+')
RACY_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key blob with its free-text comment."""

    blob: bytes
    comment: str

    @property
    def line(self) -> str:
        """The key as an authorized_keys/.pub line."""
        return public_key_line(self.blob, self.comment)


def parse_key_line(line: str) -> PublicKey | None:
    """Parse an authorized_keys line (options allowed); None for comments, blanks and junk."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    if line.split(None, 1)[0] not in KEY_TYPES:
        options = _OPTIONS.match(line)
        if options is None:
            return None
        line = line[options.end() :]
    try:
        blob, comment = parse_public_line(line)
    except ValueError:
        return None
    return PublicKey(blob, comment)


class TrustStore:
    """The set of trusted keys from several files; `writable` receives keys added at runtime."""

    def __init__(self, paths: list[Path], writable: Path) -> None:
        self._paths = list(dict.fromkeys([*paths, writable]))
        self._writable = writable
        self._cache: dict[Path, tuple[tuple[int, int, int], frozenset[bytes]]] = {}
        self._lock = threading.Lock()

    def _load(self, path: Path) -> frozenset[bytes]:
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._cache.get(path)
            # Timestamps are coarse (ms ticks): a same-size edit right after our read would keep
            # the old stamp, so a file touched in the last seconds is never served from cache.
            settled = time.time_ns() - st.st_mtime_ns > RACY_NS
            if cached is not None and cached[0] == stamp and settled:
                return cached[1]
            text = path.read_text(errors="replace")
        except OSError:
            return frozenset()
        keys = frozenset(k.blob for k in map(parse_key_line, text.splitlines()) if k)
        self._cache[path] = (stamp, keys)
        return keys

    def keys(self) -> set[bytes]:
        """All currently trusted key blobs."""
        with self._lock:
            return set().union(*map(self._load, self._paths))

    def is_trusted(self, blob: bytes) -> bool:
        """True if blob is in any trust file as it is on disk now."""
        return blob in self.keys()

    def add(self, key: PublicKey) -> bool:
        """Append key to the writable file; False if it was already trusted."""
        with self._lock:
            if any(key.blob in self._load(p) for p in self._paths):
                return False
            self._writable.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._writable, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+b") as f:
                # A hand-edited file may lack a final newline; don't glue our key onto its last.
                glue = b"\n" if f.read()[-1:] not in (b"", b"\n") else b""
                f.write(glue + key.line.encode() + b"\n")
        return True
