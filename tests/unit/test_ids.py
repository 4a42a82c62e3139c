"""Node IDs: parsing the `SHA256:` form, its short and DNS forms, and ordering by digest bytes."""

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsync.core.ids import NodeId, short_of_key

KEYS = [b"ssh-ed25519 alice", b"ssh-ed25519 bob", b"ecdsa-sha2-nistp256 carol", b""]


def id_text(digest: bytes) -> str:
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@pytest.mark.parametrize("key", KEYS)
def test_id_of_a_key_survives_printing_and_parsing(key: bytes) -> None:
    node = NodeId.of_key(key)
    text = str(node)
    assert text.startswith("SHA256:")
    assert len(text) == 50
    assert NodeId.parse(text) == node
    assert str(NodeId.parse(text)) == text


def test_different_keys_have_different_ids() -> None:
    assert len({NodeId.of_key(k) for k in KEYS}) == len(KEYS)


def test_an_id_is_the_sha256_of_the_key_blob() -> None:
    assert NodeId.of_key(b"blob").digest == hashlib.sha256(b"blob").digest()


VALID = str(NodeId.of_key(b"ssh-ed25519 alice"))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("MD5:" + VALID[7:], id="md5-prefix"),
        pytest.param("sha256:" + VALID[7:], id="lowercase-prefix"),
        pytest.param("SHA512:" + VALID[7:], id="sha512-prefix"),
        pytest.param(VALID[7:], id="no-prefix"),
        pytest.param(" " + VALID[:-1], id="leading-space"),
    ],
)
def test_parse_refuses_a_wrong_prefix(text: str) -> None:
    with pytest.raises(ValueError, match="not a node ID"):
        NodeId.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("SHA256:", id="prefix-only"),
        pytest.param(VALID[:-1], id="one-short"),
        pytest.param(VALID + "A", id="one-long"),
        pytest.param(VALID + "=", id="padded"),
        pytest.param(VALID + "\n", id="trailing-newline"),
    ],
)
def test_parse_refuses_a_wrong_length(text: str) -> None:
    with pytest.raises(ValueError, match="not a node ID"):
        NodeId.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(VALID[:-1] + "!", id="punctuation"),
        pytest.param(VALID[:-1] + "-", id="urlsafe-alphabet"),
        pytest.param(VALID[:20] + " " + VALID[21:], id="space"),
        pytest.param(VALID[:-1] + "é", id="non-ascii"),
        pytest.param(VALID[:-2] + "==", id="padding-inside"),
        pytest.param("SHA256:" + "A" * 42 + "B", id="non-canonical-trailing-bits"),
    ],
)
def test_parse_refuses_bad_base64(text: str) -> None:
    assert len(text) == 50
    with pytest.raises(ValueError, match="node ID"):
        NodeId.parse(text)


@pytest.mark.parametrize("value", [None, 42, VALID.encode(), ["SHA256:"], NodeId.of_key(b"k")])
def test_parse_refuses_anything_but_a_string(value: object) -> None:
    with pytest.raises(ValueError, match="not a node ID"):
        NodeId.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_an_id_is_exactly_32_digest_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        NodeId(bytes(size))


def test_ids_order_by_digest_bytes_not_by_their_text() -> None:
    # 0x00… prints as "SHA256:AAAA…", 0xfc… as "SHA256:/AAA…"; "/" sorts before "A" in ASCII.
    low = NodeId(b"\x00" + b"\xff" * 31)
    high = NodeId(b"\xfc" + b"\x00" * 31)
    assert str(high) < str(low)
    assert low < high
    assert min(high, low) == low
    assert min([str(high), str(low)]) == str(high)  # the text would have picked the wrong one
    assert sorted([high, low]) == [low, high]


def test_parsed_ids_keep_the_byte_order() -> None:
    ids = [NodeId(bytes([b]) + bytes(31)) for b in (0xFC, 0x00, 0x80, 0x3E, 0xF8)]
    parsed = [NodeId.parse(str(i)) for i in ids]
    assert min(parsed).digest[0] == 0x00
    assert [p.digest[0] for p in sorted(parsed)] == [0x00, 0x3E, 0x80, 0xF8, 0xFC]


def test_short_form_is_the_first_eight_characters_after_the_prefix() -> None:
    node = NodeId.of_key(b"ssh-ed25519 alice")
    assert len(node.short) == 8
    assert str(node).startswith("SHA256:" + node.short.replace("_", "/"))
    assert short_of_key(node.key) == node.short


def test_the_short_form_names_files_too_and_is_known_in_either_alphabet() -> None:
    node = NodeId(b"\xfb\xef\xbe\xff\xff\xff" + bytes(26))
    assert str(node).startswith("SHA256:++++////")
    assert node.short == "++++____"  # never a leading -, which would read as an option
    assert node.known_as("++++____")
    assert node.known_as("++++////")
    assert node.known_as(str(node))
    assert not node.known_as("++++___")


@pytest.mark.parametrize("digest", [bytes(32), b"\xff" * 32, b"\xfb\xef\xbe" * 10 + b"\xff\xff"])
def test_label_is_a_dns_safe_label(digest: bytes) -> None:
    label = NodeId(digest).label
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", label), label
    assert len(label) <= 63


def test_labels_of_different_ids_differ() -> None:
    labels = {NodeId.of_key(str(n).encode()).label for n in range(1000)}
    assert len(labels) == 1000


def test_label_differs_for_ids_whose_text_differs_only_in_case() -> None:
    # DNS compares names case-insensitively, so a label made of the base64 text could collide.
    upper = NodeId.parse("SHA256:" + "B" * 42 + "0")
    lower = NodeId.parse("SHA256:" + "b" * 42 + "0")
    assert upper != lower
    assert upper.label.lower() != lower.label.lower()


@given(st.binary(min_size=32, max_size=32))
def test_a_short_id_names_a_file_and_is_never_taken_for_an_option(digest: bytes) -> None:
    node = NodeId(digest)
    assert len(node.short) == 8
    assert "/" not in node.short
    assert not node.short.startswith("-")  # `meshsync untrust SHORT` must not read as a flag
    assert short_of_key(node.key) == node.short
    assert node.known_as(str(node)[7:15])  # as the full ID begins
