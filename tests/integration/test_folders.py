"""Folders changed while the node runs: added, paused, resumed and removed with no restart,
and remembered across one; and what `log` tells of their changes."""

from __future__ import annotations

from tests.integration.lan import Host, holds_for, wait_for
from tests.integration.test_conflicts import BASE, edit
from tests.integration.test_sync import mesh


def folders(host: Host) -> dict[str, str]:
    """Folder ID -> state, as `status` tells."""
    return {f["id"]: f["state"] for f in host.json("status")["folders"]}


def test_a_folder_added_paused_resumed_and_removed_while_running_and_kept_across_a_restart(
        make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    docs1, docs2 = h1.home / "Docs", h2.home / "Docs"
    refused = h2.cli("add", str(docs2), "--keep-days", "-3")
    assert (refused.returncode, refused.stderr) == (
        2, "meshsync add: --keep-days wants a number of days from 0 to 36500, not '-3'\n")
    for host, docs in ((h1, docs1), (h2, docs2)):
        added = host.cli("add", str(docs), "--keep-days", "2", "--keep-size", "10M")
        assert (added.returncode, added.stdout) == (
            0, f"syncing {docs} as Docs, now and after a restart\n")
    kept = {f["id"]: f["keep"] for f in h2.json("status")["folders"]}
    assert kept == {"Docs": {"days": 2.0, "bytes": 10 << 20}, "Sync": {"days": 30.0,
                                                                       "bytes": 1 << 30}}
    assert "  keeps what sync replaces 2 days, at most 10.0 MiB" in h2.cli("status").stdout
    (docs1 / "a.txt").write_text("first")
    wait_for("a.txt in h2's new folder", lambda: (docs2 / "a.txt").is_file(), 15)
    assert folders(h2) == {"Docs": "in sync", "Sync": "in sync"}

    refused = h2.cli("add", str(h2.sync / "inner"))
    assert (refused.returncode, refused.stderr) == (1, (
        f"meshsync: {h2.sync}/inner is inside {h2.sync}: sync one or the other (a folder"
        " holds everything below it)\n"))

    assert h2.cli("pause", "Docs").stdout == "paused Docs\n"
    assert folders(h2) == {"Docs": "paused", "Sync": "in sync"}
    (docs1 / "b.txt").write_text("while paused")
    (h1.sync / "s.txt").write_text("the other folder goes on")
    wait_for("s.txt at h2", lambda: (h2.sync / "s.txt").is_file(), 15)
    holds_for("b.txt to stay away from the paused folder", lambda: not (
        docs2 / "b.txt").exists(), 2)

    # Paused and added are remembered: h2 restarts as it was first started, with Sync only.
    h2.stop()
    h2.start()
    assert folders(h2) == {"Docs": "paused", "Sync": "in sync"}
    assert {f["id"]: f["keep"]["days"] for f in h2.json("status")["folders"]} == {
        "Docs": 2.0, "Sync": 30.0}
    assert h2.cli("resume").stdout == "resumed Docs\n"
    wait_for("b.txt once resumed", lambda: (docs2 / "b.txt").is_file(), 15)

    removed = h2.cli("remove", "Docs")
    assert removed.stdout == f"no longer syncing Docs ({docs2}); its files stay\n"
    assert folders(h2) == {"Sync": "in sync"}
    (docs1 / "c.txt").write_text("after the removal")
    holds_for("c.txt to stay away from the removed folder", lambda: not (
        docs2 / "c.txt").exists(), 2)
    assert sorted(p.name for p in docs2.iterdir()) == [".meshsync", "a.txt", "b.txt"]
    h2.stop()
    h2.start()
    assert folders(h2) == {"Sync": "in sync"}
    assert h2.cli("remove", "Docs").stderr == (
        "meshsync: no folder has the ID 'Docs' (this node's: Sync)\n")


def test_log_tells_the_latest_changes_and_the_node_that_made_each(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    edit(h1, "a.txt", b"from h1\n", BASE)
    edit(h2, "d/b.txt", b"from h2\n", BASE + 10)
    wait_for("both files at h1", lambda: (h1.sync / "d/b.txt").is_file()
             and (h1.sync / "a.txt").is_file(), 15)
    changes = h1.json("log")
    assert [(c["path"], c["change"], c["node"]["name"], c["time"]) for c in changes
            if c["change"] == "file"] == [
        ("d/b.txt", "file", "h2", "2026-05-28T20:26:50Z"),
        ("a.txt", "file", "h1", "2026-05-28T20:26:40Z")]
    # Newest first by the time each carries: directory d was made now, its file's time is set.
    assert [c["path"] for c in h1.json("log", str(h1.sync / "d"))] == ["d", "d/b.txt"]
    assert [c["path"] for c in h1.json("log", "-n", "1")] == ["d"]
    table = h1.cli("log").stdout.splitlines()
    assert table[0].split() == ["TIME", "(UTC)", "BY", "CHANGE", "FOLDER", "PATH"]
    assert ["2026-05-28T20:26:50Z", "h2", "file", "8", "B", "Sync", "d/b.txt"] in [
        line.split() for line in table]
    refused = h1.cli("log", "-n", "0")
    assert (refused.returncode, refused.stderr) == (
        1, "meshsync: log wants a limit from 1 to 10000\n")
