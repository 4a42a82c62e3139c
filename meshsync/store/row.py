"""How a record is stored as a row and read back: each table's columns in the order the
decoders read them, and the checks that make a damaged row a DamagedRow, never a wrong record."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from meshsync.core.errors import WireError
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind, Stamp, stamp
from meshsync.core.signing import split_vouched
from meshsync.core.vclock import Vector

DIGEST = 32
_WRAP = 2**64
T = TypeVar("T")

# Rows are decoded by position; each column is checked against its type first.
_RECORD = (("folder", str), ("path", str), ("kind", str), ("version", str), ("origin", str),
           ("deleted", int), ("size", int), ("mode", int), ("mtime_ns", int), ("blocks", bytes),
           ("target", str), ("signature", bytes))
# A vouched signature's head, kept once in sig_heads (schema/008): b"" for a row without one,
# NULL if it is missing.
_HEAD = ("CASE WHEN sig_head IS NULL THEN x'' ELSE"
         " (SELECT head FROM sig_heads WHERE id = sig_head) END")
_ENTRY = (*_RECORD, ("seq", int), ("inode", int), ("dev", int), ("author", str),
          ("signature's head", bytes))
_NEED = (*_RECORD, ("source", str), ("author", str), ("signature's head", bytes))
_ENTRY_TYPES = tuple(kind for _, kind in _ENTRY)
_NEED_TYPES = tuple(kind for _, kind in _NEED)
_ENTRY_COLUMNS = ", ".join((*(name for name, _ in _ENTRY[:-1]), _HEAD))
_NEED_COLUMNS = ", ".join((*(name for name, _ in _NEED[:-1]), _HEAD))
# Built from the constant column names above, never from input.
_SELECT_ENTRY = f"SELECT {_ENTRY_COLUMNS} FROM files WHERE folder = ? "  # noqa: S608
_SELECT_NEED = f"SELECT {_NEED_COLUMNS} FROM need WHERE folder = ? "  # noqa: S608
SELECT_STAMP = ("SELECT path, kind, deleted, size, mode, mtime_ns, target, inode FROM files"
                " WHERE folder = ? ")
_SELECT_LOSER = f"SELECT {_NEED_COLUMNS} FROM losers WHERE folder = ? "  # noqa: S608
_SELECT_HELD = f"SELECT {_NEED_COLUMNS} FROM held WHERE folder = ? "  # noqa: S608
UPSERT = """
INSERT INTO files (folder, path, kind, version, origin, deleted, size, mode, mtime_ns, blocks,
                   target, signature, sig_head, inode, dev, seq, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (folder, path) DO UPDATE SET
    kind = excluded.kind, version = excluded.version, origin = excluded.origin,
    deleted = excluded.deleted, size = excluded.size, mode = excluded.mode,
    mtime_ns = excluded.mtime_ns, blocks = excluded.blocks, target = excluded.target,
    signature = excluded.signature, sig_head = excluded.sig_head, inode = excluded.inode,
    dev = excluded.dev, seq = excluded.seq, author = excluded.author
"""
ADD_LOSER = """
INSERT OR REPLACE INTO losers (folder, path, kind, version, origin, deleted, size, mode, mtime_ns,
                               blocks, target, signature, sig_head, source, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
ADD_HELD = """
INSERT OR REPLACE INTO held (folder, path, kind, version, origin, deleted, size, mode, mtime_ns,
                             blocks, target, signature, sig_head, source, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# An upsert, not INSERT OR REPLACE: the replaced row's removal must fire the totals' triggers.
ADD_NEED = """
INSERT INTO need (folder, path, kind, version, origin, deleted, size, mode, mtime_ns, blocks,
                  target, signature, sig_head, source, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (folder, path) DO UPDATE SET
    kind = excluded.kind, version = excluded.version, origin = excluded.origin,
    deleted = excluded.deleted, size = excluded.size, mode = excluded.mode,
    mtime_ns = excluded.mtime_ns, blocks = excluded.blocks, target = excluded.target,
    signature = excluded.signature, sig_head = excluded.sig_head, source = excluded.source,
    author = excluded.author
"""


class DamagedRow(Exception):
    """A row that does not decode to a record; the message says which column and why."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A path as it is on this node's disk, with its origin's signature and local bookkeeping."""

    record: FileRecord
    signature: bytes
    seq: int
    inode: int
    dev: int


@dataclass(frozen=True, slots=True)
class Need:
    """A remote version accepted but not yet written, and the peer it came from."""

    record: FileRecord
    signature: bytes
    source: str


@dataclass(frozen=True, slots=True)
class Table(Generic[T]):
    """A table of records: how to read a folder's rows, decode one, and remove a damaged one."""

    name: str
    select: str  # a folder's rows; conditions are appended
    one: str  # the condition picking one row by its key (after the folder)
    key: tuple[int, ...]  # positions in a row of the key columns after the folder
    deletes: tuple[str, ...]  # each takes the folder and the key
    decode: Callable[[tuple[Any, ...]], T]

    def fault(self, row: tuple[Any, ...]) -> str | None:
        """Why the row does not decode; None if it does."""
        try:
            self.decode(row)
        except DamagedRow as e:
            return str(e)
        return None


def columns_of(r: FileRecord) -> tuple[object, ...]:
    """The record's columns, in the order the tables declare them."""
    return (r.path, r.kind.value, json.dumps(r.version.to_json(), separators=(",", ":")),
            r.origin, int(r.deleted), r.size, r.mode, r.mtime_ns, b"".join(r.blocks), r.target)


PUT_HEAD = "INSERT OR IGNORE INTO sig_heads VALUES (?, ?)"


def stored(signature: bytes, heads: dict[bytes, bytes]) -> tuple[bytes, bytes | None]:
    """The `signature` and `sig_head` columns that keep a signature; a vouched one's head is
    added to `heads` (by its id) for the caller to put with PUT_HEAD."""
    head, tail = split_vouched(signature)
    if not head:
        return signature, None
    heads[ident := _head_id(head)] = head
    return tail, ident


@lru_cache(maxsize=64)
def _head_id(head: bytes) -> bytes:
    return hashlib.sha256(head).digest()


def _check(row: tuple[Any, ...], columns: tuple[tuple[str, type], ...]) -> None:
    """DamagedRow unless every column has its declared type."""
    for value, (name, kind) in zip(row, columns, strict=True):
        if type(value) is not kind:
            raise DamagedRow(f"{name} is {type(value).__name__}, not {kind.__name__}")


def _record(row: tuple[Any, ...], author: str) -> FileRecord:
    _, path, kind, version, origin, deleted, size, mode, mtime_ns, blocks, target = row[:11]
    if len(blocks) % DIGEST:
        raise DamagedRow(f"blocks hold {len(blocks)} bytes, not whole {DIGEST}-byte digests")
    if author and (len(author) != 16 or author.strip("0123456789abcdef") or author == origin):
        raise DamagedRow(f"author {author[:20]!r} is not another node's key")
    try:
        vector = _vector(version)
    except (ValueError, RecursionError, WireError) as e:
        raise DamagedRow(f"version is not a version vector: {e}") from None
    if (kind_of := _KINDS.get(kind)) is None:
        raise DamagedRow(f"kind {kind[:20]!r} is none of file, dir, symlink")
    digests = (blocks,) if len(blocks) == DIGEST else tuple(
        blocks[i : i + DIGEST] for i in range(0, len(blocks), DIGEST))
    return FileRecord(RelPath(path), kind_of, vector, origin, bool(deleted), size, mode,
                      mtime_ns, digests, target, author)


_KINDS = {kind.value: kind for kind in Kind}  # a dict is faster than Kind(...) per row


def _entry(row: tuple[Any, ...]) -> Entry:
    if tuple(map(type, row)) != _ENTRY_TYPES:
        _check(row, _ENTRY)
    return Entry(_record(row, row[15]), row[16] + row[11], row[12], _unsigned(row[13]),
                 _unsigned(row[14]))


def stamp_of(row: tuple[Any, ...]) -> Stamp | None:
    """The stamp of a SELECT_STAMP row; None for a deletion, and for a row whose path or kind
    is damaged. A stamp with a damaged column matches nothing on disk: the scan reads that
    row's entry, which sets it aside."""
    path, kind, deleted, size, mode, mtime_ns, target, inode = row
    kind_of = _KINDS.get(kind)
    if deleted or kind_of is None or type(path) is not str or type(inode) is not int:
        return None
    return stamp(kind_of, size, mode, mtime_ns, target, _unsigned(inode))


def _need(row: tuple[Any, ...]) -> Need:
    if tuple(map(type, row)) != _NEED_TYPES:
        _check(row, _NEED)
    return Need(_record(row, row[13]), row[14] + row[11], row[12])


FILES = Table("files", _SELECT_ENTRY, "AND path = ?", (1,), (
    "DELETE FROM blocks WHERE file IN (SELECT id FROM files WHERE folder = ? AND path = ?)",
    "DELETE FROM files WHERE folder = ? AND path = ?"), _entry)
NEEDS = Table("need", _SELECT_NEED, "AND path = ?", (1,),
              ("DELETE FROM need WHERE folder = ? AND path = ?",), _need)
LOSERS = Table("losers", _SELECT_LOSER, "AND path = ? AND origin = ?", (1, 4),
               ("DELETE FROM losers WHERE folder = ? AND path = ? AND origin = ?",), _need)
HELD = Table("held", _SELECT_HELD, "AND path = ? AND origin = ?", (1, 4),
             ("DELETE FROM held WHERE folder = ? AND path = ? AND origin = ?",), _need)


@lru_cache(maxsize=4096)
def _vector(text: str) -> Vector:
    """A version vector from its JSON; cached, as many files share one (a new file's is {me: 1})."""
    return Vector.from_json(json.loads(text))


def vector_of(text: object) -> Vector | None:
    """The version vector a `version` column holds; None if it is damaged."""
    try:
        return _vector(text) if type(text) is str else None
    except (ValueError, RecursionError, WireError):
        return None


# SQLite integers are signed 64-bit; inode and device numbers are unsigned and some file
# systems (NFS, FUSE, btrfs subvolumes) use the top bit.
def signed(n: int) -> int:
    return n - _WRAP if n >= _WRAP // 2 else n


def _unsigned(n: int) -> int:
    return n + _WRAP if n < 0 else n
