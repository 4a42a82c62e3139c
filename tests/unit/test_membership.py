"""The roster: who we know, what state `meshsync peers` shows, and what it forgets."""

import pytest

from meshsync.core import membership
from meshsync.core.ids import NodeId
from meshsync.core.membership import MAX_STRANGERS, Peer, Roster, clock_fix
from meshsync.core.signing import MAX_OFFSET
from meshsync.core.wire import FolderId

DOCS, PHOTOS, MUSIC = FolderId("docs"), FolderId("photos"), FolderId("music")
OURS = frozenset({DOCS, PHOTOS})
ALICE, BOB, CAROL = b"ssh-ed25519 alice", b"ssh-ed25519 bob", b"ssh-ed25519 carol"


def peer(trusted: bool, trusts_us: bool | None, folders: frozenset[FolderId] = OURS) -> Peer:
    return Peer(NodeId.of_key(ALICE), ALICE, trusted=trusted, trusts_us=trusts_us, folders=folders)


@pytest.mark.parametrize(
    ("trusted", "trusts_us", "up", "state"),
    [
        (False, None, True, "untrusted"),
        (False, None, False, "untrusted"),
        (False, True, True, "untrusted"),
        (False, True, False, "untrusted"),
        (False, False, True, "untrusted"),
        (False, False, False, "untrusted"),
        (True, False, True, "refused"),
        (True, False, False, "refused"),
        (True, True, True, "online"),
        (True, True, False, "down"),
        (True, None, True, "online"),
        (True, None, False, "down"),
    ],
)
def test_peer_state_shown_to_the_user(
    trusted: bool, trusts_us: bool | None, up: bool, state: str
) -> None:
    assert peer(trusted, trusts_us).state(up) == state


@pytest.mark.parametrize(
    ("offset", "up", "state"),
    [
        (None, True, "online"),
        (300.0, True, "online"),
        (-MAX_OFFSET, False, "down"),
        (MAX_OFFSET + 1, True, "refused"),
        (-1234.0, False, "refused"),
    ],
)
def test_a_trusted_peer_whose_clock_is_beyond_the_bound_is_shown_refused(
    offset: float | None, up: bool, state: str
) -> None:
    alice = Peer(NodeId.of_key(ALICE), ALICE, trusted=True, trusts_us=True, clock_offset=offset)
    assert alice.state(up) == state
    assert alice.clock_refused is (state == "refused")


def test_a_clock_refusal_does_not_hide_that_we_do_not_trust_a_peer() -> None:
    stranger = Peer(NodeId.of_key(ALICE), ALICE, trusted=False, clock_offset=5000.0)
    assert stranger.state(up=False) == "untrusted"


def test_a_measured_offset_is_kept_for_a_known_peer_and_clears_a_refusal() -> None:
    roster = Roster()
    roster.update(ALICE, trusted=True, clock_offset=1234.0)
    roster.measured(ALICE, -2.5)
    alice = roster.get(NodeId.of_key(ALICE))
    assert alice is not None
    assert (alice.clock_offset, alice.state(up=True)) == (-2.5, "online")


def test_a_measured_offset_of_an_unknown_peer_adds_nobody() -> None:
    roster = Roster()
    roster.measured(BOB, 1.0)
    assert list(roster) == []


@pytest.mark.parametrize(
    ("offset", "amount"),
    [(42.4, "42 s"), (-119.0, "119 s"), (1200.0, "20 min"), (-1234.0, "21 min"),
     (3 * 3600.0, "3 h"), (-3 * 86400.0, "3 days")],
)
def test_the_fix_for_a_clock_says_by_how_much_they_differ_and_what_to_run(
    offset: float, amount: str
) -> None:
    assert clock_fix(offset) == (f"the clocks differ by {amount}: set both to network time "
                                 "(timedatectl set-ntp true)")


@pytest.mark.parametrize(
    ("trusted", "trusts_us", "folders", "member"),
    [
        (True, True, frozenset({DOCS}), True),
        (True, True, frozenset({DOCS, MUSIC}), True),
        (True, True, frozenset({MUSIC}), False),
        (True, True, frozenset(), False),
        (True, None, frozenset({DOCS}), False),
        (True, False, frozenset({DOCS}), False),
        (False, True, frozenset({DOCS}), False),
        (False, None, frozenset({DOCS}), False),
        (False, False, frozenset({DOCS}), False),
    ],
)
def test_a_member_is_trusted_both_ways_and_shares_a_folder(
    trusted: bool, trusts_us: bool | None, folders: frozenset[FolderId], member: bool
) -> None:
    assert peer(trusted, trusts_us, folders).is_member(OURS) is member


def test_first_report_of_a_node_is_new_and_later_ones_are_not() -> None:
    roster = Roster()
    first, new = roster.update(ALICE, name="alice", address="10.0.0.1:22300", last_seen=1.0)
    assert new
    assert first == Peer(NodeId.of_key(ALICE), ALICE, name="alice", address="10.0.0.1:22300",
                         last_seen=1.0)
    second, new = roster.update(ALICE, trusted=True, last_seen=2.0)
    assert not new
    assert (second.name, second.address, second.trusted, second.last_seen) == (
        "alice", "10.0.0.1:22300", True, 2.0
    )
    assert roster.get(NodeId.of_key(ALICE)) == second
    assert list(roster) == [second]


def test_one_address_belongs_to_one_node() -> None:
    roster = Roster()
    address = "10.0.0.5:22300"
    roster.update(ALICE, address=address, trusted=True)
    taker, _ = roster.update(BOB, address=address)
    assert roster.at(address) == taker
    alice = roster.get(NodeId.of_key(ALICE))
    assert alice is not None
    assert alice.address is None
    assert alice.trusted  # it loses the address, nothing else
    assert len(list(roster)) == 2


def test_a_node_that_moves_leaves_its_old_address_free() -> None:
    roster = Roster()
    roster.update(ALICE, address="10.0.0.1:22300")
    roster.update(ALICE, address="10.0.0.2:22300")
    assert roster.at("10.0.0.1:22300") is None
    found = roster.at("10.0.0.2:22300")
    assert found is not None
    assert found.key == ALICE


def test_an_unknown_address_has_no_peer() -> None:
    roster = Roster()
    roster.update(ALICE, address="10.0.0.1:22300")
    assert roster.at("10.0.0.9:22300") is None


def test_find_by_full_or_short_id() -> None:
    roster = Roster()
    alice, _ = roster.update(ALICE)
    roster.update(BOB)
    assert roster.find(str(alice.id)) == alice
    assert roster.find(alice.id.short) == alice


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(str(NodeId.of_key(CAROL)), id="unknown-full"),
        pytest.param(NodeId.of_key(CAROL).short, id="unknown-short"),
        pytest.param(str(NodeId.of_key(ALICE))[:12], id="longer-prefix"),
        pytest.param(NodeId.of_key(ALICE).short[:7], id="shorter-prefix"),
        pytest.param("", id="empty"),
        pytest.param("alice", id="name"),
    ],
)
def test_find_something_that_is_no_known_id_gives_none(text: str) -> None:
    roster = Roster()
    roster.update(ALICE, name="alice")
    roster.update(BOB)
    assert roster.find(text) is None


class _KeyIsDigest(NodeId):
    """A NodeId whose `of_key` takes the key as the digest: lets a test pick colliding IDs."""

    __slots__ = ()

    @classmethod
    def of_key(cls, public_blob: bytes) -> NodeId:
        return NodeId(public_blob)


def test_find_by_a_short_id_two_peers_share_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 48-bit prefix collision cannot be searched for in a test; choose the digests instead.
    monkeypatch.setattr(membership, "NodeId", _KeyIsDigest)
    roster = Roster()
    one, _ = roster.update(bytes(6) + b"\x01" * 26)
    two, _ = roster.update(bytes(6) + b"\x02" * 26)
    assert one.id.short == two.id.short
    assert roster.find(one.id.short) is None
    assert roster.find(str(one.id)) == one
    assert roster.find(str(two.id)) == two


def stranger_key(n: int) -> bytes:
    return f"ssh-ed25519 stranger-{n}".encode()


def test_strangers_are_capped_and_the_oldest_is_forgotten_first() -> None:
    roster = Roster()
    trusted = [f"ssh-ed25519 friend-{n}".encode() for n in range(5)]
    for key in trusted:
        roster.update(key, trusted=True, last_seen=0.0)  # older than any stranger
    for n in range(MAX_STRANGERS):
        roster.update(stranger_key(n), last_seen=100.0 + n)
    roster.update(stranger_key(0), last_seen=500.0)  # seen again: now the newest
    _, new = roster.update(stranger_key(MAX_STRANGERS), last_seen=1000.0)
    assert new
    known = {p.key for p in roster}
    assert stranger_key(1) not in known  # the oldest stranger went
    assert stranger_key(0) in known
    assert stranger_key(MAX_STRANGERS) in known
    assert set(trusted) <= known
    assert sum(not p.trusted for p in roster) == MAX_STRANGERS


def test_a_flood_of_strangers_never_evicts_a_trusted_peer() -> None:
    roster = Roster()
    roster.update(ALICE, trusted=True, trusts_us=True, folders=OURS, last_seen=None)
    for n in range(10 * MAX_STRANGERS):
        roster.update(stranger_key(n), last_seen=float(n))
    alice = roster.get(NodeId.of_key(ALICE))
    assert alice is not None
    assert alice.is_member(OURS)
    assert sum(not p.trusted for p in roster) == MAX_STRANGERS
    assert len(list(roster)) == MAX_STRANGERS + 1


def test_a_known_stranger_reporting_again_evicts_nobody() -> None:
    roster = Roster()
    for n in range(MAX_STRANGERS):
        roster.update(stranger_key(n), last_seen=float(n))
    roster.update(stranger_key(5), last_seen=999.0)
    assert len(list(roster)) == MAX_STRANGERS


def test_trusting_a_stranger_takes_it_out_of_the_cap() -> None:
    roster = Roster()
    roster.update(ALICE, last_seen=0.0)
    roster.update(ALICE, trusted=True)
    for n in range(2 * MAX_STRANGERS):
        roster.update(stranger_key(n), last_seen=1.0 + n)
    assert roster.get(NodeId.of_key(ALICE)) is not None
