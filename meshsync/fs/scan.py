"""What is on disk: reaching paths without following links, walking, and hashing in blocks."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from meshsync.core.errors import WireError
from meshsync.core.paths import MARKER, MAX_NAME_BYTES, RelPath, check_path, is_temporary
from meshsync.core.records import BLOCK_SIZE, FileRecord, Kind, Stamp, stamp

if TYPE_CHECKING:  # ignore reads its file through this module
    from meshsync.fs.ignore import Ignore

log = logging.getLogger(__name__)

# What the OS says when a path is no longer there as the thing it was.
VANISHED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
_KINDS = {stat.S_IFREG: Kind.FILE, stat.S_IFDIR: Kind.DIR, stat.S_IFLNK: Kind.SYMLINK}
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Permission bits only: setuid, setgid and sticky bits are never taken from a peer.
PERMISSIONS = 0o777


class UnsafePath(Exception):
    """A directory on the way to a path is a symlink or a file: the path is not in the folder."""


class ParentNotDir(UnsafePath):
    """The directory on the way at `path` is a file or a symlink (`kind`) here: not gone through.

    Its own record may yet make it a directory: a path's record can come before its parent's.
    """

    def __init__(self, path: RelPath, kind: Kind) -> None:
        super().__init__(f"{path} is a symlink or a file: refusing to go through it")
        self.path, self.kind = path, kind


class Seen(NamedTuple):
    """One path as lstat saw it; size counts for files only, as in FileRecord. A named tuple,
    not a frozen dataclass: a walk makes one per entry, and this is made four times faster."""

    path: RelPath
    kind: Kind
    size: int
    mode: int  # permission bits only
    mtime_ns: int
    inode: int
    dev: int
    target: str  # a symlink's target, never followed

    @classmethod
    def of(cls, path: RelPath, kind: Kind, st: os.stat_result, target: str = "") -> Seen:
        """The Seen of a stat result of a known kind."""
        size = st.st_size if kind is Kind.FILE else 0
        mode = st.st_mode & PERMISSIONS
        return cls(path, kind, size, mode, st.st_mtime_ns, st.st_ino, st.st_dev, target)

    @property
    def stamp(self) -> Stamp:
        """What the index's stamp of this path must equal for it to be unchanged."""
        return stamp(self.kind, self.size, self.mode, self.mtime_ns, self.target, self.inode)


@contextmanager
def directory(root: Path, rel: str, create: bool = False) -> Iterator[int]:
    """An fd of directory `rel` ("" is root) reached from root without following any link."""
    fd = open_directory(root, rel, create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_directory(root: Path, rel: str, create: bool = False) -> int:
    """An fd of directory `rel` ("" is root) reached from root without following any link;
    the caller closes it."""
    parts = rel.split("/") if rel else []
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts, 1):
            child = _open_dir(fd, part, "/".join(parts[:depth]), create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class Directories:
    """The directory a scan last hashed in, kept open for the next file: a scan hashes a
    directory's files one after another, and each open walks the path from the root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rel: str | None = None
        self._fd = -1

    def parent(self, path: str, create: bool = False) -> tuple[int, str]:
        """As `parent` does, but the fd stays ours (until the next directory, or close)."""
        head, _, name = path.rpartition("/")
        if head != self._rel:
            self.close()
            self._fd, self._rel = open_directory(self.root, head, create), head
        return self._fd, name

    def close(self) -> None:
        """Close the directory held open, if any."""
        if self._fd >= 0:
            os.close(self._fd)
        self._rel, self._fd = None, -1

    def __enter__(self) -> Directories:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextmanager
def parent(root: Path, path: str, create: bool = False) -> Iterator[tuple[int, str]]:
    """The fd of the directory holding `path`, reached as `directory` does, and its last name."""
    head, _, name = path.rpartition("/")
    with directory(root, head, create) as fd:
        yield fd, name


def seen_now(root: Path, path: RelPath) -> Seen | None:
    """What is at `path` under `root` now, never following a link; None if absent."""
    try:
        with parent(root, path) as (dir_fd, name):
            return seen_at(path, name, dir_fd)
    except FileNotFoundError:
        return None


def seen_at(path: RelPath, name: str, dir_fd: int) -> Seen | None:
    """What is at `name` in dir_fd, never following a link; None if absent or another kind."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
        kind = _KINDS.get(stat.S_IFMT(st.st_mode))
        target = os.readlink(name, dir_fd=dir_fd) if kind is Kind.SYMLINK else ""
    except OSError as e:
        if e.errno in VANISHED:
            return None
        raise
    return None if kind is None else Seen.of(path, kind, st, target)


def walk(root: Path, ignore: Ignore | None = None,
         temps: set[str] | None = None) -> Iterator[Seen]:
    """All files, dirs and symlinks under root, links not followed, minus ours and the ignored.

    The directories holding our temporary files are added to `temps`: a user's rename of a
    directory takes a write's temporary file along, where only a walk finds it again.
    """
    return _walk_below(root, "", ignore, temps)


def walk_under(root: Path, path: RelPath, ignore: Ignore | None = None,
               temps: set[str] | None = None) -> Iterator[Seen]:
    """`path` if it is in the folder and not ignored and, if a directory, all walk sees under it."""
    try:
        with parent(root, path) as (fd, name):
            seen = seen_at(path, name, fd)
    except (FileNotFoundError, UnsafePath):
        return
    if seen is None or (ignore is not None and ignore.match(path, seen.kind is Kind.DIR)):
        return
    yield seen
    if seen.kind is Kind.DIR:
        yield from _walk_below(root, path, ignore, temps)


def open_file(name: str | Path, dir_fd: int | None = None) -> int:
    """A read-only fd, never through a final symlink and never blocking on a fifo."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    return os.open(name, flags, dir_fd=dir_fd)


def read_at(fd: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset`; fewer bytes only at the end of the file."""
    done = 0
    while done < len(view) and (got := os.preadv(fd, [view[done:]], offset + done)):
        done += got
    return done


def hash_file(path: Path) -> tuple[int, tuple[bytes, ...]]:
    """Size and SHA-256 of each BLOCK_SIZE block of the file at `path`, streamed."""
    fd = open_file(path)
    try:
        return _hash(fd)
    finally:
        os.close(fd)


def stable_hash(dirs: Directories, seen: Seen,
                opened: int | None = None) -> tuple[int, tuple[bytes, ...]] | None:
    """Hash the file `seen` describes if it stays exactly that while hashed; None: retry later.
    `opened`: an fd read_ahead opened for it at its path, which stays the caller's to close."""
    expected = (seen.size, seen.mtime_ns, seen.inode, seen.dev)
    try:
        dir_fd, name = dirs.parent(seen.path)
        fd = open_file(name, dir_fd) if opened is None else opened
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or _fingerprint(before) != expected:
                return None
            hashes = _hash(fd)
            after = os.fstat(fd)
        finally:
            if opened is None:
                os.close(fd)
        again = os.lstat(name, dir_fd=dir_fd)
    except UnsafePath:
        return None
    except OSError as e:
        if e.errno in VANISHED:
            return None
        raise
    stable = _fingerprint(after) == _fingerprint(again) == expected and hashes[0] == seen.size
    return hashes if stable else None


def read_ahead(dirs: Directories, seen: Seen) -> int | None:
    """Ask the disk for the file `seen` now, to be read soon: its fd, the caller's to close
    (stable_hash takes it); None if that fails."""
    try:
        dir_fd, name = dirs.parent(seen.path)
        fd = open_file(name, dir_fd)
    except (OSError, UnsafePath):
        return None
    with suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    return fd


def differs(seen: Seen, record: FileRecord, inode: int) -> bool:
    """Whether `seen` may be another version than `record` (indexed with `inode`): look again.
    Another inode means another entry, even of the same kind (a directory made again, say):
    the index must learn it, or sync's check before each write finds a stranger there."""
    return record.deleted or seen.stamp != stamp(
        record.kind, record.size, record.mode, record.mtime_ns, record.target, inode)


def _open_dir(dir_fd: int, name: str, shown: str, create: bool) -> int:
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _not_a_directory(dir_fd, name, shown) from None
        if e.errno != errno.ENOENT or not create:
            raise
    with suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    return _open_dir(dir_fd, name, shown, create=False)


def _not_a_directory(dir_fd: int, name: str, shown: str) -> UnsafePath:
    seen = seen_at(RelPath(shown), name, dir_fd)
    if seen is None or seen.kind is Kind.DIR:  # a fifo or a device, or it changed meanwhile
        return UnsafePath(f"{shown} is not a directory: refusing to go through it")
    return ParentNotDir(RelPath(shown), seen.kind)


def _walk_below(root: Path, top: str, ignore: Ignore | None,
                temps: set[str] | None) -> Iterator[Seen]:
    pending = [top]
    while pending:
        prefix = pending.pop()
        try:
            found = _listing(root, prefix, ignore, temps)
        except (OSError, UnsafePath) as e:
            if not prefix:
                raise
            log.debug("cannot list %r: %s", prefix, e)
            continue
        pending += [seen.path for seen in found if seen.kind is Kind.DIR]
        yield from found


def _listing(root: Path, prefix: str, ignore: Ignore | None,
             temps: set[str] | None) -> list[Seen]:
    found = []
    above = f"{prefix}/" if prefix else ""
    with directory(root, prefix) as fd, os.scandir(fd) as entries:
        for entry in entries:
            name = entry.name
            if is_temporary(name):
                if temps is not None:
                    temps.add(prefix)
                continue
            if not prefix and name == MARKER:
                continue
            rel = above + name
            try:
                # A short ASCII path from a listing of checked directories passes check_path
                # (a listing has no empty, `.` or `..` names, no NUL, no `/`): a walk makes a
                # path per entry, and most are such.
                if len(rel) > MAX_NAME_BYTES or not rel.isascii():
                    check_path(rel)
                # Judged before lstat, on the type scandir usually already has: ignoring is cheap.
                is_dir = entry.is_dir(follow_symlinks=False)
                if ignore is not None and ignore.match_entry(rel, is_dir):
                    continue
                st = os.lstat(name, dir_fd=fd)
                kind = _KINDS.get(stat.S_IFMT(st.st_mode))
                if kind is None:
                    continue
                target = os.readlink(name, dir_fd=fd) if kind is Kind.SYMLINK else ""
            except (WireError, OSError) as e:
                log.debug("skipping %r: %s", rel, e)
                continue
            found.append(Seen(RelPath(rel), kind, st.st_size if kind is Kind.FILE else 0,
                              st.st_mode & PERMISSIONS, st.st_mtime_ns, st.st_ino, st.st_dev,
                              target))
    return found


def _hash(fd: int) -> tuple[int, tuple[bytes, ...]]:
    """Size and block hashes of an open file: a big file a span at a time, each span read and
    hashed by one thread of a pool across the cores (reads and hashlib let go of the GIL), so
    a 1 GiB file takes the time of the part each core reads and hashes."""
    expected = os.fstat(fd).st_size  # a file may grow: read on after
    spans = range(0, expected, HASH_SPAN)
    size, blocks = 0, []
    for got, digests in _HASHERS.map(partial(_hash_span, fd), spans) if len(spans) > 1 else ():
        size += got
        blocks += digests
        if got < HASH_SPAN:  # the end of the file
            return size, tuple(blocks)
    # A small file (or what a big one grew by) here, into a buffer its size.
    buffer = memoryview(bytearray(min(HASH_SPAN, max(BLOCK_SIZE, expected - size))))
    while got := read_at(fd, buffer, size):
        blocks += _digests(buffer[:got])
        size += got
        if got < len(buffer):
            break
    return size, tuple(blocks)


def _hash_span(fd: int, offset: int) -> tuple[int, list[bytes]]:
    """Bytes read (HASH_SPAN but at the end) from `offset`, and the hash of each block, into
    the pool thread's own buffer."""
    buffer = getattr(_buffers, "span", None)
    if buffer is None:
        buffer = _buffers.span = memoryview(bytearray(HASH_SPAN))
    got = read_at(fd, buffer, offset)
    return got, _digests(buffer[:got])


def _digests(data: memoryview) -> list[bytes]:
    return [hashlib.sha256(data[at : at + BLOCK_SIZE]).digest()
            for at in range(0, len(data), BLOCK_SIZE)]


HASH_SPAN = 64 * BLOCK_SIZE  # 8 MiB read and hashed at a time of a big file, by one thread
_HASHERS = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="hash")  # threads on use
_buffers = threading.local()  # each pool thread's span buffer, kept: 8 MiB each


def _fingerprint(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev
