"""How members reach one another when not every pair can: the addresses members pass on in
their hellos, news bridged across a cut link by the member in the middle, and the keys an
introducer passes on.

A real Node (not started), fed hellos and notices the way the server and client feed them,
with a fake peer client; addresses are on this host's own networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshsync.core import election as el
from meshsync.core.ids import NodeId
from meshsync.core.wire import FolderId, Hello, MemberAddress, Records
from meshsync.crypto import sshsig
from meshsync.crypto.keys import KeySigner, public_key_line
from meshsync.crypto.trust import INTRODUCER, TrustStore
from meshsync.net.discovery import own_networks
from meshsync.node.config import Config, Folder
from meshsync.node.hello import KEYS_AFTER
from meshsync.node.judge import Origin
from meshsync.node.node import Node
from tests.clock import FakeClock

DOCS = FolderId("docs")


@dataclass
class Key:
    blob: bytes

    @property
    def id(self) -> NodeId:
        return NodeId.of_key(self.blob)


def new_key() -> Key:
    return Key(KeySigner(Ed25519PrivateKey.generate()).public_blob)


@pytest.fixture
def lan() -> ipaddress.IPv4Network:
    """A network of this host's, not loopback (skipped where there is none)."""
    found = [n for n in own_networks() if not n.is_loopback and n.num_addresses >= 256]
    if not found:
        pytest.skip("this host has no network of 256 addresses besides loopback")
    return found[0]


@dataclass
class Mesh:
    """Our node, and the keys of the others: those it trusts, and one it does not."""

    node: Node
    clock: FakeClock
    keys: dict[str, Key] = field(default_factory=dict)

    def hello(self, name: str, address: str, term: int = 0, coordinator: str | None = None,
              hears: bool = False, members: tuple[MemberAddress, ...] = (),
              folders: frozenset[FolderId] = frozenset({DOCS}),
              keys: tuple[str, ...] | None = None, leaving: bool = False) -> None:
        """A hello from `name` answered at `address`: it trusts us."""
        hello = Hello(name, int(address.rpartition(":")[2]), folders, term,
                      self.keys[coordinator].id if coordinator else None, leaving=leaving,
                      hears_coordinator=hears, members=members,
                      member_keys=None if keys is None else tuple(self.keys[k].blob for k in keys))
        self.node._greeter.heard(self.keys[name].blob, hello, address, trusts_us=True)

    def at(self, name: str, address: str) -> MemberAddress:
        return MemberAddress(self.keys[name].id, address)

    def hinted(self) -> dict[str, str]:
        return {a: h.claimed_id for a, h in self.node._book.hints.items()}


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    clock = FakeClock()
    keys = {name: new_key() for name in ("b", "y", "w", "stranger", "a", "c")}
    signer = KeySigner(Ed25519PrivateKey.generate())
    lines = [public_key_line(keys[n].blob, n) for n in ("b", "y", "a", "c")]
    lines.append(public_key_line(signer.public_blob, "x"))  # one user's machines: ours too
    lines.append('from="10.9.9.9" ' + public_key_line(keys["w"].blob, "w"))  # not from our LAN
    (tmp_path / "ssh").mkdir(mode=0o700)
    (tmp_path / "ssh" / "authorized_keys").write_text("\n".join(lines) + "\n")
    config = Config(folders=(Folder(DOCS, tmp_path / "docs"),), state=tmp_path / "s",
                    ssh_dir=tmp_path / "ssh", name="x")
    trust = TrustStore([tmp_path / "ssh" / "authorized_keys"], tmp_path / "s" / "trusted_keys")
    node = Node(config, signer, trust, clock)
    return Mesh(node, clock, {**keys, "x": Key(signer.public_blob)})


# -- addresses passed on ---------------------------------------------------------------------------

def test_a_trusted_member_we_have_not_reached_is_dialled_where_a_member_says_it_listens(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    y = f"{lan[20]}:22300"
    mesh.hello("b", f"{lan[2]}:22300", members=(mesh.at("y", y),))
    assert mesh.hinted() == {y: str(mesh.keys["y"].id)}  # proven by its certificate when dialled


def test_a_member_cannot_make_us_dial_where_it_likes(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    mesh.hello("b", f"{lan[2]}:22300", members=(
        mesh.at("stranger", f"{lan[21]}:22300"),  # a key we do not trust
        mesh.at("w", f"{lan[22]}:22300"),  # trusted, but only from elsewhere (from=)
        mesh.at("x", f"{lan[23]}:22300"),  # ourselves
        mesh.at("b", f"{lan[24]}:22300"),  # the teller: we reach it already
        mesh.at("y", "8.8.8.8:22300"),  # off our networks
        mesh.at("y", "127.0.0.1:22300"),  # loopback: this host's own services
        mesh.at("y", "[::1]:22300"),
    ))
    assert mesh.hinted() == {}


def test_a_member_already_up_here_is_not_dialled_elsewhere_on_a_members_word(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    mesh.hello("y", f"{lan[20]}:22300")
    mesh.hello("b", f"{lan[2]}:22300", members=(mesh.at("y", f"{lan[30]}:22300"),))
    assert mesh.hinted() == {}


def test_addresses_from_a_peer_that_is_not_yet_a_member_are_not_taken(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    hello = Hello("b", 22300, frozenset({DOCS}), 0, None,
                  members=(mesh.at("y", f"{lan[20]}:22300"),))
    mesh.node._greeter.heard(mesh.keys["b"].blob, hello, f"{lan[2]}:22300", trusts_us=None)
    assert mesh.hinted() == {}


def test_our_hello_tells_a_member_where_the_others_listen_but_never_of_itself_or_strangers(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    b, y, c = f"{lan[2]}:22300", f"{lan[20]}:22300", "c.lan:22300"
    mesh.hello("b", b)
    mesh.clock.t += 0.5
    mesh.hello("y", y)
    mesh.hello("c", c)  # reached through a --peer host name: not an address to pass on
    mesh.node._peers.remember_stranger(mesh.keys["stranger"].blob, f"{lan[40]}:22300",
                                       address=f"{lan[40]}:22300")
    mesh.hello("a", f"{lan[3]}:22300", folders=frozenset({FolderId("music")}))
    node = mesh.node
    hello = node._greeter.hello
    assert hello(mesh.keys["b"].id).members == (mesh.at("y", y),)
    assert hello(mesh.keys["y"].id).members == (mesh.at("b", b),)
    assert hello(mesh.keys["a"].id).members == ()  # no folder of its is shared with them
    node._stop.set()
    assert hello(mesh.keys["b"].id).members == ()  # a goodbye tells of no one


# -- news across a cut link ------------------------------------------------------------------------

@dataclass
class FakeSync:
    """A folder that finds every notice news, and counts the times trust changed."""

    trust_changes: int = 0

    def __post_init__(self) -> None:
        # Nothing read as pages yet: every notice is taken.
        self.catch_up = SimpleNamespace(wake=asyncio.Event(),
                                        read_past=lambda *_: asyncio.sleep(0, False))

    def retry_now(self) -> None:
        pass

    def trust_changed(self) -> None:
        self.trust_changes += 1

    async def take(self, source: str, records: Any) -> list[Any]:
        return list(records)


@dataclass
class FakeClient:
    """Records the notices sent, by the name of the member they went to."""

    names: dict[bytes, str]
    sent: list[str] = field(default_factory=list)

    async def send_notice(self, address: str, key: bytes, notice: Records) -> None:
        self.sent.append(self.names[key])


async def relayed(mesh: Mesh, sender: str) -> list[str]:
    """Whom our node passes a notice from `sender` on to."""
    client = FakeClient({k.blob: n for n, k in mesh.keys.items()})
    node = mesh.node
    node._exchange.client = client  # type: ignore[assignment]
    node._folders[DOCS] = FakeSync()  # type: ignore[assignment]
    async with asyncio.TaskGroup() as tg:
        node._exchange.tasks = tg
        await node.handle_notice(mesh.keys[sender].blob, Records(DOCS, ("news",)))  # type: ignore[arg-type]
    node._exchange.tasks = None
    return sorted(client.sent)


async def test_a_member_bridges_news_between_the_coordinator_and_a_member_cut_off_from_it(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    # A coordinates; we hear A and C; C does not hear A (that link is cut).
    mesh.hello("a", f"{lan[3]}:22300", term=5, coordinator="a", hears=True)
    mesh.hello("c", f"{lan[5]}:22300", term=5, coordinator="a", hears=False)
    assert mesh.node._greeter.hello(mesh.keys["c"].id).hears_coordinator
    assert await relayed(mesh, "c") == ["a"]  # A fans it out to the rest, as ever
    assert await relayed(mesh, "a") == ["c"]


@pytest.mark.parametrize("lacking", [0, 1])
async def test_a_notice_counts_as_read_for_catch_up_only_if_all_of_it_was_taken(
    mesh: Mesh, lan: ipaddress.IPv4Network, lacking: int
) -> None:
    # A record sent without its list that we cannot rebuild comes whole with catch-up: until
    # then the rows its notice holds are not all read.
    mesh.hello("a", f"{lan[3]}:22300", term=5, coordinator="a", hears=True)
    covered: list[tuple[str, str, int, int]] = []

    class Rebuilding(FakeSync):
        def rebuild(self, listless: Any) -> tuple[list[Any], int]:
            return [], lacking

    sync = Rebuilding()
    sync.catch_up.covered = lambda *args: asyncio.sleep(0, covered.append(args))
    mesh.node._folders[DOCS] = sync  # type: ignore[assignment]
    notice = Records(DOCS, ("news",), "their epoch", 9, listless=("listless",), since=4)  # type: ignore[arg-type]
    await mesh.node.handle_notice(mesh.keys["a"].blob, notice)
    assert covered == ([] if lacking else [(mesh.keys["a"].id.key, "their epoch", 4, 9)])


async def test_a_notice_of_rows_read_as_pages_already_is_not_judged_again(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    mesh.hello("a", f"{lan[3]}:22300", term=5, coordinator="a", hears=True)
    taken: list[Any] = []

    class Read(FakeSync):
        async def take(self, source: str, records: Any) -> list[Any]:
            taken.extend(records)
            return list(records)

    sync = Read()
    sync.catch_up.read_past = lambda key, epoch, seq: asyncio.sleep(0, seq <= 9)
    sync.catch_up.covered = lambda *_: asyncio.sleep(0)
    mesh.node._folders[DOCS] = sync  # type: ignore[assignment]
    for since, seq in ((4, 9), (9, 12)):
        notice = Records(DOCS, (f"rows to {seq}",), "their epoch", seq, since=since)  # type: ignore[arg-type]
        await mesh.node.handle_notice(mesh.keys["a"].blob, notice)
    assert taken == ["rows to 12"]


async def test_a_member_relays_nothing_while_every_member_hears_the_coordinator(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    mesh.hello("a", f"{lan[3]}:22300", term=5, coordinator="a", hears=True)
    mesh.hello("c", f"{lan[5]}:22300", term=5, coordinator="a", hears=True)
    assert await relayed(mesh, "c") == []
    assert await relayed(mesh, "a") == []


async def test_a_member_that_does_not_hear_the_coordinator_itself_relays_nothing(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    # B names A for term 5; we have not heard A ourselves, so we cannot bridge to it.
    mesh.hello("b", f"{lan[2]}:22300", term=5, coordinator="a", hears=True)
    mesh.hello("c", f"{lan[5]}:22300", term=5, coordinator="a", hears=False)
    assert not mesh.node._greeter.hello(mesh.keys["c"].id).hears_coordinator
    assert await relayed(mesh, "c") == []


async def test_the_coordinator_passes_news_on_to_every_other_member(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    mesh.hello("a", f"{lan[3]}:22300", term=5, coordinator="x", hears=True)
    mesh.hello("c", f"{lan[5]}:22300", term=5, coordinator="x", hears=False)
    assert mesh.node._election.coordinator == mesh.keys["x"].id
    assert await relayed(mesh, "c") == ["a"]
    assert await relayed(mesh, "a") == ["c"]


# -- keys an introducer passes on ------------------------------------------------------------------

B, D = "192.0.2.2:22300", "192.0.2.4:22300"


@dataclass
class Introduced:
    """Our node with `b` marked introducer, and `d`: a node none of our lines trusts."""

    mesh: Mesh
    d: KeySigner
    folder: FakeSync

    def mark(self, introducer: bool = True) -> None:
        line = public_key_line(self.mesh.keys["b"].blob, "b")
        trusted_keys = self.mesh.node.config.state / "trusted_keys"
        trusted_keys.write_text(f"{INTRODUCER} {line}\n" if introducer else f"{line}\n")

    def origin(self, batch: dict[bytes, bool] | None = None) -> Origin:
        """What our node makes of a record `d` signed: trusted, or held back (as the judging
        of `batch`, which asks the trust files once per key, found)."""
        message = b"a record d made"
        signature = sshsig.sign(self.d, message)
        return self.mesh.node.check_origin(NodeId.of_key(self.d.public_blob).key, signature,
                                           message, {} if batch is None else batch)

    def row(self) -> dict[str, Any]:
        d = str(NodeId.of_key(self.d.public_blob))
        return next(r for r in self.mesh.node._commands.peers_json() if r["id"] == d)


@pytest.fixture
def introduced(mesh: Mesh) -> Introduced:
    d = KeySigner(Ed25519PrivateKey.generate())
    mesh.keys["d"] = Key(d.public_blob)
    mesh.node.config.state.mkdir(mode=0o700)
    folder = FakeSync()
    mesh.node._folders[DOCS] = folder  # type: ignore[assignment]
    # d was found before anyone vouched for it: a stranger, as mDNS would have listed it.
    mesh.node._peers.remember_stranger(d.public_blob, D, address=D)
    found = Introduced(mesh, d, folder)
    found.mark()
    return found


def test_a_batch_asks_about_each_key_once_and_the_next_batch_sees_trust_change(
    introduced: Introduced,
) -> None:
    batch: dict[bytes, bool] = {}
    assert introduced.origin(batch) is Origin.UNTRUSTED
    assert batch == {introduced.d.public_blob: False}
    introduced.mesh.hello("b", B, keys=("d",))  # trusted from now on
    assert introduced.origin(batch) is Origin.UNTRUSTED  # the batch judged so far goes on
    assert introduced.origin({}) is Origin.TRUSTED


def test_keys_a_marked_introducer_announces_are_trusted_and_release_what_was_held_back(
    introduced: Introduced,
) -> None:
    mesh, node = introduced.mesh, introduced.mesh.node
    assert introduced.origin() is Origin.UNTRUSTED
    mesh.hello("b", B, keys=("d", "y"))
    assert introduced.folder.trust_changes == 1  # held-back versions are looked at again
    assert introduced.origin() is Origin.TRUSTED
    assert node._credentials.is_trusted(introduced.d.public_blob, "198.51.100.9")  # anywhere
    row = introduced.row()
    assert row["state"] != "untrusted"
    assert row["via_introducer"] == str(mesh.keys["b"].id)
    assert "trust_command" not in row
    by_id = {r["id"]: r["via_introducer"] for r in node._commands.peers_json()}
    assert by_id[str(mesh.keys["b"].id)] is None  # trusted on our own word
    mesh.hello("b", B, keys=("y", "d"))
    assert introduced.folder.trust_changes == 1  # the same word again changes nothing


def test_keys_announced_by_a_peer_not_marked_introducer_are_ignored(
    introduced: Introduced,
) -> None:
    introduced.mesh.hello("a", "192.0.2.3:22300", keys=("d",))  # trusted, not an introducer
    assert introduced.folder.trust_changes == 0
    assert introduced.origin() is Origin.UNTRUSTED
    assert introduced.row()["state"] == "untrusted"


def test_an_introducers_next_hello_without_a_key_withdraws_it(introduced: Introduced) -> None:
    mesh = introduced.mesh
    mesh.hello("b", B, keys=("d",))
    mesh.hello("b", B, leaving=True)  # a goodbye says nothing of keys: what it said holds
    assert introduced.origin() is Origin.TRUSTED
    mesh.hello("b", B, keys=("y",))
    assert introduced.folder.trust_changes == 2
    assert introduced.origin() is Origin.UNTRUSTED
    assert not mesh.node._credentials.is_trusted(introduced.d.public_blob, "192.0.2.4")
    row = introduced.row()
    assert (row["state"], row["via_introducer"]) == ("untrusted", None)


def test_introduced_keys_are_withdrawn_when_the_introducer_mark_goes(
    introduced: Introduced,
) -> None:
    mesh, node = introduced.mesh, introduced.mesh.node
    mesh.hello("b", B, keys=("d",))
    introduced.mark(introducer=False)  # `b` stays trusted, as a plain member
    assert node._trust.stamp() != node._trust_stamp  # the next heartbeat calls _trust_changed
    assert introduced.origin() is Origin.UNTRUSTED
    assert not node._credentials.is_trusted(introduced.d.public_blob, "192.0.2.4")
    assert introduced.row()["via_introducer"] is None
    mesh.hello("b", B, keys=("d",))
    assert introduced.origin() is Origin.UNTRUSTED


def test_an_introduced_member_is_dialled_where_the_introducer_says_it_listens(
    introduced: Introduced, lan: ipaddress.IPv4Network
) -> None:
    mesh = introduced.mesh
    d = f"{lan[40]}:22300"  # not where we once found it: only b's word says it is there
    mesh.hello("b", f"{lan[2]}:22300", keys=("d",), members=(mesh.at("d", d),))
    assert mesh.hinted() == {d: str(mesh.keys["d"].id)}


def test_our_hello_tells_a_member_the_keys_we_trust_of_those_sharing_its_folders(
    introduced: Introduced,
) -> None:
    mesh, node = introduced.mesh, introduced.mesh.node
    hello = node._greeter.hello
    mesh.hello("b", B, keys=("d",))
    mesh.hello("d", D)  # a member now, but on b's word only
    mesh.hello("y", "192.0.2.20:22300")
    mesh.hello("c", "192.0.2.5:22300")
    mesh.hello("a", "192.0.2.3:22300", folders=frozenset({FolderId("music")}))
    keys = mesh.keys
    assert hello(keys["d"].id).member_keys is None  # just started: we may not know all
    mesh.clock.t += KEYS_AFTER
    expected = tuple(sorted((keys[n] for n in ("b", "c", "y")), key=lambda k: k.id))
    assert hello(keys["d"].id).member_keys == tuple(k.blob for k in expected)
    # Never the recipient itself, nor a key we trust only on an introducer's word: one hop.
    to_y = [k for k in expected if k != keys["y"]]
    assert hello(keys["y"].id).member_keys == tuple(k.blob for k in to_y)
    assert hello(keys["a"].id).member_keys == ()  # no folder of ours is shared with it
    node._stop.set()
    assert hello(keys["y"].id).member_keys is None  # a goodbye


async def test_members_heard_only_through_the_coordinator_get_nothing_relayed(
    mesh: Mesh, lan: ipaddress.IPv4Network
) -> None:
    # The star of beats: we hear A, the coordinator, and C only by A's word that it hears C.
    mesh.hello("a", f"{lan[3]}:22300", term=5, coordinator="a", hears=True)
    mesh.hello("c", f"{lan[5]}:22300", term=5, coordinator="a", hears=True)
    election = mesh.node._election
    for _ in range(8):  # C's own word grows old; A's beats keep naming it
        mesh.clock.t += 1.0
        mesh.hello("a", f"{lan[3]}:22300", term=5, coordinator="a", hears=True)
        mesh.node._feed(el.PeersRelayed(mesh.keys["a"].id, (mesh.keys["c"].id,), mesh.clock.t))
    assert election.is_up(mesh.keys["c"].id)
    assert await relayed(mesh, "a") == []  # C hears A: the coordinator told it already
    assert await relayed(mesh, "c") == []
