"""The index: what is on this node's disk, which blocks it holds and what it still needs."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Generic, TypeVar

from meshsync.core.errors import MeshsyncError, WireError
from meshsync.core.paths import RelPath, check_path
from meshsync.core.records import FileRecord, Kind
from meshsync.core.throttle import shown
from meshsync.core.vclock import Order, Vector

log = logging.getLogger("meshsync.index")

DIGEST = 32
PAGE = 1000  # rows per read while streaming `entries`
BUSY_TIMEOUT = 30.0  # seconds to wait for another connection's write transaction
LOGGED_ROWS = 20  # damaged rows logged one by one; past that, one line per batch set aside
_WRAP = 2**64
_MAGIC = b"SQLite format 3\0"  # how every SQLite database file starts
T = TypeVar("T")

# SQLite's primary result codes that say the user must act (the extended ones end in these).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR = 3, 5, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_FIXABLE = frozenset({_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR,
                      _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB})

# Rows are decoded by position; each column is checked against its type first.
_RECORD = (("folder", str), ("path", str), ("kind", str), ("version", str), ("origin", str),
           ("deleted", int), ("size", int), ("mode", int), ("mtime_ns", int), ("blocks", bytes),
           ("target", str), ("signature", bytes))
_ENTRY = (*_RECORD, ("seq", int), ("inode", int), ("dev", int), ("author", str))
_NEED = (*_RECORD, ("source", str), ("author", str))
_ENTRY_TYPES = tuple(kind for _, kind in _ENTRY)
_NEED_TYPES = tuple(kind for _, kind in _NEED)
_ENTRY_COLUMNS = ", ".join(name for name, _ in _ENTRY)
_NEED_COLUMNS = ", ".join(name for name, _ in _NEED)
# Built from the constant column names above, never from input.
_SELECT_ENTRY = f"SELECT {_ENTRY_COLUMNS} FROM files WHERE folder = ? "  # noqa: S608
_SELECT_NEED = f"SELECT {_NEED_COLUMNS} FROM need WHERE folder = ? "  # noqa: S608
_SELECT_LOSER = f"SELECT {_NEED_COLUMNS} FROM losers WHERE folder = ? "  # noqa: S608
_SELECT_HELD = f"SELECT {_NEED_COLUMNS} FROM held WHERE folder = ? "  # noqa: S608
_UPSERT = """
INSERT INTO files (folder, path, kind, version, origin, deleted, size, mode, mtime_ns, blocks,
                   target, signature, inode, dev, seq, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (folder, path) DO UPDATE SET
    kind = excluded.kind, version = excluded.version, origin = excluded.origin,
    deleted = excluded.deleted, size = excluded.size, mode = excluded.mode,
    mtime_ns = excluded.mtime_ns, blocks = excluded.blocks, target = excluded.target,
    signature = excluded.signature, inode = excluded.inode, dev = excluded.dev, seq = excluded.seq,
    author = excluded.author
"""
_ADD_LOSER = """
INSERT OR REPLACE INTO losers (folder, path, kind, version, origin, deleted, size, mode, mtime_ns,
                               blocks, target, signature, source, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_ADD_HELD = """
INSERT OR REPLACE INTO held (folder, path, kind, version, origin, deleted, size, mode, mtime_ns,
                             blocks, target, signature, source, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_ADD_NEED = """
INSERT OR REPLACE INTO need (folder, path, kind, version, origin, deleted, size, mode, mtime_ns,
                             blocks, target, signature, source, author)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


class IndexUnusable(MeshsyncError):
    """The index cannot be opened or written; the message says why and what to do, in one line."""


class _DamagedFile(IndexUnusable):
    """The file is not a database or fails its check: set it aside and start a fresh one."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"the index {path} is damaged ({reason}): remove it and start again"
                         " (meshsync rebuilds it from the folders and their peers)")
        self.reason = reason


class _DamagedRow(Exception):
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
class _Table(Generic[T]):
    """A table of records: how to read a folder's rows, decode one, and remove a damaged one."""

    name: str
    select: str  # a folder's rows; conditions are appended
    one: str  # the condition picking one row by its key (after the folder)
    key: tuple[int, ...]  # positions in a row of the key columns after the folder
    deletes: tuple[str, ...]  # each takes the folder and the key
    decode: Callable[[tuple[Any, ...]], T]


class Index:
    """One index database; safe to share between threads, which take turns.

    A row that does not decode is logged, removed and remembered: readers skip it, and
    `take_damaged` hands its path to the folder to rescan from disk and ask peers for again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._damaged: dict[str, set[RelPath]] = {}  # folder -> paths set aside, under _lock
        self._logged = 0  # damaged rows logged one by one, under _lock
        self._db = _open(path)

    def close(self) -> None:
        """Close the database; the object is unusable afterwards."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction cannot
        # deadlock against another connection to the same file.
        with self._lock, _unusable_as_error(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock, _unusable_as_error(self.path):
            return self._db.execute(sql, args).fetchall()

    def _read(self, table: _Table[T], where: str, args: tuple[object, ...]) -> list[T]:
        """The rows that decode, damaged ones set aside; a page wholly set aside is read again."""
        # Setting a row aside deletes it, so reading again goes on past it.
        while rows := self._rows(table.select + where, args):
            if found := self._decoded(table, rows):
                return found
        return []

    def _decoded(self, table: _Table[T], rows: list[tuple[Any, ...]],
                 db: sqlite3.Connection | None = None) -> list[T]:
        """Decode rows; `db` when inside `_write` (the lock held, the transaction open)."""
        found, damaged = [], []
        for row in rows:
            try:
                found.append(table.decode(row))
            except _DamagedRow:
                damaged.append(row)
        if damaged:
            if db is None:
                with self._write() as db:
                    self._set_aside(db, table, damaged)
            else:
                self._set_aside(db, table, damaged)
        return found

    def _set_aside(self, db: sqlite3.Connection, table: _Table[Any],
                   rows: list[tuple[Any, ...]]) -> None:
        """Remove the rows that still fail to decode, remember their paths, and log them."""
        removed = []
        for row in rows:
            key = (row[0], *(row[i] for i in table.key))
            # Another thread may have replaced the row since it was read: look again.
            current = db.execute(table.select + table.one, key).fetchone()
            reason = None if current is None else _fault(table, current)
            if reason is None:
                continue
            removed.append((row[1], reason))
            for statement in table.deletes:
                db.execute(statement, key)
        if not removed:
            return
        folder = rows[0][0]
        paths = self._damaged.setdefault(folder, set())
        for path, _ in removed:
            with contextlib.suppress(WireError):  # a path no folder can hold: nothing to rescan
                paths.add(check_path(path))
        # A line per row, up to a bound: a wholly damaged table would flood the log.
        told = removed[: max(0, LOGGED_ROWS - self._logged)]
        self._logged += len(told)
        for path, reason in told:
            log.warning("index: set aside a damaged %s row of folder %r, path %r (%s); it is"
                        " rebuilt from the folder and its peers", table.name, folder, path,
                        shown(reason, None))
        if len(removed) > len(told):
            log.warning("index: set aside %d more damaged %s rows of folder %r",
                        len(removed) - len(told), table.name, folder)

    def take_damaged(self, folder: str) -> set[RelPath]:
        """The paths whose rows were set aside as damaged since the last call (then forgotten).

        The folder rescans them from disk and reads its peers' indexes again from the start.
        """
        with self._lock:
            return self._damaged.pop(folder, set())

    def _entries(self, where: str, args: tuple[object, ...]) -> list[Entry]:
        return self._read(_FILES, where, args)

    def add_losers(self, folder: str, losers: Sequence[Need]) -> None:
        """Keep versions that lost to a concurrent one (one per path and origin, the latest)."""
        with self._write() as db:
            db.executemany(_ADD_LOSER, (
                (folder, *_columns(n.record), n.signature, n.source, n.record.author)
                for n in losers))

    def losers(self, folder: str) -> list[Need]:
        """Every version kept aside as a loser, in path order."""
        return self._read(_LOSERS, "ORDER BY path", (folder,))

    def drop_loser(self, folder: str, record: FileRecord) -> None:
        """Forget one version kept aside."""
        with self._write() as db:
            db.execute("DELETE FROM losers WHERE folder = ? AND path = ? AND origin = ?",
                       (folder, record.path, record.origin))

    def add_held(self, folder: str, held: Sequence[Need]) -> None:
        """Keep versions whose origin is not trusted (one per path and origin, the latest)."""
        with self._write() as db:
            db.executemany(_ADD_HELD, (
                (folder, *_columns(n.record), n.signature, n.source, n.record.author)
                for n in held))

    def held(self, folder: str, limit: int = -1) -> list[Need]:
        """Versions held back for their origin, in path order (the first `limit`)."""
        return self._read(_HELD, "ORDER BY path LIMIT ?", (folder, limit))

    def held_count(self, folder: str) -> int:
        """How many versions are held back for their origin."""
        return int(self._rows("SELECT count(*) FROM held WHERE folder = ?", (folder,))[0][0])

    def drop_held(self, folder: str, record: FileRecord) -> None:
        """Forget one version held back."""
        with self._write() as db:
            db.execute("DELETE FROM held WHERE folder = ? AND path = ? AND origin = ?",
                       (folder, record.path, record.origin))

    def _needs(self, where: str, args: tuple[object, ...]) -> list[Need]:
        return self._read(_NEEDS, where, args)

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
                (folder, *_columns(record), signature, _signed(inode), _signed(dev), seq,
                 record.author)
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
                if (need := self._need_version(db, folder, path)) is not None
                and need.compare(record.version) in (Order.EQUAL, Order.OLDER)])
        return seqs

    def _need_version(self, db: sqlite3.Connection, folder: str, path: str) -> Vector | None:
        rows = db.execute(_SELECT_NEED + "AND path = ?", (folder, path)).fetchall()
        found = self._decoded(_NEEDS, rows, db)
        return found[0].record.version if found else None

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
        if not rows or (type(rows[0][0]), type(rows[0][1])) != (str, int):
            return None  # a damaged row is set aside when read as an entry
        return rows[0][0], rows[0][1]

    def add_needs(self, folder: str, needs: Sequence[Need]) -> None:
        """Queue remote versions to write, each replacing any need for the same path."""
        with self._write() as db:
            db.executemany(_ADD_NEED, (
                (folder, *_columns(n.record), n.signature, n.source, n.record.author)
                for n in needs))

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
                rows = db.execute(_SELECT_NEED + "AND path = ?", (folder, path)).fetchall()
                if [n.record for n in self._decoded(_NEEDS, rows, db)] != [only]:
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


def _open(path: Path) -> sqlite3.Connection:
    """A connection to the index, fit for use; a damaged file is set aside for a fresh one."""
    try:
        return _connect(path)
    except _DamagedFile as e:
        aside = _set_file_aside(path)
        log.warning("the index %s is damaged (%s): moved it to %s; a new index is built from the"
                    " folders and their peers", path, e.reason, aside.name)
    return _connect(path)


def _connect(path: Path) -> sqlite3.Connection:
    with _unusable_as_error(path, opening=True):
        _create_private(path)
        # SQLite would open a file it cannot write read-only, and fail only at the first write.
        if (problem := _access_problem(path)) is not None:
            raise IndexUnusable(problem)
        _check_header(path)
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                             check_same_thread=False)
        try:
            _use_wal(db, path)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            _check_file(db, path)
            _migrate(db, path)
        except BaseException:
            db.close()
            raise
    return db


def _create_private(path: Path) -> None:
    """Create a missing database file as 0600: SQLite gives its -wal and -shm the same mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        return
    os.close(fd)


def _check_header(path: Path) -> None:
    """_DamagedFile unless the file is empty or starts as an SQLite database does.

    Checked before SQLite opens it: SQLite deletes a -wal it cannot use when it closes the file.
    """
    with path.open("rb") as f:
        head = f.read(len(_MAGIC))
    if head and head != _MAGIC:
        raise _DamagedFile(path, "file is not a database")


def _check_file(db: sqlite3.Connection, path: Path) -> None:
    """_DamagedFile unless SQLite's quick check finds the file sound.

    It reads the whole file: about 0.1 s per 100,000 files when cached, the time to read it
    from disk otherwise; less than the first scan, which reads every row besides.
    """
    problems = db.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        first = str(problems[0][0]) if problems else "no answer"
        raise _DamagedFile(path, f"failed SQLite's check: {shown(' '.join(first.split()), None)}")


def _set_file_aside(path: Path) -> Path:
    """Rename the database, with its -wal and -shm, to `NAME.damaged-YYYYMMDD-HHMMSS`."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.damaged-{stamp}"), 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
        aside, n = path.with_name(f"{path.name}.damaged-{stamp}.{n}"), n + 1
    with _unusable_as_error(path):
        # The WAL goes first: a WAL left beside a fresh file would be replayed into it.
        for suffix in ("-wal", "-shm", ""):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    return aside


@contextmanager
def _unusable_as_error(path: Path, opening: bool = False) -> Iterator[None]:
    """Turn SQLite and OS errors that the user can fix into IndexUnusable saying how.

    While opening, a file that is not a database or is damaged raises _DamagedFile instead.
    """
    try:
        yield
    except (sqlite3.Error, OSError) as e:
        code = _primary_code(e)
        if opening and code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            raise _DamagedFile(path, shown(e, None)) from e
        if code is None:
            raise
        raise IndexUnusable(_unusable(path, code, e)) from e


def _primary_code(e: sqlite3.Error | OSError) -> int | None:
    """The SQLite result code the error stands for; None if the user cannot fix it."""
    if isinstance(e, OSError):
        return _SQLITE_FULL if e.errno in (errno.ENOSPC, errno.EDQUOT) else _SQLITE_CANTOPEN
    code = getattr(e, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) and code & 0xFF in _FIXABLE else None


def _unusable(path: Path, code: int, e: sqlite3.Error | OSError) -> str:
    """One line: what is wrong with the index and what to do."""
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return (f"the index {path} is damaged: remove it and start again (meshsync rebuilds it"
                " from the folders and their peers)")
    if code == _SQLITE_BUSY:
        return (f"the index {path} stayed locked by another process for {BUSY_TIMEOUT:.0f} s:"
                " stop it and start again")
    # SQLite reports a full disk as such only when a write fails; a -shm it cannot create or
    # grow shows as an I/O or open error.
    if code == _SQLITE_FULL or _full(path):
        return f"the disk holding the index {path} is full: free some space and start again"
    access = _access_problem(path)
    if access:
        return access
    if not path.parent.is_dir():
        return f"cannot open the index {path}: the directory {path.parent} does not exist"
    detail = shown((e.strerror if isinstance(e, OSError) else None) or e, None)
    if code == _SQLITE_IOERR:
        return f"reading or writing the index {path} failed ({detail}): check the disk"
    if code == _SQLITE_READONLY:
        return (f"the index {path} is read-only ({detail}): make it writable by this user"
                f" (chmod u+rw {path}) or remove it to rebuild it")
    return (f"cannot open the index {path} ({detail}): this user must be able to read and"
            f" write it and its directory {path.parent}")


def _full(path: Path) -> bool:
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def _access_problem(path: Path) -> str | None:
    """Why this user cannot write the index, if the file system or the modes say so."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return (f"the index {path} is on a read-only file system: mount it read-write, or"
                    " set MESHSYNC_HOME to a writable directory")
    except OSError:
        pass
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            if (owner := file.stat().st_uid) != os.geteuid():  # run once as root, say
                return (f"the index {path} is not this user's: {file.name} belongs to uid"
                        f" {owner}; chown it to uid {os.geteuid()} or remove the index to"
                        " rebuild it")
            return (f"the index {path} is read-only: make {file.name} writable by this user"
                    f" (chmod u+rw {file}) or remove the index to rebuild it")
    if path.parent.is_dir() and not os.access(path.parent, os.W_OK | os.X_OK):
        return (f"the index {path} cannot be written: this user cannot write its directory"
                f" (chmod u+rwx {path.parent})")
    return None


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
        raise IndexUnusable(f"SQLite cannot use WAL mode for the index {path} (got {mode}): put"
                            " it on a local file system (set MESHSYNC_HOME)")


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
    """_DamagedRow unless every column has its declared type."""
    for value, (name, kind) in zip(row, columns, strict=True):
        if type(value) is not kind:
            raise _DamagedRow(f"{name} is {type(value).__name__}, not {kind.__name__}")


def _record(row: tuple[Any, ...], author: str) -> FileRecord:
    _, path, kind, version, origin, deleted, size, mode, mtime_ns, blocks, target = row[:11]
    if len(blocks) % DIGEST:
        raise _DamagedRow(f"blocks hold {len(blocks)} bytes, not whole {DIGEST}-byte digests")
    if author and (len(author) != 16 or author.strip("0123456789abcdef") or author == origin):
        raise _DamagedRow(f"author {author[:20]!r} is not another node's key")
    try:
        vector = _vector(version)
    except (ValueError, RecursionError, WireError) as e:
        raise _DamagedRow(f"version is not a version vector: {e}") from None
    try:
        return FileRecord(
            RelPath(path), Kind(kind), vector, origin, bool(deleted), size, mode, mtime_ns,
            tuple(blocks[i : i + DIGEST] for i in range(0, len(blocks), DIGEST)), target,
            author)
    except ValueError:
        raise _DamagedRow(f"kind {kind[:20]!r} is none of file, dir, symlink") from None


def _entry(row: tuple[Any, ...]) -> Entry:
    if tuple(map(type, row)) != _ENTRY_TYPES:
        _check(row, _ENTRY)
    return Entry(_record(row, row[15]), row[11], row[12], _unsigned(row[13]),
                 _unsigned(row[14]))


def _need(row: tuple[Any, ...]) -> Need:
    if tuple(map(type, row)) != _NEED_TYPES:
        _check(row, _NEED)
    return Need(_record(row, row[13]), row[11], row[12])


def _fault(table: _Table[Any], row: tuple[Any, ...]) -> str | None:
    """Why the row does not decode; None if it does."""
    try:
        table.decode(row)
    except _DamagedRow as e:
        return str(e)
    return None


_FILES = _Table("files", _SELECT_ENTRY, "AND path = ?", (1,), (
    "DELETE FROM blocks WHERE file IN (SELECT id FROM files WHERE folder = ? AND path = ?)",
    "DELETE FROM files WHERE folder = ? AND path = ?"), _entry)
_NEEDS = _Table("need", _SELECT_NEED, "AND path = ?", (1,),
                ("DELETE FROM need WHERE folder = ? AND path = ?",), _need)
_LOSERS = _Table("losers", _SELECT_LOSER, "AND path = ? AND origin = ?", (1, 4),
                 ("DELETE FROM losers WHERE folder = ? AND path = ? AND origin = ?",), _need)
_HELD = _Table("held", _SELECT_HELD, "AND path = ? AND origin = ?", (1, 4),
               ("DELETE FROM held WHERE folder = ? AND path = ? AND origin = ?",), _need)


@lru_cache(maxsize=4096)
def _vector(text: str) -> Vector:
    """A version vector from its JSON; cached, as many files share one (a new file's is {me: 1})."""
    return Vector.from_json(json.loads(text))


# SQLite integers are signed 64-bit; inode and device numbers are unsigned and some file
# systems (NFS, FUSE, btrfs subvolumes) use the top bit.
def _signed(n: int) -> int:
    return n - _WRAP if n >= _WRAP // 2 else n


def _unsigned(n: int) -> int:
    return n + _WRAP if n < 0 else n
