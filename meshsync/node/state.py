"""The state directory is private: its key, index, trust list and socket are this user's alone,
and one node at a time holds it."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any

from meshsync.core.errors import MeshsyncError
from meshsync.core.throttle import shown

# The bits beyond 0700 for the directory and 0600 for what is in it: none may stay (as OpenSSH's
# StrictModes wants of ~/.ssh). Bits are only taken away: a 0444 file becomes 0400, not 0600.
_LOOSE_DIR = 0o7077
_LOOSE_FILE = 0o7177


class AlreadyRunning(Exception):
    """Another node holds this state directory."""


def secure_state_dir(path: Path) -> list[str]:
    """Create `path` 0700, or tighten it to 0700 and the files and sockets in it to 0600.

    Only what lies directly in it is looked at; links are left alone, never followed. Returns
    what was tightened, as `index.db 0644→0600` (`.` for the directory itself), for the caller
    to log in one line.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tightened = []
        mode = os.fstat(fd).st_mode
        if mode & _LOOSE_DIR:
            try:
                os.fchmod(fd, stat.S_IMODE(mode) & ~_LOOSE_DIR)
            except PermissionError:
                raise _not_ours(path) from None
            tightened.append(_change(".", mode, _LOOSE_DIR))
        # The directory is this user's alone from here: nobody else can swap an entry for a
        # link between the look below and the chmod.
        with os.scandir(fd) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                mode = entry.stat(follow_symlinks=False).st_mode
                if (stat.S_ISREG(mode) or stat.S_ISSOCK(mode)) and mode & _LOOSE_FILE:
                    _chmod(fd, entry.name, stat.S_IMODE(mode) & ~_LOOSE_FILE, path)
                    tightened.append(_change(entry.name, mode, _LOOSE_FILE))
        return tightened
    finally:
        os.close(fd)


def _chmod(dir_fd: int, name: str, mode: int, directory: Path) -> None:
    try:
        try:
            os.chmod(name, mode, dir_fd=dir_fd, follow_symlinks=False)
        except NotImplementedError:
            # This C library cannot refuse a link here; the entry was no link a moment ago,
            # and only this user can have changed it since.
            os.chmod(name, mode, dir_fd=dir_fd)
    except PermissionError:
        raise _not_ours(directory / name) from None


def _not_ours(path: Path) -> MeshsyncError:
    owner = path.lstat().st_uid
    return MeshsyncError(f"{shown(path, None)} belongs to another user (uid {owner}) and is open"
                         f" to others: chown it to this user (uid {os.geteuid()}), or set"
                         " MESHSYNC_HOME to a directory of your own")


def _change(name: str, mode: int, loose: int) -> str:
    before = stat.S_IMODE(mode)
    return f"{shown(name, None)} {before:04o}→{before & ~loose:04o}"


def hold_state_dir(state: Path) -> Any:
    """Hold the state directory for this process; AlreadyRunning if another node holds it."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    handle = os.fdopen(os.open(state / "node.lock", flags, 0o600), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(f"a meshsync node is already running with state in {state}") from None
    os.set_inheritable(handle.fileno(), False)
    return handle
