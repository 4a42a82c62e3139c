"""Sync messages: signed records, record batches, index and block requests, block answers."""

import base64
import hashlib
import json
import struct
from typing import Any

import pytest

from meshsync.core.errors import WireError
from meshsync.core.paths import RelPath
from meshsync.core.records import BLOCK_SIZE, FileRecord, Kind
from meshsync.core.vclock import Vector
from meshsync.core.wire import (
    BATCH_BUDGET,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_BLOCKS_PER_REQUEST,
    BlockRequest,
    FolderId,
    IndexRequest,
    Records,
    Signed,
    batches,
    pack_blocks,
    size_bound,
    unpack_blocks,
)

ORIGIN = "0123456789abcdef"
DOCS = FolderId("docs")
LARGEST_SEQ = 2**63 - 1  # SQLite's largest integer: the index stores every seq it is given


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


RECORD = FileRecord(RelPath("a/b.txt"), Kind.FILE, Vector.of({ORIGIN: 3}), ORIGIN,
                    size=BLOCK_SIZE + 1, mode=0o600, mtime_ns=1_700_000_000_000_000_000,
                    blocks=(digest(0), digest(1)))
SIGNED = Signed(RECORD, b"SSHSIG\x00\x00\x00\x01 any bytes \xff")
DELETED = Signed(RECORD.tombstone(RECORD.version.bump(ORIGIN), ORIGIN), b"sig")


def signed_record(path: str, blocks: int = 1) -> Signed:
    """A record of a file of `blocks` blocks, with a signature as long as an RSA-4096 one."""
    record = FileRecord(RelPath(path), Kind.FILE, Vector.of({ORIGIN: 2**62, "f" * 16: 9}),
                        ORIGIN, size=blocks * BLOCK_SIZE, mtime_ns=-(2**62),
                        blocks=tuple(digest(n) for n in range(blocks)))
    return Signed(record, bytes(range(256)) * 3)


def records_body(**changes: object) -> bytes:
    data: dict[str, Any] = {"folder": "docs", "epoch": "e1", "seq": 9,
                            "records": [SIGNED.to_json()]}
    return json.dumps({**data, **changes}).encode()


def signed_data(**changes: object) -> dict[str, Any]:
    return {**SIGNED.to_json(), **changes}


@pytest.mark.parametrize("signed", [SIGNED, DELETED, Signed(RECORD, b"")])
def test_a_signed_record_survives_a_trip_over_the_wire(signed: Signed) -> None:
    assert Signed.from_json(json.loads(json.dumps(signed.to_json()))) == signed


def test_a_signature_travels_as_base64() -> None:
    assert SIGNED.to_json()["signature"] == base64.b64encode(SIGNED.signature).decode()


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "sig",
        {"record": RECORD.to_json()},
        signed_data(signature=None),
        signed_data(signature=1),
        signed_data(signature=["AAAA"]),
        signed_data(signature="!!!!"),
        signed_data(signature="AAA"),  # bad padding
        signed_data(signature="AA AA"),
        signed_data(signature="ÀÀÀÀ"),
        signed_data(signature="A" * 8196),
        signed_data(record=None),
        signed_data(record={**RECORD.to_json(), "mode": 0o4755}),
    ],
    ids=["null", "list", "string", "no-signature", "null-signature", "int-signature",
         "list-signature", "not-base64", "bad-padding", "space", "non-ascii", "oversized",
         "no-record", "bad-record"],
)
def test_a_bad_signed_record_is_refused(data: object) -> None:
    with pytest.raises(WireError):
        Signed.from_json(data)


def test_the_largest_signature_is_allowed() -> None:
    signed = Signed.from_json(signed_data(signature="A" * 8192))
    assert len(signed.signature) == 8192 * 3 // 4


@pytest.mark.parametrize(
    "records",
    [
        Records(DOCS, (SIGNED, DELETED), epoch="3f9c", seq=12),
        Records(FolderId("ü ☃"), ()),
        Records(DOCS, (SIGNED,), epoch="e" * 64, seq=LARGEST_SEQ),
    ],
)
def test_a_batch_survives_a_trip_over_the_wire(records: Records) -> None:
    assert Records.from_json(records.to_json()) == records


def test_a_notice_without_seq_or_epoch_parses_with_seq_zero() -> None:
    body = json.dumps({"folder": "docs", "records": [SIGNED.to_json()]}).encode()
    assert Records.from_json(body) == Records(DOCS, (SIGNED,), epoch="", seq=0)


def test_the_most_records_in_a_batch_are_allowed() -> None:
    batch = Records.from_json(records_body(records=[SIGNED.to_json()] * MAX_BATCH_RECORDS))
    assert len(batch.records) == MAX_BATCH_RECORDS


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"\xff",
        records_body(records=[{}] * (MAX_BATCH_RECORDS + 1)),
        records_body(records=None),
        records_body(records={"0": SIGNED.to_json()}),
        records_body(records=[SIGNED.to_json(), {}]),
        records_body(epoch=1),
        records_body(epoch="e" * 65),
        records_body(seq=-1),
        records_body(seq=True),
        records_body(seq=1.0),
        records_body(seq="1"),
        records_body(seq=None),
        records_body(seq=LARGEST_SEQ + 1),
    ],
    ids=["empty", "not-json", "array", "bad-utf8", "too-many-records", "null-records",
         "object-records", "one-bad-record", "int-epoch", "long-epoch", "negative-seq",
         "bool-seq", "float-seq", "string-seq", "null-seq", "huge-seq"],
)
def test_a_bad_batch_is_refused(body: bytes) -> None:
    with pytest.raises(WireError):
        Records.from_json(body)


@pytest.mark.parametrize(
    "folder", [None, "", ".", "..", "a/b", "/", "a\0", "\ud800", "x" * 256, 1, ["docs"]],
    ids=["null", "empty", "dot", "dot-dot", "slash", "root", "nul", "surrogate", "long", "int",
         "list"],
)
def test_every_sync_message_refuses_a_bad_folder_id(folder: object) -> None:
    with pytest.raises(WireError):
        Records.from_json(records_body(folder=folder))
    with pytest.raises(WireError):
        IndexRequest.from_json(json.dumps({"folder": folder, "since": 0}).encode())
    with pytest.raises(WireError):
        BlockRequest.from_json(json.dumps({"folder": folder, "hashes": [digest(0).hex()]}).encode())


@pytest.mark.parametrize("since", [0, 1, 12345, LARGEST_SEQ])
def test_an_index_request_survives_a_trip_over_the_wire(since: int) -> None:
    request = IndexRequest(DOCS, since)
    assert IndexRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize("since", [-1, True, 1.5, "0", None, LARGEST_SEQ + 1])
def test_an_index_request_refuses_a_bad_since(since: object) -> None:
    with pytest.raises(WireError):
        IndexRequest.from_json(json.dumps({"folder": "docs", "since": since}).encode())


def test_an_index_request_needs_since() -> None:
    with pytest.raises(WireError):
        IndexRequest.from_json(b'{"folder": "docs"}')


@pytest.mark.parametrize("count", [1, 2, MAX_BLOCKS_PER_REQUEST])
def test_a_block_request_survives_a_trip_over_the_wire(count: int) -> None:
    request = BlockRequest(DOCS, tuple(digest(n) for n in range(count)))
    assert BlockRequest.from_json(request.to_json()) == request


def hashes_body(hashes: object) -> bytes:
    return json.dumps({"folder": "docs", "hashes": hashes}).encode()


@pytest.mark.parametrize(
    "hashes",
    [[], [digest(0).hex()] * (MAX_BLOCKS_PER_REQUEST + 1), None, digest(0).hex(),
     {"0": digest(0).hex()}],
    ids=["none", "too-many", "null", "string", "object"],
)
def test_a_block_request_asks_for_one_to_64_hashes(hashes: object) -> None:
    with pytest.raises(WireError):
        BlockRequest.from_json(hashes_body(hashes))


@pytest.mark.parametrize(
    "bad",
    ["", "ab", "ab" * 33, "zz" * 32, " " * 62 + "ab", "ab" * 31 + "\n\n", "é" * 64, 7, None],
    ids=["empty", "short", "long", "not-hex", "spaces", "newlines", "non-ascii", "int", "null"],
)
def test_a_block_request_refuses_a_bad_hash(bad: object) -> None:
    with pytest.raises(WireError):
        BlockRequest.from_json(hashes_body([digest(0).hex(), bad]))


@pytest.mark.parametrize(
    "blocks",
    [
        [],
        [b"x"],
        [None],
        [b"a" * BLOCK_SIZE, None, b"tail", None],
        [None, None, None],
    ],
    ids=["nothing", "one", "absent", "mixed", "all-absent"],
)
def test_block_answers_survive_packing(blocks: list[bytes | None]) -> None:
    assert unpack_blocks(pack_blocks(blocks), len(blocks)) == blocks


def test_a_block_answer_is_a_length_then_the_bytes_and_absent_is_length_zero() -> None:
    assert pack_blocks([b"abc", None]) == b"\0\0\0\x03abc\0\0\0\0"
    assert unpack_blocks(b"\0\0\0\0", 1) == [None]


def test_the_blocks_of_an_answer_are_views_of_it_not_copies() -> None:
    body = pack_blocks([b"x" * BLOCK_SIZE, b"tail"])
    blocks = unpack_blocks(body, 2)
    assert all(isinstance(b, memoryview) and b.obj is body for b in blocks)
    assert [bytes(b) for b in blocks if b is not None] == [b"x" * BLOCK_SIZE, b"tail"]


def test_a_truncated_block_answer_is_refused_at_every_cut() -> None:
    body = pack_blocks([b"first", None, b"third"])
    for cut in range(len(body)):
        with pytest.raises(WireError):
            unpack_blocks(body[:cut], 3)


def test_a_block_longer_than_a_block_is_refused() -> None:
    body = struct.pack(">I", BLOCK_SIZE + 1) + b"x" * (BLOCK_SIZE + 1)
    with pytest.raises(WireError):
        unpack_blocks(body, 1)


def test_a_full_block_is_allowed() -> None:
    body = struct.pack(">I", BLOCK_SIZE) + b"x" * BLOCK_SIZE
    assert unpack_blocks(body, 1) == [b"x" * BLOCK_SIZE]


def test_a_huge_length_is_refused_without_reading_on() -> None:
    with pytest.raises(WireError):
        unpack_blocks(b"\xff\xff\xff\xff", 1)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(WireError):
        unpack_blocks(pack_blocks([b"abc"]) + b"\0", 1)


@pytest.mark.parametrize("count", [0, 1, 3, 4])
def test_an_answer_with_another_number_of_blocks_is_refused(count: int) -> None:
    with pytest.raises(WireError):
        unpack_blocks(pack_blocks([b"a", None]), count)


def test_batches_fit_in_one_message_each_whatever_their_records_hold() -> None:
    # Sixteen records of 1 GiB files are 8.8 MB of JSON: over what one message carries.
    big = [signed_record(f"big-{n}.iso", blocks=8192) for n in range(16)]
    small = [signed_record(f"small-{n}.txt") for n in range(3000)]
    for records in (big, small, big + small):
        runs = list(batches(records))
        assert [s for run in runs for s in run] == records  # all of them, in order
        for run in runs:
            body = Records(FolderId("Sync"), run, "epoch", 2**63 - 1).to_json()
            assert len(body) <= MAX_BATCH_BYTES
            assert len(run) <= MAX_BATCH_RECORDS
            assert Records.from_json(body).records == run


def test_a_record_too_large_for_any_message_is_left_out_of_every_batch() -> None:
    huge = signed_record("huge.img", blocks=130_000)  # a 16 GiB file: 8.7 MB of hashes
    small = signed_record("a.txt")
    assert size_bound(huge) > BATCH_BUDGET
    assert list(batches([small, huge, small])) == [(small, small)]
