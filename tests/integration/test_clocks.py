"""Clocks do not split the mesh: a skew of minutes still syncs; beyond what is accepted, both
sides show the peer refused with the measured offset and the fix."""

from __future__ import annotations

from tests.integration.lan import wait_for
from tests.integration.test_election import agreed


def test_two_nodes_whose_clocks_differ_by_5_minutes_sync_both_ways(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    h2.env_extra["MESHSYNC_CLOCK_OFFSET"] = "300"
    h1.start()
    h2.start()
    wait_for("one mesh", lambda: agreed(lan.hosts, lan.by_id()[0]), 15)
    (h1.sync / "from-h1.txt").write_text("one")
    (h2.sync / "from-h2.txt").write_text("two")
    wait_for("both files on both hosts", lambda: all(
        (h.sync / name).exists() for h in lan.hosts for name in ("from-h1.txt", "from-h2.txt")),
        10)
    row = next(r for r in h1.json("peers") if r["name"] == "h2")
    assert 290 < row["clock_offset"] < 310, row
    assert "fix" not in row


def test_beyond_15_minutes_both_sides_say_refused_with_the_offset_and_the_fix(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    h2.env_extra["MESHSYNC_CLOCK_OFFSET"] = "-1200"
    h1.start()
    h2.start()

    def refused(host, other, sign):
        row = next((r for r in host.json("peers") if r["id"] == str(other.id)), None)
        return (row and row["state"] == "refused" and row["clock_offset"] is not None
                and 1190 < sign * row["clock_offset"] < 1210 and row)

    on_h1 = wait_for("h1 to show h2 refused for its clock", lambda: refused(h1, h2, -1), 15)
    on_h2 = wait_for("h2 to show h1 refused for its clock", lambda: refused(h2, h1, 1), 15)
    for row in (on_h1, on_h2):
        assert "timedatectl set-ntp true" in row["fix"]
        assert "20 min" in row["fix"]
    for host in lan.hosts:
        assert "clock" in host.log.read_text()
    (h1.sync / "not-sent.txt").write_text("stays")
    assert not (h2.sync / "not-sent.txt").exists()
