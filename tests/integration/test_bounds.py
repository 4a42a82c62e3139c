"""Nothing a stranger on the LAN sends can exhaust a node, stop it syncing or flood its log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.integration.lan import Host, Lan, holds_for, same_trees, wait_for
from tests.integration.test_election import agreed

REPO = Path(__file__).resolve().parents[2]
FAKE = "2026-12-02 13:00:00 peer online: FAKE"


def pair(lan: Lan) -> tuple[Host, Host]:
    h1, h2 = lan.hosts[:2]
    h1.trust(h2)
    h2.trust(h1)
    h1.start()
    h2.start()
    lowest = min(h1, h2, key=lambda h: h.id)
    wait_for("the pair to form a mesh", lambda: agreed([h1, h2], lowest), 15)
    return h1, h2


def log_lines(host: Host) -> list[str]:
    return host.log.read_text(errors="replace").splitlines()


def still_syncs(source: Host, sink: Host, name: str) -> None:
    (source.sync / name).write_text(f"{name} made while under attack\n")
    wait_for(f"{name} on {sink.name}", lambda: (sink.sync / name).is_file(), 15)


def test_a_flood_of_half_open_connections_leaves_the_node_running_and_syncing(make_lan):
    lan = make_lan(3)
    h1, h2, attacker = lan.hosts
    h1.open_files = 1024  # the flood is three times that
    pair(lan)
    sources = attacker.add_addresses(60)
    before = len(log_lines(h1))
    with attacker.running("-m", "tests.integration.hostile", "flood", f"{h1.ip}:22300",
                          "3000", *sources):
        for n in range(3):
            still_syncs(h2, h1, f"toward-h1-{n}.txt")
            still_syncs(h1, h2, f"from-h1-{n}.txt")
        assert h1.json("status")["folders"][0]["state"] in ("in sync", "syncing")
        assert {p["state"] for p in h1.json("peers") if not p["self"]} == {"online"}
    assert h1.is_running()
    added = log_lines(h1)[before:]
    assert len(added) < 40, "\n".join(added)


def test_fresh_keys_and_forged_adverts_add_a_bounded_number_of_printable_lines(make_lan):
    lan = make_lan(3)
    h1, h2, attacker = lan.hosts
    pair(lan)
    before = len(log_lines(h1))
    result = attacker.exec(sys.executable, "-m", "tests.integration.hostile", "keys",
                           f"{h1.ip}:22300", "300", cwd=str(REPO), check=False)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.splitlines()[-1])
    assert answers == {"403": 300}  # each refused: a stranger's key
    # Adverts whose names and TXT fields try to write lines of their own into the log, and a
    # well-formed one that claims h2's ID for a TLS server whose certificate another key vouches
    # for: only that one is dialled, and found out.
    learned = lan.root / "learned"
    with attacker.running("-m", "tests.integration.hostile", "adverts", attacker.ip, "9000",
                          FAKE, str(h2.id)), \
            attacker.running("-m", "tests.integration.hostile", "mitm", "9003", "own",
                             str(learned)):
        wait_for("h1 to have found out the well-formed advert", lambda: any(
            p["address"] == f"{attacker.ip}:9003" and p["state"] == "untrusted"
            for p in h1.json("peers")), 20)
        assert f"advertised ID {h2.id} but its certificate is vouched for by" in h1.log.read_text()
    assert learned.read_bytes() == b""
    peers = h1.json("peers")
    assert sum(p["state"] == "untrusted" for p in peers) <= 64  # strangers remembered
    assert not any(p["address"] and p["address"].endswith((":9000", ":9001", ":9002"))
                   for p in peers)
    assert h1.is_running()
    added = log_lines(h1)[before:]
    assert len(added) < 30, "\n".join(added)
    for line in log_lines(h1):
        assert line.isprintable(), repr(line)
        assert not line.startswith(FAKE), line
    assert "\x1b" not in h1.log.read_text()
    still_syncs(h2, h1, "after-the-flood.txt")


def test_an_address_advertised_for_a_member_up_elsewhere_takes_nothing_from_it(make_lan):
    # A stranger relays h2's port and advertises the relay with h2's ID: TLS passes through,
    # so the relay's certificate is h2's own. h1 must neither move h2 there (the relay could
    # then stall h1's fetches) nor take it for down when the relay goes.
    lan = make_lan(3)
    h1, h2, attacker = lan.hosts
    pair(lan)
    with attacker.running("-m", "tests.integration.hostile", "relay", "9003",
                          f"{h2.ip}:22300"), \
            attacker.running("-m", "tests.integration.hostile", "adverts", attacker.ip, "9000",
                             "relayed", str(h2.id)):
        holds_for("h2 online at its own address", lambda: [
            (p["address"], p["state"]) for p in h1.json("peers") if p["id"] == str(h2.id)
        ] == [(f"{h2.ip}:22300", "online")], 5)
    holds_for("h2 online once the relay is gone", lambda: [
        p["state"] for p in h1.json("peers") if p["id"] == str(h2.id)] == ["online"], 4)
    assert "peer down" not in h1.log.read_text()


def test_a_node_under_a_low_open_file_limit_takes_a_tree_in_groups_that_fit_it(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    h2.open_files = 128  # a group of 1024 files would want 2048 fds
    for d in range(4):
        (h1.sync / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (h1.sync / f"d{d}" / f"f{f}.txt").write_text(f"file {d}/{f}\n")
    pair(lan)
    wait_for("the tree on h2", lambda: same_trees([h1, h2]), 60)
    assert not [line for line in log_lines(h2) if "open files" in line.lower()]
