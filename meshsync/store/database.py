"""The index's database file: opening it safely (private, checked, in WAL mode, its schema up
to date), setting a damaged one aside, and what each way of being unusable tells the user.

The check reads the whole file: 0.1 s per 100,000 files when cached, and about 0.7 s from a
cold cache, a fifth of a restart. A run that met no error notes the file's identity when it
closes it; the next open skips the check if the file is still exactly what was closed (same
inode, size, mtime and ctime, no WAL beside it). A crash, a failed run, or anything written
to the file since, and it is checked again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

from meshsync.core.errors import MeshsyncError
from meshsync.core.throttle import shown

log = logging.getLogger("meshsync.index")

BUSY_TIMEOUT = 30.0  # seconds to wait for another connection's write transaction
_MAGIC = b"SQLite format 3\0"  # how every SQLite database file starts
# The running totals, counted from the rows (as schema/006-totals.sql first did).
RECOUNT = (
    "DELETE FROM totals",
    "INSERT INTO totals SELECT folder, 'files', count(*), coalesce(sum(size), 0) FROM files"
    " WHERE NOT deleted GROUP BY folder",
    "INSERT INTO totals SELECT folder, 'need', count(*), coalesce(sum(size), 0) FROM need"
    " GROUP BY folder",
)

# SQLite's primary result codes that say the user must act (the extended ones end in these).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR = 3, 5, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_FIXABLE = frozenset({_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_IOERR,
                      _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB})


class IndexUnusable(MeshsyncError):
    """The index cannot be opened or written; the message says why and what to do, in one line."""


class _DamagedFile(IndexUnusable):
    """The file is not a database or fails its check: set it aside and start a fresh one."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"the index {path} is damaged ({reason}): remove it and start again"
                         " (meshsync rebuilds it from the folders and their peers)")
        self.reason = reason


def open_database(path: Path) -> sqlite3.Connection:
    """A connection to the index, fit for use; a damaged file is set aside for a fresh one."""
    try:
        return _connect(path)
    except _DamagedFile as e:
        aside = _set_file_aside(path)
        log.warning("the index %s is damaged (%s): moved it to %s; a new index is built from the"
                    " folders and their peers", path, e.reason, aside.name)
    return _connect(path)


def close_database(db: sqlite3.Connection, path: Path, sound: bool) -> None:
    """Close the connection; if the run met no error (`sound`), note the file as closed sound."""
    db.close()
    fingerprint = _fingerprint(path)
    if sound and fingerprint is not None and not Path(f"{path}-wal").exists():
        with contextlib.suppress(OSError):
            fd = os.open(_closed_note(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as note:
                note.write(fingerprint)


def _closed_sound(path: Path) -> bool:
    """Whether the file is exactly as a sound run closed it; the note says so once only."""
    note = _closed_note(path)
    try:
        with note.open() as f:
            said = f.read(200)
        note.unlink()
    except (OSError, ValueError):
        return False
    return said == _fingerprint(path) and not Path(f"{path}-wal").exists()


def _closed_note(path: Path) -> Path:
    return path.with_name(f"{path.name}.closed")


def _fingerprint(path: Path) -> str | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def _connect(path: Path) -> sqlite3.Connection:
    with unusable_as_error(path, opening=True):
        sound = _closed_sound(path)
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
            if not sound:
                _check_file(db, path)
            _migrate(db, path)
            if not sound:
                _recount(db)
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
    """_DamagedFile unless SQLite's quick check finds the file sound."""
    problems = db.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        first = str(problems[0][0]) if problems else "no answer"
        raise _DamagedFile(path, f"failed SQLite's check: {shown(' '.join(first.split()), None)}")


def _recount(db: sqlite3.Connection) -> None:
    """Count the totals the triggers keep afresh (see schema/006-totals.sql): after a crash or
    a change from outside, the file was read whole just now, so this costs little more."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in RECOUNT:
            db.execute(statement)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _set_file_aside(path: Path) -> Path:
    """Rename the database, with its -wal and -shm, to `NAME.damaged-YYYYMMDD-HHMMSS`."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.damaged-{stamp}"), 1
    while any(Path(f"{aside}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
        aside, n = path.with_name(f"{path.name}.damaged-{stamp}.{n}"), n + 1
    with unusable_as_error(path):
        # The WAL goes first: a WAL left beside a fresh file would be replayed into it.
        for suffix in ("-wal", "-shm", ""):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    return aside


@contextmanager
def unusable_as_error(path: Path, opening: bool = False) -> Iterator[None]:
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
