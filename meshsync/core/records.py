"""File records: one version of one path (content as block hashes, metadata, version vector)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _quoted  # a string as json.dumps writes it
from typing import Any, TypeGuard

from meshsync.core.errors import WireError
from meshsync.core.fields import check_digest, check_int, is_unicode
from meshsync.core.ids import short_of_key
from meshsync.core.paths import RelPath, check_path
from meshsync.core.vclock import Vector

BLOCK_SIZE = 128 * 1024
MAX_SIZE = 2**53
MAX_TARGET = 4095  # bytes of UTF-8: the most a Linux symlink holds (PATH_MAX less its NUL)
_KEY_DIGITS = frozenset("0123456789abcdef")  # an origin is a `NodeId.key`, as in vectors


class Kind(StrEnum):
    """What a path is."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


# What a scan compares with the disk: the metadata that, unchanged, means the content is too
# (a directory's mtime moves with every entry, and a link's mode means nothing on Linux).
Stamp = tuple[object, ...]


def stamp(kind: Kind, size: int, mode: int, mtime_ns: int, target: str, inode: int) -> Stamp:
    """The stamp of a path of this kind and metadata, on disk at `inode`."""
    if kind is Kind.FILE:
        return (kind, inode, size, mtime_ns, mode)
    return (kind, inode, mode) if kind is Kind.DIR else (kind, inode, target)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One version of one path. A deleted path keeps its record as a tombstone."""

    path: RelPath
    kind: Kind
    version: Vector
    origin: str  # `NodeId.key` of the node that made this version
    deleted: bool = False
    size: int = 0
    mode: int = 0o644  # permission bits only (no setuid, setgid or sticky)
    mtime_ns: int = 0
    blocks: tuple[bytes, ...] = ()  # SHA-256 of each BLOCK_SIZE block, in order
    target: str = ""  # a symlink's target, as the link holds it
    # `NodeId.key` of the node that made the content, when another node published this version
    # (a resolution carries its winner's content); "" when the origin made it.
    author: str = ""

    @property
    def made_by(self) -> str:
        """The node that made this content: its author, else its origin."""
        return self.author or self.origin

    def same_content(self, other: FileRecord) -> bool:
        """Whether both are the same bytes, link or directory (metadata aside)."""
        return (self.kind, self.deleted, self.blocks, self.target, self.size) == (
            other.kind, other.deleted, other.blocks, other.target, other.size)

    def same_metadata(self, other: FileRecord) -> bool:
        """Whether content, mode and mtime all agree: nothing on disk would change."""
        return self.same_content(other) and (self.mode, self.mtime_ns) == (
            other.mode, other.mtime_ns)

    def tombstone(self, version: Vector, origin: str) -> FileRecord:
        """This path deleted, as a new version."""
        return replace(self, version=version, origin=origin, deleted=True, size=0, blocks=(),
                       target="", author="")

    def brief(self) -> str:
        """One line for a debug log: kind (or deletion) and size, version, origin and author,
        each node by its short ID."""
        what = "deleted" if self.deleted else (
            f"file of {self.size} bytes" if self.kind is Kind.FILE else self.kind.value)
        counters = ",".join(f"{short_of_key(k)}:{v % 10000}"
                            for k, v in sorted(self.version.counters))
        by = f" by {short_of_key(self.author)}" if self.author else ""
        return f"{what} [{counters}] from {short_of_key(self.origin)}{by}"

    def to_json(self) -> dict[str, Any]:
        """The wire form; `author` only when there is one, so older records sign as they did."""
        data: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind.value,
            "version": self.version.to_json(),
            "origin": self.origin,
            "deleted": self.deleted,
            "size": self.size,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "blocks": [b.hex() for b in self.blocks],
            "target": self.target,
        }
        if self.author:
            data["author"] = self.author
        return data

    def canonical(self, folder: str) -> bytes:
        """The bytes the origin signs: the record in one fixed form, bound to its folder.

        That form is `json.dumps([folder, self.to_json()], sort_keys=True, separators=(",",
        ":"))`, written out here at a third of the cost (1.85 µs a record, not 5.8): every
        record is signed once and checked by every member it reaches.
        """
        author = f'"author":{_quoted(self.author)},' if self.author else ""
        blocks = ",".join([f'"{b.hex()}"' for b in self.blocks])
        version = ",".join([f"{_quoted(k)}:{v}" for k, v in sorted(self.version.counters)])
        return (f'[{_quoted(folder)},{{{author}"blocks":[{blocks}],"deleted":'
                f'{"true" if self.deleted else "false"},"kind":{_quoted(self.kind.value)},'
                f'"mode":{self.mode},"mtime_ns":{self.mtime_ns},"origin":{_quoted(self.origin)},'
                f'"path":{_quoted(self.path)},"size":{self.size},"target":{_quoted(self.target)},'
                f'"version":{{{version}}}}}]').encode()

    @classmethod
    def from_json(cls, data: object) -> FileRecord:
        """Parse and validate a peer's record; WireError says what is wrong."""
        if not isinstance(data, dict):
            raise WireError("a record must be an object")
        try:
            kind = Kind(str(data.get("kind")))
        except ValueError:
            raise WireError(f"bad kind {str(data.get('kind'))[:20]!r}") from None
        deleted = data.get("deleted")
        origin = data.get("origin")
        author = data.get("author", "")
        target = data.get("target", "")
        blocks = data.get("blocks", [])
        if not isinstance(deleted, bool):
            raise WireError("deleted must be true or false")
        if not _is_key(origin):
            raise WireError("bad origin")
        # One spelling per record: an author is named only when it is not the origin.
        if "author" in data and (not _is_key(author) or author == origin):
            raise WireError("bad author")
        if (not isinstance(target, str) or len(target) > MAX_TARGET or "\0" in target
                or not is_unicode(target) or len(target.encode()) > MAX_TARGET):
            raise WireError("bad symlink target")
        size = check_int(data, "size", 0, MAX_SIZE)
        if not isinstance(blocks, list) or len(blocks) != _block_count(kind, deleted, size):
            raise WireError("blocks do not match the size")
        record = cls(
            path=check_path(data.get("path")),
            kind=kind,
            version=Vector.from_json(data.get("version")),
            origin=origin,
            deleted=deleted,
            size=size,
            mode=check_int(data, "mode", 0, 0o777),
            mtime_ns=check_int(data, "mtime_ns", -(2**62), 2**62),
            blocks=tuple(check_digest(b) for b in blocks),
            target=target,
            author=author,
        )
        if kind is not Kind.SYMLINK and target:
            raise WireError("only a symlink has a target")
        if not record.version.counters:
            raise WireError("a record needs a version")
        return record


def _is_key(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == 16 and _KEY_DIGITS.issuperset(value)


def block_count(size: int) -> int:
    """How many blocks a file of `size` bytes has (an empty file has none)."""
    return -(-size // BLOCK_SIZE)


def _block_count(kind: Kind, deleted: bool, size: int) -> int:
    if kind is not Kind.FILE or deleted:
        if size:
            raise WireError("only a file that exists has a size")
        return 0
    return block_count(size)
