"""What sync replaces or deletes is kept, listed, bounded, and can be brought back everywhere."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from tests.integration.lan import wait_for
from tests.integration.test_sync import mesh, write


def content_everywhere(lan, path: str, data: bytes) -> bool:
    return all((h.sync / path).is_file() and (h.sync / path).read_bytes() == data
               for h in lan.hosts)


def test_replaced_and_deleted_files_are_kept_and_restore_syncs_like_an_edit(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / "doc/report.txt", b"first draft\n")
    write(h1.sync / "old.txt", b"soon deleted\n")
    wait_for("both files on h2", lambda: content_everywhere(lan, "old.txt", b"soon deleted\n")
             and content_everywhere(lan, "doc/report.txt", b"first draft\n"), 10)
    (h1.sync / "doc/report.txt").write_bytes(b"second draft, worse\n")
    (h1.sync / "old.txt").unlink()
    wait_for("the edit and the delete on h2", lambda: not (h2.sync / "old.txt").exists()
             and (h2.sync / "doc/report.txt").read_bytes() == b"second draft, worse\n", 10)

    [kept] = h2.json("versions", str(h2.sync / "doc/report.txt"))
    assert kept["path"] == "doc/report.txt"
    assert (h2.sync / kept["kept"]).read_bytes() == b"first draft\n"
    listed = h2.json("versions", str(h2.sync))
    assert sorted(v["path"] for v in listed) == ["doc/report.txt", "old.txt"]
    assert "doc/report.txt" in h2.cli("versions", str(h2.sync / "doc")).stdout

    restored = h2.json("restore", str(h2.sync / "doc/report.txt"))
    assert restored["restored"]["kept"] == kept["kept"]
    wait_for("the restored draft on both hosts",
             lambda: content_everywhere(lan, "doc/report.txt", b"first draft\n"), 10)
    # What the restore replaced is kept too, on h2 (restored over) and h1 (synced over).
    for host in lan.hosts:
        kept_now = [(host.sync / v["kept"]).read_bytes()
                    for v in host.json("versions", str(host.sync / "doc/report.txt"))]
        assert b"second draft, worse\n" in kept_now

    result = h2.cli("restore", str(h2.sync / "old.txt"))
    assert result.returncode == 0, result.stderr
    assert "restored old.txt" in result.stdout
    wait_for("the deleted file back on both hosts",
             lambda: content_everywhere(lan, "old.txt", b"soon deleted\n"), 10)


def test_restore_refuses_clearly_and_changes_nothing(make_lan):
    lan = mesh(make_lan, 1)
    [h1] = lan.hosts
    write(h1.sync / "a.txt", b"only version\n")
    outside = lan.root / "elsewhere.txt"
    for args, said in [
        ((str(outside),), "is not in a synced folder"),
        ((str(h1.sync / "a.txt"),), "no version of a.txt is kept"),
        ((str(h1.sync / "a.txt"), "--at", "yesterday"), "not a time: 'yesterday'"),
        ((str(h1.sync),), "not the folder itself"),
        ((str(h1.sync / ".meshsync/index"),), "not a path meshsync syncs"),
    ]:
        result = h1.cli("restore", *args)
        assert result.returncode == 1, args
        assert said in result.stderr, (args, result.stderr)
    assert (h1.sync / "a.txt").read_bytes() == b"only version\n"
    assert not outside.exists()


def test_versions_are_bounded_by_age_and_size_with_the_oldest_going_first(make_lan):
    lan = make_lan(1)
    [h1] = lan.hosts
    kept = h1.sync / ".meshsync/versions"
    def kept_days_ago(path: str, days: int):
        return kept / f"{path}~{datetime.now(UTC) - timedelta(days=days):%Y%m%d-%H%M%S}"
    ancient, old, recent = (kept_days_ago("a.txt", 5 * 365), kept_days_ago("b/c.txt", 40),
                            kept_days_ago("b/c.txt", 1))
    for path, size in ((ancient, 10), (old, 600_000), (recent, 600_000)):
        write(path, os.urandom(size))
    h1.start("--keep-days", "3650", "--keep-size", "1M")  # ancient is young enough; size is not
    wait_for("the oldest versions to go", lambda: not old.exists() and not ancient.exists(), 10)
    assert recent.exists()
    h1.stop()

    write(old, os.urandom(10))
    h1.start("--keep-days", "30")  # the default size bound holds both; the age does not
    wait_for("the version older than 30 days to go", lambda: not old.exists(), 10)
    assert recent.exists()
