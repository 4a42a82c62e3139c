"""Every core decoder of peer input, fed arbitrary, almost-valid and extreme input.

Three properties each: nothing but the decoder's own error escapes it; a well-formed message
with extreme values is accepted and round-trips exactly, or refused with that error; and what
is accepted stays valid for the node's own next step (storing, signing, bumping).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import json
import math
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsync.core.errors import AuthError, WireError
from meshsync.core.fields import check_digest, check_int
from meshsync.core.ids import NodeId
from meshsync.core.keyblob import MAX_KEY_BYTES, check_key
from meshsync.core.lists import LIST_INLINE, Patch, list_digest, rebuilt
from meshsync.core.paths import (
    MARKER,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    TEMP_PREFIX,
    RelPath,
    check_path,
)
from meshsync.core.records import BLOCK_SIZE, MAX_SIZE, MAX_TARGET, FileRecord, Kind
from meshsync.core.signing import MAX_OFFSET, ReplayGuard, RequestHead
from meshsync.core.vclock import MAX_COUNTER, MAX_ENTRIES, MAX_OWN_COUNTER, Vector
from meshsync.core.wire import (
    GIST_CHARS,
    MAX_BATCH_RECORDS,
    MAX_BEAT_BYTES,
    MAX_BLOCKS_PER_REQUEST,
    MAX_FOLDERS,
    MAX_HELLO_BYTES,
    MAX_MEMBER_ADDRESSES,
    MAX_MEMBER_KEYS,
    MAX_NAME,
    MAX_RELAYED,
    MAX_SEQ,
    STATES,
    Beat,
    BlockRequest,
    FolderId,
    Hello,
    IndexRequest,
    Lists,
    MemberAddress,
    Progress,
    Records,
    Signed,
    block_frames,
    blocks_digest,
    check_address,
    check_folder_id,
    frames_digest,
    pack_blocks,
    unpack_blocks,
)
from tests import decoding

T = TypeVar("T")

# A failing example of 2000 records is large to print, and printing it is not a second failure.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

# Large examples (2000 records, 1024 counters) are the point here, not a health problem.
BIG = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.large_base_example])

# -- strategies: text at the edges of Unicode, JSON values, damage --------------------------------

EDGE_CHARS = [
    "\0", "\x01", "\t", "\n", "\x1b", "\x1f", "\x7f", "\x85", "\xa0", "\xad", "\u2028", "\u202e",
    "\ufeff", "\uffff", "\U0001f389", "\U0010ffff", "\ud800", "\udbff", "\udc00", "\udcff",
    "\udfff", "/", ".", "\\", '"', "é", "☃", "日",
]
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
CHARS = st.characters() | st.sampled_from(EDGE_CHARS) | SURROGATES
TEXT = st.text(CHARS, max_size=16)
# Characters a name may hold: anything but `/`, NUL and lone surrogates.
NAME_CHARS = st.characters(exclude_characters="/\0", exclude_categories=["Cs"]) | st.sampled_from(
    [c for c in EDGE_CHARS if c not in "/\0" and not "\ud800" <= c <= "\udfff"])

NASTY: list[object] = [
    None, True, False, 0, -1, 1, 0.0, -0.0, 1.0, 1.5, 1e308, math.inf, -math.inf, math.nan,
    2**31, 2**32, 2**53, 2**53 + 1, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**4000,
    "", "0", "1", "true", "null", ".", "..", "a/b", "/", "a\0b", "\ud800", "\udcff", "x" * 300,
    "é" * 200, "\u202e", "\n", "SHA256:", "ab" * 32, "AB" * 32, " " * 62 + "ab", "0" * 16, "f" * 16,
    [], {}, [[]], [None], [{}], {"": None}, {"0" * 16: 1},
]

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | TEXT
                | st.sampled_from(NASTY))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON_VALUES, max_size=6)

# Inserted into bodies: deep nesting, 5000 digits, escapes JSON allows but a file name does not.
FRAGMENTS = [
    b"[" * 3000, b"{" * 3000, b"9" * 5000, b'"\\ud800"', b'"\\udcff"', b"\\u0000", b"1e400",
    b"NaN", b"-Infinity", b"-0", b"null", b"{}", b"[]", b"\xff", b"\xed\xa0\x80", b"\xef\xbb\xbf",
    b"\xc0\xaf", b",", b":", b'"', b"\\",
]


class _Brief:
    """A large value that prints as its size and ends, so that a failing example stays readable
    (hypothesis's database still replays it whole)."""

    def __repr__(self) -> str:
        full = super().__repr__()
        if len(full) <= 2000:
            return full
        return f"<{len(self)} items: {full[:300]} … {full[-100:]}>"  # type: ignore[arg-type]


class Bytes(_Brief, bytes):
    """Bytes that print briefly."""


class Tuple(_Brief, tuple):  # type: ignore[type-arg]
    """A tuple that prints briefly."""


class Set(_Brief, frozenset):  # type: ignore[type-arg]
    """A frozenset that prints briefly."""


class Dict(_Brief, dict):  # type: ignore[type-arg]
    """A dict that prints briefly."""


def sometimes(often: st.SearchStrategy[T], rarely: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`rarely` one time in ten (costly extremes), else `often`; shrinks towards `often`."""
    return st.integers(0, 9).flatmap(lambda n: rarely if n == 9 else often)


def plain(value: Any) -> Any:
    """A fresh copy of a JSON value, as a peer's body parses to."""
    return json.loads(json.dumps(value))


def damaged_bytes(bodies: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A valid body damaged, with the fragments JSON decoders find hard."""
    return decoding.damaged(bodies, FRAGMENTS).map(Bytes)


def _damage(draw: st.DrawFn, node: Any) -> Any:
    """`node` with one thing inside it replaced, dropped or added (itself replaced if a leaf)."""

    def fresh(values: st.SearchStrategy[Any] = JSON_VALUES) -> Any:
        # A copy: NASTY's lists and dicts are drawn as themselves, and a later round of damage
        # must not change them for the examples after this one.
        return plain(draw(values))

    if isinstance(node, dict) and node:
        key = draw(st.sampled_from(sorted(node)))
        how = draw(st.sampled_from(("replace", "delete", "descend", "add")))
        if how == "delete":
            del node[key]
        elif how == "descend":
            node[key] = _damage(draw, node[key])
        elif how == "add":
            node[draw(TEXT)] = fresh()
        else:
            node[key] = fresh()
        return node
    if isinstance(node, list) and node:
        at = draw(st.integers(0, len(node) - 1))
        how = draw(st.sampled_from(("replace", "delete", "descend", "append")))
        if how == "delete":
            del node[at]
        elif how == "descend":
            node[at] = _damage(draw, node[at])
        elif how == "append":
            node.append(fresh(JSON_VALUES | st.just(node[at])))
        else:
            node[at] = fresh()
        return node
    return fresh()


@st.composite
def damaged_json(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    """A valid JSON value with one to three fields somewhere in it replaced, dropped or added."""
    value = plain(draw(values))
    for _ in range(draw(st.integers(1, 3))):
        value = _damage(draw, value)
    return value


def decoded(decode: Callable[[Any], T], data: Any, error: type[Exception] = WireError) -> T | None:
    """What `decode` makes of `data`, or None if it refused with `error` (a WireError)."""
    return decoding.decoded(decode, data, error)


def accepted(decode: Callable[[Any], object], data: Any) -> bool:
    """Whether `decode` accepts `data`."""
    return decoded(decode, data) is not None


def admitted(guard: ReplayGuard, head: RequestHead, wall: float) -> bool:
    """Whether the guard lets `head` through at `wall`; a refusal is an AuthError saying why."""
    try:
        guard.check(head, wall)
    except AuthError as e:
        reason = str(e)
    else:
        return True
    assert reason, "the replay guard refused without saying why"
    return False


def encodable(text: str) -> bool:
    """Whether `text` can be stored as SQLite TEXT or given to the OS (no lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# -- values: folder IDs, paths, vectors, records, messages ---------------------------------------

LONG_NAMES = [
    "x" * MAX_NAME_BYTES, "x" * (MAX_NAME_BYTES + 1), "é" * 127 + "x", "é" * 128,
    "\x01" * MAX_NAME_BYTES, "\U0001f389" * 63 + "xyz", "\U0001f389" * 64, "\ud800" * 10,
]
FOLDER_IDS = st.text(CHARS, max_size=16) | st.sampled_from([".", "..", "...", *LONG_NAMES])
ACCEPTED_FOLDER_IDS = st.text(NAME_CHARS, min_size=1, max_size=16).filter(
    lambda f: accepted(check_folder_id, f)) | st.sampled_from(
    [n for n in LONG_NAMES if accepted(check_folder_id, n)])

LONGEST_PATH = "/".join(["a" * 200] * 19 + ["b" * 181])
NAMES = st.text(NAME_CHARS, min_size=1, max_size=12) | st.sampled_from([*LONG_NAMES, "..", "."])
PATHS = (st.lists(NAMES, min_size=1, max_size=6).map("/".join)
         | st.sampled_from([LONGEST_PATH, LONGEST_PATH + "c", MARKER, f"a/{TEMP_PREFIX}x", "a//b"])
         | st.text(CHARS, max_size=20))

KEYS = st.text("0123456789abcdef", min_size=16, max_size=16)
COUNTERS = st.integers(1, MAX_COUNTER) | st.sampled_from(
    [1, 2, 2_000_000_000, 2**53, MAX_COUNTER - 1, MAX_COUNTER])


@st.composite
def many_counters(draw: st.DrawFn, size: int) -> dict[str, int]:
    """`size` distinct keys, spread over the key space, with counters drawn from a few."""
    start, step = draw(st.integers(0, 2**64 - 1)), draw(st.integers(1, 2**40)) * 2 + 1
    counters = draw(st.lists(COUNTERS, min_size=1, max_size=4))
    return Dict({f"{(start + n * step) % 2**64:016x}": counters[n % len(counters)]
                 for n in range(size)})


SMALL_VECTORS = st.builds(Vector.of, st.dictionaries(KEYS, COUNTERS, min_size=1, max_size=6))
VECTORS = sometimes(SMALL_VECTORS, st.builds(
    Vector.of, many_counters(MAX_ENTRIES) | many_counters(MAX_ENTRIES - 1)))
DIGESTS = st.binary(min_size=32, max_size=32)
SIZES_OF: dict[int, st.SearchStrategy[int]] = {
    n: st.integers((n - 1) * BLOCK_SIZE + 1, n * BLOCK_SIZE) if n else st.just(0)
    for n in range(MAX_BLOCKS_PER_REQUEST + 1)
}
TARGETS = st.text(CHARS, max_size=24) | st.sampled_from(
    ["x" * MAX_TARGET, "x" * (MAX_TARGET + 1), "é" * MAX_TARGET, "\ud800", "../a b/ü", "a\0b"])
MTIMES = st.integers(-(2**62), 2**62) | st.sampled_from([-(2**62), 0, 2**62, 2**62 + 1])


@st.composite
def records(draw: st.DrawFn, *, paths: st.SearchStrategy[str] = PATHS,
            targets: st.SearchStrategy[str] = TARGETS,
            vectors: st.SearchStrategy[Vector] = VECTORS, mtimes: st.SearchStrategy[int] = MTIMES,
            most_blocks: int = MAX_BLOCKS_PER_REQUEST, valid_author: bool = False) -> FileRecord:
    """A record built field by field, with the extreme values each field may take (an author
    naming its origin only unless `valid_author`)."""
    kind = draw(st.sampled_from(Kind))
    deleted = draw(st.booleans())
    count = draw(st.integers(0, most_blocks)) if kind is Kind.FILE and not deleted else 0
    origin = draw(KEYS)
    author = draw(st.sampled_from(["", "other"] if valid_author else ["", "other", "origin"]))
    author = {"": "", "origin": origin}.get(author) or draw(KEYS.filter(lambda k: k != origin))
    return FileRecord(
        path=draw(paths),  # type: ignore[arg-type]
        kind=kind,
        version=draw(vectors),
        origin=origin,
        author=author,
        deleted=deleted,
        size=draw(SIZES_OF[count]),
        mode=draw(st.integers(0, 0o777)),
        mtime_ns=draw(mtimes),
        blocks=tuple(draw(st.lists(DIGESTS, min_size=count, max_size=count))),
        target=draw(targets) if kind is Kind.SYMLINK else "",
    )


SIGNATURES = st.binary(max_size=64) | st.sampled_from([b"", b"\0" * 6144, b"\xff" * 6145])
SIGNED = st.builds(Signed, records(), SIGNATURES)
# Records for batches of 2000: small ones, so that a batch stays a few MiB to write and read.
SMALL_SIGNED = st.builds(Signed, records(vectors=SMALL_VECTORS, most_blocks=2), SIGNATURES)
EPOCHS = TEXT | st.sampled_from(["e" * 64, "e" * 65, "\U0001f389" * 64, "\ud800"])
SEQS = st.integers(0, MAX_SEQ) | st.sampled_from([0, MAX_SEQ, MAX_SEQ + 1, -1])


@st.composite
def batches(draw: st.DrawFn, counts: st.SearchStrategy[int]) -> tuple[Signed, ...]:
    """`count` signed records: a few drawn, repeated (so that 2000 are cheap to draw)."""
    some = draw(st.lists(SMALL_SIGNED, min_size=1, max_size=3))
    count = draw(counts)
    return Tuple((some * count)[:count])


RECORDS = st.builds(Records, st.builds(FolderId, FOLDER_IDS), batches(st.integers(0, 8)),
                    EPOCHS, SEQS, since=SEQS)
FULL_RECORDS = st.builds(Records, st.builds(FolderId, FOLDER_IDS),
                         batches(st.sampled_from([MAX_BATCH_RECORDS, MAX_BATCH_RECORDS + 1])),
                         EPOCHS, SEQS, since=SEQS)
# Each example of the fullest batches writes and reads a few MiB: a tenth as many of them.
FEWER = settings(BIG, max_examples=max(10, settings().max_examples // 10))
INDEX_REQUESTS = st.builds(IndexRequest, st.builds(FolderId, FOLDER_IDS), SEQS)
BLOCK_REQUESTS = st.builds(
    BlockRequest, st.builds(FolderId, FOLDER_IDS),
    st.lists(DIGESTS, max_size=MAX_BLOCKS_PER_REQUEST + 1).map(tuple))
NODE_IDS = st.builds(NodeId, DIGESTS)
PRINTABLE = st.characters(categories=["L", "M", "N", "P", "S"], include_characters=" ")
HELLO_NAMES = st.text(CHARS, max_size=MAX_NAME + 2) | st.sampled_from(
    ["n" * MAX_NAME, "n" * (MAX_NAME + 1), "\U0001f389" * MAX_NAME, ""])


@st.composite
def many_folder_ids(draw: st.DrawFn) -> frozenset[FolderId]:
    """As many folder IDs as a hello holds, each as long as a folder ID may be."""
    stem = draw(st.sampled_from(["x" * 252, "é" * 126, "\x01" * 252, "\U0001f389" * 63]))
    return Set(FolderId(f"{stem}{n:03d}") for n in range(MAX_FOLDERS))


PORTS = st.integers(1, 65535) | st.sampled_from([1, 65535])


def unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not IPv4 in IPv6 clothes (nodes write IPv4 as IPv4)."""
    return not isinstance(ip, ipaddress.IPv6Address) or ip.ipv4_mapped is None


# Addresses as nodes write them: IPv4, or IPv6 in brackets.
ACCEPTED_ADDRESSES = st.builds("{}:{}".format, st.ip_addresses(v=4), PORTS) | st.builds(
    "[{}]:{}".format, st.ip_addresses(v=6).filter(unmapped), PORTS)
LONGEST_ADDRESS = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
ADDRESSES = ACCEPTED_ADDRESSES | TEXT | st.sampled_from([
    LONGEST_ADDRESS, LONGEST_ADDRESS + "0", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:022",
    "010.0.0.1:1", "[10.0.0.1]:1", "::1:1", "[fe80::1%eth0]:1", "[::ffff:1.2.3.4]:1",
    "[::FFFF]:1", "host:1", "10.0.0.1", "10.0.0.1:", "10.0.0.1:\u00b2", " 10.0.0.1:1",
    "10.0.0.1:+1", "10.0.0.1:1_0", "10.0.0.1:\u0661"])
MEMBERS = st.builds(MemberAddress, NODE_IDS, ADDRESSES)


@st.composite
def most_members(draw: st.DrawFn) -> tuple[MemberAddress, ...]:
    """As many member addresses as a hello holds, each as long as an address may be."""
    ids = draw(st.lists(NODE_IDS, min_size=MAX_MEMBER_ADDRESSES, max_size=MAX_MEMBER_ADDRESSES))
    return Tuple(MemberAddress(i, LONGEST_ADDRESS) for i in ids)


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def mpint(n: int) -> bytes:
    return ssh_string(n.to_bytes((n.bit_length() + 8) // 8, "big"))


CURVES = {b"nistp256": 32, b"nistp384": 48, b"nistp521": 66}
ED25519_KEYS = st.builds(lambda k: ssh_string(b"ssh-ed25519") + ssh_string(k),
                         st.binary(min_size=32, max_size=32))
ECDSA_KEYS = st.sampled_from(sorted(CURVES)).flatmap(lambda c: st.builds(
    lambda xy: ssh_string(b"ecdsa-sha2-" + c) + ssh_string(c) + ssh_string(b"\x04" + xy),
    st.binary(min_size=2 * CURVES[c], max_size=2 * CURVES[c])))
RSA_EXPONENTS = st.integers(1, 2**31 - 1).map(lambda n: 2 * n + 1) | st.sampled_from(
    [3, 65537, 2**32 - 1])
RSA_KEYS = st.builds(lambda e, n: ssh_string(b"ssh-rsa") + mpint(e) + mpint(n),
                     RSA_EXPONENTS, st.integers(2**1023, 2**8192 - 1))
# Keys as the node announces them: every one passed the crypto layer, and fits MAX_KEY_BYTES.
ACCEPTED_KEY_BLOBS = (ED25519_KEYS | ECDSA_KEYS | RSA_KEYS).filter(
    lambda b: len(b) <= MAX_KEY_BYTES)
KEY_BLOBS = ACCEPTED_KEY_BLOBS | st.binary(max_size=80) | st.builds(
    lambda e, n: ssh_string(b"ssh-rsa") + mpint(e) + mpint(n),
    st.integers(0, 2**33), st.integers(0, 2**8200)) | st.sampled_from(
    [b"", b"\0" * 4, ssh_string(b"ssh-ed25519"), ssh_string(b"ssh-ed25519") + b"\xff" * 4])
LARGEST_KEY = ssh_string(b"ssh-rsa") + mpint(2**32 - 1) + mpint(2**8192 - 1)


@st.composite
def most_keys(draw: st.DrawFn) -> tuple[bytes, ...]:
    """As many member keys as a hello holds, each as large as a key in a hello may be."""
    first = draw(st.integers(2**8191, 2**8192 - 1 - 2 * MAX_MEMBER_KEYS))
    return Tuple(ssh_string(b"ssh-rsa") + mpint(2**32 - 1) + mpint(first + 2 * n)
                 for n in range(MAX_MEMBER_KEYS))


PROGRESS_COUNTS = st.integers(-1, 2**62 + 1) | st.sampled_from([0, 2**62, 2**62 + 1])
STATE_NAMES = st.sampled_from(sorted(STATES)) | st.sampled_from(["", "In sync", "done"])


@st.composite
def hello_parts(draw: st.DrawFn, folders: st.SearchStrategy[frozenset[FolderId]],
                states: st.SearchStrategy[str] = STATE_NAMES,
                counts: st.SearchStrategy[int] = PROGRESS_COUNTS,
                ) -> tuple[frozenset[FolderId], tuple[Progress, ...]]:
    """Folders, and the progress of some of them (of every one, as often as not)."""
    named = draw(folders)
    some = sorted(named) if draw(st.booleans()) else draw(
        st.lists(st.sampled_from(sorted(named)), unique=True)) if named else []
    return named, Tuple(Progress(f, draw(states), draw(counts), draw(counts), draw(counts),
                                 draw(st.integers(-1, MAX_SEQ) | st.sampled_from([-1, MAX_SEQ])))
                        for f in some)


HELLO_FOLDERS = st.frozensets(st.builds(FolderId, FOLDER_IDS), max_size=6) | many_folder_ids()
HELLOS = hello_parts(HELLO_FOLDERS).flatmap(lambda parts: st.builds(
    Hello,
    folders=st.just(parts[0]),
    progress=st.just(parts[1]),
    name=HELLO_NAMES,
    port=st.integers(0, 65536) | st.sampled_from([0, 1, 65535, 65536]),
    term=st.integers(-1, 2**53 + 1) | st.sampled_from([0, 2**53, 2**53 + 1]),
    coordinator=st.none() | NODE_IDS,
    leaving=st.booleans(),
    hears_coordinator=st.booleans(),
    members=st.lists(MEMBERS, max_size=MAX_MEMBER_ADDRESSES + 1).map(tuple) | most_members(),
    member_keys=st.none() | st.lists(KEY_BLOBS, max_size=4).map(tuple) | most_keys()
    | st.just(Tuple((LARGEST_KEY,) * (MAX_MEMBER_KEYS + 1))),
))


# -- Hello ----------------------------------------------------------------------------------------

@given(st.binary() | damaged_bytes(HELLOS.map(Hello.to_json)))
def test_hello_from_any_bytes_is_a_hello_or_a_wire_error(body: bytes) -> None:
    hello = decoded(Hello.from_json, body)
    if hello is not None:
        assert Hello.from_json(hello.to_json()) == hello


@given(JSON_OBJECTS | damaged_json(HELLOS.map(lambda h: json.loads(h.to_json()))))
def test_hello_from_any_json_object_is_a_hello_or_a_wire_error(data: dict[str, Any]) -> None:
    hello = decoded(Hello.from_json, json.dumps(data).encode())
    if hello is not None:
        assert Hello.from_json(hello.to_json()) == hello


@BIG
@given(HELLOS)
def test_an_extreme_hello_round_trips_or_is_refused(hello: Hello) -> None:
    again = decoded(Hello.from_json, hello.to_json())
    assert again is None or again == hello
    if again is not None:
        assert encodable(again.name)
        assert all(encodable(f) for f in again.folders)


@BIG
@given(
    name=st.text(PRINTABLE, min_size=1, max_size=MAX_NAME) | st.just("\U0001f389" * MAX_NAME),
    parts=hello_parts(st.frozensets(st.builds(FolderId, ACCEPTED_FOLDER_IDS), max_size=6)
                      | many_folder_ids(), st.sampled_from(sorted(STATES)),
                      st.integers(0, 2**62) | st.just(2**62)),
    port=st.integers(1, 65535),
    term=st.integers(0, 2**53),
    coordinator=st.none() | NODE_IDS,
    hears=st.booleans(),
    members=st.lists(st.builds(MemberAddress, NODE_IDS, ACCEPTED_ADDRESSES),
                     max_size=MAX_MEMBER_ADDRESSES).map(tuple) | most_members(),
    keys=st.none() | st.lists(ACCEPTED_KEY_BLOBS, max_size=4).map(tuple) | most_keys(),
)
def test_a_hello_made_of_accepted_parts_is_accepted(
    name: str, parts: tuple[frozenset[FolderId], tuple[Progress, ...]], port: int, term: int,
    coordinator: NodeId | None, hears: bool, members: tuple[MemberAddress, ...],
    keys: tuple[bytes, ...] | None,
) -> None:
    folders, progress = parts
    # The node's own hello: every folder ID passed check_folder_id when the config was read,
    # every member address check_address when the hello was made, and every key the crypto
    # layer (the node announces no key over MAX_KEY_BYTES). The largest of each fits together.
    assert all(check_folder_id(f) == f for f in folders)
    assert all(check_address(m.address) == m.address for m in members)
    hello = Hello(name, port, folders, term, coordinator, False, hears, members, keys, progress)
    assert len(hello.to_json()) <= MAX_HELLO_BYTES
    assert Hello.from_json(hello.to_json()) == hello
    # What a beat says of it is what its recipient finds in it, whatever the members' order.
    shuffled = dataclasses.replace(hello, members=hello.members[::-1], hears_coordinator=False)
    assert Hello.from_json(shuffled.to_json()).gist == hello.gist


# -- Beat -----------------------------------------------------------------------------------------

BEATS = st.builds(
    Beat,
    term=st.integers(-1, 2**53 + 1) | st.sampled_from([0, 2**53, 2**53 + 1]),
    coordinator=st.none() | NODE_IDS,
    hears_coordinator=st.booleans(),
    up=st.none() | st.lists(NODE_IDS, max_size=4).map(tuple)
    | st.sampled_from([MAX_RELAYED, MAX_RELAYED + 1]).map(
        lambda n: Tuple(NodeId(bytes([i % 256, i // 256]) * 16) for i in range(n))),
    said=st.sampled_from(["", "0123456789abcdef", "0" * (GIST_CHARS + 1), "ABCDEF", "g"])
    | st.text("0123456789abcdef", max_size=GIST_CHARS) | TEXT,
)


@given(st.binary() | damaged_bytes(BEATS.map(lambda b: b.to_json().encode())))
def test_a_beat_from_any_bytes_is_a_beat_or_a_wire_error(body: bytes) -> None:
    beat = decoded(Beat.from_json, body)
    if beat is not None:
        assert Beat.from_json(beat.to_json()) == beat


@given(JSON_OBJECTS | damaged_json(BEATS.map(lambda b: json.loads(b.to_json()))))
def test_a_beat_from_any_json_object_is_a_beat_or_a_wire_error(data: dict[str, Any]) -> None:
    beat = decoded(Beat.from_json, json.dumps(data))
    if beat is not None:
        assert Beat.from_json(beat.to_json()) == beat


@BIG
@given(BEATS)
def test_an_extreme_beat_round_trips_or_is_refused_and_the_largest_valid_one_fits(
        beat: Beat) -> None:
    again = decoded(Beat.from_json, beat.to_json())
    assert again is None or again == beat
    valid = (0 <= beat.term <= 2**53 and (beat.up is None or len(beat.up) <= MAX_RELAYED)
             and len(beat.said) <= GIST_CHARS and set(beat.said) <= set("0123456789abcdef"))
    assert (again is not None) == valid
    if valid:
        assert len(beat.to_json()) <= MAX_BEAT_BYTES


@given(ADDRESSES)
def test_an_address_from_any_text_is_itself_or_a_wire_error(text: str) -> None:
    address = decoded(check_address, text)
    if address is not None:
        assert address == text
        assert encodable(address)
        host = address.rpartition(":")[0]
        assert host.strip("[]") == str(ipaddress.ip_address(host.strip("[]")))  # one spelling


def test_a_hello_with_the_most_folders_of_the_longest_ids_is_accepted() -> None:
    # Found by the property above: 256 IDs of 255 bytes made a body over the old 64 KiB limit,
    # so a node sharing them would have had every hello refused.
    for stem in ("x" * 252, "\x01" * 252, "é" * 126):
        folders = frozenset(FolderId(f"{stem}{n:03d}") for n in range(MAX_FOLDERS))
        assert all(len(f.encode()) == 255 for f in folders)
        hello = Hello("n" * MAX_NAME, 65535, folders, 2**53, NodeId(b"\xff" * 32))
        assert Hello.from_json(hello.to_json()) == hello
        # With every member address a hello holds, as long as they get, it still fits.
        members = tuple(MemberAddress(NodeId(bytes([n]) * 32), LONGEST_ADDRESS)
                        for n in range(MAX_MEMBER_ADDRESSES))
        progress = tuple(Progress(f, "held back", 2**62, 2**62, 2**62) for f in sorted(folders))
        fullest = dataclasses.replace(hello, hears_coordinator=True, members=members,
                                      progress=progress)
        assert len(fullest.to_json()) <= MAX_HELLO_BYTES
        assert Hello.from_json(fullest.to_json()) == fullest


# -- Records, Signed ------------------------------------------------------------------------------

@BIG
@given(st.binary() | damaged_bytes(RECORDS.map(Records.to_json)))
def test_a_batch_from_any_bytes_is_a_batch_or_a_wire_error(body: bytes) -> None:
    batch = decoded(Records.from_json, body)
    if batch is not None:
        assert Records.from_json(batch.to_json()) == batch


@BIG
@given(JSON_OBJECTS | damaged_json(RECORDS.map(lambda r: json.loads(r.to_json()))))
def test_a_batch_from_any_json_object_is_a_batch_or_a_wire_error(data: dict[str, Any]) -> None:
    batch = decoded(Records.from_json, json.dumps(data).encode())
    if batch is not None:
        assert encodable(batch.epoch)
        assert encodable(batch.folder)


@BIG
@given(RECORDS)
def test_an_extreme_batch_round_trips_or_is_refused(batch: Records) -> None:
    again = decoded(Records.from_json, batch.to_json())
    assert again is None or again == batch
    if again is not None:
        # The epoch is stored as SQLite TEXT when we catch up with the peer that sent it.
        assert encodable(again.epoch)
        # A notice holds the rows after `since` up to `seq`: none when since is past seq.
        assert 0 <= again.since <= again.seq <= MAX_SEQ
    if batch.since > batch.seq:
        assert again is None


@FEWER
@given(FULL_RECORDS, st.integers(0, 2**20))
def test_the_fullest_batch_round_trips_or_is_refused_and_so_is_any_cut_of_it(
    batch: Records, at: int
) -> None:
    body = batch.to_json()
    again = decoded(Records.from_json, body)
    assert again is None or again == batch
    if len(batch.records) > MAX_BATCH_RECORDS:
        assert again is None
    cut = body[: at % len(body)]
    assert decoded(Records.from_json, cut) is None


# -- records sent without their long lists -------------------------------------------------------

POOL = [hashlib.sha256(bytes([n])).digest() for n in range(6)]  # few hashes: lists that overlap


@st.composite
def long_lists(draw: st.DrawFn, count: int | None = None) -> tuple[bytes, ...]:
    count = count if count is not None else draw(st.integers(LIST_INLINE + 1, LIST_INLINE + 40))
    return tuple(draw(st.lists(st.sampled_from(POOL), min_size=count, max_size=count)))


@st.composite
def edited(draw: st.DrawFn, blocks: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """`blocks` with a few blocks changed, cut off or added at the end."""
    new = list(blocks)
    for _ in range(draw(st.integers(0, 4))):
        new[draw(st.integers(0, len(new) - 1))] = draw(st.sampled_from(POOL) | DIGESTS)
    end = len(new) + draw(st.integers(-8, 8))
    return (*new[:end], *draw(long_lists(max(0, end - len(new)))))


@st.composite
def long_signed(draw: st.DrawFn) -> tuple[Signed, tuple[bytes, ...]]:
    """A signed record of a big file with a patch from the list before (also returned)."""
    before = draw(long_lists())
    blocks = draw(edited(before))
    size = (len(blocks) - 1) * BLOCK_SIZE + draw(st.integers(1, BLOCK_SIZE))
    origin = draw(KEYS)
    record = FileRecord(
        RelPath(f"disks/{draw(st.integers(0, 3))}.img"), Kind.FILE,
        Vector.of(draw(st.dictionaries(KEYS, st.integers(1, 1000), min_size=1, max_size=3))),
        origin, size=size, mode=0o644, mtime_ns=draw(st.integers(0, 2**62)), blocks=blocks)
    signature = draw(st.binary(min_size=1, max_size=64))
    return Signed(record, signature, Patch.between(before, blocks)), before


@given(long_lists(), st.data())
def test_a_patch_between_two_lists_makes_the_second_of_the_first(
        old: tuple[bytes, ...], data: st.DataObject) -> None:
    new = data.draw(edited(old))
    patch = Patch.between(old, new)
    if patch is None:
        return
    assert patch.apply(old, len(new)) == new
    assert Patch.from_json(json.loads(json.dumps(patch.to_json())), len(new)) == patch
    assert rebuilt(list_digest(new), patch, len(new), [new[:-1], old]) == new
    assert rebuilt(list_digest(new), None, len(new), [old]) in (None, new)


@given(JSON_VALUES | damaged_json(long_lists().map(
    lambda b: Patch(list_digest(b), ((0, b[0]), (5, b[1]))).to_json())), st.integers(0, 600))
def test_a_patch_from_any_json_is_a_patch_or_a_wire_error(data: Any, count: int) -> None:
    patch = decoded(lambda d: Patch.from_json(d, count), data)
    if patch is not None:
        indexes = [i for i, _ in patch.changes]
        assert indexes == sorted(set(indexes))
        assert all(0 <= i < count for i in indexes)


@BIG
@given(st.lists(long_signed(), min_size=1, max_size=3), st.sampled_from(Lists), st.data())
def test_a_batch_without_its_lists_is_whole_again_from_the_lists_the_receiver_holds(
        signed: list[tuple[Signed, tuple[bytes, ...]]], lists: Lists, data: st.DataObject) -> None:
    signed = list({s.record.path: (s, before) for s, before in signed}.values())  # one a path
    batch = Records(FolderId("docs"), tuple(s for s, _ in signed), "epoch", 7, lists)
    body = batch.to_json()
    again = Records.from_json(body)
    held = {s.record.path: data.draw(st.sampled_from([[before], [s.record.blocks], []]))
            for s, before in signed}
    rebuilt_ones = [r.rebuild(held[r.record.path]) for r in again.listless]
    for one in rebuilt_ones:
        assert one is None or one in batch.records
    assert len(again.records) + len(again.listless) == len(batch.records)
    assert len(body) < len(Records(batch.folder, batch.records).to_json()) or not again.listless
    for s, before in signed:
        # What the receiver holds rebuilds it: the same list, or the base of its patch.
        if [s.record.blocks] == held[s.record.path] or (
                s.patch is not None and held[s.record.path] == [before]):
            assert s in again.records or s in rebuilt_ones


@BIG
@given(damaged_json(st.lists(long_signed(), min_size=1, max_size=2).map(
    lambda signed: json.loads(Records(FolderId("docs"), tuple(s for s, _ in signed), "e", 1,
                                      Lists.DIGESTS).to_json()))), long_lists())
def test_a_damaged_batch_without_lists_is_refused_or_rebuilds_only_the_list_it_names(
        data: dict[str, Any], held: tuple[bytes, ...]) -> None:
    batch = decoded(Records.from_json, json.dumps(data).encode())
    for listless in batch.listless if batch is not None else ():
        count = -(-listless.record.size // BLOCK_SIZE)
        assert count > LIST_INLINE
        for blocks in (held, *([listless.patch.apply(held, count)] if listless.patch else [])):
            whole = listless.rebuild([blocks] if blocks else [])
            if whole is not None:
                assert len(whole.record.blocks) == count
                assert list_digest(whole.record.blocks) == listless.digest


def test_an_epoch_that_is_not_valid_unicode_is_refused() -> None:
    # Found by the property above: JSON's "\ud800" was accepted as an epoch, and storing it
    # (Index.set_meta, set_peer_seq) raised UnicodeEncodeError on every catch-up with that peer.
    for epoch in ("\ud800", "e" * 10 + "\udcff"):
        body = Records(FolderId("docs"), (), epoch, 1).to_json()
        with pytest.raises(WireError, match="epoch"):
            Records.from_json(body)


@given(JSON_VALUES | damaged_json(SIGNED.map(Signed.to_json)))
def test_a_signed_record_from_any_json_is_one_or_a_wire_error(data: Any) -> None:
    signed = decoded(Signed.from_json, data)
    if signed is not None:
        assert Signed.from_json(plain(signed.to_json())) == signed


@given(SIGNED)
def test_an_extreme_signed_record_round_trips_or_is_refused(signed: Signed) -> None:
    again = decoded(Signed.from_json, plain(signed.to_json()))
    assert again is None or again == signed
    if len(signed.signature) <= 6144 and accepted(FileRecord.from_json, signed.record.to_json()):
        assert again == signed  # 8192 base64 characters hold any 6144 bytes


# -- FileRecord -----------------------------------------------------------------------------------

@given(records(valid_author=True), FOLDER_IDS)
def test_the_canonical_form_is_the_sorted_compact_json_of_the_record(record: FileRecord,
                                                                       folder: str) -> None:
    # What a signature covers is written out by hand for speed: byte for byte this JSON,
    # whatever a path, target or folder holds (quotes, control characters, lone surrogates).
    assert record.canonical(folder) == json.dumps(
        [folder, record.to_json()], sort_keys=True, separators=(",", ":")).encode()


def _respelled(data: st.DataObject, record: dict[str, Any]) -> dict[str, Any]:
    """The same record spelled otherwise: keys in another order, hex digests in upper case."""
    out = {k: record[k] for k in data.draw(st.permutations(sorted(record)))}
    if data.draw(st.booleans()):
        out["blocks"] = [b.upper() for b in out["blocks"]]
    out["version"] = dict(reversed(list(out["version"].items())))
    return out


@given(JSON_VALUES | damaged_json(records().map(FileRecord.to_json)))
def test_a_record_from_any_json_is_a_record_or_a_wire_error(data: Any) -> None:
    record = decoded(FileRecord.from_json, data)
    if record is not None:
        assert FileRecord.from_json(plain(record.to_json())) == record


@BIG
@given(records())
def test_an_extreme_record_round_trips_or_is_refused(record: FileRecord) -> None:
    again = decoded(FileRecord.from_json, plain(record.to_json()))
    assert again is None or again == record
    if record.author == record.origin:
        assert again is None, "one spelling per record: an author only when not the origin"


@BIG
@given(records(paths=PATHS.filter(lambda p: decoded(check_path, p) is not None),
               targets=st.text(NAME_CHARS | st.just("/"), max_size=24)
               | st.just("x" * MAX_TARGET),
               mtimes=st.integers(-(2**62), 2**62), valid_author=True))
def test_a_record_with_every_field_in_range_is_accepted(record: FileRecord) -> None:
    assert FileRecord.from_json(plain(record.to_json())) == record


@BIG
@given(st.data(), records(), st.text(NAME_CHARS, min_size=1, max_size=8))
def test_an_accepted_record_is_stored_and_signed_the_same_whatever_its_spelling(
    data: st.DataObject, record: FileRecord, folder: str
) -> None:
    taken = decoded(FileRecord.from_json, plain(record.to_json()))
    if taken is None:
        return
    # The index stores every text field as SQLite TEXT; the OS takes the path and target.
    assert all(map(encodable, (taken.path, taken.origin, taken.target)))
    respelled = FileRecord.from_json(_respelled(data, plain(taken.to_json())))
    assert respelled == taken
    assert respelled.canonical(folder) == taken.canonical(folder)
    assert json.loads(taken.canonical(folder)) == [folder, plain(taken.to_json())]


def test_a_symlink_target_that_is_not_valid_unicode_is_refused() -> None:
    # Found by the property above: JSON's "\ud800" was accepted as a target; storing the
    # record in the index (Index.add_needs) raised UnicodeEncodeError for the whole batch.
    link = FileRecord(check_path("l"), Kind.SYMLINK, Vector.of({"a" * 16: 1}), "a" * 16,
                      target="ok")
    for target in ("\ud800", "../x\udcff"):
        with pytest.raises(WireError, match="target"):
            FileRecord.from_json({**link.to_json(), "target": target})


# -- Vector ---------------------------------------------------------------------------------------

@given(JSON_VALUES | damaged_json(VECTORS.map(Vector.to_json)))
def test_a_vector_from_any_json_is_a_vector_or_a_wire_error(data: Any) -> None:
    vector = decoded(Vector.from_json, data)
    if vector is not None:
        assert Vector.from_json(plain(vector.to_json())) == vector
        assert len(vector.counters) <= MAX_ENTRIES
        assert all(0 < n <= MAX_COUNTER for _, n in vector.counters)


@BIG
@given(st.dictionaries(KEYS, st.integers() | st.sampled_from(NASTY), max_size=4)
       | many_counters(MAX_ENTRIES) | many_counters(MAX_ENTRIES + 1))
def test_an_extreme_vector_round_trips_or_is_refused(counters: dict[str, Any]) -> None:
    vector = decoded(Vector.from_json, plain(counters))
    if vector is not None:
        assert vector == Vector.of(counters)
        assert Vector.from_json(plain(vector.to_json())) == vector


@BIG
@given(VECTORS, KEYS | st.sampled_from(["0" * 16, "f" * 16]), st.data())
def test_an_accepted_vector_bumped_by_a_node_is_still_accepted(
    vector: Vector, other: str, data: st.DataObject
) -> None:
    taken = Vector.from_json(plain(vector.to_json()))
    key = data.draw(st.sampled_from([other, *(k for k, _ in taken.counters[:3])]))
    # A node takes no version it could not bump (folder.py's intake): a counter of its own
    # beyond MAX_OWN_COUNTER, or no room left for its entry.
    if taken.can_bump(key):
        bumped = taken.bump(key, 2_000_000_000)
        assert Vector.from_json(plain(bumped.to_json())) == bumped
    else:
        assert taken.get(key) > MAX_OWN_COUNTER or len(taken.counters) == MAX_ENTRIES


# -- block answers --------------------------------------------------------------------------------

BLOCK_LISTS = st.lists(
    st.none() | st.binary(min_size=1, max_size=16) | st.sampled_from([b"x" * BLOCK_SIZE]),
    max_size=MAX_BLOCKS_PER_REQUEST)


@given(st.binary() | damaged_bytes(BLOCK_LISTS.map(pack_blocks)),
       st.integers(-1, MAX_BLOCKS_PER_REQUEST + 1))
def test_a_block_answer_from_any_bytes_is_blocks_or_a_wire_error(body: bytes, count: int) -> None:
    blocks = decoded(lambda b: unpack_blocks(b, count), body)
    assert frames_digest(body).startswith("frames-sha256=")  # what its signature is checked over
    if blocks is not None:
        assert len(blocks) == max(count, 0)
        assert pack_blocks(blocks) == body
        assert all(b is None or 0 < len(b) <= BLOCK_SIZE for b in blocks)
        assert frames_digest(pack_blocks([b and b"x" * len(b) for b in blocks])) == (
            frames_digest(body))  # the framing, not the bytes


@given(BLOCK_LISTS)
def test_an_answer_written_a_frame_at_a_time_is_signed_as_the_packed_one_would_be(
    blocks: list[bytes | None],
) -> None:
    assert b"".join(block_frames(blocks)) == pack_blocks(blocks)
    assert blocks_digest(blocks) == frames_digest(pack_blocks(blocks))


@BIG
@given(BLOCK_LISTS, st.sampled_from([b"", b"\0", b"\0\0\0\0", struct.pack(">I", BLOCK_SIZE + 1)]))
def test_a_block_answer_round_trips_and_refuses_anything_added(
    blocks: list[bytes | None], tail: bytes
) -> None:
    body = pack_blocks(blocks)
    assert unpack_blocks(body, len(blocks)) == blocks
    if tail:
        assert decoded(lambda b: unpack_blocks(b, len(blocks)), body + tail) is None


# -- requests -------------------------------------------------------------------------------------

@given(st.binary() | damaged_bytes(INDEX_REQUESTS.map(IndexRequest.to_json)) | JSON_OBJECTS.map(
    lambda d: json.dumps(d).encode()))
def test_an_index_request_from_any_bytes_is_one_or_a_wire_error(body: bytes) -> None:
    request = decoded(IndexRequest.from_json, body)
    if request is not None:
        assert IndexRequest.from_json(request.to_json()) == request


@given(INDEX_REQUESTS)
def test_an_extreme_index_request_round_trips_or_is_refused(request: IndexRequest) -> None:
    again = decoded(IndexRequest.from_json, request.to_json())
    assert again is None or again == request
    if decoded(check_folder_id, request.folder) is not None and 0 <= request.since <= MAX_SEQ:
        assert again == request


@given(st.binary() | damaged_bytes(BLOCK_REQUESTS.map(BlockRequest.to_json)) | JSON_OBJECTS.map(
    lambda d: json.dumps(d).encode()))
def test_a_block_request_from_any_bytes_is_one_or_a_wire_error(body: bytes) -> None:
    request = decoded(BlockRequest.from_json, body)
    if request is not None:
        assert BlockRequest.from_json(request.to_json()) == request
        assert all(len(h) == 32 for h in request.hashes)


@given(BLOCK_REQUESTS)
def test_an_extreme_block_request_round_trips_or_is_refused(request: BlockRequest) -> None:
    again = decoded(BlockRequest.from_json, request.to_json())
    assert again is None or again == request
    if (decoded(check_folder_id, request.folder) is not None
            and 0 < len(request.hashes) <= MAX_BLOCKS_PER_REQUEST):
        assert again == request


# -- fields: folder IDs, paths, integers, digests, node IDs ---------------------------------------

@given(JSON_VALUES | FOLDER_IDS)
def test_a_folder_id_is_a_base_name_or_a_wire_error(text: Any) -> None:
    folder = decoded(check_folder_id, text)
    if folder is not None:
        assert encodable(folder)
        assert 0 < len(folder.encode()) <= 255
        assert "/" not in folder
        assert "\0" not in folder
        assert folder not in (".", "..")
        assert check_folder_id(json.loads(json.dumps(folder))) == folder


@given(JSON_VALUES | PATHS)
def test_a_path_is_a_relative_path_or_a_wire_error(text: Any) -> None:
    path = decoded(check_path, text)
    if path is not None:
        assert encodable(path)
        assert len(path.encode()) <= MAX_PATH_BYTES
        parts = path.split("/")
        assert all(part not in ("", ".", "..") for part in parts)
        assert all(len(part.encode()) <= MAX_NAME_BYTES for part in parts)
        assert parts[0] != MARKER
        assert not any(part.startswith(TEMP_PREFIX) for part in parts)
        assert check_path(json.loads(json.dumps(path))) == path


@given(JSON_VALUES, st.sampled_from([(0, 0o777), (1, 65535), (0, MAX_SEQ), (0, MAX_SIZE),
                                     (-(2**62), 2**62)]))
def test_an_integer_field_is_in_its_range_or_a_wire_error(
    value: Any, bounds: tuple[int, int]
) -> None:
    low, high = bounds
    number = decoded(lambda v: check_int({"n": v}, "n", low, high), value)
    if number is not None:
        assert type(number) is int
        assert low <= number <= high


@given(JSON_VALUES | DIGESTS.map(bytes.hex) | DIGESTS.map(lambda d: d.hex().upper())
       | st.text("0123456789abcdefABCDEF \n\t", min_size=62, max_size=66))
def test_a_digest_is_32_bytes_or_a_wire_error(text: Any) -> None:
    digest = decoded(check_digest, text)
    if digest is not None:
        assert len(digest) == 32
        assert digest.hex() == text.lower()


@st.composite
def damaged_text(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:
    text = draw(texts)
    at = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(("cut", "replace", "insert", "case")))
    if how == "cut":
        return text[:at]
    if how == "case":
        return text.swapcase()
    extra = draw(st.text(CHARS | st.sampled_from("=+/-_ AZaz09"), min_size=1, max_size=2))
    return text[:at] + extra + text[at + (how == "replace") :]


@given(JSON_VALUES | TEXT | NODE_IDS.map(str) | damaged_text(NODE_IDS.map(str)))
def test_a_node_id_parses_to_its_only_spelling_or_a_value_error(text: Any) -> None:
    node = decoded(NodeId.parse, text, ValueError)
    if node is not None:
        assert str(node) == text
        assert NodeId.parse(str(node)) == node


@given(JSON_VALUES | KEY_BLOBS.map(lambda b: base64.b64encode(b).decode())
       | damaged_text(ACCEPTED_KEY_BLOBS.map(lambda b: base64.b64encode(b).decode())))
def test_a_key_from_any_text_is_a_blob_of_its_one_spelling_or_a_wire_error(text: Any) -> None:
    blob = decoded(check_key, text)
    if blob is not None:
        assert base64.b64encode(blob).decode() == text
        assert len(blob) <= MAX_KEY_BYTES


# -- signed request heads and the replay guard ----------------------------------------------------

FIELDS = TEXT | st.sampled_from(["POST", "/v1/hello", "", "1700000000.000", "0" * 32, "\ud800"])
TIMES = (st.floats(allow_nan=True, allow_infinity=True).map(repr)
         | st.floats(1e9, 4e9).map(lambda t: f"{t:.3f}") | TEXT
         | st.sampled_from(["nan", "-inf", "1e400", "1_700_000_000", "\u0661", " 17 ", "0x1"]))
NONCES = (st.binary(min_size=16, max_size=16).map(bytes.hex) | TEXT
          | st.sampled_from(["0" * 32, "F" * 32, "\u0660" * 32]))


def heads(times: st.SearchStrategy[str] = TIMES) -> st.SearchStrategy[RequestHead]:
    return st.builds(RequestHead, method=FIELDS, path=FIELDS, query=FIELDS, target=FIELDS,
                     time=times, nonce=NONCES, digest=FIELDS)


@given(heads())
def test_a_request_head_is_signed_as_bytes_or_refused_with_an_auth_error(head: RequestHead) -> None:
    signed = decoded(RequestHead.canonical, head, AuthError)
    if signed is not None:
        assert signed.decode().count("\n") == len(dataclasses.fields(RequestHead)) + 1
    sent = decoded(RequestHead.sent_at, head, AuthError)
    if sent is not None:
        assert math.isfinite(sent)


def test_a_signed_field_that_is_not_valid_unicode_is_refused_with_an_auth_error() -> None:
    # Found by the property above: aiohttp hands a header's non-UTF-8 bytes on as lone
    # surrogates, and canonical() raised UnicodeEncodeError: a 500 and a logged traceback for
    # any request with such a header and any base64 signature, instead of a throttled 401.
    fields = {"method": "POST", "path": "/v1/hello", "query": "", "target": "SHA256:x",
              "time": "1700000000.000", "nonce": "0" * 32, "digest": "sha256=00"}
    for field in fields:
        head = RequestHead(**{**fields, field: fields[field] + "\udcff"})
        with pytest.raises(AuthError):
            head.canonical()


@given(st.lists(st.tuples(heads(), st.none() | st.floats(-MAX_OFFSET * 2, MAX_OFFSET * 2),
                          st.floats(0, MAX_OFFSET)), max_size=12),
       st.floats(1e9, 4e9))
def test_the_replay_guard_accepts_a_head_once_or_refuses_with_an_auth_error(
    requests: list[tuple[RequestHead, float | None, float]], start: float
) -> None:
    guard = ReplayGuard(capacity=8)  # small, so that a full window is reached too
    wall = start
    for drawn, offset, step in requests:
        wall += step
        # Most drawn times are nowhere near the wall clock; an offset puts one near it.
        head = drawn if offset is None else dataclasses.replace(drawn, time=f"{wall + offset:.3f}")
        if not admitted(guard, head, wall):
            continue
        sent = head.sent_at()
        assert abs(wall - sent) <= MAX_OFFSET
        # Replayed at any moment it would still count as fresh, it is refused.
        with pytest.raises(AuthError):
            guard.check(head, min(wall + step, sent + MAX_OFFSET))


@given(st.lists(st.floats(-MAX_OFFSET * 1.5, MAX_OFFSET * 1.5), min_size=1, max_size=30),
       st.floats(1e9, 4e9))
def test_a_fresh_request_with_a_new_nonce_is_accepted(offsets: list[float], wall: float) -> None:
    guard = ReplayGuard()
    for n, offset in enumerate(offsets):
        nonce = hashlib.sha256(str(n).encode()).hexdigest()[:32]
        head = RequestHead(method="POST", path="/v1/hello", query="", target="t",
                           time=repr(wall + offset), nonce=nonce, digest="d")
        fresh = abs(wall - float(head.time)) <= MAX_OFFSET
        assert admitted(guard, head, wall) == fresh
