"""How the log names a peer: its name and short ID, or its short ID alone until it is heard."""

from __future__ import annotations

from pathlib import Path

from meshsync.core import election as el
from meshsync.core.ids import NodeId
from meshsync.core.wire import FolderId
from meshsync.crypto.trust import TrustStore
from meshsync.node.peers import Peers
from tests.clock import FakeClock


def test_a_peer_is_named_in_the_log_once_heard_and_by_short_id_before(tmp_path: Path) -> None:
    me, key = NodeId.of_key(b"\x01" * 51), b"\x02" * 51
    peer = NodeId.of_key(key)
    clock = FakeClock()
    peers = Peers(me, "laptop", frozenset({FolderId("Sync")}),
                  TrustStore([], tmp_path / "trusted_keys"), clock,
                  el.Election(me=me, started=clock.now()))
    assert peers.describe(me) == f"laptop ({me.short}, this node)"
    assert peers.describe(peer) == f"node {peer.short}"  # relayed by our coordinator: no name
    peers.roster.update(key, trusted=True)
    assert peers.describe(peer) == f"node {peer.short}"
    peers.roster.update(key, name="desk\x1b[31m")
    assert peers.describe(peer) == f"desk\\x1b[31m ({peer.short})"
