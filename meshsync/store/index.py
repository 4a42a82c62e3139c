"""The index: what is on this node's disk, which blocks it holds and what it still needs."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from meshsync.core.errors import WireError
from meshsync.core.paths import RelPath, check_path
from meshsync.core.records import FileRecord, Kind, Stamp
from meshsync.core.throttle import shown
from meshsync.core.vclock import Order, Vector
from meshsync.store.database import IndexUnusable as IndexUnusable
from meshsync.store.database import close_database, open_database, unusable_as_error
from meshsync.store.row import (
    ADD_HELD,
    ADD_LOSER,
    ADD_NEED,
    FILES,
    HELD,
    LOSERS,
    NEEDS,
    PUT_HEAD,
    SELECT_STAMP,
    UPSERT,
    DamagedRow,
    Table,
    columns_of,
    signed,
    stamp_of,
    stored,
    vector_of,
)
from meshsync.store.row import Entry as Entry
from meshsync.store.row import Need as Need

log = logging.getLogger("meshsync.index")

PAGE = 1000  # rows per read while streaming `entries`
STAMP_PAGE = 10000  # rows per read of `stamps`, a tenth the size
# Paths below `p` sort in ["p/", "p0") ("0" follows "/"): `p` and that range, one index scan.
_UNDER = "path >= ? AND path < ? AND (path = ? OR path >= ?)"
LOGGED_ROWS = 20  # damaged rows logged one by one; past that, one line per batch set aside
T = TypeVar("T")
HEADS_SWEPT = 256  # signature heads added before unused ones are swept, at the least
# (NOT IN a list holding NULL is never true: the rows without a head are left out.)
SWEEP_HEADS = """
DELETE FROM sig_heads WHERE id NOT IN (
    SELECT sig_head FROM files WHERE sig_head IS NOT NULL
    UNION SELECT sig_head FROM need WHERE sig_head IS NOT NULL
    UNION SELECT sig_head FROM losers WHERE sig_head IS NOT NULL
    UNION SELECT sig_head FROM held WHERE sig_head IS NOT NULL)
"""
# CROSS JOIN pins the loop order so the lookup starts from the hash index, which keys on the
# first 8 bytes of a hash (schema/007): the whole hash is compared after.
FIND_BLOCK = ("SELECT f.path, b.idx FROM blocks AS b CROSS JOIN files AS f ON f.id = b.file"
              " WHERE substr(b.hash, 1, 8) = ? AND b.hash = ? AND f.folder = ? LIMIT 1")


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
        self._failed = False  # an error met: the next open checks the file whole
        self.writes = 0  # transactions committed: a reader may skip a query while it stays
        self._db = open_database(path)
        # Signature heads stored since the last sweep, and how many make the next one due.
        self._heads_added = int(self._rows("SELECT count(*) FROM sig_heads", ())[0][0])
        self._heads_kept = HEADS_SWEPT

    def close(self) -> None:
        """Close the database; the object is unusable afterwards."""
        with self._lock:
            close_database(self._db, self.path, sound=not self._failed)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """The lock held, and errors turned into IndexUnusable (see unusable_as_error)."""
        with self._lock:
            try:
                with unusable_as_error(self.path):
                    yield
            except (IndexUnusable, sqlite3.Error, OSError):
                self._failed = True
                raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction cannot
        # deadlock against another connection to the same file.
        with self._guarded():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.writes += 1

    def _rows(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._guarded():
            return self._db.execute(sql, args).fetchall()

    def _read(self, table: Table[T], where: str, args: tuple[object, ...]) -> list[T]:
        """The rows that decode, damaged ones set aside; a page wholly set aside is read again."""
        # Setting a row aside deletes it, so reading again goes on past it.
        while rows := self._rows(table.select + where, args):
            if found := self._decoded(table, rows):
                return found
        return []

    def _decoded(self, table: Table[T], rows: list[tuple[Any, ...]],
                 db: sqlite3.Connection | None = None) -> list[T]:
        """Decode rows; `db` when inside `_write` (the lock held, the transaction open)."""
        found, damaged = [], []
        for row in rows:
            try:
                found.append(table.decode(row))
            except DamagedRow:
                damaged.append(row)
        if damaged:
            if db is None:
                with self._write() as db:
                    self._set_aside(db, table, damaged)
            else:
                self._set_aside(db, table, damaged)
        return found

    def _set_aside(self, db: sqlite3.Connection, table: Table[Any],
                   rows: list[tuple[Any, ...]]) -> None:
        """Remove the rows that still fail to decode, remember their paths, and log them."""
        removed = []
        for row in rows:
            key = (row[0], *(row[i] for i in table.key))
            # Another thread may have replaced the row since it was read: look again.
            current = db.execute(table.select + table.one, key).fetchone()
            reason = None if current is None else table.fault(current)
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

    def _add(self, sql: str, folder: str, needs: Sequence[Need]) -> None:
        """Store versions in a table of needs (ADD_NEED, ADD_LOSER or ADD_HELD)."""
        heads: dict[bytes, bytes] = {}
        rows = [(folder, *columns_of(n.record), *stored(n.signature, heads), n.source,
                 n.record.author) for n in needs]
        with self._write() as db:
            db.executemany(sql, rows)
            self._put_heads(db, heads)

    def _put_heads(self, db: sqlite3.Connection, heads: dict[bytes, bytes]) -> None:
        """Store the heads of the vouched signatures just stored (schema/008), and now and then
        drop those no row uses any more: each run of a node vouches anew, and a peer could send
        a new head with each version."""
        if not heads:
            return
        self._heads_added += db.executemany(PUT_HEAD, heads.items()).rowcount
        if self._heads_added > self._heads_kept:
            db.execute(SWEEP_HEADS)
            self._heads_added = 0
            kept = int(db.execute("SELECT count(*) FROM sig_heads").fetchone()[0])
            self._heads_kept = max(HEADS_SWEPT, kept)

    def _entries(self, where: str, args: tuple[object, ...]) -> list[Entry]:
        return self._read(FILES, where, args)

    def add_losers(self, folder: str, losers: Sequence[Need]) -> None:
        """Keep versions that lost to a concurrent one (one per path and origin, the latest)."""
        self._add(ADD_LOSER, folder, losers)

    def losers(self, folder: str) -> list[Need]:
        """Every version kept aside as a loser, in path order."""
        return self._read(LOSERS, "ORDER BY path", (folder,))

    def drop_loser(self, folder: str, record: FileRecord) -> None:
        """Forget one version kept aside."""
        with self._write() as db:
            db.execute("DELETE FROM losers WHERE folder = ? AND path = ? AND origin = ?",
                       (folder, record.path, record.origin))

    def add_held(self, folder: str, held: Sequence[Need]) -> None:
        """Keep versions whose origin is not trusted (one per path and origin, the latest)."""
        self._add(ADD_HELD, folder, held)

    def held(self, folder: str, limit: int = -1) -> list[Need]:
        """Versions held back for their origin, in path order (the first `limit`)."""
        return self._read(HELD, "ORDER BY path LIMIT ?", (folder, limit))

    def held_count(self, folder: str) -> int:
        """How many versions are held back for their origin."""
        return int(self._rows("SELECT count(*) FROM held WHERE folder = ?", (folder,))[0][0])

    def drop_held(self, folder: str, record: FileRecord) -> None:
        """Forget one version held back."""
        with self._write() as db:
            db.execute("DELETE FROM held WHERE folder = ? AND path = ? AND origin = ?",
                       (folder, record.path, record.origin))

    def _needs(self, where: str, args: tuple[object, ...]) -> list[Need]:
        return self._read(NEEDS, where, args)

    def get(self, folder: str, path: str) -> Entry | None:
        """The row of one path, None if the index has never seen it."""
        found = self._entries("AND path = ?", (folder, path))
        return found[0] if found else None

    def get_all(self, folder: str, paths: Iterable[str]) -> dict[str, Entry]:
        """The rows of those of `paths` the index has seen, by path: a batch's, a few reads."""
        return {e.record.path: e for part in _parts(paths)
                for e in self._entries(f"AND path IN ({_marks(part)})", (folder, *part))}

    def needs_of(self, folder: str, paths: Iterable[str]) -> dict[str, Need]:
        """The versions queued for those of `paths` that have one, by path."""
        return {n.record.path: n for part in _parts(paths)
                for n in self._needs(f"AND path IN ({_marks(part)})", (folder, *part))}

    def put(self, folder: str, items: Sequence[tuple[FileRecord, bytes, int, int]]) -> list[int]:
        """Store (record, signature, inode, dev) rows; each item gets the folder's next seq.

        A later item for the same path replaces an earlier one. A need for a path that is now
        at its version, or at a newer one, is dropped.
        """
        if not items:
            return []
        heads: dict[bytes, bytes] = {}
        signatures = [stored(signature, heads) for _, signature, _, _ in items]
        with self._write() as db:
            db.execute("INSERT INTO folder_seq VALUES (?, ?) ON CONFLICT (folder) DO UPDATE"
                       " SET seq = seq + excluded.seq", (folder, len(items)))
            top = db.execute("SELECT seq FROM folder_seq WHERE folder = ?", (folder,)).fetchone()
            seqs = list(range(top[0] - len(items) + 1, top[0] + 1))
            db.executemany(UPSERT, (
                (folder, *columns_of(record), *signature, signed(inode), signed(dev), seq,
                 record.author)
                for (record, _, inode, dev), signature, seq
                in zip(items, signatures, seqs, strict=True)))
            self._put_heads(db, heads)
            # The write lock is ours, so this put's rows are exactly those from its first seq.
            ids = dict(db.execute("SELECT path, id FROM files WHERE folder = ? AND seq >= ?",
                                  (folder, seqs[0])))
            final = {record.path: record for record, *_ in items}
            db.execute("DELETE FROM blocks WHERE file IN (SELECT id FROM files WHERE folder = ?"
                       " AND seq >= ?)", (folder, seqs[0]))
            db.executemany("INSERT INTO blocks (file, idx, hash) VALUES (?, ?, ?)", (
                (ids[record.path], i, digest)
                for record in final.values() if record.kind is Kind.FILE and not record.deleted
                for i, digest in enumerate(record.blocks)))
            if db.execute("SELECT 1 FROM need WHERE folder = ? LIMIT 1", (folder,)).fetchone():
                db.executemany("DELETE FROM need WHERE folder = ? AND path = ?", [
                    (folder, path) for path, version in self._need_versions(db, folder, final)
                    if version.compare(final[path].version) in (Order.EQUAL, Order.OLDER)])
        return seqs

    def _need_versions(self, db: sqlite3.Connection, folder: str,
                       paths: Iterable[str]) -> Iterator[tuple[RelPath, Vector]]:
        """The version queued for each of `paths` that has one: the column alone, a few
        queries for a batch; a row whose version is damaged is read whole (and set aside)."""
        for part in _parts(paths):
            marks = _marks(part)  # placeholders only: the paths go as arguments
            rows = db.execute("SELECT path, version FROM need WHERE folder = ? AND path IN"  # noqa: S608
                              f" ({marks})", (folder, *part)).fetchall()
            for path, text in rows:
                if (version := vector_of(text)) is not None:
                    yield path, version
                elif found := self._decoded(NEEDS, db.execute(
                        NEEDS.select + NEEDS.one, (folder, path)).fetchall(), db):
                    yield path, found[0].record.version

    def entries(self, folder: str) -> Iterator[Entry]:
        """Every row of the folder in path order, read a page per transaction as it is consumed."""
        after = ""
        while page := self._entries("AND path > ? ORDER BY path LIMIT ?", (folder, after, PAGE)):
            yield from page
            after = page[-1].record.path

    def stamps(self, folder: str, under: str | None = None) -> dict[str, Stamp | None]:
        """What a scan compares with the disk, by path: of the whole folder, or of `under` and
        everything below it. Plain columns, no record decoded, read a page per lock hold: a
        restart over 100k files reads its index in a fraction of the time and memory that
        decoding its entries takes. None for a deletion (see stamp_of)."""
        where, args = ("", ()) if under is None else (f"AND {_UNDER} ", _under(under))
        found: dict[str, Stamp | None] = {}
        after: object = ""
        while rows := self._rows(f"{SELECT_STAMP}{where}AND path > ? ORDER BY path LIMIT ?",
                                 (folder, *args, after, STAMP_PAGE)):
            found.update((row[0], stamp_of(row)) for row in rows)
            after = rows[-1][0]
        return found

    def since(self, folder: str, seq: int, limit: int = 1000) -> list[Entry]:
        """Up to `limit` rows put after `seq`, in seq order."""
        return self._entries("AND seq > ? ORDER BY seq LIMIT ?", (folder, seq, limit))

    def latest(self, folder: str, limit: int, under: str | None = None) -> list[Entry]:
        """The `limit` rows with the latest times (of `under` and below it, if given), newest
        first: each path's latest change, by the time its version carries. (A sort of the
        folder's rows: 0.1 s for 100k.)"""
        where, args = ("", ()) if under is None else (f"AND {_UNDER} ", _under(under))
        return self._entries(f"{where}ORDER BY mtime_ns DESC, path LIMIT ?",
                             (folder, *args, limit))

    def max_seq(self, folder: str) -> int:
        """The last seq handed out in the folder; 0 before the first put."""
        rows = self._rows("SELECT seq FROM folder_seq WHERE folder = ?", (folder,))
        return int(rows[0][0]) if rows else 0

    def find_blocks(self, folder: str, digests: Sequence[bytes]) -> dict[bytes, tuple[str, int]]:
        """(path, block index) of a live local file holding each block one holds, looked up
        under one hold of the lock: a request for 64 blocks waits for it once, not 64 times."""
        found: dict[bytes, tuple[str, int]] = {}
        with self._guarded():
            for digest in dict.fromkeys(digests):
                row = self._db.execute(FIND_BLOCK, (digest[:8], digest, folder)).fetchone()
                # A damaged row is set aside when read as an entry; until then it places nothing.
                if row is not None and (type(row[0]), type(row[1])) == (str, int):
                    found[digest] = row
        return found

    def add_needs(self, folder: str, needs: Sequence[Need]) -> None:
        """Queue remote versions to write, each replacing any need for the same path."""
        self._add(ADD_NEED, folder, needs)

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
                rows = db.execute(NEEDS.select + NEEDS.one, (folder, path)).fetchall()
                if [n.record for n in self._decoded(NEEDS, rows, db)] != [only]:
                    return
            db.execute("DELETE FROM need WHERE folder = ? AND path = ?", (folder, path))

    def need_totals(self, folder: str) -> tuple[int, int]:
        """(paths, bytes) still to write: every queued version, deletions included."""
        return self._totals(folder, "need")

    def peer_seq(self, folder: str, peer: str, epoch: str) -> int:
        """The highest seq of the peer's index (in that epoch) taken in; 0 if none."""
        rows = self._rows("SELECT seq FROM peer_seq WHERE folder = ? AND peer = ? AND epoch = ?",
                          (folder, peer, epoch))
        return int(rows[0][0]) if rows else 0

    def set_peer_seq(self, folder: str, peer: str, epoch: str, seq: int) -> None:
        """Record how far the peer's index (in that epoch) has been taken in; never less far
        than a notice took it meanwhile (see advance_peer_seq)."""
        with self._write() as db:
            db.execute("INSERT INTO peer_seq VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET seq ="
                       " iif(typeof(seq) = 'integer', max(seq, excluded.seq), excluded.seq)",
                       (folder, peer, epoch, seq))

    def advance_peer_seq(self, folder: str, peer: str, epoch: str, since: int, seq: int) -> bool:
        """Record that the peer's index (in that epoch) has been taken in up to `seq`, if it had
        been up to `since` at least (the rows after it came at once): True if that moved it."""
        with self._write() as db:
            row = db.execute("SELECT seq FROM peer_seq WHERE folder = ? AND peer = ? AND epoch = ?",
                             (folder, peer, epoch)).fetchone()
            if not (isinstance(now := row[0] if row else 0, int) and since <= now < seq):
                return False
            db.execute("INSERT OR REPLACE INTO peer_seq VALUES (?, ?, ?, ?)",
                       (folder, peer, epoch, seq))
        return True

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
        return self._totals(folder, "files")

    def _totals(self, folder: str, of: str) -> tuple[int, int]:
        """A running total the schema's triggers keep (see schema/006-totals.sql)."""
        rows = self._rows("SELECT paths, bytes FROM totals WHERE folder = ? AND of = ?",
                          (folder, of))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def _parts(paths: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """Distinct paths a query's worth at a time."""
    unique = list(dict.fromkeys(paths))
    for at in range(0, len(unique), size):
        yield unique[at : at + size]


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _under(path: str) -> tuple[str, ...]:
    """The arguments of _UNDER for `path`."""
    return (path, path + "0", path, path + "/")
