"""Writing remote versions into a folder: atomically, never through a symlink or over a change."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import itertools
import mmap
import os
import secrets
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from meshsync.core.paths import MARKER, TEMP_PREFIX, RelPath, is_temporary
from meshsync.core.records import BLOCK_SIZE, FileRecord, Kind
from meshsync.fs import scan
from meshsync.fs.scan import VANISHED, Directories, Seen, open_file, parent, read_at, seen_at
from meshsync.fs.scan import ParentNotDir as ParentNotDir
from meshsync.fs.scan import UnsafePath as UnsafePath

# Called with (directory fd, name, path) just before sync replaces or deletes that entry.
KeepOld = Callable[[int, str, RelPath], None]

_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)  # Linux only
_renameat2 = getattr(_libc, "renameat2", None)  # Linux, glibc 2.28 on
_sync_file_range = getattr(_libc, "sync_file_range", None)  # Linux only
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2
# Bytes of one file written before the kernel is asked to start writing them out. Left to the
# kernel, a GiB being received stays dirty in memory, and the next group's `sync` (syncfs)
# flushes it all first: a small file waited 0.1 to 0.7 s behind a big one on that alone.
WRITE_BEHIND = 8 << 20
# A file this big has its whole blocks written around the page cache (O_DIRECT): copying a
# GiB into the page cache cost a receiver 1 to 2.5 s of CPU on a 2-core VM (the most of any
# one thing it did), and what it left dirty was flushed by the next small file's sync.
DIRECT_FROM = 8 << 20
_O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux and a few others
_aligned = threading.local()  # each writing thread's page-aligned buffer of a block
_FICLONERANGE = 0x4020940D  # Linux: _IOW(0x94, 13, struct file_clone_range)
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV})


class Changed(Exception):
    """The disk no longer holds what the caller expected: rescan, then decide again."""


class NotEmpty(Changed):
    """A directory to delete or replace still holds entries: retry once they are deleted."""


class BadBlock(Exception):
    """A block's length or hash is not what the record promises."""


def versions_dir(root: Path) -> Path:
    """Where replaced and deleted files are kept."""
    return root / MARKER / "versions"


def expect_matches(root: Path, path: RelPath, expected: Seen | None) -> None:
    """Raise Changed unless path is `expected` (kind, size, mtime, inode); None means absent."""
    try:
        with parent(root, path) as (dir_fd, name):
            _check(dir_fd, name, path, expected)
    except FileNotFoundError:
        if expected is not None:
            raise Changed(f"{path} changed on disk since it was scanned") from None


class Incoming:
    """The temporary file receiving one remote file version; a restarted node resumes it."""

    def __init__(self, root: Path, record: FileRecord, dir_fd: int, fd: int) -> None:
        self.root = root
        self.record = record
        self._name = record.path.rpartition("/")[2]
        self._temp = temp_name(record)
        self._dir_fd, self._fd = dir_fd, fd
        self._present = self._verified()
        self._sealed = False
        self._unwritten = 0  # bytes written since the kernel was last asked to write them out
        self._direct = _reopen_direct(fd) if record.size >= DIRECT_FROM else -1
        self._direct_refused = False  # the device would not take them: buffered from then on

    @classmethod
    def open(cls, root: Path, record: FileRecord, dirs: Directories | None = None) -> Incoming:
        """Open or resume the temporary file beside the target, creating missing directories
        (reached through `dirs`, if given, which keeps the last one open for the next file)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fds: list[int] = []
        try:
            if dirs is not None:
                fds.append(os.dup(dirs.parent(record.path, create=True)[0]))
            else:
                with parent(root, record.path, create=True) as (parent_fd, _):
                    fds.append(os.dup(parent_fd))
            fds.append(os.open(temp_name(record), flags, 0o600, dir_fd=fds[0]))
            return cls(root, record, *fds)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def have(self) -> set[int]:
        """Indexes of the blocks already in the temporary file, verified."""
        return set(self._present)

    def write_block(self, index: int, data: bytes | memoryview, hashed: bool = False) -> None:
        """Write block `index`; BadBlock, writing nothing, unless it is the record's block
        (`hashed`: the caller has checked its SHA-256 against the record's already)."""
        if not (0 <= index < len(self.record.blocks) and len(data) == self.length(index)
                and (hashed or hashlib.sha256(data).digest() == self.record.blocks[index])):
            raise BadBlock(f"block {index} of {self.record.path} does not match its record")
        view, offset = memoryview(data), index * BLOCK_SIZE
        if self._direct >= 0 and not self._direct_refused and len(view) == BLOCK_SIZE:
            view, offset = self._write_direct(view, offset)
        if view:
            _pwrite_all(self._fd, view, offset)
            self._wrote(len(view))
        self._present.add(index)

    def _write_direct(self, view: memoryview, offset: int) -> tuple[memoryview, int]:
        """Write a whole block around the page cache; returns what is left to write buffered
        (all of it where the device will not take these writes)."""
        buffer = getattr(_aligned, "buffer", None)
        if buffer is None:
            buffer = _aligned.buffer = mmap.mmap(-1, BLOCK_SIZE)  # mappings are page-aligned
        buffer[:] = view
        try:
            written = os.pwrite(self._direct, buffer, offset)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self._direct_refused = True  # its handle stays open: another thread may write
            return view, offset
        return view[written:], offset + written

    def copy_unchanged(self, expected: Seen, indexes: Iterable[int]) -> set[int]:
        """Copy blocks `indexes` (the file's own blocks at the same places) from the file this
        version replaces into the temp, in the kernel and unread; the blocks copied.

        The caller vouches that a file stamped `expected` holds those blocks (its index entry
        says so, and a scan trusts that stamp as much). None are copied unless the file is
        `expected` before and after: one edited meanwhile gets its blocks checked as any other
        local block is. Where the file system shares extents (XFS, btrfs) nothing is copied.
        """
        wanted = sorted({i for i in indexes if 0 <= i < len(self.record.blocks)})
        if not wanted:
            return set()
        try:
            source = open_file(self._name, self._dir_fd)
        except OSError:
            return set()

        def unchanged() -> bool:
            st = os.fstat(source)
            return stat.S_ISREG(st.st_mode) and same_entry(
                Seen.of(self.record.path, Kind.FILE, st), expected)

        try:
            if not unchanged():
                return set()
            # Runs of consecutive blocks, each one range.
            for _, run in itertools.groupby(enumerate(wanted), lambda p: p[1] - p[0]):
                blocks = [i for _, i in run]
                self._copy_range(source, blocks[0] * BLOCK_SIZE,
                                 blocks[-1] * BLOCK_SIZE + self.length(blocks[-1]))
            if not unchanged():
                return set()
        except OSError:  # no copy_file_range here, say: the blocks are read and checked
            return set()
        finally:
            os.close(source)
        self._present.update(wanted)
        return set(wanted)

    def _copy_range(self, source: int, start: int, end: int) -> None:
        if self._direct >= 0:
            if _clone(source, self._fd, start, end):
                return
            start = self._copy_direct(source, start, end)
        while start < end:
            copied = os.copy_file_range(source, self._fd, min(end - start, WRITE_BEHIND),
                                        start, start)
            if copied == 0:
                raise OSError(errno.EIO, "the file ended before its blocks did")
            start += copied
            self._wrote(copied)

    def _copy_direct(self, source: int, start: int, end: int) -> int:
        """Copy a range of a big file, read and written around the page cache; returns how
        far it came (short only where the device refuses such writes). Where extents are not
        shared, copy_file_range copies page cache to page cache, and a GiB left dirty is then
        written out by the group's sync: with one byte changed in it, that took two receivers
        about 4 s."""
        view = memoryview(mmap.mmap(-1, WRITE_BEHIND))  # page-aligned; freed on return
        while start < end and not self._direct_refused:
            got = os.preadv(source, [view[: min(end - start, WRITE_BEHIND)]], start)
            if got == 0:
                raise OSError(errno.EIO, "the file ended before its blocks did")
            whole = got - got % mmap.PAGESIZE
            try:
                written = os.pwrite(self._direct, view[:whole], start) if whole else 0
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._direct_refused = True
                written = 0
            if written < got:
                _pwrite_all(self._fd, view[written:got], start + written)
            start += got
        return start

    def _wrote(self, size: int) -> None:
        """Count `size` bytes written; past WRITE_BEHIND, have the kernel write them out."""
        self._unwritten += size
        if self._unwritten >= WRITE_BEHIND:
            _write_behind(self._fd)
            self._unwritten = 0

    def seal(self) -> None:
        """Give the whole file its final size, mode and mtime, ready to go into place.

        A crash must never leave a name pointing at content not yet on disk, so a group of
        files goes: seal each, `sync`, commit each, `sync`, and only then into the index.
        """
        if missing := len(self.record.blocks) - len(self._present):
            raise ValueError(f"{self.record.path}: {missing} blocks not written yet")
        os.ftruncate(self._fd, self.record.size)
        os.fchmod(self._fd, self.record.mode)
        os.utime(self._fd, ns=(self.record.mtime_ns, self.record.mtime_ns))
        self._sealed = True

    def commit(self, expected: Seen | None, keep_old: KeepOld | None = None) -> Seen:
        """Replace `expected` (None: nothing; a directory only if empty) with the sealed file.

        On failure the temp stays for a retry, until `abort` or `remove_temps` deletes it.
        Durable only after a `sync` (see seal).
        """
        if not self._sealed:
            raise ValueError(f"{self.record.path}: not sealed")
        if not self._still_in_place():
            # The user moved its directory (out of the folder, maybe) while it was written:
            # putting it there would put it where the index does not think it is. What is
            # left of it goes with its directory; the version is written again where it goes.
            self.abort()
            where = self.record.path.rpartition("/")[0] or "the folder"
            raise Changed(f"{where} moved while {self.record.path} was written into it")
        _replace(self._dir_fd, self._temp, self._name, self.record.path, expected, keep_old)
        seen = Seen.of(self.record.path, Kind.FILE, os.fstat(self._fd))
        self.close()
        return seen

    @property
    def sealed(self) -> bool:
        """Whether `seal` succeeded: the file may be committed."""
        return self._sealed

    @property
    def closed(self) -> bool:
        """Whether the file is released: committed, aborted or closed."""
        return self._fd < 0

    def abort(self) -> None:
        """Remove the temporary file (before close)."""
        with suppress(FileNotFoundError):
            os.unlink(self._temp, dir_fd=self._dir_fd)
        self.close()

    def close(self) -> None:
        """Release the file, keeping it for a later resume."""
        for fd in (self._direct, self._fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._direct = self._fd = self._dir_fd = -1

    def __enter__(self) -> Incoming:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def length(self, index: int) -> int:
        """The size of block `index` of this file."""
        return min(BLOCK_SIZE, self.record.size - index * BLOCK_SIZE)

    def _still_in_place(self) -> bool:
        """Whether the directory the file is written in is still where its path leads."""
        try:
            with parent(self.root, self.record.path) as (dir_fd, _):
                now = os.fstat(dir_fd)
        except (OSError, UnsafePath):
            return False
        opened = os.fstat(self._dir_fd)
        return (now.st_ino, now.st_dev) == (opened.st_ino, opened.st_dev)

    def _verified(self) -> set[int]:
        size = os.fstat(self._fd).st_size
        if size == 0:  # a new temp, as most are
            return set()
        view = memoryview(bytearray(BLOCK_SIZE))
        present = set()
        for index, digest in enumerate(self.record.blocks):
            block, offset = view[: self.length(index)], index * BLOCK_SIZE
            if (offset + len(block) <= size and read_at(self._fd, block, offset) == len(block)
                    and hashlib.sha256(block).digest() == digest):
                present.add(index)
        return present


def sync(root: Path) -> None:
    """Make everything written in root's filesystem durable.

    Linux's syncfs(2) costs one journal commit for a whole group of files, where an fsync of
    each file and its directory costs two commits per file: 15 times slower for small files.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs is None:
            os.sync()
        elif _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}", str(root))
    finally:
        os.close(fd)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _reopen_direct(fd: int) -> int:
    """A second handle on the file open as `fd` that writes around the page cache (the same
    file: reopened through /proc, not by its name); -1 where there is none to be had."""
    if not _O_DIRECT:
        return -1
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | _O_DIRECT | os.O_CLOEXEC)
    except OSError:  # no /proc, or a file system without O_DIRECT (tmpfs before Linux 6.6)
        return -1


def _clone(source: int, target: int, start: int, end: int) -> bool:
    """Share the range's extents where the file system can (XFS, btrfs), nothing copied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fcntl.ioctl(target, _FICLONERANGE, struct.pack("qQQQ", source, start, end - start, start))
    except OSError:  # ext4 and the like: EOPNOTSUPP
        return False
    return True


def _write_behind(fd: int) -> None:
    """Have the kernel start writing out what the file holds in memory, without waiting."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # a hint: its failure changes nothing


def read_blocks(dirs: Directories, path: RelPath, indexes: Iterable[int]) -> dict[int, bytes]:
    """Blocks of the local file (the last one short), through one open: those it holds now,
    none if it is gone or not a file. Its directory is reached through `dirs`, which keeps it
    open for the next file read."""
    try:
        dir_fd, name = dirs.parent(path)
        fd = open_file(name, dir_fd)
    except OSError as e:
        if e.errno in VANISHED:
            return {}
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        return {index: data for index in sorted(indexes)
                if (data := _read_whole(fd, BLOCK_SIZE, index * BLOCK_SIZE))}
    finally:
        os.close(fd)


def _read_whole(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes from `offset`, fewer only at the end of the file."""
    data = os.pread(fd, size, offset)
    while len(data) < size and (more := os.pread(fd, size - len(data), offset + len(data))):
        data += more
    return data


def make_dir(root: Path, record: FileRecord, expected: Seen | None,
             keep_old: KeepOld | None = None) -> Seen:
    """The directory with the record's mode and mtime where `expected` is (a file or link: kept)."""
    with parent(root, record.path, create=True) as (dir_fd, name):
        _check(dir_fd, name, record.path, expected)
        if expected is None or expected.kind is not Kind.DIR:
            if expected is not None:
                # No rename puts a directory over a file: the path is absent until the mkdir.
                _discard(dir_fd, name, record.path, expected, keep_old)
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                raise Changed(f"{record.path} is taken: remove it first") from None
        _set_metadata(dir_fd, name, record)
        return _seen_now(dir_fd, name, record.path)


def make_symlink(root: Path, record: FileRecord, expected: Seen | None,
                 keep_old: KeepOld | None = None) -> Seen:
    """Atomically put a link to record.target in place of `expected` (a directory only if empty)."""
    with parent(root, record.path, create=True) as (dir_fd, name):
        temp = TEMP_PREFIX + secrets.token_hex(8)
        os.symlink(record.target, temp, dir_fd=dir_fd)
        try:
            _set_metadata(dir_fd, temp, record)
            _replace(dir_fd, temp, name, record.path, expected, keep_old)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        return _seen_now(dir_fd, name, record.path)


def remove(root: Path, path: RelPath, expected: Seen | None,
           keep_old: KeepOld | None = None) -> None:
    """Delete `expected` (a directory only if empty, else Changed); already gone is fine."""
    try:
        with parent(root, path) as (dir_fd, name):
            if seen_at(path, name, dir_fd) is None:
                return
            _check(dir_fd, name, path, expected)
            if expected is not None and expected.kind is Kind.DIR:
                _remove_dir(dir_fd, name, path)
            else:
                _discard(dir_fd, name, path, expected, keep_old)
    except (FileNotFoundError, ParentNotDir):
        return  # a parent is gone, or a file or link now, and the path with it


def set_metadata(root: Path, record: FileRecord, expected: Seen | None) -> Seen:
    """Give `expected`, whose content already matches, the record's mode and mtime."""
    with parent(root, record.path) as (dir_fd, name):
        _check(dir_fd, name, record.path, expected)
        if expected is None:
            raise Changed(f"{record.path} is not on disk")
        _set_metadata(dir_fd, name, record)
        return _seen_now(dir_fd, name, record.path)


def move_to_versions(root: Path, dir_fd: int, name: str, rel: RelPath, when_ns: int) -> None:
    """Keep entry `name` of dir_fd (the path `rel`) as versions/<rel>~YYYYMMDD-HHMMSS (UTC)."""
    stamp = datetime.fromtimestamp(when_ns / 1e9, UTC).strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        kept = f"{MARKER}/versions/{rel}~{stamp}" + (f"-{n}" if n > 1 else "")
        with parent(root, kept, create=True) as (kept_fd, kept_name):
            try:
                # A hard link leaves the path in place, so the rename over it stays atomic
                # and a crash in between cannot look like a deletion.
                os.link(name, kept_name, src_dir_fd=dir_fd, dst_dir_fd=kept_fd,
                        follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno not in _NO_HARD_LINKS:
                    raise
                _not_a_directory(dir_fd, name, rel)
                os.rename(name, kept_name, src_dir_fd=dir_fd, dst_dir_fd=kept_fd)
            return


def remove_temps(root: Path, directory: str, keep: set[str]) -> int:
    """Delete our temporary files in `directory` but those named in `keep`; how many remain."""
    try:
        with scan.directory(root, directory) as fd, os.scandir(fd) as entries:
            temps = [e.name for e in entries if is_temporary(e.name)]
            for name in temps:
                if name not in keep:
                    with suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError, UnsafePath):
        return 0
    return len([name for name in temps if name in keep])


def keep_beside(dir_fd: int, name: str, other: str) -> bool:
    """Keep entry `name` of dir_fd also as `other` in the same directory; False if `other` is taken.

    Like `move_to_versions`, a hard link leaves `name` in place for an atomic rename over it.
    """
    try:
        os.link(name, other, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        if seen_at(RelPath(other), other, dir_fd) is not None:
            return False
        _not_a_directory(dir_fd, name, RelPath(other))
        os.rename(name, other, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return True


def same_bytes(dir_fd: int, name: str, other: str) -> bool:
    """Whether entries `name` and `other` of dir_fd are files of the same content."""
    try:
        fds = [open_file(n, dir_fd) for n in (name, other)]
    except OSError:
        return False
    try:
        if os.fstat(fds[0]).st_size != os.fstat(fds[1]).st_size:
            return False
        while True:
            a, b = (os.read(fd, BLOCK_SIZE) for fd in fds)
            if a != b:
                return False
            if not a:
                return True
    finally:
        for fd in fds:
            os.close(fd)


def _not_a_directory(dir_fd: int, name: str, path: RelPath) -> None:
    """Changed if entry `name` is a directory now: one the user made in place of what was
    checked, which keeping by rename would take out of the folder."""
    seen = seen_at(path, name, dir_fd)
    if seen is not None and seen.kind is Kind.DIR:
        raise Changed(f"{path} became a directory while being replaced")


def _check(dir_fd: int, name: str, path: RelPath, expected: Seen | None) -> None:
    if not same_entry(seen_at(path, name, dir_fd), expected):
        raise Changed(f"{path} changed on disk since it was scanned")


def same_entry(seen: Seen | None, expected: Seen | None) -> bool:
    """Whether the entry on disk is still the one scanned, as sync checks before each write.

    It looks at no more than scan.differs: a change a scan passes over as nothing would
    otherwise fail this check for ever.
    """
    return _identity(seen) == _identity(expected)


def _identity(seen: Seen | None) -> tuple[object, ...] | None:
    if seen is None:
        return None
    if seen.kind is Kind.DIR:  # its mtime moves with every entry added or removed
        return seen.kind, seen.inode
    if seen.kind is Kind.SYMLINK:  # what it points to is all it holds
        return seen.kind, seen.target, seen.inode
    return seen.kind, seen.size, seen.mtime_ns, seen.inode


def _replace(dir_fd: int, temp: str, name: str, path: RelPath, expected: Seen | None,
             keep_old: KeepOld | None) -> None:
    """Put `temp` where `expected` is, keeping what it replaces; Changed if the user changed
    that entry at any moment before the swap (theirs then stays where it is).

    A check before a rename leaves a moment for a write to land in what is replaced. So the
    two are swapped in one step, and what came out is checked once no write can reach it at
    `name`: changed, it is swapped back. It is kept (a hard link) before the swap, so a crash
    at any point loses nothing; a write still going through a handle opened before reaches
    what is kept.
    """
    _check(dir_fd, name, path, expected)
    try:
        if expected is None or expected.kind is Kind.DIR:
            if expected is not None:  # an empty directory holds nothing to keep
                _remove_dir(dir_fd, name, path)
            if not _rename2(dir_fd, temp, name, _RENAME_NOREPLACE):
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        if keep_old is not None:
            keep_old(dir_fd, name, path)
            # The user may have replaced it while it was kept: then theirs stays where it is.
            _check(dir_fd, name, path, expected)
        swapped = _rename2(dir_fd, temp, name, _RENAME_EXCHANGE)
    except (FileExistsError, FileNotFoundError):  # made, or gone, since the check
        raise Changed(f"{path} changed on disk since it was scanned") from None
    if not swapped:  # the file system cannot swap: rename over, as checked
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    if not same_entry(seen_at(path, temp, dir_fd), expected):
        try:
            _rename2(dir_fd, temp, name, _RENAME_EXCHANGE)  # theirs goes back in place
        except OSError:  # deleted again meanwhile: theirs stays where it was kept
            if keep_old is not None:
                os.unlink(temp, dir_fd=dir_fd)
        raise Changed(f"{path} changed on disk since it was scanned")
    with suppress(FileNotFoundError):  # kept already: the name goes
        os.unlink(temp, dir_fd=dir_fd)


def _rename2(dir_fd: int, old: str, new: str, flags: int) -> bool:
    """renameat2 within dir_fd; False if this system or file system has no such call (the
    caller then renames as before); OSError as rename raises it."""
    if _renameat2 is None:
        return False
    if _renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), new)


def _discard(dir_fd: int, name: str, path: RelPath, expected: Seen | None,
             keep_old: KeepOld | None) -> None:
    """Delete `expected` (a file or link) at `name`, keeping it; Changed if the user changed it
    at any moment before it went (theirs then stays where it is).

    As in `_replace`, a check and then an unlink would leave a moment for a write to land in
    what is deleted, seen by no one: the entry leaves its name in one rename, and what came
    out is checked once no write can reach it by the name; changed, it goes back.
    """
    if keep_old is not None:
        keep_old(dir_fd, name, path)
    out = TEMP_PREFIX + secrets.token_hex(8)
    try:
        os.rename(name, out, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:  # keep_old moved it away (no hard links here), or the user did
        return
    if same_entry(seen_at(path, out, dir_fd), expected):
        os.unlink(out, dir_fd=dir_fd)
        return
    try:
        if not _rename2(dir_fd, out, name, _RENAME_NOREPLACE):
            if seen_at(path, name, dir_fd) is not None:
                raise FileExistsError(errno.EEXIST, "taken", name)
            os.rename(out, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileExistsError:  # the user made another there meanwhile, and theirs was kept
        if keep_old is not None:
            os.unlink(out, dir_fd=dir_fd)
    raise Changed(f"{path} changed on disk since it was scanned")


def _set_metadata(dir_fd: int, name: str, record: FileRecord) -> None:
    if record.kind is not Kind.SYMLINK:
        try:
            os.chmod(name, record.mode, dir_fd=dir_fd, follow_symlinks=False)
        except (ValueError, NotImplementedError):  # how Linux refuses to chmod a link
            raise Changed(f"{record.path} became a symlink") from None
    os.utime(name, ns=(record.mtime_ns, record.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def _seen_now(dir_fd: int, name: str, path: RelPath) -> Seen:
    seen = seen_at(path, name, dir_fd)
    if seen is None:
        raise Changed(f"{path} vanished while being written")
    return seen


def _remove_dir(dir_fd: int, name: str, path: RelPath) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            leftovers = [e.name for e in entries if is_temporary(e.name)]
        for leftover in leftovers:  # our own temp files must not keep a directory alive
            os.unlink(leftover, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ENOTEMPTY:
            raise
        raise NotEmpty(f"{path} is not empty") from None


def temp_name(record: FileRecord) -> str:
    """The temporary file receiving `record`, in its directory."""
    # Named by path and content, so that a restarted node finds its partial file again.
    digest = hashlib.sha256(record.path.encode() + b"\0" + b"".join(record.blocks))
    return TEMP_PREFIX + digest.hexdigest()[:16]
