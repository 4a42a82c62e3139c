"""A folder's settings, changed while the node runs: with whom it is shared, and send-only
(the mesh's changes are listed, not written, until overridden or set back)."""

from __future__ import annotations

from meshsync.core import conflicts
from meshsync.core.paths import RelPath
from tests.integration.lan import Host, holds_for, wait_for
from tests.integration.test_conflicts import BASE, edit, settled, synced
from tests.integration.test_sync import mesh, write


def sync_of(host: Host) -> dict:
    [folder] = [f for f in host.json("status")["folders"] if f["id"] == "Sync"]
    return folder


def test_a_folder_shared_with_one_node_is_exchanged_with_that_node_alone(make_lan):
    lan = mesh(make_lan, 3, push_only=False)  # catch-up on too: it must not leak either
    h1, h2, h3 = lan.hosts
    term = h1.election()[0]
    refused = h1.cli("set", "Sync", "--share-with", "nobody")
    assert (refused.returncode, refused.stderr) == (1, (
        "meshsync: 'nobody' is not a node ID, nor the short ID or name of one trusted peer"
        " (`meshsync peers` lists them; a full ID is taken as it is)\n"))
    for host, other in ((h1, h2), (h2, h1)):
        said = host.cli("set", "Sync", "--share-with", other.name)  # by the name peers shows
        assert said.stdout == (f"folder Sync:\n  send-receive: changes go out and come in\n"
                               f"  shared only with {other.id.short}\n"
                               "  keeps what sync replaces 30 days, at most 1.0 GiB\n")
    wait_for("h3 to hear that h1 and h2 no longer share Sync with it", lambda: all(
        p["folders"] == [] for p in h3.json("peers") if p["id"] in (str(h1.id), str(h2.id))),
        15)
    assert sync_of(h1)["share_with"] == [str(h2.id)]
    assert f"  shared only with {h2.id.short}" in h1.cli("status").stdout.splitlines()
    wait_for("h1's members of Sync to be h2 alone", lambda: sync_of(h1)["members"] == [
        str(h2.id)], 15)

    write(h1.sync / "between-us.txt", b"h1 and h2 only")
    write(h3.sync / "h3s.txt", b"h3's own")
    wait_for("h2 to get h1's file", lambda: (h2.sync / "between-us.txt").is_file(), 15)
    holds_for("h1's file to stay away from h3, and h3's from both", lambda: not (
        h3.sync / "between-us.txt").exists() and not (h1.sync / "h3s.txt").exists()
        and not (h2.sync / "h3s.txt").exists(), 7)  # past a round of catch-up

    # Shared with everyone again: h3 and the others exchange what each missed.
    for host in (h1, h2):
        assert "  shared with every trusted node that has it\n" in host.cli(
            "set", "Sync", "--share-with-all").stdout
    wait_for("all three to hold both files", lambda: all(
        (h.sync / name).is_file() for h in lan.hosts for name in ("between-us.txt", "h3s.txt")),
        20)
    assert h1.election()[0] - term < 10, "the split made the mesh hold election after election"
    # Remembered across a restart.
    h1.cli("set", "Sync", "--share-with", h2.id.short)
    h1.stop()
    h1.start()
    assert sync_of(h1)["share_with"] == [str(h2.id)]


def test_a_send_only_folder_lists_the_meshs_changes_and_overrides_them(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / "kept.txt", b"h1's version")
    wait_for("kept.txt at h2", lambda: (h2.sync / "kept.txt").is_file(), 15)
    for args, code, error in (
            (("set", "Nope", "--send-only"), 1, "no folder has the ID 'Nope' (this node's: Sync)"),
            (("override", "Sync"), 1, "folder Sync is send-receive: only a send-only folder's"
             " changes from the mesh wait for an override")):
        refused = h1.cli(*args)
        assert (refused.returncode, refused.stderr) == (code, f"meshsync: {error}\n")
    both = h1.cli("set", "Sync", "--send-only", "--receive-only")
    assert (both.returncode, both.stderr) == (2, (
        "meshsync set: argument --receive-only: not allowed with argument --send-only (see"
        " meshsync set --help)\n"))
    assert sync_of(h1)["mode"] == "send-receive"  # none of it changed anything
    said = h1.cli("set", "Sync", "--send-only")
    assert said.stdout.splitlines()[:2] == [
        "folder Sync:", "  send-only: what the mesh changes is not written here (`meshsync"
        " override Sync` makes this node's versions win)"]

    write(h2.sync / "kept.txt", b"h2 changed it")
    write(h2.sync / "new.txt", b"h2 made it")
    held = wait_for("h1 to list both changes as held back", lambda: (s := sync_of(h1))[
        "held_back_count"] == 2 and s, 15)
    assert held["state"] == "held back"
    assert sorted((h["path"], h["cause"]) for h in held["held_back"]) == [
        ("kept.txt", "send-only folder"), ("new.txt", "send-only folder")]
    assert (h1.sync / "kept.txt").read_bytes() == b"h1's version"
    assert not (h1.sync / "new.txt").exists()
    write(h1.sync / "sent.txt", b"changes made here still go out")
    wait_for("sent.txt at h2", lambda: (h2.sync / "sent.txt").is_file(), 15)

    done = h1.cli("override", "Sync")
    assert done.stdout == ("folder Sync: this node's versions of 2 paths announced over the"
                           " mesh's changes\n")
    wait_for("h2 to hold h1's versions", lambda: (h2.sync / "kept.txt").read_bytes()
             == b"h1's version" and not (h2.sync / "new.txt").exists(), 15)
    wait_for("h1 in sync", lambda: sync_of(h1)["state"] == "in sync", 15)
    kept = h2.json("versions", str(h2.sync / "new.txt"))
    assert len(kept) == 1  # what the override removed at h2 is kept there, not lost

    # Set back to send-receive, h1 writes what waited.
    write(h2.sync / "later.txt", b"while send-only")
    wait_for("later.txt held at h1", lambda: sync_of(h1)["held_back_count"] == 1, 15)
    h1.cli("set", "Sync", "--send-receive")
    wait_for("later.txt at h1", lambda: (h1.sync / "later.txt").is_file(), 15)
    assert sync_of(h1)["mode"] == "send-receive"


def test_a_receive_only_folder_keeps_changes_made_here_from_the_mesh_until_reverted(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / "a.txt", b"h1's first")
    wait_for("a.txt at h2", lambda: (h2.sync / "a.txt").is_file(), 15)
    said = h2.cli("set", "Sync", "--receive-only")
    assert said.stdout.splitlines()[1] == (
        "  receive-only: changes made here are not sent (`meshsync revert Sync` puts the"
        " mesh's versions back)")

    write(h2.sync / "a.txt", b"h2's edit")
    write(h2.sync / "new.txt", b"made at h2")
    held = wait_for("h2 to list both changes made there", lambda: (s := sync_of(h2))[
        "held_back_count"] == 2 and s, 15)
    assert held["state"] == "held back"
    assert [(h["path"], h["cause"], h["reason"]) for h in held["held_back"]] == [
        ("a.txt", "receive-only folder", "changed here, not sent: `meshsync revert Sync` puts"
         " the mesh's version back"),
        ("new.txt", "receive-only folder", "added here, not sent: `meshsync revert Sync` puts"
         " the mesh's version back")]
    holds_for("h2's changes to stay at h2", lambda: not (h1.sync / "new.txt").exists()
              and (h1.sync / "a.txt").read_bytes() == b"h1's first", 2)

    # The mesh's next version wins over the change made here, which is kept as a version.
    write(h1.sync / "a.txt", b"h1's second")
    wait_for("h1's second a.txt at h2", lambda: (h2.sync / "a.txt").read_bytes()
             == b"h1's second", 15)
    assert [v["size"] for v in h2.json("versions", str(h2.sync / "a.txt"))] == [9]
    wait_for("h2 to list new.txt alone", lambda: [
        h["path"] for h in sync_of(h2)["held_back"]] == ["new.txt"], 15)

    write(h2.sync / "a.txt", b"h2 again")
    wait_for("h2 to list a.txt again", lambda: sync_of(h2)["held_back_count"] == 2, 15)
    assert h2.cli("revert", "Sync").stdout == (
        "folder Sync: the mesh's versions of 2 paths changed here are being put back (the"
        " changes are kept among the versions)\n")
    wait_for("h2 in sync, as h1", lambda: sync_of(h2)["state"] == "in sync"
             and not (h2.sync / "new.txt").exists()
             and (h2.sync / "a.txt").read_bytes() == b"h1's second", 15)
    assert len(h2.json("versions", str(h2.sync / "new.txt"))) == 1
    assert h1.cli("revert", "Sync").stderr == (
        "meshsync: folder Sync is send-receive: only a receive-only folder keeps changes made"
        " here from the mesh\n")

    # Set back to send-receive, what was changed here meanwhile goes out.
    write(h2.sync / "kept.txt", b"made while receive-only")
    wait_for("kept.txt listed", lambda: sync_of(h2)["held_back_count"] == 1, 15)
    h2.cli("set", "Sync", "--send-receive")
    wait_for("kept.txt at h1", lambda: (h1.sync / "kept.txt").is_file(), 15)
    wait_for("h2 in sync", lambda: sync_of(h2)["state"] == "in sync", 15)


def test_a_receive_only_node_sends_the_conflict_copy_it_makes_as_any_node_would(make_lan):
    lan = mesh(make_lan, 3)
    h1, h2, h3 = lan.hosts
    for name in ("shared.txt", "other.txt"):
        edit(h1, name, b"first\n", BASE)
        synced(lan, name, b"first\n")
    h3.cli("set", "Sync", "--receive-only")
    h2.cli("pause", "Sync")
    for name in ("shared.txt", "other.txt"):
        edit(h1, name, b"h1's edit\n", BASE + 10)
    wait_for("h1's edits at h3", lambda: all((h3.sync / name).read_bytes() == b"h1's edit\n"
                                             for name in ("shared.txt", "other.txt")), 15)
    edit(h3, "other.txt", b"h3's own\n", BASE + 15)  # a change made here: never a copy
    wait_for("h3 to list it", lambda: sync_of(h3)["held_back_count"] == 1, 15)
    h1.stop()  # the copies' other maker is away: only h3 can give h2 what it holds
    for name in ("shared.txt", "other.txt"):
        edit(h2, name, b"h2's edit, newer\n", BASE + 20)
    h2.cli("resume", "Sync")

    def copy_of(name: str) -> str:
        return conflicts.copy_path(RelPath(name), (BASE + 10) * 10**9, h1.id.key)
    copy = h2.sync / copy_of("shared.txt")
    wait_for("h3's copy of h1's edit at h2", lambda: copy.is_file()
             and copy.read_bytes() == b"h1's edit\n", 15)
    wait_for("h3 in sync: the copy is not a change made there", lambda: (
        s := sync_of(h3))["state"] == "in sync" and s["held_back"] == [], 15)
    for name in ("shared.txt", "other.txt"):
        assert (h3.sync / name).read_bytes() == b"h2's edit, newer\n"
    assert not (h3.sync / copy_of("other.txt")).exists()
    # What sync replaced there: the first version, then the change made there.
    assert [v["size"] for v in h3.json("versions", str(h3.sync / "other.txt"))] == [
        len(b"first\n"), len(b"h3's own\n")]

    h1.start()  # it makes its copies, one the same as h3's: one copy of each on all three
    found = settled(lan, 4)
    assert sorted(p for p in found if conflicts.is_copy(p)) == sorted(
        copy_of(name) for name in ("shared.txt", "other.txt"))
    for host in lan.hosts:
        assert (host.sync / copy_of("other.txt")).read_bytes() == b"h1's edit\n"
