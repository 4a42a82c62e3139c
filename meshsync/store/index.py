"""The index: what is on this node's disk, which blocks it holds and what it still needs."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from meshsync.core.errors import MeshsyncError, WireError
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import Order, Vector

DIGEST = 32
PAGE = 1000  # rows per read while streaming `entries`
BUSY_TIMEOUT = 30.0  # seconds to wait for another connection's write transaction
_WRAP = 2**64

# Rows are decoded by position; each column is checked against its type first.
_RECORD = (("folder", str), ("path", str), ("kind", str), ("version", str), ("origin", str),
           ("deleted", int), ("size", int), ("mode", int), ("mtime_ns", int), ("blocks", bytes),
           ("target", str), ("signature", bytes))
_ENTRY = (*_RECORD, ("seq", int), ("inode", int), ("dev", int))
_NEED = (*_RECORD, ("source", str))
_ENTRY_TYPES = tuple(kind for _, kind in _ENTRY)
_NEED_TYPES = tuple(kind for _, kind in _NEED)
_ENTRY_COLUMNS = ", ".join(name for name, _ in _ENTRY)
_NEED_COLUMNS = ", ".join(name for name, _ in _NEED)
# Built from the constant column names above, never from input.
_SELECT_ENTRY = f"SELECT {_ENTRY_COLUMNS} FROM files WHERE folder = ? "  # noqa: S608
_SELECT_NEED = f"SELECT {_NEED_COLUMNS} FROM need WHERE folder = ? "  # noqa: S608
_SELECT_LOSER = f"SELECT {_NEED_COLUMNS} FROM losers WHERE folder = ? "  # noqa: S608
_UPSERT = """
INSERT INTO files (folder, path, kind, version, origin, deleted, size, mode, mtime_ns, blocks,
                   target, signature, inode, dev, seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (folder, path) DO UPDATE SET
    kind = excluded.kind, version = excluded.version, origin = excluded.origin,
    deleted = excluded.deleted, size = excluded.size, mode = excluded.mode,
    mtime_ns = excluded.mtime_ns, blocks = excluded.blocks, target = excluded.target,
    signature = excluded.signature, inode = excluded.inode, dev = excluded.dev, seq = excluded.seq
"""
_ADD_LOSER = """
INSERT OR REPLACE INTO losers (folder, path, kind, version, origin, deleted, size, mode, mtime_ns,
                               blocks, target, signature, source)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_ADD_NEED = """
INSERT OR REPLACE INTO need (folder, path, kind, version, origin, deleted, size, mode, mtime_ns,
                             blocks, target, signature, source)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


class CorruptIndexError(MeshsyncError):
    """A row of the index does not decode to a record: the database is damaged or foreign."""


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


class Index:
    """One index database; safe to share between threads, which take turns."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        try:
            _use_wal(self._db, path)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            _migrate(self._db, path)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the database; the object is unusable afterwards."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction cannot
        # deadlock against another connection to the same file.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _entries(self, where: str, args: tuple[object, ...]) -> list[Entry]:
        return [_entry(row) for row in self._rows(_SELECT_ENTRY + where, args)]

    def add_losers(self, folder: str, losers: Sequence[Need]) -> None:
        """Keep versions that lost to a concurrent one (one per path and origin, the latest)."""
        with self._write() as db:
            db.executemany(_ADD_LOSER, (
                (folder, *_columns(n.record), n.signature, n.source) for n in losers))

    def losers(self, folder: str) -> list[Need]:
        """Every version kept aside as a loser, in path order."""
        return [_need(row) for row in self._rows(_SELECT_LOSER + "ORDER BY path", (folder,))]

    def drop_loser(self, folder: str, record: FileRecord) -> None:
        """Forget one version kept aside."""
        with self._write() as db:
            db.execute("DELETE FROM losers WHERE folder = ? AND path = ? AND origin = ?",
                       (folder, record.path, record.origin))

    def _needs(self, where: str, args: tuple[object, ...]) -> list[Need]:
        return [_need(row) for row in self._rows(_SELECT_NEED + where, args)]

    def get(self, folder: str, path: str) -> Entry | None:
        """The row of one path, None if the index has never seen it."""
        found = self._entries("AND path = ?", (folder, path))
        return found[0] if found else None

    def put(self, folder: str, items: Sequence[tuple[FileRecord, bytes, int, int]]) -> list[int]:
        """Store (record, signature, inode, dev) rows; each item gets the folder's next seq.

        A later item for the same path replaces an earlier one. A need for a path that is now
        at its version, or at a newer one, is dropped.
        """
        if not items:
            return []
        with self._write() as db:
            db.execute("INSERT INTO folder_seq VALUES (?, ?) ON CONFLICT (folder) DO UPDATE"
                       " SET seq = seq + excluded.seq", (folder, len(items)))
            top = db.execute("SELECT seq FROM folder_seq WHERE folder = ?", (folder,)).fetchone()
            seqs = list(range(top[0] - len(items) + 1, top[0] + 1))
            db.executemany(_UPSERT, (
                (folder, *_columns(record), signature, _signed(inode), _signed(dev), seq)
                for (record, signature, inode, dev), seq in zip(items, seqs, strict=True)))
            # The write lock is ours, so this put's rows are exactly those from its first seq.
            ids = dict(db.execute("SELECT path, id FROM files WHERE folder = ? AND seq >= ?",
                                  (folder, seqs[0])))
            final = {record.path: record for record, *_ in items}
            db.executemany("DELETE FROM blocks WHERE file = ?", ((i,) for i in ids.values()))
            db.executemany("INSERT INTO blocks (file, idx, hash) VALUES (?, ?, ?)", (
                (ids[record.path], i, digest)
                for record in final.values() if record.kind is Kind.FILE and not record.deleted
                for i, digest in enumerate(record.blocks)))
            db.executemany("DELETE FROM need WHERE folder = ? AND path = ?", [
                (folder, path) for path, record in final.items()
                if (need := _need_version(db, folder, path)) is not None
                and need.compare(record.version) in (Order.EQUAL, Order.OLDER)])
        return seqs

    def entries(self, folder: str) -> Iterator[Entry]:
        """Every row of the folder in path order, read a page per transaction as it is consumed."""
        after = ""
        while page := self._entries("AND path > ? ORDER BY path LIMIT ?", (folder, after, PAGE)):
            yield from page
            after = page[-1].record.path

    def entries_under(self, folder: str, path: str) -> list[Entry]:
        """The rows of `path` and of everything below it, in path order."""
        # Paths below `p` sort in ["p/", "p0") ("0" follows "/"); the range keeps it one index scan.
        return self._entries("AND path >= ? AND path < ? AND (path = ? OR path >= ?)"
                             " ORDER BY path", (folder, path, path + "0", path, path + "/"))

    def since(self, folder: str, seq: int, limit: int = 1000) -> list[Entry]:
        """Up to `limit` rows put after `seq`, in seq order."""
        return self._entries("AND seq > ? ORDER BY seq LIMIT ?", (folder, seq, limit))

    def max_seq(self, folder: str) -> int:
        """The last seq handed out in the folder; 0 before the first put."""
        rows = self._rows("SELECT seq FROM folder_seq WHERE folder = ?", (folder,))
        return int(rows[0][0]) if rows else 0

    def find_block(self, folder: str, digest: bytes) -> tuple[str, int] | None:
        """(path, block index) of a live local file holding this block, None if none does."""
        # CROSS JOIN pins the loop order so the lookup starts from the hash index.
        rows = self._rows("SELECT f.path, b.idx FROM blocks AS b CROSS JOIN files AS f"
                          " ON f.id = b.file WHERE b.hash = ? AND f.folder = ? LIMIT 1",
                          (digest, folder))
        return (rows[0][0], rows[0][1]) if rows else None

    def add_needs(self, folder: str, needs: Sequence[Need]) -> None:
        """Queue remote versions to write, each replacing any need for the same path."""
        with self._write() as db:
            db.executemany(_ADD_NEED, (
                (folder, *_columns(n.record), n.signature, n.source) for n in needs))

    def need(self, folder: str, path: str) -> Need | None:
        """The version queued for one path, None if none is."""
        found = self._needs("AND path = ?", (folder, path))
        return found[0] if found else None

    def needs(self, folder: str, limit: int = 10000) -> list[Need]:
        """Up to `limit` queued versions, in path order."""
        return self._needs("ORDER BY path LIMIT ?", (folder, limit))

    def deletions_under(self, folder: str, path: str) -> bool:
        """Whether a deletion is queued for anything below `path`."""
        below = (folder, path + "/", path + "0")
        return bool(self._rows("SELECT 1 FROM need WHERE folder = ? AND deleted"
                               " AND path >= ? AND path < ? LIMIT 1", below))

    def conflict_copies(self, folder: str) -> list[Entry]:
        """Live rows whose name marks them as conflict copies, in path order."""
        return self._entries("AND NOT deleted AND path LIKE '%.sync-conflict-%' ORDER BY path",
                             (folder,))

    def drop_need(self, folder: str, path: str, only: FileRecord | None = None) -> None:
        """Forget the version queued for one path, if any (with `only`: if it is that one)."""
        with self._write() as db:
            if only is not None:
                row = db.execute(_SELECT_NEED + "AND path = ?", (folder, path)).fetchone()
                if row is None or _need(row).record != only:
                    return
            db.execute("DELETE FROM need WHERE folder = ? AND path = ?", (folder, path))

    def need_totals(self, folder: str) -> tuple[int, int]:
        """(paths, bytes) still to write: every queued version, deletions included."""
        row = self._rows("SELECT count(*), coalesce(sum(size), 0) FROM need WHERE folder = ?",
                         (folder,))[0]
        return int(row[0]), int(row[1])

    def peer_seq(self, folder: str, peer: str, epoch: str) -> int:
        """The highest seq of the peer's index (in that epoch) taken in; 0 if none."""
        rows = self._rows("SELECT seq FROM peer_seq WHERE folder = ? AND peer = ? AND epoch = ?",
                          (folder, peer, epoch))
        return int(rows[0][0]) if rows else 0

    def set_peer_seq(self, folder: str, peer: str, epoch: str, seq: int) -> None:
        """Record how far the peer's index (in that epoch) has been taken in."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO peer_seq VALUES (?, ?, ?, ?)",
                       (folder, peer, epoch, seq))

    def forget_peer_seqs(self, folder: str) -> None:
        """Read every peer's index of the folder from its start at the next catch-up."""
        with self._write() as db:
            db.execute("DELETE FROM peer_seq WHERE folder = ?", (folder,))

    def get_meta(self, key: str) -> str | None:
        """A stored setting, None if unset."""
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting, replacing any earlier value."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def counts(self, folder: str) -> tuple[int, int]:
        """(paths, bytes) present on disk: files, directories and links, tombstones excluded."""
        row = self._rows("SELECT count(*), coalesce(sum(size), 0) FROM files"
                         " WHERE folder = ? AND NOT deleted", (folder,))[0]
        return int(row[0]), int(row[1])


def _use_wal(db: sqlite3.Connection, path: Path) -> None:
    """Switch the file to WAL mode, which is what lets synchronous=NORMAL survive power loss.

    The switch needs an exclusive lock. When another connection is switching the same new file
    at that moment, SQLite reports "locked" at once instead of waiting (to avoid a deadlock), so
    we wait here, as the busy timeout would.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = 0.001
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    if mode != "wal":
        raise MeshsyncError(f"{path}: SQLite cannot use WAL mode here (got {mode})")


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to date, applying `schema/NNN-*.sql` above `user_version` in order."""
    schema = files("meshsync.store").joinpath("schema")
    scripts = sorted((int(s.name.split("-", 1)[0]), s) for s in schema.iterdir()
                     if s.name.endswith(".sql")) if schema.is_dir() else []
    if not scripts:
        raise MeshsyncError(f"no schema in {schema}: meshsync was installed without its data")
    # The version is read inside the write transaction: two processes opening a new file at
    # once must not both create the tables.
    db.execute("BEGIN IMMEDIATE")
    try:
        current = db.execute("PRAGMA user_version").fetchone()[0]
        if current > scripts[-1][0]:
            raise MeshsyncError(f"{path} was written by a newer meshsync (schema {current},"
                                f" this one knows up to {scripts[-1][0]})")
        for number, script in scripts:
            if number > current:
                for statement in _statements(script.read_text(encoding="utf-8")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number:d}")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, one at a time (executescript would commit our transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        yield pending


def _columns(r: FileRecord) -> tuple[object, ...]:
    """The record's columns, in the order the tables declare them."""
    return (r.path, r.kind.value, json.dumps(r.version.to_json(), separators=(",", ":")),
            r.origin, int(r.deleted), r.size, r.mode, r.mtime_ns, b"".join(r.blocks), r.target)


def _check(row: tuple[Any, ...], columns: tuple[tuple[str, type], ...]) -> None:
    """CorruptIndexError naming the row unless every column has its declared type."""
    for value, (name, kind) in zip(row, columns, strict=True):
        if type(value) is not kind:
            raise CorruptIndexError(f"index row {row[0]!r}/{row[1]!r} is corrupt: {name} is"
                                    f" {type(value).__name__}, not {kind.__name__}")


def _record(row: tuple[Any, ...]) -> FileRecord:
    folder, path, kind, version, origin, deleted, size, mode, mtime_ns, blocks, target = row[:11]
    try:
        if len(blocks) % DIGEST:
            raise ValueError("blocks are not whole digests")
        return FileRecord(
            RelPath(path), Kind(kind), _vector(version), origin, bool(deleted), size, mode,
            mtime_ns, tuple(blocks[i : i + DIGEST] for i in range(0, len(blocks), DIGEST)),
            target)
    except (ValueError, WireError) as e:
        raise CorruptIndexError(f"index row {folder!r}/{path!r} is corrupt: {e}") from None


def _entry(row: tuple[Any, ...]) -> Entry:
    if tuple(map(type, row)) != _ENTRY_TYPES:
        _check(row, _ENTRY)
    return Entry(_record(row), row[11], row[12], _unsigned(row[13]), _unsigned(row[14]))


def _need(row: tuple[Any, ...]) -> Need:
    if tuple(map(type, row)) != _NEED_TYPES:
        _check(row, _NEED)
    return Need(_record(row), row[11], row[12])


@lru_cache(maxsize=4096)
def _vector(text: str) -> Vector:
    """A version vector from its JSON; cached, as many files share one (a new file's is {me: 1})."""
    return Vector.from_json(json.loads(text))


def _need_version(db: sqlite3.Connection, folder: str, path: str) -> Vector | None:
    row = db.execute(_SELECT_NEED + "AND path = ?", (folder, path)).fetchone()
    return None if row is None else _need(row).record.version


# SQLite integers are signed 64-bit; inode and device numbers are unsigned and some file
# systems (NFS, FUSE, btrfs subvolumes) use the top bit.
def _signed(n: int) -> int:
    return n - _WRAP if n >= _WRAP // 2 else n


def _unsigned(n: int) -> int:
    return n + _WRAP if n < 0 else n
