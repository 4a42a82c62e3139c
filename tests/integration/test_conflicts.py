"""Concurrent edits: every machine keeps both versions, alike, and nothing is deleted by a race."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from meshsync.core import conflicts
from meshsync.core.paths import RelPath
from tests.integration.lan import Host, Lan, holds_for, same_trees, wait_for
from tests.integration.test_sync import mesh, write

BASE = 1_780_000_000  # a fixed Unix time, so the tests say which edit is newer


def edit(host: Host, path: str, data: bytes, at: int) -> None:
    """Write `data` at `path` on `host`, with mtime `at` (seconds)."""
    target = host.sync / path
    write(target, data)
    os.utime(target, (at, at))


def copies(found: dict[str, tuple[str, str, int]]) -> list[str]:
    return sorted(p for p in found if conflicts.is_copy(p))


def settled(lan: Lan, files: int) -> dict[str, tuple[str, str, int]]:
    """The common tree once every host holds the same one with `files` files, and keeps it."""
    def common() -> dict[str, tuple[str, str, int]] | None:
        found = same_trees(lan.hosts)
        return found if found and sum(k == "file" for k, _, _ in found.values()) == files else None
    found = wait_for(f"every host to hold the same {files} files", common, 20)
    holds_for("the trees to stay as they are", lambda: same_trees(lan.hosts) == found, 2)
    return found


def synced(lan: Lan, path: str, data: bytes) -> None:
    wait_for(f"{path} on every host", lambda: all(
        (h.sync / path).is_file() and (h.sync / path).read_bytes() == data for h in lan.hosts), 10)


def reconnected(lan: Lan) -> None:
    wait_for("every host to see the others online", lambda: all(
        set(h.peer_states().values()) == {"online"} for h in lan.hosts), 20)


def test_edits_made_while_cut_off_meet_as_the_newer_file_and_one_conflict_copy(make_lan):
    lan = mesh(make_lan, 3)
    h1, h2, h3 = lan.hosts
    edit(h1, "notes/todo.txt", b"original\n", BASE)
    synced(lan, "notes/todo.txt", b"original\n")

    lan.cut(h3)
    edit(h1, "notes/todo.txt", b"edited on h1\n", BASE + 10)
    edit(h3, "notes/todo.txt", b"edited on h3, later\n", BASE + 20)
    wait_for("h2 to take h1's edit", lambda: (
        h2.sync / "notes/todo.txt").read_bytes() == b"edited on h1\n", 10)
    lan.heal(h3)

    found = settled(lan, 2)
    copy = conflicts.copy_path(RelPath("notes/todo.txt"), (BASE + 10) * 10**9, h1.id.key)
    assert copies(found) == [copy]
    assert copy.endswith(f"-{h1.id.short}.txt")  # h1 as peers, status and the log name it
    for host in lan.hosts:
        assert (host.sync / "notes/todo.txt").read_bytes() == b"edited on h3, later\n"
        assert (host.sync / copy).read_bytes() == b"edited on h1\n"
        folder = host.json("status")["folders"][0]
        assert folder["conflicts"] == 1
        [listed] = host.json("conflicts")
        assert (listed["path"], listed["original"]) == (copy, "notes/todo.txt")
        assert listed["copy"]["node"]["name"] == "h1"
        assert listed["current"]["node"]["name"] == "h3"
        assert listed["current"]["time"] == "2026-05-28T20:27:00Z"
    table = h2.cli("conflicts").stdout
    assert copy in table
    assert "h1" in table
    assert "h3" in table

    # Deleting the copy resolves the conflict everywhere.
    (h2.sync / copy).unlink()
    wait_for("the conflict to be gone on every host", lambda: all(
        h.json("status")["folders"][0]["conflicts"] == 0 for h in lan.hosts), 10)


def test_three_machines_editing_apart_end_alike_with_the_newest_and_two_copies(make_lan):
    lan = mesh(make_lan, 3)
    edit(lan.hosts[0], "plan.md", b"v0\n", BASE)
    synced(lan, "plan.md", b"v0\n")
    for host in lan.hosts:
        lan.cut(host)
    # The newest edit is on the middle host, so neither the first nor the last wins by order.
    for host, at in zip(lan.hosts, (BASE + 5, BASE + 30, BASE + 10), strict=True):
        edit(host, "plan.md", f"by {host.name}\n".encode(), at)
    wait_for("each host to have versioned its edit", lambda: all(
        _indexed_mtime(h, "plan.md") for h in lan.hosts), 10)
    for host in lan.hosts:
        lan.heal(host)

    found = settled(lan, 3)
    h1, _, h3 = lan.hosts
    assert (h1.sync / "plan.md").read_bytes() == b"by h2\n"
    assert copies(found) == sorted([
        conflicts.copy_path(RelPath("plan.md"), (BASE + 5) * 10**9, h1.id.key),
        conflicts.copy_path(RelPath("plan.md"), (BASE + 10) * 10**9, h3.id.key)])
    assert {(h1.sync / p).read_bytes() for p in copies(found)} == {b"by h1\n", b"by h3\n"}


def test_a_change_beats_a_concurrent_delete_and_a_rename_loses_nothing(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    edit(h1, "gone.txt", b"to delete\n", BASE)
    edit(h1, "moved.txt", b"to rename\n", BASE)
    edit(h1, "dir/inner.txt", b"in a dir\n", BASE)
    synced(lan, "dir/inner.txt", b"in a dir\n")
    synced(lan, "moved.txt", b"to rename\n")

    lan.cut(h2)
    (h1.sync / "gone.txt").unlink()
    (h1.sync / "moved.txt").rename(h1.sync / "renamed.txt")
    (h1.sync / "dir/inner.txt").unlink()
    (h1.sync / "dir").rmdir()
    edit(h2, "gone.txt", b"changed meanwhile\n", BASE + 1)
    edit(h2, "moved.txt", b"edited meanwhile\n", BASE + 1)
    edit(h2, "dir/inner.txt", b"edited in the dir\n", BASE + 1)
    wait_for("h1 to have versioned its deletions", lambda: _indexed_mtime(h1, "gone.txt") is None
             and _indexed_mtime(h1, "dir/inner.txt") is None, 10)
    lan.heal(h2)

    found = settled(lan, 4)
    assert copies(found) == []
    for host in lan.hosts:
        assert (host.sync / "gone.txt").read_bytes() == b"changed meanwhile\n"
        assert (host.sync / "moved.txt").read_bytes() == b"edited meanwhile\n"
        assert (host.sync / "renamed.txt").read_bytes() == b"to rename\n"
        assert (host.sync / "dir/inner.txt").read_bytes() == b"edited in the dir\n"


def _indexed_mtime(host: Host, path: str) -> int | None:
    """The mtime of `path` in the host's index, None if absent or deleted (read-only SQLite)."""
    db = Path(host.home) / ".local/state/meshsync/index.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT mtime_ns FROM files WHERE path = ? AND NOT deleted",
                           (path,)).fetchone()
    return row[0] if row else None
