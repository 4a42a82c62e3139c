"""Paths inside a folder: every path a peer sends is checked here before it touches a disk."""

from __future__ import annotations

from typing import NewType

from meshsync.core.errors import WireError

RelPath = NewType("RelPath", str)

MARKER = ".meshsync"
TEMP_PREFIX = ".meshsync-tmp-"
MAX_PATH_BYTES = 4000
MAX_NAME_BYTES = 255


def check_path(text: object) -> RelPath:
    """A relative path with `/` separators, no `.`/`..`/empty parts, NUL, or the marker tree.

    WireError says what is wrong. Escapes through symlinks inside the folder are the
    writer's to refuse: this function cannot see the disk.
    """
    if not isinstance(text, str) or not text:
        raise WireError("a path must be a non-empty string")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise WireError(f"path is not valid Unicode: {text[:80]!r}") from None
    if size > MAX_PATH_BYTES:
        raise WireError(f"path longer than {MAX_PATH_BYTES} bytes: {text[:80]!r}…")
    if "\0" in text:
        raise WireError(f"path contains NUL: {text[:80]!r}")
    if text.startswith("/"):
        raise WireError(f"path is absolute: {text[:80]!r}")
    parts = text.split("/")
    if "" in parts or "." in parts or ".." in parts:
        raise WireError(f"path has an empty, '.' or '..' part: {text[:80]!r}")
    # A name can be too long only in a path that long: most paths skip the look at each.
    if size > MAX_NAME_BYTES and any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        raise WireError(f"path has a name longer than {MAX_NAME_BYTES} bytes: {text[:80]!r}")
    # The scanner skips a temporary name at any depth, directories included.
    if parts[0] == MARKER or (TEMP_PREFIX in text and any(map(is_temporary, parts))):
        raise WireError(f"path is meshsync's own: {text[:80]!r}")
    return RelPath(text)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of meshsync's temporary files."""
    return name.startswith(TEMP_PREFIX)


def parent(path: RelPath) -> RelPath | None:
    """The parent directory, None at the top."""
    head, sep, _ = path.rpartition("/")
    return RelPath(head) if sep else None
