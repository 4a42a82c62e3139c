"""The peer messages and their validation: every byte a peer sends is checked here first."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, NewType, TypeGuard

from meshsync.core.errors import WireError
from meshsync.core.fields import check_digest, check_int, is_unicode
from meshsync.core.ids import NodeId
from meshsync.core.keyblob import check_key
from meshsync.core.lists import LIST_INLINE, Patch, list_digest, rebuilt
from meshsync.core.records import BLOCK_SIZE, MAX_SIZE, FileRecord, Kind, block_count

FolderId = NewType("FolderId", str)

# Room for the largest hello the limits below allow: 256 folder IDs of 255 bytes, which JSON's
# escapes (`\u0001`) make up to six times as long, 32 member addresses (some 4 KiB) and 64
# member keys (90 KiB as 8192-bit RSA keys).
MAX_HELLO_BYTES = 512 * 1024
MAX_INDEX_REQUEST_BYTES = 4096
MAX_BLOCK_REQUEST_BYTES = 256 * 1024
MAX_FOLDERS = 256
MAX_NAME = 64
MAX_MEMBER_ADDRESSES = 32  # members a hello tells of (where they listen)
MAX_MEMBER_KEYS = 64  # members' keys a hello tells of (for a node that made it its introducer)
MAX_ADDRESS = 47  # `[IPv6]:port` at its longest
MAX_BATCH_RECORDS = 2000
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BLOCKS_PER_REQUEST = 64  # 8 MiB of 128 KiB blocks: the most one answer holds in memory
MAX_SEQ = 2**63 - 1  # the largest integer SQLite stores, and the index stores every seq
MAX_RELAYED = 1024  # members a coordinator's beat names as live
MAX_BEAT_BYTES = 64 * 1024  # the largest beat: MAX_RELAYED IDs of ~52 bytes, and the rest
GIST_CHARS = 16  # hex digits of a hello's gist


def is_node_name(text: object) -> TypeGuard[str]:
    """Whether `text` is a name a node may go by: 1 to MAX_NAME printable characters (the
    name a hello carries, `--name`, a TLS certificate's subject)."""
    return isinstance(text, str) and 0 < len(text) <= MAX_NAME and text.isprintable()


def check_folder_id(text: object) -> FolderId:
    """A folder ID is a base name: non-empty, at most 255 bytes, no `/`, NUL, `.` or `..`."""
    if (
        not isinstance(text, str)
        or not text
        or len(text.encode(errors="surrogatepass")) > 255
        or "/" in text
        or "\0" in text
        or text in (".", "..")
        or not is_unicode(text)  # JSON's lone surrogates: no file name
    ):
        raise WireError(f"bad folder ID: {text!r}")
    return FolderId(text)


def check_address(text: object) -> str:
    """`IP:PORT` as nodes write where they listen: an IP address in its one canonical spelling
    (IPv6 in brackets), and a port from 1 to 65535."""
    if not isinstance(text, str) or len(text) > MAX_ADDRESS or not text.isascii():
        raise WireError(f"bad address (not IP:PORT): {str(text)[:80]!r}")
    host, _, port = text.rpartition(":")
    bracketed = host[:1] == "[" and host[-1:] == "]"
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise WireError(f"bad address (not IP:PORT): {text!r}") from None
    # One spelling per address (no leading zeros, no zone, IPv4 not dressed as IPv6), the same
    # on every Python: the roster and the hints find an address by its text.
    canonical = str(ip) == host.strip("[]") and "%" not in host and not (
        isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped)
    if (not canonical or bracketed != (ip.version == 6) or not port.isdigit()
            or port != str(int(port)) or not 0 < int(port) < 65536):
        raise WireError(f"bad address (not IP:PORT): {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class MemberAddress:
    """Where a member the sender knows listens, by that member's own word to it."""

    id: NodeId
    address: str

    def to_json(self) -> dict[str, str]:
        """The wire form."""
        return {"id": str(self.id), "address": self.address}

    @classmethod
    def from_json(cls, data: object) -> MemberAddress:
        """Parse one entry; WireError if bad."""
        if not isinstance(data, dict):
            raise WireError("a member address must be an object")
        return cls(_node_id(data.get("id")), check_address(data.get("address")))


STATES = frozenset({"scanning", "syncing", "held back", "in sync", "unmounted"})
MAX_FOLDER_BYTES = 2**62


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a node is with one folder it shares, by its own word: for others' status."""

    folder: FolderId
    state: str  # one of STATES
    need_files: int
    need_bytes: int
    have_bytes: int  # of what it holds on disk
    seq: int = -1  # the last seq of its index for the folder (-1: not said); read to skip
    # a catch-up that would find nothing new

    @property
    def percent(self) -> int:
        """Syncthing's completion: the share of the folder's bytes it holds, 100 when it needs
        nothing."""
        if not self.need_files:
            return 100
        return min(99, self.have_bytes * 100 // max(1, self.have_bytes + self.need_bytes))

    def to_json(self, at: Mapping[FolderId, int]) -> dict[str, object]:
        """The wire form: the folder by its place `at` in the hello's sorted folders (an ID can
        take 1.5 KB of JSON, and a hello names up to 256)."""
        data: dict[str, object] = {
            "folder": at[self.folder], "state": self.state, "need_files": self.need_files,
            "need_bytes": self.need_bytes, "have_bytes": self.have_bytes}
        if self.seq >= 0:
            data["seq"] = self.seq
        return data

    @classmethod
    def from_json(cls, data: object, folders: list[FolderId]) -> Progress:
        """Parse one entry of a hello naming `folders` (sorted); WireError if bad."""
        if not isinstance(data, dict):
            raise WireError("a folder's progress must be an object")
        state = data.get("state")
        if state not in STATES:
            raise WireError(f"bad folder state {str(state)[:20]!r}")
        at = check_int(data, "folder", 0, len(folders) - 1) if folders else -1
        if at < 0:
            raise WireError("progress of a folder the hello does not name")
        return cls(folders[at], str(state),
                   check_int(data, "need_files", 0, MAX_FOLDER_BYTES),
                   check_int(data, "need_bytes", 0, MAX_FOLDER_BYTES),
                   check_int(data, "have_bytes", 0, MAX_FOLDER_BYTES),
                   check_int(data, "seq", 0, MAX_SEQ) if "seq" in data else -1)


@dataclass(frozen=True, slots=True)
class Hello:
    """What a node says of itself: sent on discovery and as every heartbeat, answered in kind."""

    name: str
    port: int
    folders: frozenset[FolderId]
    term: int
    coordinator: NodeId | None
    leaving: bool = False
    hears_coordinator: bool = False  # it heard its coordinator itself within DOWN_AFTER
    members: tuple[MemberAddress, ...] = ()  # where online members it trusts listen
    # Keys it trusts of members sharing a folder with us; None: it says nothing of them (a
    # goodbye, a node just started or one that predates introducers).
    member_keys: tuple[bytes, ...] | None = None
    progress: tuple[Progress, ...] = ()  # of the folders it shares with us

    @property
    def gist(self) -> str:
        """A short digest of what this hello tells that its recipient keeps: not whether its
        sender hears the coordinator, nor the order of its members. Beats carry it, so that
        a node whose hellos cannot reach a peer is asked for them instead."""
        kept = replace(self, hears_coordinator=False, members=tuple(sorted(
            self.members, key=lambda m: (m.id.digest, m.address))))
        return hashlib.sha256(kept.to_json()).hexdigest()[:GIST_CHARS]

    def to_json(self) -> bytes:
        """The message body."""
        data = {
            "name": self.name,
            "port": self.port,
            "folders": sorted(self.folders),
            "term": self.term,
            "coordinator": str(self.coordinator) if self.coordinator else None,
            "leaving": self.leaving,
            "hears_coordinator": self.hears_coordinator,
            "members": [m.to_json() for m in self.members],
        }
        if self.progress:
            at = {f: i for i, f in enumerate(sorted(self.folders))}
            data["progress"] = [p.to_json(at) for p in self.progress]
        if self.member_keys is not None:
            data["member_keys"] = [base64.b64encode(k).decode() for k in self.member_keys]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Hello:
        """Parse and validate a peer's hello; WireError says what is wrong."""
        data = _object(body, MAX_HELLO_BYTES)
        name = data.get("name")
        if not is_node_name(name):
            raise WireError(f"bad name: {str(name)[:80]!r}")
        folders = data.get("folders")
        if not isinstance(folders, list) or len(folders) > MAX_FOLDERS:
            raise WireError("folders must be a list of at most 256 folder IDs")
        coordinator = data.get("coordinator")
        leaving = data.get("leaving", False)
        if not isinstance(leaving, bool):
            raise WireError("leaving must be true or false")
        hears = data.get("hears_coordinator", False)
        if not isinstance(hears, bool):
            raise WireError("hears_coordinator must be true or false")
        members = data.get("members", [])
        if not isinstance(members, list) or len(members) > MAX_MEMBER_ADDRESSES:
            raise WireError(f"members must be a list of at most {MAX_MEMBER_ADDRESSES}")
        progress = data.get("progress", [])
        if not isinstance(progress, list) or len(progress) > MAX_FOLDERS:
            raise WireError(f"progress must be a list of at most {MAX_FOLDERS}")
        keys = data.get("member_keys")
        if keys is not None and (not isinstance(keys, list) or len(keys) > MAX_MEMBER_KEYS):
            raise WireError(f"member_keys must be a list of at most {MAX_MEMBER_KEYS}")
        ids = frozenset(check_folder_id(f) for f in folders)
        return cls(
            name=name,
            port=check_int(data, "port", 1, 65535),
            folders=ids,
            term=check_int(data, "term", 0, 2**53),
            coordinator=None if coordinator is None else _node_id(coordinator),
            leaving=leaving,
            hears_coordinator=hears,
            members=tuple(MemberAddress.from_json(m) for m in members),
            member_keys=None if keys is None else tuple(check_key(k) for k in keys),
            progress=_progress(progress, sorted(ids)),
        )


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat on the link between a member and its coordinator: the sender's view of the
    mesh, and from a coordinator the members it hears itself (None: the same as in its last
    beat on this link)."""

    term: int
    coordinator: NodeId | None
    hears_coordinator: bool = False
    up: tuple[NodeId, ...] | None = None
    said: str = ""  # `Hello.gist` of the hello the sender would send us now ("": unsaid)

    def to_json(self) -> str:
        """The frame's text."""
        data: dict[str, object] = {
            "term": self.term,
            "coordinator": str(self.coordinator) if self.coordinator else None,
            "hears": self.hears_coordinator,
        }
        if self.said:
            data["said"] = self.said
        if self.up is not None:
            data["up"] = [str(p) for p in self.up]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Beat:
        """Parse and validate a peer's beat; WireError says what is wrong."""
        data = _object(text.encode(errors="surrogatepass") if isinstance(text, str) else text,
                       MAX_BEAT_BYTES)
        coordinator = data.get("coordinator")
        hears = data.get("hears", False)
        if not isinstance(hears, bool):
            raise WireError("hears must be true or false")
        up = data.get("up")
        if up is not None and (not isinstance(up, list) or len(up) > MAX_RELAYED):
            raise WireError(f"up must be a list of at most {MAX_RELAYED} node IDs")
        said = data.get("said", "")
        if not isinstance(said, str) or len(said) > GIST_CHARS or not _is_hex(said):
            raise WireError(f"said must be at most {GIST_CHARS} lowercase hex digits")
        return cls(
            term=check_int(data, "term", 0, 2**53),
            coordinator=None if coordinator is None else _node_id(coordinator),
            hears_coordinator=hears,
            up=None if up is None else tuple(_node_id(p) for p in up),
            said=said,
        )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _progress(entries: list[Any], folders: list[FolderId]) -> tuple[Progress, ...]:
    progress = tuple(Progress.from_json(p, folders) for p in entries)
    if len({p.folder for p in progress}) != len(progress):
        raise WireError("progress names a folder twice")
    return progress


def _object(body: bytes, limit: int) -> dict[str, Any]:
    if len(body) > limit:
        raise WireError(f"message too large ({len(body)} bytes, limit {limit})")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or syntax, 4300+ digits, deep nesting
        raise WireError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise WireError("message must be a JSON object")
    return data




def _node_id(text: object) -> NodeId:
    if not isinstance(text, str):
        raise WireError("a node ID must be a string")
    try:
        return NodeId.parse(text)
    except ValueError as e:
        raise WireError(str(e)) from None


class Lists(Enum):
    """How the long block lists of a batch travel."""

    WHOLE = "whole"  # every list whole
    PATCHES = "patches"  # as a patch where the record has one (a notice of a change)
    DIGESTS = "digests"  # as their digest (and any patch): an index page, whose reader mostly
                         # holds them already; one it does not hold, it asks for whole


@dataclass(frozen=True, slots=True)
class Signed:
    """A record with its origin's SSHSIG over `record.canonical(folder)`; `patch`, when known,
    is how its list changed from the version before (a notice sends that, not the list)."""

    record: FileRecord
    signature: bytes
    patch: Patch | None = field(default=None, compare=False)

    def to_json(self, lists: Lists = Lists.WHOLE) -> dict[str, Any]:
        """The wire form: a long list whole, or (as `lists` says) its digest and any patch."""
        record = self.record.to_json()
        data: dict[str, Any] = {"record": record,
                                "signature": base64.b64encode(self.signature).decode()}
        blocks = self.record.blocks
        if len(blocks) > LIST_INLINE and (
                lists is Lists.DIGESTS or (lists is Lists.PATCHES and self.patch is not None)):
            del record["blocks"]
            listed: dict[str, Any] = {"digest": list_digest(blocks).hex()}
            if self.patch is not None:
                listed["patch"] = self.patch.to_json()
            data["list"] = listed
        return data

    @classmethod
    def from_json(cls, data: object) -> Signed | Listless:
        """Parse one signed record (the signature is checked by the caller, who knows keys);
        one sent without its list is Listless, until the receiver rebuilds that."""
        if not isinstance(data, dict):
            raise WireError("a signed record must be an object")
        signature = data.get("signature")
        if not isinstance(signature, str) or len(signature) > 8192:
            raise WireError("bad record signature")
        try:
            raw = base64.b64decode(signature, validate=True)
        except ValueError:
            raise WireError("record signature is not base64") from None
        if "list" not in data:
            return cls(FileRecord.from_json(data.get("record")), raw)
        return Listless.of(data.get("record"), raw, data["list"])


@dataclass(frozen=True, slots=True)
class Listless:
    """A signed record whose long block list came as its digest and perhaps a patch: `record`
    has no blocks until `rebuild` finds them, and nothing else may read it before."""

    record: FileRecord
    signature: bytes
    digest: bytes
    patch: Patch | None

    @classmethod
    def of(cls, record: object, signature: bytes, listed: object) -> Listless:
        """Parse the parts; WireError if bad."""
        if not isinstance(record, dict) or "blocks" in record or not isinstance(listed, dict):
            raise WireError("a record sent without its list has a list object instead")
        # Checked as a file of no size, so that no list its size asks for is made up to check.
        size = check_int(record, "size", 0, MAX_SIZE)
        parsed = replace(FileRecord.from_json({**record, "size": 0}), size=size)
        count = block_count(size)
        if parsed.kind is not Kind.FILE or parsed.deleted or not LIST_INLINE < count <= (
                MAX_LISTED):
            raise WireError(f"only a file of {LIST_INLINE + 1} to {MAX_LISTED} blocks is sent "
                            "without its list")
        patch = listed.get("patch")
        return cls(parsed, signature, check_digest(listed.get("digest")),
                   None if patch is None else Patch.from_json(patch, count))

    def rebuild(self, held: Iterable[Sequence[bytes]]) -> Signed | None:
        """The whole signed record, its list rebuilt from the first of the lists `held` that
        is that list or its patch's base; None if none is."""
        blocks = rebuilt(self.digest, self.patch, block_count(self.record.size), held)
        if blocks is None:
            return None
        return Signed(replace(self.record, blocks=blocks), self.signature, self.patch)


def size_bound(signed: Signed) -> int:
    """Bytes a record can take at most in a batch's JSON (every character of a path escaped)."""
    r = signed.record
    return (512 + 12 * (len(r.path) + len(r.target)) + 67 * len(r.blocks)
            + 40 * len(r.version.counters) + 2 * len(signed.signature))


BATCH_BUDGET = MAX_BATCH_BYTES - 64 * 1024  # what records may fill, the envelope aside
MAX_LISTED = BATCH_BUDGET // 67  # blocks of the longest list a batch can carry whole


def first_batch(
    signed: Sequence[Signed], start: int = 0
) -> tuple[tuple[Signed, ...], int]:
    """The records from `start` on that fit in one batch (by count and by bytes), and where
    the next batch starts. A record that fits in none (a file of some 15 GiB, whose block list
    alone is over 8 MiB) is passed over: the caller says so."""
    run: list[Signed] = []
    size = 0
    at = start
    while at < len(signed):
        bound = size_bound(signed[at])
        if bound <= BATCH_BUDGET:
            if run and (size + bound > BATCH_BUDGET or len(run) == MAX_BATCH_RECORDS):
                break
            run.append(signed[at])
            size += bound
        at += 1
    return tuple(run), at


def batches(signed: Sequence[Signed]) -> Iterator[tuple[Signed, ...]]:
    """Runs of records that each fit in one batch, in order, passing over what fits in none."""
    at = 0
    while at < len(signed):
        run, at = first_batch(signed, at)
        if run:
            yield run


@dataclass(frozen=True, slots=True)
class Records:
    """A batch of signed records of one folder: a change notice, or a page of an index.
    Received, those sent without their lists are `listless` until the receiver rebuilds them."""

    folder: FolderId
    records: tuple[Signed, ...]
    epoch: str = ""  # the sender's index identity, for catch-up bookkeeping
    seq: int = 0  # the sender's highest index sequence covered by this page
    lists: Lists = Lists.WHOLE  # how long lists are sent
    listless: tuple[Listless, ...] = ()
    # A notice of the sender's own changes: it holds every row of the sender's index after
    # `since` up to `seq` (but versions it held already, under a new inode), so that a member
    # that had read up to `since` need not read them again. Both 0 otherwise.
    since: int = 0

    def to_json(self) -> bytes:
        """The message body."""
        return json.dumps({
            "folder": self.folder, "epoch": self.epoch, "seq": self.seq, "since": self.since,
            "records": [s.to_json(self.lists) for s in self.records],
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Records:
        """Parse a batch; WireError says what is wrong with the first bad part."""
        data = _object(body, MAX_BATCH_BYTES)
        records = data.get("records")
        epoch = data.get("epoch", "")
        if not isinstance(records, list) or len(records) > MAX_BATCH_RECORDS:
            raise WireError(f"records must be a list of at most {MAX_BATCH_RECORDS}")
        if not isinstance(epoch, str) or len(epoch) > 64 or not is_unicode(epoch):
            raise WireError("bad epoch")
        # Notices of relayed changes carry no seq; older peers' notices no `since`.
        seq = check_int({"seq": data.get("seq", 0)}, "seq", 0, MAX_SEQ)
        since = check_int({"since": data.get("since", 0)}, "since", 0, seq)
        parsed = [Signed.from_json(r) for r in records]
        return cls(
            folder=check_folder_id(data.get("folder")),
            records=tuple(r for r in parsed if isinstance(r, Signed)),
            epoch=epoch,
            seq=seq,
            listless=tuple(r for r in parsed if isinstance(r, Listless)),
            since=since,
        )


@dataclass(frozen=True, slots=True)
class IndexRequest:
    """Ask a peer for its index entries after `since` (catch-up)."""

    folder: FolderId
    since: int
    lists: bool = False  # every list whole: the page sent without them held one we lacked

    def to_json(self) -> bytes:
        """The message body."""
        data: dict[str, object] = {"folder": self.folder, "since": self.since}
        if self.lists:
            data["lists"] = True
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, body: bytes) -> IndexRequest:
        """Parse; WireError if bad."""
        data = _object(body, MAX_INDEX_REQUEST_BYTES)
        lists = data.get("lists", False)
        if not isinstance(lists, bool):
            raise WireError("lists must be true or false")
        return cls(check_folder_id(data.get("folder")), check_int(data, "since", 0, MAX_SEQ),
                   lists)


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """Ask a peer for blocks by hash."""

    folder: FolderId
    hashes: tuple[bytes, ...]

    def to_json(self) -> bytes:
        """The message body."""
        hashes = [h.hex() for h in self.hashes]
        return json.dumps({"folder": self.folder, "hashes": hashes}).encode()

    @classmethod
    def from_json(cls, body: bytes) -> BlockRequest:
        """Parse; WireError if bad."""
        data = _object(body, MAX_BLOCK_REQUEST_BYTES)
        hashes = data.get("hashes")
        if not isinstance(hashes, list) or not 0 < len(hashes) <= MAX_BLOCKS_PER_REQUEST:
            raise WireError(f"hashes must be a list of 1 to {MAX_BLOCKS_PER_REQUEST}")
        return cls(check_folder_id(data.get("folder")), tuple(check_digest(h) for h in hashes))


def pack_blocks(blocks: list[bytes | None]) -> bytes:
    """The answer to a BlockRequest: per hash asked, u32 length then data (length 0: absent)."""
    return b"".join(block_frames(blocks))


def block_frames(blocks: list[bytes | None]) -> Iterator[bytes]:
    """The answer to a BlockRequest a frame at a time, to be written as it goes."""
    for block in blocks:
        yield struct.pack(">I", len(block or b"")) + (block or b"")


def blocks_digest(blocks: list[bytes | None]) -> str:
    """`frames_digest` of `pack_blocks(blocks)`, without packing them."""
    frames = hashlib.sha256()
    for block in blocks:
        frames.update(struct.pack(">I", len(block or b"")))
    frames.update(struct.pack(">q", 0))
    return "frames-sha256=" + frames.hexdigest()


def frames_digest(body: bytes) -> str:
    """What an answer of blocks is signed over: its framing, not its bytes.

    Every block is checked against the hash it was asked for by, so the signature need only
    bind the answer's shape to the request; hashing 8 MiB twice more per answer would not add
    to what the hashes and the TLS channel already prove.
    """
    frames = hashlib.sha256()
    at = 0
    while at + 4 <= len(body):
        header = body[at : at + 4]
        frames.update(header)
        at += 4 + struct.unpack(">I", header)[0]
    frames.update(struct.pack(">q", len(body) - at))  # how far the last frame over- or undershot
    return "frames-sha256=" + frames.hexdigest()


Data = bytes | memoryview  # a block's bytes, or a view of them in the answer that carried it


def unpack_blocks(body: bytes, count: int) -> list[memoryview | None]:
    """Split a block answer; WireError if it does not hold exactly `count` entries.

    Each block is a view into `body`, not a copy: a GiB received was copied once more here,
    a 128 KiB allocation (mapped and faulted in afresh) per block."""
    out: list[memoryview | None] = []
    view, at = memoryview(body), 0
    for _ in range(count):
        if at + 4 > len(body):
            raise WireError("block answer is truncated")
        (size,) = struct.unpack_from(">I", body, at)
        at += 4
        if size > BLOCK_SIZE or at + size > len(body):
            raise WireError("block answer has a bad length")
        out.append(view[at : at + size] if size else None)
        at += size
    if at != len(body):
        raise WireError("block answer has trailing bytes")
    return out
