"""What an mDNS advert makes a node dial: a few addresses of its own networks, paced, bounded.

A real Node (not started), fed adverts the way Discovery feeds them, on this host's networks.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshsync.core.ids import NodeId
from meshsync.core.wire import FolderId
from meshsync.crypto.keys import KeySigner
from meshsync.crypto.trust import TrustStore
from meshsync.net.discovery import (
    REANNOUNCE_EVERY,
    REANNOUNCE_MOST,
    Advert,
    own_networks,
    reannounce_after,
)
from meshsync.node.addressbook import ADDRESSES_PER_ADVERT, MAX_HINTS, NEW_HINTS_PER_SECOND
from meshsync.node.config import Config, Folder
from meshsync.node.dialer import HINTS_DIALLED_AT_ONCE
from meshsync.node.node import Node
from tests.clock import FakeClock

CLAIMED = str(NodeId.of_key(b"someone"))


@pytest.fixture
def lan() -> ipaddress.IPv4Network:
    """A network of this host's, not loopback (skipped where there is none)."""
    found = [n for n in own_networks() if not n.is_loopback and n.num_addresses >= 256]
    if not found:
        pytest.skip("this host has no network of 256 addresses besides loopback")
    return found[0]


@pytest.fixture
def node(tmp_path: Path) -> tuple[Node, FakeClock]:
    clock = FakeClock()
    config = Config(folders=(Folder(FolderId("docs"), tmp_path / "docs"),), state=tmp_path / "s",
                    ssh_dir=tmp_path / "ssh", name="a")
    signer = KeySigner(Ed25519PrivateKey.generate())
    trust = TrustStore([tmp_path / "ssh" / "authorized_keys"], tmp_path / "s" / "trusted_keys")
    return Node(config, signer, trust, clock), clock


def hinted(node: Node) -> dict[str, float]:
    return {a: h.next_try for a, h in node._book.hints.items()}


def test_only_a_few_addresses_of_our_own_networks_are_taken_from_an_advert(
    node: tuple[Node, FakeClock], lan: ipaddress.IPv4Network
) -> None:
    n, _ = node
    ours = [str(lan[10 + i]) for i in range(ADDRESSES_PER_ADVERT + 2)]
    # Loopback would make us a reflector to this host's own services, an address off our
    # networks a reflector to anyone's.
    n._book.on_advert(Advert("x", CLAIMED, (ours[0], "127.0.0.1", ours[1], "8.8.8.8"), 22300))
    assert set(hinted(n)) == {f"{ours[0]}:22300", f"{ours[1]}:22300"}
    n._book.on_advert(Advert("y", CLAIMED, tuple(ours), 22301))  # only the first few of many
    assert {a for a in hinted(n) if a.endswith(":22301")} == {
        f"{a}:22301" for a in ours[:ADDRESSES_PER_ADVERT]}


def test_a_flood_of_adverts_is_remembered_in_part_and_dialled_at_a_pace(
    node: tuple[Node, FakeClock], lan: ipaddress.IPv4Network
) -> None:
    n, clock = node
    for i in range(1000):
        n._book.on_advert(Advert(f"x{i}", CLAIMED, (str(lan[1 + i % 250]),), 20000 + i))
    hints = hinted(n)
    assert len(hints) == MAX_HINTS
    # New addresses are queued a sixteenth of a second apart, never more than the queue's
    # length ahead: a flood makes no one wait more than a few seconds, nor dial faster.
    assert max(hints.values()) <= clock.t + MAX_HINTS / NEW_HINTS_PER_SECOND
    due_now = [a for a, t in hints.items() if t <= clock.t]
    assert len(due_now) <= 1
    assert len(n._dialer.addresses_to_contact(clock.t + 100)) <= HINTS_DIALLED_AT_ONCE


def test_the_lan_hears_a_reannouncement_every_ten_seconds_whatever_its_size() -> None:
    for heard in range(2, 30):  # up to thirty nodes, a node and the others it hears
        assert (heard + 1) / reannounce_after(heard, 0.5) == pytest.approx(0.1)
    # Alone or with one other, every 30 s; never less often than every 300 s, however many
    # nodes (or forged adverts) it hears.
    assert reannounce_after(0, 0.5) == reannounce_after(1, 0.5) == REANNOUNCE_EVERY
    assert reannounce_after(100_000, 0.5) == REANNOUNCE_MOST


def test_nodes_started_together_spread_their_reannouncements() -> None:
    spread = [reannounce_after(9, jitter) for jitter in (0.0, 0.25, 0.5, 0.75, 0.999)]
    assert spread == sorted(spread)
    assert spread[0] == pytest.approx(75.0)
    assert spread[-1] == pytest.approx(125.0, abs=0.1)
