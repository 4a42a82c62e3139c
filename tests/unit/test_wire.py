"""Hello messages: what a peer may send, and a clear WireError for anything else."""

import base64
import json
import random
import struct
from typing import Any

import pytest

from meshsync.core.errors import WireError
from meshsync.core.ids import NodeId
from meshsync.core.keyblob import MAX_KEY_BYTES
from meshsync.core.wire import (
    MAX_FOLDERS,
    MAX_HELLO_BYTES,
    MAX_MEMBER_ADDRESSES,
    MAX_MEMBER_KEYS,
    MAX_NAME,
    FolderId,
    Hello,
    MemberAddress,
    Progress,
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


# -- member keys -----------------------------------------------------------------------------------

def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def mpint(n: int) -> bytes:
    return ssh_string(n.to_bytes((n.bit_length() + 8) // 8, "big"))


def rsa(bits: int = 2048, e: int = 65537) -> bytes:
    return ssh_string(b"ssh-rsa") + mpint(e) + mpint((1 << (bits - 1)) | 0xABCDEF)


def ecdsa(curve: bytes = b"nistp256", point: bytes = b"\x04" + b"\x22" * 64) -> bytes:
    return ssh_string(b"ecdsa-sha2-" + curve) + ssh_string(curve) + ssh_string(point)


ED25519 = ssh_string(b"ssh-ed25519") + ssh_string(b"\x11" * 32)
SHAPES = [ED25519, ecdsa(), ecdsa(b"nistp384", b"\x04" + b"\x33" * 96),
          ecdsa(b"nistp521", b"\x04" + b"\x44" * 132), rsa(1024), rsa(4096, 3),
          rsa(8192, 2**32 - 1)]


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


@pytest.mark.parametrize("blob", SHAPES, ids=lambda b: f"{len(b)}-bytes")
def test_member_keys_of_every_kind_are_taken_as_blobs(blob: bytes) -> None:
    hello = Hello.from_json(body(member_keys=[b64(blob), b64(ED25519)]))
    assert hello.member_keys == (blob, ED25519)
    assert Hello.from_json(hello.to_json()) == hello


def test_the_largest_key_fits_and_the_most_member_keys_are_taken_and_one_more_is_refused() -> None:
    assert len(rsa(8192, 2**32 - 1)) == MAX_KEY_BYTES
    most = [b64(rsa(8192, 2**32 - 1))] * MAX_MEMBER_KEYS
    assert len(Hello.from_json(body(member_keys=most)).member_keys) == MAX_MEMBER_KEYS
    assert "member_keys must be a list of at most 64" in refused(body(member_keys=[*most, most[0]]))


def test_a_hello_without_member_keys_says_nothing_of_keys_and_an_empty_list_names_none() -> None:
    assert "member_keys" not in json.loads(body())  # as a node before introducers sends it
    assert Hello.from_json(body()).member_keys is None
    assert Hello.from_json(body(member_keys=None)).member_keys is None
    assert Hello.from_json(body(member_keys=[])).member_keys == ()
    for hello in (Hello("x", 1, frozenset(), 0, None), Hello("x", 1, frozenset(), 0, None,
                                                              member_keys=())):
        assert Hello.from_json(hello.to_json()) == hello


def test_the_largest_hello_fits_its_limit() -> None:
    name = "\U0001f389" * MAX_NAME  # twelve characters each, as JSON escapes it
    folders = frozenset(FolderId("\x01" * 252 + f"{n:03d}") for n in range(MAX_FOLDERS))
    longest = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
    members = tuple(MemberAddress(NodeId.of_key(bytes([n])), longest)
                    for n in range(MAX_MEMBER_ADDRESSES))
    keys = (rsa(8192, 2**32 - 1),) * MAX_MEMBER_KEYS
    hello = Hello(name, 65535, folders, 2**53, COORDINATOR, False, True, members, keys)
    assert len(hello.to_json()) <= MAX_HELLO_BYTES
    assert Hello.from_json(hello.to_json()) == hello


@pytest.mark.parametrize("keys", [b64(ED25519), {"a": 1}, 3, True], ids=repr)
def test_member_keys_that_are_not_a_list_are_refused(keys: object) -> None:
    assert "member_keys must be a list" in refused(body(member_keys=keys))


def non_canonical(blob: bytes) -> str:
    """The base64 of `blob` with its padding bits set: it decodes to the same blob."""
    text = b64(blob).rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    spelled = text[:-1] + alphabet[alphabet.index(text[-1]) + 1]
    assert base64.b64decode(spelled + "=" * (-len(spelled) % 4)) == blob
    return spelled + "=" * (-len(spelled) % 4)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
        pytest.param([b64(ED25519)], id="list"),
        pytest.param("", id="empty"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param(b64(ED25519)[:10] + "\n" + b64(ED25519)[10:], id="newline"),
        pytest.param("ssh-ed25519 " + b64(ED25519), id="key-line"),
        pytest.param(non_canonical(ecdsa()), id="non-canonical-base64"),
        pytest.param("é" * 8, id="non-ascii"),
        pytest.param(b64(rsa(8200, 2**32 - 1)), id="too-large"),
        pytest.param("A" * 100_000, id="huge"),
        pytest.param(b64(ssh_string(b"ssh-dss") + ssh_string(b"\1" * 20)), id="dsa"),
        pytest.param(b64(ssh_string(b"ssh-ed25519\n") + ssh_string(b"\1" * 32)), id="bad-type"),
        pytest.param(b64(ssh_string(b"ssh-ed25519") + ssh_string(b"\1" * 31)), id="ed25519-31"),
        pytest.param(b64(ED25519 + b"\0"), id="trailing-byte"),
        pytest.param(b64(ED25519 + ssh_string(b"")), id="extra-field"),
        pytest.param(b64(ED25519[:-1]), id="truncated"),
        pytest.param(b64(b"\xff\xff\xff\xff" + ED25519[4:]), id="length-overrun"),
        pytest.param(b64(ecdsa(b"nistp256", b"\x04" + b"\x22" * 96)), id="ecdsa-point-size"),
        pytest.param(b64(ecdsa(b"nistp256", b"\x02" + b"\x22" * 32)), id="ecdsa-compressed"),
        pytest.param(b64(ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp384")
                         + ssh_string(b"\x04" + b"\x22" * 64)), id="ecdsa-other-curve"),
        pytest.param(b64(rsa(1023)), id="rsa-1023-bits"),
        pytest.param(b64(rsa(2048, 65536)), id="rsa-even-exponent"),
        pytest.param(b64(rsa(2048, 1)), id="rsa-exponent-1"),
        pytest.param(b64(rsa(2048, 2**32 + 1)), id="rsa-exponent-over-2-32"),
        pytest.param(b64(ssh_string(b"ssh-rsa") + ssh_string(b"\0\1\0\1")
                         + rsa()[-261:]), id="rsa-padded-exponent"),
        pytest.param(b64(ssh_string(b"ssh-rsa") + mpint(65537)
                         + ssh_string(b"\x80" + b"\1" * 255)), id="rsa-negative-modulus"),
        pytest.param(b64(ssh_string(b"ssh-rsa") + mpint(65537) + ssh_string(b"")), id="rsa-zero"),
        pytest.param(b64(ssh_string(b"ssh-rsa") + mpint(65537)), id="rsa-no-modulus"),
    ],
)
def test_a_member_key_that_is_not_an_ssh_key_blob_is_refused(key: object) -> None:
    reason = refused(body(member_keys=[b64(ED25519), key]))
    assert "key" in reason
    assert "\n" not in reason  # one line in the log, whatever the peer sent


NASTY: list[object] = [
    None, True, False, 0, -1, 1, 65536, 2**53 + 1, 2**64, -(2**63), 1.5, 1e308, float("nan"),
    "", ".", "..", "a/b", "a\0b", "\ud800", "\udcff", "x" * 300, "é" * 200, "\u202e", "\n",
    "SHA256:", str(COORDINATOR), str(COORDINATOR).lower(), [], {}, [[]], [None], ["docs"] * 300,
    {"name": "x"}, [["docs"]], ["\ud800"],
]
NASTY += [[{"id": str(MEMBER), "address": "10.0.0.2:1"}], [{"id": str(MEMBER)}], [[]] * 40,
          [{"id": str(MEMBER), "address": "010.0.0.2:1"}], {"id": str(MEMBER)}]
KEYS = ["name", "port", "folders", "term", "coordinator", "leaving", "hears_coordinator",
        "members", "member_keys", "extra"]


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


# -- a folder's progress, in hellos ----------------------------------------------------------------

def test_progress_names_its_folder_by_place_and_round_trips() -> None:
    folders = frozenset({FolderId("Photos"), FolderId("Sync")})
    progress = (Progress(FolderId("Sync"), "syncing", 3, 300, 700),)
    hello = Hello("laptop", 22300, folders, 1, None, progress=progress)
    body = json.loads(hello.to_json())
    assert body["progress"] == [{"folder": 1, "state": "syncing", "need_files": 3,
                                 "need_bytes": 300, "have_bytes": 700}]
    assert Hello.from_json(hello.to_json()) == hello


@pytest.mark.parametrize(("entries", "error"), [
    ([{"folder": 2, "state": "in sync", "need_files": 0, "need_bytes": 0, "have_bytes": 0}],
     "folder"),
    ([{"folder": 0, "state": "done", "need_files": 0, "need_bytes": 0, "have_bytes": 0}],
     "state"),
    ([{"folder": 0, "state": "in sync", "need_files": -1, "need_bytes": 0, "have_bytes": 0}],
     "need_files"),
    ([{"folder": 0, "state": "in sync", "need_files": 0, "need_bytes": 0, "have_bytes": 0}] * 2,
     "twice"),
    ("all", "list"),
])
def test_bad_progress_is_refused_in_one_line(entries: object, error: str) -> None:
    hello = json.loads(Hello("n", 1, frozenset({FolderId("A"), FolderId("B")}), 0, None)
                       .to_json())
    with pytest.raises(WireError, match=error) as raised:
        Hello.from_json(json.dumps({**hello, "progress": entries}).encode())
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("need_files", "need", "have", "percent"), [
    (0, 0, 0, 100), (0, 5, 0, 100), (1, 0, 0, 0), (2, 50, 50, 50), (1, 1, 10**9, 99)])
def test_completion_is_the_share_of_bytes_held_and_100_only_when_nothing_is_needed(
        need_files: int, need: int, have: int, percent: int) -> None:
    assert Progress(FolderId("A"), "syncing", need_files, need, have).percent == percent
