"""`.meshsyncignore` keeps paths local, syncs itself, and takes effect without a restart."""

from __future__ import annotations

from tests.integration.lan import holds_for, wait_for
from tests.integration.test_sync import mesh, write


def test_ignored_paths_stay_local_until_the_rules_change(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / ".meshsyncignore", b"# build output\n*.log\nbuild/\n")
    wait_for("the ignore file to reach h2", lambda: (h2.sync / ".meshsyncignore").is_file(), 10)

    write(h1.sync / "run.log", b"h1's log\n")
    write(h1.sync / "build/deep/out.o", b"object\n")
    write(h1.sync / ".notes.txt.swp", b"vim swap\n")
    write(h1.sync / "notes.txt~", b"backup\n")
    write(h2.sync / "local.log", b"h2's log\n")
    write(h1.sync / "notes.txt", b"synced\n")
    wait_for("notes.txt on h2", lambda: (h2.sync / "notes.txt").is_file(), 10)
    local = ["run.log", "build", ".notes.txt.swp", "notes.txt~"]
    holds_for("ignored paths to stay on h1", lambda: not any(
        (h2.sync / p).exists() for p in local) and not (h1.sync / "local.log").exists(), 2)

    # Without `*.log`, both logs sync both ways: h2 asks h1 again for what it passed over.
    write(h2.sync / ".meshsyncignore", b"build/\n")
    wait_for("the logs to sync once *.log is no longer ignored", lambda: (
        h2.sync / "run.log").is_file() and (h1.sync / "local.log").is_file(), 15)
    assert (h2.sync / "run.log").read_bytes() == b"h1's log\n"
    assert not (h2.sync / "build").exists()

    # Ignoring a synced file keeps it local from then on: deleting it deletes nothing elsewhere.
    write(h1.sync / ".meshsyncignore", b"build/\nnotes.txt\n")
    wait_for("the new rules on h2", lambda: b"notes.txt" in (
        h2.sync / ".meshsyncignore").read_bytes(), 10)
    (h1.sync / "notes.txt").unlink()
    write(h1.sync / "after.txt", b"after\n")
    wait_for("after.txt on h2", lambda: (h2.sync / "after.txt").is_file(), 10)
    holds_for("notes.txt to stay on h2", lambda: (h2.sync / "notes.txt").is_file(), 2)
