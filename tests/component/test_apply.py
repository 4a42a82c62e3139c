"""Writing remote versions into a folder: atomic, resumable, and never through a symlink."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from meshsync.core.paths import TEMP_PREFIX, RelPath
from meshsync.core.records import BLOCK_SIZE, FileRecord, Kind
from meshsync.core.vclock import Vector
from meshsync.fs import apply
from meshsync.fs.apply import (
    BadBlock,
    Changed,
    Incoming,
    NotEmpty,
    ParentNotDir,
    expect_matches,
    make_dir,
    make_symlink,
    move_to_versions,
    read_blocks,
    remove,
    remove_temps,
    set_metadata,
    temp_name,
    versions_dir,
)
from meshsync.fs.scan import Directories, Seen, walk_under

ORIGIN = "0123456789abcdef"
MTIME = 1_600_000_000_123_456_789
WHEN = 1_600_000_000 * 10**9  # 2020-09-13 12:26:40 UTC


def chunks(data: bytes) -> list[bytes]:
    return [data[at : at + BLOCK_SIZE] for at in range(0, len(data), BLOCK_SIZE)]


def file_record(path: str, data: bytes, mode: int = 0o640) -> FileRecord:
    return FileRecord(RelPath(path), Kind.FILE, Vector.of({ORIGIN: 1}), ORIGIN, size=len(data),
                      mode=mode, mtime_ns=MTIME,
                      blocks=tuple(hashlib.sha256(c).digest() for c in chunks(data)))


def other_record(path: str, kind: Kind, mode: int = 0o750, target: str = "") -> FileRecord:
    return FileRecord(RelPath(path), kind, Vector.of({ORIGIN: 1}), ORIGIN, mode=mode,
                      mtime_ns=MTIME, target=target)


def seen(root: Path, path: str) -> Seen | None:
    return next(iter(walk_under(root, RelPath(path))), None)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def write(root: Path, record: FileRecord, data: bytes, expected: Seen | None = None,
          keep_old: Callable[[int, str, RelPath], None] | None = None) -> Seen:
    with Incoming.open(root, record) as incoming:
        for i, block in enumerate(chunks(data)):
            incoming.write_block(i, block)
        incoming.seal()
        return incoming.commit(expected, keep_old)


def keep_in_versions(root: Path) -> Callable[[int, str, RelPath], None]:
    return lambda dir_fd, name, rel: move_to_versions(root, dir_fd, name, rel, WHEN)


def test_blocks_in_any_order_appear_at_once_with_mode_and_mtime(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * BLOCK_SIZE + 123)
    record = file_record("new/deep/f.bin", data)
    target = tmp_path / "new" / "deep" / "f.bin"
    order = list(enumerate(chunks(data)))
    random.Random(2).shuffle(order)

    with Incoming.open(tmp_path, record) as incoming:
        assert incoming.have() == set()
        for i, block in order:
            incoming.write_block(i, block)
            assert not target.exists()
        assert incoming.have() == {0, 1, 2, 3}
        assert not incoming.sealed
        incoming.seal()
        assert incoming.sealed
        assert not target.exists()
        done = incoming.commit(None)

    st = target.lstat()
    assert target.read_bytes() == data
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, MTIME)
    assert done == Seen(record.path, Kind.FILE, len(data), 0o640, MTIME, st.st_ino, st.st_dev, "")
    assert temp_files(tmp_path) == []


def test_an_empty_file_is_written(tmp_path: Path) -> None:
    done = write(tmp_path, file_record("empty", b"", 0o600), b"")

    assert (tmp_path / "empty").read_bytes() == b""
    assert (done.size, done.mode, done.mtime_ns) == (0, 0o600, MTIME)


def test_a_bad_block_is_refused_and_nothing_written(tmp_path: Path) -> None:
    data = b"a" * BLOCK_SIZE + b"b" * 10
    record = file_record("f", data)

    with Incoming.open(tmp_path, record) as incoming:
        for index, block in [(0, b"c" * BLOCK_SIZE), (1, b"b" * 11), (0, data[BLOCK_SIZE:]),
                             (2, b"b" * 10), (-1, b"b" * 10)]:
            with pytest.raises(BadBlock):
                incoming.write_block(index, block)
        assert incoming.have() == set()
        with pytest.raises(ValueError, match="2 blocks not written"):
            incoming.seal()
        with pytest.raises(ValueError, match="not sealed"):
            incoming.commit(None)
        incoming.abort()

    assert list(tmp_path.iterdir()) == []


def test_a_restarted_node_resumes_its_half_written_file(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(4 * BLOCK_SIZE - 1)
    record = file_record("f", data)
    blocks = chunks(data)
    with Incoming.open(tmp_path, record) as first:
        first.write_block(0, blocks[0])
        first.write_block(2, blocks[2])
    # the node died here

    with Incoming.open(tmp_path, record) as second:
        assert second.have() == {0, 2}
        second.write_block(1, blocks[1])
        second.write_block(3, blocks[3])
        second.seal()
        second.commit(None)

    assert (tmp_path / "f").read_bytes() == data
    assert temp_files(tmp_path) == []


def cached_pages(path: Path) -> list[bool]:
    """Which of the file's pages the page cache holds (mincore of a mapping that reads none)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        pages = -(-size // mmap.PAGESIZE)
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        assert ctypes.CDLL(None, use_errno=True).mincore(
            ctypes.c_void_p(address), ctypes.c_size_t(size), vector) == 0
        return [bool(v & 1) for v in vector]
    finally:
        mapped.close()


def test_a_big_files_whole_blocks_go_around_the_page_cache(tmp_path: Path) -> None:
    # Copying a GiB into the page cache was the biggest cost of receiving it.
    data = random.Random(7).randbytes(apply.DIRECT_FROM + BLOCK_SIZE // 2)
    write(tmp_path, file_record("big.bin", data), data)

    cached = cached_pages(tmp_path / "big.bin")
    whole = apply.DIRECT_FROM // mmap.PAGESIZE
    assert not any(cached[:whole]), "whole blocks were written around the page cache"
    assert (tmp_path / "big.bin").read_bytes() == data
    small = random.Random(8).randbytes(4 * BLOCK_SIZE)
    write(tmp_path, file_record("small.bin", small), small)
    assert all(cached_pages(tmp_path / "small.bin")), "small files go through it, as before"


def test_a_big_files_unchanged_blocks_are_copied_around_the_page_cache(tmp_path: Path) -> None:
    # One byte changed in a GiB: the rest copied page cache to page cache, then written out,
    # took two receivers 4 s.
    old = random.Random(12).randbytes(apply.DIRECT_FROM + 2 * BLOCK_SIZE + 99)
    (tmp_path / "disk.img").write_bytes(old)
    expected = seen(tmp_path, "disk.img")
    assert expected is not None
    at = len(old) // 2
    new = old[:at] + bytes([old[at] ^ 0xFF]) + old[at + 1 :]
    record = file_record("disk.img", new)
    changed = at // BLOCK_SIZE
    with Incoming.open(tmp_path, record) as incoming:
        kept = set(range(len(record.blocks))) - {changed}
        assert incoming.copy_unchanged(expected, kept) == kept
        incoming.write_block(changed, chunks(new)[changed])
        incoming.seal()
        incoming.commit(expected)

    cached = cached_pages(tmp_path / "disk.img")
    assert not any(cached[: changed * BLOCK_SIZE // mmap.PAGESIZE])
    assert (tmp_path / "disk.img").read_bytes() == new


def test_a_big_file_in_any_order_and_resumed_is_whole(tmp_path: Path) -> None:
    data = random.Random(9).randbytes(apply.DIRECT_FROM + 3 * BLOCK_SIZE + 17)
    record = file_record("big.bin", data)
    order = list(enumerate(chunks(data)))
    random.Random(10).shuffle(order)
    with Incoming.open(tmp_path, record) as first:
        for i, block in order[: len(order) // 2]:
            first.write_block(i, block)
    # the node died here

    with Incoming.open(tmp_path, record) as second:
        assert second.have() == {i for i, _ in order[: len(order) // 2]}
        for i, block in order[len(order) // 2 :]:
            second.write_block(i, block)
        second.seal()
        second.commit(None)

    assert (tmp_path / "big.bin").read_bytes() == data
    assert temp_files(tmp_path) == []


def test_a_big_file_is_written_through_the_cache_where_direct_writes_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Some file systems open O_DIRECT but refuse its writes (EINVAL): the file is written all
    # the same, and the refusal asked once.
    refused: list[int] = []
    pwrite = os.pwrite

    def refusing(fd: int, data: bytes | memoryview | mmap.mmap, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refusing)
    data = random.Random(11).randbytes(apply.DIRECT_FROM + 5)
    write(tmp_path, file_record("big.bin", data), data)

    assert (tmp_path / "big.bin").read_bytes() == data
    assert len(refused) == 1


def test_commit_refuses_to_overwrite_a_change_it_did_not_scan(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("user's first")
    expected = seen(tmp_path, "f")
    (tmp_path / "f").write_text("user's second, unscanned")
    record = file_record("f", b"remote")

    with Incoming.open(tmp_path, record) as incoming:
        incoming.write_block(0, b"remote")
        incoming.seal()
        with pytest.raises(Changed):
            incoming.commit(expected)
        assert len(temp_files(tmp_path)) == 1  # kept for a later attempt
        with pytest.raises(Changed):
            incoming.commit(None)
        incoming.abort()

    assert (tmp_path / "f").read_text() == "user's second, unscanned"
    assert temp_files(tmp_path) == []
    with pytest.raises(Changed):
        expect_matches(tmp_path, RelPath("f"), expected)
    expect_matches(tmp_path, RelPath("f"), seen(tmp_path, "f"))
    expect_matches(tmp_path, RelPath("nothing/here"), None)


def test_a_write_landing_just_before_the_swap_stays_in_place_and_sync_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's write comes after sync's last check, before its rename: no moment is left
    # in which it would be replaced unseen (and kept only in versions).
    (tmp_path / "f").write_text("scanned")
    expected = seen(tmp_path, "f")
    real = apply._rename2

    def user_writes_first(dir_fd: int, old: str, new: str, flags: int) -> bool:
        if new == "f" and not (tmp_path / "f.user").exists():
            (tmp_path / "f.user").touch()
            with (tmp_path / "f").open("r+") as f:  # in place, as editors that save so do
                f.write("the user's edit")
        return real(dir_fd, old, new, flags)

    monkeypatch.setattr(apply, "_rename2", user_writes_first)
    record = file_record("f", b"remote")
    with Incoming.open(tmp_path, record) as incoming:
        incoming.write_block(0, b"remote")
        incoming.seal()
        with pytest.raises(Changed):
            incoming.commit(expected)
        assert len(temp_files(tmp_path)) == 1  # ours, kept for the next attempt

    assert (tmp_path / "f").read_text() == "the user's edit"


def test_a_file_made_just_before_sync_puts_a_new_one_there_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = apply._rename2

    def user_makes_it_first(dir_fd: int, old: str, new: str, flags: int) -> bool:
        if new == "f" and not (tmp_path / "f").exists():
            (tmp_path / "f").write_text("the user's new file")
        return real(dir_fd, old, new, flags)

    monkeypatch.setattr(apply, "_rename2", user_makes_it_first)
    with pytest.raises(Changed):
        write(tmp_path, file_record("f", b"remote"), b"remote", None)

    assert (tmp_path / "f").read_text() == "the user's new file"


def test_a_file_whose_directory_was_moved_out_while_written_is_not_put_there(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    record = file_record("d/f", b"remote")

    with Incoming.open(root, record) as incoming:
        incoming.write_block(0, b"remote")
        incoming.seal()
        (root / "d").rename(tmp_path / "moved-out")  # the user takes the directory away
        with pytest.raises(Changed, match="d moved while d/f was written into it"):
            incoming.commit(None)

    assert list((tmp_path / "moved-out").iterdir()) == [], "nothing of it left there"
    assert sorted(p.name for p in root.iterdir()) == []


@pytest.mark.parametrize(("path", "kind"), [("out/f", Kind.SYMLINK), ("out/new/f", Kind.SYMLINK),
                                          ("file/f", Kind.FILE)])
def test_nothing_is_written_through_a_symlinked_or_file_parent(tmp_path: Path, path: str,
                                                               kind: Kind) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "out").symlink_to(outside)
    (root / "file").write_text("not a directory")
    writes: list[Callable[[], object]] = [
        lambda: Incoming.open(root, file_record(path, b"x")),
        lambda: make_dir(root, other_record(path, Kind.DIR), None),
        lambda: make_symlink(root, other_record(path, Kind.SYMLINK, target="/etc"), None),
        lambda: set_metadata(root, other_record(path, Kind.DIR), None),
        lambda: read_blocks(Directories(root), RelPath(path), [0]),
    ]

    for attempt in writes:
        with pytest.raises(ParentNotDir, match="symlink or a file") as refused:
            attempt()
        assert (refused.value.path, refused.value.kind) == (path.partition("/")[0], kind)
    behind = outside / path.partition("/")[2]  # what the path leads to through a link
    behind.parent.mkdir(parents=True, exist_ok=True)
    behind.write_text("not the folder's")
    remove(root, RelPath(path), None)  # nothing of the folder is there: deleted already
    assert behind.read_text() == "not the folder's"
    shutil.rmtree(outside)
    outside.mkdir()

    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in root.iterdir()) == ["file", "out"]


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").symlink_to(victim)

    write(root, file_record("f", b"new"), b"new", seen(root, "f"))

    assert not (root / "f").is_symlink()
    assert (root / "f").read_bytes() == b"new"
    assert victim.read_text() == "precious"


def test_the_replaced_file_is_kept_in_versions(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("old")
    keep = keep_in_versions(tmp_path)

    write(tmp_path, file_record("docs/a.txt", b"new"), b"new", seen(tmp_path, "docs/a.txt"),
          keep)
    remove(tmp_path, RelPath("docs/a.txt"), seen(tmp_path, "docs/a.txt"), keep)

    kept = versions_dir(tmp_path) / "docs"
    assert (kept / "a.txt~20200913-122640").read_text() == "old"
    assert (kept / "a.txt~20200913-122640-2").read_bytes() == b"new"
    assert not (tmp_path / "docs" / "a.txt").exists()


def test_remove_deletes_only_what_it_expects(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "user.txt").write_text("keep me")
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / f"{TEMP_PREFIX}0123456789abcdef").write_text("half")
    (tmp_path / "f").write_text("one")
    (tmp_path / "g").write_text("two")
    expected_g = seen(tmp_path, "g")
    (tmp_path / "g").write_text("two, edited")

    with pytest.raises(Changed, match="not empty"):
        remove(tmp_path, RelPath("full"), seen(tmp_path, "full"))
    with pytest.raises(Changed):
        remove(tmp_path, RelPath("g"), expected_g)
    remove(tmp_path, RelPath("stale"), seen(tmp_path, "stale"))
    remove(tmp_path, RelPath("f"), seen(tmp_path, "f"))
    remove(tmp_path, RelPath("f"), expected_g)  # gone already: fine
    remove(tmp_path, RelPath("no/such/dir"), expected_g)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "g"]
    assert (tmp_path / "full" / "user.txt").read_text() == "keep me"
    assert (tmp_path / "g").read_text() == "two, edited"


@pytest.mark.parametrize("how", ["delete", "make a directory there"])
def test_a_write_landing_while_a_deletion_keeps_the_file_stays_in_place(
        tmp_path: Path, how: str) -> None:
    """The moment after the check, while the file is kept: a user's write through the name
    then must not be deleted with it, seen by no one (it was, before the entry left its name
    in one rename, checked after)."""
    (tmp_path / "f").write_text("scanned")
    expected = seen(tmp_path, "f")
    keep = keep_in_versions(tmp_path)

    def keep_then_the_user_writes(dir_fd: int, name: str, rel: RelPath) -> None:
        keep(dir_fd, name, rel)
        with (tmp_path / "f").open("r+") as f:  # in place, as editors that save so do
            f.write("the user's edit, longer")

    def sync_takes_it_away() -> None:
        if how == "delete":
            remove(tmp_path, RelPath("f"), expected, keep_then_the_user_writes)
        else:
            make_dir(tmp_path, other_record("f", Kind.DIR), expected, keep_then_the_user_writes)

    with pytest.raises(Changed):
        sync_takes_it_away()

    assert (tmp_path / "f").read_text() == "the user's edit, longer"
    assert temp_files(tmp_path) == []
    remove(tmp_path, RelPath("f"), seen(tmp_path, "f"), keep)  # scanned again, it goes
    assert not (tmp_path / "f").exists()
    assert temp_files(tmp_path) == []


def test_make_dir_creates_or_updates_a_directory(tmp_path: Path) -> None:
    made = make_dir(tmp_path, other_record("a/b", Kind.DIR, 0o750), None)

    assert (made.kind, made.mode, made.mtime_ns) == (Kind.DIR, 0o750, MTIME)
    assert (tmp_path / "a" / "b").lstat().st_mode & 0o7777 == 0o750
    (tmp_path / "a" / "b" / "child").write_text("moves the directory's mtime")
    again = make_dir(tmp_path, other_record("a/b", Kind.DIR, 0o700), made)
    assert (again.inode, again.mode) == (made.inode, 0o700)
    with pytest.raises(Changed):
        make_dir(tmp_path, other_record("a/b", Kind.DIR), None)


def test_make_symlink_places_a_link_atomically(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file first")
    keep = keep_in_versions(tmp_path)

    made = make_symlink(tmp_path, other_record("f", Kind.SYMLINK, target="../elsewhere"),
                        seen(tmp_path, "f"), keep)

    assert (tmp_path / "f").readlink() == Path("../elsewhere")
    assert (made.kind, made.target, made.mtime_ns) == (Kind.SYMLINK, "../elsewhere", MTIME)
    assert (versions_dir(tmp_path) / "f~20200913-122640").read_text() == "a file first"
    assert temp_files(tmp_path) == []
    with pytest.raises(Changed):
        make_symlink(tmp_path, other_record("f", Kind.SYMLINK, target="x"), None)
    assert (tmp_path / "f").readlink() == Path("../elsewhere")
    assert temp_files(tmp_path) == []


def test_set_metadata_changes_mode_and_mtime_only(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("same content")
    record = file_record("f", b"same content", 0o600)

    done = set_metadata(tmp_path, record, seen(tmp_path, "f"))

    st = (tmp_path / "f").lstat()
    assert (st.st_mode & 0o7777, st.st_mtime_ns, done.inode) == (0o600, MTIME, st.st_ino)
    assert (tmp_path / "f").read_text() == "same content"
    with pytest.raises(Changed):
        set_metadata(tmp_path, record, None)


def test_read_blocks_reads_each_block_of_a_local_file_alone(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(2 * BLOCK_SIZE + 7)
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "link").symlink_to("f")

    with Directories(tmp_path) as dirs:
        assert read_blocks(dirs, RelPath("f"), [0]) == {0: data[:BLOCK_SIZE]}
        assert read_blocks(dirs, RelPath("f"), [2]) == {2: data[2 * BLOCK_SIZE :]}
        assert read_blocks(dirs, RelPath("f"), [3]) == {}
        assert read_blocks(dirs, RelPath("gone"), [0]) == {}
        assert read_blocks(dirs, RelPath("link"), [0]) == {}


def test_read_blocks_reads_those_a_file_holds_through_one_open(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(3 * BLOCK_SIZE + 9)
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "d").mkdir()

    with Directories(tmp_path) as dirs:
        assert read_blocks(dirs, RelPath("f"), [3, 0, 7]) == {
            0: data[:BLOCK_SIZE], 3: data[3 * BLOCK_SIZE :]}
        assert read_blocks(dirs, RelPath("gone"), [0]) == {}
        assert read_blocks(dirs, RelPath("d"), [0]) == {}


# -- changes of kind: x is a file, a directory or a link here, and becomes another ------------
CHANGES_OF_KIND = [(old, new) for old in Kind for new in Kind if old is not new]


def make(root: Path, kind: Kind) -> None:
    """x as `kind`: a file, a directory holding one file, or a link."""
    if kind is Kind.FILE:
        (root / "x").write_text("old file")
    elif kind is Kind.DIR:
        (root / "x").mkdir()
        (root / "x" / "inside").write_text("inside")
    else:
        (root / "x").symlink_to("old-target")


def put(root: Path, kind: Kind, expected: Seen | None) -> Seen:
    """Apply a remote x of `kind` over `expected`, keeping what it replaces in versions."""
    keep = keep_in_versions(root)
    if kind is Kind.FILE:
        return write(root, file_record("x", b"new file"), b"new file", expected, keep)
    if kind is Kind.DIR:
        return make_dir(root, other_record("x", Kind.DIR), expected, keep)
    return make_symlink(root, other_record("x", Kind.SYMLINK, target="new-target"), expected,
                        keep)


def edit_by_user(root: Path, kind: Kind) -> None:
    """What a user does to x after it was scanned: a new version of the same kind."""
    if kind is Kind.FILE:
        (root / "x").write_text("user's edit, unscanned")
    elif kind is Kind.DIR:  # the old one is kept aside, so its inode cannot be reused
        (root / "x").rename(root / "moved-away")
        (root / "x").mkdir()
    else:
        (root / "y").symlink_to("user's target")
        (root / "y").replace(root / "x")


@pytest.mark.parametrize(("old", "new"), CHANGES_OF_KIND)
def test_every_change_of_kind_is_applied_and_keeps_the_old(tmp_path: Path, old: Kind,
                                                           new: Kind) -> None:
    make(tmp_path, old)
    expected = seen(tmp_path, "x")
    keep = keep_in_versions(tmp_path)
    if old is Kind.DIR:  # its entries' deletions come as records of their own, first
        remove(tmp_path, RelPath("x/inside"), seen(tmp_path, "x/inside"), keep)

    done = put(tmp_path, new, expected)

    assert done == seen(tmp_path, "x")
    assert (done.kind, done.mtime_ns) == (new, MTIME)
    if new is Kind.FILE:
        assert (tmp_path / "x").read_bytes() == b"new file"
    elif new is Kind.DIR:  # and what a remote made in it now goes in
        write(tmp_path, file_record("x/a", b"a"), b"a")
        assert (tmp_path / "x" / "a").read_bytes() == b"a"
    else:
        assert (tmp_path / "x").readlink() == Path("new-target")
    kept = versions_dir(tmp_path)
    if old is Kind.FILE:
        assert (kept / "x~20200913-122640").read_text() == "old file"
    elif old is Kind.DIR:  # the entries were kept as they went; the empty directory is not
        assert [p.name for p in kept.iterdir()] == ["x"]
        assert (kept / "x" / "inside~20200913-122640").read_text() == "inside"
    else:
        assert (kept / "x~20200913-122640").readlink() == Path("old-target")
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("new", [Kind.FILE, Kind.SYMLINK])
def test_a_directory_is_replaced_only_once_its_entries_are_deleted(tmp_path: Path,
                                                                   new: Kind) -> None:
    make(tmp_path, Kind.DIR)
    expected = seen(tmp_path, "x")

    with pytest.raises(NotEmpty):
        put(tmp_path, new, expected)
    assert (tmp_path / "x" / "inside").read_text() == "inside"
    assert not versions_dir(tmp_path).exists()
    # The entry's deletion moves the directory's mtime, which the retry must not take for a
    # user's change.
    remove(tmp_path, RelPath("x/inside"), seen(tmp_path, "x/inside"))
    done = put(tmp_path, new, expected)

    assert done.kind is new
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize(("old", "new"), CHANGES_OF_KIND)
def test_a_change_of_kind_over_a_users_unscanned_change_raises_changed(tmp_path: Path, old: Kind,
                                                                       new: Kind) -> None:
    make(tmp_path, old)
    expected = seen(tmp_path, "x")
    edit_by_user(tmp_path, old)
    edited = seen(tmp_path, "x")

    with pytest.raises(Changed) as refused:
        put(tmp_path, new, expected)

    assert refused.type is Changed
    assert seen(tmp_path, "x") == edited
    assert not versions_dir(tmp_path).exists()


def test_a_failed_commit_leaves_no_temp_once_its_version_is_not_wanted(tmp_path: Path) -> None:
    make(tmp_path, Kind.DIR)
    expected = seen(tmp_path, "x")
    record = file_record("x", b"new file")
    with pytest.raises(NotEmpty):
        write(tmp_path, record, b"new file", expected)
    with pytest.raises(NotEmpty):
        make_symlink(tmp_path, other_record("x", Kind.SYMLINK, target="t"), expected)
    assert [p.name for p in temp_files(tmp_path)] == [temp_name(record)]  # to resume

    assert remove_temps(tmp_path, "", {temp_name(record)}) == 1  # still waited for
    assert len(temp_files(tmp_path)) == 1
    assert remove_temps(tmp_path, "", set()) == 0  # no longer
    assert temp_files(tmp_path) == []
    with Incoming.open(tmp_path, record) as incoming:
        incoming.write_block(0, b"new file")
        incoming.seal()
        with pytest.raises(NotEmpty):
            incoming.commit(expected)
        incoming.abort()
    assert temp_files(tmp_path) == []
    assert (tmp_path / "x" / "inside").read_text() == "inside"


def edited_in_place(path: Path) -> None:
    """The user rewrites the file's first byte; size and inode stay, the mtime moves."""
    with path.open("r+b") as f:
        f.write(b"!")
    os.utime(path, ns=(MTIME + 10**9, MTIME + 10**9))


@pytest.mark.parametrize("edit", ["none", "before", "during", "no copy_file_range"])
def test_blocks_copied_from_the_file_replaced_only_while_it_keeps_its_stamp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: str) -> None:
    old = bytes(range(256)) * (3 * BLOCK_SIZE // 256) + b"tail"
    (tmp_path / "db").write_bytes(old)
    os.utime(tmp_path / "db", ns=(MTIME, MTIME))
    expected = seen(tmp_path, "db")
    assert expected is not None
    new = old[:BLOCK_SIZE] + b"x" * BLOCK_SIZE + old[2 * BLOCK_SIZE:]
    record = file_record("db", new)
    if edit == "before":
        edited_in_place(tmp_path / "db")
    copy = os.copy_file_range

    def copy_then_edit(*args: int) -> int:
        copied = copy(*args)
        edited_in_place(tmp_path / "db")
        return copied

    def unsupported(*args: int) -> int:
        raise OSError(errno.ENOSYS, "copy_file_range")

    if edit in ("during", "no copy_file_range"):
        monkeypatch.setattr(os, "copy_file_range",
                            copy_then_edit if edit == "during" else unsupported)
    with Incoming.open(tmp_path, record) as incoming:
        copied = incoming.copy_unchanged(expected, [0, 2, 3])
        assert copied == ({0, 2, 3} if edit == "none" else set())
        assert incoming.have() == copied  # the others are written as any block is, checked
        for i in set(range(4)) - copied:
            incoming.write_block(i, chunks(new)[i])
        incoming.seal()
        if edit == "none":
            incoming.commit(expected)
    if edit == "none":
        assert (tmp_path / "db").read_bytes() == new
        assert temp_files(tmp_path) == []
