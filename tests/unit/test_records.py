"""File records: their wire form, what a peer may send as one, and what compares equal."""

import copy
import hashlib
import json
import random
from dataclasses import replace
from typing import Any

import pytest

from meshsync.core.errors import WireError
from meshsync.core.paths import RelPath
from meshsync.core.records import BLOCK_SIZE, MAX_SIZE, MAX_TARGET, FileRecord, Kind, block_count
from meshsync.core.vclock import Vector

A, B = "aaaaaaaaaaaaaaaa", "0123456789abcdef"
V1 = Vector.of({A: 1})
V2 = Vector.of({A: 2, B: 1})


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def file(size: int = 2 * BLOCK_SIZE + 1, **changes: Any) -> FileRecord:
    record = FileRecord(
        path=RelPath("docs/report.odt"),
        kind=Kind.FILE,
        version=V1,
        origin=A,
        size=size,
        mode=0o640,
        mtime_ns=1_700_000_000_123_456_789,
        blocks=tuple(digest(n) for n in range(block_count(size))),
    )
    return replace(record, **changes)


DIR = FileRecord(RelPath("docs"), Kind.DIR, V1, A, mode=0o755, mtime_ns=5)
LINK = FileRecord(RelPath("docs/latest"), Kind.SYMLINK, V2, B, mode=0o777, target="../a b/ü")
TOMBSTONE = file().tombstone(V2, B)


def wire(record: FileRecord, **changes: object) -> dict[str, Any]:
    return {**record.to_json(), **changes}


def without(record: FileRecord, key: str) -> dict[str, Any]:
    data = record.to_json()
    del data[key]
    return data


def test_block_count_rounds_up_and_an_empty_file_has_none() -> None:
    assert [block_count(n) for n in (0, 1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE)] == [
        0, 1, 1, 2, 3]


@pytest.mark.parametrize(
    "record",
    [
        file(),
        file(size=0),
        file(size=1),
        file(size=BLOCK_SIZE),
        file(size=BLOCK_SIZE, mode=0o777, mtime_ns=-(2**62)),
        file(size=0, mode=0, mtime_ns=2**62, path=RelPath("日本語/☃")),
        DIR,
        LINK,
        TOMBSTONE,
        LINK.tombstone(V2.bump(A), A),
        DIR.tombstone(V2, B),
        file(origin=B, author=A),
    ],
    ids=["multi-block", "empty", "one-byte", "one-block", "limits-low", "limits-high", "dir",
         "symlink", "tombstone", "link-tombstone", "dir-tombstone", "resolution"],
)
def test_a_record_survives_a_trip_over_the_wire(record: FileRecord) -> None:
    assert FileRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_the_wire_form_spells_hashes_in_hex() -> None:
    data = file(size=BLOCK_SIZE).to_json()
    assert data["blocks"] == [digest(0).hex()]
    assert data["kind"] == "file"
    assert data["version"] == {A: 1}


def test_target_and_blocks_may_be_left_out() -> None:
    data = without(DIR, "target")
    del data["blocks"]
    assert FileRecord.from_json(data) == DIR


def refused(data: object) -> str:
    with pytest.raises(WireError) as caught:
        FileRecord.from_json(data)
    return str(caught.value)


@pytest.mark.parametrize("data", [None, [], "file", 1], ids=["null", "list", "string", "int"])
def test_a_record_must_be_an_object(data: object) -> None:
    refused(data)


@pytest.mark.parametrize(
    "data",
    [
        wire(file(), size=2 * BLOCK_SIZE),  # three blocks for two blocks' worth
        wire(file(), size=3 * BLOCK_SIZE + 1),
        wire(file(size=0), size=1),
        wire(file(size=1), size=0),
        wire(file(size=1), blocks=[]),
        wire(file(), blocks=[]),
    ],
)
def test_blocks_must_match_the_size(data: dict[str, Any]) -> None:
    refused(data)


@pytest.mark.parametrize(
    "data",
    [
        wire(DIR, size=1),
        wire(DIR, blocks=[digest(0).hex()]),
        wire(TOMBSTONE, size=1),
        wire(TOMBSTONE, size=BLOCK_SIZE, blocks=[digest(0).hex()]),
        wire(TOMBSTONE, blocks=[digest(0).hex()]),
        wire(LINK, size=len(LINK.target)),
        wire(LINK, blocks=[digest(0).hex()]),
    ],
    ids=["dir-size", "dir-blocks", "tomb-size", "tomb-size-blocks", "tomb-blocks", "link-size",
         "link-blocks"],
)
def test_only_a_file_that_exists_has_a_size_or_blocks(data: dict[str, Any]) -> None:
    refused(data)


@pytest.mark.parametrize(
    "data",
    [wire(file(), target="x"), wire(file(size=0), target="x"), wire(DIR, target="..")],
)
def test_only_a_symlink_has_a_target(data: dict[str, Any]) -> None:
    refused(data)


@pytest.mark.parametrize(
    "target", [1, None, ["x"], "a\0b", "x" * (MAX_TARGET + 1)],
    ids=["int", "null", "list", "nul", "long"],
)
def test_a_bad_symlink_target_is_refused(target: object) -> None:
    refused(wire(LINK, target=target))


def test_the_longest_symlink_target_is_allowed() -> None:
    link = replace(LINK, target="x" * MAX_TARGET)
    assert FileRecord.from_json(link.to_json()) == link


@pytest.mark.parametrize("kind", ["FILE", "fifo", "", None, 1, ["file"]])
def test_a_bad_kind_is_refused(kind: object) -> None:
    refused(wire(DIR, kind=kind))


def test_a_missing_kind_is_refused() -> None:
    refused(without(DIR, "kind"))


@pytest.mark.parametrize(
    "origin",
    [None, 1, "", "a" * 15, "a" * 17, "A" * 16, "g" * 16, "aaaaaaaa-aaaaaaa", "SHA256:aaaaaaaa"],
)
def test_an_origin_must_be_a_vector_key(origin: object) -> None:
    refused(wire(file(), origin=origin))


def test_a_missing_origin_is_refused() -> None:
    refused(without(file(), "origin"))


@pytest.mark.parametrize(
    "mode", [0o1000, 0o1777, 0o2755, 0o4755, 0o7777, -1, True, 0o644 + 0.5, "644", None],
    ids=["sticky-only", "sticky", "setgid", "setuid", "all", "negative", "bool", "float",
         "string", "null"],
)
def test_mode_is_permission_bits_only(mode: object) -> None:
    refused(wire(file(), mode=mode))


@pytest.mark.parametrize(
    "mtime", [2**62 + 1, -(2**62) - 1, 1.5, True, "1", None],
)
def test_a_bad_mtime_is_refused(mtime: object) -> None:
    refused(wire(file(), mtime_ns=mtime))


@pytest.mark.parametrize("size", [-1, MAX_SIZE + 1, True, 1.0, "0", None])
def test_a_bad_size_is_refused(size: object) -> None:
    refused(wire(file(size=0), size=size))


@pytest.mark.parametrize("deleted", [None, 0, 1, "false", "true"])
def test_deleted_must_be_true_or_false(deleted: object) -> None:
    refused(wire(DIR, deleted=deleted))


@pytest.mark.parametrize("key", ["path", "version", "deleted", "size", "mode", "mtime_ns"])
def test_a_missing_field_is_refused(key: str) -> None:
    refused(without(file(), key))


@pytest.mark.parametrize("version", [{}, None, [], {"A" * 16: 1}, {A: 0}, {A: -1}])
def test_a_record_needs_a_valid_non_empty_version(version: object) -> None:
    refused(wire(file(), version=version))


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../x", ".meshsync/x", "a\0b"])
def test_a_bad_path_is_refused(path: str) -> None:
    refused(wire(file(), path=path))


@pytest.mark.parametrize(
    "block",
    [
        "ab",
        "ab" * 33,
        "zz" * 32,
        "0x" + "ab" * 31,
        " " * 62 + "ab",  # bytes.fromhex skips spaces: a one-byte "digest"
        "ab" * 31 + "  ",
        "ab ab " * 10 + "abab",
        "ab" * 31 + "\tb",
        "é" * 64,
        1,
        None,
        ["ab" * 32],
    ],
)
def test_a_block_hash_must_be_64_hex_digits(block: object) -> None:
    refused(wire(file(size=1), blocks=[block]))


def test_blocks_must_be_a_list() -> None:
    refused(wire(file(size=1), blocks=digest(0).hex()))


def test_the_canonical_form_is_the_same_for_equal_records() -> None:
    again = FileRecord.from_json(json.loads(json.dumps(file().to_json())))
    assert again.canonical("docs") == file().canonical("docs")


def test_the_canonical_form_is_bound_to_its_folder() -> None:
    assert file().canonical("docs") != file().canonical("photos")


def test_the_canonical_form_is_compact_sorted_json() -> None:
    canonical = DIR.canonical("docs")
    assert canonical == json.dumps(
        ["docs", DIR.to_json()], sort_keys=True, separators=(",", ":")
    ).encode()
    assert b" " not in canonical


@pytest.mark.parametrize(
    "changes",
    [
        {"path": RelPath("docs/other.odt")},
        {"kind": Kind.DIR, "size": 0, "blocks": ()},
        {"version": V2},
        {"origin": B},
        {"deleted": True, "size": 0, "blocks": ()},
        {"mode": 0o644},
        {"mtime_ns": 1},
        {"blocks": (digest(9), digest(1), digest(2))},
        {"author": B},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_every_field_is_bound_by_the_canonical_form(changes: dict[str, Any]) -> None:
    assert replace(file(), **changes).canonical("docs") != file().canonical("docs")


def test_a_record_without_an_author_keeps_the_wire_form_and_signature_it_had() -> None:
    # What nodes signed before authors existed must verify the same: no author, no key.
    assert set(file().to_json()) == {"path", "kind", "version", "origin", "deleted", "size",
                                     "mode", "mtime_ns", "blocks", "target"}


def test_the_author_names_who_made_the_content_of_a_resolution() -> None:
    resolved = file(origin=B, author=A)
    assert resolved.to_json()["author"] == A
    assert (resolved.made_by, file().made_by) == (A, A)


@pytest.mark.parametrize(
    "author", [A, "", None, 1, "A" * 16, "a" * 15, "g" * 16],
    ids=["the-origin", "empty", "null", "int", "upper", "short", "not-hex"],
)
def test_a_bad_author_is_refused(author: object) -> None:
    # Named only when it is not the origin: one spelling per record, one signature.
    refused(wire(file(), author=author))


def test_a_tombstone_names_no_author() -> None:
    assert file(origin=B, author=A).tombstone(V2, B).author == ""


def test_same_content_ignores_metadata_and_version() -> None:
    other = file(version=V2, origin=B, mode=0o600, mtime_ns=1)
    assert file().same_content(other)
    assert not file().same_metadata(other)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (file(), file(blocks=(digest(7), digest(1), digest(2)))),
        (file(), TOMBSTONE),
        (file(size=0), replace(DIR, path=file().path)),
        (LINK, replace(LINK, target="elsewhere")),
        (LINK, LINK.tombstone(V2, A)),
        (DIR, DIR.tombstone(V2, A)),
    ],
    ids=["blocks", "deleted", "empty-file-vs-dir", "target", "link-deleted", "dir-deleted"],
)
def test_different_content_is_not_the_same(left: FileRecord, right: FileRecord) -> None:
    assert not left.same_content(right)
    assert not right.same_content(left)
    assert not left.same_metadata(right)


def test_same_metadata_needs_mode_and_mtime_too() -> None:
    assert file().same_metadata(file(version=V2, origin=B))
    assert not file().same_metadata(file(mode=0o600))
    assert not file().same_metadata(file(mtime_ns=1))
    assert DIR.same_content(replace(DIR, mode=0o700))
    assert not DIR.same_metadata(replace(DIR, mode=0o700))


def test_a_tombstone_is_the_path_deleted_as_a_new_version() -> None:
    assert replace(
        file(), version=V2, origin=B, deleted=True, size=0, blocks=(), target="") == TOMBSTONE
    link = LINK.tombstone(V2.bump(A), A)
    assert (link.path, link.kind, link.deleted, link.target) == (LINK.path, Kind.SYMLINK, True, "")
    assert FileRecord.from_json(link.to_json()) == link


def test_two_tombstones_of_one_path_have_the_same_content() -> None:
    assert TOMBSTONE.same_content(file(mtime_ns=1, size=0).tombstone(V1, A))


SAMPLES: list[object] = [
    None, True, False, 0, 1, -1, 0o777, 0o4755, 2**53, 2**62 + 1, 2**64, 1.5, float("nan"),
    "", "a", "file", "dir", "symlink", "x\0", "/abs", "../up", ".meshsync/x", "\ud800",
    A, "A" * 16, "ab" * 32, " " * 62 + "ab", "zz" * 32, [], [None], ["ab" * 32], {}, {A: 1},
    {A: 0}, {A: True}, {"x": 1}, [[A, 1]],
]


def mutate(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*data, "extra"])
        roll = rng.random()
        if roll < 0.15:
            data.pop(key, None)
        elif roll < 0.3 and isinstance(data.get(key), list) and data[key]:
            data[key][rng.randrange(len(data[key]))] = rng.choice(SAMPLES)
        elif roll < 0.4 and isinstance(data.get(key), list):
            data[key].append(rng.choice(SAMPLES))
        elif roll < 0.5 and isinstance(data.get(key), dict):
            data[key][rng.choice([A, B, "bad"])] = rng.choice(SAMPLES)
        else:
            data[key] = rng.choice(SAMPLES)
    return data


def test_mutated_records_are_parsed_valid_or_refused_with_a_wire_error() -> None:
    rng = random.Random(31337)
    bases = [r.to_json() for r in (file(), file(size=0), file(size=1), DIR, LINK, TOMBSTONE)]
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        data = mutate(rng.choice(bases), rng)
        try:
            record = FileRecord.from_json(data)
        except WireError:
            outcomes["refused"] += 1
            continue
        outcomes["parsed"] += 1
        assert FileRecord.from_json(json.loads(json.dumps(record.to_json()))) == record, data
        assert all(len(b) == 32 for b in record.blocks), data
        assert 0 <= record.mode <= 0o777, data
        assert record.version.counters, data
        assert len(record.blocks) == block_count(record.size), data
    assert min(outcomes.values()) > 100, outcomes
