"""Kept versions: listing, pruning and restoring what sync moved to .meshsync/versions."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from meshsync.core.errors import WireError
from meshsync.core.paths import MARKER, TEMP_PREFIX, RelPath, check_path
from meshsync.core.records import Kind
from meshsync.fs.apply import KeepOld
from meshsync.fs.scan import PERMISSIONS, UnsafePath, directory, open_file, parent, seen_at

VERSIONS = f"{MARKER}/versions"
_STAMP = "%Y%m%d-%H%M%S"
# A kept name is <name>~YYYYMMDD-HHMMSS, then -2, -3, … when that name was taken.
_KEPT = re.compile(r"(.+)~([0-9]{8}-[0-9]{6})(?:-([1-9][0-9]*))?", re.DOTALL)


class RestoreError(Exception):
    """A version cannot be put back: the message says why."""


@dataclass(frozen=True, slots=True)
class Version:
    """One kept copy of a synced path; `kept` is relative to the folder root."""

    path: RelPath
    kept: str
    when: datetime  # UTC, from the kept name
    size: int  # 0 for a kept symlink

    def to_json(self) -> dict[str, str | int]:
        """The version as the control protocol shows it."""
        time = self.when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"path": self.path, "kept": self.kept, "time": time, "size": self.size}


# A version with what orders it: when kept, then the -N suffix, then the path.
_Keyed = tuple[tuple[datetime, int, str], Version]


def list_versions(root: Path, path: RelPath) -> list[Version]:
    """The kept versions of `path`, oldest first."""
    keyed, _ = _listing(root, path.rpartition("/")[0])
    return _sorted([(key, version) for key, version in keyed if version.path == path])


def all_versions(root: Path) -> list[Version]:
    """Every kept version in the folder, oldest first, links never followed."""
    keyed, pending = _listing(root, "")
    while pending:
        more, dirs = _listing(root, pending.pop())
        keyed += more
        pending += dirs
    return _sorted(keyed)


def prune(root: Path, max_age: float | None, max_bytes: int | None,
          now: datetime) -> list[Version]:
    """Remove versions older than max_age seconds, then oldest ones down to max_bytes in all.

    None means no limit for that bound (a negative one is a ValueError); directories left
    empty go too. Returns the versions removed.
    """
    if (max_age or 0) < 0 or (max_bytes or 0) < 0:
        raise ValueError("max_age and max_bytes cannot be negative (None means no limit)")
    kept = all_versions(root)
    total = sum(version.size for version in kept)
    removed = []
    for version in kept:
        too_old = max_age is not None and (now - version.when).total_seconds() > max_age
        if not too_old and (max_bytes is None or total <= max_bytes):
            break  # oldest first: every later one is young enough and fits
        total -= version.size
        with suppress(FileNotFoundError, UnsafePath), parent(root, version.kept) as (fd, name):
            os.unlink(name, dir_fd=fd)
            removed.append(version)
    _remove_empty_dirs(root, removed)
    return removed


def pick(versions: list[Version], at: datetime | None) -> Version | None:
    """The newest of `versions` (oldest first) kept at or before `at`; None: the newest."""
    candidates = [version for version in versions if at is None or version.when <= at]
    return candidates[-1] if candidates else None


def parse_time(text: str) -> datetime:
    """A UTC time from YYYYMMDD-HHMMSS (UTC) or ISO 8601 (without a zone: local time)."""
    text = text.strip()
    try:
        if re.fullmatch(r"[0-9]{8}-[0-9]{6}", text):
            return datetime.strptime(text, _STAMP).replace(tzinfo=UTC)
        return datetime.fromisoformat(text).astimezone(UTC)  # naive is taken as local time
    except ValueError:
        raise ValueError(f"not a time: {text!r} (try 20261125-101500 or "
                         "2026-11-25T10:15:00Z)") from None


def restore(root: Path, version: Version, keep_old: KeepOld) -> None:
    """Atomically put a copy of `version` at its path, handing what is there to keep_old first."""
    st, source = _open_kept(root, version)
    try:
        with parent(root, version.path, create=True) as (dir_fd, name):
            current = seen_at(version.path, name, dir_fd)
            if current is not None and current.kind is Kind.DIR:
                raise RestoreError(f"{version.path} is a directory: move it away first")
            temp = TEMP_PREFIX + secrets.token_hex(8)
            try:
                _write_copy(dir_fd, temp, st, source)
                if current is not None:
                    keep_old(dir_fd, name, version.path)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=dir_fd)
                raise
            os.fsync(dir_fd)
    except UnsafePath as e:
        raise RestoreError(f"cannot restore {version.path}: {e}") from None
    finally:
        if isinstance(source, int):
            os.close(source)


def _listing(root: Path, sub: str) -> tuple[list[_Keyed], list[str]]:
    """The versions directly in versions/<sub> and its subdirectories; none if not a directory."""
    keyed: list[_Keyed] = []
    dirs: list[str] = []
    with suppress(FileNotFoundError, UnsafePath), \
            directory(root, f"{VERSIONS}/{sub}" if sub else VERSIONS) as fd, \
            os.scandir(fd) as entries:
        for entry in entries:
            rel = f"{sub}/{entry.name}" if sub else entry.name
            if entry.is_dir(follow_symlinks=False):
                dirs.append(rel)
            elif (found := _parse(rel, entry)) is not None:
                keyed.append(found)
    return keyed, dirs


def _parse(rel: str, entry: os.DirEntry[str]) -> _Keyed | None:
    match = _KEPT.fullmatch(rel)
    if match is None:
        return None
    try:
        path = check_path(match[1])
        when = datetime.strptime(match[2], _STAMP).replace(tzinfo=UTC)
        st = entry.stat(follow_symlinks=False)
    except (WireError, ValueError, FileNotFoundError):
        return None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return None
    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return (when, int(match[3] or 1), path), Version(path, f"{VERSIONS}/{rel}", when, size)


def _sorted(keyed: list[_Keyed]) -> list[Version]:
    return [version for _, version in sorted(keyed, key=lambda pair: pair[0])]


def _remove_empty_dirs(root: Path, removed: list[Version]) -> None:
    for version in removed:
        sub = version.kept.rpartition("/")[0]
        while sub != VERSIONS:
            try:
                with parent(root, sub) as (fd, name):
                    os.rmdir(name, dir_fd=fd)
            except (OSError, UnsafePath):
                break  # not empty, so neither is any directory above it
            sub = sub.rpartition("/")[0]


def _open_kept(root: Path, version: Version) -> tuple[os.stat_result, int | str]:
    """The kept copy's stat and a read-only fd of it, or its target if it is a symlink."""
    try:
        with parent(root, version.kept) as (fd, name):
            st = os.lstat(name, dir_fd=fd)
            if stat.S_ISLNK(st.st_mode):
                return st, os.readlink(name, dir_fd=fd)
            source = open_file(name, fd)
    except (FileNotFoundError, UnsafePath):
        raise RestoreError(f"{version.kept} is no longer kept") from None
    st = os.fstat(source)
    if not stat.S_ISREG(st.st_mode):
        os.close(source)
        raise RestoreError(f"{version.kept} is not a file or a symlink")
    return st, source


def _write_copy(dir_fd: int, temp: str, st: os.stat_result, source: int | str) -> None:
    """Make `temp` a copy of the kept file (an fd) or link (its target), mode and mtime too."""
    times = (st.st_mtime_ns, st.st_mtime_ns)
    if isinstance(source, str):
        os.symlink(source, temp, dir_fd=dir_fd)
        os.utime(temp, ns=times, dir_fd=dir_fd, follow_symlinks=False)
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
    try:
        with open(source, "rb", closefd=False) as src, open(fd, "wb", closefd=False) as dst:
            shutil.copyfileobj(src, dst)
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & PERMISSIONS)
        os.utime(fd, ns=times)
        os.fsync(fd)
    finally:
        os.close(fd)
