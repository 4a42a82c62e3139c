"""Conflict copies: the losing side of two concurrent edits, kept beside the winner.

The copy's name is a pure function of the losing version (its mtime and the short ID of the
node that made it), so every node that held the loser makes the same copy: they settle as one
file, never as several.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from meshsync.core.ids import short_of_key
from meshsync.core.paths import MAX_NAME_BYTES, RelPath

MARK = ".sync-conflict-"
_STAMP = "%Y%m%d-%H%M%S"
# The origin is the node's short ID; copies named before that hold 7 hex digits of its key.
_COPY = re.compile(
    r"(?P<stem>.+)\.sync-conflict-(?P<stamp>\d{8}-\d{6})-"
    r"(?P<origin>[0-9a-f]{7}|[A-Za-z0-9+_]{8})(?:-(?P<tag>[0-9a-f]{8}))?(?P<ext>\.[^.]*)?")


@dataclass(frozen=True, slots=True)
class Copy:
    """A conflict copy found in a folder, and what its name says."""

    path: RelPath
    original: RelPath
    when: datetime  # the losing version's mtime, UTC, to the second
    origin: str  # the short ID of the losing version's origin (or 7 hex digits of its key)
    tagged: bool = False  # named with its content too (a second loser of one node and second)


def copy_path(path: RelPath, mtime_ns: int, origin: str, tag: str = "") -> RelPath:
    """`dir/NAME.sync-conflict-YYYYMMDD-HHMMSS-<short id>.EXT` for the loser at `path`, made
    by the node whose vector key is `origin`.

    The time is the loser's mtime in UTC (not the moment of the conflict), so that every
    node names it alike. A name too long for the file system loses the end of its stem.
    `tag` (8 hex digits of the loser's content) tells apart two losers of one node and
    second, which would otherwise share a name: `…-<short id>-<tag>.EXT`.
    """
    return _named(path, mtime_ns, short_of_key(origin), tag)


def _named(path: RelPath, mtime_ns: int, origin: str, tag: str = "") -> RelPath:
    """The copy name, with `origin` as the name holds it."""
    head, _, name = path.rpartition("/")
    stem, ext = _split(name)
    try:
        stamp = datetime.fromtimestamp(mtime_ns / 1e9, UTC).strftime(_STAMP)
    except (OverflowError, ValueError, OSError):  # an mtime no calendar holds
        stamp = "00000000-000000"
    suffix = f"{MARK}{stamp}-{origin}{f'-{tag}' if tag else ''}{ext}"
    room = MAX_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:room].decode(errors="ignore")
    return RelPath(f"{head}/{stem}{suffix}" if head else f"{stem}{suffix}")


def names_for(path: RelPath, mtime_ns: int, origin: str, tag: str) -> list[RelPath]:
    """Where to keep a losing edit of `path` (made by `origin` at `mtime_ns`, content `tag`),
    in order of preference; the first free one is taken.

    The plain copy name, else (taken by another loser of that node and second) the name
    tagged with its content. Nodes can see two such losers in either order, so two versions
    of one plain copy name may meet: the losing one goes to its tagged name, which every node
    holding it picks alike. A tagged copy is kept as no copy (its content is in its name: only
    a user's edit of it differs).
    """
    copy = parse(path)
    if copy is None:
        return [copy_path(path, mtime_ns, origin), copy_path(path, mtime_ns, origin, tag)]
    if copy.tagged:
        return []
    return [_named(copy.original, int(copy.when.timestamp()) * 10**9, copy.origin, tag)]


def parse(path: str) -> Copy | None:
    """What a conflict copy's name says, or None if `path` is not one."""
    head, _, name = path.rpartition("/")
    found = _COPY.fullmatch(name)
    if found is None:
        return None
    try:
        when = datetime.strptime(found["stamp"], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        when = datetime.fromtimestamp(0, UTC)
    original = found["stem"] + (found["ext"] or "")
    return Copy(RelPath(path), RelPath(f"{head}/{original}" if head else original), when,
                found["origin"], found["tag"] is not None)


def is_copy(path: str) -> bool:
    """Whether `path` is a conflict copy."""
    return parse(path) is not None


def _split(name: str) -> tuple[str, str]:
    """(stem, extension with its dot); a leading dot starts no extension (`.bashrc`)."""
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if dot > 0 else (name, "")
