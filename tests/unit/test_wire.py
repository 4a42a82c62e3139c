"""Hello messages: what a peer may send, and a clear WireError for anything else."""

import json
import random
from typing import Any

import pytest

from meshsync.core.errors import WireError
from meshsync.core.ids import NodeId
from meshsync.core.wire import (
    MAX_FOLDERS,
    MAX_HELLO_BYTES,
    MAX_MEMBER_ADDRESSES,
    MAX_NAME,
    FolderId,
    Hello,
    MemberAddress,
    frames_digest,
    pack_blocks,
)

COORDINATOR = NodeId.of_key(b"ssh-ed25519 coordinator")
MEMBER = NodeId.of_key(b"ssh-ed25519 member")


def valid() -> dict[str, Any]:
    return {
        "name": "laptop",
        "port": 22300,
        "folders": ["docs", "photos"],
        "term": 7,
        "coordinator": str(COORDINATOR),
        "leaving": False,
        "hears_coordinator": True,
        "members": [{"id": str(MEMBER), "address": "192.168.1.20:22300"}],
    }


def body(**changes: object) -> bytes:
    return json.dumps({**valid(), **changes}).encode()


def without(key: str) -> bytes:
    data = valid()
    del data[key]
    return json.dumps(data).encode()


def refused(raw: bytes) -> str:
    with pytest.raises(WireError) as caught:
        Hello.from_json(raw)
    return str(caught.value)


@pytest.mark.parametrize(
    "hello",
    [
        Hello("laptop", 22300, frozenset({FolderId("docs"), FolderId("photos")}), 7, COORDINATOR),
        Hello("x", 1, frozenset(), 0, None),
        Hello("büro ☃", 65535, frozenset({FolderId("ümlaut"), FolderId(".hidden")}), 2**53, None,
              leaving=True),
        Hello("y", 2, frozenset({FolderId("docs")}), 3, COORDINATOR, hears_coordinator=True,
              members=(MemberAddress(MEMBER, "10.0.0.2:1"), MemberAddress(COORDINATOR,
                       "[fe80::1]:65535"))),
    ],
)
def test_hello_survives_a_trip_over_the_wire(hello: Hello) -> None:
    assert Hello.from_json(hello.to_json()) == hello


def test_a_valid_hello_parses_to_what_was_sent() -> None:
    assert Hello.from_json(body()) == Hello(
        name="laptop",
        port=22300,
        folders=frozenset({FolderId("docs"), FolderId("photos")}),
        term=7,
        coordinator=COORDINATOR,
        leaving=False,
        hears_coordinator=True,
        members=(MemberAddress(MEMBER, "192.168.1.20:22300"),),
    )


def test_leaving_and_coordinator_may_be_left_out() -> None:
    data = valid()
    del data["leaving"]
    data["coordinator"] = None
    hello = Hello.from_json(json.dumps(data).encode())
    assert hello.leaving is False
    assert hello.coordinator is None


def test_a_hello_of_a_node_that_predates_vouches_and_member_addresses_is_taken() -> None:
    data = valid()
    del data["hears_coordinator"], data["members"]
    hello = Hello.from_json(json.dumps(data).encode())
    assert hello.hears_coordinator is False  # no vouch: liveness as before
    assert hello.members == ()


def test_limits_themselves_are_allowed() -> None:
    folders = [f"f{n}" for n in range(MAX_FOLDERS - 1)] + ["é" * 127 + "x"]  # 255 bytes
    hello = Hello.from_json(body(name="n" * MAX_NAME, folders=folders, port=65535, term=2**53))
    assert len(hello.folders) == MAX_FOLDERS
    padded = body() + b" " * (MAX_HELLO_BYTES - len(body()))
    assert len(padded) == MAX_HELLO_BYTES
    assert Hello.from_json(padded).name == "laptop"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"hello", id="text"),
        pytest.param(b"\xff\xfe\xfa", id="not-utf8"),
        pytest.param(b"{'name': 'x'}", id="python-repr"),
        pytest.param(b"\x00" * 16, id="nul-bytes"),
    ],
)
def test_non_json_is_refused(raw: bytes) -> None:
    assert "not JSON" in refused(raw)


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"hello"', b"42", b"true", b"NaN", b"[{}]"])
def test_json_that_is_not_an_object_is_refused(raw: bytes) -> None:
    assert "must be a JSON object" in refused(raw)


def test_a_body_over_the_size_limit_is_refused_before_parsing() -> None:
    padded = body() + b" " * (MAX_HELLO_BYTES + 1 - len(body()))
    assert "too large" in refused(padded)
    assert "too large" in refused(b"[" * (MAX_HELLO_BYTES + 1))


def test_deeply_nested_json_is_refused() -> None:
    assert refused(b"[" * 50_000)
    assert refused(b'{"name":' + b"[" * 30_000 + b"]" * 30_000 + b"}")


def test_an_integer_too_long_to_convert_is_refused() -> None:
    assert refused(b'{"name":"a","port":' + b"1" * 5000 + b',"folders":[],"term":0}')


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("n" * (MAX_NAME + 1), id="too-long"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("\x1b[31mred", id="escape-sequence"),
        pytest.param("\u202eevil", id="bidi-override"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
        pytest.param(["laptop"], id="list"),
        pytest.param(True, id="bool"),
    ],
)
def test_a_bad_name_is_refused(name: object) -> None:
    assert "bad name" in refused(body(name=name))


def test_a_missing_name_is_refused() -> None:
    assert "bad name" in refused(without("name"))


@pytest.mark.parametrize(
    "port",
    [0, -1, 65536, 70000, "22300", True, False, 22300.0, None, [22300]],
    ids=repr,
)
def test_a_bad_port_is_refused(port: object) -> None:
    assert "port must be an integer in [1, 65535]" in refused(body(port=port))


def test_a_missing_port_is_refused() -> None:
    assert "port" in refused(without("port"))


@pytest.mark.parametrize("term", [-1, 2**53 + 1, 1.0, 7.5, "7", True, None], ids=repr)
def test_a_bad_term_is_refused(term: object) -> None:
    assert "term must be an integer" in refused(body(term=term))


def test_too_many_folders_are_refused() -> None:
    folders = [f"f{n}" for n in range(MAX_FOLDERS + 1)]
    assert "at most 256" in refused(body(folders=folders))


@pytest.mark.parametrize("folders", [None, "docs", {"docs": 1}, 3], ids=repr)
def test_folders_that_are_not_a_list_are_refused(folders: object) -> None:
    assert "folders must be a list" in refused(body(folders=folders))


@pytest.mark.parametrize(
    "folder",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="dot"),
        pytest.param("..", id="dotdot"),
        pytest.param("a/b", id="slash"),
        pytest.param("/etc", id="absolute"),
        pytest.param("a\0b", id="nul"),
        pytest.param("é" * 150, id="300-bytes"),
        pytest.param("x" * 256, id="256-bytes"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param(7, id="number"),
        pytest.param(None, id="null"),
        pytest.param(["docs"], id="list"),
    ],
)
def test_a_bad_folder_id_is_refused(folder: object) -> None:
    assert "bad folder ID" in refused(body(folders=["docs", folder]))


@pytest.mark.parametrize(
    "coordinator",
    [
        pytest.param("", id="empty"),
        pytest.param("SHA256:short", id="too-short"),
        pytest.param("MD5:" + str(COORDINATOR)[7:], id="wrong-prefix"),
        pytest.param(str(COORDINATOR)[:-1] + "!", id="bad-base64"),
        pytest.param(str(COORDINATOR)[:-1] + "\ud800", id="lone-surrogate"),
        pytest.param(COORDINATOR.digest.hex(), id="hex"),
        pytest.param(42, id="number"),
        pytest.param(True, id="bool"),
        pytest.param([str(COORDINATOR)], id="list"),
    ],
)
def test_a_coordinator_that_is_not_a_node_id_is_refused(coordinator: object) -> None:
    assert "node ID" in refused(body(coordinator=coordinator))


@pytest.mark.parametrize("leaving", [1, 0, "true", "false", None, [], {}], ids=repr)
def test_leaving_that_is_not_a_bool_is_refused(leaving: object) -> None:
    assert "leaving must be true or false" in refused(body(leaving=leaving))


@pytest.mark.parametrize("hears", [1, 0, "true", None, [], {}], ids=repr)
def test_hears_coordinator_that_is_not_a_bool_is_refused(hears: object) -> None:
    assert "hears_coordinator must be true or false" in refused(body(hears_coordinator=hears))


def entry(address: object = "10.0.0.2:22300", member: object = str(MEMBER)) -> dict[str, object]:
    return {"id": member, "address": address}


def test_the_most_member_addresses_are_taken_and_one_more_is_refused() -> None:
    most = [entry(f"10.0.0.{n}:22300") for n in range(MAX_MEMBER_ADDRESSES)]
    assert len(Hello.from_json(body(members=most)).members) == MAX_MEMBER_ADDRESSES
    assert "members must be a list of at most 32" in refused(body(members=[*most, entry()]))


@pytest.mark.parametrize("members", [None, "10.0.0.2:1", {"a": 1}, 3, True], ids=repr)
def test_members_that_are_not_a_list_are_refused(members: object) -> None:
    assert "members must be a list" in refused(body(members=members))


@pytest.mark.parametrize("item", [None, "10.0.0.2:1", [str(MEMBER), "10.0.0.2:1"], 7], ids=repr)
def test_a_member_address_that_is_not_an_object_is_refused(item: object) -> None:
    assert "a member address must be an object" in refused(body(members=[entry(), item]))


@pytest.mark.parametrize("member", [None, "", "SHA256:short", str(MEMBER)[:-1] + "!", 42])
def test_a_member_address_with_a_bad_id_is_refused(member: object) -> None:
    assert "node ID" in refused(body(members=[entry(member=member)]))


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("host.lan:22300", id="host-name"),
        pytest.param("10.0.0.2", id="no-port"),
        pytest.param("10.0.0.2:", id="empty-port"),
        pytest.param("10.0.0.2:0", id="port-0"),
        pytest.param("10.0.0.2:65536", id="port-65536"),
        pytest.param("10.0.0.2:022300", id="port-leading-zero"),
        pytest.param("10.0.0.2:+1", id="port-sign"),
        pytest.param("10.0.0.2:2_2", id="port-underscore"),
        pytest.param("10.0.0.2:\u0662", id="port-arabic-digit"),
        pytest.param("010.0.0.2:1", id="ip-leading-zero"),
        pytest.param("10.0.0.256:1", id="ip-out-of-range"),
        pytest.param(" 10.0.0.2:1", id="space"),
        pytest.param("[10.0.0.2]:1", id="ipv4-in-brackets"),
        pytest.param("fe80::1:1", id="ipv6-without-brackets"),
        pytest.param("[FE80::1]:1", id="ipv6-upper-case"),
        pytest.param("[fe80:0::1]:1", id="ipv6-not-compressed"),
        pytest.param("[fe80::1%eth0]:1", id="ipv6-zone"),
        pytest.param("[::ffff:10.0.0.2]:1", id="ipv4-mapped"),
        pytest.param("[" + "1:" * 7 + "1]:1" + "0" * 50, id="too-long"),
        pytest.param("10.0.0.2:1\n", id="newline"),
        pytest.param("\ud800:1", id="lone-surrogate"),
        pytest.param(22300, id="number"),
        pytest.param(None, id="null"),
        pytest.param(["10.0.0.2", 1], id="list"),
    ],
)
def test_a_member_address_that_is_not_ip_and_port_is_refused(address: object) -> None:
    reason = refused(body(members=[entry(address)]))
    assert "bad address (not IP:PORT)" in reason
    assert "\n" not in reason  # one line in the log, whatever the peer sent


@pytest.mark.parametrize("address", ["10.0.0.2:1", "255.255.255.255:65535", "[::1]:22300",
                                     "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"])
def test_member_addresses_as_nodes_write_them_are_taken(address: str) -> None:
    assert Hello.from_json(body(members=[entry(address)])).members == (
        MemberAddress(MEMBER, address),)


NASTY: list[object] = [
    None, True, False, 0, -1, 1, 65536, 2**53 + 1, 2**64, -(2**63), 1.5, 1e308, float("nan"),
    "", ".", "..", "a/b", "a\0b", "\ud800", "\udcff", "x" * 300, "é" * 200, "\u202e", "\n",
    "SHA256:", str(COORDINATOR), str(COORDINATOR).lower(), [], {}, [[]], [None], ["docs"] * 300,
    {"name": "x"}, [["docs"]], ["\ud800"],
]
NASTY += [[{"id": str(MEMBER), "address": "10.0.0.2:1"}], [{"id": str(MEMBER)}], [[]] * 40,
          [{"id": str(MEMBER), "address": "010.0.0.2:1"}], {"id": str(MEMBER)}]
KEYS = ["name", "port", "folders", "term", "coordinator", "leaving", "hears_coordinator",
        "members", "extra"]


def mutate(rng: random.Random) -> bytes:
    """A valid hello, damaged once or a few times at the byte or the JSON level."""
    if rng.random() < 0.5:
        data: dict[str, Any] = valid()
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(KEYS)
            if rng.random() < 0.2:
                data.pop(key, None)
            else:
                data[key] = rng.choice(NASTY)
        raw = json.dumps(data).encode()
    else:
        raw = body()
    raw_bytes = bytearray(raw)
    for _ in range(rng.randint(0, 4)):
        choice = rng.randrange(6)
        at = rng.randrange(len(raw_bytes) + 1)
        if choice == 0 and raw_bytes:
            raw_bytes[min(at, len(raw_bytes) - 1)] = rng.randrange(256)
        elif choice == 1:
            raw_bytes[at:at] = bytes([rng.randrange(256)])
        elif choice == 2:
            del raw_bytes[at : at + rng.randint(1, 8)]
        elif choice == 3:
            del raw_bytes[at:]
        elif choice == 4:
            raw_bytes[at:at] = rng.choice([b"[" * 3000, b"9" * 5000, b'"\\ud800"', b"\\u0000"])
        else:
            raw_bytes[at:at] = raw_bytes[at : at + rng.randint(1, 40)]
    return bytes(raw_bytes)


def test_damaged_hellos_raise_only_wire_error() -> None:
    rng = random.Random(20_240_611)
    accepted = 0
    reasons: list[str] = []
    for _ in range(4000):
        raw = mutate(rng)
        try:
            hello = Hello.from_json(raw)
        except WireError as e:
            reasons.append(str(e))
            continue
        except Exception as e:  # the point: nothing else escapes
            pytest.fail(f"{type(e).__name__}: {e!s:.100} on {raw[:200]!r}")
        # Whatever is accepted is a hello we could have sent ourselves.
        assert Hello.from_json(hello.to_json()) == hello
        accepted += 1
    assert accepted > 100
    assert len(reasons) > 1000
    assert all(reasons), "every refusal says why"


def test_an_answer_of_blocks_is_signed_over_its_framing_which_any_change_of_shape_alters():
    answer = pack_blocks([b"a" * 10, None, b"b" * 3])
    same_shape = pack_blocks([b"c" * 10, None, b"d" * 3])  # contents are checked by hash
    assert frames_digest(answer) == frames_digest(same_shape)
    for other in (pack_blocks([b"a" * 10, None]), pack_blocks([b"a" * 10, b"x", b"b" * 3]),
                  answer + b"\0", answer[:-1], b""):
        assert frames_digest(other) != frames_digest(answer)
