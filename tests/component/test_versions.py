"""Kept versions: listed oldest first, pruned by age and size, restored as copies, not via links."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meshsync.core.paths import TEMP_PREFIX, RelPath
from meshsync.fs.apply import KeepOld, move_to_versions, versions_dir
from meshsync.fs.scan import UnsafePath
from meshsync.fs.versions import (
    RestoreError,
    Version,
    all_versions,
    list_versions,
    parse_time,
    pick,
    prune,
    restore,
)

MTIME = 1_600_000_000_123_456_789
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HOUR = 3600.0
KEPT = "20200101-000000"  # older than the stamp a restore gives the content it replaces


def kept(root: Path, name: str, data: bytes = b"x", mode: int = 0o640) -> Path:
    """Put a kept copy at versions/<name> with MTIME and `mode`."""
    path = versions_dir(root) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, ns=(MTIME, MTIME))
    return path


def names(versions: list[Version]) -> list[str]:
    return [v.kept.removeprefix(".meshsync/versions/") for v in versions]


def keep_now(root: Path) -> KeepOld:
    return lambda dir_fd, name, rel: move_to_versions(root, dir_fd, name, rel, time.time_ns())


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d-%H%M%S").replace(tzinfo=UTC)


@pytest.fixture
def plus_one_hour_local_time() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XYZ-1"  # POSIX: local time is UTC+1, no daylight saving
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_versions_of_a_path_are_listed_oldest_first_with_suffixes_in_order(tmp_path: Path) -> None:
    kept(tmp_path, "a/b.txt~20261125-101500-10", b"tenth")
    kept(tmp_path, "a/b.txt~20261125-101500-2", b"second")
    kept(tmp_path, "a/b.txt~20261125-101500", b"first")
    kept(tmp_path, "a/b.txt~20261124-090000", b"yesterday")
    kept(tmp_path, "a/c.txt~20261123-090000", b"another path")
    kept(tmp_path, "b.txt~20261123-090000", b"another directory")
    (versions_dir(tmp_path) / "a" / "b.txt~20261126-000000").symlink_to("../target")

    found = list_versions(tmp_path, RelPath("a/b.txt"))

    assert names(found) == ["a/b.txt~20261124-090000", "a/b.txt~20261125-101500",
                            "a/b.txt~20261125-101500-2", "a/b.txt~20261125-101500-10",
                            "a/b.txt~20261126-000000"]
    assert [v.size for v in found] == [9, 5, 6, 5, 0]
    assert {v.path for v in found} == {"a/b.txt"}
    assert found[1].when == datetime(2026, 11, 25, 10, 15, tzinfo=UTC)
    assert found[1].to_json() == {
        "path": "a/b.txt", "kept": ".meshsync/versions/a/b.txt~20261125-101500",
        "time": "2026-11-25T10:15:00Z", "size": 5}
    assert names(all_versions(tmp_path)) == ["a/c.txt~20261123-090000", "b.txt~20261123-090000",
                                             *names(found)]


def test_names_that_do_not_parse_and_what_is_not_a_file_are_ignored(tmp_path: Path) -> None:
    assert list_versions(tmp_path, RelPath("a/b.txt")) == []
    assert all_versions(tmp_path) == []
    for name in ["a/b.txt", "a/b.txt~", "a/b.txt~2026-11-25", "a/b.txt~20261325-101500",
                 "a/b.txt~20261125-101500-0", "a/b.txt~20261125-101500-x",
                 "a/b.txt~20261125-1015000", f"a/{TEMP_PREFIX}1~20261125-101500"]:
        kept(tmp_path, name)
    (versions_dir(tmp_path) / "a" / "b.txt~20261125-111500").mkdir()
    os.mkfifo(versions_dir(tmp_path) / "a" / "b.txt~20261125-121500")
    kept(tmp_path, "a/b.txt~20261125-131500")

    assert names(list_versions(tmp_path, RelPath("a/b.txt"))) == ["a/b.txt~20261125-131500"]
    assert names(all_versions(tmp_path)) == ["a/b.txt~20261125-131500"]


def test_linked_directories_in_versions_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    kept(outside, "a/b.txt~20261125-101500")
    root = tmp_path / "root"
    versions_dir(root).mkdir(parents=True)
    (versions_dir(root) / "a").symlink_to(versions_dir(outside) / "a")

    assert list_versions(root, RelPath("a/b.txt")) == []
    assert all_versions(root) == []
    assert prune(root, 0, 0, NOW) == []
    assert (versions_dir(outside) / "a" / "b.txt~20261125-101500").exists()


def test_prune_by_age_removes_old_versions_and_the_directories_they_leave_empty(
        tmp_path: Path) -> None:
    kept(tmp_path, "deep/er/f~20261125-090000")
    kept(tmp_path, "deep/g~20261125-095959")
    kept(tmp_path, "h~20261125-110000")

    removed = prune(tmp_path, 2 * HOUR, None, NOW)

    assert names(removed) == ["deep/er/f~20261125-090000", "deep/g~20261125-095959"]
    assert names(all_versions(tmp_path)) == ["h~20261125-110000"]
    assert sorted(p.name for p in versions_dir(tmp_path).iterdir()) == ["h~20261125-110000"]
    assert prune(tmp_path, HOUR, None, NOW) == []  # exactly one hour old is not older


def test_prune_by_size_removes_the_oldest_until_the_rest_fits(tmp_path: Path) -> None:
    kept(tmp_path, "a/f~20261125-100000-2", b"2" * 100)
    kept(tmp_path, "a/f~20261125-100000", b"1" * 100)
    kept(tmp_path, "g~20261125-100500", b"3" * 100)
    kept(tmp_path, "a/f~20261125-101000", b"4" * 100)

    removed = prune(tmp_path, None, 250, NOW)

    assert names(removed) == ["a/f~20261125-100000", "a/f~20261125-100000-2"]
    assert names(all_versions(tmp_path)) == ["g~20261125-100500", "a/f~20261125-101000"]
    assert (versions_dir(tmp_path) / "a").is_dir()  # still holds a version
    assert names(prune(tmp_path, None, 0, NOW)) == ["g~20261125-100500", "a/f~20261125-101000"]
    assert list(versions_dir(tmp_path).iterdir()) == []


def test_prune_by_age_then_size(tmp_path: Path) -> None:
    kept(tmp_path, "old~20261120-000000", b"o")
    kept(tmp_path, "f~20261125-110000", b"1" * 10)
    kept(tmp_path, "f~20261125-113000", b"2" * 10)

    removed = prune(tmp_path, 7 * 24 * HOUR, 0, NOW)

    assert names(removed) == ["old~20261120-000000", "f~20261125-110000", "f~20261125-113000"]
    kept(tmp_path, "old~20261120-000000", b"o")
    kept(tmp_path, "f~20261125-110000", b"1" * 10)
    kept(tmp_path, "f~20261125-113000", b"2" * 10)
    assert names(prune(tmp_path, 24 * HOUR, 15, NOW)) == ["old~20261120-000000",
                                                           "f~20261125-110000"]


def test_prune_without_limits_keeps_everything_and_refuses_negative_limits(
        tmp_path: Path) -> None:
    kept(tmp_path, "f~20000101-000000", b"x" * 1000)

    assert prune(tmp_path, None, None, NOW) == []
    with pytest.raises(ValueError, match="None means no limit"):
        prune(tmp_path, -1, None, NOW)
    with pytest.raises(ValueError, match="None means no limit"):
        prune(tmp_path, None, -1, NOW)
    assert names(all_versions(tmp_path)) == ["f~20000101-000000"]
    assert prune(tmp_path.parent / "nothing", 0, 0, NOW) == []


def test_pick_takes_the_newest_kept_at_or_before_the_time(tmp_path: Path) -> None:
    for name in ["f~20261125-100000", "f~20261125-100000-2", "f~20261125-110000"]:
        kept(tmp_path, name)
    versions = list_versions(tmp_path, RelPath("f"))

    assert pick(versions, None) == versions[2]
    assert pick(versions, at("20261125-110000")) == versions[2]
    assert pick(versions, at("20261125-105959")) == versions[1]
    assert pick(versions, at("20261125-095959")) is None
    assert pick([], None) is None


def test_parse_time_reads_kept_stamps_and_iso_forms(plus_one_hour_local_time: None) -> None:
    expected = datetime(2026, 11, 25, 10, 15, tzinfo=UTC)

    assert parse_time("20261125-101500") == expected
    assert parse_time("2026-11-25T10:15:00Z") == expected
    assert parse_time(" 2026-11-25T11:15:00+01:00 ") == expected
    assert parse_time("2026-11-25 11:15") == expected  # local time, UTC+1 here
    assert parse_time("2026-11-25T11:15:00") == expected
    for bad in ["yesterday", "", "20261325-101500", "2026-11-25T25:00"]:
        with pytest.raises(ValueError, match="not a time"):
            parse_time(bad)


def test_restore_of_a_deleted_file_makes_its_directories(tmp_path: Path) -> None:
    kept(tmp_path, f"a/b/f.txt~{KEPT}", b"old content", 0o751)
    (version,) = list_versions(tmp_path, RelPath("a/b/f.txt"))

    restore(tmp_path, version, keep_now(tmp_path))

    target = tmp_path / "a" / "b" / "f.txt"
    st = target.lstat()
    assert target.read_bytes() == b"old content"
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o751, MTIME)
    assert list_versions(tmp_path, RelPath("a/b/f.txt")) == [version]
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_restore_over_a_file_keeps_it_as_a_version_and_can_be_repeated(tmp_path: Path) -> None:
    kept(tmp_path, f"f.txt~{KEPT}", b"old content", 0o600)
    (tmp_path / "f.txt").write_bytes(b"current content")
    version = list_versions(tmp_path, RelPath("f.txt"))[0]

    restore(tmp_path, version, keep_now(tmp_path))

    after = list_versions(tmp_path, RelPath("f.txt"))
    assert after[0] == version
    assert len(after) == 2
    assert (tmp_path / after[1].kept).read_bytes() == b"current content"
    st = (tmp_path / "f.txt").lstat()
    assert (tmp_path / "f.txt").read_bytes() == b"old content"
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o600, MTIME)

    (tmp_path / "f.txt").write_bytes(b"edited after the restore")
    restore(tmp_path, version, keep_now(tmp_path))

    assert (tmp_path / "f.txt").read_bytes() == b"old content"
    assert (tmp_path / version.kept).read_bytes() == b"old content"
    assert len(list_versions(tmp_path, RelPath("f.txt"))) == 3
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_a_kept_symlink_is_restored_as_the_same_symlink(tmp_path: Path) -> None:
    link = versions_dir(tmp_path) / "d" / f"link~{KEPT}"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../../outside")
    os.utime(link, ns=(MTIME, MTIME), follow_symlinks=False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("current-target")
    (version,) = list_versions(tmp_path, RelPath("d/link"))

    restore(tmp_path, version, keep_now(tmp_path))

    restored = tmp_path / "d" / "link"
    assert restored.readlink() == Path("../../../outside")
    assert restored.lstat().st_mtime_ns == MTIME
    replaced = list_versions(tmp_path, RelPath("d/link"))[1]
    assert (tmp_path / replaced.kept).readlink() == Path("current-target")


def test_restore_refuses_a_directory_at_the_target(tmp_path: Path) -> None:
    kept(tmp_path, f"d~{KEPT}", b"a file once")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "inside").write_text("mine")
    (version,) = list_versions(tmp_path, RelPath("d"))
    calls: list[str] = []

    with pytest.raises(RestoreError, match="d is a directory"):
        restore(tmp_path, version, lambda fd, name, rel: calls.append(rel))

    assert calls == []
    assert (tmp_path / "d" / "inside").read_text() == "mine"
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


@pytest.mark.parametrize("path", ["a/f.txt", "a/new/f.txt"])
def test_restore_refuses_to_go_through_a_symlinked_directory(tmp_path: Path, path: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    kept(root, f"{path}~{KEPT}", b"old content")
    (root / "a").symlink_to(outside)
    (version,) = list_versions(root, RelPath(path))

    with pytest.raises((RestoreError, UnsafePath), match="symlink or a file"):
        restore(root, version, keep_now(root))

    assert list(outside.iterdir()) == []
    assert len(all_versions(root)) == 1


def test_restore_of_a_version_no_longer_kept_says_so(tmp_path: Path) -> None:
    path = kept(tmp_path, f"f~{KEPT}")
    (version,) = list_versions(tmp_path, RelPath("f"))
    path.unlink()

    with pytest.raises(RestoreError, match="no longer kept"):
        restore(tmp_path, version, keep_now(tmp_path))

    assert not (tmp_path / "f").exists()
