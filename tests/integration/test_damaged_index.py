"""A damaged index costs nothing in the folder: it is rebuilt, or its bad rows set aside."""

from __future__ import annotations

import sqlite3
import sys

from tests.integration.lan import Host, same_trees, tree, wait_for
from tests.integration.test_sync import mesh


def synced(hosts: list[Host]) -> bool:
    return same_trees(hosts) is not None and all(
        h.json("status")["folders"][0]["state"] == "in sync" for h in hosts)


def fill(h1: Host, hosts: list[Host]) -> dict[str, tuple[str, str, int]]:
    for n in range(20):
        (h1.sync / "docs").mkdir(exist_ok=True)
        (h1.sync / "docs" / f"note-{n}.txt").write_text(f"note {n}\n" * (n + 1))
    wait_for("the folder on every host", lambda: synced(hosts) and len(tree(h1.sync)) == 21, 15)
    return tree(h1.sync)


def test_an_index_that_is_not_a_database_is_set_aside_and_rebuilt(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    before = fill(h1, lan.hosts)
    h1.stop()
    index = h1.state / "index.db"
    index.write_bytes(b"this is not what SQLite wrote\n" * 1000)
    h1.start()
    log = h1.log.read_text()
    assert "is damaged" in log
    assert "Traceback" not in log
    assert list(h1.state.glob("index.db.damaged-*"))
    wait_for("h1 in sync again", lambda: synced(lan.hosts), 20)
    assert tree(h1.sync) == before  # nothing lost, nothing doubled (no conflict copies)
    (h2.sync / "after.txt").write_text("after the rebuild\n")
    wait_for("a new file on h1", lambda: (h1.sync / "after.txt").is_file(), 10)


def test_a_row_that_does_not_decode_is_set_aside_and_its_file_kept(make_lan):
    lan = mesh(make_lan, 2)
    h1, _ = lan.hosts
    before = fill(h1, lan.hosts)
    h1.stop()
    with sqlite3.connect(h1.state / "index.db") as db:
        db.execute("UPDATE files SET version = '{\"not a vector' WHERE path = 'docs/note-3.txt'")
        db.execute("UPDATE files SET mode = 'rw-' WHERE path = 'docs/note-4.txt'")
    h1.start()
    wait_for("the damage to be reported", lambda: "damaged index rows set aside"
             in h1.log.read_text(), 15)
    wait_for("h1 in sync again", lambda: synced(lan.hosts), 20)
    assert tree(h1.sync) == before
    assert "Traceback" not in h1.log.read_text()
    assert h1.is_running()


def test_an_index_that_cannot_be_written_stops_the_node_with_one_line(make_lan):
    lan = make_lan(1)
    (h1,) = lan.hosts
    h1.state.mkdir(parents=True, mode=0o700)
    (h1.state / "index.db").mkdir()  # where the index should be, a directory
    result = h1.exec(sys.executable, "-m", "meshsync", "start", str(h1.sync), check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("meshsync:")]
    assert len(lines) == 1, result.stderr
    assert "index.db" in lines[0]
    assert "Traceback" not in result.stderr
