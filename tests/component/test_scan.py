"""Walking and watching a folder, hashing files in blocks, and telling what changed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsync.core.paths import TEMP_PREFIX, RelPath
from meshsync.core.records import BLOCK_SIZE, FileRecord, Kind
from meshsync.core.vclock import Vector
from meshsync.fs import watch as watch_module
from meshsync.fs.apply import same_entry
from meshsync.fs.scan import (
    HASH_SPAN,
    Directories,
    ParentNotDir,
    Seen,
    UnsafePath,
    differs,
    hash_file,
    parent,
    stable_hash,
    walk,
    walk_under,
)
from meshsync.fs.watch import DEBOUNCE_MS, STEP_MS, start_early, stop_early, watch

MIB = 1024 * 1024
ORIGIN = "0123456789abcdef"


def seen_of(root: Path, path: str) -> Seen:
    return next(s for s in walk(root) if s.path == path)


def test_walk_reports_files_dirs_and_links_without_following_them(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    root = tmp_path / "root"
    (root / ".meshsync" / "versions").mkdir(parents=True)
    (root / ".meshsync" / "versions" / "old~1").write_text("kept")
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f.txt").write_bytes(b"hello")
    (root / "a" / "b" / "f.txt").chmod(0o640)
    (root / "empty").mkdir()
    (root / "to-dir").symlink_to("a")
    (root / "to-outside").symlink_to(outside)
    (root / "dangling").symlink_to("nowhere")
    (root / "a" / f"{TEMP_PREFIX}0123456789abcdef").write_bytes(b"partial")
    os.mkfifo(root / "pipe")

    temps: set[str] = set()
    found: dict[str, Seen] = {s.path: s for s in walk(root, temps=temps)}

    assert set(found) == {"a", "a/b", "a/b/f.txt", "empty", "to-dir", "to-outside", "dangling"}
    assert temps == {"a"}  # where our temporary files are, for the node to sweep
    st = (root / "a" / "b" / "f.txt").lstat()
    assert found["a/b/f.txt"] == Seen(RelPath("a/b/f.txt"), Kind.FILE, 5, 0o640, st.st_mtime_ns,
                                      st.st_ino, st.st_dev, "")
    assert (found["empty"].kind, found["empty"].size) == (Kind.DIR, 0)
    assert (found["to-dir"].kind, found["to-dir"].target) == (Kind.SYMLINK, "a")
    assert found["to-outside"].target == str(outside)
    assert (found["dangling"].kind, found["dangling"].target) == (Kind.SYMLINK, "nowhere")


def test_walk_under_reports_a_moved_in_tree_whole_but_nothing_behind_a_link(
    tmp_path: Path,
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("no")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "outside")

    assert [s.path for s in walk_under(tmp_path, RelPath("tree"))] == [
        "tree", "tree/sub", "tree/sub/f"]
    assert [s.path for s in walk_under(tmp_path, RelPath("link"))] == ["link"]
    assert list(walk_under(tmp_path, RelPath("link/secret"))) == []
    assert list(walk_under(tmp_path, RelPath("gone"))) == []


def test_walk_without_ignore_rules_skips_only_meshsyncs_own(tmp_path: Path) -> None:
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.js").write_text("x")
    (tmp_path / ".DS_Store").write_text("x")
    (tmp_path / ".meshsyncignore").write_text("node_modules/\n")

    assert {s.path for s in walk(tmp_path)} == {
        "node_modules", "node_modules/x.js", ".DS_Store", ".meshsyncignore"}
    assert [s.path for s in walk_under(tmp_path, RelPath(".DS_Store"))] == [".DS_Store"]


@pytest.mark.parametrize(("path", "ancestor", "kind"), [("file/new/f", "file", Kind.FILE),
                                                      ("dir/link/f", "dir/link", Kind.SYMLINK)])
def test_a_file_or_link_on_the_way_is_refused_naming_it_for_its_record_to_come(
    tmp_path: Path, path: str, ancestor: str, kind: Kind,
) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("a directory elsewhere, its record not applied yet")
    (tmp_path / "dir" / "link").symlink_to(tmp_path / "dir")

    with pytest.raises(ParentNotDir, match="refusing to go through it") as refused, \
            parent(tmp_path, path, create=True):
        pass

    assert (refused.value.path, refused.value.kind) == (ancestor, kind)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dir", "file", "link"]


def test_a_fifo_on_the_way_is_unsafe_but_no_parent_to_wait_for(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")

    with pytest.raises(UnsafePath, match="not a directory") as refused, \
            parent(tmp_path, "pipe/f", create=True):
        pass

    assert not isinstance(refused.value, ParentNotDir)


# Past a span (8 MiB) a file is read and hashed a span at a time by a pool of threads.
@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE,
                                  HASH_SPAN - 1, HASH_SPAN, HASH_SPAN + 3 * BLOCK_SIZE + 5,
                                  2 * HASH_SPAN, 3 * HASH_SPAN + 5])
def test_hash_file_hashes_each_block(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    (tmp_path / "f").write_bytes(data)

    assert hash_file(tmp_path / "f") == (size, tuple(
        hashlib.sha256(data[at : at + BLOCK_SIZE]).digest() for at in range(0, size, BLOCK_SIZE)))


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_hashing_a_large_file_streams_it(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(300 * MIB)  # sparse: no disk is filled
    with suppress(OSError):  # resets VmHWM, so the peak is this test's
        Path("/proc/self/clear_refs").write_text("5")
    before = max(memory_kib("VmRSS"), memory_kib("VmHWM"))

    size, blocks = hash_file(big)

    assert memory_kib("VmHWM") - before < 64 * 1024
    assert size == 300 * MIB
    assert blocks == (hashlib.sha256(bytes(BLOCK_SIZE)).digest(),) * (300 * MIB // BLOCK_SIZE)


def test_stable_hash_hashes_an_unchanged_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * (2 * BLOCK_SIZE + 5))

    assert stable_hash(Directories(tmp_path), seen_of(tmp_path, "f")) == hash_file(tmp_path / "f")


def test_stable_hash_refuses_a_file_appended_to_while_hashed(tmp_path: Path) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"x" * (3 * BLOCK_SIZE))
    seen = seen_of(tmp_path, "growing")
    appended: list[bool] = []

    def append_at_first_read(_frame: FrameType, event: str, arg: object) -> None:
        # Strikes after the hasher's first stat and read, before its closing stats: no timing.
        if event == "c_call" and arg is os.preadv and not appended:
            appended.append(True)
            with path.open("ab") as f:
                f.write(b"more")

    sys.setprofile(append_at_first_read)
    try:
        assert stable_hash(Directories(tmp_path), seen) is None
    finally:
        sys.setprofile(None)
    assert appended


def test_stable_hash_refuses_a_file_that_changed_or_went_since_it_was_seen(
    tmp_path: Path,
) -> None:
    for name in ("grown", "gone", "now-link", "now-dir"):
        (tmp_path / name).write_bytes(b"abc")
    seen = {s.path: s for s in walk(tmp_path)}
    with (tmp_path / "grown").open("ab") as f:
        f.write(b"d")
    (tmp_path / "gone").unlink()
    (tmp_path / "now-link").unlink()
    (tmp_path / "now-link").symlink_to("grown")
    (tmp_path / "now-dir").unlink()
    (tmp_path / "now-dir").mkdir()

    for path in seen:
        assert stable_hash(Directories(tmp_path), seen[path]) is None, path


FILE = Seen(RelPath("f"), Kind.FILE, 10, 0o644, 1_000, 7, 1, "")
DIR = Seen(RelPath("d"), Kind.DIR, 0, 0o755, 1_000, 8, 1, "")
LINK = Seen(RelPath("l"), Kind.SYMLINK, 0, 0o777, 1_000, 9, 1, "there")


def record_of(seen: Seen) -> FileRecord:
    return FileRecord(seen.path, seen.kind, Vector.of({ORIGIN: 1}), ORIGIN, size=seen.size,
                      mode=seen.mode, mtime_ns=seen.mtime_ns, target=seen.target)


@pytest.mark.parametrize(
    ("seen", "change", "expected"),
    [
        (FILE, {}, False),
        (FILE, {"size": 11}, True),
        (FILE, {"mtime_ns": 1_001}, True),
        (FILE, {"inode": 70}, True),
        (FILE, {"mode": 0o600}, True),
        (FILE, {"kind": Kind.DIR}, True),
        (FILE, {"dev": 2}, False),
        (DIR, {}, False),
        (DIR, {"mtime_ns": 2_000}, False),
        (DIR, {"inode": 80}, True),  # made again: the index must learn the new inode
        (DIR, {"mode": 0o700}, True),
        (DIR, {"kind": Kind.SYMLINK}, True),
        (LINK, {}, False),
        (LINK, {"target": "elsewhere"}, True),
        (LINK, {"mtime_ns": 2_000}, False),
        (LINK, {"inode": 90}, True),
        (LINK, {"kind": Kind.FILE}, True),
    ],
)
def test_differs(seen: Seen, change: dict[str, object], expected: bool) -> None:
    on_disk = seen._replace(**change)  # type: ignore[arg-type]

    assert differs(on_disk, record_of(seen), seen.inode) is expected


@given(st.sampled_from([FILE, DIR, LINK]), st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(Kind), "size": st.integers(0, 20),
    "mode": st.sampled_from([0o644, 0o755]), "mtime_ns": st.integers(999, 1_001),
    "inode": st.integers(7, 9), "dev": st.integers(1, 2),
    "target": st.sampled_from(["there", "elsewhere"])}))
def test_what_a_scan_passes_over_as_unchanged_passes_the_check_before_a_write(
        scanned: Seen, change: dict[str, object]) -> None:
    on_disk = scanned._replace(**change)  # type: ignore[arg-type]

    if not differs(on_disk, record_of(scanned), scanned.inode):
        assert same_entry(on_disk, scanned)


def test_a_tombstone_differs_from_anything_present() -> None:
    for seen in (FILE, DIR, LINK):
        record = record_of(seen)
        assert differs(seen, record.tombstone(Vector.of({ORIGIN: 2}), ORIGIN), seen.inode)


async def until(condition: Callable[[], bool], action: Callable[[], object] = lambda: None) -> None:
    async with asyncio.timeout(10):
        while not condition():
            action()
            await asyncio.sleep(0.05)


async def test_watch_reports_new_files_and_a_moved_in_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".meshsync").mkdir(parents=True)
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("x")
    reported: set[RelPath] = set()

    async def collect() -> None:
        async for batch in watch(root):
            reported.update(batch)

    task = asyncio.create_task(collect(), name="watch")
    try:
        probe = root / "probe"
        await until(lambda: "probe" in reported, lambda: probe.write_text("ready?"))
        (root / ".meshsync" / "state").write_text("ours")
        (root / f"{TEMP_PREFIX}0123456789abcdef").write_text("ours")
        (root / "new.txt").write_text("hello")
        (tmp_path / "tree").rename(root / "tree")
        await until(lambda: {"new.txt", "tree"} <= reported)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert not any(p.startswith((".meshsync", TEMP_PREFIX)) for p in reported)
    assert [s.path for s in walk_under(root, RelPath("tree"))] == [
        "tree", "tree/sub", "tree/sub/f"]


def test_the_watching_process_sends_each_changed_path_once_and_none_of_meshsyncs_own(
        tmp_path: Path) -> None:
    # A file synced in is a temp file written, renamed into place: a few events each, which
    # the node would sift holding its GIL. The child sends its one path.
    root = tmp_path / "root"
    (root / ".meshsync").mkdir(parents=True)
    sent: list[bytes] = []
    with subprocess.Popen([sys.executable, "-P", "-c", watch_module._CHILD, str(root),
                           *sys.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        try:
            records = iter(lambda: _record(child.stdout), b"")
            assert next(records) == b"R"
            for n in range(3):
                temp = root / f"{TEMP_PREFIX}{n:016x}"
                temp.write_text("new content")
                with temp.open("a") as f:
                    f.write(" and more")
                temp.rename(root / "synced.txt")
                (root / ".meshsync" / "state").write_text(f"ours {n}")
            while b"synced.txt" not in b"".join(sent) or sent[-1] != b"B":
                sent.append(next(records))
        finally:
            child.kill()
    batches = b"\0".join(sent).split(b"B")
    for batch in batches:
        paths = [r for r in batch.split(b"\0") if r]
        assert len(paths) == len(set(paths)), paths
        assert all(p.startswith(b"P" + bytes(root)) and TEMP_PREFIX.encode() not in p
                   and b"/.meshsync" not in p for p in paths), paths


def _record(stream: Any) -> bytes:
    """One NUL-ended record of the watching process, without its NUL; b"" at the end."""
    record = b""
    while (byte := stream.read(1)) not in (b"\0", b""):
        record += byte
    return record


async def test_a_watch_started_early_is_taken_on_by_the_first_watch_of_its_folder(
        tmp_path: Path) -> None:
    # `meshsync start` starts each folder's watching first thing, so that placing the watches
    # goes on while the node starts; the folder's first watch takes that process on.
    root = tmp_path / "root"
    (root / ".meshsync").mkdir(parents=True)
    before = children(os.getpid())
    start_early([root])
    (early,) = children(os.getpid()) - before
    reported: set[RelPath] = set()
    ready = asyncio.Event()

    async def collect() -> None:
        async for batch in watch(root, ready.set):
            reported.update(batch)

    task = asyncio.create_task(collect(), name="watch")
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        assert children(os.getpid()) - before == {early}, "no second watching process"
        await until(lambda: "new.txt" in reported, lambda: (root / "new.txt").write_text("x"))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert gone(early)


def test_a_watch_started_early_for_a_folder_not_there_as_expected_is_ended(
        tmp_path: Path) -> None:
    before = children(os.getpid())
    start_early([tmp_path])
    (early,) = children(os.getpid()) - before
    stop_early(tmp_path)
    assert gone(early)
    stop_early(tmp_path)  # none left: nothing to do
    start_early([tmp_path / "absent", Path("relative")])  # neither is a folder to watch
    assert children(os.getpid()) - before == set()


def children(pid: int) -> set[int]:
    """The processes `pid` started that still run."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(FileNotFoundError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie counts: it runs no more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def watching(root: Path) -> tuple[asyncio.Task[None], set[RelPath], int]:
    """A watch of `root` whose watches are in place: its task, the paths it has reported so
    far, and its watching process."""
    ready = asyncio.Event()
    reported: set[RelPath] = set()
    before = children(os.getpid())

    async def collect() -> None:
        async for batch in watch(root, ready.set):
            reported.update(batch)

    task = asyncio.create_task(collect(), name="watch")
    async with asyncio.timeout(10):
        await ready.wait()
    (child,) = children(os.getpid()) - before
    return task, reported, child


async def test_a_watch_whose_process_ends_says_so_and_reports_changes_until_then(
        tmp_path: Path) -> None:
    task, reported, child = await watching(tmp_path)
    (tmp_path / "made-after-ready").write_text("x")
    await until(lambda: "made-after-ready" in reported)
    os.kill(child, 9)
    with pytest.raises(OSError, match="the watching process ended"):
        async with asyncio.timeout(10):
            await task


def scheduled(pid: int) -> int:
    """How many times the threads of process `pid` have been run so far (each wakeup counts)."""
    runs = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(FileNotFoundError):  # a thread that ended meanwhile
            runs += int((task / "schedstat").read_text().split()[2])
    return runs


async def quiet_for_a_second(pid: int) -> None:
    """Until process `pid` runs at most a few times in one second."""
    async with asyncio.timeout(10):
        while True:
            before = scheduled(pid)
            await asyncio.sleep(1)
            if scheduled(pid) - before <= 5:
                return


async def test_the_watching_process_sleeps_while_nothing_changes_and_wakes_for_a_change(
        tmp_path: Path) -> None:
    # watchfiles looks for changes every step whether or not anything happens: at a 10 ms
    # step, 100 wakeups a second, most of what an idle node spent. The child sleeps until
    # the kernel signals an event instead, and a change still arrives at once.
    task, reported, child = await watching(tmp_path)
    try:
        for name in ("after-a-quiet", "after-another"):
            await quiet_for_a_second(child)
            (tmp_path / name).write_text("x")
            await until(lambda: name in reported)  # noqa: B023 (awaited in this iteration)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("ending", ["quiet", "stop"])
def test_a_round_ended_for_quiet_keeps_what_watchfiles_gathered(tmp_path: Path,
                                                               ending: str) -> None:
    """watchfiles empties what it gathered when a round ends by its stop event (or its
    time-out), so a change recorded in that instant would never be reported, and the folder
    would look in sync without it. The child's rounds end by `_Quiet` instead, which keeps
    it for the next round; the stop event, as watchfiles handles it, loses it."""
    from watchfiles._rust_notify import RustNotify

    stop = threading.Event()
    with RustNotify([str(tmp_path)], False, False, 0, True, True) as notify:
        ending_round = watch_module._Round(stop)
        (tmp_path / "made").write_text("x")
        # Nothing tells when watchfiles' thread has read the kernel's event (it takes µs to
        # ms); by then, too, the round's QUIET_MS have passed.
        time.sleep(0.3)
        if ending == "stop":
            stop.set()
            assert notify.watch(DEBOUNCE_MS, STEP_MS, 0, ending_round) == "stop"
        else:
            with pytest.raises(watch_module._Quiet):
                notify.watch(DEBOUNCE_MS, STEP_MS, 0, ending_round)
        after = notify.watch(DEBOUNCE_MS, STEP_MS, 500, None)

    if ending == "stop":
        assert after == "timeout"  # lost
    else:
        assert isinstance(after, set)
        assert {path for _, path in after} == {str(tmp_path / "made")}


WATCHING_NODE = """
import asyncio, sys
from pathlib import Path
from meshsync.fs.watch import start_early, watch

if sys.argv[2] == "early":
    start_early([Path(sys.argv[1])])

async def main():
    async for _ in watch(Path(sys.argv[1]), lambda: print("ready", flush=True)):
        pass

asyncio.run(main())
"""


@pytest.mark.parametrize("started", ["early", "by watch"])
async def test_the_watching_process_never_outlives_the_node(tmp_path: Path, started: str) -> None:
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WATCHING_NODE, str(tmp_path), started,
        stdout=asyncio.subprocess.PIPE)
    assert node.stdout is not None
    async with asyncio.timeout(10):
        assert await node.stdout.readline() == b"ready\n"
    (watcher,) = children(node.pid)
    node.kill()  # kill -9: no clean-up runs in the node
    await node.wait()
    await until(lambda: gone(watcher))
