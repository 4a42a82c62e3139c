"""A trusted but faulty member cannot break the others' arithmetic, elections or sync.

Mallory is trusted by both honest hosts and speaks the protocol with meshsync's own parts
(tests/integration/hostile.py), but its numbers are the largest the wire carries.
"""

from __future__ import annotations

import json
from pathlib import Path

from meshsync.core.vclock import MAX_COUNTER
from tests.integration.lan import Host, Lan, holds_for, wait_for
from tests.integration.test_election import agreed

FAKE = "2026-12-02 13:00:00 peer online: FAKE"
UNFETCHABLE = f"evil\n{FAKE}\x1b[2J.bin"
MAX_SEQ = 2**63 - 1


def honest_pair(lan: Lan) -> tuple[Host, Host, Host]:
    h1, h2, mallory = lan.hosts
    h1.trust(h2, mallory)
    h2.trust(h1, mallory)
    for host in (h1, h2):
        host.start("--peer", f"{mallory.ip}:22300")
    lowest = min(h1, h2, key=lambda h: h.id)
    wait_for("the honest pair to form a mesh", lambda: agreed([h1, h2], lowest), 15)
    return h1, h2, mallory


def run_mallory(lan: Lan, mallory: Host, plan: dict[str, object], out: Path):
    h1, h2 = lan.hosts[:2]
    return mallory.running(
        "-m", "tests.integration.hostile", "member", str(mallory.key), "22300",
        str(mallory.state), json.dumps(plan), str(out), f"{h1.ip}:22300", f"{h2.ip}:22300")


def block_requests(out: Path) -> int:
    notes = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return sum("block_requests" in note for note in notes)


def test_extreme_counters_sequences_and_block_lists_leave_every_node_running_and_syncing(
    make_lan,
):
    lan = make_lan(3)
    h1, h2, mallory = honest_pair(lan)
    out = lan.root / "mallory.jsonl"
    plan = {
        "counter": MAX_COUNTER,  # the largest counter the wire accepts
        "files": {"counter.txt": "mallory's counter\n"},
        "foreign": {"own-counter.txt": h1.id.key},  # names h1's own counter at the top
        "unfetchable": {UNFETCHABLE: 3000},  # 375 MiB of blocks nobody has
        "seq": MAX_SEQ,  # its index pages claim the last sequence number there is
    }
    with run_mallory(lan, mallory, plan, out):
        # The version nobody can supply waits and says why (looked for first: it waits only
        # until its second attempt, 2 s on); once every member (all online) was asked twice
        # and none had any of it, it is given up, having cost little.
        row = wait_for("h1 to say what it waits for", lambda: next(
            (w for w in h1.json("status")["folders"][0]["held_back"]
             if w["path"] == UNFETCHABLE), None), 20)
        assert row["cause"] == "no member has it"
        assert "blocks" in row["reason"]
        for host in (h1, h2):
            wait_for(f"counter.txt on {host.name}", lambda host=host:
                     (host.sync / "counter.txt").is_file(), 15)
        # h1 will not take a version that names its own counter beyond what it can count on
        # from; h2, whose counter it is not, takes it.
        wait_for("own-counter.txt on h2", lambda: (h2.sync / "own-counter.txt").is_file(), 15)
        wait_for("h1's refusal", lambda: "refused own-counter.txt from" in h1.log.read_text(), 10)
        assert not (h1.sync / "own-counter.txt").exists()
        # The next edits of the file at the top of the range are counted, and travel.
        (h1.sync / "counter.txt").write_text("h1 edits it\n")
        wait_for("h1's edit on h2", lambda:
                 (h2.sync / "counter.txt").read_text() == "h1 edits it\n", 15)
        wait_for("h1 to give it up", lambda: "no longer waiting for" in h1.log.read_text(), 15)
        wait_for("h1 to be in sync", lambda: h1.json("status")["folders"][0]["state"]
                 == "in sync", 10)
        asked = block_requests(out)
        holds_for("the two to ask for its blocks no more", lambda:
                  block_requests(out) - asked <= 8, 10)
        h1.stop()
        h1.start("--peer", f"{mallory.ip}:22300")  # what it stored at the top of the range reads
        # Pushed, not caught up (a LAN test has no periodic catch-up): h2 must know h1 is back
        # before the change, or its notice has nobody to go to.
        wait_for("h1 and h2 online to each other", lambda: h1.peer_states().get("h2")
                 == h2.peer_states().get("h1") == "online", 15)
        (h2.sync / "after-restart.txt").write_text("still syncing\n")
        wait_for("a new file on the restarted h1", lambda:
                 (h1.sync / "after-restart.txt").is_file(), 15)
        assert h1.election() == h2.election()
    for host in (h1, h2):
        assert host.is_running()
        for line in host.log.read_text().splitlines():
            assert line.isprintable(), repr(line)
            assert not line.startswith(FAKE)


def test_a_member_claiming_a_huge_term_cannot_move_the_mesh(make_lan):
    lan = make_lan(3)
    h1, h2, mallory = honest_pair(lan)
    term, coordinator = h1.election()
    out = lan.root / "mallory.jsonl"
    with run_mallory(lan, mallory, {"term": 2**53 - 1}, out):
        for host in (h1, h2):
            wait_for(f"{host.name} to ignore the claim", lambda host=host:
                     "claims term 9007199254740991" in host.log.read_text(), 15)
        (h1.sync / "after-the-claim.txt").write_text("still one mesh\n")
        wait_for("the file on h2", lambda: (h2.sync / "after-the-claim.txt").is_file(), 10)
        assert h1.election() == h2.election() == (term, coordinator)
        assert coordinator != str(mallory.id)
    assert h1.is_running()
    assert h2.is_running()
